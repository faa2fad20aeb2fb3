//! `sts-doctor`: a read-only preflight against the project (the checks are
//! in `checks`).

pub mod checks;

use super::{Invocation, Running, Tool, DOCTOR};
use crate::options::{BUCKETS, GENERAL, HEARTBEAT, MOVES, STATE};

pub const TOOL: Tool = Tool {
    name: DOCTOR,
    about: "A read-only preflight against the project: APIs enabled, the STS service agent and its roles on both buckets, your own permissions, the BigQuery dataset, reusable jobs on the buckets. One line per check with the command that fixes it; exit 0 when every check passes, 1 otherwise.",
    after: "",
    groups: &[&GENERAL, &STATE, &BUCKETS, &HEARTBEAT, &MOVES],
    own: &[],
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let report = checks::run(&invocation.options).await?;
        crate::outln!("{}", checks::render(&report));
        Ok(if report.failed() > 0 { 1 } else { 0 })
    })
}
