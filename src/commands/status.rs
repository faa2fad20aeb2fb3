//! `sts-status`: its own flags (`--json`, `--watch`, `--interval`,
//! `--limit`, `--pool`) beside the common options (state store, tables), so
//! the tool reads any store the manager writes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::flags::{given, last, Flag, FlagGroup, ToolFlags};
use super::{Invocation, Running, Tool, STATUS};
use crate::analysis::status::{has_work_left, read_status, StatusParams};
use crate::error::{Error, Result};
use crate::options::{Options, BUCKETS, GENERAL, STATE, STATUS_RETRIES, TRANSFER};
use crate::settings::open_store;

pub const ABOUT: &str = "Prints a migration's state: prefixes per status, objects and bytes \
found / copied / failed, throughput over the last hour, an ETA (never presented as exact \
while prefixes are unlisted), stalled prefixes and failing prefixes with their error codes.";

/// `sts-status`'s own flags.
pub const STATUS_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "sts-status options",
    flags: &[
        Flag::switch(
            "json",
            "Print the report as one JSON object (with --watch: one per line)",
        ),
        Flag::switch(
            "watch",
            "Redraw the report in place until the migration ends or Ctrl-C",
        ),
        Flag::value(
            "interval",
            "N",
            "Seconds between redraws with --watch (default 5)",
        ),
        Flag::value(
            "limit",
            "N",
            "Failing and stalled prefixes listed at most (default 20)",
        ),
        Flag::switch(
            "pool",
            "Also list this migration's reusable transfer jobs (from the transfer\n\
             service: --transfer, --project, the buckets), busy or free",
        ),
    ],
}];

pub const TOOL: Tool = Tool {
    name: STATUS,
    about: ABOUT,
    after: "",
    groups: &[&GENERAL, &STATE, &STATUS_RETRIES, &TRANSFER, &BUCKETS],
    own: STATUS_FLAGS,
    stops_itself: true,
    run: run_tool,
};

fn run_tool(invocation: Invocation) -> Running {
    Box::pin(async move {
        let flags = StatusFlags::parse(&invocation.flags)?;
        run(&invocation.options, &flags, super::stop_signal()?).await?;
        Ok(0)
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusFlags {
    pub json: bool,
    pub watch: bool,
    pub interval: Duration,
    pub limit: usize,
    pub pool: bool,
}

impl Default for StatusFlags {
    fn default() -> Self {
        StatusFlags {
            json: false,
            watch: false,
            interval: Duration::from_secs(5),
            limit: 20,
            pool: false,
        }
    }
}

impl StatusFlags {
    /// The flags as given, checked.
    pub fn parse(found: &ToolFlags) -> Result<StatusFlags> {
        let mut flags = StatusFlags {
            json: given(found, "json"),
            watch: given(found, "watch"),
            pool: given(found, "pool"),
            ..StatusFlags::default()
        };
        if let Some(text) = last(found, "interval") {
            let seconds: f64 = text
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "option '--interval': '{text}' is not a number of seconds above 0"
                    ))
                })?;
            flags.interval = Duration::from_secs_f64(seconds);
        }
        if let Some(text) = last(found, "limit") {
            flags.limit = text.parse().map_err(|_| {
                Error::Input(format!(
                    "option '--limit': '{text}' is not a whole number >= 0"
                ))
            })?;
        }
        Ok(flags)
    }
}

/// Whether the migration has ended: nothing waiting, running or paused, and
/// every prefix in error out of retries (or not retried at all). `final`
/// is how many prefixes in error are out of retries.
fn finished(
    prefixes: &std::collections::BTreeMap<&'static str, usize>,
    retry_errors: bool,
    finals: usize,
) -> bool {
    let count = |s: crate::model::Status| prefixes.get(s.as_str()).copied().unwrap_or(0);
    let errors_left = if retry_errors {
        count(crate::model::Status::Error).saturating_sub(finals)
    } else {
        0
    };
    crate::model::Status::ALL
        .iter()
        .filter(|s| has_work_left(**s, false))
        .all(|s| count(*s) == 0)
        && errors_left == 0
}

/// Prefixes in error that are out of retries (they never run again).
async fn final_errors(store: &dyn crate::store::StateStore, options: &Options) -> Result<usize> {
    let (rows, _) = store.read_unfinished().await?;
    if !rows.iter().any(|r| r.status == crate::model::Status::Error) {
        return Ok(0);
    }
    let failures = store.failure_counts().await?;
    Ok(crate::manager::failures::final_errors(
        &rows,
        &failures,
        options.max_retries,
        !options.no_retry_on_job_error,
    )
    .len())
}

/// One reusable job of this migration, as `--pool` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolJob {
    pub name: String,
    pub status: String,
    /// The include prefixes its spec holds now (its last or current run).
    pub prefixes: Vec<String>,
}

/// This migration's reusable jobs (names of its pool, between its buckets).
async fn pool_jobs(
    transfer: &dyn crate::transfer::TransferService,
    project: &str,
    options: &Options,
) -> Result<Vec<PoolJob>> {
    let ours = crate::transfer::pool_job_prefix(
        &options.source_bucket,
        &options.destination_bucket,
        &crate::settings::migration_key(options),
    );
    let jobs = transfer
        .list_jobs(&crate::transfer::JobFilter {
            project_id: project.to_string(),
            source_bucket: Some(options.source_bucket.clone()),
            sink_bucket: Some(options.destination_bucket.clone()),
            ..Default::default()
        })
        .await?;
    Ok(jobs
        .into_iter()
        .filter(|j| j.name.starts_with(&ours))
        .map(|j| PoolJob {
            status: j.status.name().to_string(),
            prefixes: j.transfer_spec.include_prefixes().to_vec(),
            name: j.name,
        })
        .collect())
}

fn pool_text(jobs: &[PoolJob]) -> String {
    let mut text = format!("\nReusable jobs of this migration: {}\n", jobs.len());
    for job in jobs {
        text.push_str(&format!(
            "  {} {} (last prefix: {})\n",
            job.name,
            job.status,
            job.prefixes.first().map_or("none", String::as_str)
        ));
    }
    text
}

/// Prints the report once, or redraws it until the migration ends or `stop`.
pub async fn run(
    options: &Options,
    flags: &StatusFlags,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = open_store(options)?;
    let pool = if flags.pool {
        Some((
            crate::settings::open_transfer(options, crate::transfer::local::Mode::Control)?,
            crate::settings::project_id(options)?,
        ))
    } else {
        None
    };
    let retry_errors = !options.no_retry_on_job_error;
    let redraw = flags.watch && !flags.json && std::io::stdout().is_terminal();
    let mut drawn_lines = 0;
    tokio::pin!(stop);
    loop {
        let params = StatusParams {
            stall_after: chrono::Duration::milliseconds((options.stall_after * 1000.0) as i64),
            ..StatusParams::new(retry_errors, options.max_retries, flags.limit)
        };
        let report = read_status(store.as_ref(), chrono::Utc::now(), &params).await?;
        let jobs = match &pool {
            Some((transfer, project)) => {
                Some(pool_jobs(transfer.as_ref(), project, options).await?)
            }
            None => None,
        };
        // Every failed object by name (the transfer logs the manager read).
        let failed_objects = store.count_all_failed_objects().await?;
        let text = if flags.json {
            let mut value = serde_json::to_value(&report)
                .map_err(|e| Error::Input(format!("cannot encode the report: {e}")))?;
            if let Some(map) = value.as_object_mut() {
                map.insert(
                    "failed_objects_recorded".into(),
                    serde_json::json!(failed_objects),
                );
            }
            if let (Some(jobs), Some(map)) = (&jobs, value.as_object_mut()) {
                map.insert("pool".into(), serde_json::json!(jobs));
            }
            let mut json = value.to_string();
            json.push('\n');
            json
        } else {
            let mut text = report.to_text();
            if failed_objects > 0 {
                text.push_str(&format!(
                    "Failed objects recorded by name: {failed_objects} (sjm.State(...).failed_objects(), \
                     table {}_failed_objects)\n",
                    options.job_table
                ));
            }
            if let Some(jobs) = &jobs {
                text.push_str(&pool_text(jobs));
            }
            text
        };
        let mut out = std::io::stdout().lock();
        if redraw && drawn_lines > 0 {
            // Up to the first line of the previous report, clear below it.
            let _ = write!(out, "\x1b[{drawn_lines}A\x1b[J");
        }
        let _ = out.write_all(text.as_bytes());
        if flags.watch && !redraw && !flags.json {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        drawn_lines = text.lines().count();
        if !flags.watch {
            return Ok(());
        }
        let waiting_on_errors_only = crate::model::Status::ALL
            .iter()
            .filter(|s| has_work_left(**s, false))
            .all(|s| report.prefixes.get(s.as_str()).copied().unwrap_or(0) == 0);
        let finals = if waiting_on_errors_only && retry_errors {
            final_errors(store.as_ref(), options).await?
        } else {
            0
        };
        if finished(&report.prefixes, retry_errors, finals) {
            // Ended: with the manager's exit code meaning (0 done, 4 errors).
            let errors = report.prefixes.get("error").copied().unwrap_or(0);
            if errors > 0 {
                return Err(Error::FinishedWithErrors(format!(
                    "the migration ended with {errors} prefixes in error: fix the cause, then \
                     requeue them with sts-requeue"
                )));
            }
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(flags.interval) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parse(list: &[&str]) -> Result<(Options, StatusFlags)> {
        match super::super::parse(&TOOL, &args(list))? {
            super::super::Parsed::Run(options, found) => {
                Ok((*options, StatusFlags::parse(&found)?))
            }
            super::super::Parsed::Print(text) => Err(Error::Input(text)),
        }
    }

    #[test]
    fn own_flags_parse_beside_the_shared_options() {
        let (options, flags) = parse(&[
            "--state",
            "sqlite:x.db",
            "--json",
            "--interval=2.5",
            "--limit",
            "3",
            "--watch",
        ])
        .unwrap();
        assert_eq!(
            flags,
            StatusFlags {
                json: true,
                watch: true,
                interval: Duration::from_millis(2500),
                limit: 3,
                pool: false,
            }
        );
        assert_eq!(options.state, "sqlite:x.db");
    }

    #[test]
    fn a_watch_ends_when_only_errors_out_of_retries_are_left() {
        let report = |error: usize, running: usize| {
            std::collections::BTreeMap::from([("error", error), ("running", running)])
        };
        assert!(finished(&report(2, 0), true, 2));
        assert!(
            !finished(&report(2, 0), true, 1),
            "one error will be retried"
        );
        assert!(!finished(&report(2, 1), true, 2), "one prefix still runs");
        assert!(
            finished(&report(2, 0), false, 0),
            "errors are never retried"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        for bad in [
            &["--interval", "0"][..],
            &["--interval"],
            &["--limit", "-1"],
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad[0]), "{error}");
        }
    }
}
