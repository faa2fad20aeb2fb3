//! `sts-remove-successful-one-time-jobs`: deletes this tool's one-time jobs
//! whose operations all succeeded.

use std::collections::HashMap;

use super::pause::ToolReport;
use super::{Invocation, Running, Tool, REMOVE};
use crate::error::Result;
use crate::logging::report;
use crate::manager::JOB_NAME_PATTERN;
use crate::model::{JobStatus, OperationStatus};
use crate::options::{Options, GENERAL, TRANSFER};
use crate::settings::{open_transfer, project_id};
use crate::transfer::local::Mode;
use crate::transfer::{JobFilter, OperationFilter};

pub const TOOL: Tool = Tool {
    name: REMOVE,
    about: "Deletes one-time transfer jobs whose operations all succeeded.",
    after: "",
    groups: &[&GENERAL, &TRANSFER],
    own: &[],
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let r = remove_successful_one_time_jobs(&invocation.options).await?;
        crate::outln!("Removed {} successful one-time transfer jobs.", r.count);
        for e in &r.errors {
            report("WARNING", &format!("  not removed: {e}"));
        }
        Ok(0)
    })
}

/// Deletes every one-time job (start date == end date) of this tool whose
/// operations all succeeded; any other job is left alone.
pub async fn remove_successful_one_time_jobs(options: &Options) -> Result<ToolReport> {
    let transfer = open_transfer(options, Mode::Control)?;
    let project_id = project_id(options)?;
    let jobs = transfer
        .list_jobs(&JobFilter {
            project_id: project_id.clone(),
            statuses: vec![JobStatus::Enabled, JobStatus::Disabled],
            ..JobFilter::default()
        })
        .await?;
    let operations = transfer
        .list_operations(&OperationFilter {
            project_id: project_id.clone(),
            job_name_pattern: Some(JOB_NAME_PATTERN.into()),
            ..OperationFilter::default()
        })
        .await?;
    let mut statuses: HashMap<&str, Vec<&OperationStatus>> = HashMap::new();
    for op in &operations {
        statuses
            .entry(op.transfer_job_name.as_str())
            .or_default()
            .push(&op.status);
    }
    let mut report = ToolReport::default();
    for job in &jobs {
        let one_time = job.schedule.as_ref().is_some_and(|s| s.is_one_time());
        let all_succeeded = statuses
            .get(job.name.as_str())
            .is_some_and(|s| s.iter().all(|status| **status == OperationStatus::Success));
        if !one_time || !all_succeeded {
            continue;
        }
        match transfer.delete_job(&job.name, &project_id).await {
            Ok(()) => {
                tracing::info!("deleted {}", job.name);
                report.count += 1;
            }
            Err(e) => report.errors.push(format!("{}: {e}", job.name)),
        }
    }
    Ok(report)
}
