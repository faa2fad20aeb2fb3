//! `sts-job-manager`: the manager loop (SPEC 4) until done or stopped.

use std::future::Future;

use super::{Invocation, Running, Tool, MANAGER};
use crate::error::{Error, Result};
use crate::options::{Options, GENERAL, HEARTBEAT, JOBS, LOOP, OBJECTS, STATE, TRANSFER};
use crate::settings::open_manager;

pub const TOOL: Tool = Tool {
    name: MANAGER,
    about: "The STS Job Manager: creates STS jobs for the prefixes of the job table and records each job's state.",
    after: "",
    groups: &[&GENERAL, &STATE, &TRANSFER, &JOBS, &OBJECTS, &LOOP, &HEARTBEAT],
    own: &[],
    stops_itself: true,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        run_manager(invocation.options, super::stop_signal()?).await?;
        Ok(0)
    })
}

/// The manager on the options' backends, until done or `stop`.
pub async fn run_manager(options: Options, stop: impl Future<Output = ()>) -> Result<()> {
    // A stop while opening (a token that never comes, a slow first call)
    // ends the tool at once: nothing was written yet.
    let mut stop = Box::pin(stop);
    let mut manager = tokio::select! {
        opened = open_manager(options) => opened?,
        _ = &mut stop => return Err(Error::Interrupted),
    };
    manager.run(stop).await?;
    Ok(())
}
