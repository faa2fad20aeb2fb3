//! An answer cut off mid-body (a reset, a proxy timeout) is no answer: it
//! is retried, and never read as an empty page (which would end a listing
//! early, as if it were the last page).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sts_job_manager::auth::GoogleAuth;
use sts_job_manager::transfer::rest::{RetryPolicy, StsClient};
use sts_job_manager::transfer::{JobFilter, TransferService};

const PAGE: &str =
    r#"{"transferJobs": [{"name": "transferJobs/a", "projectId": "proj", "status": "ENABLED"}]}"#;

/// Answers the first request with a 200 whose body stops short of its
/// stated length, then every later one in full; counts requests.
async fn cutting_server(requests: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = requests.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buffer).await;
                let body = if seen == 0 { &PAGE[..10] } else { PAGE };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_listing_cut_off_mid_body_is_retried_not_ended() {
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = cutting_server(requests.clone()).await;
    let client = StsClient::new(
        &endpoint,
        GoogleAuth::anonymous(),
        RetryPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
    )
    .unwrap()
    .without_pacing();
    let jobs = client
        .list_jobs(&JobFilter {
            project_id: "proj".into(),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["transferJobs/a"]);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "one cut answer, one retry"
    );
}
