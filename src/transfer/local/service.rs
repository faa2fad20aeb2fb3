//! The local engine as a `TransferService`: the STS calls over its jobs
//! and operations.

use super::*;

#[async_trait]
impl TransferService for LocalEngine {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError> {
        self.list_operations_page(filter, None, filter.limit.unwrap_or(usize::MAX))
            .map(|(operations, _)| operations)
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<TransferJob>, TransferError> {
        let conn = self.lock();
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.name()).collect();
        let statuses = serde_json::to_string(&statuses).map_err(|e| self.err(e))?;
        let mut statement = conn
            .prepare(
                "SELECT body FROM jobs WHERE project_id = ?1
                   AND (?2 = '[]' OR status IN (SELECT value FROM json_each(?2)))
                 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map(params![filter.project_id, statuses], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.err(e))?;
        let mut jobs = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.err(e))?;
            let job: TransferJob = serde_json::from_str(&body).map_err(|e| self.err(e))?;
            if filter.admits(&job) {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn service_account(&self, project_id: &str) -> Result<String, TransferError> {
        Ok(crate::transfer::default_service_account(project_id))
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<Option<bool>, TransferError> {
        let plain = !bucket.is_empty() && !bucket.contains(['/', '\\']) && bucket != "..";
        Ok(Some(plain && self.root.join(bucket).is_dir()))
    }

    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError> {
        validate_job_name(&job.name)?;
        if job.project_id.is_empty() {
            return Err(TransferError::InvalidArgument(
                "projectId is required".into(),
            ));
        }
        let taken: Option<String> = self
            .lock()
            .query_row(
                "SELECT name FROM jobs WHERE name = ?1",
                params![job.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        // A name in use is refused before the body is judged, as on STS.
        if taken.is_some() {
            return Err(TransferError::AlreadyExists(job.name.clone()));
        }
        if let Some(code) = Faults::load(&self.root.join(ENGINE_DIR)).refuse_creates {
            let message = format!("refused by the engine's refuse_creates fault ({code})");
            return Err(faults::code_error(&code, message));
        }
        self.check_spec(&job.transfer_spec)?;
        let mut created = job.clone();
        created.creation_time = Some(faults::service_now(&self.root));
        created.latest_operation_name = None;
        let body = serde_json::to_string(&created).map_err(|e| self.err(e))?;
        let conn = self.lock();
        let inserted = conn
            .execute(
                "INSERT INTO jobs (name, project_id, status, body) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
                params![job.name, job.project_id, job.status.name(), body],
            )
            .map_err(|e| self.err(e))?;
        if inserted == 0 {
            return Err(TransferError::AlreadyExists(job.name.clone()));
        }
        // A one-time job dated today or earlier starts at once, as on STS.
        let starts_now = job.status == JobStatus::Enabled
            && job
                .schedule
                .as_ref()
                .and_then(|s| s.schedule_start_date)
                .is_some_and(|d| {
                    (d.year, d.month, d.day) <= {
                        let t = Date::today_utc();
                        (t.year, t.month, t.day)
                    }
                });
        if starts_now && !Faults::load(&self.root.join(ENGINE_DIR)).skip_scheduled_starts {
            created.latest_operation_name = Some(self.insert_operation(&conn, &created)?);
        }
        Ok(created)
    }

    async fn get_job(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<TransferJob, TransferError> {
        LocalEngine::get_job(self, job_name, project_id)
    }

    async fn run_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        self.run_job_operation(job_name, project_id).map(|_| ())
    }

    async fn run_job_for_operation(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<Option<String>, TransferError> {
        self.run_job_operation(job_name, project_id).map(Some)
    }

    async fn patch_transfer_spec(
        &self,
        job_name: &str,
        project_id: &str,
        spec: &crate::model::TransferSpec,
        logging: Option<&crate::model::LoggingConfig>,
    ) -> Result<(), TransferError> {
        self.patch_job_spec(job_name, project_id, spec, Some(logging.cloned()))
            .map(|_| ())
    }

    async fn delete_job(&self, job_name: &str, project_id: &str) -> Result<(), TransferError> {
        self.patch_job(job_name, project_id, Some(JobStatus::Deleted), None)
            .map(|_| ())
    }

    async fn pause_operation(&self, name: &str) -> Result<(), TransferError> {
        self.transition(
            name,
            &[OperationStatus::InProgress, OperationStatus::Queued],
            OperationStatus::Paused,
        )
    }

    async fn resume_operation(&self, name: &str) -> Result<(), TransferError> {
        self.transition(
            name,
            &[OperationStatus::Paused, OperationStatus::Suspending],
            OperationStatus::InProgress,
        )
    }

    async fn cancel_operation(&self, name: &str) -> Result<(), TransferError> {
        self.transition(
            name,
            &[
                OperationStatus::InProgress,
                OperationStatus::Queued,
                OperationStatus::Paused,
                OperationStatus::Suspending,
            ],
            OperationStatus::Aborted,
        )
    }
}
