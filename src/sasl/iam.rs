//! AWS MSK IAM tokens: a `kafka-cluster:Connect` URL presigned with SigV4 by `aws-sigv4`,
//! base64url-encoded (unpadded) and sent as an OAUTHBEARER token, byte for byte as AWS's own MSK
//! IAM signer makes it. Owns the token layout only; it never fetches credentials (see `aws`) and
//! never touches the network.
//!
//! The URL carries `Action`, the `X-Amz-*` parameters in the signer's order and, unsigned, the
//! `User-Agent`; the signature covers the `host` header and an empty payload, valid 15 minutes.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_http::query_writer::QueryWriter;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::SaslError;

const SERVICE: &str = "kafka-cluster";
const EXPIRES: Duration = Duration::from_secs(900);
const USER_AGENT: &str = concat!("kafka-sidecar/", env!("CARGO_PKG_VERSION"));

/// The OAUTHBEARER initial client response carrying `token` (RFC 7628).
pub fn oauthbearer_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// The MSK IAM token for `credentials` in `region` at `now`.
pub fn token(credentials: &Credentials, region: &str, now: SystemTime) -> Result<String, SaslError> {
    Ok(URL_SAFE_NO_PAD.encode(presigned_url(credentials, region, now, USER_AGENT)?))
}

/// The presigned `kafka-cluster:Connect` URL, `user_agent` appended unsigned.
pub fn presigned_url(
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
    user_agent: &str,
) -> Result<String, SaslError> {
    let failed = |e: &dyn std::fmt::Display| SaslError::Credentials(format!("cannot sign the MSK IAM token: {e}"));
    let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(EXPIRES);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let request =
        SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(b"")).map_err(|e| failed(&e))?;
    let (_, mut added) = sign(request, &params).map_err(|e| failed(&e))?.into_parts().0.into_parts();
    // AWS's signers put the signature after every other X-Amz parameter, session token included.
    added.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
    added.push(("User-Agent", Cow::Borrowed(user_agent)));
    let mut query = QueryWriter::new_from_string(&url).map_err(|e| failed(&e))?;
    for (name, value) in &added {
        query.insert(name, value);
    }
    Ok(query.build_uri().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn credentials(id: &str, secret: &str, session_token: Option<&str>) -> Credentials {
        Credentials::new(id, secret, session_token.map(str::to_owned), None, "test")
    }

    const PYTHON_SIGNER: &str = "aws-msk-iam-sasl-signer-python/1.0.2";

    /// A token made by AWS's own signer (aws-msk-iam-sasl-signer-python 1.0.2) for these
    /// credentials at 2026-11-25T12:00:00Z: same URL, same signature.
    #[test]
    fn presigned_url_matches_the_aws_signer() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_608_000);
        let example = credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None);
        let url = presigned_url(&example, "us-east-1", now, PYTHON_SIGNER).unwrap();
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

    /// Whole tokens made by aws-msk-iam-sasl-signer-python 1.0.2 (botocore 1.44.8) in eu-west-1
    /// at 2024-05-01T12:00:00Z, with and without a session token (as tests/security_harness/).
    #[test]
    fn tokens_match_the_aws_signer_byte_for_byte() {
        let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        let cases = [
            (
                credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None),
                "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NzVmMTJjYWY1NmZiMjMyMTU4MzFiOGY0NWU4MTA3M2Y5NDQ4M2EwMzM2ZmU1NzBiMmIyNzE4YjM2MDMzYTMxNCZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y",
            ),
            (
                credentials("ASIAEXAMPLE", "secret/with+chars", Some("FwoGZXIvYXdzEXAMPLE//token+/=")),
                "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QVNJQUVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpFWEFNUExFJTJGJTJGdG9rZW4lMkIlMkYlM0QmWC1BbXotU2lnbmF0dXJlPTM3MjIxMjc2NTI1NTQyNGI0ZWYyZjI4MGZkOGNmYTVlOWUwNzEzMzc5MDVlOTBiYzBjNmJhYjJmYjVjMWIyMWYmVXNlci1BZ2VudD1hd3MtbXNrLWlhbS1zYXNsLXNpZ25lci1weXRob24lMkYxLjAuMg",
            ),
        ];
        for (credentials, expected) in cases {
            let url = presigned_url(&credentials, "eu-west-1", now, PYTHON_SIGNER).unwrap();
            assert_eq!(URL_SAFE_NO_PAD.encode(&url), expected, "{url}");
        }
    }

    #[test]
    fn the_sidecar_names_itself_in_the_token() {
        let token = token(&credentials("AKID", "secret", None), "eu-west-1", UNIX_EPOCH).unwrap();
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap();
        assert!(url.contains("X-Amz-Date=19700101T000000Z"), "{url}");
        assert!(url.ends_with(&format!("&User-Agent=kafka-sidecar%2F{}", env!("CARGO_PKG_VERSION"))), "{url}");
    }

    #[test]
    fn oauthbearer_message_layout() {
        assert_eq!(oauthbearer_message("abc"), b"n,,\x01auth=Bearer abc\x01\x01");
    }
}
