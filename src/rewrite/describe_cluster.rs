//! DescribeCluster responses (v0–v2, all flexible): broker endpoints rewritten, controller learned.
//!
//! When the response lists controllers rather than brokers (endpoint type 2, KRaft), their
//! addresses are still hidden but not learned, since controller ids may collide with broker ids.

use super::{RewriteError, Walk, read};

const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub(super) fn rewrite(w: &mut Walk<'_>) -> Result<(), RewriteError> {
    let version = w.version;
    read!(w, i32); // throttle_time_ms
    read!(w, i16); // error_code
    read!(w, nullable_string, true); // error_message
    let endpoint_type = if version >= 1 { read!(w, i8) } else { ENDPOINT_TYPE_BROKERS };
    let lists_brokers = endpoint_type == ENDPOINT_TYPE_BROKERS;
    read!(w, string, true); // cluster_id
    let controller_id = read!(w, i32);
    if lists_brokers {
        w.controller_id = Some(controller_id);
    }
    let brokers = read!(w, array_len, true);
    for _ in 0..brokers {
        let node_id = read!(w, i32);
        w.endpoint(node_id, true, lists_brokers)?;
        read!(w, nullable_string, true); // rack
        if version >= 2 {
            read!(w, i8); // is_fenced
        }
        read!(w, skip_tagged_fields);
    }
    Ok(())
}
