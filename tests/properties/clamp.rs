//! The ApiVersions clamp.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Message;
use kafka_sidecar::rewrite::{self, clamp_limit};
use proptest::collection::vec;
use proptest::prelude::*;

use super::{advertised, frame, round_trip, s, since, tagged_fields, tags_if, text};

fn api_key() -> impl Strategy<Value = i16> {
    // Mostly real api keys, the clamped ones among them, sometimes any number.
    prop_oneof![
        3 => proptest::sample::select(vec![0i16, 1, 3, 10, 18, 55, 60]),
        3 => 0..80i16,
        1 => any::<i16>(),
    ]
}

fn version_number() -> impl Strategy<Value = i16> {
    prop_oneof![4 => -1..20i16, 1 => any::<i16>()]
}

fn api_range() -> impl Strategy<Value = (i16, i16, i16, BTreeMap<i32, Bytes>)> {
    (api_key(), version_number(), version_number(), tagged_fields(0))
        .prop_map(|(key, a, b, tags)| (key, a.min(b), a.max(b), tags))
}

#[derive(Debug, Clone, Default)]
struct Features {
    supported: Vec<(String, i16, i16)>,
    epoch: i64,
    finalized: Vec<(String, i16, i16)>,
    zk_migration_ready: bool,
    tags: BTreeMap<i32, Bytes>,
}

fn features() -> impl Strategy<Value = Features> {
    let keys = || vec((text(16), any::<i16>(), any::<i16>()), 0..3);
    // Often the defaults, which the rewrite drops from the tagged fields.
    let epoch = prop_oneof![Just(-1i64), any::<i64>()];
    (keys(), epoch, keys(), any::<bool>(), tagged_fields(4)).prop_map(
        |(supported, epoch, finalized, zk_migration_ready, tags)| Features {
            supported,
            epoch,
            finalized,
            zk_migration_ready,
            tags,
        },
    )
}

fn api_versions(
    ranges: &[(i16, i16, i16, BTreeMap<i32, Bytes>)],
    throttle: i32,
    f: &Features,
    v: i16,
) -> ApiVersionsResponse {
    let flexible = v >= 3;
    let api_keys = ranges
        .iter()
        .map(|(key, min, max, tags)| {
            ApiVersion::default()
                .with_api_key(*key)
                .with_min_version(*min)
                .with_max_version(*max)
                .with_unknown_tagged_fields(tags_if(flexible, tags))
        })
        .collect();
    let response =
        ApiVersionsResponse::default().with_api_keys(api_keys).with_throttle_time_ms(since(v, 1, throttle, 0));
    if !flexible {
        return response;
    }
    response
        .with_supported_features(
            f.supported
                .iter()
                .map(|(name, min, max)| {
                    SupportedFeatureKey::default().with_name(s(name)).with_min_version(*min).with_max_version(*max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(f.epoch)
        .with_finalized_features(
            f.finalized
                .iter()
                .map(|(name, min, max)| {
                    FinalizedFeatureKey::default()
                        .with_name(s(name))
                        .with_min_version_level(*min)
                        .with_max_version_level(*max)
                })
                .collect(),
        )
        .with_zk_migration_ready(f.zk_migration_ready)
        .with_unknown_tagged_fields(f.tags.clone())
}

proptest! {
    #[test]
    fn api_versions_are_clamped_and_nothing_else_changes(
        ranges in vec(api_range(), 0..12),
        throttle in any::<i32>(),
        features in features(),
        advertised in advertised(),
    ) {
        for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
            let original = api_versions(&ranges, throttle, &features, version);
            let (rewritten, decoded) = round_trip(ApiKey::ApiVersions, version, &original, &advertised);

            // Each range intersected with 0..=limit; an empty intersection drops the entry.
            let mut expected = original.clone();
            expected.api_keys.retain(|api| clamp_limit(api.api_key).is_none_or(|limit| api.min_version <= limit));
            for api in &mut expected.api_keys {
                if let Some(limit) = clamp_limit(api.api_key) {
                    api.max_version = api.max_version.min(limit);
                }
            }
            prop_assert_eq!(&decoded, &expected, "v{}", version);
            prop_assert!(rewritten.brokers.is_empty());
            prop_assert_eq!(rewritten.controller_id, None);
        }
    }

    #[test]
    fn api_versions_error_answers_pass_unchanged(
        error_code in any::<i16>().prop_filter("an error", |code| *code != 0),
        ranges in vec(api_range(), 0..6),
        advertised in advertised(),
    ) {
        for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
            let original = api_versions(&ranges, 0, &Features::default(), version).with_error_code(error_code);
            let bytes = frame(ApiKey::ApiVersions, version, &original);
            let rewritten = rewrite::response(ApiKey::ApiVersions as i16, version, &bytes, &advertised).unwrap();
            prop_assert_eq!(rewritten.unwrap().frame, bytes, "v{}", version);
        }
    }
}
