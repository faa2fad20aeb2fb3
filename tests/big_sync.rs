//! A sync that changes more prefixes than one write chunk (20,000): the
//! start-up reconcile folds paged operations into the latest per prefix,
//! and the writes go in several transactions. Every row, every history row
//! and the progress must be what one small sync would have written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[path = "support/listed.rs"]
mod listed;

use chrono::{DateTime, Duration, Utc};
use listed::Listed;
use sts_job_manager::manager::Manager;
use sts_job_manager::model::{
    ChangeSet, Counters, GcsData, JobUpdate, ObjectConditions, OperationStatus, Status,
    TransferOperation, TransferSpec,
};
use sts_job_manager::options::Options;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::HistoryReads;
use sts_job_manager::store::JobTable;

/// Running prefixes, all finishing in the measured sync: three chunks.
const RUNNING: usize = 45_000;
/// Prefixes finished before, each with a failed and a successful operation.
const DONE_BEFORE: usize = 500;
const PAGE: usize = 256;

fn running_prefix(i: usize) -> String {
    format!("p/{i:05}/")
}

fn done_prefix(i: usize) -> String {
    format!("done/{i:03}/")
}

fn operation(
    name: String,
    prefix: &str,
    sink: &str,
    status: OperationStatus,
    end: DateTime<Utc>,
    copied: i64,
) -> TransferOperation {
    let bucket = |b: &str| {
        Some(GcsData {
            bucket_name: b.into(),
            path: String::new(),
        })
    };
    TransferOperation {
        name: format!("transferOperations/{name}"),
        project_id: "big".into(),
        transfer_spec: TransferSpec {
            gcs_data_source: bucket("migration-source"),
            gcs_data_sink: bucket(sink),
            object_conditions: Some(ObjectConditions {
                include_prefixes: vec![prefix.to_string()],
                ..ObjectConditions::default()
            }),
            transfer_options: None,
            transfer_manifest: None,
        },
        start_time: Some(end - Duration::seconds(30)),
        end_time: Some(end),
        status,
        counters: Counters {
            objects_found_from_source: copied,
            objects_copied_to_sink: copied,
            ..Counters::default()
        },
        error_breakdowns: vec![],
        transfer_job_name: format!("transferJobs/{name}"),
        logging_config: None,
    }
}

/// Every operation of the project, in an order where a prefix's latest
/// comes first for even prefixes and last for odd ones.
fn all_operations(t: DateTime<Utc>) -> Vec<TransferOperation> {
    let mut ops = Vec::new();
    for i in 0..RUNNING {
        let p = running_prefix(i);
        let old = operation(
            format!("old-{i}"),
            &p,
            "migration-destination",
            OperationStatus::Failed,
            t - Duration::seconds(600),
            1,
        );
        let new = operation(
            format!("op-{i}"),
            &p,
            "migration-destination",
            OperationStatus::Success,
            t,
            3,
        );
        if i % 2 == 0 {
            ops.extend([new, old]);
        } else {
            ops.extend([old, new]);
        }
    }
    // Later, but to another bucket: not this migration's.
    ops.push(operation(
        "elsewhere".into(),
        &running_prefix(0),
        "other-destination",
        OperationStatus::Failed,
        t + Duration::seconds(60),
        1000,
    ));
    for i in 0..DONE_BEFORE {
        let p = done_prefix(i);
        let sink = "migration-destination";
        let early = t - Duration::seconds(900);
        ops.push(operation(
            format!("d-old-{i}"),
            &p,
            sink,
            OperationStatus::Failed,
            early,
            1,
        ));
        ops.push(operation(
            format!("d-{i}"),
            &p,
            sink,
            OperationStatus::Success,
            t,
            10,
        ));
    }
    ops
}

/// Lists `operations` in pages of STS's size, counting the pages.
fn paged(operations: Vec<TransferOperation>, pages: Arc<AtomicUsize>) -> Listed {
    Listed::new(Box::new(move |filter, visit| {
        let admitted: Vec<&TransferOperation> =
            operations.iter().filter(|op| filter.admits(op)).collect();
        for page in admitted.chunks(PAGE) {
            pages.fetch_add(1, Ordering::Relaxed);
            visit(page.iter().map(|op| (*op).clone()).collect());
        }
    }))
}

async fn set_rows(store: &SqliteStore, prefixes: &[String], status: Status, t: DateTime<Utc>) {
    store.load_prefixes(prefixes).await.unwrap();
    let updates = prefixes
        .iter()
        .map(|p| JobUpdate {
            prefix: p.clone(),
            status,
            job_name: Some(format!("transferOperations/started-{p}")),
            last_updated: t,
        })
        .collect();
    store
        .apply(&ChangeSet {
            updates,
            history: vec![],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_larger_than_a_write_chunk_writes_what_a_small_one_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history").unwrap(),
    );
    store.prepare().await.unwrap();
    let t = Utc::now() - Duration::hours(1);
    let running: Vec<String> = (0..RUNNING).map(running_prefix).collect();
    let done: Vec<String> = (0..DONE_BEFORE).map(done_prefix).collect();
    set_rows(&store, &running, Status::Running, t - Duration::hours(1)).await;
    set_rows(&store, &done, Status::Done, t - Duration::hours(1)).await;

    let listed_pages = Arc::new(AtomicUsize::new(0));
    let transfer = Arc::new(paged(all_operations(t), listed_pages.clone()));
    let options = Options {
        project: Some("big".into()),
        ..Options::default()
    };
    let mut manager = Manager::new(store.clone(), transfer.clone(), options, "big".into());
    let summary = manager.run_once().await.unwrap();

    assert!(summary.reconciled, "the first sync is a full reconcile");
    assert_eq!(summary.counts["done"], RUNNING + DONE_BEFORE);
    let pages = (2 * RUNNING + 1 + 2 * DONE_BEFORE).div_ceil(PAGE);
    assert!(
        listed_pages.load(Ordering::Relaxed) >= pages,
        "the reconcile read every page"
    );
    // Progress is the figures every view reports, from the history: 3
    // objects for each running prefix (its latest operation once, never
    // the failed attempts nor the other bucket's operation); the prefixes
    // finished before were set done here with no history row, so, as in
    // sts-status, they count nothing.
    assert_eq!(summary.progress.objects_copied, (3 * RUNNING) as i64);

    let jobs = store.read_jobs().await.unwrap();
    for job in jobs.iter().filter(|j| j.prefix.starts_with("p/")) {
        let i: usize = job.prefix[2..7].parse().unwrap();
        assert_eq!(job.status, Status::Done, "{}", job.prefix);
        assert_eq!(
            job.job_name.as_deref(),
            Some(format!("transferOperations/op-{i}").as_str())
        );
    }
    let history = store.read_history().await.unwrap();
    assert_eq!(
        history.len(),
        RUNNING,
        "one history row per finished prefix"
    );
    let expected = all_operations(t);
    for row in &history {
        let i: usize = row.prefix[2..7].parse().unwrap();
        assert_eq!(row.status, Status::Done);
        let written: serde_json::Value =
            serde_json::from_str(row.operation_results.as_deref().unwrap()).unwrap();
        if i % 997 == 0 || [19_999, 20_000, 39_999, 40_000, RUNNING - 1].contains(&i) {
            let latest = expected
                .iter()
                .find(|op| op.name == format!("transferOperations/op-{i}"));
            assert_eq!(
                written,
                serde_json::to_value(latest.unwrap()).unwrap(),
                "the history holds the latest operation whole ({})",
                row.prefix
            );
        } else {
            assert_eq!(written["name"], format!("transferOperations/op-{i}"));
        }
    }
}
