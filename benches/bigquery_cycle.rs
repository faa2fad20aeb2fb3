//! The BigQuery store against bqemulator (started here on a free 127.0.0.1
//! port): statements and wall time of one manager cycle in which every
//! prefix changes (running -> done), for 1,000 and 10,000 prefixes; then the
//! time from loading 100,000 prefixes to the first job started.
//! Run: `cargo bench --bench bigquery_cycle [-- SIZES... --load N]`
//! (needs bqemulator: `bash tests/run.sh` installs it into .venv).
//! The transfer service is an in-memory list, so the figures are the store's.

#[path = "../tests/support/bqemulator.rs"]
mod bqemulator;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sts_job_manager::manager::Manager;
use sts_job_manager::model::{ChangeSet, JobUpdate};
use sts_job_manager::model::{
    Counters, GcsData, ObjectConditions, OperationStatus, Status, TransferOperation, TransferSpec,
};
use sts_job_manager::options::Options;
use sts_job_manager::store::bigquery::{BigQueryStore, Settings};

const PROJECT: &str = "sts-bench";

#[path = "../tests/support/listed.rs"]
mod listed;

use listed::Listed;
use sts_job_manager::store::JobTable;

fn store(emulator: &bqemulator::Emulator, dataset: &str) -> Arc<BigQueryStore> {
    Arc::new(
        BigQueryStore::open(&Settings {
            dataset: dataset.into(),
            ..emulator.settings()
        })
        .expect("open"),
    )
}

fn succeeded(prefix: &str) -> TransferOperation {
    let bucket = |b: &str| {
        Some(GcsData {
            bucket_name: b.into(),
            path: String::new(),
        })
    };
    let now = Utc::now();
    TransferOperation {
        name: format!("transferOperations/{prefix}"),
        project_id: PROJECT.into(),
        transfer_spec: TransferSpec {
            gcs_data_source: bucket("migration-source"),
            gcs_data_sink: bucket("migration-destination"),
            object_conditions: Some(ObjectConditions {
                include_prefixes: vec![prefix.to_string()],
                ..ObjectConditions::default()
            }),
            transfer_options: None,
            transfer_manifest: None,
        },
        start_time: Some(now),
        end_time: Some(now),
        status: OperationStatus::Success,
        counters: Counters {
            objects_found_from_source: 10,
            objects_copied_to_sink: 10,
            bytes_found_from_source: 1 << 20,
            bytes_copied_to_sink: 1 << 20,
            ..Counters::default()
        },
        error_breakdowns: vec![],
        transfer_job_name: format!("transferJobs/sts-jm-{prefix}"),
        logging_config: None,
    }
}

fn options() -> Options {
    Options {
        project: Some(PROJECT.into()),
        ..Options::default()
    }
}

async fn cycle(emulator: &bqemulator::Emulator, count: usize) {
    let store = store(emulator, &format!("cycle_{count}"));
    let prefixes: Vec<String> = (0..count).map(|i| format!("logs/{i:07}/")).collect();
    store.prepare().await.expect("prepare");
    store.load_prefixes(&prefixes).await.expect("load");
    let now = Utc::now();
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
    let transfer = Arc::new(Listed::of(prefixes.iter().map(|p| succeeded(p)).collect()));
    let mut manager = Manager::new(store.clone(), transfer, options(), PROJECT.into());
    let (statements, requests) = (store.statements_issued(), store.api().requests());
    let started = Instant::now();
    let summary = manager.run_once().await.expect("cycle");
    let elapsed = started.elapsed();
    assert_eq!(summary.counts["done"], count, "every prefix should be done");
    println!(
        "cycle over {count} prefixes (all running -> done, {count} updates + {count} history rows): \
         {:.2} s wall, {} statements ({} HTTP requests)",
        elapsed.as_secs_f64(),
        store.statements_issued() - statements,
        store.api().requests() - requests,
    );
}

async fn load_to_first_job(emulator: &bqemulator::Emulator, count: usize) {
    let store = store(emulator, "first_job");
    store.prepare().await.expect("prepare");
    let prefixes: Vec<String> = (0..count).map(|i| format!("logs/{i:07}/")).collect();
    let transfer = Arc::new(Listed::of(vec![]));
    let started = Instant::now();
    let statements = store.statements_issued();
    let report = store.load_prefixes(&prefixes).await.expect("load");
    let loaded = started.elapsed();
    let load_statements = store.statements_issued() - statements;
    let mut manager = Manager::new(store.clone(), transfer.clone(), options(), PROJECT.into());
    manager.run_once().await.expect("cycle");
    let first = transfer
        .first_created
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expect("a job was started");
    println!(
        "{} prefixes loaded in {:.2} s ({load_statements} statements); first job started {:.2} s after the load began",
        report.inserted,
        loaded.as_secs_f64(),
        (first - started).as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = Vec::new();
    let mut load = 100_000;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--load" {
            load = iter.next().and_then(|n| n.parse().ok()).unwrap_or(load);
        } else if let Ok(n) = arg.parse() {
            sizes.push(n);
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    let emulator = bqemulator::Emulator::start(PROJECT);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for count in sizes {
            cycle(&emulator, count).await;
        }
        if load > 0 {
            load_to_first_job(&emulator, load).await;
        }
    });
}
