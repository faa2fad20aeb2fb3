//! STS's transfer logs in Cloud Logging: one entry per object whose action
//! (COPY, DELETE) failed, when the job's `loggingConfig` asks for it. The
//! shape (README "Transfer logs in Cloud Logging"), the filter the manager
//! reads them with, the `entries.list` client (paced under Logging's read
//! quota, with the shared retry policy), and the trait the manager sees.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::pacing::Bucket;
use crate::auth::GoogleAuth;
use crate::http::{self, Failure, Idempotency, RetryPolicy};

/// The log STS writes transfer activity to (URL-encoded in `logName`):
/// Cloud Logging's list of platform logs, "Storage Transfer" row.
pub const LOG_ID: &str = "storagetransfer.googleapis.com%2Ftransfer_activity";
/// The monitored resource of those entries.
pub const RESOURCE_TYPE: &str = "storage_transfer_job";
/// `jsonPayload.@type` of every transfer activity entry.
pub const PAYLOAD_TYPE: &str =
    "type.googleapis.com/google.storagetransfer.logging.TransferActivityLog";
/// `entries.list`: "The maximum length of a filter is 20,000 characters"
/// (logging.v2.json); operations are asked for in chunks that stay under it.
pub const MAX_FILTER_CHARS: usize = 20_000;
/// Entries per page (Logging's maximum for `pageSize` is 1,000).
pub const PAGE_SIZE: u32 = 1000;
/// Cloud Logging's `entries.list` quota: 60 requests a minute per project
/// (Logging "Quotas and limits"); paced under it.
pub const READS_PER_MINUTE: f64 = 60.0;

pub const EMULATOR_HOST_VARIABLE: &str = "LOGGING_EMULATOR_HOST";
const GOOGLE_ENDPOINT: &str = "https://logging.googleapis.com";

/// `projects/{project}/logs/storagetransfer.googleapis.com%2Ftransfer_activity`.
pub fn log_name(project: &str) -> String {
    format!("projects/{project}/logs/{LOG_ID}")
}

/// One failed object as a transfer log entry says it (its prefix is the
/// manager's to add: it knows which prefix an operation copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedFailure {
    pub operation: String,
    pub object: String,
    pub action: String,
    pub error_code: String,
    pub message: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("Cloud Logging unavailable after {attempts} attempts over {seconds} s: {last}")]
    Unavailable {
        attempts: u32,
        seconds: u64,
        last: String,
    },
    #[error("Cloud Logging refused entries.list ({http}): {message}; the caller needs roles/logging.viewer on the project")]
    Refused { http: u16, message: String },
    #[error("Cloud Logging sent a reply that cannot be read: {0}")]
    Malformed(String),
    #[error("transfer logs of the local engine: {0}")]
    Local(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// One page of failed objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub failures: Vec<LoggedFailure>,
    pub next_page_token: Option<String>,
}

/// Where the manager reads failed objects from.
#[async_trait]
pub trait TransferLogs: Send + Sync {
    /// One page of the failure entries of these operations (one request).
    async fn failed_objects(
        &self,
        project: &str,
        operations: &[String],
        page_token: Option<&str>,
    ) -> Result<LogPage, LogsError>;
}

/// A Logging query string literal: `"` and `\` escaped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `entries.list` filter for the failure entries of these operations:
/// the log, the resource type, the payload type, severity ERROR or worse
/// (FAILED actions are logged as ERROR), and the operations by name.
pub fn failure_filter(project: &str, operations: &[String]) -> String {
    let names: Vec<String> = operations.iter().map(|o| quoted(o)).collect();
    format!(
        "logName={} AND resource.type={} AND jsonPayload.\"@type\"={} AND severity>=ERROR \
         AND jsonPayload.operation=({})",
        quoted(&log_name(project)),
        quoted(RESOURCE_TYPE),
        quoted(PAYLOAD_TYPE),
        names.join(" OR ")
    )
}

/// Operations in chunks whose filter stays under [`MAX_FILTER_CHARS`]:
/// as few `entries.list` calls as the limit allows.
pub fn chunk_operations(project: &str, operations: &[String]) -> Vec<Vec<String>> {
    let base = failure_filter(project, &[]).len();
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut length = base;
    for operation in operations {
        let add = quoted(operation).len() + 4;
        if !current.is_empty() && length + add > MAX_FILTER_CHARS {
            chunks.push(std::mem::take(&mut current));
            length = base;
        }
        length += add;
        current.push(operation.clone());
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The object of an entry: `sourceObject.gcsObject.objectKey`
/// (`TransferActivityLog`: set for COPY, and for DELETE at the source),
/// else `destinationObject`'s (a DELETE at the destination has no source).
fn object_of(payload: &Value) -> Option<String> {
    ["sourceObject", "destinationObject"]
        .iter()
        .find_map(|side| payload[side]["gcsObject"]["objectKey"].as_str())
        .map(str::to_string)
}

/// A failure entry as a [`LoggedFailure`]; `Err` names what is missing.
pub fn parse_entry(entry: &Value) -> Result<LoggedFailure, String> {
    let payload = &entry["jsonPayload"];
    let field = |value: &Value, name: &str| {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a transfer log entry without {name}"))
    };
    // `TransferActivityLog.operation` is the operation's name, a string.
    let operation = field(&payload["operation"], "jsonPayload.operation")?;
    let object = object_of(payload).ok_or_else(|| {
        "a transfer log entry without sourceObject or destinationObject".to_string()
    })?;
    let action = field(&payload["action"], "jsonPayload.action")?;
    let status = &payload["status"];
    let error_code = field(&status["statusCode"], "jsonPayload.status.statusCode")?;
    let message = status["errorMessage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let time = payload["completeTime"]
        .as_str()
        .or_else(|| entry["timestamp"].as_str())
        .ok_or_else(|| "a transfer log entry without a time".to_string())?;
    let time = DateTime::parse_from_rfc3339(time)
        .map_err(|e| format!("a transfer log entry's time '{time}': {e}"))?
        .with_timezone(&Utc);
    Ok(LoggedFailure {
        operation,
        object,
        action,
        error_code,
        message,
        time,
    })
}

/// The entry STS writes for a failed action on `bucket/object` (the local
/// engine writes the same).
#[allow(clippy::too_many_arguments)]
pub fn failure_entry(
    project: &str,
    job: &str,
    operation: &str,
    action: &str,
    (source, sink): (&str, &str),
    object: &str,
    (code, message): (&str, &str),
    time: &str,
    insert_id: &str,
) -> Value {
    let gcs = |bucket: &str| json!({ "type": "GCS", "gcsObject": { "bucket": bucket, "objectKey": object } });
    json!({
        "logName": log_name(project),
        "resource": {
            "type": RESOURCE_TYPE,
            "labels": { "project_id": project, "job_id": job },
        },
        "insertId": insert_id,
        "timestamp": time,
        "receiveTimestamp": time,
        "severity": "ERROR",
        "jsonPayload": {
            "@type": PAYLOAD_TYPE,
            "action": action,
            "completeTime": time,
            "operation": operation,
            "sourceObject": gcs(source),
            "destinationObject": gcs(sink),
            "status": { "statusCode": code, "errorType": code, "errorMessage": message },
        },
    })
}

/// A burst of a few reads, then Logging's quota rate.
fn read_pacer() -> Bucket {
    Bucket::new(READS_PER_MINUTE, READ_BURST)
}

/// Reads allowed at once before pacing starts.
const READ_BURST: f64 = 5.0;

/// Cloud Logging's `entries.list` over REST.
pub struct CloudLogging {
    http: reqwest::Client,
    endpoint: String,
    auth: GoogleAuth,
    retry: RetryPolicy,
    pacer: tokio::sync::Mutex<Bucket>,
}

impl CloudLogging {
    pub fn new(endpoint: impl Into<String>, auth: GoogleAuth) -> Result<Self, String> {
        let retry = RetryPolicy::storage_transfer();
        let http = retry
            .http_client()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(CloudLogging {
            http,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            auth,
            retry,
            pacer: tokio::sync::Mutex::new(read_pacer()),
        })
    }

    /// Google's endpoint with Application Default Credentials, or plain HTTP
    /// to `LOGGING_EMULATOR_HOST` with none; when only
    /// `STORAGE_TRANSFER_EMULATOR_HOST` is set, that host (`sts-emulator`
    /// serves Logging's `entries.list` too): an emulated STS never writes
    /// to the real Cloud Logging.
    pub fn from_environment() -> Result<Self, String> {
        let logging_set = std::env::var(EMULATOR_HOST_VARIABLE).is_ok_and(|h| !h.is_empty());
        let variable = if logging_set {
            EMULATOR_HOST_VARIABLE
        } else {
            super::rest::EMULATOR_HOST_VARIABLE
        };
        let (endpoint, auth) =
            crate::auth::endpoint_and_auth(variable, GOOGLE_ENDPOINT).map_err(|e| e.to_string())?;
        CloudLogging::new(endpoint, auth)
    }

    async fn list(&self, body: &Value) -> Result<Value, (Failure, String)> {
        let wait = self.pacer.lock().await.reserve(std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let url = format!("{}/v2/entries:list", self.endpoint);
        let response = self.auth.post_json(&self.http, url, body).await?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| (Failure::Transient, e.without_url().to_string()))?;
        if !status.is_success() {
            let message: String = text.chars().take(300).collect();
            return Err((Failure::Status(status.as_u16()), message));
        }
        serde_json::from_str(&text).map_err(|e| (Failure::Permanent, format!("not JSON: {e}")))
    }
}

/// A page of an `entries.list` reply; entries that are not failure entries
/// of the shape above are skipped with a warning.
pub fn read_page(reply: &Value) -> LogPage {
    let mut failures = Vec::new();
    for entry in reply["entries"].as_array().into_iter().flatten() {
        match parse_entry(entry) {
            Ok(failure) => failures.push(failure),
            Err(problem) => tracing::warn!("skipping a transfer log entry: {problem}"),
        }
    }
    LogPage {
        failures,
        next_page_token: reply["nextPageToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    }
}

#[async_trait]
impl TransferLogs for CloudLogging {
    async fn failed_objects(
        &self,
        project: &str,
        operations: &[String],
        page_token: Option<&str>,
    ) -> Result<LogPage, LogsError> {
        let mut body = json!({
            "resourceNames": [format!("projects/{project}")],
            "filter": failure_filter(project, operations),
            "orderBy": "timestamp asc",
            "pageSize": PAGE_SIZE,
        });
        if let Some(token) = page_token {
            body["pageToken"] = json!(token);
        }
        // A read: safe to repeat.
        let reply = http::retry(
            &self.retry,
            Idempotency::Safe,
            |(failure, _): &(Failure, String)| *failure,
            |retry| {
                tracing::debug!(
                    "entries.list retry {}/{} in {:?}: {}",
                    retry.retry,
                    retry.attempts,
                    retry.wait,
                    retry.last.1
                )
            },
            || self.list(&body),
        )
        .await
        .map_err(|gave_up| match gave_up.last.0 {
            Failure::Status(code) if !gave_up.exhausted && (400..500).contains(&code) => {
                LogsError::Refused {
                    http: code,
                    message: gave_up.last.1,
                }
            }
            _ => LogsError::Unavailable {
                attempts: gave_up.attempts,
                seconds: gave_up.elapsed.as_secs(),
                last: gave_up.last.1,
            },
        })?;
        Ok(read_page(&reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(object: &str) -> Value {
        failure_entry(
            "p",
            "transferJobs/j",
            "transferOperations/op-1",
            "COPY",
            ("src", "dst"),
            object,
            ("PERMISSION_DENIED", "denied"),
            "2026-01-02T03:04:05Z",
            "1",
        )
    }

    #[test]
    fn an_entry_round_trips_through_the_parser() {
        for name in [
            "a/plain.txt",
            "a/with, comma \"quoted\" é 日.bin",
            "a/ space/x",
        ] {
            let parsed = parse_entry(&entry(name)).unwrap();
            assert_eq!(parsed.object, name);
            assert_eq!(parsed.operation, "transferOperations/op-1");
            assert_eq!(parsed.action, "COPY");
            assert_eq!(parsed.error_code, "PERMISSION_DENIED");
            assert_eq!(parsed.message, "denied");
            assert_eq!(parsed.time.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        }
    }

    #[test]
    fn an_entry_without_its_operation_is_refused_by_name() {
        let mut e = entry("x");
        e["jsonPayload"]["operation"] = json!({});
        let problem = parse_entry(&e).unwrap_err();
        assert!(problem.contains("jsonPayload.operation"), "{problem}");
        // A DELETE at the destination names only the destination's object.
        let mut e = entry("dir/x y");
        e["jsonPayload"]
            .as_object_mut()
            .unwrap()
            .remove("sourceObject");
        assert_eq!(parse_entry(&e).unwrap().object, "dir/x y");
        // An entry as Google's page shows one: the operation a string.
        let documented = json!({
            "jsonPayload": {
                "@type": PAYLOAD_TYPE,
                "action": "COPY",
                "completeTime": "2021-12-16T18:59:00.510509049Z",
                "operation": "transferOperations/transferJobs-78-30",
                "sourceObject": {
                    "type": "GCS",
                    "gcsObject": { "bucket": "b", "objectKey": "o.txt" },
                },
                "status": { "statusCode": "PERMISSION_DENIED", "errorType": "PERMISSION_DENIED" },
            },
            "resource": {
                "type": "storage_transfer_job",
                "labels": { "job_id": "transferJobs/78", "project_id": "p" },
            },
        });
        let parsed = parse_entry(&documented).unwrap();
        assert_eq!(parsed.operation, "transferOperations/transferJobs-78-30");
        assert_eq!(parsed.object, "o.txt");
    }

    #[test]
    fn the_filter_quotes_names_and_chunks_stay_under_the_limit() {
        let filter = failure_filter("p", &["transferOperations/a\"b".to_string()]);
        assert!(filter.contains(r#"jsonPayload.operation=("transferOperations/a\"b")"#));
        assert!(filter.contains(
            r#"logName="projects/p/logs/storagetransfer.googleapis.com%2Ftransfer_activity""#
        ));
        let operations: Vec<String> = (0..2000)
            .map(|i| format!("transferOperations/transferJobs-sts-jm-pool-{i:05}-1"))
            .collect();
        let chunks = chunk_operations("p", &operations);
        assert!(chunks.len() > 1 && chunks.len() < 20, "{}", chunks.len());
        assert_eq!(chunks.concat(), operations);
        for chunk in &chunks {
            assert!(failure_filter("p", chunk).len() <= MAX_FILTER_CHARS);
        }
        assert!(chunk_operations("p", &[]).is_empty());
    }

    #[test]
    fn reads_are_paced_under_the_quota_after_a_short_burst() {
        let start = std::time::Instant::now();
        let mut pacer = read_pacer();
        let waits: Vec<f64> = (0..7).map(|_| pacer.reserve(start).as_secs_f64()).collect();
        assert_eq!(&waits[..5], &[0.0; 5]);
        // 60 a minute: one a second past the burst.
        assert!((waits[5] - 1.0).abs() < 1e-9, "{waits:?}");
        assert!((waits[6] - 2.0).abs() < 1e-9, "{waits:?}");
        // A minute's reads never exceed the quota plus the burst.
        let mut pacer = read_pacer();
        let within_a_minute = (0..200)
            .map(|_| pacer.reserve(start))
            .filter(|w| w.as_secs_f64() < 60.0)
            .count();
        assert!(within_a_minute as f64 <= READS_PER_MINUTE + READ_BURST);
    }

    #[test]
    fn a_page_skips_entries_it_cannot_read() {
        let reply = json!({
            "entries": [entry("a"), {"jsonPayload": {}}, entry("b")],
            "nextPageToken": "t",
        });
        let page = read_page(&reply);
        let objects: Vec<&str> = page.failures.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(objects, ["a", "b"]);
        assert_eq!(page.next_page_token.as_deref(), Some("t"));
        assert_eq!(read_page(&json!({})), LogPage::default());
    }
}
