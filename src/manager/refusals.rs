//! What STS's refusals mean for a start, as pure functions: which errors
//! are worth retrying, what a refused run meant once the job was looked
//! at, and whether a pool job is still as this manager left it.

#[cfg(test)]
use crate::model::TransferSpec;
use crate::model::{JobStatus, TransferJob};
use crate::transfer::TransferError;

/// Which call of a start STS answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Run,
}

/// What a refusal from STS means for a start.
#[derive(Debug)]
pub enum Refusal {
    /// `run` refused for a reason STS does not document (an operation under
    /// way, a job deleted or disabled by someone else, a permission): the
    /// job and its newest operation are looked at to decide
    /// ([`explain_run_refusal`]).
    LookAtJob(TransferError),
    /// STS will answer the same until a person acts (a grant, a bucket
    /// name, the request): the prefix goes to `error`.
    Permanent(TransferError),
    /// Worth trying again later (429/5xx after retries, network).
    Transient(TransferError),
}

/// Why a reusable job is not as this manager leaves it (someone else's
/// schedule, buckets or description, or not enabled), if it is not. Pure.
pub fn foreign_pool_job(
    job: &TransferJob,
    (source, destination): (&str, &str),
    description: &str,
) -> Option<String> {
    if job.status != JobStatus::Enabled {
        return Some(format!("is {}", job.status.name().to_lowercase()));
    }
    if job
        .schedule
        .as_ref()
        .is_some_and(|s| s.schedule_start_date.is_some())
    {
        return Some("carries a schedule someone else set; it is left alone".into());
    }
    if job.transfer_spec.source_bucket() != Some(source)
        || job.transfer_spec.sink_bucket() != Some(destination)
    {
        return Some("copies between other buckets now; it is left alone".into());
    }
    if job.description != description {
        return Some(format!(
            "has someone else's description ({:?}); it is left alone",
            job.description
        ));
    }
    None
}

/// Worth trying again later: 429, 5xx, the network (after the client's own
/// retries); every other refusal is an answer.
pub fn is_transient(error: &TransferError) -> bool {
    match error {
        TransferError::PermissionDenied(_)
        | TransferError::Unauthenticated(_)
        | TransferError::InvalidArgument(_)
        | TransferError::FailedPrecondition(_)
        | TransferError::NotFound(_)
        | TransferError::AlreadyExists(_) => false,
        TransferError::Api { http, .. } => !(400..=499).contains(http) || *http == 429,
        _ => true,
    }
}

/// What a refused `run` meant, once the job was looked at.
#[derive(Debug)]
pub enum RunRefusal {
    /// The job's operation for this prefix is under way: follow it.
    Follow(String),
    /// The job runs another prefix's operation: try later (or elsewhere).
    Busy(String),
    /// Someone deleted or disabled the job: a new job is needed.
    Gone(&'static str),
    /// Nothing explains it: the refusal stands, named, and counts.
    Refused(TransferError),
}

/// Decides what a refused `run` of a job for `prefix` means from the job's
/// newest operation and its status (`None`: the job is not found). Pure.
pub fn explain_run_refusal(
    prefix: &str,
    newest: Option<&crate::model::TransferOperation>,
    job: Option<JobStatus>,
    error: TransferError,
) -> RunRefusal {
    if let Some(op) = newest.filter(|op| op.status.is_active()) {
        return if op
            .transfer_spec
            .include_prefixes()
            .iter()
            .any(|p| p == prefix)
        {
            RunRefusal::Follow(op.name.clone())
        } else {
            RunRefusal::Busy(format!(
                "{} is running {} for other prefixes",
                op.transfer_job_name, op.name
            ))
        };
    }
    match job {
        None | Some(JobStatus::Deleted) => RunRefusal::Gone("was deleted"),
        Some(JobStatus::Disabled) => RunRefusal::Gone("was disabled"),
        Some(_) => RunRefusal::Refused(error),
    }
}

/// How a start failed.
#[derive(Debug)]
pub enum StartError {
    Refused { job: String, error: TransferError },
    Transient(TransferError),
}

impl StartError {
    /// A step of a start on `job` refused: a refusal that stands (or one
    /// no look at the job explained) is the prefix's failure; the rest is
    /// tried again later.
    pub fn refused(job: &str, refusal: Refusal) -> StartError {
        match refusal {
            Refusal::Permanent(error) | Refusal::LookAtJob(error) => StartError::Refused {
                job: job.to_string(),
                error,
            },
            Refusal::Transient(error) => StartError::Transient(error),
        }
    }
}

/// Maps STS's answer to one step of a start to what comes next. Pure.
pub fn classify_refusal(step: Step, job: &str, error: TransferError) -> Refusal {
    let _ = job;
    match (step, error) {
        // Which code STS answers a run of a busy, deleted or disabled job
        // is undocumented: never guessed from the code.
        (Step::Run, e) if !is_transient(&e) => Refusal::LookAtJob(e),
        // A name in use on create is decided by its caller; here it is
        // only worth another try.
        (_, e @ TransferError::AlreadyExists(_)) => Refusal::Transient(e),
        // On create, STS answers FAILED_PRECONDITION when it cannot see a
        // bucket, NOT_FOUND for a missing one.
        (_, e) if !is_transient(&e) => Refusal::Permanent(e),
        (_, e) => Refusal::Transient(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(prefix: &str, status: &str) -> crate::model::TransferOperation {
        crate::model::TransferOperation {
            name: "transferOperations/op".into(),
            transfer_job_name: "transferJobs/j".into(),
            logging_config: None,
            status: crate::model::OperationStatus::from_name(status),
            transfer_spec: TransferSpec {
                object_conditions: Some(crate::model::ObjectConditions {
                    include_prefixes: vec![prefix.into()],
                    ..crate::model::ObjectConditions::default()
                }),
                ..TransferSpec::default()
            },
            project_id: "p".into(),
            start_time: None,
            end_time: None,
            counters: Default::default(),
            error_breakdowns: vec![],
        }
    }

    #[test]
    fn a_refused_run_is_explained_by_looking_not_by_its_code() {
        let refusal = || TransferError::FailedPrecondition("no".into());
        let explain = |newest: Option<&crate::model::TransferOperation>, job| {
            explain_run_refusal("a/", newest, job, refusal())
        };
        // Under way for this prefix (any of the four active statuses): followed.
        for status in ["QUEUED", "IN_PROGRESS", "PAUSED", "SUSPENDING"] {
            let op = operation("a/", status);
            assert!(
                matches!(explain(Some(&op), Some(JobStatus::Enabled)), RunRefusal::Follow(n) if n == "transferOperations/op")
            );
        }
        // Under way for another prefix: busy, not an error of this prefix.
        let other = operation("b/", "IN_PROGRESS");
        assert!(matches!(
            explain(Some(&other), Some(JobStatus::Enabled)),
            RunRefusal::Busy(_)
        ));
        // Nothing under way: the job's state decides.
        let ended = operation("a/", "SUCCESS");
        assert!(matches!(explain(Some(&ended), None), RunRefusal::Gone(_)));
        assert!(matches!(
            explain(None, Some(JobStatus::Deleted)),
            RunRefusal::Gone("was deleted")
        ));
        assert!(matches!(
            explain(None, Some(JobStatus::Disabled)),
            RunRefusal::Gone("was disabled")
        ));
        // An enabled job, nothing under way: the refusal stands (named, counted).
        assert!(matches!(
            explain(Some(&ended), Some(JobStatus::Enabled)),
            RunRefusal::Refused(TransferError::FailedPrecondition(_))
        ));
        assert!(is_transient(&TransferError::Api {
            http: 429,
            status: "RESOURCE_EXHAUSTED".into(),
            message: String::new()
        }));
        assert!(!is_transient(&refusal()));
    }

    #[test]
    fn a_pool_job_someone_else_changed_is_left_alone() {
        let buckets = ("src", "dst");
        let bucket = |b: &str| {
            Some(crate::model::GcsData {
                bucket_name: b.into(),
                path: String::new(),
            })
        };
        let ours = TransferJob {
            name: "transferJobs/sts-jm-pool-x-0000".into(),
            description: "mine".into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec {
                gcs_data_source: bucket("src"),
                gcs_data_sink: bucket("dst"),
                ..TransferSpec::default()
            },
            schedule: Some(crate::model::Schedule {
                schedule_start_date: None,
                schedule_end_date: None,
            }),
            status: JobStatus::Enabled,
            logging_config: None,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
        };
        assert_eq!(foreign_pool_job(&ours, buckets, "mine"), None);
        let mut scheduled = ours.clone();
        scheduled.schedule = Some(crate::model::Schedule::one_time(
            crate::model::Date::today_utc(),
        ));
        assert!(foreign_pool_job(&scheduled, buckets, "mine")
            .unwrap()
            .contains("schedule"));
        let mut moved = ours.clone();
        moved.transfer_spec.gcs_data_sink = bucket("elsewhere");
        assert!(foreign_pool_job(&moved, buckets, "mine")
            .unwrap()
            .contains("other buckets"));
        assert!(foreign_pool_job(&ours, buckets, "theirs")
            .unwrap()
            .contains("description"));
        let mut disabled = ours;
        disabled.status = JobStatus::Disabled;
        assert_eq!(
            foreign_pool_job(&disabled, buckets, "mine").as_deref(),
            Some("is disabled")
        );
    }
}
