//! Stalled jobs (README, "The figures"): a running prefix is stalled when no
//! counter of its operation moved for at least `stall_after` since the sync
//! that first saw its current counters: `analysis::figures::stalled`, the
//! rule `sts-status` applies to the same observations (the history rows
//! each sync writes).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::analysis::figures::stalled;
use crate::model::Counters;

pub use crate::analysis::figures::STALL_AFTER;

/// What a sync saw of one running prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSnapshot {
    pub operation: String,
    pub counters: Counters,
    /// When these counters were first seen (filled in by `stalled_prefixes`).
    pub changed_at: DateTime<Utc>,
}

/// Prefixes stalled at `now`, sorted. `current` gets each prefix's
/// `changed_at` carried over from `previous` while its operation and
/// counters stay the same. Operations with no counters at all (just
/// accepted by STS) are not judged.
pub fn stalled_prefixes(
    previous: &HashMap<String, RunningSnapshot>,
    current: &mut HashMap<String, RunningSnapshot>,
    now: DateTime<Utc>,
    stall_after: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, seen) in current.iter_mut() {
        seen.changed_at = match previous.get(prefix) {
            Some(before)
                if before.operation == seen.operation && before.counters == seen.counters =>
            {
                before.changed_at
            }
            _ => now,
        };
        if seen.counters != Counters::default() && stalled(seen.changed_at, now, stall_after) {
            out.push(prefix.clone());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(operation: &str, copied: i64) -> RunningSnapshot {
        RunningSnapshot {
            operation: operation.into(),
            counters: Counters {
                objects_found_from_source: 10,
                objects_copied_to_sink: copied,
                ..Counters::default()
            },
            changed_at: DateTime::UNIX_EPOCH,
        }
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + second, 0).unwrap()
    }

    /// Syncs every `every` seconds over `until`: the manager's stalled lists.
    fn run(
        seen: impl Fn(i64) -> Vec<(&'static str, RunningSnapshot)>,
        every: i64,
        until: i64,
    ) -> Vec<Vec<String>> {
        let mut previous = HashMap::new();
        let mut out = Vec::new();
        let mut t = 0;
        while t <= until {
            let mut current: HashMap<String, RunningSnapshot> = seen(t)
                .into_iter()
                .map(|(p, s)| (p.to_string(), s))
                .collect();
            out.push(stalled_prefixes(
                &previous,
                &mut current,
                at(t),
                STALL_AFTER,
            ));
            previous = current;
            t += every;
        }
        out
    }

    #[test]
    fn equal_counters_at_two_quick_syncs_are_no_stall() {
        // Counters refreshed every 30 s, synced every 2 s: never a stall.
        let lists = run(|t| vec![("a/", snap("op1", t / 30))], 2, 3600);
        assert!(lists.iter().all(Vec::is_empty));
    }

    #[test]
    fn counters_still_for_stall_after_are_a_stall_until_they_move() {
        // a/ stops at 100 s; b/ keeps going.
        let lists = run(
            |t| vec![("a/", snap("op1", t.min(100))), ("b/", snap("op2", t))],
            50,
            1000,
        );
        // Counters last changed (first seen) at 100 s: stalled from 700 s.
        let stalled_at: Vec<i64> = lists
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| {
                assert_eq!(l, &["a/"]);
                i as i64 * 50
            })
            .collect();
        assert_eq!(stalled_at.first(), Some(&700));
        assert_eq!(stalled_at.len(), 7);
    }

    #[test]
    fn new_operations_empty_counters_and_first_sightings_do_not_stall() {
        let before = HashMap::from([("a/".to_string(), snap("op1", 3))]);
        let mut now = HashMap::from([
            ("a/".to_string(), snap("op9", 3)),
            ("c/".to_string(), snap("op3", 0)),
        ]);
        assert!(stalled_prefixes(&before, &mut now, at(10_000), STALL_AFTER).is_empty());
        let empty = RunningSnapshot {
            operation: "op1".into(),
            counters: Counters::default(),
            changed_at: at(0),
        };
        let same = HashMap::from([("a/".to_string(), empty.clone())]);
        let mut again = same.clone();
        assert!(stalled_prefixes(&same, &mut again, at(10_000), STALL_AFTER).is_empty());
    }
}
