//! The manager recovering from starts that went wrong, with the SQLite store
//! and the local engine in control mode (nothing executes, so operations
//! stay QUEUED and every assertion is deterministic).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sts_job_manager::manager::Manager;
use sts_job_manager::model::{Status, TransferJob, TransferOperation};
use sts_job_manager::options::Options;
use sts_job_manager::store::sqlite::SqliteStore;
use sts_job_manager::store::JobTable;
use sts_job_manager::store::StateStore;
use sts_job_manager::transfer::local::{LocalEngine, Mode};
use sts_job_manager::transfer::{JobFilter, OperationFilter, TransferError, TransferService};

const PROJECT: &str = "recovery-project";
const PREFIXES: [&str; 3] = ["a/", "b/", "c/"];

/// One job per prefix (the path these tests prove idempotent); the pool of
/// reusable jobs has its own test below.
fn options(start_timeout: f64) -> Options {
    Options {
        start_timeout,
        no_job_reuse: true,
        ..Options::default()
    }
}

fn engine(root: &Path) -> Arc<dyn TransferService> {
    for bucket in ["migration-source", "migration-destination"] {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
    }
    Arc::new(LocalEngine::open(root, Mode::Control).unwrap())
}

async fn store(path: &Path) -> Arc<dyn StateStore> {
    let store = SqliteStore::open(path, "sts_job", "sts_job_history").unwrap();
    store.prepare().await.unwrap();
    let prefixes: Vec<String> = PREFIXES.iter().map(|p| p.to_string()).collect();
    store.load_prefixes(&prefixes).await.unwrap();
    Arc::new(store)
}

/// Cycles until every prefix has been started (ramp-up starts a few per
/// round); returns the prefixes started.
async fn start_all(manager: &mut Manager) -> Vec<String> {
    let mut started = vec![];
    for _ in 0..5 {
        started.extend(manager.run_once().await.unwrap().started);
        if started.len() >= PREFIXES.len() {
            break;
        }
    }
    started.sort();
    started
}

async fn operations_per_job(transfer: &dyn TransferService) -> Vec<(String, usize)> {
    let all = transfer
        .list_operations(&OperationFilter {
            project_id: PROJECT.into(),
            ..OperationFilter::default()
        })
        .await
        .unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for op in all {
        *counts.entry(op.transfer_job_name).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// STS lists a new operation a little after creating it: the first
/// `hidden` project-wide listings leave every operation out. Everything
/// else is the engine's own answer.
struct ListingLag {
    engine: Arc<dyn TransferService>,
    hidden: AtomicUsize,
}

#[async_trait::async_trait]
impl TransferService for ListingLag {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError> {
        let lagging = filter.job_names.is_empty()
            && self
                .hidden
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lagging {
            return Ok(vec![]);
        }
        self.engine.list_operations(filter).await
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<TransferJob>, TransferError> {
        self.engine.list_jobs(filter).await
    }
    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError> {
        self.engine.create_job(job).await
    }
    async fn run_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        self.engine.run_job(job_name, project_id).await
    }
    async fn delete_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        self.engine.delete_job(job_name, project_id).await
    }
    async fn pause_operation(&self, name: &str) -> Result<(), TransferError> {
        self.engine.pause_operation(name).await
    }
    async fn resume_operation(&self, name: &str) -> Result<(), TransferError> {
        self.engine.resume_operation(name).await
    }
    async fn cancel_operation(&self, name: &str) -> Result<(), TransferError> {
        self.engine.cancel_operation(name).await
    }
    async fn service_account(&self, project_id: &str) -> Result<String, TransferError> {
        self.engine.service_account(project_id).await
    }
}

#[tokio::test]
async fn a_job_created_before_a_crash_and_not_listed_yet_is_followed_not_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir.path().join("buckets"));
    // The first manager creates the jobs; its state is then lost, as when it
    // is killed between creating jobs and writing its state.
    let lost = store(&dir.path().join("lost.db")).await;
    let mut first = Manager::new(lost, engine.clone(), options(1800.0), PROJECT.into());
    assert_eq!(start_all(&mut first).await, PREFIXES.to_vec());
    drop(first);

    // The restarted manager does not see those operations listed yet, so it
    // starts every prefix: each create answers ALREADY_EXISTS, each run
    // FAILED_PRECONDITION (an operation is under way).
    let lagging: Arc<dyn TransferService> = Arc::new(ListingLag {
        engine: engine.clone(),
        hidden: AtomicUsize::new(usize::MAX),
    });
    let state = store(&dir.path().join("state.db")).await;
    let mut second = Manager::new(state.clone(), lagging, options(1800.0), PROJECT.into());
    assert_eq!(start_all(&mut second).await, PREFIXES.to_vec());
    drop(second);

    let per_job = operations_per_job(engine.as_ref()).await;
    assert_eq!(per_job.len(), PREFIXES.len(), "{per_job:?}");
    assert!(per_job.iter().all(|(_, n)| *n == 1), "{per_job:?}");
    // Each row follows the operation found, by name: once the listing
    // catches up, sync keeps it (a job name would wait for a newer one).
    let mut third = Manager::new(
        state.clone(),
        engine.clone(),
        options(1800.0),
        PROJECT.into(),
    );
    third.run_once().await.unwrap();
    let operations: std::collections::HashSet<String> = engine
        .list_operations(&OperationFilter {
            project_id: PROJECT.into(),
            ..OperationFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|op| op.name)
        .collect();
    for row in state.read_jobs().await.unwrap() {
        assert_eq!(row.status, Status::Running, "{row:?}");
        let name = row.job_name.unwrap_or_default();
        assert!(operations.contains(&name), "{} follows {name}", row.prefix);
    }
}

#[tokio::test]
async fn a_start_whose_operation_never_appears_is_run_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("buckets");
    let transfer = engine(&root);
    // STS skips the jobs' scheduled start: created, but no operation.
    std::fs::write(
        root.join(".sts-engine/faults.json"),
        r#"{"skip_scheduled_starts": true}"#,
    )
    .unwrap();
    let state = store(&dir.path().join("state.db")).await;

    let mut patient = Manager::new(
        state.clone(),
        transfer.clone(),
        options(1800.0),
        PROJECT.into(),
    );
    assert_eq!(start_all(&mut patient).await, PREFIXES.to_vec());
    let summary = patient.run_once().await.unwrap();
    assert!(
        summary.restarted.is_empty(),
        "within the timeout: {summary:?}"
    );
    assert!(operations_per_job(transfer.as_ref()).await.is_empty());
    drop(patient);

    let mut manager = Manager::new(
        state.clone(),
        transfer.clone(),
        options(0.05),
        PROJECT.into(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let summary = manager.run_once().await.unwrap();
    let mut restarted = summary.restarted.clone();
    restarted.sort();
    assert_eq!(restarted, PREFIXES.to_vec());
    assert!(summary.started.is_empty(), "{summary:?}");
    // Once the operations are listed, nothing is run again.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let summary = manager.run_once().await.unwrap();
    assert!(summary.restarted.is_empty(), "{summary:?}");
    let per_job = operations_per_job(transfer.as_ref()).await;
    assert_eq!(per_job.len(), PREFIXES.len(), "{per_job:?}");
    assert!(per_job.iter().all(|(_, n)| *n == 1), "{per_job:?}");
    for row in state.read_jobs().await.unwrap() {
        let name = row.job_name.unwrap_or_default();
        assert!(
            name.starts_with("transferOperations/"),
            "{} follows {name}",
            row.prefix
        );
    }
    let history = state.read_history().await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|h| h.status == Status::Running && h.operation_results.is_none())
            .count(),
        2 * PREFIXES.len(),
        "a start and a restart recorded per prefix"
    );
}

#[tokio::test]
async fn reusable_jobs_started_before_a_crash_are_adopted_not_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir.path().join("buckets"));
    std::fs::write(
        dir.path().join("buckets/.sts-engine/faults.json"),
        r#"{"bytes_per_second": 1}"#,
    )
    .unwrap();
    // The table as it was before the crash: every prefix waiting.
    let state = store(&dir.path().join("state.db")).await;
    // A manager runs every prefix on reusable jobs, then dies before its
    // state is written (its writes went to a store now lost).
    let lost = store(&dir.path().join("lost.db")).await;
    let pooled = Options {
        start_timeout: 1800.0,
        ..Options::default()
    };
    let mut first = Manager::new(lost, engine.clone(), pooled.clone(), PROJECT.into());
    assert_eq!(start_all(&mut first).await, PREFIXES.to_vec());
    drop(first);
    let per_job = operations_per_job(engine.as_ref()).await;
    assert!(
        per_job.iter().all(|(job, _)| job.contains("/sts-jm-pool-")),
        "{per_job:?}"
    );

    // Restarted on the real table: the start-up reconcile finds each
    // prefix's operation, and nothing is started again.
    let mut second = Manager::new(state.clone(), engine.clone(), pooled, PROJECT.into());
    let summary = second.run_once().await.unwrap();
    assert!(summary.started.is_empty(), "{summary:?}");
    let all = engine
        .list_operations(&OperationFilter {
            project_id: PROJECT.into(),
            ..OperationFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), PREFIXES.len(), "one operation per prefix");
    let names: std::collections::HashSet<String> = all.into_iter().map(|op| op.name).collect();
    for row in state.read_jobs().await.unwrap() {
        assert_eq!(row.status, Status::Running, "{row:?}");
        assert!(
            names.contains(row.job_name.as_deref().unwrap_or_default()),
            "{row:?}"
        );
    }
}
