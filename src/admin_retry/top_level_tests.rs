//! NOT_CONTROLLER in the top-level error code (AlterPartitionReassignments and friends), and
//! truncated answers of every controller-bound API, which are errors and never panics.

use kafka_protocol::messages::*;

use super::layout;
use super::plan::{self, NOT_CONTROLLER};
use super::tests::{create_topics_response, request, response, response_layout};
use crate::wire::{peek_request_header, response_body_offset};

// === Top-level APIs ===

#[test]
fn top_level_not_controller_is_detected() {
    let cases = [
        (
            ApiKey::AlterPartitionReassignments,
            0,
            response(
                ApiKey::AlterPartitionReassignments,
                0,
                &AlterPartitionReassignmentsResponse::default().with_error_code(41),
            ),
        ),
        (
            ApiKey::ListPartitionReassignments,
            0,
            response(
                ApiKey::ListPartitionReassignments,
                0,
                &ListPartitionReassignmentsResponse::default().with_error_code(41),
            ),
        ),
        (
            ApiKey::UpdateFeatures,
            0,
            response(ApiKey::UpdateFeatures, 0, &UpdateFeaturesResponse::default().with_error_code(41)),
        ),
        (
            ApiKey::UpdateFeatures,
            1,
            response(ApiKey::UpdateFeatures, 1, &UpdateFeaturesResponse::default().with_error_code(41)),
        ),
    ];
    for (api_key, version, frame) in cases {
        assert!(plan::has_not_controller(&response_layout(api_key, version, &frame)), "{api_key:?} v{version}");
    }
    let ok = response(ApiKey::UpdateFeatures, 1, &UpdateFeaturesResponse::default());
    assert!(!plan::has_not_controller(&response_layout(ApiKey::UpdateFeatures, 1, &ok)));
    for (api_key, version) in
        [(ApiKey::AlterPartitionReassignments, 0), (ApiKey::ListPartitionReassignments, 0), (ApiKey::UpdateFeatures, 1)]
    {
        let frame = match api_key {
            ApiKey::AlterPartitionReassignments => {
                request(api_key, version, &AlterPartitionReassignmentsRequest::default().with_timeout_ms(1234))
            }
            ApiKey::ListPartitionReassignments => {
                request(api_key, version, &ListPartitionReassignmentsRequest::default().with_timeout_ms(1234))
            }
            _ => request(api_key, version, &UpdateFeaturesRequest::default().with_timeout_ms(1234)),
        };
        let body = peek_request_header(&frame).unwrap().body_offset.unwrap();
        assert_eq!(layout::request(api_key, version, &frame, body).unwrap().timeout_ms, Some(1234), "{api_key:?}");
    }
}

#[test]
fn truncated_admin_responses_are_errors() {
    let frame = create_topics_response(5, &[("a", NOT_CONTROLLER), ("b", 0)]);
    let body = response_body_offset(&frame, ApiKey::CreateTopics, 5).unwrap();
    for cut in body..frame.len() - 1 {
        assert!(layout::response(ApiKey::CreateTopics, 5, &frame[..cut], body).is_err(), "cut at {cut}");
    }
}
