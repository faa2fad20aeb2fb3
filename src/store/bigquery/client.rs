//! The BigQuery REST calls the store makes, through gcp-bigquery-client:
//! endpoint and credentials, retries with backoff, typed errors, and the
//! quirks bqemulator has (errors in a 200 body) handled so that the same code
//! works on both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::data_format_options::DataFormatOptions;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::error_proto::ErrorProto;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_row::TableRow;
use gcp_bigquery_client::Client;
use tokio::sync::OnceCell;

use super::super::StoreError;
use crate::auth::GoogleAuth;
use crate::http::{self, Failure, Idempotency};

/// The public endpoint, used when no emulator is named.
pub const BIGQUERY_URL: &str = "https://bigquery.googleapis.com/bigquery/v2";
/// Error reasons BigQuery documents as worth retrying after a pause.
const TRANSIENT_REASONS: &[&str] = &[
    "backendError",
    "internalError",
    "rateLimitExceeded",
    "jobRateLimitExceeded",
    "quotaExceeded",
];
/// BigQuery's policy (moved to [`crate::http`]); its request timeout bounds
/// each whole call: no single call may hang the manager, past it the call
/// counts as unreachable (and is retried).
pub use crate::http::RetryPolicy;

/// gcp-bigquery-client asks for a bare token; google-cloud-auth caches and
/// refreshes it. Anonymous (emulator) gives an empty one.
#[derive(Clone)]
struct TokenSource(GoogleAuth);

#[async_trait]
impl Authenticator for TokenSource {
    async fn access_token(&self) -> Result<String, BQError> {
        match self.0.authorization().await {
            Ok(Some(header)) => Ok(header
                .strip_prefix("Bearer ")
                .map(str::to_owned)
                .unwrap_or(header)),
            Ok(None) => Ok(String::new()),
            // The real cause is reported by `Api::check_auth` before each call.
            Err(_) => Err(BQError::NoToken),
        }
    }
}

/// Rows of a finished query, cells as BigQuery's JSON (`f[].v`).
#[derive(Debug, Default)]
pub struct QueryOutput {
    pub rows: Vec<Vec<serde_json::Value>>,
    pub affected_rows: Option<u64>,
}

pub struct Api {
    base_url: String,
    auth: GoogleAuth,
    pub project: String,
    client: OnceCell<Client>,
    retry: RetryPolicy,
    requests: AtomicU64,
}

impl Api {
    /// Nothing is sent until the first call.
    pub fn new(base_url: String, auth: GoogleAuth, project: String) -> Self {
        Api {
            base_url,
            auth,
            project,
            client: OnceCell::new(),
            retry: RetryPolicy::bigquery(),
            requests: AtomicU64::new(0),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.base_url
    }

    /// HTTP requests sent so far (retries and pages included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<&Client, StoreError> {
        self.client
            .get_or_try_init(|| async {
                ClientBuilder::new()
                    .with_v2_base_url(self.base_url.clone())
                    .build_from_authenticator(Arc::new(TokenSource(self.auth.clone())))
                    .await
                    .map_err(|e| self.error(e))
            })
            .await
    }

    /// Surfaces a credentials problem as itself rather than "no token".
    async fn check_auth(&self) -> Result<(), StoreError> {
        self.auth
            .authorization()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Auth(e.to_string()))
    }

    /// Runs `call` until it succeeds, fails permanently, or the policy is
    /// spent. Every call the store makes may be repeated: statements carry
    /// a request id, creates treat 409 as done, deletes 404.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let timeout = self.retry.request_timeout;
        let outcome = http::retry(
            &self.retry,
            Idempotency::Safe,
            failure,
            |retry| {
                let (e, delay) = (retry.last, retry.wait);
                tracing::warn!("BigQuery {what} failed ({e}); retrying in {delay:?}");
            },
            || {
                let attempt = call();
                async move {
                    self.check_auth().await?;
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    match tokio::time::timeout(timeout, attempt).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(StoreError::Unreachable {
                            endpoint: self.base_url.clone(),
                            message: format!("no answer within {} s", timeout.as_secs()),
                        }),
                    }
                }
            },
        )
        .await;
        outcome.map_err(|gave_up| {
            if gave_up.exhausted {
                StoreError::RetriesExhausted {
                    attempts: gave_up.attempts,
                    last: Box::new(gave_up.last),
                }
            } else {
                gave_up.last
            }
        })
    }

    fn error(&self, e: BQError) -> StoreError {
        from_client_error(e, &self.base_url)
    }

    /// Runs one GoogleSQL statement with named parameters and returns every
    /// row (all pages). One request id for all attempts, so BigQuery runs a
    /// retried statement at most once.
    pub async fn query(
        &self,
        sql: &str,
        parameters: Vec<QueryParameter>,
    ) -> Result<QueryOutput, StoreError> {
        crate::store::crash::on_bigquery_statement(sql);
        let mut rows = Vec::new();
        let affected_rows = self
            .query_pages(sql, parameters, &mut |page| {
                rows.extend(page);
                Ok(())
            })
            .await?;
        Ok(QueryOutput {
            rows,
            affected_rows,
        })
    }

    /// [`Api::query`] with each page of rows handed to `visit` as it
    /// arrives, so a caller folding the rows (a timeline over a million
    /// history rows) holds one page, not the result. Returns the rows a DML
    /// statement affected.
    pub async fn query_pages(
        &self,
        sql: &str,
        parameters: Vec<QueryParameter>,
        visit: &mut (dyn FnMut(Vec<Vec<serde_json::Value>>) -> Result<(), StoreError> + Send),
    ) -> Result<Option<u64>, StoreError> {
        let mut request = QueryRequest::new(sql);
        request.parameter_mode = Some("NAMED".into());
        request.query_parameters = Some(parameters);
        // One id for every attempt, so a retried statement runs at most once;
        // a new one only after a concurrency abort (that attempt ran nothing,
        // and its id would replay the abort).
        let current_id = std::sync::Mutex::new(request_id());
        // bqemulator always answers int64 microseconds; ask BigQuery for the same.
        request.format_options = Some(DataFormatOptions {
            use_int64_timestamp: Some(true),
        });
        request.timeout_ms = Some(30_000);
        let response = self
            .retrying("query", || async {
                let mut attempt = request.clone();
                attempt.request_id = Some(lock(&current_id).clone());
                let client = self.client().await?;
                let answered = client
                    .job()
                    .query(&self.project, attempt)
                    .await
                    .map_err(|e| self.error(e))
                    .and_then(|r| statement_errors(r.errors.as_deref()).map(|()| r));
                if answered.as_ref().is_err_and(is_concurrent_update) {
                    *lock(&current_id) = request_id();
                }
                answered
            })
            .await?;
        let mut affected_rows = response
            .num_dml_affected_rows
            .as_deref()
            .and_then(|n| n.parse().ok());
        visit(page_rows(response.rows))?;
        let (mut complete, mut page_token) =
            (response.job_complete.unwrap_or(true), response.page_token);
        let job = response.job_reference.unwrap_or_default();
        // A server that hands a page token back twice would be read forever.
        let mut seen_tokens = std::collections::HashSet::new();
        // Results not ready yet, or more pages: follow the job.
        while !complete || page_token.is_some() {
            if let Some(token) = page_token.as_ref().filter(|_| complete) {
                if !seen_tokens.insert(token.clone()) {
                    return Err(StoreError::Api {
                        code: 0,
                        reason: "invalidResponse".into(),
                        message: format!(
                            "query results returned page token '{token}' a second time; \
                             stopping instead of reading the same pages forever"
                        ),
                    });
                }
            }
            let Some(job_id) = job.job_id.as_deref() else {
                return Err(StoreError::Api {
                    code: 0,
                    reason: "invalidResponse".into(),
                    message: "query answered without a job id to follow".into(),
                });
            };
            // No format options here: the client sends these parameters as a
            // query string, which cannot hold the nested object.
            let parameters = GetQueryResultsParameters {
                location: job.location.clone(),
                page_token: page_token.clone(),
                timeout_ms: Some(30_000),
                ..GetQueryResultsParameters::default()
            };
            let page = self
                .retrying("query results", || async {
                    let client = self.client().await?;
                    let page = client
                        .job()
                        .get_query_results(&self.project, job_id, parameters.clone())
                        .await
                        .map_err(|e| self.error(e))?;
                    statement_errors(page.errors.as_deref())?;
                    Ok(page)
                })
                .await?;
            complete = page.job_complete.unwrap_or(true);
            if !complete {
                continue;
            }
            if affected_rows.is_none() {
                affected_rows = page
                    .num_dml_affected_rows
                    .as_deref()
                    .and_then(|n| n.parse().ok());
            }
            visit(page_rows(page.rows))?;
            page_token = page.page_token;
        }
        Ok(affected_rows)
    }

    /// Creates the dataset unless it exists (an existing one is left alone).
    pub async fn ensure_dataset(&self, dataset: &str, location: &str) -> Result<bool, StoreError> {
        let exists = self
            .retrying("datasets.get", || async {
                let client = self.client().await?;
                match client.dataset().get(&self.project, dataset).await {
                    Ok(_) => Ok(true),
                    Err(e) => match self.error(e) {
                        StoreError::Api { code: 404, .. } => Ok(false),
                        other => Err(other),
                    },
                }
            })
            .await?;
        if exists {
            return Ok(false);
        }
        self.retrying("datasets.insert", || async {
            let client = self.client().await?;
            let body = Dataset::new(&self.project, dataset).location(location);
            match client.dataset().create(body).await {
                Ok(_) => Ok(true),
                // Created by someone else meanwhile: fine.
                Err(e) => match self.error(e) {
                    StoreError::Api { code: 409, .. } => Ok(false),
                    other => Err(other),
                },
            }
        })
        .await
    }

    /// Creates the table unless it exists (an existing one is left alone).
    pub async fn ensure_table(&self, table: Table) -> Result<bool, StoreError> {
        let reference = &table.table_reference;
        let (dataset, table_id) = (&reference.dataset_id, &reference.table_id);
        match self.get_table(dataset, table_id).await {
            Ok(_) => return Ok(false),
            Err(StoreError::Api { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        self.retrying("tables.insert", || async {
            let client = self.client().await?;
            match client.table().create(table.clone()).await {
                Ok(_) => Ok(true),
                Err(e) => match self.error(e) {
                    StoreError::Api { code: 409, .. } => Ok(false),
                    other => Err(other),
                },
            }
        })
        .await
    }

    pub async fn delete_table(&self, table: &super::sql::TableName) -> Result<(), StoreError> {
        self.retrying("tables.delete", || async {
            let client = self.client().await?;
            match client
                .table()
                .delete(&table.project, &table.dataset, &table.table)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => match self.error(e) {
                    StoreError::Api { code: 404, .. } => Ok(()),
                    other => Err(other),
                },
            }
        })
        .await
    }

    pub async fn get_table(&self, dataset: &str, table: &str) -> Result<Table, StoreError> {
        self.retrying("tables.get", || async {
            let client = self.client().await?;
            client
                .table()
                .get(&self.project, dataset, table, None)
                .await
                .map_err(|e| self.error(e))
        })
        .await
    }
}

fn page_rows(rows: Option<Vec<TableRow>>) -> Vec<Vec<serde_json::Value>> {
    rows.unwrap_or_default()
        .into_iter()
        .map(|row| {
            row.columns
                .unwrap_or_default()
                .into_iter()
                .map(|cell| cell.value.unwrap_or(serde_json::Value::Null))
                .collect()
        })
        .collect()
}

/// bqemulator reports a failed statement as HTTP 200 with `errors`; BigQuery
/// as an HTTP error. Both become `StoreError::Statement`.
fn statement_errors(errors: Option<&[ErrorProto]>) -> Result<(), StoreError> {
    match errors.and_then(|e| e.first()) {
        None => Ok(()),
        Some(first) => Err(StoreError::Statement {
            reason: first.reason.clone().unwrap_or_default(),
            message: first.message.clone().unwrap_or_default(),
        }),
    }
}

/// Client errors as typed store errors. Messages carry no credentials: the
/// client never puts the token in an error.
pub fn from_client_error(e: BQError, endpoint: &str) -> StoreError {
    match e {
        BQError::ResponseError { error } => StoreError::Api {
            code: u16::try_from(error.error.code).unwrap_or(0),
            reason: error
                .error
                .errors
                .iter()
                .find_map(|e| e.get("reason").cloned())
                .unwrap_or(error.error.status),
            message: error.error.message,
        },
        BQError::RequestError(e) if e.is_connect() || e.is_timeout() => StoreError::Unreachable {
            endpoint: endpoint.to_string(),
            message: error_chain(&e),
        },
        // A body that is not BigQuery's JSON error (a proxy's 502 page, say).
        BQError::RequestError(e) => StoreError::Api {
            code: e.status().map_or(0, |s| s.as_u16()),
            reason: if e.is_decode() {
                "invalidResponse".into()
            } else {
                "request".into()
            },
            message: error_chain(&e),
        },
        BQError::NoToken => StoreError::Auth("no access token".into()),
        other => StoreError::Api {
            code: 0,
            reason: "client".into(),
            message: other.to_string(),
        },
    }
}

/// reqwest's own message ("error sending request") hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// BigQuery aborts one of two DML statements racing on a table ("Could not
/// serialize access to table ... due to concurrent update", reason
/// `invalidQuery`); run again, it sees the winner's result.
pub fn is_concurrent_update(e: &StoreError) -> bool {
    match e {
        StoreError::Api { message, .. } | StoreError::Statement { message, .. } => {
            message.contains("due to concurrent update")
        }
        _ => false,
    }
}

/// How a call failed, for [`http::retryable`]: BigQuery's own transient
/// reasons, a concurrency abort and bodies that could not be read (often a
/// 5xx from something in between) on top of the HTTP status.
fn failure(e: &StoreError) -> Failure {
    if is_concurrent_update(e) {
        return Failure::Transient;
    }
    match e {
        StoreError::Api { reason, .. }
            if TRANSIENT_REASONS.contains(&reason.as_str()) || reason == "invalidResponse" =>
        {
            Failure::Transient
        }
        StoreError::Api { code, .. } => Failure::Status(*code),
        StoreError::Statement { reason, .. } if TRANSIENT_REASONS.contains(&reason.as_str()) => {
            Failure::Transient
        }
        StoreError::Unreachable { .. } => Failure::NoAnswer,
        _ => Failure::Permanent,
    }
}

/// Worth another attempt: 429, 500/502/503/504, rate and quota limits, the
/// network, and bodies that could not be read.
pub fn is_transient(e: &StoreError) -> bool {
    http::retryable(failure(e), Idempotency::Safe)
}

/// Unique per statement: BigQuery de-duplicates `jobs.query` by request id,
/// which its QueryRequest limits to 36 ASCII characters (a UUID is
/// recommended). UUID-shaped, from 128 bits that no two statements share:
/// the time in nanoseconds (64), the process (32) and a counter (32).
fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos()) as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u32;
    let bits =
        (u128::from(nanos) << 64) | (u128::from(std::process::id()) << 32) | u128::from(count);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A BigQuery whose result pages cycle: the query answers token A, A's
    /// page B, B's page A again.
    async fn cycling_bigquery() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let read = socket.read(&mut buffer).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buffer[..read]);
                    let line = request.lines().next().unwrap_or_default();
                    let next = if line.contains("pageToken=A") {
                        "B"
                    } else {
                        "A"
                    };
                    let body = format!(
                        r#"{{"kind":"bigquery#queryResponse","jobComplete":true,"jobReference":{{"projectId":"p","jobId":"j","location":"US"}},"schema":{{"fields":[{{"name":"x","type":"STRING"}}]}},"rows":[],"totalRows":"0","pageToken":"{next}"}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/bigquery/v2")
    }

    #[tokio::test]
    async fn a_page_token_cycle_in_query_results_is_an_error_not_a_loop() {
        let api = Api::new(
            cycling_bigquery().await,
            GoogleAuth::anonymous(),
            "p".into(),
        );
        let error = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            api.query("SELECT 'x' AS x", vec![]),
        )
        .await
        .expect("reading stops")
        .unwrap_err();
        assert!(
            error.to_string().contains("page token 'A' a second time"),
            "{error}"
        );
    }

    fn api(code: u16, reason: &str) -> StoreError {
        StoreError::Api {
            code,
            reason: reason.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn quota_rate_limits_and_5xx_are_retried_other_errors_are_not() {
        assert!(is_transient(&api(403, "rateLimitExceeded")));
        assert!(is_transient(&api(403, "quotaExceeded")));
        assert!(is_transient(&api(429, "")));
        assert!(is_transient(&api(503, "backendError")));
        assert!(is_transient(&StoreError::Unreachable {
            endpoint: "e".into(),
            message: "m".into()
        }));
        assert!(!is_transient(&api(400, "invalidQuery")));
        assert!(is_transient(&StoreError::Api {
            code: 400,
            reason: "invalidQuery".into(),
            message: "Could not serialize access to table p:d.t due to concurrent update".into(),
        }));
        assert!(!is_transient(&api(404, "notFound")));
        assert!(!is_transient(&api(403, "accessDenied")));
        assert!(!is_transient(&StoreError::Statement {
            reason: "invalidQuery".into(),
            message: "m".into()
        }));
        assert!(is_transient(&StoreError::Statement {
            reason: "backendError".into(),
            message: "m".into()
        }));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::bigquery();
        assert_eq!(policy.bound(0), Duration::from_millis(500));
        assert_eq!(policy.bound(1), Duration::from_secs(1));
        assert_eq!(policy.bound(3), Duration::from_secs(4));
        assert_eq!(policy.bound(10), Duration::from_secs(20));
        assert_eq!(policy.bound(40), Duration::from_secs(20));
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(request_id(), request_id());
        // QueryRequest.requestId: "limited to up to 36 ASCII characters".
        let id = request_id();
        assert!(id.len() <= 36 && id.is_ascii(), "{id}");
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_retried_then_reported() {
        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let api = Api::new(
            format!("http://127.0.0.1:{port}/bigquery/v2"),
            GoogleAuth::anonymous(),
            "test-project".into(),
        )
        .with_retry(RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::bigquery()
        });
        let err = api.query("SELECT 1", vec![]).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::RetriesExhausted { attempts: 3, last }
                if matches!(**last, StoreError::Unreachable { .. })),
            "{err}"
        );
        assert_eq!(api.requests(), 3);
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
