//! One manager cycle over N prefixes on the SQLite store (default 100,000):
//! every prefix changing status at once (the worst case), or with `steady`
//! a steady-state cycle where all but 300 prefixes are done and the 300
//! run on. Wall time, statements issued and peak memory.
//! With `waiting`, every prefix waiting (a migration's first days).
//! Run: `cargo bench --bench sync_cycle -- [N] [steady|waiting] [-v]`.
//! The transfer service is an in-memory list of operations, so the figures
//! are the store's and the sync rules', not a transfer backend's.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sts_job_manager::manager::Manager;
use sts_job_manager::model::{ChangeSet, JobUpdate};
use sts_job_manager::model::{
    Counters, GcsData, ObjectConditions, OperationStatus, Status, TransferOperation, TransferSpec,
};
use sts_job_manager::options::Options;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::transfer::OperationFilter;

#[path = "../tests/support/listed.rs"]
mod listed;

use listed::Listed;
use sts_job_manager::store::JobTable;

/// The listed operations, one per prefix, made as they are listed (as a
/// server's pages arrive), so the fixture does not count in the figures.
struct Fixture {
    /// Prefixes `logs/0000000/` to this many (exclusive).
    prefixes: usize,
    /// The first this many are in progress; the rest succeeded.
    unfinished: usize,
    /// When every listed operation started (before the measured cycle).
    started: chrono::DateTime<Utc>,
}

/// STS's largest page.
const PAGE: usize = 256;

/// How long before the running operations the finished ones began.
const FINISHED_EARLIER: chrono::Duration = chrono::Duration::hours(1);

impl Fixture {
    fn make(&self, i: usize) -> TransferOperation {
        let in_progress = i < self.unfinished;
        let status = if in_progress {
            OperationStatus::InProgress
        } else {
            OperationStatus::Success
        };
        let mut op = operation(&prefix(i), status);
        // The finished ones began an hour before the running ones (as in a
        // migration under way), so "created since the last sync" names only
        // the running ones.
        op.start_time = Some(if in_progress {
            self.started
        } else {
            self.started - FINISHED_EARLIER
        });
        if !in_progress {
            op.end_time = Some(Utc::now());
            op.counters.objects_copied_to_sink = op.counters.objects_found_from_source;
            op.counters.bytes_copied_to_sink = op.counters.bytes_found_from_source;
        }
        op
    }

    fn pages(
        &self,
        filter: &OperationFilter,
        visit: &mut (dyn FnMut(Vec<TransferOperation>) + Send),
    ) {
        // Like STS, filter before paging: none started after the bound.
        if filter.min_creation_time.is_some_and(|t| t > self.started) {
            return;
        }
        // Asked by name: only those (STS looks them up, it does not scan).
        if !filter.operation_names.is_empty() {
            let named = filter.operation_names.iter().filter_map(|name| {
                let digits = name.strip_prefix("transferOperations/logs/")?.get(..7)?;
                let i: usize = digits.parse().ok()?;
                (i < self.prefixes).then(|| self.make(i))
            });
            visit(named.filter(|op| filter.admits(op)).collect());
            return;
        }
        // Like STS, a creation-time bound past the finished ones' start
        // looks at the running ones only (STS filters before paging).
        let end = if filter
            .min_creation_time
            .is_some_and(|t| t > self.started - FINISHED_EARLIER)
        {
            self.unfinished.min(self.prefixes)
        } else {
            self.prefixes
        };
        for first in (0..end).step_by(PAGE) {
            visit(
                (first..(first + PAGE).min(end))
                    .map(|i| self.make(i))
                    .filter(|op| filter.admits(op))
                    .collect(),
            );
        }
    }

    fn service(self) -> Listed {
        Listed::new(Box::new(move |filter, visit| self.pages(filter, visit)))
    }
}

fn prefix(i: usize) -> String {
    format!("logs/{i:07}/")
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
    // `-v`: the manager's DEBUG lines (where each sync spends its time).
    if std::env::args().any(|a| a == "-v") {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }
    let count: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(100_000);
    if std::env::args().any(|a| a == "steady") {
        return steady(count);
    }
    if std::env::args().any(|a| a == "waiting") {
        return waiting(count);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history")
            .expect("open"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let prefixes: Vec<String> = (0..count).map(prefix).collect();
    let now = Utc::now();
    runtime.block_on(async {
        store.prepare().await.expect("prepare");
        store.load_prefixes(&prefixes).await.expect("load");
        // Every prefix running on its operation, as after a ramp-up.
        for chunk in prefixes.chunks(100_000) {
            let running = ChangeSet {
                updates: chunk
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
        }
    });
    drop(prefixes);
    let options = Options {
        project: Some("bench".into()),
        ..Options::default()
    };
    let mut manager = Manager::new(
        store.clone(),
        Arc::new(
            Fixture {
                prefixes: count,
                unfinished: 0,
                started: now - chrono::Duration::hours(1),
            }
            .service(),
        ),
        options,
        "bench".into(),
    );
    reset_peak();
    let rss_before = memory_mib("VmRSS:");
    let before = store.statements_issued();
    let started = Instant::now();
    let summary = runtime.block_on(manager.run_once()).expect("cycle");
    let elapsed = started.elapsed();
    let statements = store.statements_issued() - before;
    assert_eq!(summary.counts["done"], count, "every prefix should be done");
    println!(
        "sync cycle over {count} prefixes (all changing running -> done): {:.2} s wall, {statements} store statements \
         (reads, and chunks of 20,000 written), peak RSS {:.0} MiB (RSS {:.0} MiB before the cycle; \
         the listed operations are made page by page as they are listed)",
        elapsed.as_secs_f64(),
        memory_mib("VmHWM:"),
        rss_before
    );
}

/// Resets the peak-RSS mark, so VmHWM measures what follows.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn operation(prefix: &str, status: OperationStatus) -> TransferOperation {
    let bucket = |b: &str| {
        Some(GcsData {
            bucket_name: b.into(),
            path: String::new(),
        })
    };
    TransferOperation {
        name: format!("transferOperations/{prefix}"),
        project_id: "bench".into(),
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
        start_time: Some(Utc::now()),
        end_time: None,
        status,
        counters: Counters {
            objects_found_from_source: 10,
            objects_copied_to_sink: 5,
            bytes_found_from_source: 1 << 20,
            bytes_copied_to_sink: 1 << 19,
            ..Counters::default()
        },
        error_breakdowns: vec![],
        transfer_job_name: format!("transferJobs/sts-jm-{prefix}"),
        logging_config: None,
    }
}

/// All but 300 prefixes done; the 300 running; one operation listed per
/// prefix. The first cycle (the start-up reconcile, as every
/// `--reconcile-interval`) and then one steady-state cycle are measured.
fn steady(count: usize) {
    const RUNNING: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history")
            .expect("open"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let running: Vec<String> = runtime.block_on(async {
        store.prepare().await.expect("prepare");
        let now = Utc::now();
        let mut running = Vec::new();
        for chunk in (0..count).collect::<Vec<_>>().chunks(100_000) {
            let prefixes: Vec<String> = chunk.iter().map(|i| format!("logs/{i:07}/")).collect();
            store.load_prefixes(&prefixes).await.expect("load");
            let updates = prefixes
                .iter()
                .map(|p| {
                    let index: usize = p[5..12].parse().unwrap_or(0);
                    JobUpdate {
                        prefix: p.clone(),
                        status: if index < RUNNING {
                            Status::Running
                        } else {
                            Status::Done
                        },
                        job_name: Some(format!("transferOperations/{p}")),
                        last_updated: now,
                    }
                })
                .collect();
            store
                .apply(&ChangeSet {
                    updates,
                    history: vec![],
                })
                .await
                .expect("apply");
            running.extend(
                prefixes
                    .into_iter()
                    .filter(|p| p[5..12].parse::<usize>().unwrap_or(0) < RUNNING),
            );
        }
        running
    });
    let options = Options {
        project: Some("bench".into()),
        max_concurrent_jobs: RUNNING as u32,
        ..Options::default()
    };
    let mut manager = Manager::new(
        store.clone(),
        Arc::new(
            Fixture {
                prefixes: count,
                unfinished: running.len(),
                started: Utc::now() - chrono::Duration::hours(1),
            }
            .service(),
        ),
        options,
        "bench".into(),
    );
    reset_peak();
    let rss_before = memory_mib("VmRSS:");
    let started = Instant::now();
    runtime.block_on(manager.run_once()).expect("first cycle");
    println!(
        "start-up cycle over {count} prefixes (a full reconcile listing {count} operations, \
         {RUNNING} in progress): {:.2} s wall, peak RSS {:.0} MiB (RSS {:.0} MiB before it)",
        started.elapsed().as_secs_f64(),
        memory_mib("VmHWM:"),
        rss_before
    );
    reset_peak();
    let rss_before = memory_mib("VmRSS:");
    let before = store.statements_issued();
    let started = Instant::now();
    let summary = runtime.block_on(manager.run_once()).expect("cycle");
    let elapsed = started.elapsed();
    assert_eq!(summary.counts["done"], count - RUNNING);
    assert_eq!(summary.counts["running"], RUNNING);
    println!(
        "steady-state cycle over {count} prefixes ({RUNNING} running, the rest done): {:.3} s wall, \
         {} statements, peak RSS during the cycle {:.0} MiB (RSS {:.0} MiB before it)",
        elapsed.as_secs_f64(),
        store.statements_issued() - before,
        memory_mib("VmHWM:"),
        rss_before
    );
}

/// Every prefix waiting, none started yet (the first days of a migration):
/// three cycles, each two syncs and a start round, with what they cost.
fn waiting(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history")
            .expect("open"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        store.prepare().await.expect("prepare");
        for chunk in (0..count).collect::<Vec<_>>().chunks(100_000) {
            let prefixes: Vec<String> = chunk.iter().map(|i| prefix(*i)).collect();
            store.load_prefixes(&prefixes).await.expect("load");
        }
    });
    let options = Options {
        project: Some("bench".into()),
        max_concurrent_jobs: 300,
        ..Options::default()
    };
    let nothing_listed = Fixture {
        prefixes: 0,
        unfinished: 0,
        started: Utc::now(),
    };
    let mut manager = Manager::new(
        store.clone(),
        Arc::new(nothing_listed.service()),
        options,
        "bench".into(),
    );
    for round in 1..=3 {
        reset_peak();
        let started = Instant::now();
        let summary = runtime.block_on(manager.run_once()).expect("cycle");
        println!(
            "cycle {round} over {count} waiting prefixes: {:.2} s wall, peak RSS {:.0} MiB, {} started",
            started.elapsed().as_secs_f64(),
            memory_mib("VmHWM:"),
            summary.started.len()
        );
    }
}
