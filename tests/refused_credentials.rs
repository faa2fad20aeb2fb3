//! A 401 from STS is the credentials refused, said as such (not a missing
//! grant), and not retried: asking again with the same token cannot help.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sts_job_manager::auth::GoogleAuth;
use sts_job_manager::transfer::rest::{RetryPolicy, StsClient};
use sts_job_manager::transfer::{TransferError, TransferService};

async fn refusing_server(status: u16, requests: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            requests.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buffer).await;
                let (reason, state) = match status {
                    401 => ("Unauthorized", "UNAUTHENTICATED"),
                    _ => ("Forbidden", "PERMISSION_DENIED"),
                };
                let body = format!(
                    r#"{{"error": {{"code": {status}, "message": "told by the server", "status": "{state}"}}}}"#
                );
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_refused_token_is_named_and_not_retried_and_a_refused_grant_stays_a_grant() {
    for (status, code) in [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")] {
        let requests = Arc::new(AtomicUsize::new(0));
        let endpoint = refusing_server(status, requests.clone()).await;
        let client = StsClient::new(&endpoint, GoogleAuth::anonymous(), RetryPolicy::default())
            .unwrap()
            .without_pacing();
        let error = client.service_account("proj").await.unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "{status} is an answer, not retried"
        );
        let message = error.to_string();
        assert!(message.contains("told by the server"), "{message}");
        match status {
            401 => {
                assert!(
                    matches!(error, TransferError::Unauthenticated(_)),
                    "{error:?}"
                );
                assert!(message.contains("credentials refused"), "{message}");
            }
            _ => assert!(
                matches!(error, TransferError::PermissionDenied(_)),
                "{error:?}"
            ),
        }
    }
}
