//! The BigQuery state store against bqemulator (started by each test on a
//! free 127.0.0.1 port, stopped after): schemas, loads, round trips, and the
//! number of statements a cycle costs.

#[path = "support/bqemulator.rs"]
mod bqemulator;

use chrono::{DateTime, Duration, Utc};
use sts_job_manager::model::{ChangeSet, JobUpdate};
use sts_job_manager::model::{HistoryRow, Status};
use sts_job_manager::store::bigquery::{BigQueryStore, Settings};
use sts_job_manager::store::HistoryReads;
use sts_job_manager::store::JobTable;
use sts_job_manager::store::LeaseStore;
use sts_job_manager::store::{LoadReport, StoreError};

const PROJECT: &str = "sts-store-test";

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap()
}

fn fields(table: &gcp_bigquery_client::model::table::Table) -> Vec<(String, String, String)> {
    table
        .schema
        .fields()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                serde_json::to_value(&f.r#type)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                f.mode.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_load_apply_and_read_back() {
    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();

    let err = store.read_jobs().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingTable(t) if t.ends_with("data_migration.sts_job")),
        "{err}"
    );
    assert!(err.to_string().contains("sts-prepare-tables"), "{err}");

    store.prepare().await.unwrap();
    store.prepare().await.unwrap();
    let owned = |v: &[(&str, &str, &str)]| {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    };
    let jobs_table = store
        .api()
        .get_table("data_migration", "sts_job")
        .await
        .unwrap();
    assert_eq!(
        fields(&jobs_table),
        owned(&[
            ("prefix", "STRING", "REQUIRED"),
            ("status", "STRING", "REQUIRED"),
            ("job_name", "STRING", "NULLABLE"),
            ("last_updated", "TIMESTAMP", "REQUIRED"),
        ])
    );
    let history_table = store
        .api()
        .get_table("data_migration", "sts_job_history")
        .await
        .unwrap();
    assert_eq!(
        fields(&history_table),
        owned(&[
            ("prefix", "STRING", "REQUIRED"),
            ("status", "STRING", "REQUIRED"),
            ("job_name", "STRING", "NULLABLE"),
            ("operation_results", "STRING", "NULLABLE"),
            ("timestamp", "TIMESTAMP", "REQUIRED"),
        ])
    );

    // More than one load batch, so the staged (all-or-none) path runs.
    let prefixes: Vec<String> = (0..12_000).map(|i| format!("logs/{i:05}/")).collect();
    assert_eq!(
        store.load_prefixes(&prefixes[..11_000]).await.unwrap(),
        LoadReport {
            inserted: 11_000,
            already_present: 0
        }
    );
    let before = store.statements_issued();
    assert_eq!(
        store.load_prefixes(&prefixes[10_500..]).await.unwrap(),
        LoadReport {
            inserted: 1_000,
            already_present: 500
        }
    );
    assert_eq!(
        store.statements_issued() - before,
        1,
        "one batch, one INSERT"
    );

    // An apply straight after the load (no streaming buffer in the way),
    // touching every prefix, with history rows: two statements in all.
    let now = micros(Utc::now());
    let changes = ChangeSet {
        updates: prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| JobUpdate {
                prefix: p.clone(),
                status: if i % 2 == 0 {
                    Status::Running
                } else {
                    Status::Error
                },
                job_name: (i % 3 != 0).then(|| format!("transferOperations/op-{i}")),
                last_updated: now,
            })
            .collect(),
        history: prefixes[..1_000]
            .iter()
            .enumerate()
            .map(|(i, p)| HistoryRow {
                prefix: p.clone(),
                status: Status::Error,
                job_name: Some(format!("transferOperations/op-{i}")),
                operation_results: (i % 2 == 0).then(|| {
                    format!(r#"{{"errorBreakdowns":[{{"n":{i},"q":"it's \"quoted\""}}]}}"#)
                }),
                timestamp: now + Duration::microseconds(i as i64),
            })
            .collect(),
    };
    let before = store.statements_issued();
    store.apply(&changes).await.unwrap();
    assert_eq!(store.statements_issued() - before, 2);
    store.apply(&ChangeSet::default()).await.unwrap();
    assert_eq!(
        store.statements_issued() - before,
        2,
        "no change, no statement"
    );

    let jobs = store.read_jobs().await.unwrap();
    assert_eq!(jobs.len(), prefixes.len());
    let expected: Vec<_> = changes
        .updates
        .iter()
        .map(|u| {
            (
                u.prefix.clone(),
                u.status,
                u.job_name.clone(),
                u.last_updated,
            )
        })
        .collect();
    let read: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.prefix.clone(),
                j.status,
                j.job_name.clone(),
                j.last_updated,
            )
        })
        .collect();
    assert_eq!(read, expected);

    let history = store.read_history().await.unwrap();
    assert_eq!(history, changes.history);
    // The scan (page by page) sees the same rows, each once.
    let mut scanned = Vec::new();
    store
        .scan_history(&mut |row| scanned.push(row))
        .await
        .unwrap();
    scanned.sort_by(|a, b| (a.timestamp, &a.prefix).cmp(&(b.timestamp, &b.prefix)));
    let mut expected = changes.history.clone();
    expected.sort_by(|a, b| (a.timestamp, &a.prefix).cmp(&(b.timestamp, &b.prefix)));
    assert_eq!(scanned, expected);
}

#[tokio::test]
async fn bad_names_are_refused_before_any_request() {
    // Nobody listens on this port: any request would fail differently.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let host = format!("127.0.0.1:{port}");
    for (table, dataset, project) in [
        ("sts_job; DROP TABLE x", "data_migration", PROJECT),
        ("sts_job", "data-migration", PROJECT),
        ("sts_job", "data_migration", "Bad Project`"),
    ] {
        let result = BigQueryStore::open(&Settings {
            job_table: table.into(),
            dataset: dataset.into(),
            project: Some(project.into()),
            ..bqemulator::settings(PROJECT, &host)
        });
        match result {
            Err(StoreError::InvalidIdentifier(name)) => assert!(name == table || name == dataset),
            Err(StoreError::InvalidProject(name)) => assert_eq!(name, project),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{project}.{dataset}.{table} was accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_has_one_holder_until_it_expires_or_its_holder_dies() {
    use sts_job_manager::store::Lease;
    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    let long = std::time::Duration::from_secs(600);

    // No dataset yet: the job table is named as missing.
    let err = store.acquire_lease("host-a:1:1", long).await.unwrap_err();
    assert!(matches!(&err, StoreError::MissingTable(_)), "{err}");
    // Never leased: releasing is a no-op, not an error.
    store.prepare().await.unwrap();
    store.release_lease("host-a:1:1").await.unwrap();

    // The lease table is created on first use; renewals keep it.
    assert_eq!(
        store.acquire_lease("host-a:1:1", long).await.unwrap(),
        Lease::Acquired
    );
    assert_eq!(
        store.acquire_lease("host-a:1:1", long).await.unwrap(),
        Lease::Acquired
    );
    match store.acquire_lease("host-b:2:2", long).await.unwrap() {
        Lease::HeldBy { holder, until } => {
            assert_eq!(holder, "host-a:1:1");
            assert!(until > Utc::now() + Duration::seconds(500), "{until}");
        }
        other => panic!("a second holder got {other:?}"),
    }
    // Releasing someone else's lease does nothing.
    store.release_lease("host-b:2:2").await.unwrap();
    assert!(matches!(
        store.acquire_lease("host-b:2:2", long).await.unwrap(),
        Lease::HeldBy { .. }
    ));
    store.release_lease("host-a:1:1").await.unwrap();
    // Free: taken at once, here with a lease that is over as soon as taken.
    assert_eq!(
        store
            .acquire_lease("host-b:2:2", std::time::Duration::ZERO)
            .await
            .unwrap(),
        Lease::Acquired
    );
    assert_eq!(
        store.acquire_lease("host-c:3:3", long).await.unwrap(),
        Lease::Acquired
    );

    // A holder on this machine whose process is gone is taken over at once.
    let here = sts_job_manager::store::lease_holder();
    let host = here.split(':').next().unwrap().to_string();
    let dead = format!("{host}:4194999:1");
    let other = BigQueryStore::open(&emulator.settings()).unwrap();
    store.release_lease("host-c:3:3").await.unwrap();
    assert_eq!(
        other.acquire_lease(&dead, long).await.unwrap(),
        Lease::Acquired
    );
    assert_eq!(
        store.acquire_lease(&here, long).await.unwrap(),
        Lease::Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_racing_for_a_fresh_lease_get_one_winner() {
    use sts_job_manager::store::Lease;
    let emulator = bqemulator::Emulator::start(PROJECT);
    let first = BigQueryStore::open(&emulator.settings()).unwrap();
    first.prepare().await.unwrap();
    let long = std::time::Duration::from_secs(600);
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let store = BigQueryStore::open(&emulator.settings()).unwrap();
            tokio::spawn(async move {
                let holder = format!("racer-{i}:1:1");
                let lease = store.acquire_lease(&holder, long).await.unwrap();
                (holder, lease)
            })
        })
        .collect();
    let mut winners = vec![];
    let mut named = vec![];
    for racer in racers {
        let (holder, lease) = racer.await.unwrap();
        match lease {
            Lease::Acquired => winners.push(holder),
            Lease::HeldBy { holder, .. } => named.push(holder),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "winners {winners:?}, refused by {named:?}"
    );
    assert!(named.iter().all(|h| h == &winners[0]), "{named:?}");
}

/// The snapshot queries `sts-status` uses answer what the whole-history
/// rules answer (`latest_snapshots_in`, `snapshots_before_in`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_queries_agree_with_the_whole_history() {
    use sts_job_manager::store::{failure_snapshots_in, latest_snapshots_in, snapshots_before_in};

    let emulator = bqemulator::Emulator::start(PROJECT);
    let store = BigQueryStore::open(&emulator.settings()).unwrap();
    store.prepare().await.unwrap();
    let prefixes: Vec<String> = ["a/", "b/", "c/"].iter().map(|p| p.to_string()).collect();
    store.load_prefixes(&prefixes).await.unwrap();
    let start = micros(Utc::now()) - Duration::hours(3);
    let row = |prefix: &str, minutes: i64, results: Option<&str>| HistoryRow {
        prefix: prefix.into(),
        status: Status::Running,
        job_name: Some(format!("op-{prefix}")),
        operation_results: results.map(|r| format!(r#"{{"name":"op-{prefix}","n":"{r}"}}"#)),
        timestamp: start + Duration::minutes(minutes),
    };
    let failing = |prefix: &str, minutes: i64| HistoryRow {
        operation_results: Some(format!(
            r#"{{"name":"op-{prefix}","errorBreakdowns":[{{"errorCode":"NOT_FOUND"}}]}}"#
        )),
        ..row(prefix, minutes, None)
    };
    let history = vec![
        row("a/", 0, None),
        row("a/", 10, Some("a1")),
        row("a/", 100, Some("a2")),
        row("a/", 170, Some("a3")),
        row("b/", 5, Some("b1")),
        row("b/", 175, None),
        row("gone/", 20, Some("g1")),
        failing("a/", 50),
        failing("b/", 6),
        failing("x/", 30),
    ];
    store
        .apply(&ChangeSet {
            updates: vec![],
            history: history.clone(),
        })
        .await
        .unwrap();
    let sorted = |mut rows: Vec<HistoryRow>| {
        rows.sort_by(|x, y| x.prefix.cmp(&y.prefix));
        rows
    };
    let jobs = store.read_jobs().await.unwrap();
    let all = store.read_history().await.unwrap();
    let latest = sorted(store.latest_snapshots().await.unwrap());
    assert_eq!(latest, sorted(latest_snapshots_in(&jobs, &all)));
    assert_eq!(latest.len(), 2, "{latest:?}");
    // One time for all (the throughput window), then one time each (stalls).
    let window = start + Duration::minutes(120);
    let one_time: Vec<(String, DateTime<Utc>)> =
        prefixes.iter().map(|p| (p.clone(), window)).collect();
    let before = sorted(store.snapshots_before(&one_time).await.unwrap());
    assert_eq!(before, sorted(snapshots_before_in(&all, &one_time)));
    assert_eq!(before.len(), 2, "{before:?}");
    let each = vec![
        ("a/".to_string(), start + Duration::minutes(170)),
        ("b/".to_string(), start + Duration::minutes(5)),
    ];
    let previous = sorted(store.snapshots_before(&each).await.unwrap());
    assert_eq!(previous, sorted(snapshots_before_in(&all, &each)));
    assert_eq!(previous.len(), 1, "{previous:?}");
    // Failures, folded over the paged scan: the latest row of each operation
    // while it lists errorBreakdowns (a/'s later rows list none).
    let failures = sorted(store.failure_snapshots().await.unwrap());
    assert_eq!(failures, sorted(failure_snapshots_in(&all)));
    let shown: Vec<(&str, DateTime<Utc>)> = failures
        .iter()
        .map(|r| (r.prefix.as_str(), r.timestamp))
        .collect();
    assert_eq!(
        shown,
        [
            ("b/", start + Duration::minutes(6)),
            ("x/", start + Duration::minutes(30))
        ]
    );
}
