//! The limit on new connections per broker: at most N connects begun in any one-second window.
//!
//! A sliding window of the last N start times, not a bucket that refills: a burst never exceeds
//! the limit within a second, whatever the timing. It only counts and says when the next slot
//! frees; callers wait (for it, or for a pooled connection) themselves.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts over: a little over a second, so that connects that take
/// different times to complete (by tens of milliseconds on a busy host) still never put N + 1
/// accepts in one second at the broker.
const WINDOW: Duration = Duration::from_millis(1_050);

/// At most `per_second` connects begun in any [`WINDOW`].
#[derive(Debug)]
pub struct ConnectRate {
    per_second: usize,
    started: Mutex<VecDeque<Instant>>,
}

impl ConnectRate {
    pub fn new(per_second: u32) -> Self {
        let per_second = usize::try_from(per_second).unwrap_or(usize::MAX).max(1);
        ConnectRate { per_second, started: Mutex::new(VecDeque::with_capacity(per_second.min(1024))) }
    }

    /// Takes a slot now (`Ok`), or says when the next one frees (`Err`).
    pub fn try_take(&self, now: Instant) -> Result<(), Instant> {
        let mut started = self.started.lock().expect("connect rate lock");
        while started.front().is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW) {
            started.pop_front();
        }
        if started.len() < self.per_second {
            started.push_back(now);
            return Ok(());
        }
        Err(*started.front().expect("full") + WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_in_any_window() {
        let rate = ConnectRate::new(3);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for at in [t0, t0 + ms(100), t0 + ms(200)] {
            assert!(rate.try_take(at).is_ok());
        }
        assert_eq!(rate.try_take(t0 + ms(500)), Err(t0 + WINDOW));
        assert!(rate.try_take(t0 + WINDOW).is_ok(), "the oldest slot freed");
        assert_eq!(rate.try_take(t0 + WINDOW), Err(t0 + ms(100) + WINDOW), "the other two are still taken");
    }
}
