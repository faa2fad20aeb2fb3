//! `TransferService` over the STS v1 REST API (reqwest). Listing is filtered
//! server-side and paged at 256; calls are retried under
//! [`crate::http::RetryPolicy`]'s default (429, 500, 502, 503, 504 and the
//! network, with exponential backoff and full jitter) and paced under the quotas.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::pacing::{Pacer, Quota};
use super::wire::{operation_from_envelope, MAX_PAGE_SIZE};
use super::{JobFilter, OperationFilter, TransferError, TransferService};
use crate::auth::GoogleAuth;
use crate::http::{self, Failed, Failure, Idempotency};
use crate::model::{OperationStatus, TransferJob, TransferOperation};

pub const EMULATOR_HOST_VARIABLE: &str = "STORAGE_TRANSFER_EMULATOR_HOST";
const GOOGLE_ENDPOINT: &str = "https://storagetransfer.googleapis.com";

/// STS's policy is the shared one's default (moved to [`crate::http`]).
pub use crate::http::RetryPolicy;

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

impl StsClient {
    pub fn new(
        endpoint: impl Into<String>,
        auth: GoogleAuth,
        retry: RetryPolicy,
    ) -> Result<Self, TransferError> {
        let http = retry
            .http_client()
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
        // Every STS call may be repeated: a job is created under its name
        // (a repeat answers ALREADY_EXISTS), a run of a job whose operation
        // is under way is refused, and patches, pauses, resumes and cancels
        // set a state.
        let outcome = http::retry(
            &self.retry,
            Idempotency::Safe,
            |failed: &Failed<TransferError>| failed.failure,
            |retry| {
                let last = &retry.last.last;
                let wait_ms = retry.wait.as_millis() as u64;
                // The first retry is routine; from the second on, say so.
                if retry.retry >= 2 {
                    tracing::warn!(
                        attempt = retry.retry + 1,
                        of = retry.attempts,
                        wait_ms,
                        "Storage Transfer Service call {method} {path} failed ({last}); retrying"
                    );
                } else {
                    tracing::debug!(wait_ms, "retrying {method} {path}: {last}");
                }
            },
            || self.attempt(quota, &method, &url, path, query, body),
        )
        .await;
        outcome.map_err(|gave_up| {
            gave_up.into_error(|attempts, elapsed, last| TransferError::Unavailable {
                attempts,
                seconds: elapsed.as_secs(),
                last,
            })
        })
    }

    /// One attempt of [`StsClient::call`].
    async fn attempt(
        &self,
        quota: Quota,
        method: &Method,
        url: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Failed<TransferError>> {
        let permanent = Failed::permanent;
        if let Some(pacer) = &self.pacer {
            pacer.wait(quota).await;
        }
        let mut request = self.http.request(method.clone(), url).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let request = self
            .auth
            .authorize(request)
            .await
            .map_err(|e| permanent(e.into()))?;
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let what = format!("{method} {path}");
                return Err(Failed::unanswered(e, &what)
                    .unwrap_or_else(|e| permanent(TransferError::Malformed(e.to_string()))));
            }
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failed::unread_body(e, &format!("{method} {path}")))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(json!({}));
            }
            return serde_json::from_str(&text)
                .map_err(|e| permanent(TransferError::Malformed(format!("{method} {path}: {e}"))));
        }
        let (rpc_status, message) = rpc_error(&text, status);
        let last = format!("{} {rpc_status}: {message}", status.as_u16());
        let error = match (status.as_u16(), rpc_status.as_str()) {
            (409, _) | (_, "ALREADY_EXISTS") => TransferError::AlreadyExists(message),
            (404, _) => TransferError::NotFound(message),
            (_, "FAILED_PRECONDITION") => TransferError::FailedPrecondition(message),
            (400, _) => TransferError::InvalidArgument(message),
            (401, _) => TransferError::Unauthenticated(message),
            (403, _) => TransferError::PermissionDenied(message),
            (http, _) => TransferError::Api {
                http,
                status: rpc_status,
                message,
            },
        };
        Err(Failed {
            failure: Failure::Status(status.as_u16()),
            last,
            answer: Some(error),
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
        logging: Option<&crate::model::LoggingConfig>,
    ) -> Result<(), TransferError> {
        let spec =
            serde_json::to_value(spec).map_err(|e| TransferError::Malformed(e.to_string()))?;
        let mut job = json!({ "transferSpec": spec });
        if let Some(logging) = logging {
            job["loggingConfig"] = serde_json::to_value(logging)
                .map_err(|e| TransferError::Malformed(e.to_string()))?;
        }
        // A field in the mask but not in the body is cleared: logging off.
        let body = json!({
            "projectId": project_id,
            "transferJob": job,
            "updateTransferJobFieldMask": "transfer_spec,logging_config",
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
        let request = auth
            .authorize(self.http.get(&url).query(&[("fields", "name")]))
            .await?;
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
