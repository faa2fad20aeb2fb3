//! Starting one prefix on STS: on a reusable pool job (patched, then run)
//! or on a job of its own (created, or run again), and what a refused run
//! meant once the job was looked at.

use chrono::Utc;

use super::refusals::{
    classify_refusal, explain_run_refusal, foreign_pool_job, is_transient, Refusal, RunRefusal,
    StartError, Step,
};
use super::{job_description, Manager};
use crate::model::{
    Date, JobStatus, LoggingConfig, PrefixJob, Schedule, Status, TransferJob, TransferOptions,
    TransferSpec,
};
use crate::transfer::{job_name_for_prefix, OperationFilter, TransferError};

impl Manager {
    /// A start of a prefix in `error` is a retry: said once, with its attempt.
    fn note_retry(&self, row: &PrefixJob) {
        if row.status == Status::Error {
            let attempt = self.attempts.get(&row.prefix).copied().unwrap_or(0) + 1;
            tracing::info!(prefix = %row.prefix, previous = ?row.job_name, attempt, "retrying a failed prefix");
        }
    }

    /// Starts `row` on the reusable job `job`: its include prefix patched to
    /// the row's (`transferJobs.patch`: no create quota), then run. Made on
    /// first use, with no schedule, so it runs only when asked. A crash
    /// between patch and run leaves a free job; between run and the state
    /// write, an operation the next sync adopts for the prefix.
    pub(super) async fn start_pooled(
        &self,
        row: &PrefixJob,
        job: &str,
    ) -> Result<String, StartError> {
        let spec = self.transfer_spec(&row.prefix);
        let project = &self.project_id;
        let refused = |step: Step, error: TransferError| {
            StartError::refused(job, classify_refusal(step, job, error))
        };
        let dead = |why: &str| {
            tracing::warn!(job, "reusable job {why}: another one is used from now on");
            self.pool_dead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.to_string());
            StartError::Transient(TransferError::NotFound(format!(
                "reusable job {job} {why}; another one is used from now on"
            )))
        };
        self.note_retry(row);
        let reusable_description = format!(
            "Reusable job of STS Job Manager (gs://{} -> gs://{})",
            self.settings.source_bucket, self.settings.destination_bucket
        );
        let create = || async {
            let mut created = self.new_job(job.to_string(), &row.prefix);
            created.schedule = None;
            created.description = reusable_description.clone();
            self.transfer.create_job(&created).await
        };
        // A patch refused: the job is read to tell a job someone deleted or
        // disabled (whatever code STS answers that with) from a refusal.
        let patch_refused = |error: TransferError| async move {
            if is_transient(&error) {
                return StartError::Transient(error);
            }
            match self.job_status(job).await {
                Ok(None | Some(JobStatus::Deleted)) => dead("was deleted"),
                Ok(Some(JobStatus::Disabled)) => dead("was disabled"),
                Ok(Some(_)) => refused(Step::Create, error),
                Err(e) => StartError::Transient(e),
            }
        };
        let known = self
            .pool_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(job);
        // Known to exist: patched. Not seen yet: created with this prefix's
        // spec at once (one call, not a patch answered 404 then a create).
        // A create answered ALREADY_EXISTS (ours from before, or a create
        // whose reply was lost and was retried) is patched instead.
        let mut patch = known;
        if !known {
            match create().await {
                Ok(_) => {}
                Err(TransferError::AlreadyExists(_)) => patch = true,
                Err(e) => return Err(refused(Step::Create, e)),
            }
        }
        if patch
            && !self
                .pool_verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(job)
        {
            // Once per job and process, before this manager patches it: a
            // job someone else changed (a schedule, other buckets, another
            // description) or disabled is left alone, and another is used.
            match self.transfer.get_job(job, project).await {
                Ok(found) => {
                    if let Some(why) = foreign_pool_job(
                        &found,
                        (
                            &self.settings.source_bucket,
                            &self.settings.destination_bucket,
                        ),
                        &reusable_description,
                    ) {
                        return Err(dead(&why));
                    }
                }
                Err(TransferError::Unsupported(_)) => {}
                Err(TransferError::NotFound(_)) => {}
                Err(e) if is_transient(&e) => return Err(StartError::Transient(e)),
                Err(e) => return Err(refused(Step::Create, e)),
            }
            self.pool_verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.to_string());
        }
        if patch {
            match self
                .transfer
                .patch_transfer_spec(job, project, &spec, self.logging_config().as_ref())
                .await
            {
                Ok(()) => {}
                // A service that cannot patch: one job per prefix, as before.
                Err(TransferError::Unsupported(_)) => return self.start_job(row).await,
                Err(TransferError::NotFound(_)) if known => match create().await {
                    Ok(_) => {}
                    Err(TransferError::AlreadyExists(_)) => return Err(dead("was deleted")),
                    Err(e) => return Err(refused(Step::Create, e)),
                },
                Err(e) => return Err(patch_refused(e).await),
            }
        }
        self.pool_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_string());
        let error = match self.transfer.run_job_for_operation(job, project).await {
            Ok(Some(operation)) => return Ok(operation),
            Ok(None) => return Ok(job.to_string()),
            Err(e) => match classify_refusal(Step::Run, job, e) {
                Refusal::LookAtJob(e) => e,
                Refusal::Permanent(e) => return Err(refused(Step::Run, e)),
                Refusal::Transient(e) => return Err(StartError::Transient(e)),
            },
        };
        match self
            .look_at_refusal(job, &row.prefix, error)
            .await
            .map_err(StartError::Transient)?
        {
            RunRefusal::Follow(operation) => Ok(operation),
            RunRefusal::Busy(why) => Err(StartError::Transient(TransferError::FailedPrecondition(
                format!("reusable job {job} is busy: {why}"),
            ))),
            RunRefusal::Gone(why) => Err(dead(why)),
            RunRefusal::Refused(error) => Err(StartError::Refused {
                job: job.to_string(),
                error,
            }),
        }
    }

    /// Starts the prefix's job: the same name every time, so a repeat after a
    /// crash answers ALREADY_EXISTS; a retry runs the existing job again.
    pub(super) async fn start_job(&self, row: &PrefixJob) -> Result<String, StartError> {
        let mut name = job_name_for_prefix(
            &self.settings.source_bucket,
            &self.settings.destination_bucket,
            &row.prefix,
        );
        // A manifest run gets a job of its own, named from the manifest (a
        // repeated create answers ALREADY_EXISTS, as for the prefix's job),
        // so the prefix's job keeps its plain spec for later runs.
        let manifest = self.manifests.get(&row.prefix);
        if let Some(location) = manifest {
            name = format!("{name}-m{:08x}", crc32c::crc32c(location.as_bytes()));
        }
        self.note_retry(row);
        let refused = |step: Step, error: TransferError| classify_refusal(step, &name, error);
        let outcome = if row.job_name.is_some() && manifest.is_none() {
            // A previous attempt exists: run its job again (no create quota).
            let ran = match self.pass_spec_patched(&name, &row.prefix).await {
                Ok(()) => self.transfer.run_job(&name, &self.project_id).await,
                Err(e) => Err(e),
            };
            match ran {
                Err(TransferError::NotFound(_)) => self
                    .create_job(name.clone(), &row.prefix)
                    .await
                    .map(|_| ())
                    .map_err(|e| refused(Step::Create, e)),
                other => other.map_err(|e| refused(Step::Run, e)),
            }
        } else {
            match self.create_job(name.clone(), &row.prefix).await {
                Err(TransferError::AlreadyExists(_)) => {
                    // Ours: a create whose reply was lost (its one-time
                    // start is coming or came), or a job of this prefix's
                    // earlier life (run again). Told apart by its newest
                    // operation, never by running it blind.
                    match self.newest_operation(&name).await {
                        Ok(Some(op))
                            if op.status.is_active()
                                || op.start_time.is_some_and(|t| t >= row.last_updated) =>
                        {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists and ran for this start; following {}", op.name);
                            return Ok(op.name);
                        }
                        Ok(None) => {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists with no operation yet (a create whose reply was lost); following it");
                            return Ok(name);
                        }
                        Ok(Some(_)) => {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists (an earlier run created it); running it");
                            match self.pass_spec_patched(&name, &row.prefix).await {
                                Ok(()) => self
                                    .transfer
                                    .run_job(&name, &self.project_id)
                                    .await
                                    .map_err(|e| refused(Step::Run, e)),
                                Err(e) => Err(refused(Step::Create, e)),
                            }
                        }
                        Err(e) => Err(Refusal::Transient(e)),
                    }
                }
                other => other.map(|_| ()).map_err(|e| refused(Step::Create, e)),
            }
        };
        let explained = match outcome {
            Ok(()) => return Ok(name),
            Err(Refusal::Permanent(error)) => return Err(StartError::Refused { job: name, error }),
            Err(Refusal::Transient(error)) => return Err(StartError::Transient(error)),
            Err(Refusal::LookAtJob(error)) => self
                .look_at_refusal(&name, &row.prefix, error)
                .await
                .map_err(StartError::Transient)?,
        };
        match explained {
            // A crash after the start, or a list that lags: the row follows
            // that operation by its own name.
            RunRefusal::Follow(operation) => Ok(operation),
            RunRefusal::Busy(why) => Err(StartError::Transient(TransferError::FailedPrecondition(
                why,
            ))),
            RunRefusal::Refused(error) => Err(StartError::Refused { job: name, error }),
            // Deleted or disabled by someone else: a new name for a new attempt.
            RunRefusal::Gone(why) => {
                tracing::warn!(prefix = %row.prefix, "{name} {why}; starting the prefix on a new job");
                let fresh = format!("{name}-{}", Utc::now().timestamp());
                match self.create_job(fresh.clone(), &row.prefix).await {
                    Ok(_) => Ok(fresh),
                    Err(e) => Err(StartError::refused(
                        &fresh,
                        classify_refusal(Step::Create, &fresh, e),
                    )),
                }
            }
        }
    }

    /// The job's newest operation: its one operation that has not ended,
    /// if it has one. One small list request, whatever the job ran before
    /// (QUEUED and SUSPENDING are not filter values: checked here).
    pub(super) async fn newest_operation(
        &self,
        job_name: &str,
    ) -> Result<Option<crate::model::TransferOperation>, TransferError> {
        Ok(self
            .transfer
            .list_operations(&OperationFilter {
                project_id: self.project_id.clone(),
                job_names: vec![job_name.to_string()],
                limit: Some(1),
                ..OperationFilter::default()
            })
            .await?
            .into_iter()
            .next())
    }

    /// The job's status as STS has it now (`None`: not found); a service
    /// that cannot read jobs answers "enabled".
    pub(super) async fn job_status(
        &self,
        job_name: &str,
    ) -> Result<Option<JobStatus>, TransferError> {
        match self.transfer.get_job(job_name, &self.project_id).await {
            Ok(job) => Ok(Some(job.status)),
            Err(TransferError::NotFound(_)) => Ok(None),
            Err(TransferError::Unsupported(_)) => Ok(Some(JobStatus::Enabled)),
            Err(e) => Err(e),
        }
    }

    /// STS refused to run `job_name` for `prefix`: looks at the job and its
    /// newest operation to tell what that meant ([`explain_run_refusal`]).
    pub(super) async fn look_at_refusal(
        &self,
        job_name: &str,
        prefix: &str,
        error: TransferError,
    ) -> Result<RunRefusal, TransferError> {
        let newest = self.newest_operation(job_name).await?;
        let status = if newest.as_ref().is_some_and(|op| op.status.is_active()) {
            Some(JobStatus::Enabled)
        } else {
            self.job_status(job_name).await?
        };
        let explained = explain_run_refusal(prefix, newest.as_ref(), status, error);
        if let RunRefusal::Refused(e) = &explained {
            tracing::warn!(
                prefix,
                job = job_name,
                "run refused with no operation under way and the job enabled: {e}"
            );
        }
        Ok(explained)
    }

    /// Runs an overdue one-time job again, looking first: whether STS
    /// refuses a run while an operation is under way is undocumented, so an
    /// operation found under way is followed rather than doubled. `None`:
    /// the job is gone (the prefix is queued for a new one).
    pub(super) async fn run_again(
        &self,
        job: &str,
        prefix: &str,
    ) -> Result<Option<String>, TransferError> {
        if let Some(op) = self.newest_operation(job).await? {
            if op.status.is_active() {
                return Ok(Some(op.name));
            }
        }
        let error = match self.transfer.run_job(job, &self.project_id).await {
            Ok(()) => return Ok(Some(job.to_string())),
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => e,
        };
        match self.look_at_refusal(job, prefix, error).await? {
            RunRefusal::Follow(operation) => Ok(Some(operation)),
            RunRefusal::Gone(_) => Ok(None),
            RunRefusal::Busy(why) => Err(TransferError::FailedPrecondition(why)),
            RunRefusal::Refused(error) => Err(error),
        }
    }

    pub(super) async fn create_job(
        &self,
        name: String,
        prefix: &str,
    ) -> Result<TransferJob, TransferError> {
        self.transfer.create_job(&self.new_job(name, prefix)).await
    }

    /// The prefix's spec: the pass's (see `passes::PassSpec`) when the
    /// prefix was queued for a pass, else the migration's.
    pub(super) fn transfer_spec(&self, prefix: &str) -> TransferSpec {
        let pass = self.pass_specs.get(prefix);
        TransferSpec::for_prefix(
            &self.settings.source_bucket,
            &self.settings.destination_bucket,
            prefix,
            Some(TransferOptions {
                overwrite_objects_already_existing_in_sink: self.settings.overwrite_dest_objects,
                overwrite_when: pass.and_then(|p| p.overwrite_when),
                delete_objects_unique_in_sink: pass.is_some_and(|p| p.delete_unique_in_sink),
                delete_objects_from_source_after_transfer: self.settings.move_objects,
                metadata_options: self.settings.preserve.metadata_options(),
            }),
        )
        .modified_since(pass.and_then(|p| p.modified_since))
        .with_manifest(self.manifests.get(prefix).map(String::as_str))
    }

    /// Before a prefix's own job runs again for a pass, its spec becomes
    /// the pass's (`transferJobs.patch`): a job keeps the spec it was
    /// created with otherwise. Nothing to do outside a pass.
    async fn pass_spec_patched(&self, job: &str, prefix: &str) -> Result<(), TransferError> {
        if !self.pass_specs.contains_key(prefix) {
            return Ok(());
        }
        let spec = self.transfer_spec(prefix);
        match self
            .transfer
            .patch_transfer_spec(job, &self.project_id, &spec, self.logging_config().as_ref())
            .await
        {
            Err(TransferError::Unsupported(_)) => Ok(()),
            other => other,
        }
    }

    /// Failed objects logged to Cloud Logging unless `--no-object-logs`
    /// (COPY, and DELETE when `--move` deletes from the source).
    pub(super) fn logging_config(&self) -> Option<LoggingConfig> {
        self.settings
            .object_logs
            .then(|| LoggingConfig::failed_objects(self.settings.move_objects))
    }

    pub(super) fn new_job(&self, name: String, prefix: &str) -> TransferJob {
        TransferJob {
            name,
            description: job_description(prefix),
            project_id: self.project_id.clone(),
            transfer_spec: self.transfer_spec(prefix),
            schedule: Some(Schedule::one_time(Date::today_utc())),
            status: JobStatus::Enabled,
            logging_config: self.logging_config(),
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
        }
    }
}
