//! A transfer service that only lists: its operations come from `pages`, a
//! page at a time as STS's pages arrive, so a fixture need not hold them;
//! every other call succeeds and does nothing (a create is timed). For
//! tests and benchmarks of the sync, where the figures must be the
//! manager's, not a backend's.

use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use sts_job_manager::model::{TransferJob, TransferOperation};
use sts_job_manager::transfer::{JobFilter, OperationFilter, TransferError, TransferService};

/// Hands the operations matching a filter to `visit`, page by page.
pub type Pages =
    dyn Fn(&OperationFilter, &mut (dyn FnMut(Vec<TransferOperation>) + Send)) + Send + Sync;

pub struct Listed {
    pub pages: Box<Pages>,
    /// When the first job was created.
    pub first_created: Mutex<Option<Instant>>,
}

impl Listed {
    pub fn new(pages: Box<Pages>) -> Self {
        Listed {
            pages,
            first_created: Mutex::new(None),
        }
    }

    /// Lists these operations (those the filter admits) as one page.
    #[allow(dead_code)] // not every user lists a fixed set
    pub fn of(operations: Vec<TransferOperation>) -> Self {
        Listed::new(Box::new(move |filter, visit| {
            visit(
                operations
                    .iter()
                    .filter(|op| filter.admits(op))
                    .cloned()
                    .collect(),
            )
        }))
    }
}

#[async_trait]
impl TransferService for Listed {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<TransferOperation>, TransferError> {
        let mut all = Vec::new();
        (self.pages)(filter, &mut |page| all.extend(page));
        Ok(all)
    }
    async fn scan_operations(
        &self,
        filter: &OperationFilter,
        visit: &mut (dyn FnMut(Vec<TransferOperation>) + Send),
    ) -> Result<(), TransferError> {
        (self.pages)(filter, visit);
        Ok(())
    }
    async fn list_jobs(&self, _: &JobFilter) -> Result<Vec<TransferJob>, TransferError> {
        Ok(vec![])
    }
    async fn create_job(&self, job: &TransferJob) -> Result<TransferJob, TransferError> {
        let mut first = self.first_created.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(Instant::now);
        Ok(job.clone())
    }
    async fn run_job(&self, _: &str, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn delete_job(&self, _: &str, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn pause_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn resume_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn cancel_operation(&self, _: &str) -> Result<(), TransferError> {
        Ok(())
    }
    async fn service_account(&self, project_id: &str) -> Result<String, TransferError> {
        Ok(sts_job_manager::transfer::default_service_account(
            project_id,
        ))
    }
}
