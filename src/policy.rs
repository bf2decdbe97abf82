//! One table of what the sidecar does with each Kafka API, keyed by api key.
//!
//! Every per-API rule lives in [`policy`]: which responses are rewritten, the highest version
//! offered to clients, which controller-bound requests are retried on NOT_CONTROLLER and at which
//! level, which requests the sidecar answers itself, which APIs are everyday traffic, and from
//! these, which frames are held whole and which are relayed as they arrive. Adding an API's rule
//! touches one row. Pure data: it never reads bytes and never awaits.

use kafka_protocol::messages::ApiKey;

/// How an API reports NOT_CONTROLLER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Per topic, partition or user: only the failed entries are re-sent.
    PerEntry,
    /// In the top-level error code: the whole request is re-sent.
    TopLevel,
}

/// The rules for one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Its responses carry broker addresses or version ranges and are rewritten (held whole).
    pub rewritten: bool,
    /// The highest version offered to clients in ApiVersions, where the sidecar caps it.
    pub max_version: Option<i16>,
    /// Controller-bound: a NOT_CONTROLLER answer is retried at this level (request held whole,
    /// it may be re-sent).
    pub retry: Option<Granularity>,
    /// A SASL request the sidecar answers itself when it authenticates to the brokers (held
    /// whole).
    pub sasl: bool,
    /// Everyday traffic: its latency series exists from the start.
    pub everyday: bool,
}

impl Policy {
    /// Whether a request must be held whole rather than relayed as it arrives.
    pub fn holds_request(&self, sidecar_authenticates: bool) -> bool {
        self.retry.is_some() || (self.sasl && sidecar_authenticates)
    }

    /// Whether a response must be held whole rather than relayed as it arrives.
    pub fn holds_response(&self) -> bool {
        self.rewritten || self.retry.is_some()
    }
}

const PASS: Policy = Policy { rewritten: false, max_version: None, retry: None, sasl: false, everyday: false };
const EVERYDAY: Policy = Policy { everyday: true, ..PASS };
const REWRITTEN: Policy = Policy { rewritten: true, everyday: true, ..PASS };
const PER_ENTRY: Policy = Policy { retry: Some(Granularity::PerEntry), ..PASS };
const TOP_LEVEL: Policy = Policy { retry: Some(Granularity::TopLevel), ..PASS };

/// The rules for `api_key`; APIs without a row (unknown ones included) pass through untouched.
pub fn policy(api_key: i16) -> Policy {
    let Ok(key) = ApiKey::try_from(api_key) else { return PASS };
    match key {
        // KIP-951: Produce v10+ and Fetch v16+ responses may carry `node_endpoints`.
        ApiKey::Produce => Policy { max_version: Some(9), ..EVERYDAY },
        ApiKey::Fetch => Policy { max_version: Some(15), ..EVERYDAY },
        ApiKey::ApiVersions => Policy { max_version: Some(4), ..REWRITTEN },
        ApiKey::Metadata => Policy { max_version: Some(13), ..REWRITTEN },
        ApiKey::FindCoordinator => Policy { max_version: Some(6), ..REWRITTEN },
        ApiKey::DescribeCluster => Policy { max_version: Some(2), rewritten: true, ..PASS },
        // DescribeQuorum v2+ lists the controllers' listeners.
        ApiKey::DescribeQuorum => Policy { max_version: Some(1), ..PASS },
        ApiKey::CreateTopics => Policy { everyday: true, ..PER_ENTRY },
        ApiKey::DeleteTopics | ApiKey::CreatePartitions | ApiKey::ElectLeaders | ApiKey::AlterUserScramCredentials => {
            PER_ENTRY
        }
        ApiKey::AlterPartitionReassignments | ApiKey::ListPartitionReassignments | ApiKey::UpdateFeatures => TOP_LEVEL,
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Policy { sasl: true, ..PASS },
        ApiKey::ListOffsets
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::JoinGroup
        | ApiKey::Heartbeat
        | ApiKey::SyncGroup => EVERYDAY,
        _ => PASS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rewritten_and_retried_apis_are_held_whole() {
        let held: Vec<ApiKey> =
            (0..100).filter(|&k| policy(k).holds_response()).filter_map(|k| ApiKey::try_from(k).ok()).collect();
        assert!(held.contains(&ApiKey::Metadata) && held.contains(&ApiKey::CreateTopics));
        assert!(!policy(ApiKey::Produce as i16).holds_request(true));
        assert!(!policy(ApiKey::Fetch as i16).holds_response());
        assert!(policy(ApiKey::SaslAuthenticate as i16).holds_request(true));
        assert!(!policy(ApiKey::SaslAuthenticate as i16).holds_request(false));
        assert_eq!(policy(-1), PASS);
    }

    fn keys(rule: impl Fn(&Policy) -> bool) -> Vec<ApiKey> {
        (0..128).filter(|&k| rule(&policy(k))).filter_map(|k| ApiKey::try_from(k).ok()).collect()
    }

    #[test]
    fn each_rule_covers_exactly_its_apis() {
        use ApiKey::*;
        let capped: Vec<(ApiKey, i16)> =
            (0..128).filter_map(|k| Some((ApiKey::try_from(k).ok()?, policy(k).max_version?))).collect();
        assert_eq!(
            capped,
            [
                (Produce, 9),
                (Fetch, 15),
                (Metadata, 13),
                (FindCoordinator, 6),
                (ApiVersions, 4),
                (DescribeQuorum, 1),
                (DescribeCluster, 2)
            ]
        );
        assert_eq!(keys(|p| p.rewritten), [Metadata, FindCoordinator, ApiVersions, DescribeCluster]);
        assert_eq!(
            keys(|p| p.retry == Some(Granularity::PerEntry)),
            [CreateTopics, DeleteTopics, CreatePartitions, ElectLeaders, AlterUserScramCredentials]
        );
        assert_eq!(
            keys(|p| p.retry == Some(Granularity::TopLevel)),
            [AlterPartitionReassignments, ListPartitionReassignments, UpdateFeatures]
        );
        assert_eq!(keys(|p| p.sasl), [SaslHandshake, SaslAuthenticate]);
        assert_eq!(
            keys(|p| p.everyday),
            [
                Produce,
                Fetch,
                ListOffsets,
                Metadata,
                OffsetCommit,
                OffsetFetch,
                FindCoordinator,
                JoinGroup,
                Heartbeat,
                SyncGroup,
                ApiVersions,
                CreateTopics
            ]
        );
    }
}
