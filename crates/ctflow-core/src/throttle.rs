//! Failed sign-in throttling: after a few free failures, each further failure locks the
//! name or address it came from for twice as long as the last, up to a ceiling. Pure: the
//! caller passes the clock, so the policy is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How failures are forgiven and punished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures in a row that cost nothing.
    pub free_failures: u32,
    /// The lock after the first failure past the free ones; each next one doubles it.
    pub first_lock: Duration,
    /// The longest lock.
    pub longest_lock: Duration,
    /// A key with no failure for this long starts afresh.
    pub forget_after: Duration,
    /// Most keys remembered; past it the stalest are forgotten first.
    pub capacity: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_failures: 5,
            first_lock: Duration::from_secs(1),
            longest_lock: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failure counts per key (a user name, a client address).
#[derive(Debug)]
pub struct Throttle<K> {
    policy: ThrottlePolicy,
    failures: HashMap<K, Failures>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// A throttle with no failures recorded.
    pub fn new(policy: ThrottlePolicy) -> Throttle<K> {
        Throttle {
            policy,
            failures: HashMap::new(),
        }
    }

    /// How long `key` must still wait before its next attempt is heard, if it must.
    pub fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.failures.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed attempt of `key`; returns the lock it now has, if any.
    pub fn failed(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let policy = self.policy;
        if !self.failures.contains_key(key) && self.failures.len() >= policy.capacity {
            self.forget_stalest(now);
        }
        let entry = self.failures.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(entry.last) >= policy.forget_after {
            entry.count = 0;
            entry.locked_until = None;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let past_free = entry
            .count
            .checked_sub(policy.free_failures)?
            .checked_sub(1)?;
        let lock = policy
            .first_lock
            .checked_mul(2u32.saturating_pow(past_free.min(31)))
            .unwrap_or(policy.longest_lock)
            .min(policy.longest_lock);
        entry.locked_until = Some(now + lock);
        Some(lock)
    }

    /// A successful sign-in clears `key`'s failures.
    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many keys have failures recorded.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether no key has failures recorded.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Drops the keys that start afresh anyway, then, if still full, the half that
    /// failed longest ago.
    fn forget_stalest(&mut self, now: Instant) {
        let forget_after = self.policy.forget_after;
        self.failures
            .retain(|_, f| now.saturating_duration_since(f.last) < forget_after);
        if self.failures.len() < self.policy.capacity {
            return;
        }
        let mut lasts: Vec<Instant> = self.failures.values().map(|f| f.last).collect();
        lasts.sort_unstable();
        let cutoff = lasts[lasts.len() / 2];
        self.failures.retain(|_, f| f.last > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 3,
            first_lock: Duration::from_secs(1),
            longest_lock: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
            capacity: 4,
        }
    }

    #[test]
    fn locks_double_after_the_free_failures_up_to_the_ceiling() {
        let mut throttle = Throttle::new(policy());
        let start = Instant::now();
        let locks: Vec<Option<u64>> = (0..8)
            .map(|_| throttle.failed(&"alice", start).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            locks,
            [
                None,
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(8)
            ]
        );
        assert_eq!(
            throttle.locked_for(&"alice", start),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            throttle.locked_for(&"alice", start + Duration::from_secs(5)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            throttle.locked_for(&"alice", start + Duration::from_secs(8)),
            None
        );
        assert_eq!(throttle.locked_for(&"bob", start), None);
    }

    #[test]
    fn success_and_time_forgive() {
        let mut throttle = Throttle::new(policy());
        let start = Instant::now();
        for _ in 0..4 {
            throttle.failed(&"alice", start);
        }
        throttle.succeeded(&"alice");
        assert_eq!(throttle.locked_for(&"alice", start), None);
        assert_eq!(throttle.failed(&"alice", start), None);
        for _ in 0..3 {
            throttle.failed(&"bob", start);
        }
        // A minute later bob's earlier failures no longer count.
        assert_eq!(
            throttle.failed(&"bob", start + Duration::from_secs(61)),
            None
        );
    }

    proptest! {
        #[test]
        fn memory_stays_within_capacity_and_locks_within_bounds(
            attempts in proptest::collection::vec((0u8..20, 0u64..120), 1..400)
        ) {
            let mut throttle = Throttle::new(policy());
            let start = Instant::now();
            for (key, second) in attempts {
                let now = start + Duration::from_secs(second);
                if let Some(lock) = throttle.failed(&key, now) {
                    prop_assert!(lock >= Duration::from_secs(1) && lock <= Duration::from_secs(8));
                }
                prop_assert!(throttle.len() <= 4);
                prop_assert!(throttle.locked_for(&key, now).is_none_or(|d| d <= Duration::from_secs(8)));
            }
        }
    }
}
