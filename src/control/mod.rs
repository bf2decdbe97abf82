//! The sidecar's own long-lived connections to the cluster: one that refreshes metadata into the
//! cluster view, and one per broker ([`Links`]) for NOT_CONTROLLER retries and targeted metadata
//! reads.
//!
//! Metadata is refreshed periodically and whenever the cluster view asks, so the broker map and
//! controller id are always known; failures back off with the one [`Backoff`]. It never opens
//! listeners (they follow the cluster view) and never touches client traffic.

mod link;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use link::ControlConnection;
pub use link::{ControlError, Links};

use crate::backoff::Backoff;
use crate::telemetry::{self, RefreshResult};

/// The first wait after a failed refresh; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long refresh requests from many sessions are given to coalesce.
const COALESCE: Duration = Duration::from_millis(50);

/// Refreshes metadata every `interval` and whenever asked, until `shutdown`.
pub async fn refresh_metadata(links: Arc<Links>, interval: Duration, shutdown: CancellationToken) {
    let cluster = links.cluster().clone();
    let mut connection: Option<ControlConnection> = None;
    let mut failures = 0u32;
    let mut backoff = Backoff::new(FIRST_RETRY, interval);
    loop {
        let wait = match refresh(&links, &mut connection).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!("metadata refresh recovered");
                }
                failures = 0;
                backoff = Backoff::new(FIRST_RETRY, interval);
                cluster.set_reachable(true);
                telemetry::metadata_refresh(RefreshResult::Ok);
                interval
            }
            Err(error) => {
                connection = None;
                if failures == 0 {
                    tracing::warn!(%error, "metadata refresh failed");
                } else {
                    tracing::debug!(%error, failures, "metadata refresh failed again");
                }
                failures += 1;
                cluster.set_reachable(false);
                telemetry::metadata_refresh(RefreshResult::Error);
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = cluster.refresh_requested() => tokio::time::sleep(COALESCE).await,
        }
    }
}

/// One refresh over the control connection, (re)opened to any bootstrap address as needed.
async fn refresh(links: &Links, connection: &mut Option<ControlConnection>) -> Result<(), ControlError> {
    if let Some(conn) = connection.as_mut()
        && conn.is_stale().await
    {
        *connection = None;
    }
    let reused = connection.is_some();
    let addresses = links.cluster().bootstrap_addresses();
    if !reused {
        *connection = Some(links.open(&addresses).await?);
    }
    let conn = connection.as_mut().expect("connection just set");
    let learned = match conn.fetch_metadata().await {
        Err(error) if reused => {
            tracing::debug!(%error, "control connection went stale; reconnecting");
            let conn = connection.insert(links.open(&addresses).await?);
            conn.fetch_metadata().await
        }
        other => other,
    }?;
    links.cluster().learn(&learned);
    Ok(())
}
