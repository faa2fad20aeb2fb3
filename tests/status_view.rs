//! `sts-status`'s light read gives the very report the full read gives
//! (every prefix's snapshots), on a state with every kind of prefix: done
//! long ago, done within the throughput window, re-run after a failure, in
//! error out of retries, running and stalled, waiting, verified (still and
//! stale), re-run by manifest, counters STS-style and odd, attempts that
//! overlap, and rows written behind the store's back (by another tool, by
//! hand). On SQLite the light read is the store's folds (finished prefixes
//! summed in one query); on BigQuery (bqemulator behind the strict layer)
//! one aggregate query over the quiet prefixes and the others folded here.

#[path = "support/bqemulator.rs"]
mod bqemulator;

use chrono::{DateTime, Duration, Utc};
use sts_job_manager::analysis::status::{read_inputs, read_status_inputs, report, StatusParams};
use sts_job_manager::model::{ChangeSet, Status};
use sts_job_manager::records::{Verification, VerifyResult};
use sts_job_manager::store::bigquery::BigQueryStore;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::{JobTable, StateStore};

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

async fn reports_agree(store: &dyn StateStore, now: DateTime<Utc>) -> usize {
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

const PREFIXES: [&str; 14] = [
    "a/", "b/", "c/", "d/", "e/", "f/", "g/", "h/", "i/", "j/", "k/", "l/", "m/", "n/",
];

/// Every kind of prefix, written through the store; `now` in microseconds
/// (what BigQuery keeps). Quiet afterwards: a/, c/, g/, j/, k/, m/.
async fn build_state(store: &dyn StateStore, now: DateTime<Utc>) {
    store.prepare().await.unwrap();
    let names: Vec<String> = PREFIXES.iter().map(|s| s.to_string()).collect();
    store.load_prefixes(&names).await.unwrap();
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
    for at in [ago(20), ago(1)] {
        let snapshot = Some(op("e1", ago(30), None, [50, 5, 0]));
        changes.change("e/", Status::Running, job.clone(), snapshot, ago(30), at);
    }
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
    // Failed, then re-run by manifest (the listed objects only): what the
    // prefix holds stays what the whole run found.
    attempt(
        &mut changes,
        "j/",
        "j1",
        ago(600),
        Some(ago(590)),
        Status::Error,
        [80, 75, 5],
    );
    let job = Some("transferJobs/j/".to_string());
    let manifest = op("j2", ago(580), Some(ago(575)), [5, 5, 0]).replacen(
        "{",
        r#"{"transferSpec":{"transferManifest":{"location":"gs://m/j.csv"}},"#,
        1,
    );
    changes.change("j/", Status::Done, job, Some(manifest), ago(575), ago(575));
    // Counters as JSON numbers, times in nanoseconds (as STS writes them).
    let job = Some("transferJobs/k/".to_string());
    let numbers = format!(
        r#"{{"name":"transferOperations/k1","startTime":"{}",
        "endTime":"{}","counters":{{"objectsFoundFromSource":9,"bytesFoundFromSource":9000,
        "objectsCopiedToSink":4,"bytesCopiedToSink":4000,
        "objectsFromSourceSkippedBySync":"5","bytesFromSourceSkippedBySync":"5000"}}}}"#,
        (ago(700) + Duration::nanoseconds(123_456_789)).to_rfc3339(),
        (ago(690) + Duration::nanoseconds(987_654_321)).to_rfc3339(),
    );
    changes.change("k/", Status::Done, job, Some(numbers), ago(690), ago(690));
    // A counter no plain reading agrees on (negative): read as STS wrote
    // it by every view, never summed by the quiet aggregate on its own.
    let job = Some("transferJobs/l/".to_string());
    let odd = op("l1", ago(300), Some(ago(290)), [12, 12, 0]).replace(
        r#""objectsCopiedToSink":"12""#,
        r#""objectsCopiedToSink":"-3""#,
    );
    changes.change("l/", Status::Done, job, Some(odd), ago(290), ago(290));
    // Re-run over an overwrite: copies summed never pass what was found.
    attempt(
        &mut changes,
        "m/",
        "m1",
        ago(900),
        Some(ago(890)),
        Status::Done,
        [7, 7, 0],
    );
    attempt(
        &mut changes,
        "m/",
        "m2",
        ago(800),
        Some(ago(790)),
        Status::Done,
        [7, 7, 0],
    );
    // Two attempts whose rows interleave (a late row of the first).
    attempt(
        &mut changes,
        "n/",
        "n1",
        ago(300),
        Some(ago(290)),
        Status::Error,
        [6, 3, 3],
    );
    attempt(
        &mut changes,
        "n/",
        "n2",
        ago(280),
        Some(ago(270)),
        Status::Done,
        [6, 3, 0],
    );
    let late = Some(op("n1", ago(300), Some(ago(290)), [6, 6, 0]));
    let job = Some("transferJobs/n/".to_string());
    changes.change("n/", Status::Done, job, late, ago(275), ago(275));
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
    // f/ and i/ waiting, never started.
}

fn micros_now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

#[tokio::test]
async fn the_folded_read_reports_what_the_full_read_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path, "sts_job", "sts_job_history").unwrap();
    let now = micros_now();
    build_state(&store, now).await;
    // The SQLite fold keeps the attempts of n/ as written; k/ and l/ are
    // quiet there too (their counters folded as Rust reads them).
    assert_eq!(reports_agree(&store, now).await, 8);

    // Rows written behind the store's back (another tool): read, folded in
    // memory, and the same report still.
    let ago = |minutes: i64| now - Duration::minutes(minutes);
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
    assert_eq!(reports_agree(&store, now).await, 7);
    // The next write folds them for good.
    let mut changes = ChangeSet::default();
    changes.requeue("f/", now);
    store.apply(&changes).await.unwrap();
    assert_eq!(reports_agree(&store, now).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_read_on_bigquery_reports_what_the_full_read_reports() {
    let emulator = bqemulator::Emulator::start("sts-status-view");
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    let now = micros_now();
    build_state(&store, now).await;
    // Quiet in SQL: a/, c/, g/, j/ (by manifest), k/, m/; not l/ (a
    // negative counter) nor n/ (overlapping attempts): those are folded.
    assert_eq!(reports_agree(&store, now).await, 6);
    // Rows written by another tool, and a prefix marked done by hand.
    let ago = |minutes: i64| now - Duration::minutes(minutes);
    let history = store.history_table().sql();
    store
        .api()
        .query(
            &format!(
                "INSERT INTO {history} (prefix, status, job_name, operation_results, timestamp)
                 VALUES ('a/', 'done', 'transferJobs/a/', '{}', TIMESTAMP '{}')",
                op("a2", ago(3), Some(ago(2)), [11, 1, 0]).replace('\n', " "),
                ago(2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            vec![],
        )
        .await
        .unwrap();
    store
        .api()
        .query(
            &format!(
                "UPDATE {} SET status = 'done' WHERE prefix = 'i/'",
                store.job_table().sql()
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(reports_agree(&store, now).await, 5);
}
