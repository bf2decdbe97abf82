//! Metadata responses, every version (v0–v13): broker endpoints rewritten, controller id learned.
//!
//! Only the brokers array, cluster id and controller id are walked; the topics that follow (the
//! bulk of a large response) are copied untouched.

use super::{RewriteError, Walk, read};

const FIRST_FLEXIBLE: i16 = 9;

pub(super) fn rewrite(w: &mut Walk<'_>) -> Result<(), RewriteError> {
    let version = w.version;
    let flexible = version >= FIRST_FLEXIBLE;
    if version >= 3 {
        read!(w, i32); // throttle_time_ms
    }
    let brokers = read!(w, array_len, flexible);
    for _ in 0..brokers {
        let node_id = read!(w, i32);
        w.endpoint(node_id, flexible, true)?;
        if version >= 1 {
            read!(w, nullable_string, flexible); // rack
        }
        if flexible {
            read!(w, skip_tagged_fields);
        }
    }
    if version >= 2 {
        read!(w, nullable_string, flexible); // cluster_id
    }
    if version >= 1 {
        w.controller_id = Some(read!(w, i32));
    }
    Ok(())
}
