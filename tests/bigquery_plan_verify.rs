//! The plan and verification tables in BigQuery (bqemulator): created on
//! first use beside the job table, one row per prefix, read back whole.

#[path = "support/bqemulator.rs"]
mod bqemulator;

use chrono::{DateTime, Utc};
use sts_job_manager::records::{FailedObject, PlannedPrefix, Verification, VerifyResult};
use sts_job_manager::store::bigquery::BigQueryStore;
use sts_job_manager::store::JobTable;
use sts_job_manager::store::SideTables;

const PROJECT: &str = "sts-plan-verify-test";

fn planned(prefix: &str, objects: u64, bytes: u64) -> PlannedPrefix {
    PlannedPrefix {
        prefix: prefix.into(),
        objects,
        bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_verification_tables_round_trip() {
    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    store.prepare().await.unwrap();

    assert!(store.read_plan().await.unwrap().is_empty());
    assert!(store.read_verifications().await.unwrap().is_empty());

    store
        .save_plan(&[planned("a/", 3, 300), planned("b/", 1, 5_000_000_000)])
        .await
        .unwrap();
    store.save_plan(&[planned("b/", 2, 20)]).await.unwrap();
    assert_eq!(
        store.read_plan().await.unwrap(),
        [planned("a/", 3, 300), planned("b/", 2, 20)]
    );

    let checked_at: DateTime<Utc> = DateTime::from_timestamp_micros(1_767_000_000_123_456).unwrap();
    let mut row = Verification {
        prefix: "a/".into(),
        result: VerifyResult::Mismatch,
        objects_compared: 3,
        missing: 1,
        different: 1,
        checked_at,
        offending_objects: vec!["a/x".into(), "a/\"quoted\" y".into()],
    };
    store
        .save_verifications(std::slice::from_ref(&row))
        .await
        .unwrap();
    assert_eq!(store.read_verifications().await.unwrap(), [row.clone()]);
    row.result = VerifyResult::Verified;
    row.missing = 0;
    row.different = 0;
    row.offending_objects.clear();
    let other = Verification {
        prefix: "b/".into(),
        ..row.clone()
    };
    store
        .save_verifications(&[row.clone(), other.clone()])
        .await
        .unwrap();
    assert_eq!(store.read_verifications().await.unwrap(), [row, other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_objects_table_round_trips_once_per_object() {
    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    store.prepare().await.unwrap();
    assert!(store.read_failed_objects().await.unwrap().is_empty());
    assert_eq!(store.count_all_failed_objects().await.unwrap(), 0);
    let op = "transferOperations/transferJobs-a-1".to_string();
    assert!(store
        .count_failed_objects(std::slice::from_ref(&op))
        .await
        .unwrap()
        .is_empty());
    let time: DateTime<Utc> = DateTime::from_timestamp_micros(1_767_000_000_123_456).unwrap();
    let row = |object: &str| FailedObject {
        prefix: "a/".into(),
        object: object.into(),
        action: "COPY".into(),
        error_code: "PERMISSION_DENIED".into(),
        message: "denied".into(),
        operation: op.clone(),
        time,
    };
    let odd = "a/x, \"y\" é 日";
    store.save_failed_objects(&[row(odd)]).await.unwrap();
    store
        .save_failed_objects(&[row(odd), row("a/z")])
        .await
        .unwrap();
    assert_eq!(
        store.read_failed_objects().await.unwrap(),
        [row(odd), row("a/z")]
    );
    let counts = store
        .count_failed_objects(std::slice::from_ref(&op))
        .await
        .unwrap();
    assert_eq!(counts.get(&op), Some(&2));
    assert_eq!(store.count_all_failed_objects().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_tables_round_trip() {
    use sts_job_manager::records::{Pass, PassPrefix};
    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    store.prepare().await.unwrap();
    assert!(store.read_passes().await.unwrap().is_empty());
    assert!(store.read_pass_prefixes().await.unwrap().is_empty());

    let at = |micros: i64| DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
    let mut open = Pass {
        pass: 2,
        kind: "delta".into(),
        started_at: at(1_767_000_000_000_001),
        queued_at: None,
        ended_at: None,
        ..Pass::default()
    };
    store.save_pass(&open).await.unwrap();
    assert_eq!(store.read_passes().await.unwrap(), [open.clone()]);
    open.queued_at = Some(at(1_767_000_000_500_000));
    open.ended_at = Some(at(1_767_000_100_000_000));
    open.objects_copied = 7;
    open.bytes_copied = 5_000_000_000;
    store.save_pass(&open).await.unwrap();
    assert_eq!(store.read_passes().await.unwrap(), [open]);

    let rows = [
        PassPrefix {
            prefix: "a/".into(),
            pass: 2,
            modified_since: Some(at(1_766_999_000_000_000)),
            mirror: false,
        },
        PassPrefix {
            prefix: "b/".into(),
            pass: 1,
            modified_since: None,
            mirror: true,
        },
    ];
    store.save_pass_prefixes(&rows).await.unwrap();
    assert_eq!(store.read_pass_prefixes().await.unwrap(), rows);
}
