//! FindCoordinator responses: one coordinator in v0–v3, a batch of coordinators in v4+.

use super::{RewriteError, Walk, read};

const FIRST_FLEXIBLE: i16 = 3;
const FIRST_BATCHED: i16 = 4;

pub(super) fn rewrite(w: &mut Walk<'_>) -> Result<(), RewriteError> {
    let version = w.version;
    let flexible = version >= FIRST_FLEXIBLE;
    if version >= 1 {
        read!(w, i32); // throttle_time_ms
    }
    if version < FIRST_BATCHED {
        read!(w, i16); // error_code
        if version >= 1 {
            read!(w, nullable_string, flexible); // error_message
        }
        let node_id = read!(w, i32);
        return w.endpoint(node_id, flexible, true);
    }
    let coordinators = read!(w, array_len, true);
    for _ in 0..coordinators {
        read!(w, string, true); // key
        let node_id = read!(w, i32);
        w.endpoint(node_id, true, true)?;
        read!(w, i16); // error_code
        read!(w, nullable_string, true); // error_message
        read!(w, skip_tagged_fields);
    }
    Ok(())
}
