//! Accounting for numbered messages (`n-<i>`, see `tests/clients/numbered.py`): what a producer
//! got acknowledged, what a consumer read back, and the two lives of a broker that restarted with
//! an empty log.

use std::collections::BTreeMap;

use serde_json::Value;

/// `[[i, offset], ...]` from a numbered.py result.
pub fn pairs(result: &Value, key: &str) -> Vec<Placed> {
    result[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {result}"))
        .iter()
        .map(|pair| (pair[0].as_u64().expect("message index"), pair[1].as_i64().expect("offset")))
        .collect()
}

/// Order-independent checksum of a set of numbered messages (FNV-1a of each value, summed).
pub fn checksum(indices: impl IntoIterator<Item = u64>) -> u64 {
    indices
        .into_iter()
        .map(|i| {
            format!("n-{i}")
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        })
        .fold(0u64, u64::wrapping_add)
}

/// A message's index and its offset in the log.
pub type Placed = (u64, i64);

/// Acknowledgements `(index, offset)` in arrival order (one request in flight), split where the
/// offset goes back: a restarted in-memory broker starts its log again at offset 0. Returns the
/// acknowledgements of the earlier lives and those of the last one.
pub fn split_at_restart(acks: &[Placed]) -> (&[Placed], &[Placed]) {
    let last_restart = acks.windows(2).rposition(|w| w[1].1 <= w[0].1).map_or(0, |i| i + 1);
    acks.split_at(last_restart)
}

/// What a restart-spanning run came to; [`verify_restarted_log`] checks it.
#[derive(Debug)]
pub struct RestartedLog {
    /// Acknowledged by the broker's earlier lives (their log is gone).
    pub earlier: usize,
    /// Acknowledged by the running broker, in offset order.
    pub acknowledged: Vec<Placed>,
    /// Read back from the running broker's log.
    pub consumed: Vec<Placed>,
}

impl RestartedLog {
    pub fn checksum(&self) -> u64 {
        checksum(self.consumed.iter().map(|&(i, _)| i))
    }
}

/// Checks that a producer's `count` messages were each acknowledged exactly once, and that the
/// running broker's log (`final_read`, a numbered.py `--to-end` result) holds exactly what that
/// broker acknowledged: no duplicate, same count and checksum, same order. Panics otherwise.
pub fn verify_restarted_log(produced: &Value, final_read: &Value, count: usize) -> RestartedLog {
    let acks = pairs(produced, "acks");
    let (earlier, last_life) = split_at_restart(&acks);
    let mut acked: Vec<u64> = acks.iter().map(|&(i, _)| i).collect();
    acked.sort_unstable();
    assert_eq!(acked, (0..count as u64).collect::<Vec<_>>(), "every message acknowledged exactly once");

    let mut acknowledged = last_life.to_vec();
    acknowledged.sort_by_key(|&(_, offset)| offset);
    let consumed = pairs(final_read, "values");
    let in_log: BTreeMap<u64, usize> = consumed.iter().fold(BTreeMap::new(), |mut seen, &(i, _)| {
        *seen.entry(i).or_default() += 1;
        seen
    });
    let duplicates: Vec<_> = in_log.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates in the broker's log: {duplicates:?}");
    assert_eq!(consumed.len(), acknowledged.len(), "count of acknowledged vs consumed messages");
    assert_eq!(
        checksum(consumed.iter().map(|&(i, _)| i)),
        checksum(acknowledged.iter().map(|&(i, _)| i)),
        "checksum of acknowledged vs consumed messages"
    );
    assert_eq!(consumed, acknowledged, "the broker's log is exactly what it acknowledged, in order");
    RestartedLog { earlier: earlier.len(), acknowledged, consumed }
}
