//! AWS MSK IAM authentication: a SigV4-presigned `kafka-cluster:Connect` URL sent as an
//! OAUTHBEARER token, as AWS's own MSK IAM signers build it.
//!
//! The token is the base64url (unpadded) encoding of
//! `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-…&X-Amz-Signature=…`
//! signed with the standard SigV4 query-string algorithm (service `kafka-cluster`, signed header
//! `host`, empty payload), valid for 15 minutes. A fresh token is made for every connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac};

use super::{SaslError, Secret};

const SERVICE: &str = "kafka-cluster";
const EXPIRES: Duration = Duration::from_secs(900);
const USER_AGENT: &str = concat!("kafka-sidecar/", env!("CARGO_PKG_VERSION"));

/// AWS credentials, as the standard environment variables hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl AwsCredentials {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, SaslError> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret)) => Ok(AwsCredentials {
                access_key_id,
                secret_access_key: Secret(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret),
            }),
            _ => Err(SaslError::Credentials(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set for AWS_MSK_IAM".into(),
            )),
        }
    }
}

/// The OAUTHBEARER initial client response carrying `token` (RFC 7628).
pub fn oauthbearer_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// The MSK IAM token for `credentials` in `region` at `now`.
pub fn token(credentials: &AwsCredentials, region: &str, now: SystemTime) -> String {
    URL_SAFE_NO_PAD.encode(presigned_url(credentials, region, now, USER_AGENT))
}

/// The presigned `kafka-cluster:Connect` URL.
pub fn presigned_url(credentials: &AwsCredentials, region: &str, now: SystemTime, user_agent: &str) -> String {
    let host = format!("kafka.{region}.amazonaws.com");
    let (date, datetime) = utc_stamps(now);
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let mut params = vec![
        ("Action", "kafka-cluster:Connect".to_owned()),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
        ("X-Amz-Credential", format!("{}/{scope}", credentials.access_key_id)),
        ("X-Amz-Date", datetime.clone()),
        ("X-Amz-Expires", EXPIRES.as_secs().to_string()),
    ];
    if let Some(token) = &credentials.session_token {
        params.push(("X-Amz-Security-Token", token.0.clone()));
    }
    params.push(("X-Amz-SignedHeaders", "host".to_owned()));
    params.sort_by(|a, b| a.0.cmp(b.0));
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v))).collect();
    let query = query.join("&");

    let empty_payload = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let canonical_request = format!("GET\n/\n{query}\nhost:{host}\n\nhost\n{empty_payload}");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{datetime}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let key = signing_key(&credentials.secret_access_key.0, &date, region, SERVICE);
    let signature = hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), string_to_sign.as_bytes()).as_ref());
    format!("https://{host}/?{query}&X-Amz-Signature={signature}&User-Agent={}", uri_encode(user_agent))
}

/// SigV4's derived signing key: HMAC chain over date, region, service and "aws4_request".
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let sign = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = sign(format!("AWS4{secret}").as_bytes(), date);
    let k_region = sign(k_date.as_ref(), region);
    let k_service = sign(k_region.as_ref(), service);
    sign(k_service.as_ref(), "aws4_request").as_ref().to_vec()
}

/// SigV4 URI encoding: everything but unreserved characters, `/` included.
pub(super) fn uri_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` for `time` in UTC.
fn utc_stamps(time: SystemTime) -> (String, String) {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let datetime = format!("{date}T{:02}{:02}{:02}Z", rest / 3600, rest / 60 % 60, rest % 60);
    (date, datetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        }
    }

    /// AWS's published example of a derived SigV4 signing key.
    #[test]
    fn signing_key_matches_aws_example() {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam");
        assert_eq!(hex(&key), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    }

    /// A token made by AWS's own signer (aws-msk-iam-sasl-signer-python 1.0.2) for these
    /// credentials at 2026-11-25T12:00:00Z: same URL, same signature.
    #[test]
    fn presigned_url_matches_the_aws_signer() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_608_000);
        let url = presigned_url(&example_credentials(), "us-east-1", now, "aws-msk-iam-sasl-signer-python/1.0.2");
        assert_eq!(
            url,
            "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261125%2Fus-east-1%2Fkafka-cluster%2Faws4_request\
             &X-Amz-Date=20261125T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=5fd19493e74f7c1b088710f892dd657d3a82a64d984ac48c8479907111709e79\
             &User-Agent=aws-msk-iam-sasl-signer-python%2F1.0.2"
        );
        let token = URL_SAFE_NO_PAD.encode(&url);
        assert!(token.starts_with("aHR0cHM6Ly9rYWZrYS51cy1lYXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmth"));
    }

    #[test]
    fn session_token_is_signed_too() {
        let mut credentials = example_credentials();
        credentials.session_token = Some(Secret("FQoG/session+token=".into()));
        let url = presigned_url(&credentials, "eu-west-1", UNIX_EPOCH, "x");
        assert!(url.contains("&X-Amz-Security-Token=FQoG%2Fsession%2Btoken%3D&X-Amz-SignedHeaders=host"), "{url}");
        assert!(url.contains("X-Amz-Date=19700101T000000Z"));
    }

    #[test]
    fn oauthbearer_message_layout() {
        assert_eq!(oauthbearer_message("abc"), b"n,,\x01auth=Bearer abc\x01\x01");
    }
}
