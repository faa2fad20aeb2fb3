//! One manager cycle over N prefixes on the SQLite store (default 100,000),
//! every prefix changing status at once (the worst case): wall time,
//! statements issued and peak memory. Run: `cargo bench --bench sync_cycle [-- N]`.
//! The transfer service is an in-memory list of operations, so the figures
//! are the store's and the sync rules', not a transfer backend's.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use sts_job_manager::manager::Manager;
use sts_job_manager::model::{ChangeSet, JobUpdate};
use sts_job_manager::model::{
    Counters, GcsData, ObjectConditions, OperationStatus, Status, TransferJob, TransferOperation,
    TransferSpec,
};
use sts_job_manager::options::Options;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::StateStore;
use sts_job_manager::transfer::{JobFilter, OperationFilter, TransferError, TransferService};

struct Listed(Vec<TransferOperation>);

#[async_trait]
impl TransferService for Listed {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError> {
        Ok(self
            .0
            .iter()
            .filter(|op| filter.admits(op))
            .cloned()
            .collect())
    }
    async fn list_jobs(&self, _: &JobFilter) -> Result<Vec<TransferJob>, TransferError> {
        Ok(vec![])
    }
    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError> {
        Ok(job.clone())
    }
    async fn run_job(&self, _: &str, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn delete_job(&self, _: &str, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn pause_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn resume_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn cancel_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn service_account(&self, project_id: &str) -> Result<String, TransferError> {
        Ok(sts_job_manager::transfer::default_service_account(
            project_id,
        ))
    }
}

fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let count: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history")
            .expect("open"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let prefixes: Vec<String> = (0..count).map(|i| format!("logs/{i:07}/")).collect();
    let now = Utc::now();
    runtime.block_on(async {
        store.prepare().await.expect("prepare");
        store.load_prefixes(&prefixes).await.expect("load");
        // Every prefix running on its operation, as after a ramp-up.
        let running = ChangeSet {
            updates: prefixes
                .iter()
                .map(|p| JobUpdate {
                    prefix: p.clone(),
                    status: Status::Running,
                    job_name: Some(format!("transferOperations/{p}")),
                    last_updated: now,
                })
                .collect(),
            history: vec![],
        };
        store.apply(&running).await.expect("apply");
    });
    let bucket = |b: &str| {
        Some(GcsData {
            bucket_name: b.into(),
            path: String::new(),
        })
    };
    let operations: Vec<TransferOperation> = prefixes
        .iter()
        .map(|p| TransferOperation {
            name: format!("transferOperations/{p}"),
            project_id: "bench".into(),
            transfer_spec: TransferSpec {
                gcs_data_source: bucket("migration-source"),
                gcs_data_sink: bucket("migration-destination"),
                object_conditions: Some(ObjectConditions {
                    include_prefixes: vec![p.clone()],
                }),
                transfer_options: None,
            },
            start_time: Some(now),
            end_time: Some(Utc::now()),
            status: OperationStatus::Success,
            counters: Counters {
                objects_found_from_source: 10,
                objects_copied_to_sink: 10,
                bytes_found_from_source: 1 << 20,
                bytes_copied_to_sink: 1 << 20,
                ..Counters::default()
            },
            error_breakdowns: vec![],
            transfer_job_name: format!("transferJobs/sts-jm-{p}"),
        })
        .collect();
    let options = Options {
        project: Some("bench".into()),
        ..Options::default()
    };
    let mut manager = Manager::new(
        store.clone(),
        Arc::new(Listed(operations)),
        options,
        "bench".into(),
    );
    let rss_before = memory_mib("VmRSS:");
    let before = store.statements_issued();
    let started = Instant::now();
    let summary = runtime.block_on(manager.run_once()).expect("cycle");
    let elapsed = started.elapsed();
    let statements = store.statements_issued() - before;
    assert_eq!(summary.counts["done"], count, "every prefix should be done");
    println!(
        "sync cycle over {count} prefixes (all changing running -> done): {:.2} s wall, {statements} statements \
         (2 reads, 2 writes per sync), peak RSS {:.0} MiB (RSS {:.0} MiB before the cycle, \
         with the {count} listed operations built)",
        elapsed.as_secs_f64(),
        memory_mib("VmHWM:"),
        rss_before
    );
}
