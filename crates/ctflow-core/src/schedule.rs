//! Cron schedules in a time zone, and what to start after a gap (downtime, a slow tick).
//!
//! Pure arithmetic over epoch milliseconds: the controller passes its clock in, so tests
//! drive it with any "now" they like.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::pipeline::CatchUp;

/// A tick is "on time" when it is started within this long of its scheduled time; with
/// `catchUp: skip`, only on-time ticks start.
pub const ON_TIME_GRACE: Duration = Duration::from_secs(60);

/// A cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// What the controller does about one schedule at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPlan {
    /// Scheduled times (epoch ms) to start now, oldest first.
    pub fire: Vec<i64>,
    /// Ticks in the gap that will not run (dropped by the catch-up policy, the bound or
    /// the starting deadline). At least this many; counted up to the `All` bound.
    pub missed: u64,
    /// The newest tick considered; the next plan starts after it.
    pub cursor: i64,
}

impl Schedule {
    /// A schedule from a cron pattern (five fields, or six with seconds first) and an IANA
    /// time zone; the error says which of the two is wrong.
    pub fn new(pattern: &str, timezone: &str) -> Result<Schedule, String> {
        let tz = Tz::from_str(timezone).map_err(|_| {
            format!("unknown time zone '{timezone}': use an IANA name such as UTC or Europe/Berlin")
        })?;
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) && !pattern.trim_start().starts_with('@') {
            return Err(format!(
                "'{pattern}' has {fields} fields: a cron pattern has 5 (minute hour day month weekday), or 6 with seconds first"
            ));
        }
        let cron = Cron::from_str(pattern)
            .map_err(|e| format!("invalid cron pattern '{pattern}': {e}"))?;
        Ok(Schedule { cron, tz })
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first tick strictly after `ms`.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = self.at(ms)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The newest tick at or before `ms`.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let start = self.at(ms)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The ticks in `(cursor, now]` that start now under `policy`.
    pub fn plan(
        &self,
        cursor: i64,
        now: i64,
        policy: CatchUp,
        max_runs: u32,
        starting_deadline: Option<Duration>,
    ) -> TickPlan {
        let newest = match self.latest_at_or_before(now) {
            Some(t) if t > cursor => t,
            _ => {
                return TickPlan {
                    fire: Vec::new(),
                    missed: 0,
                    cursor,
                };
            }
        };
        // Collect the due ticks newest first, as many as the policy could start, plus one
        // to know whether anything beyond the bound was dropped.
        let want = match policy {
            CatchUp::All => max_runs.max(1) as usize,
            CatchUp::Skip | CatchUp::Latest => 1,
        };
        let mut due = vec![newest];
        let mut more_before = false;
        while let Some(previous) = self.latest_at_or_before(due[due.len() - 1] - 1) {
            if previous <= cursor {
                break;
            }
            if due.len() == want {
                more_before = true;
                break;
            }
            due.push(previous);
        }
        let late_limit = |tick: i64| {
            let lateness = now.saturating_sub(tick);
            match policy {
                CatchUp::Skip => {
                    let grace = starting_deadline.map_or(ON_TIME_GRACE, |d| d.min(ON_TIME_GRACE));
                    lateness <= grace.as_millis() as i64
                }
                _ => starting_deadline.is_none_or(|d| lateness <= d.as_millis() as i64),
            }
        };
        let considered = due.len() as u64 + u64::from(more_before);
        let mut fire: Vec<i64> = due.into_iter().filter(|t| late_limit(*t)).collect();
        fire.reverse();
        TickPlan {
            missed: considered - fire.len() as u64,
            fire,
            cursor: newest,
        }
    }
}

/// RFC 3339 text of a tick in UTC, the form runs receive as their logical time.
pub fn logical_time_text(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("valid time")
            .timestamp_millis()
    }

    fn hourly() -> Schedule {
        Schedule::new("0 * * * *", "UTC").expect("valid")
    }

    #[test]
    fn bad_patterns_and_zones_are_explained() {
        assert!(
            Schedule::new("* * *", "UTC")
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(
            Schedule::new("61 * * * *", "UTC")
                .unwrap_err()
                .contains("invalid cron")
        );
        assert!(
            Schedule::new("* * * * *", "Nowhere/City")
                .unwrap_err()
                .starts_with("unknown time zone")
        );
        assert!(Schedule::new("@hourly", "UTC").is_ok());
    }

    #[test]
    fn time_zones_and_dst() {
        let s = Schedule::new("30 2 * * *", "America/New_York").expect("valid");
        // Spring forward on 2026-03-08: 02:30 does not exist and fires at 03:00 EDT.
        let next = s.next_after(ms("2026-03-08T05:00:00Z")).expect("a tick");
        assert_eq!(next, ms("2026-03-08T07:00:00Z"));
        let after = s.next_after(next).expect("a tick");
        assert_eq!(after, ms("2026-03-09T06:30:00Z"));
        let seoul = Schedule::new("0 3 * * *", "Asia/Seoul").expect("valid");
        assert_eq!(
            seoul.next_after(ms("2026-11-26T00:00:00Z")),
            Some(ms("2026-11-26T18:00:00Z"))
        );
    }

    #[test]
    fn an_on_time_tick_fires_once() {
        let s = hourly();
        let cursor = ms("2026-11-26T09:00:00Z");
        let plan = s.plan(
            cursor,
            ms("2026-11-26T10:00:00.200Z"),
            CatchUp::Skip,
            10,
            None,
        );
        assert_eq!(plan.fire, vec![ms("2026-11-26T10:00:00Z")]);
        assert_eq!(plan.missed, 0);
        // Asking again with the new cursor starts nothing.
        let again = s.plan(
            plan.cursor,
            ms("2026-11-26T10:00:05Z"),
            CatchUp::Skip,
            10,
            None,
        );
        assert!(again.fire.is_empty());
        assert_eq!(again.cursor, plan.cursor);
    }

    #[test]
    fn catch_up_after_downtime() {
        let s = hourly();
        let cursor = ms("2026-11-26T03:00:00Z");
        let now = ms("2026-11-26T08:20:00Z"); // ticks 04..08 missed: 5 of them
        let skip = s.plan(cursor, now, CatchUp::Skip, 10, None);
        assert_eq!(
            (skip.fire.len(), skip.missed),
            (0, 2),
            "the newest and at least one before it"
        );
        assert_eq!(skip.cursor, ms("2026-11-26T08:00:00Z"));
        let latest = s.plan(cursor, now, CatchUp::Latest, 10, None);
        assert_eq!(latest.fire, vec![ms("2026-11-26T08:00:00Z")]);
        let all = s.plan(cursor, now, CatchUp::All, 10, None);
        assert_eq!(all.fire.len(), 5);
        assert_eq!(all.fire[0], ms("2026-11-26T04:00:00Z"));
        assert_eq!(all.missed, 0);
        let bounded = s.plan(cursor, now, CatchUp::All, 3, None);
        assert_eq!(
            bounded.fire,
            vec![
                ms("2026-11-26T06:00:00Z"),
                ms("2026-11-26T07:00:00Z"),
                ms("2026-11-26T08:00:00Z")
            ]
        );
        assert_eq!(
            bounded.missed, 1,
            "one more beyond the bound is known to be dropped"
        );
        let deadline = s.plan(
            cursor,
            now,
            CatchUp::All,
            10,
            Some(Duration::from_secs(2 * 3600)),
        );
        assert_eq!(
            deadline.fire,
            vec![ms("2026-11-26T07:00:00Z"), ms("2026-11-26T08:00:00Z")]
        );
        assert_eq!(deadline.missed, 3);
    }

    #[test]
    fn logical_time_is_rfc3339_utc() {
        assert_eq!(
            logical_time_text(ms("2026-11-26T18:00:00+09:00")),
            "2026-11-26T09:00:00Z"
        );
    }

    proptest! {
        /// Planning minute by minute over any stretch fires every tick exactly once.
        #[test]
        fn no_missed_or_doubled_ticks(start_min in 0i64..100_000, steps in 1usize..200, jitter in 0i64..59_000) {
            let s = Schedule::new("*/7 * * * *", "Europe/Berlin").expect("valid");
            let base = ms("2026-01-01T00:00:00Z") + start_min * 60_000;
            let mut cursor = base;
            let mut fired = Vec::new();
            for step in 1..=steps as i64 {
                let now = base + step * 60_000 + jitter;
                let plan = s.plan(cursor, now, CatchUp::All, 10, None);
                prop_assert_eq!(plan.missed, 0);
                fired.extend(plan.fire);
                cursor = plan.cursor;
            }
            let end = base + steps as i64 * 60_000 + jitter;
            let mut expected = Vec::new();
            let mut t = base;
            while let Some(next) = s.next_after(t) {
                if next > end { break; }
                expected.push(next);
                t = next;
            }
            prop_assert_eq!(fired, expected);
        }
    }
}
