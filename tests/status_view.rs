//! `sts-status`'s light read (the SQLite store's folds: finished prefixes
//! summed in one query) gives the very report the full read gives (every
//! prefix's snapshots), on a state with every kind of prefix: done long ago,
//! done within the throughput window, re-run after a failure, in error out
//! of retries, running and stalled, waiting, verified (still and stale),
//! and rows written behind the store's back (by another tool, by hand).

use chrono::{DateTime, Duration, Utc};
use sts_job_manager::analysis::status::{read_inputs, read_status_inputs, report, StatusParams};
use sts_job_manager::model::{ChangeSet, Status};
use sts_job_manager::records::{Verification, VerifyResult};
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::{HistoryReads, JobTable, SideTables};

fn op(name: &str, start: DateTime<Utc>, end: Option<DateTime<Utc>>, c: [i64; 3]) -> String {
    let [found, copied, failed] = c;
    let end = end.map_or(String::new(), |e| {
        format!(r#""endTime":"{}","#, e.to_rfc3339())
    });
    let errors = if failed > 0 {
        format!(
            r#","errorBreakdowns":[{{"errorCode":"PERMISSION_DENIED","errorCount":"{failed}"}}]"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"name":"transferOperations/{name}","startTime":"{}",{end}
        "counters":{{"objectsFoundFromSource":"{found}","bytesFoundFromSource":"{}",
        "objectsCopiedToSink":"{copied}","bytesCopiedToSink":"{}",
        "objectsFromSourceFailed":"{failed}","bytesFromSourceFailed":"{}"}}{errors}}}"#,
        start.to_rfc3339(),
        found * 1000,
        copied * 1000,
        failed * 1000,
    )
}

/// One attempt: a progress row, then its last row with the prefix's status.
fn attempt(
    changes: &mut ChangeSet,
    prefix: &str,
    name: &str,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    status: Status,
    c: [i64; 3],
) {
    let job = Some(format!("transferJobs/{prefix}"));
    let last = end.unwrap_or(start + Duration::minutes(5));
    changes.change(
        prefix,
        Status::Running,
        job.clone(),
        Some(op(name, start, None, [c[0], c[1] / 2, 0])),
        start,
        start + Duration::minutes(1),
    );
    changes.change(
        prefix,
        status,
        job,
        Some(op(name, start, end, c)),
        last,
        last,
    );
}

async fn reports_agree(store: &SqliteStore, now: DateTime<Utc>) -> usize {
    let params = StatusParams::new(true, 2, 3);
    let full = read_inputs(store, now, &params).await.unwrap();
    let light = read_status_inputs(store, now, &params).await.unwrap();
    assert!(full.quiet.prefixes == 0);
    let shown = report(&full, now, &params);
    assert_eq!(
        shown,
        report(&light, now, &params),
        "the light read's report differs from the full read's"
    );
    // The running sum the manager reports as progress: the same totals.
    let total = store.figures_total().await.unwrap().unwrap();
    assert_eq!((total.objects, total.bytes), (shown.objects, shown.bytes));
    light.quiet.prefixes
}

#[tokio::test]
async fn the_folded_read_reports_what_the_full_read_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path, "sts_job", "sts_job_history").unwrap();
    store.prepare().await.unwrap();
    let names: Vec<String> = ["a/", "b/", "c/", "d/", "e/", "f/", "g/", "h/", "i/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    store.load_prefixes(&names).await.unwrap();
    let now = Utc::now();
    let ago = |minutes: i64| now - Duration::minutes(minutes);
    let mut changes = ChangeSet::default();
    // Done long ago, and done within the last hour.
    attempt(
        &mut changes,
        "a/",
        "a1",
        ago(300),
        Some(ago(280)),
        Status::Done,
        [10, 10, 0],
    );
    attempt(
        &mut changes,
        "b/",
        "b1",
        ago(50),
        Some(ago(10)),
        Status::Done,
        [20, 20, 0],
    );
    // Failed, requeued, then done long ago: earlier attempts count.
    attempt(
        &mut changes,
        "c/",
        "c1",
        ago(400),
        Some(ago(390)),
        Status::Error,
        [30, 20, 10],
    );
    store.apply(&changes).await.unwrap();
    let mut changes = ChangeSet::default();
    changes.requeue("c/", ago(380));
    attempt(
        &mut changes,
        "c/",
        "c2",
        ago(370),
        Some(ago(360)),
        Status::Done,
        [30, 10, 0],
    );
    // In error twice: out of retries (max 2).
    attempt(
        &mut changes,
        "d/",
        "d1",
        ago(200),
        Some(ago(190)),
        Status::Error,
        [40, 30, 10],
    );
    attempt(
        &mut changes,
        "d/",
        "d2",
        ago(180),
        Some(ago(170)),
        Status::Error,
        [40, 0, 10],
    );
    // Running, counters unchanged for 20 minutes: stalled.
    let job = Some("transferJobs/e/".to_string());
    changes.change(
        "e/",
        Status::Running,
        job.clone(),
        Some(op("e1", ago(30), None, [50, 5, 0])),
        ago(30),
        ago(20),
    );
    changes.change(
        "e/",
        Status::Running,
        job,
        Some(op("e1", ago(30), None, [50, 5, 0])),
        ago(30),
        ago(1),
    );
    // Done long ago, verified (h/ verified then requeued: stale).
    attempt(
        &mut changes,
        "g/",
        "g1",
        ago(500),
        Some(ago(490)),
        Status::Done,
        [60, 60, 0],
    );
    attempt(
        &mut changes,
        "h/",
        "h1",
        ago(500),
        Some(ago(490)),
        Status::Done,
        [70, 70, 0],
    );
    store.apply(&changes).await.unwrap();
    let verified = |prefix: &str, at: DateTime<Utc>| Verification {
        prefix: prefix.into(),
        result: VerifyResult::Verified,
        objects_compared: 1,
        missing: 0,
        different: 0,
        checked_at: at,
        offending_objects: vec![],
    };
    store
        .save_verifications(&[verified("g/", ago(100)), verified("h/", ago(100))])
        .await
        .unwrap();
    let mut changes = ChangeSet::default();
    changes.requeue("h/", ago(50));
    attempt(
        &mut changes,
        "h/",
        "h2",
        ago(45),
        Some(ago(40)),
        Status::Done,
        [70, 0, 0],
    );
    store.apply(&changes).await.unwrap();
    // f/ waiting, never started. Quiet: a/, c/, g/.
    assert_eq!(reports_agree(&store, now).await, 3);

    // Rows written behind the store's back (another tool): read, folded in
    // memory, and the same report still.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO sts_job_history (prefix, status, job_name, operation_results, timestamp)
         VALUES ('a/', 'done', 'transferJobs/a/', ?1, ?2)",
        rusqlite::params![
            op("a2", ago(3), Some(ago(2)), [11, 1, 0]),
            ago(2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ],
    )
    .unwrap();
    // A prefix marked done by hand, with no history at all.
    conn.execute("UPDATE sts_job SET status = 'done' WHERE prefix = 'i/'", [])
        .unwrap();
    drop(conn);
    assert_eq!(reports_agree(&store, now).await, 2);
    // The next write folds them for good.
    let mut changes = ChangeSet::default();
    changes.requeue("f/", now);
    store.apply(&changes).await.unwrap();
    assert_eq!(reports_agree(&store, now).await, 2);
}
