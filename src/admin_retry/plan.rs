//! What to re-send and how to answer: the failed entries of a NOT_CONTROLLER response, the
//! request cut down to them, and the client's response with the retried answers merged in.
//!
//! Entries are matched by key path (topic, user, or topic then partition), so a retry's answers
//! land in the client's original order, and entries that succeeded first keep their first answer.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::layout::{Array, Key, RequestLayout, ResponseLayout};
use crate::wire::{Splices, Writer};

pub const NOT_CONTROLLER: i16 = 41;

/// The keys leading to one leaf entry: `[topic]`, `[user]` or `[topic, partition]`.
pub type Path = Vec<Key>;

/// Whether the response carries NOT_CONTROLLER anywhere.
pub fn has_not_controller(layout: &ResponseLayout) -> bool {
    layout.top_level_error == NOT_CONTROLLER || !not_controller_paths(layout).is_empty()
}

/// Every error code in the response: the top-level one and each leaf entry's.
pub fn error_codes(layout: &ResponseLayout) -> Vec<i16> {
    let mut codes = vec![layout.top_level_error];
    if let Some(results) = &layout.results {
        for_each_leaf(results, &mut Vec::new(), &mut |_, code, _| codes.push(code));
    }
    codes
}

/// The leaf entries answered with NOT_CONTROLLER.
pub fn not_controller_paths(layout: &ResponseLayout) -> HashSet<Path> {
    let mut paths = HashSet::new();
    if let Some(results) = &layout.results {
        for_each_leaf(results, &mut Vec::new(), &mut |path, entry_error, _| {
            if entry_error == NOT_CONTROLLER {
                paths.insert(path.clone());
            }
        });
    }
    paths
}

fn for_each_leaf(array: &Array, prefix: &mut Path, visit: &mut impl FnMut(&Path, i16, &Range<usize>)) {
    for entry in &array.entries {
        prefix.push(entry.key.clone());
        match &entry.children {
            Some(children) => for_each_leaf(children, prefix, visit),
            None => visit(prefix, entry.error_code, &entry.range),
        }
        prefix.pop();
    }
}

/// The request with only the entries on `wanted` paths (whole parents kept around kept children).
pub fn subset_request(frame: &[u8], layout: &RequestLayout, wanted: &HashSet<Path>) -> Bytes {
    let mut splices = Splices::default();
    for array in &layout.arrays {
        keep_only(array, &mut Vec::new(), wanted, &mut splices);
    }
    splices.apply(frame)
}

/// Records the splices that drop every entry of `array` not on a wanted path; returns how many
/// entries stay.
fn keep_only(array: &Array, prefix: &mut Path, wanted: &HashSet<Path>, out: &mut Splices) -> usize {
    let mut entry_edits = Splices::default();
    let mut kept = 0;
    for entry in &array.entries {
        prefix.push(entry.key.clone());
        let keep = match &entry.children {
            Some(children) => {
                let mut child_edits = Splices::default();
                let keep = keep_only(children, prefix, wanted, &mut child_edits) > 0;
                if keep {
                    entry_edits.extend(child_edits);
                }
                keep
            }
            None => wanted.contains(prefix),
        };
        prefix.pop();
        if keep {
            kept += 1;
        } else {
            entry_edits.remove(entry.range.clone());
        }
    }
    if kept != array.entries.len() {
        let mut count = Writer::with_capacity(5);
        count.array_len(kept, array.flexible);
        out.replace(array.count.clone(), count.into_inner());
    }
    out.extend(entry_edits);
    kept
}

/// The client's response with each NOT_CONTROLLER entry replaced by the retry's answer for the
/// same path, where the retry has one.
pub fn merge(first: &[u8], first_layout: &ResponseLayout, retry: &[u8], retry_layout: &ResponseLayout) -> Bytes {
    let mut answers: HashMap<Path, Range<usize>> = HashMap::new();
    if let Some(results) = &retry_layout.results {
        for_each_leaf(results, &mut Vec::new(), &mut |path, _, range| {
            answers.insert(path.clone(), range.clone());
        });
    }
    let mut splices = Splices::default();
    if let Some(results) = &first_layout.results {
        for_each_leaf(results, &mut Vec::new(), &mut |path, error_code, range| {
            if error_code == NOT_CONTROLLER
                && let Some(answer) = answers.get(path)
            {
                splices.replace(range.clone(), BytesMut::from(&retry[answer.clone()]));
            }
        });
    }
    splices.apply(first)
}
