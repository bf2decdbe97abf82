//! Top-level error codes are read where each api keeps them.

use kafka_protocol::messages::{
    AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsResponse, DescribeClusterResponse, ElectLeadersResponse,
    EndTxnResponse, FindCoordinatorResponse, HeartbeatResponse, InitProducerIdResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, ListPartitionReassignmentsResponse, SaslAuthenticateResponse,
    SaslHandshakeResponse, SyncGroupResponse, UpdateFeaturesResponse,
};
use kafka_protocol::protocol::Message;
use kafka_sidecar::wire::{encode_response, response_error_code};
use proptest::prelude::*;

use super::{CORRELATION_ID, since};

/// Encodes a response with `code` as its top-level error and checks `response_error_code` finds it
/// at every version kafka-protocol knows (from `from` on).
macro_rules! top_level_error {
    ($key:expr, $ty:ty, $code:expr, $throttle:expr, from $from:expr) => {
        for version in i16::max($from, <$ty>::VERSIONS.min)..=<$ty>::VERSIONS.max {
            let body = <$ty>::default().with_error_code($code).with_throttle_time_ms($throttle);
            let bytes = encode_response($key, version, CORRELATION_ID, &body)
                .or_else(|_| encode_response($key, version, CORRELATION_ID, &<$ty>::default().with_error_code($code)))
                .unwrap();
            prop_assert_eq!(response_error_code($key as i16, version, &bytes), Some($code), "{:?} v{}", $key, version);
        }
    };
    ($key:expr, $ty:ty, $code:expr, without throttle) => {
        for version in <$ty>::VERSIONS.min..=<$ty>::VERSIONS.max {
            let bytes =
                encode_response($key, version, CORRELATION_ID, &<$ty>::default().with_error_code($code)).unwrap();
            prop_assert_eq!(response_error_code($key as i16, version, &bytes), Some($code), "{:?} v{}", $key, version);
        }
    };
}

proptest! {
    #[test]
    fn top_level_error_codes_are_read_where_each_api_keeps_them(code in any::<i16>(), throttle in any::<i32>()) {
        top_level_error!(ApiKey::ApiVersions, ApiVersionsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::SaslHandshake, SaslHandshakeResponse, code, without throttle);
        top_level_error!(ApiKey::SaslAuthenticate, SaslAuthenticateResponse, code, without throttle);
        top_level_error!(ApiKey::Heartbeat, HeartbeatResponse, code, throttle, from 0);
        top_level_error!(ApiKey::LeaveGroup, LeaveGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::SyncGroup, SyncGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::ListGroups, ListGroupsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::JoinGroup, JoinGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::InitProducerId, InitProducerIdResponse, code, throttle, from 0);
        top_level_error!(ApiKey::EndTxn, EndTxnResponse, code, throttle, from 0);
        top_level_error!(ApiKey::DescribeCluster, DescribeClusterResponse, code, throttle, from 0);
        top_level_error!(ApiKey::ElectLeaders, ElectLeadersResponse, code, throttle, from 1);
        let key = ApiKey::ListPartitionReassignments;
        top_level_error!(key, ListPartitionReassignmentsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::UpdateFeatures, UpdateFeaturesResponse, code, throttle, from 0);
        // v1 (an extra field before the error code) is the regression test below.
        let bytes = encode_response(
            ApiKey::AlterPartitionReassignments,
            0,
            CORRELATION_ID,
            &AlterPartitionReassignmentsResponse::default().with_error_code(code).with_throttle_time_ms(throttle),
        )
        .unwrap();
        prop_assert_eq!(response_error_code(ApiKey::AlterPartitionReassignments as i16, 0, &bytes), Some(code));
        // FindCoordinator keeps one only before v4 (then per coordinator).
        for version in 0..=3 {
            let body = FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_throttle_time_ms(since(version, 1, throttle, 0));
            let bytes = encode_response(ApiKey::FindCoordinator, version, CORRELATION_ID, &body).unwrap();
            prop_assert_eq!(response_error_code(ApiKey::FindCoordinator as i16, version, &bytes), Some(code));
        }
    }
}
