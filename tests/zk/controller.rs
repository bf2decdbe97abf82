//! Who the controller of the fixture's cluster is, and who the brokers say it is.
//!
//! The real controller is the one front end that passes controller-only requests on; it changes
//! with [`Controller::move_to`] and [`Controller::rotate`]. What brokers *report* (Metadata
//! `controller_id`, DescribeCluster `controller_id`) lags behind: it is the real controller as it
//! was `stale_for` ago, and while no broker is controller it is the last one that was.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One controller change.
#[derive(Debug, Clone, Copy)]
struct Reign {
    since: Instant,
    /// The real controller, `None` while no broker is.
    real: Option<i32>,
    /// What brokers report for it: `real`, or the last real controller while there is none.
    reported: i32,
}

#[derive(Debug)]
struct History {
    /// The reign every query falls back to: the newest one older than `stale_for`.
    settled: Reign,
    /// Newer reigns, oldest first.
    recent: VecDeque<Reign>,
}

impl History {
    fn latest(&self) -> Reign {
        *self.recent.back().unwrap_or(&self.settled)
    }

    /// Folds the reigns older than `cutoff` into `settled`: no later query looks further back.
    fn settle(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while self.recent.front().is_some_and(|reign| reign.since <= cutoff) {
            self.settled = self.recent.pop_front().expect("front exists");
        }
    }
}

#[derive(Debug)]
pub struct Controller {
    brokers: i32,
    stale_for: Duration,
    history: Mutex<History>,
}

impl Controller {
    /// A cluster of `brokers` nodes (ids 1..=brokers) whose controller is `initial`.
    pub fn new(brokers: i32, stale_for: Duration, initial: i32) -> Controller {
        let settled = Reign { since: Instant::now(), real: Some(initial), reported: initial };
        Controller { brokers, stale_for, history: Mutex::new(History { settled, recent: VecDeque::new() }) }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The real controller now.
    pub fn real(&self) -> Option<i32> {
        self.history().latest().real
    }

    pub fn is_controller(&self, node_id: i32) -> bool {
        self.real() == Some(node_id)
    }

    /// The controller brokers report now: the real one as it was `stale_for` ago.
    pub fn reported(&self) -> i32 {
        let mut history = self.history();
        history.settle(Instant::now().checked_sub(self.stale_for));
        history.settled.reported
    }

    /// Makes `node_id` the controller (`None`: no broker is).
    pub fn move_to(&self, node_id: Option<i32>) {
        if let Some(id) = node_id {
            assert!((1..=self.brokers).contains(&id), "node {id} is not in 1..={}", self.brokers);
        }
        let now = Instant::now();
        let mut history = self.history();
        history.settle(now.checked_sub(self.stale_for));
        let reported = node_id.unwrap_or(history.latest().reported);
        history.recent.push_back(Reign { since: now, real: node_id, reported });
    }

    /// Moves the controller to the next node: 1 → 2 → … → N → 1 (after none: the one after the
    /// last controller).
    pub fn rotate(&self) {
        let last = self.history().latest().reported;
        self.move_to(Some(last % self.brokers + 1));
    }
}
