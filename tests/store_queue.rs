//! The job table as a queue, the same contract on SQLite and on BigQuery
//! (bqemulator): counts per status as one aggregate, the rows in flight,
//! the next waiting rows in start order (largest planned first, then
//! prefix order), and rows by prefix.

#[path = "support/bqemulator.rs"]
mod bqemulator;

use chrono::Utc;
use sts_job_manager::model::{ChangeSet, PrefixJob, Status};
use sts_job_manager::records::PlannedPrefix;
use sts_job_manager::store::bigquery::BigQueryStore;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::StateStore;

fn prefixes(rows: &[PrefixJob]) -> Vec<&str> {
    rows.iter().map(|r| r.prefix.as_str()).collect()
}

fn waiting(rows: &[(PrefixJob, u64)]) -> Vec<(&str, u64)> {
    rows.iter()
        .map(|(r, bytes)| {
            assert_eq!(r.status, Status::Waiting, "{}", r.prefix);
            (r.prefix.as_str(), *bytes)
        })
        .collect()
}

fn planned(prefix: &str, bytes: u64) -> PlannedPrefix {
    PlannedPrefix {
        prefix: prefix.into(),
        objects: 1,
        bytes,
    }
}

async fn the_queue_contract(store: &dyn StateStore) {
    store.prepare().await.unwrap();
    let names: Vec<String> = ["a/", "b/", "c/", "d/", "e/", "f/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    store.load_prefixes(&names).await.unwrap();
    let now = Utc::now();
    let mut changes = ChangeSet::default();
    changes.change(
        "b/",
        Status::Running,
        Some("transferOperations/b".into()),
        None,
        now,
        now,
    );
    changes.change(
        "c/",
        Status::Error,
        Some("transferOperations/c".into()),
        None,
        now,
        now,
    );
    changes.change(
        "e/",
        Status::Done,
        Some("transferOperations/e".into()),
        None,
        now,
        now,
    );
    store.apply(&changes).await.unwrap();

    let counts = store.count_by_status().await.unwrap();
    let by_status: Vec<usize> = Status::ALL.iter().map(|s| counts.get(*s)).collect();
    // waiting, running, paused, done, error
    assert_eq!(by_status, vec![3, 1, 0, 1, 1]);
    assert_eq!(counts.total(), 6);
    assert_eq!(prefixes(&store.read_active().await.unwrap()), ["b/", "c/"]);

    // Nothing planned: table (prefix) order, as many as asked.
    assert_eq!(
        waiting(&store.next_waiting(10).await.unwrap()),
        [("a/", 0), ("d/", 0), ("f/", 0)]
    );
    assert_eq!(
        waiting(&store.next_waiting(2).await.unwrap()),
        [("a/", 0), ("d/", 0)]
    );
    assert!(store.next_waiting(0).await.unwrap().is_empty());

    let asked = ["f/", "zz/", "b/"].map(String::from);
    assert_eq!(
        prefixes(&store.read_prefixes(&asked).await.unwrap()),
        ["b/", "f/"]
    );
    assert!(store.read_prefixes(&[]).await.unwrap().is_empty());

    // Planned: largest first; a running prefix's plan is not a start; an
    // empty plan and an unplanned prefix come after, in prefix order.
    store
        .save_plan(&[
            planned("d/", 100),
            planned("b/", 5_000),
            planned("f/", 7),
            planned("a/", 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        waiting(&store.next_waiting(10).await.unwrap()),
        [("d/", 100), ("f/", 7), ("a/", 0)]
    );
    assert_eq!(
        waiting(&store.next_waiting(1).await.unwrap()),
        [("d/", 100)]
    );
    store.load_prefixes(&["0/".to_string()]).await.unwrap();
    assert_eq!(
        waiting(&store.next_waiting(4).await.unwrap()),
        [("d/", 100), ("f/", 7), ("0/", 0), ("a/", 0)]
    );
}

#[tokio::test]
async fn sqlite_keeps_the_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history").unwrap();
    the_queue_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_keeps_the_queue_contract() {
    let emulator = bqemulator::Emulator::start("sts-queue-test");
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    the_queue_contract(&store).await;
}
