//! The one backoff of the sidecar: delays that double from a first step up to a cap, each drawn
//! at random between half and all of the current step, so that many sidecars (or sessions) that
//! failed together do not retry together.
//!
//! Used by every retry loop: broker connects, metadata refresh, NOT_CONTROLLER retries. It only
//! computes delays; callers sleep, so each loop keeps its own deadline and cancellation.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Doubling delays with jitter, from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    max: Duration,
    random: SystemRandom,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { step: initial.min(max), max, random: SystemRandom::new() }
    }

    /// The delay before the next attempt; the one after it is up to twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.jittered(self.step);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// A random duration between half of `step` and all of it.
    fn jittered(&self, step: Duration) -> Duration {
        let half = step / 2;
        let span = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let mut bytes = [0u8; 8];
        if self.random.fill(&mut bytes).is_err() {
            return step;
        }
        half + Duration::from_nanos(u64::from_le_bytes(bytes) % span.saturating_add(1))
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_each_within_half_and_all_of_its_step() {
        let steps = [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis);
        let delays: Vec<_> = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).take(6).collect();
        for (delay, step) in delays.iter().zip(steps) {
            assert!(*delay >= step / 2 && *delay <= step, "{delay:?} outside {:?}..={step:?}", step / 2);
        }
    }

    #[test]
    fn delays_are_random() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 15, "{delays:?}");
    }

    #[test]
    fn a_zero_step_stays_zero() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), Duration::ZERO);
    }
}
