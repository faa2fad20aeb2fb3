//! The transfer service the manager drives. The manager sees only this trait;
//! `local` runs jobs on directories, and a REST client for Google's STS
//! implements the same calls.

pub mod local;
mod naming;
mod pacing;
pub mod rest;
pub mod wire;

use async_trait::async_trait;

pub use naming::{job_name_for_prefix, validate_job_name};

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
    /// Still failing (429, 5xx, network) after every retry.
    #[error("Storage Transfer Service unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
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

/// Server-side filter for `transferOperations.list`.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub project_id: String,
    pub job_names: Vec<String>,
    /// `*` matches any run of characters; the whole name must match.
    pub job_name_pattern: Option<String>,
    pub statuses: Vec<OperationStatus>,
}

/// Server-side filter for `transferJobs.list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub project_id: String,
    pub statuses: Vec<JobStatus>,
}

#[async_trait]
pub trait TransferService: Send + Sync {
    /// Operations matching the filter, newest first.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<TransferJob>, TransferError>;
    /// Creates a job; a name in use answers `AlreadyExists`.
    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError>;
    /// Starts a new operation of an existing job.
    async fn run_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError>;
    /// Marks a job DELETED.
    async fn delete_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError>;
    async fn pause_operation(&self, name: &str) -> Result<(), TransferError>;
    async fn resume_operation(&self, name: &str) -> Result<(), TransferError>;
    async fn cancel_operation(&self, name: &str) -> Result<(), TransferError>;
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
