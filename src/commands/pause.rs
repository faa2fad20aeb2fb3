//! `sts-pause-all-jobs`: pauses every running operation of the project.

use serde::Serialize;

use super::{Invocation, Running, Tool, PAUSE};
use crate::error::Result;
use crate::logging::report;
use crate::model::OperationStatus;
use crate::options::{Options, GENERAL, TRANSFER};
use crate::settings::{open_transfer, project_id};
use crate::transfer::local::Mode;
use crate::transfer::OperationFilter;

pub const TOOL: Tool = Tool {
    name: PAUSE,
    about: "Pauses every running Storage Transfer Service operation of the project.",
    after: "",
    groups: &[&GENERAL, &TRANSFER],
    own: &[],
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let r = pause_all_jobs(&invocation.options).await?;
        crate::outln!("Paused {} transfer operations.", r.count);
        for e in &r.errors {
            report("WARNING", &format!("  not paused: {e}"));
        }
        Ok(0)
    })
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolReport {
    /// Operations paused, or jobs deleted.
    pub count: usize,
    pub errors: Vec<String>,
}

/// Pauses every running (or queued) operation of the project.
pub async fn pause_all_jobs(options: &Options) -> Result<ToolReport> {
    let transfer = open_transfer(options, Mode::Control)?;
    let project_id = project_id(options)?;
    let running = transfer
        .list_operations(&OperationFilter {
            project_id,
            statuses: vec![OperationStatus::InProgress, OperationStatus::Queued],
            ..OperationFilter::default()
        })
        .await?;
    let mut report = ToolReport::default();
    for op in running {
        match transfer.pause_operation(&op.name).await {
            Ok(()) => {
                tracing::info!("paused {}", op.name);
                report.count += 1;
            }
            Err(e) => {
                tracing::warn!("could not pause {}: {e}", op.name);
                report.errors.push(format!("{}: {e}", op.name));
            }
        }
    }
    Ok(report)
}
