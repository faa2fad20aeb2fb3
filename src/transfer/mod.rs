//! The transfer service the manager drives. The manager sees only this trait;
//! `local` runs jobs on directories, and a REST client for Google's STS
//! implements the same calls.

pub mod local;
pub mod logs;
mod naming;
mod pacing;
pub mod rest;
pub mod wire;

use async_trait::async_trait;

pub use naming::{
    is_pool_job, job_name_for_prefix, pool_job_name, pool_job_prefix, validate_job_name,
};

use crate::model::{JobStatus, OperationStatus, TransferJob, TransferOperation};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("transfer engine {root}: {problem}")]
    Engine { root: String, problem: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// 401: the credentials themselves were refused (expired, revoked, for
    /// another audience), not a missing grant.
    #[error(
        "credentials refused: {0} (the token sent was not accepted: check \
         GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`)"
    )]
    Unauthenticated(String),
    /// Still failing (429, 5xx, network) after every retry.
    #[error(
        "Storage Transfer Service unavailable after {attempts} attempts over {seconds} s: {last}"
    )]
    Unavailable {
        attempts: u32,
        seconds: u64,
        last: String,
    },
    #[error("Storage Transfer Service answered {http} {status}: {message}")]
    Api {
        http: u16,
        status: String,
        message: String,
    },
    #[error("Storage Transfer Service sent a response that cannot be read: {0}")]
    Malformed(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

impl TransferError {
    /// The HTTP status STS answered (when it answered one) and the
    /// google.rpc status name of the refusal, when known.
    pub fn http_status(&self) -> (Option<u16>, Option<&str>) {
        match self {
            TransferError::Api { http, status, .. } => (Some(*http), Some(status)),
            TransferError::AlreadyExists(_) => (None, Some("ALREADY_EXISTS")),
            TransferError::NotFound(_) => (None, Some("NOT_FOUND")),
            TransferError::FailedPrecondition(_) => (None, Some("FAILED_PRECONDITION")),
            TransferError::InvalidArgument(_) => (None, Some("INVALID_ARGUMENT")),
            TransferError::PermissionDenied(_) => (None, Some("PERMISSION_DENIED")),
            TransferError::Unauthenticated(_) => (Some(401), Some("UNAUTHENTICATED")),
            _ => (None, None),
        }
    }
}

/// Server-side filter for `transferOperations.list`.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub project_id: String,
    pub job_names: Vec<String>,
    /// `*` matches any run of characters; the whole name must match.
    pub job_name_pattern: Option<String>,
    pub operation_names: Vec<String>,
    /// Operations created at or after this time only.
    pub min_creation_time: Option<chrono::DateTime<chrono::Utc>>,
    pub statuses: Vec<OperationStatus>,
    /// At most this many operations, the newest first (a job's newest
    /// operation: `limit: Some(1)`), in as few list requests as that takes.
    pub limit: Option<usize>,
}

impl OperationFilter {
    /// Whether `op` (of job `job_name`) passes the filters a backend may
    /// apply after its own query: names, pattern, creation time.
    pub fn admits(&self, op: &TransferOperation) -> bool {
        (self.job_names.is_empty() || self.job_names.contains(&op.transfer_job_name))
            && self
                .job_name_pattern
                .as_deref()
                .is_none_or(|p| glob_match(p, &op.transfer_job_name))
            && (self.operation_names.is_empty() || self.operation_names.contains(&op.name))
            && self
                .min_creation_time
                .is_none_or(|t| op.start_time.is_some_and(|s| s >= t))
            && (self.statuses.is_empty() || self.statuses.contains(&op.status))
    }
}

/// Server-side filter for `transferJobs.list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub project_id: String,
    pub statuses: Vec<JobStatus>,
    pub job_names: Vec<String>,
    pub source_bucket: Option<String>,
    pub sink_bucket: Option<String>,
}

impl JobFilter {
    pub fn admits(&self, job: &TransferJob) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&job.status))
            && (self.job_names.is_empty() || self.job_names.contains(&job.name))
            && self
                .source_bucket
                .as_deref()
                .is_none_or(|b| job.transfer_spec.source_bucket() == Some(b))
            && self
                .sink_bucket
                .as_deref()
                .is_none_or(|b| job.transfer_spec.sink_bucket() == Some(b))
    }
}

impl TransferError {
    /// The google.rpc code name of the error, as STS would report it.
    pub fn code(&self) -> &str {
        match self {
            TransferError::AlreadyExists(_) => "ALREADY_EXISTS",
            TransferError::NotFound(_) => "NOT_FOUND",
            TransferError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            TransferError::InvalidArgument(_) => "INVALID_ARGUMENT",
            TransferError::PermissionDenied(_) => "PERMISSION_DENIED",
            TransferError::Api { status, .. } => status,
            TransferError::Unavailable { .. } => "UNAVAILABLE",
            TransferError::Auth(_) | TransferError::Unauthenticated(_) => "UNAUTHENTICATED",
            TransferError::Unsupported(_) => "UNIMPLEMENTED",
            TransferError::Engine { .. } | TransferError::Malformed(_) => "INTERNAL",
        }
    }

    /// The message alone, without the code.
    pub fn detail(&self) -> String {
        match self {
            TransferError::AlreadyExists(m)
            | TransferError::NotFound(m)
            | TransferError::FailedPrecondition(m)
            | TransferError::InvalidArgument(m)
            | TransferError::PermissionDenied(m)
            | TransferError::Unauthenticated(m) => m.clone(),
            TransferError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[async_trait]
pub trait TransferService: Send + Sync {
    /// Operations matching the filter, newest first.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError>;
    /// The same operations handed to `visit` a page at a time, so a caller
    /// folding them (a full reconcile over months of history) holds one
    /// page, not the whole listing. By default, one page of everything.
    async fn scan_operations(
        &self,
        filter: &OperationFilter,
        visit: &mut (dyn FnMut(Vec<TransferOperation>) + Send),
    ) -> Result<(), TransferError> {
        visit(self.list_operations(filter).await?);
        Ok(())
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<TransferJob>, TransferError>;
    /// Creates a job; a name in use answers `AlreadyExists`.
    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError>;
    /// Starts a new operation of an existing job.
    async fn run_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError>;
    /// `run_job`, with the new operation's name when the service gives it
    /// (STS answers `transferJobs.run` with the Operation).
    async fn run_job_for_operation(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<Option<String>, TransferError> {
        self.run_job(job_name, project_id).await.map(|()| None)
    }
    /// Replaces a job's transferSpec and loggingConfig (`transferJobs.patch`,
    /// mask `transfer_spec,logging_config`; `None` clears the logging): the
    /// job's next run uses them; a running operation keeps what it started
    /// with.
    async fn patch_transfer_spec(
        &self,
        job_name: &str,
        project_id: &str,
        spec: &crate::model::TransferSpec,
        logging: Option<&crate::model::LoggingConfig>,
    ) -> Result<(), TransferError> {
        let _ = (job_name, project_id, spec, logging);
        Err(TransferError::Unsupported(
            "this transfer service cannot patch jobs".into(),
        ))
    }
    /// One job as it is now (`transferJobs.get`): whether someone deleted
    /// or disabled it, what it holds. Unsupported by default.
    async fn get_job(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<TransferJob, TransferError> {
        let _ = (job_name, project_id);
        Err(TransferError::Unsupported(
            "this transfer service cannot read a job".into(),
        ))
    }
    /// Marks a job DELETED.
    async fn delete_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError>;
    async fn pause_operation(&self, name: &str) -> Result<(), TransferError>;
    async fn resume_operation(&self, name: &str) -> Result<(), TransferError>;
    async fn cancel_operation(&self, name: &str) -> Result<(), TransferError>;
    /// The project's Storage Transfer service account (the identity that
    /// needs access to both buckets), from `googleServiceAccounts.get`.
    async fn service_account(&self, project_id: &str) -> Result<String, TransferError>;
    /// Whether a bucket exists, where the backend can tell (`None`: it
    /// cannot see, so the transfer will tell).
    async fn bucket_exists(&self, bucket: &str) -> Result<Option<bool>, TransferError> {
        let _ = bucket;
        Ok(None)
    }
}

/// The service account STS uses for a project (its documented form).
pub fn default_service_account(project_id: &str) -> String {
    format!("project-{project_id}@storage-transfer-service.iam.gserviceaccount.com")
}

/// `*`-glob match of a whole string, as STS filters and fault patterns use.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_whole_names() {
        assert!(glob_match("transferJobs/sts-*", "transferJobs/sts-abc"));
        assert!(!glob_match("transferJobs/sts-*", "transferJobs/other"));
        assert!(glob_match("*bad*", "logs/a/bad.bin"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
