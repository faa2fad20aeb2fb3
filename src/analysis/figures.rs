//! The figures' definitions (`crate::figures`, re-exported here) and what
//! views need besides: the stall rule and reading attempts through a store.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

pub use crate::figures::*;
use crate::model::HistoryRow;

/// How long counters may stand still before a running prefix counts as
/// stalled. Minutes, not one sync: STS refreshes counters only now and then.
pub const STALL_AFTER: Duration = Duration::seconds(600);

/// The stall rule (`sts-status` and the manager alike): no counter of the
/// prefix's running operation moved for at least `stall_after`, counting
/// from the moment its current counters were first seen.
pub fn stalled(last_change_at: DateTime<Utc>, now: DateTime<Utc>, stall_after: Duration) -> bool {
    now - last_change_at >= stall_after
}

/// A prefix's attempts, oldest first: the latest snapshot of each of its
/// operations, by the operation's first known moment.
pub fn order_attempts(attempts: &mut [Snapshot]) {
    attempts.sort_by_key(|s| (s.began(), s.at));
}

/// Earlier attempts of each prefix in `latest`, walked back through the
/// store's `snapshots_before` (one index seek per prefix and attempt): for
/// each prefix, its operations other than the latest one, oldest first.
pub async fn earlier_attempts(
    store: &dyn crate::store::StateStore,
    latest: &Snapshots,
    unreadable: &mut usize,
) -> Result<HashMap<String, Vec<Snapshot>>, crate::store::StoreError> {
    let mut seen: HashMap<&str, Vec<String>> = latest
        .iter()
        .map(|(p, s)| (p.as_str(), vec![s.op.name.clone()]))
        .collect();
    let mut out: HashMap<String, Vec<Snapshot>> = HashMap::new();
    let mut asks: Vec<(String, DateTime<Utc>)> =
        latest.iter().map(|(p, s)| (p.clone(), s.began())).collect();
    // Bounded: each round goes back at least one row of each prefix asked.
    for _ in 0..1000 {
        if asks.is_empty() {
            break;
        }
        let rows = store.snapshots_before(&asks).await?;
        asks.clear();
        for row in rows {
            let Some(snap) = snapshot_of(&row, unreadable) else {
                continue;
            };
            let Some(names) = seen.get_mut(row.prefix.as_str()) else {
                continue;
            };
            if names.contains(&snap.op.name) {
                // A row of an operation already counted, recorded before its
                // known start (clocks differ): look before that row.
                asks.push((row.prefix, snap.at));
                continue;
            }
            names.push(snap.op.name.clone());
            asks.push((row.prefix.clone(), snap.began().min(snap.at)));
            out.entry(row.prefix).or_default().push(snap);
        }
    }
    for attempts in out.values_mut() {
        order_attempts(attempts);
    }
    Ok(out)
}

/// Every prefix's attempts in a whole history: the latest snapshot of each
/// operation, oldest attempt first (for views that read every row anyway).
pub fn attempts_in(
    history: &[HistoryRow],
    unreadable: &mut usize,
) -> HashMap<String, Vec<Snapshot>> {
    let mut latest: HashMap<(&str, String), Snapshot> = HashMap::new();
    for row in history {
        if let Some(s) = snapshot_of(row, unreadable) {
            let key = (row.prefix.as_str(), s.op.name.clone());
            match latest.get(&key) {
                Some(before) if before.at > s.at => {}
                _ => {
                    latest.insert(key, s);
                }
            }
        }
    }
    let mut out: HashMap<String, Vec<Snapshot>> = HashMap::new();
    for ((prefix, _), s) in latest {
        out.entry(prefix.to_string()).or_default().push(s);
    }
    for attempts in out.values_mut() {
        order_attempts(attempts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Counters;

    fn counters(found: i64, copied: i64, skipped: i64, failed: i64) -> Counters {
        Counters {
            objects_found_from_source: found,
            objects_copied_to_sink: copied,
            objects_from_source_skipped_by_sync: skipped,
            objects_from_source_failed: failed,
            bytes_found_from_source: found * 10,
            bytes_copied_to_sink: copied * 10,
            bytes_from_source_skipped_by_sync: skipped * 10,
            bytes_from_source_failed: failed * 10,
            ..Counters::default()
        }
    }

    fn objects(
        found: i64,
        copied: i64,
        skipped: i64,
        failed: i64,
        attempts: i64,
        left: i64,
    ) -> Amounts {
        Amounts {
            found,
            copied,
            skipped,
            failed,
            failed_attempts: attempts,
            left,
        }
    }

    #[test]
    fn one_attempt_reports_its_counters_as_they_are() {
        let f = prefix_figures([&counters(1000, 300, 100, 50)]);
        assert_eq!(f.objects, objects(1000, 300, 100, 50, 50, 550));
        assert_eq!(f.bytes.copied, 3000);
        assert_eq!(f.bytes.left, 5500);
    }

    #[test]
    fn retried_failures_count_once_now_and_every_time_as_attempts() {
        // The issue's prefix: 1,000 copied at once, 2,695 failing in each
        // of four attempts.
        let first = counters(3695, 1000, 0, 2695);
        let again = counters(3695, 0, 1000, 2695);
        let f = prefix_figures([&first, &again, &again, &again]);
        assert_eq!(f.objects, objects(3695, 1000, 0, 2695, 10_780, 0));
    }

    #[test]
    fn a_rerun_counts_what_earlier_attempts_copied_as_copied_not_skipped() {
        let done = counters(100, 100, 0, 0);
        let rerun = counters(100, 0, 100, 0);
        assert_eq!(
            prefix_figures([&done, &rerun]).objects,
            objects(100, 100, 0, 0, 0, 0)
        );
        // Overwriting re-runs copy again: never counted above what was found.
        let overwrite = counters(100, 100, 0, 0);
        assert_eq!(
            prefix_figures([&done, &overwrite]).objects,
            objects(100, 100, 0, 0, 0, 0)
        );
        // A re-run still listing: it has found 40 so far.
        let listing = counters(40, 0, 30, 0);
        assert_eq!(
            prefix_figures([&done, &listing]).objects,
            objects(40, 40, 0, 0, 0, 0)
        );
    }

    #[test]
    fn objects_already_there_stay_skipped_and_nothing_exceeds_found() {
        // 30 were at the destination before; attempt 1 copied 50 and failed
        // 20; attempt 2 copied the 20.
        let first = counters(100, 50, 30, 20);
        let second = counters(100, 20, 80, 0);
        let f = prefix_figures([&first, &second]);
        assert_eq!(f.objects, objects(100, 70, 30, 0, 20, 0));
        let a = f.objects;
        assert_eq!(a.copied + a.skipped + a.failed + a.left, a.found);
        // Nonsense counters (negative, inconsistent) still add up.
        let odd = counters(-5, 10, 7, 3);
        let g = prefix_figures([&odd]).objects;
        assert_eq!(g, objects(0, 0, 0, 0, 3, 0));
        assert_eq!(prefix_figures([]), Figures::default());
    }

    #[test]
    fn a_manifest_run_keeps_what_the_prefix_holds() {
        // 1,000 found, 7 failing; the manifest run looks at those 7 only.
        let whole = counters(1000, 993, 0, 7);
        let rerun = counters(7, 7, 0, 0);
        let f = prefix_figures_with([(&whole, false), (&rerun, true)]).objects;
        assert_eq!(
            (
                f.found,
                f.copied,
                f.skipped,
                f.failed,
                f.left,
                f.failed_attempts
            ),
            (1000, 1000, 0, 0, 0, 7)
        );
        // Still running: its objects not handled yet are left.
        let running = counters(7, 2, 0, 1);
        let f = prefix_figures_with([(&whole, false), (&running, true)]).objects;
        assert_eq!((f.found, f.copied, f.failed, f.left), (1000, 995, 1, 4));
        // A manifest run alone (earlier history gone) is all there is.
        let f = prefix_figures_with([(&rerun, true)]).objects;
        assert_eq!((f.found, f.copied), (7, 7));
        let op = parse(
            r#"{"name":"o","transferSpec":{"transferManifest":{"location":"gs://b/m.csv"}}}"#,
        );
        assert!(op.is_some_and(|d| d.manifest_run()));
        assert!(parse(r#"{"name":"o","transferSpec":{}}"#).is_some_and(|d| !d.manifest_run()));
    }

    #[test]
    fn a_stall_is_time_since_the_last_change_not_two_equal_syncs() {
        let t0 = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert!(!stalled(t0, t0 + Duration::seconds(2), STALL_AFTER));
        assert!(!stalled(t0, t0 + Duration::seconds(599), STALL_AFTER));
        assert!(stalled(t0, t0 + Duration::seconds(600), STALL_AFTER));
        assert!(stalled(
            t0,
            t0 + Duration::seconds(60),
            Duration::seconds(30)
        ));
    }

    #[test]
    fn attempts_in_a_history_are_each_operations_latest_snapshot_oldest_first() {
        let row = |op: &str, start: &str, at: i64, copied: i64| HistoryRow {
            prefix: "a/".into(),
            status: crate::model::Status::Running,
            job_name: Some(op.into()),
            operation_results: Some(format!(
                r#"{{"name":"{op}","startTime":"{start}","counters":{{"objectsCopiedToSink":"{copied}"}}}}"#
            )),
            timestamp: DateTime::from_timestamp(at, 0).unwrap(),
        };
        let history = [
            row("op2", "2026-01-01T01:00:00Z", 1_767_229_300, 5),
            row("op1", "2026-01-01T00:00:00Z", 1_767_225_700, 1),
            row("op1", "2026-01-01T00:00:00Z", 1_767_225_800, 3),
        ];
        let mut unreadable = 0;
        let attempts = attempts_in(&history, &mut unreadable);
        let copied: Vec<i64> = attempts["a/"]
            .iter()
            .map(|s| s.op.counters.objects_copied_to_sink)
            .collect();
        assert_eq!(copied, [3, 5]);
        assert_eq!(unreadable, 0);
    }
}
