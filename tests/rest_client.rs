//! Our STS REST client against our emulator, in one process: every method,
//! paging, error mapping, and retries when the emulator injects 429/503.

use std::sync::Arc;
use std::time::Duration;

use sts_job_manager::auth::GoogleAuth;
use sts_job_manager::emulator::{serve, ApiFaults};
use sts_job_manager::model::{
    Date, GcsData, JobStatus, ObjectConditions, OperationStatus, Schedule, TransferJob,
    TransferSpec,
};
use sts_job_manager::transfer::rest::{RetryPolicy, StsClient};
use sts_job_manager::transfer::{JobFilter, OperationFilter, TransferError, TransferService};

struct Running {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _root: tempfile::TempDir,
}

/// What the emulator's strict mode refused (requests Google's discovery
/// document does not admit), read from `/_emulator/stats`.
fn violations(endpoint: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET /_emulator/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let stats: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    stats["strict"]["violations"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let refused = violations(&self.endpoint);
            assert!(
                refused.is_empty(),
                "requests Google's discovery document refuses:\n{}",
                refused.join("\n")
            );
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_emulator(faults: ApiFaults) -> Running {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("src-bucket");
    for i in 0..3 {
        std::fs::create_dir_all(source.join("logs")).unwrap();
        std::fs::write(source.join(format!("logs/f{i}.txt")), format!("object {i}")).unwrap();
    }
    std::fs::create_dir_all(root.path().join("dst-bucket")).unwrap();
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = root.path().to_path_buf();
    tokio::spawn(async move {
        serve(
            &path,
            0,
            faults,
            |a| {
                let _ = address_tx.send(a);
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
    });
    let address = address_rx.await.unwrap();
    Running {
        endpoint: format!("http://{address}"),
        stop: Some(stop_tx),
        _root: root,
    }
}

fn client(endpoint: &str) -> StsClient {
    let retry = RetryPolicy {
        attempts: 10,
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    StsClient::new(endpoint, GoogleAuth::anonymous(), retry)
        .unwrap()
        .without_pacing()
}

fn job(name: &str, start: Date) -> TransferJob {
    let bucket = |b: &str| {
        Some(GcsData {
            bucket_name: b.into(),
            path: String::new(),
        })
    };
    TransferJob {
        name: name.into(),
        description: "test".into(),
        project_id: "proj".into(),
        transfer_spec: TransferSpec {
            gcs_data_source: bucket("src-bucket"),
            gcs_data_sink: bucket("dst-bucket"),
            object_conditions: Some(ObjectConditions {
                include_prefixes: vec!["logs/".into()],
                ..ObjectConditions::default()
            }),
            transfer_options: None,
            transfer_manifest: None,
        },
        schedule: Some(Schedule::one_time(start)),
        status: JobStatus::Enabled,
        logging_config: None,
        latest_operation_name: None,
        creation_time: None,
        deletion_time: None,
    }
}

async fn wait_for(client: &StsClient, name: &str, status: OperationStatus) {
    for _ in 0..200 {
        let ops = client
            .list_operations(&OperationFilter {
                project_id: "proj".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if ops.iter().any(|op| op.name == name && op.status == status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never became {}", status.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_round_trips() {
    let emulator = start_emulator(ApiFaults::default()).await;
    let client = client(&emulator.endpoint);
    let created = client
        .create_job(&job("transferJobs/sts-jm-a", Date::today_utc()))
        .await
        .unwrap();
    assert_eq!(created.name, "transferJobs/sts-jm-a");
    let operation = created
        .latest_operation_name
        .clone()
        .expect("a one-time job dated today starts at once");
    assert!(matches!(
        client
            .create_job(&job("transferJobs/sts-jm-a", Date::today_utc()))
            .await,
        Err(TransferError::AlreadyExists(_))
    ));
    assert!(matches!(
        client
            .create_job(&job("transferJobs/OPIx", Date::today_utc()))
            .await,
        Err(TransferError::InvalidArgument(_))
    ));

    wait_for(&client, &operation, OperationStatus::Success).await;
    let ops = client
        .list_operations(&OperationFilter {
            project_id: "proj".into(),
            job_name_pattern: Some("transferJobs/sts-jm-*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].counters.objects_copied_to_sink, 3);
    assert_eq!(ops[0].transfer_job_name, "transferJobs/sts-jm-a");

    // run: a second operation of the same job; pause, resume, cancel it.
    client
        .run_job("transferJobs/sts-jm-a", "proj")
        .await
        .unwrap();
    let second = client
        .list_operations(&OperationFilter {
            project_id: "proj".into(),
            job_names: vec!["transferJobs/sts-jm-a".into()],
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .name
        .clone();
    assert_ne!(second, operation);
    match client.pause_operation(&second).await {
        // It may already have finished: three small files copy fast.
        Ok(()) => {
            client.resume_operation(&second).await.unwrap();
            let _ = client.cancel_operation(&second).await;
        }
        Err(e) => assert!(matches!(e, TransferError::FailedPrecondition(_)), "{e}"),
    }
    assert!(matches!(
        client.pause_operation("transferOperations/nope").await,
        Err(TransferError::NotFound(_))
    ));

    client
        .delete_job("transferJobs/sts-jm-a", "proj")
        .await
        .unwrap();
    let deleted = client
        .list_jobs(&JobFilter {
            project_id: "proj".into(),
            statuses: vec![JobStatus::Deleted],
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        deleted.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["transferJobs/sts-jm-a"]
    );
    assert!(matches!(
        client.run_job("transferJobs/sts-jm-a", "proj").await,
        Err(TransferError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_pages_past_256() {
    let emulator = start_emulator(ApiFaults::default()).await;
    let client = client(&emulator.endpoint);
    // Dated in the future: created, but no operation starts.
    let later = Date {
        year: 2999,
        month: 1,
        day: 1,
    };
    for i in 0..300 {
        client
            .create_job(&job(&format!("transferJobs/j{i:03}"), later))
            .await
            .unwrap();
    }
    let jobs = client
        .list_jobs(&JobFilter {
            project_id: "proj".into(),
            statuses: vec![JobStatus::Enabled],
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 300);
    let names: std::collections::HashSet<_> = jobs.iter().map(|j| j.name.clone()).collect();
    assert_eq!(names.len(), 300, "no job listed twice across pages");

    // 300 operations, scanned a page at a time: each once, over two pages.
    for i in 0..300 {
        client
            .run_job(&format!("transferJobs/j{i:03}"), "proj")
            .await
            .unwrap();
    }
    let everything = OperationFilter {
        project_id: "proj".into(),
        ..OperationFilter::default()
    };
    let mut pages = Vec::new();
    client
        .scan_operations(&everything, &mut |page| pages.push(page))
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [256, 44],
        "full pages, then the rest"
    );
    let listed: std::collections::HashSet<String> =
        pages.iter().flatten().map(|op| op.name.clone()).collect();
    assert_eq!(listed.len(), 300, "no operation listed twice across pages");
    // By name: exactly those, whatever else the project holds.
    let some: Vec<String> = listed.iter().take(100).cloned().collect();
    let named = client
        .list_operations(&OperationFilter {
            project_id: "proj".into(),
            operation_names: some.clone(),
            ..OperationFilter::default()
        })
        .await
        .unwrap();
    let named: std::collections::HashSet<String> = named.into_iter().map(|op| op.name).collect();
    assert_eq!(named, some.into_iter().collect());
    assert!(client
        .list_jobs(&JobFilter {
            project_id: "other".into(),
            statuses: vec![],
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried() {
    let faults = ApiFaults {
        api_error_rate: 0.5,
        api_error_codes: vec![429, 503],
        ..ApiFaults::default()
    };
    let emulator = start_emulator(faults).await;
    let client = Arc::new(client(&emulator.endpoint));
    for i in 0..20 {
        let created = client
            .create_job(&job(
                &format!("transferJobs/r{i}"),
                Date {
                    year: 2999,
                    month: 1,
                    day: 1,
                },
            ))
            .await;
        // A retried create whose first attempt was applied answers 409: the
        // caller (the manager) treats that as created.
        assert!(
            matches!(created, Ok(_) | Err(TransferError::AlreadyExists(_))),
            "{created:?}"
        );
    }
    let jobs = client
        .list_jobs(&JobFilter {
            project_id: "proj".into(),
            statuses: vec![],
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 20);

    // With retries exhausted the error says so.
    let impatient = StsClient::new(
        &emulator.endpoint,
        GoogleAuth::anonymous(),
        RetryPolicy {
            attempts: 1,
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let mut saw_unavailable = false;
    for _ in 0..4 {
        if let Err(TransferError::Unavailable {
            attempts: 1, last, ..
        }) = impatient
            .list_jobs(&JobFilter {
                project_id: "proj".into(),
                statuses: vec![],
                ..JobFilter::default()
            })
            .await
        {
            assert!(last.starts_with("429") || last.starts_with("503"), "{last}");
            saw_unavailable = true;
        }
    }
    assert!(saw_unavailable);
}

/// A server on 127.0.0.1 that accepts connections and answers each request
/// with `reply` (or never, when `None`).
async fn fake_server(reply: Option<&'static str>) -> String {
    serve_replies(move |_| reply.map(str::to_owned)).await
}

/// A server on 127.0.0.1 that answers each request with the body `reply`
/// makes of its request line (200, JSON), or holds the connection open and
/// says nothing when it makes none.
async fn serve_replies(reply: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let reply = Arc::clone(&reply);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..read]).into_owned();
                match reply(request.lines().next().unwrap_or_default()) {
                    Some(body) => {
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                    }
                    // Hold the connection open and say nothing.
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    format!("http://{address}")
}

/// A silent server that records when each request arrived (on tokio's
/// clock: paused in a test, it is the test's virtual time).
async fn silent_server() -> (String, Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>) {
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    let endpoint = serve_replies(move |_| {
        seen.lock().unwrap().push(tokio::time::Instant::now());
        None
    })
    .await;
    (endpoint, arrivals)
}

#[tokio::test]
async fn a_silent_endpoint_costs_at_most_max_total_in_attempts_of_request_timeout() {
    let (endpoint, arrivals) = silent_server().await;
    let policy = RetryPolicy {
        attempts: 50,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        max_total: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
    };
    let client = StsClient::new(&endpoint, GoogleAuth::anonymous(), policy.clone())
        .unwrap()
        .without_pacing();
    let error = client.service_account("proj").await.unwrap_err();
    // Each attempt waits its whole request timeout, so however slow the
    // machine, no more than max_total / request_timeout + 1 attempts start.
    let bound = (policy.max_total.as_millis() / policy.request_timeout.as_millis()) as u32 + 1;
    let attempts = match &error {
        TransferError::Unavailable { attempts, .. } => *attempts,
        other => panic!("expected Unavailable, got {other}"),
    };
    assert!(
        (2..=bound).contains(&attempts),
        "{attempts} attempts: {error}"
    );
    assert_eq!(
        arrivals.lock().unwrap().len() as u32,
        attempts,
        "one request per attempt"
    );
    assert!(error.to_string().contains("attempts over"), "{error}");
}

/// The README's figures ("Nothing hangs in silence"): every STS call has a
/// 10 s connect and a 30 s request timeout, and retries for at most 3
/// minutes. On tokio's paused clock, the default client against a server
/// that never answers: each attempt ends 30 s after it was sent, no sooner,
/// and the next starts within the largest backoff (20 s) after that.
#[tokio::test(start_paused = true)]
async fn the_default_client_times_out_at_the_documented_figures() {
    let defaults = RetryPolicy::default();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(10));
    assert_eq!(defaults.request_timeout, Duration::from_secs(30));
    assert_eq!(defaults.max_total, Duration::from_secs(180));
    assert_eq!(defaults.max_backoff, Duration::from_secs(20));
    let (endpoint, arrivals) = silent_server().await;
    let client = StsClient::new(&endpoint, GoogleAuth::anonymous(), defaults.clone())
        .unwrap()
        .without_pacing();
    let error = client.service_account("proj").await.unwrap_err();
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= 2, "retried: {error}");
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= defaults.request_timeout
                && gap <= defaults.request_timeout + defaults.max_backoff + Duration::from_secs(1),
            "attempts {gap:?} apart: {arrivals:?}"
        );
    }
}

#[tokio::test]
async fn a_repeated_page_token_is_an_error_not_a_loop() {
    let endpoint = fake_server(Some(
        r#"{"transferJobs": [], "nextPageToken": "same-token"}"#,
    ))
    .await;
    let client = client(&endpoint);
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_jobs(&JobFilter {
            project_id: "proj".into(),
            ..JobFilter::default()
        }),
    )
    .await
    .expect("listing stops")
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("page token 'same-token' a second time"),
        "{error}"
    );
}

#[tokio::test]
async fn the_emulator_enforces_quotas_when_asked() {
    let mut faults = ApiFaults::default();
    faults.quotas.insert("create_per_day".into(), 2);
    faults.quotas.insert("read_per_minute".into(), 3);
    let emulator = start_emulator(faults).await;
    let impatient = StsClient::new(
        &emulator.endpoint,
        GoogleAuth::anonymous(),
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    )
    .unwrap()
    .without_pacing();
    let job = |name: &str| TransferJob {
        name: format!("transferJobs/sts-jm-{name}"),
        description: String::new(),
        project_id: "proj".into(),
        transfer_spec: TransferSpec {
            gcs_data_source: Some(GcsData {
                bucket_name: "src-bucket".into(),
                path: String::new(),
            }),
            gcs_data_sink: Some(GcsData {
                bucket_name: "dst-bucket".into(),
                path: String::new(),
            }),
            object_conditions: None,
            transfer_options: None,
            transfer_manifest: None,
        },
        schedule: None,
        status: JobStatus::Enabled,
        logging_config: None,
        latest_operation_name: None,
        creation_time: None,
        deletion_time: None,
    };
    impatient.create_job(&job("q1")).await.unwrap();
    impatient.create_job(&job("q2")).await.unwrap();
    let third = impatient.create_job(&job("q3")).await.unwrap_err();
    assert!(
        third.to_string().contains("create requests per day (2)"),
        "{third}"
    );
    // Runs are in no quota group; patches are updates.
    impatient
        .run_job("transferJobs/sts-jm-q1", "proj")
        .await
        .unwrap();
    let filter = JobFilter {
        project_id: "proj".into(),
        ..JobFilter::default()
    };
    for _ in 0..3 {
        impatient.list_jobs(&filter).await.unwrap();
    }
    let fourth = impatient.list_jobs(&filter).await.unwrap_err();
    assert!(
        fourth.to_string().contains("read requests per minute (3)"),
        "{fourth}"
    );
}

/// A server whose pages cycle: no token -> A, A -> B, B -> A (a check that
/// only compares a token with the one before it never notices).
async fn cycling_server() -> String {
    serve_replies(|line| {
        let next = if line.contains("pageToken=A") {
            "B"
        } else {
            "A"
        };
        let field = if line.contains("transferJobs") {
            "transferJobs"
        } else {
            "operations"
        };
        Some(format!(r#"{{"{field}": [], "nextPageToken": "{next}"}}"#))
    })
    .await
}

#[tokio::test]
async fn a_page_token_cycle_is_an_error_not_a_loop() {
    let client = client(&cycling_server().await);
    let jobs = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_jobs(&JobFilter {
            project_id: "proj".into(),
            ..JobFilter::default()
        }),
    )
    .await
    .expect("listing stops")
    .unwrap_err();
    assert!(
        jobs.to_string().contains("page token 'A' a second time"),
        "{jobs}"
    );
    let operations = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_operations(&OperationFilter {
            project_id: "proj".into(),
            ..OperationFilter::default()
        }),
    )
    .await
    .expect("listing stops")
    .unwrap_err();
    assert!(
        operations
            .to_string()
            .contains("page token 'A' a second time"),
        "{operations}"
    );
}

/// Cloud Storage listing (sts-plan, sts-verify) through the emulator's
/// JSON API with `cycle_page_tokens`: none -> A, A -> B, B -> A. Both the
/// recursive listing and the one-level listing stop at the second A.
#[tokio::test]
async fn a_page_token_cycle_in_an_object_listing_is_an_error_not_a_loop() {
    use sts_job_manager::storage::gcs::GcsClient;
    use sts_job_manager::storage::{ObjectLister, StorageError};
    let emulator = start_emulator(ApiFaults {
        cycle_page_tokens: true,
        ..ApiFaults::default()
    })
    .await;
    let lister = GcsClient::new(&emulator.endpoint, GoogleAuth::anonymous()).unwrap();
    let all = tokio::time::timeout(
        Duration::from_secs(20),
        lister.list_all("src-bucket", "logs/", false),
    )
    .await
    .expect("listing stops")
    .unwrap_err();
    assert!(
        matches!(&all, StorageError::RepeatedPageToken { token, .. } if token == "A"),
        "{all}"
    );
    let level = tokio::time::timeout(
        Duration::from_secs(20),
        lister.list_level("src-bucket", "", false),
    )
    .await
    .expect("listing stops")
    .unwrap_err();
    assert!(
        matches!(&level, StorageError::RepeatedPageToken { token, .. } if token == "A"),
        "{level}"
    );
    assert_eq!(lister.requests(), 6, "three pages each: none, A, B");
}
