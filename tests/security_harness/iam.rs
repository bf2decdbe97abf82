//! AWS MSK IAM tokens over OAUTHBEARER: the presigner and the verifier against AWS's signer.

use std::time::Duration;

use kafka_sidecar_test_support::{self as support, security};
use security::{
    AwsCredentials, Client, ClientSecurity, IamTokenOptions, SaslBroker, SaslConfig, TlsOptions, check_iam_token,
    iam_token, iam_token_with, probe, probe_holding,
};

/// Tokens made by aws-msk-iam-sasl-signer-python 1.0.2 (botocore 1.44.8) for region eu-west-1 at
/// 2024-05-01T12:00:00Z: (access key id, secret, session token, token).
const AWS_SIGNER_TOKENS: [(&str, &str, Option<&str>, &str); 2] = [
    (
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
        "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NzVmMTJjYWY1NmZiMjMyMTU4MzFiOGY0NWU4MTA3M2Y5NDQ4M2EwMzM2ZmU1NzBiMmIyNzE4YjM2MDMzYTMxNCZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y",
    ),
    (
        "ASIAEXAMPLE",
        "secret/with+chars",
        Some("FwoGZXIvYXdzEXAMPLE//token+/="),
        "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QVNJQUVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpFWEFNUExFJTJGJTJGdG9rZW4lMkIlMkYlM0QmWC1BbXotU2lnbmF0dXJlPTM3MjIxMjc2NTI1NTQyNGI0ZWYyZjI4MGZkOGNmYTVlOWUwNzEzMzc5MDVlOTBiYzBjNmJhYjJmYjVjMWIyMWYmVXNlci1BZ2VudD1hd3MtbXNrLWlhbS1zYXNsLXNpZ25lci1weXRob24lMkYxLjAuMg",
    ),
];
const AWS_SIGNER_TIME: u64 = 1_714_564_800;

#[test]
fn iam_verifier_and_presigner_agree_with_the_aws_signer() {
    for (id, secret, session, token) in AWS_SIGNER_TOKENS {
        let mut creds = AwsCredentials::new(id, secret);
        if let Some(s) = session {
            creds = creds.with_session_token(s);
        }
        // The front end's verifier accepts AWS's token while it is valid, and only then.
        assert_eq!(
            check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 60)),
            Ok(id.to_string())
        );
        assert_eq!(
            check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 900)),
            Ok(id.to_string())
        );
        let late = check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 901));
        assert_eq!(late, Err("token expired at 20240501T120000Z + 900s".to_string()));
        let future = check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME - 301));
        assert_eq!(future, Err("X-Amz-Date 20240501T120000Z is in the future".to_string()));
        let wrong_key = AwsCredentials::new(id, "another secret");
        assert_eq!(
            check_iam_token("eu-west-1", &[wrong_key], token, Some(AWS_SIGNER_TIME)),
            Err("signature mismatch".to_string())
        );
        let other_region = check_iam_token("us-east-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME));
        assert!(other_region.unwrap_err().contains("is not https://kafka.us-east-1.amazonaws.com/"));

        // The reference presigner reproduces AWS's token byte for byte.
        let options = IamTokenOptions {
            timestamp: Some(AWS_SIGNER_TIME),
            user_agent: Some("aws-msk-iam-sasl-signer-python/1.0.2".to_string()),
            ..IamTokenOptions::default()
        };
        assert_eq!(iam_token_with("eu-west-1", &creds, &options), token);
    }

    // Tampering with any signed parameter breaks the signature; the unsigned User-Agent does not.
    let (id, secret, _, _) = AWS_SIGNER_TOKENS[0];
    let creds = AwsCredentials::new(id, secret);
    let now = Some(AWS_SIGNER_TIME + 1);
    let time = AWS_SIGNER_TIME.to_string();
    let signed = support::python_ok(
        "iam_token.py",
        &["--region", "eu-west-1", "--access-key-id", id, "--secret-access-key", secret, "--timestamp", &time, "--url"],
    )
    .trim()
    .to_string();
    let encode = |url: &str| base64_url(url.as_bytes());
    assert_eq!(check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&signed), now), Ok(id.to_string()));
    let other_ua = signed.replace("User-Agent=kafka-sidecar-tests%2Fiam_token.py", "User-Agent=something-else");
    assert_ne!(other_ua, signed);
    assert_eq!(check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&other_ua), now), Ok(id.to_string()));
    let shorter = signed.replace("X-Amz-Expires=900", "X-Amz-Expires=600");
    assert_eq!(
        check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&shorter), now),
        Err("signature mismatch".into())
    );
    let action = signed.replace("kafka-cluster%3AConnect", "kafka-cluster%3AconnecT");
    assert!(check_iam_token("eu-west-1", &[creds], &encode(&action), now).unwrap_err().contains("Action"));
}

/// Unpadded base64url.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn oauthbearer_accepts_iam_tokens_signed_with_the_right_key_only() {
    let creds = AwsCredentials::example();
    let broker = SaslBroker::start_iam("eu-central-1", std::slice::from_ref(&creds), None);
    let addr = broker.addr();

    for client in Client::ALL {
        let result = probe(client, &addr, &ClientSecurity::iam("eu-central-1", &creds));
        result.assert_ok();
        assert_eq!(result.brokers, vec![addr.clone()]);
    }
    let token = iam_token("eu-central-1", &creds);
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&token)).assert_ok();

    let forged = iam_token("eu-central-1", &AwsCredentials::new(&creds.access_key_id, "not the secret"));
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&forged))
        .assert_failed_with("IAM authentication failed: signature mismatch");
    probe(Client::KafkaPython, &addr, &ClientSecurity::oauth_token(&forged))
        .assert_failed_with("IAM authentication failed: signature mismatch");

    let unknown = iam_token("eu-central-1", &AwsCredentials::new("AKIAUNKNOWN", "whatever"));
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&unknown))
        .assert_failed_with("IAM authentication failed: unknown access key id AKIAUNKNOWN");

    let an_hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600;
    let stale = iam_token_with(
        "eu-central-1",
        &creds,
        &IamTokenOptions { timestamp: Some(an_hour_ago), ..IamTokenOptions::default() },
    );
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&stale)).assert_failed_with("token expired at");

    let other_region = iam_token("us-west-2", &creds);
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&other_region))
        .assert_failed_with("is not https://kafka.eu-central-1.amazonaws.com/");

    let events = broker.auth_events();
    assert!(
        events
            .iter()
            .any(|e| e.ok && e.mechanism == "OAUTHBEARER" && e.principal.as_deref() == Some("AKIAIOSFODNN7EXAMPLE")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| !e.ok && e.error.as_deref() == Some("IAM authentication failed: signature mismatch")),
        "{events:#?}"
    );
}

#[test]
fn iam_over_tls_reauthenticates_with_fresh_tokens() {
    let creds = AwsCredentials::example().with_session_token("IQoJb3JpZ2luX2VjEXAMPLE/token+=");
    let config = SaslConfig::iam("us-east-1", std::slice::from_ref(&creds))
        .session_lifetime(Duration::from_secs(2))
        .tls(TlsOptions::default());
    let broker = SaslBroker::start_with(config);
    let security = ClientSecurity::iam("us-east-1", &creds).with_ca(broker.ca_path());
    let result = probe_holding(Client::Confluent, &broker.addr(), &security, Duration::from_secs(4));
    result.assert_ok();
    assert_eq!(result.brokers, vec![broker.addr()]);
    assert!(broker.wait_for_reauthentications(1, Duration::from_secs(1)), "{}", broker.logs());
    assert_eq!(broker.expired_sessions(), 0);
}
