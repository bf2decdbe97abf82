//! AWS credentials for AWS_MSK_IAM: `aws-config`'s default provider chain (environment keys,
//! profile and SSO, web identity/IRSA, EKS Pod Identity and ECS, EC2 instance metadata) behind
//! its lazy identity cache, over a rustls + ring HTTPS client. Owns only that wiring: it never
//! parses credential documents, speaks HTTP or decides when to refresh by itself, and never
//! puts a secret into a log line or an error.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, future::ProvideCredentials as ProvideCredentialsFuture,
};
use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime::client::auth::no_auth::{NO_AUTH_SCHEME_ID, NoAuthScheme};
use aws_smithy_runtime::client::orchestrator::endpoints::StaticUriEndpointResolver;
use aws_smithy_runtime::client::retries::strategy::NeverRetryStrategy;
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::identity::{ResolveCachedIdentity, SharedIdentityCache, SharedIdentityResolver};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;

use super::SaslError;

/// Credentials are renewed between half this and this long before they expire (the cache
/// jitters it), so that a session signed with them is not cut short by their expiry.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// The longest one load through the chain may take (an STS or agent round trip, retries
/// included).
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The credentials to sign the MSK IAM token for a cluster in `region` with: cached ones, or
/// fresh ones from the chain when they are due for renewal.
pub async fn credentials(region: &str) -> Result<Credentials, SaslError> {
    source(region).await?.credentials().await
}

/// The process-wide source for `region` (the environment does not change while running).
async fn source(region: &str) -> Result<Arc<Source>, SaslError> {
    static SOURCE: tokio::sync::Mutex<Option<Arc<Source>>> = tokio::sync::Mutex::const_new(None);
    let mut slot = SOURCE.lock().await;
    match slot.as_ref() {
        Some(existing) if existing.region == region => Ok(existing.clone()),
        _ => {
            let created = Arc::new(Source::load(region).await?);
            *slot = Some(created.clone());
            Ok(created)
        }
    }
}

/// The provider chain, its cache, and what the cache needs to run outside an SDK client.
struct Source {
    region: String,
    resolver: SharedIdentityResolver,
    cache: SharedIdentityCache,
    components: RuntimeComponents,
}

impl Source {
    async fn load(region: &str) -> Result<Source, SaslError> {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(http_client(std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()))?)
            .load()
            .await;
        let chain = config.credentials_provider().ok_or_else(|| failed("aws-config built no credentials chain"))?;
        Source::new(region, chain, config.time_source(), config.sleep_impl())
    }

    /// `chain` behind a lazy identity cache that reads the time from `clock`.
    fn new(
        region: &str,
        chain: SharedCredentialsProvider,
        clock: Option<SharedTimeSource>,
        sleep: Option<SharedAsyncSleep>,
    ) -> Result<Source, SaslError> {
        let cache = IdentityCache::lazy().buffer_time(REFRESH_BEFORE).load_timeout(LOAD_TIMEOUT).build();
        let resolver = SharedIdentityResolver::new(SharedCredentialsProvider::new(Logged(chain)));
        let components = RuntimeComponentsBuilder::new("kafka-sidecar AWS credentials")
            .with_time_source(clock)
            .with_sleep_impl(sleep)
            .with_identity_cache(Some(cache.clone()))
            .with_identity_resolver(NO_AUTH_SCHEME_ID, resolver.clone())
            .with_auth_scheme(NoAuthScheme::new())
            .with_auth_scheme_option_resolver(Some(StaticAuthSchemeOptionResolver::new(vec![NO_AUTH_SCHEME_ID])))
            .with_endpoint_resolver(Some(StaticUriEndpointResolver::uri("http://unused.invalid")))
            .with_retry_strategy(Some(NeverRetryStrategy::new()))
            .build()
            .map_err(|e| failed(format!("cannot set up the credential cache: {e}")))?;
        Ok(Source { region: region.to_owned(), resolver, cache, components })
    }

    async fn credentials(&self) -> Result<Credentials, SaslError> {
        let config = ConfigBag::base();
        let resolved = self.cache.resolve_cached_identity(self.resolver.clone(), &self.components, &config);
        let identity = resolved.await.map_err(|e| failed(describe(e.as_ref())))?;
        identity.data::<Credentials>().cloned().ok_or_else(|| failed("the chain returned no AWS credentials"))
    }
}

/// The chain, logging each load (a cache miss): one line per new set of credentials.
#[derive(Debug)]
struct Logged(SharedCredentialsProvider);

impl ProvideCredentials for Logged {
    fn provide_credentials<'a>(&'a self) -> ProvideCredentialsFuture<'a>
    where
        Self: 'a,
    {
        ProvideCredentialsFuture::new(async move {
            let credentials = self.0.provide_credentials().await?;
            let expiry = credentials.expiry();
            match expiry.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()) {
                Some(valid_for) => tracing::info!(valid_for_s = valid_for.as_secs(), "AWS credentials loaded"),
                None => tracing::info!("AWS credentials loaded (no expiry)"),
            }
            Ok(credentials)
        })
    }
}

/// The HTTPS client the chain's STS, SSO, container and metadata calls use: rustls with ring,
/// trusting the PEM bundle at `ca_bundle` (`AWS_CA_BUNDLE`) if set, else the system's roots.
fn http_client(ca_bundle: Option<std::ffi::OsString>) -> Result<SharedHttpClient, SaslError> {
    let trust = match ca_bundle {
        None => TrustStore::default(),
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| {
                failed(format!("cannot read the CA bundle AWS_CA_BUNDLE={}: {e}", path.to_string_lossy()))
            })?;
            TrustStore::empty().with_pem_certificate(pem)
        }
    };
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| failed(format!("cannot set up TLS for AWS: {}", describe(&e))))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https())
}

fn failed(message: impl Into<String>) -> SaslError {
    SaslError::Credentials(message.into())
}

/// `error` and its causes, outermost first, each once: the same text for the same failure, so
/// that repeated attempts are reported once.
fn describe(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use aws_credential_types::credential_fn::provide_credentials_fn;
    use aws_credential_types::provider::error::CredentialsError;
    use aws_smithy_async::rt::sleep::TokioSleep;
    use aws_smithy_async::time::TimeSource;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn errors_are_described_with_their_causes_once() {
        let inner = Layer("InvalidIdentityToken: Incorrect token audience", None);
        let middle = Layer("service error", Some(Box::new(inner)));
        let outer = Layer("an error occurred while loading credentials", Some(Box::new(middle)));
        assert_eq!(
            describe(&outer),
            "an error occurred while loading credentials: service error: InvalidIdentityToken: Incorrect token audience"
        );
        let repeated = Layer("dispatch failure: io error", Some(Box::new(Layer("io error", None))));
        assert_eq!(describe(&repeated), "dispatch failure: io error");
    }

    #[test]
    fn a_missing_ca_bundle_is_named() {
        let error = http_client(Some("/nonexistent/ca.pem".into())).unwrap_err().to_string();
        assert!(error.starts_with("no credentials: cannot read the CA bundle AWS_CA_BUNDLE=/nonexistent/ca.pem:"));
    }

    #[test]
    fn the_https_client_builds_with_ring() {
        assert!(http_client(None).is_ok());
    }

    #[derive(Debug)]
    struct Clock(Arc<Mutex<SystemTime>>);

    impl TimeSource for Clock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    /// A source on a chain that issues `ASIA-<n>` for an hour from the clock's time on its n-th
    /// load, and fails while `fail` is set.
    fn counted_source(now: &Arc<Mutex<SystemTime>>, calls: &Arc<AtomicUsize>, fail: &Arc<AtomicBool>) -> Source {
        let (now, clock, calls, fail) = (now.clone(), Clock(now.clone()), calls.clone(), fail.clone());
        let chain = provide_credentials_fn(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let expiry = *now.lock().unwrap() + Duration::from_secs(3600);
            let failing = fail.load(Ordering::SeqCst);
            async move {
                if failing {
                    return Err(CredentialsError::provider_error("agent unreachable"));
                }
                Ok(Credentials::new(format!("ASIA-{n}"), "secret", Some("session".into()), Some(expiry), "test"))
            }
        });
        let sleep = SharedAsyncSleep::new(TokioSleep::new());
        Source::new("eu-west-1", SharedCredentialsProvider::new(chain), Some(SharedTimeSource::new(clock)), Some(sleep))
            .unwrap()
    }

    #[tokio::test]
    async fn credentials_are_cached_until_shortly_before_expiry_and_failures_are_retried() {
        let now = Arc::new(Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_608_000)));
        let (calls, fail) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let source = counted_source(&now, &calls, &fail);
        let key = async || source.credentials().await.map(|c| c.access_key_id().to_owned());
        assert_eq!(key().await.unwrap(), "ASIA-1");
        *now.lock().unwrap() += Duration::from_secs(3600 - 301);
        assert_eq!(key().await.unwrap(), "ASIA-1", "more than five minutes left: cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Within the (jittered) renewal window a failed load is an error, and the next call
        // asks the chain again.
        *now.lock().unwrap() += Duration::from_secs(301 - 149);
        fail.store(true, Ordering::SeqCst);
        let error = key().await.unwrap_err().to_string();
        assert!(error.starts_with("no credentials: ") && error.contains("agent unreachable"), "{error}");
        fail.store(false, Ordering::SeqCst);
        assert_eq!(key().await.unwrap(), "ASIA-3", "renewed");
        assert_eq!(key().await.unwrap(), "ASIA-3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
