//! `TransferService` over the STS v1 REST API (reqwest). Listing is filtered
//! server-side and paged at 256; 429, 5xx and network errors are retried with
//! exponential backoff and full jitter; calls are paced under the quotas.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::pacing::{Pacer, Quota};
use super::wire::{operation_from_envelope, MAX_PAGE_SIZE};
use super::{JobFilter, OperationFilter, TransferError, TransferService};
use crate::auth::GoogleAuth;
use crate::model::{OperationStatus, TransferJob, TransferOperation};

pub const EMULATOR_HOST_VARIABLE: &str = "STORAGE_TRANSFER_EMULATOR_HOST";
const GOOGLE_ENDPOINT: &str = "https://storagetransfer.googleapis.com";

/// How hard to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// No new attempt starts once this much time has gone into one call.
    pub max_total: Duration,
    /// Per attempt: an endpoint that accepts connections and never answers
    /// costs at most `request_timeout`.
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_total: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A number in [0, 1) that differs between calls and processes: enough
/// randomness to spread retries, with no RNG dependency.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl RetryPolicy {
    /// Full jitter: a random wait up to the exponential bound.
    fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .first_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        bound.mul_f64(jitter())
    }
}

pub struct StsClient {
    http: reqwest::Client,
    endpoint: String,
    auth: GoogleAuth,
    retry: RetryPolicy,
    pacer: Option<Pacer>,
    /// Where buckets are looked up (the Cloud Storage JSON API) and with
    /// which credentials; `None` when that cannot be told (an STS emulator
    /// without a Cloud Storage one).
    storage: Option<(String, GoogleAuth)>,
}

pub const STORAGE_EMULATOR_VARIABLE: &str = "STORAGE_EMULATOR_HOST";
const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl StsClient {
    pub fn new(
        endpoint: impl Into<String>,
        auth: GoogleAuth,
        retry: RetryPolicy,
    ) -> Result<Self, TransferError> {
        let http = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.connect_timeout)
            .build()
            .map_err(|e| TransferError::Malformed(format!("cannot build the HTTP client: {e}")))?;
        Ok(StsClient {
            http,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            auth,
            retry,
            pacer: Some(Pacer::default()),
            storage: None,
        })
    }

    /// Looks buckets up at `endpoint` (the Cloud Storage JSON API).
    pub fn with_storage(mut self, endpoint: impl Into<String>, auth: GoogleAuth) -> Self {
        self.storage = Some((endpoint.into().trim_end_matches('/').to_string(), auth));
        self
    }

    /// Google's endpoint with Application Default Credentials, or plain HTTP
    /// to `STORAGE_TRANSFER_EMULATOR_HOST` with none.
    pub fn from_environment() -> Result<Self, TransferError> {
        let (endpoint, auth) =
            crate::auth::endpoint_and_auth(EMULATOR_HOST_VARIABLE, GOOGLE_ENDPOINT)?;
        let emulated = endpoint != GOOGLE_ENDPOINT;
        let client = StsClient::new(endpoint, auth, RetryPolicy::default())?;
        let storage_emulated =
            std::env::var(STORAGE_EMULATOR_VARIABLE).is_ok_and(|h| !h.is_empty());
        // Against an STS emulator, real Cloud Storage is not the truth.
        if emulated && !storage_emulated {
            return Ok(client);
        }
        let (storage, storage_auth) =
            crate::auth::endpoint_and_auth(STORAGE_EMULATOR_VARIABLE, STORAGE_ENDPOINT)?;
        Ok(client.with_storage(storage, storage_auth))
    }

    /// No quota pacing: for emulators and tests, where quotas do not apply.
    pub fn without_pacing(mut self) -> Self {
        self.pacer = None;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One API call with pacing and retries; returns the JSON body.
    async fn call(
        &self,
        quota: Quota,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, TransferError> {
        let url = format!("{}/v1/{}", self.endpoint, path);
        let mut last = String::new();
        let began = std::time::Instant::now();
        let mut attempts = 0;
        for attempt in 0..self.retry.attempts {
            if attempt > 0 {
                let wait = self.retry.backoff(attempt - 1);
                if began.elapsed() + wait >= self.retry.max_total {
                    break;
                }
                // The first retry is routine; from the second on, say so.
                if attempt >= 2 {
                    tracing::warn!(
                        attempt = attempt + 1,
                        of = self.retry.attempts,
                        wait_ms = wait.as_millis() as u64,
                        "Storage Transfer Service call {method} {path} failed ({last}); retrying"
                    );
                } else {
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        "retrying {method} {path}: {last}"
                    );
                }
                tokio::time::sleep(wait).await;
            }
            attempts = attempt + 1;
            if let Some(pacer) = &self.pacer {
                pacer.wait(quota).await;
            }
            let mut request = self.http.request(method.clone(), &url).query(query);
            if let Some(authorization) = self.auth.authorization().await? {
                request = request.header(reqwest::header::AUTHORIZATION, authorization);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    // Never the URL with its query only: no secret is in it,
                    // but keep messages short and stable.
                    last = format!("{method} {path}: {}", e.without_url());
                    continue;
                }
                Err(e) => return Err(TransferError::Malformed(e.without_url().to_string())),
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(json!({}));
                }
                return serde_json::from_str(&text)
                    .map_err(|e| TransferError::Malformed(format!("{method} {path}: {e}")));
            }
            let (rpc_status, message) = rpc_error(&text, status);
            if is_transient(status) {
                last = format!("{} {rpc_status}: {message}", status.as_u16());
                continue;
            }
            return Err(match (status.as_u16(), rpc_status.as_str()) {
                (409, _) | (_, "ALREADY_EXISTS") => TransferError::AlreadyExists(message),
                (404, _) => TransferError::NotFound(message),
                (_, "FAILED_PRECONDITION") => TransferError::FailedPrecondition(message),
                (400, _) => TransferError::InvalidArgument(message),
                (401 | 403, _) => TransferError::PermissionDenied(message),
                (http, _) => TransferError::Api {
                    http,
                    status: rpc_status,
                    message,
                },
            });
        }
        Err(TransferError::Unavailable {
            attempts,
            seconds: began.elapsed().as_secs(),
            last,
        })
    }

    /// Follows `nextPageToken` until the last page; returns every item of `field`.
    async fn list_all(
        &self,
        path: &str,
        query: Vec<(&str, String)>,
        field: &str,
    ) -> Result<Vec<Value>, TransferError> {
        let mut items = Vec::new();
        self.list_pages(path, query, field, None, &mut |page| {
            items.extend(page);
            Ok(())
        })
        .await?;
        Ok(items)
    }

    /// Every page of a listing, each handed to `visit` as it arrives.
    async fn list_pages(
        &self,
        path: &str,
        query: Vec<(&str, String)>,
        field: &str,
        limit: Option<usize>,
        visit: &mut (dyn FnMut(Vec<Value>) -> Result<(), TransferError> + Send),
    ) -> Result<(), TransferError> {
        let mut token = String::new();
        let mut seen = std::collections::HashSet::new();
        let mut listed = 0usize;
        let page_size = limit.map_or(MAX_PAGE_SIZE, |l| l.clamp(1, MAX_PAGE_SIZE));
        loop {
            let mut page_query = query.clone();
            page_query.push(("pageSize", page_size.to_string()));
            if !token.is_empty() {
                page_query.push(("pageToken", token.clone()));
            }
            let mut page = self
                .call(Quota::Read, Method::GET, path, &page_query, None)
                .await?;
            let next = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(Value::Array(found)) = page.get_mut(field).map(Value::take) {
                listed += found.len();
                visit(found)?;
            }
            if next.is_empty() || limit.is_some_and(|l| listed >= l) {
                return Ok(());
            }
            // A server that hands the same token back would be listed forever.
            if !seen.insert(next.clone()) {
                return Err(TransferError::Malformed(format!(
                    "listing {path} returned page token '{next}' a second time; stopping \
                     instead of listing the same pages forever"
                )));
            }
            token = next;
        }
    }
}

/// The google.rpc status and message of an error body (or the HTTP reason).
fn rpc_error(text: &str, status: StatusCode) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let rpc_status = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| super::wire::status_name(status.as_u16()).to_string());
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    (rpc_status, message)
}

fn operation_filter(filter: &OperationFilter) -> Value {
    let mut f = json!({ "projectId": filter.project_id });
    if !filter.job_names.is_empty() {
        f["jobNames"] = json!(filter.job_names);
    }
    if !filter.operation_names.is_empty() {
        f["operationNames"] = json!(filter.operation_names);
    }
    if let Some(t) = filter.min_creation_time {
        f["minCreationTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some(pattern) = &filter.job_name_pattern {
        f["jobNamePattern"] = json!(pattern);
    }
    // Only the statuses the filter's documentation lists are sent; with any
    // other (QUEUED, SUSPENDING) the statuses are checked on our side.
    if !filter.statuses.is_empty() && filter.statuses.iter().all(OperationStatus::filterable) {
        f["transferStatuses"] = json!(filter.statuses.iter().map(|s| s.name()).collect::<Vec<_>>());
    }
    f
}

#[async_trait]
impl TransferService for StsClient {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError> {
        let mut operations = Vec::new();
        self.scan_operations(filter, &mut |page| operations.extend(page))
            .await?;
        Ok(operations)
    }

    async fn scan_operations(
        &self,
        filter: &OperationFilter,
        visit: &mut (dyn FnMut(Vec<TransferOperation>) + Send),
    ) -> Result<(), TransferError> {
        // `name` (`transferOperations`) is the path, not a query parameter.
        let query = vec![("filter", operation_filter(filter).to_string())];
        let limit = filter.limit;
        let mut kept = 0usize;
        self.list_pages(
            "transferOperations",
            query,
            "operations",
            limit,
            &mut |page| {
                let mut operations = page
                    .iter()
                    .map(|e| operation_from_envelope(e).map_err(TransferError::Malformed))
                    .collect::<Result<Vec<_>, _>>()?;
                operations.retain(|op| {
                    filter.statuses.is_empty() || filter.statuses.contains(&op.status)
                });
                if let Some(limit) = limit {
                    operations.truncate(limit.saturating_sub(kept));
                }
                kept += operations.len();
                visit(operations);
                Ok(())
            },
        )
        .await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<TransferJob>, TransferError> {
        let mut f = json!({ "projectId": filter.project_id });
        if !filter.statuses.is_empty() {
            f["jobStatuses"] = json!(filter.statuses.iter().map(|s| s.name()).collect::<Vec<_>>());
        }
        if !filter.job_names.is_empty() {
            f["jobNames"] = json!(filter.job_names);
        }
        if let Some(bucket) = &filter.source_bucket {
            f["sourceBucket"] = json!(bucket);
        }
        if let Some(bucket) = &filter.sink_bucket {
            f["sinkBucket"] = json!(bucket);
        }
        let jobs = self
            .list_all(
                "transferJobs",
                vec![("filter", f.to_string())],
                "transferJobs",
            )
            .await?;
        jobs.into_iter()
            .map(|j| {
                serde_json::from_value(j)
                    .map_err(|e| TransferError::Malformed(format!("TransferJob: {e}")))
            })
            .collect()
    }

    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError> {
        let body =
            serde_json::to_value(job).map_err(|e| TransferError::Malformed(e.to_string()))?;
        let created = self
            .call(
                Quota::Create,
                Method::POST,
                "transferJobs",
                &[],
                Some(&body),
            )
            .await?;
        serde_json::from_value(created)
            .map_err(|e| TransferError::Malformed(format!("TransferJob: {e}")))
    }

    async fn get_job(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<TransferJob, TransferError> {
        let job = self
            .call(
                Quota::Read,
                Method::GET,
                job_name,
                &[("projectId", project_id.to_string())],
                None,
            )
            .await?;
        serde_json::from_value(job)
            .map_err(|e| TransferError::Malformed(format!("TransferJob: {e}")))
    }

    async fn run_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        self.run_job_for_operation(job_name, project_id)
            .await
            .map(|_| ())
    }

    async fn run_job_for_operation(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<Option<String>, TransferError> {
        let body = json!({ "projectId": project_id });
        // transferJobs.run is in no quota group: paced on its own, so a
        // start spends one token of the update budget (its patch), not two.
        let operation = self
            .call(
                Quota::Run,
                Method::POST,
                &format!("{job_name}:run"),
                &[],
                Some(&body),
            )
            .await?;
        Ok(operation
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with("transferOperations/"))
            .map(str::to_owned))
    }

    async fn patch_transfer_spec(
        &self,
        job_name: &str,
        project_id: &str,
        spec: &crate::model::TransferSpec,
    ) -> Result<(), TransferError> {
        let spec =
            serde_json::to_value(spec).map_err(|e| TransferError::Malformed(e.to_string()))?;
        let body = json!({
            "projectId": project_id,
            "transferJob": { "transferSpec": spec },
            "updateTransferJobFieldMask": "transfer_spec",
        });
        self.call(Quota::Update, Method::PATCH, job_name, &[], Some(&body))
            .await
            .map(|_| ())
    }

    async fn delete_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        // As the original: a patch to DELETED (the job stays listable as
        // deleted). Every patch counts as an update, this one too.
        let body = json!({
            "projectId": project_id,
            "transferJob": { "status": "DELETED" },
            "updateTransferJobFieldMask": "status",
        });
        self.call(Quota::Update, Method::PATCH, job_name, &[], Some(&body))
            .await
            .map(|_| ())
    }

    async fn pause_operation(&self, name: &str) -> Result<(), TransferError> {
        self.call(
            Quota::Control,
            Method::POST,
            &format!("{name}:pause"),
            &[],
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    async fn resume_operation(&self, name: &str) -> Result<(), TransferError> {
        self.call(
            Quota::Control,
            Method::POST,
            &format!("{name}:resume"),
            &[],
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    async fn service_account(&self, project_id: &str) -> Result<String, TransferError> {
        let account = self
            .call(
                Quota::Read,
                Method::GET,
                &format!("googleServiceAccounts/{project_id}"),
                &[],
                None,
            )
            .await?;
        account
            .get("accountEmail")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                TransferError::Malformed("googleServiceAccounts.get gave no accountEmail".into())
            })
    }

    /// `GET /storage/v1/b/{bucket}`: 200 exists, 404 does not, anything
    /// else (403: the caller may not look) cannot tell.
    async fn bucket_exists(&self, bucket: &str) -> Result<Option<bool>, TransferError> {
        let Some((endpoint, auth)) = &self.storage else {
            return Ok(None);
        };
        let url = format!("{endpoint}/storage/v1/b/{}", url_segment(bucket));
        let mut request = self.http.get(&url).query(&[("fields", "name")]);
        if let Some(authorization) = auth.authorization().await? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(Some(true)),
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Ok(Some(false)),
            Ok(r) => {
                tracing::info!(
                    bucket,
                    status = r.status().as_u16(),
                    "cannot check whether the bucket exists; the transfer will tell"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::info!(
                    bucket,
                    "cannot check whether the bucket exists ({}); the transfer will tell",
                    e.without_url()
                );
                Ok(None)
            }
        }
    }

    async fn cancel_operation(&self, name: &str) -> Result<(), TransferError> {
        self.call(
            Quota::Control,
            Method::POST,
            &format!("{name}:cancel"),
            &[],
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }
}

/// A bucket name as one URL path segment.
fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
