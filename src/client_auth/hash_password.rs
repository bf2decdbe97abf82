//! `kafka-sidecar hash-password USER`: reads a password on standard input and prints the lines of
//! the `--listener-sasl-credentials` file that let USER authenticate with it.
//!
//! It prints salted, hashed records only; it never echoes the password or writes it anywhere.

use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::process::ExitCode;

use clap::Parser;

use super::credentials::{ClientMechanism, DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_ITERATIONS, Record};

/// Exit status for a refused input (EX_DATAERR).
const EXIT_DATA: u8 = 65;

/// The flags of `kafka-sidecar hash-password`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hash-password",
    about = "Print the credentials-file lines of a user, reading the password from standard input",
    long_about = "Print the --listener-sasl-credentials lines of a user: one salted, hashed record per \
        mechanism (as Kafka stores SCRAM credentials), never the password.\n\n\
        The password is the first line of standard input.\n\n\
        Example: printf '%s\\n' \"$PASSWORD\" | kafka-sidecar hash-password orders >> credentials"
)]
pub struct Args {
    /// The user name clients authenticate as.
    #[arg(value_name = "USER")]
    pub user: String,

    /// Mechanisms to print a record for; repeat or separate with commas [default: all of PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512].
    #[arg(long = "mechanism", value_delimiter = ',', value_parser = parse_mechanism)]
    pub mechanisms: Vec<ClientMechanism>,

    /// PBKDF2 iterations (4096-100000); every authentication pays for them.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS, value_parser = clap::value_parser!(u32).range(MIN_ITERATIONS as i64..=MAX_ITERATIONS as i64))]
    pub iterations: u32,
}

fn parse_mechanism(text: &str) -> Result<ClientMechanism, String> {
    ClientMechanism::parse(text.trim().as_bytes())
        .ok_or_else(|| format!("{text:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// The lines for `user` and `password`, one per mechanism.
pub fn lines(user: &str, password: &[u8], mechanisms: &[ClientMechanism], iterations: NonZeroU32) -> Vec<String> {
    let mechanisms = if mechanisms.is_empty() { &ClientMechanism::ALL[..] } else { mechanisms };
    mechanisms.iter().map(|m| Record::new(m.hash(), password, iterations).line(user, *m)).collect()
}

pub fn main(args: &Args) -> ExitCode {
    if args.user.is_empty() || args.user.contains(char::is_whitespace) {
        eprintln!("kafka-sidecar hash-password: the user name must be non-empty and without spaces");
        return ExitCode::from(EXIT_DATA);
    }
    let mut password = String::new();
    if let Err(error) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("kafka-sidecar hash-password: cannot read the password from standard input: {error}");
        return ExitCode::from(EXIT_DATA);
    }
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("kafka-sidecar hash-password: no password on standard input");
        return ExitCode::from(EXIT_DATA);
    }
    let iterations = NonZeroU32::new(args.iterations).expect("range checked by clap");
    let mut out = std::io::stdout().lock();
    for line in lines(&args.user, password.as_bytes(), &args.mechanisms, iterations) {
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::client_auth::credentials::Credentials;

    #[test]
    fn printed_lines_read_back_and_check_the_password() {
        let iterations = NonZeroU32::new(MIN_ITERATIONS).unwrap();
        let text = lines("orders", b"s3cret", &[], iterations).join("\n");
        assert!(!text.contains("s3cret"));
        let credentials = Credentials::parse(&text, Path::new("f")).unwrap();
        for mechanism in ClientMechanism::ALL {
            assert!(credentials.get("orders", mechanism).unwrap().verify_password(b"s3cret"), "{mechanism:?}");
        }
        let only = lines("orders", b"s3cret", &[ClientMechanism::ScramSha256], iterations);
        assert_eq!(only.len(), 1);
        assert!(only[0].starts_with("orders SCRAM-SHA-256 "));
    }
}
