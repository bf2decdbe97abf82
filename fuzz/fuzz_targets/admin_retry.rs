//! NOT_CONTROLLER (41) detection and merging on arbitrary bytes.
//!
//! Input: a byte choosing a controller-bound api, a byte choosing its version, two length bytes,
//! then a request body, a first response body and a retry response body (the remainder). The
//! request and both responses are walked; where they parse, the request is cut down to the entries
//! answered 41 and the retry's answers are merged into the first response. Nothing may panic, the
//! cut-down request must walk again to exactly the wanted entries (with its timeout kept), and the
//! merged response must walk again to the first response's entries, each with the retry's error
//! code where the first said 41 and the retry answered the same entry.
//!
//! The layout walkers and the retry plan are private to `kafka_sidecar::admin_retry`; until they
//! are public, their source files are compiled into this target as they are, over the crate's
//! public `wire` module, so the fuzzer exercises the very code the sidecar runs.

#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_sidecar::admin_retry::{Granularity, granularity};
use kafka_sidecar::wire::response_body_offset;
use libfuzzer_sys::fuzz_target;

use kafka_sidecar::admin_retry::{layout, plan};
use layout::{Array, RequestLayout, ResponseLayout};
use plan::{NOT_CONTROLLER, Path};

/// The controller-bound apis, each with the highest version kafka-protocol 0.18 knows.
const APIS: [(ApiKey, i16); 8] = [
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 6),
    (ApiKey::CreatePartitions, 3),
    (ApiKey::ElectLeaders, 2),
    (ApiKey::AlterUserScramCredentials, 0),
    (ApiKey::AlterPartitionReassignments, 1),
    (ApiKey::ListPartitionReassignments, 0),
    (ApiKey::UpdateFeatures, 2),
];

/// A request frame: length prefix, then the body (the walkers start at `body`, so no header is
/// needed in front of it).
fn request_frame(body: &[u8]) -> BytesMut {
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.put_slice(body);
    frame
}

/// A response frame: length prefix, correlation id, header tagged fields where the version has
/// them, body.
fn response_frame(key: ApiKey, version: i16, body: &[u8]) -> BytesMut {
    let mut frame = BytesMut::with_capacity(body.len() + 9);
    frame.put_i32(0);
    frame.put_i32(7);
    if key.response_header_version(version) >= 1 {
        frame.put_u8(0);
    }
    frame.put_slice(body);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

fn walk_response(key: ApiKey, version: i16, frame: &[u8]) -> Option<ResponseLayout> {
    let body = response_body_offset(frame, key, version).ok()?;
    let layout = layout::response(key, version, frame, body).ok()?;
    if let Some(results) = &layout.results {
        check_array(results, body, frame.len());
    }
    Some(layout)
}

/// Entries lie inside the frame, after their count, in order, children inside their parent.
fn check_array(array: &Array, from: usize, to: usize) {
    assert!(from <= array.count.start && array.count.start <= array.count.end && array.count.end <= to);
    let mut at = array.count.end;
    for entry in &array.entries {
        assert!(at <= entry.range.start && entry.range.start <= entry.range.end && entry.range.end <= to);
        if let Some(children) = &entry.children {
            check_array(children, entry.range.start, entry.range.end);
        }
        at = entry.range.end;
    }
}

/// Leaf paths in order, with their error codes.
fn leaves(array: &Array) -> Vec<(Path, i16)> {
    fn walk(array: &Array, prefix: &mut Path, out: &mut Vec<(Path, i16)>) {
        for entry in &array.entries {
            prefix.push(entry.key.clone());
            match &entry.children {
                Some(children) => walk(children, prefix, out),
                None => out.push((prefix.clone(), entry.error_code)),
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(array, &mut Vec::new(), &mut out);
    out
}

fn check_subset(key: ApiKey, version: i16, frame: &[u8], requested: &RequestLayout, wanted: &HashSet<Path>) {
    let subset = plan::subset_request(frame, requested, wanted);
    let len = i32::from_be_bytes(subset[..4].try_into().unwrap());
    assert_eq!(len as usize, subset.len() - 4, "length prefix must match the cut-down request");
    let cut = layout::request(key, version, &subset, 4).expect("the cut-down request must walk again");
    assert_eq!(cut.timeout_ms, requested.timeout_ms, "the cut-down request keeps its timeout");
    assert_eq!(cut.arrays.len(), requested.arrays.len());
    for (cut, original) in cut.arrays.iter().zip(&requested.arrays) {
        let expected: Vec<_> = leaves(original).into_iter().filter(|(path, _)| wanted.contains(path)).collect();
        assert_eq!(leaves(cut), expected, "the cut-down request holds exactly the wanted entries");
    }
}

fn check_merge(key: ApiKey, version: i16, first: &[u8], first_layout: &ResponseLayout, retry: &[u8]) {
    let Some(retry_layout) = walk_response(key, version, retry) else {
        return;
    };
    let merged = plan::merge(first, first_layout, retry, &retry_layout);
    let len = i32::from_be_bytes(merged[..4].try_into().unwrap());
    assert_eq!(len as usize, merged.len() - 4, "length prefix must match the merged response");
    assert_eq!(merged[4..8], first[4..8], "the merged response keeps the correlation id");
    let merged_layout = walk_response(key, version, &merged).expect("the merged response must walk again");
    assert_eq!(merged_layout.top_level_error, first_layout.top_level_error);

    let (Some(first_results), Some(retry_results), Some(merged_results)) =
        (&first_layout.results, &retry_layout.results, &merged_layout.results)
    else {
        assert_eq!(merged_layout.results.is_some(), first_layout.results.is_some());
        return;
    };
    // The last retry entry on a path is the one merged in.
    let answers: HashMap<Path, i16> = leaves(retry_results).into_iter().collect();
    let expected: Vec<_> = leaves(first_results)
        .into_iter()
        .map(|(path, code)| {
            let code = match answers.get(&path) {
                Some(answer) if code == NOT_CONTROLLER => *answer,
                _ => code,
            };
            (path, code)
        })
        .collect();
    assert_eq!(leaves(merged_results), expected, "merging keeps the order and takes the retry's answers");
}

fuzz_target!(|data: &[u8]| {
    let [api, version, req_len, first_len, rest @ ..] = data else {
        return;
    };
    let (key, max_version) = APIS[usize::from(*api) % APIS.len()];
    let version = i16::from(*version) % (max_version + 1);
    let granularity = granularity(key as i16).expect("every api here is controller-bound");
    let (request_body, rest) = rest.split_at(usize::from(*req_len).min(rest.len()));
    let (first_body, retry_body) = rest.split_at(usize::from(*first_len).min(rest.len()));

    let request = request_frame(request_body);
    let requested = layout::request(key, version, &request, 4);
    if let Ok(requested) = &requested {
        assert_eq!(requested.arrays.is_empty(), granularity == Granularity::TopLevel);
        for array in &requested.arrays {
            check_array(array, 4, request.len());
        }
    }

    let first = response_frame(key, version, first_body);
    let Some(first_layout) = walk_response(key, version, &first) else {
        return;
    };
    let failed = plan::not_controller_paths(&first_layout);
    let codes = plan::error_codes(&first_layout);
    assert_eq!(codes[0], first_layout.top_level_error);
    assert_eq!(
        plan::has_not_controller(&first_layout),
        codes.contains(&NOT_CONTROLLER),
        "41 is detected wherever it is reported"
    );

    if let Ok(requested) = &requested {
        check_subset(key, version, &request, requested, &failed);
        // Any other selection must cut as cleanly: every other leaf of the request.
        let every_other: HashSet<Path> = requested
            .arrays
            .iter()
            .flat_map(|array| leaves(array).into_iter().step_by(2).map(|(path, _)| path))
            .collect();
        check_subset(key, version, &request, requested, &every_other);
    }

    let retry = response_frame(key, version, retry_body);
    check_merge(key, version, &first, &first_layout, &retry);
});
