//! `sts-cutover`: keep the destination current with delta passes until
//! one copies little, then (`--frozen`, writes to the source stopped) one
//! final pass and the proof: every prefix verified as `sts-verify --all`.
//!
//! The migration is pass 1. A delta pass runs every prefix again with
//! `lastModifiedSince` (its previous successful operation's start, less
//! [`DELTA_MARGIN_SECONDS`]) and `overwriteWhen: DIFFERENT`
//! (`manager::passes`). Passes are recorded in `{job_table}_passes` and
//! `{job_table}_pass_prefixes`; a pass in progress is resumed by a new run
//! (its prefixes are queued once: the pass row's `queued_at` says so).

use std::collections::HashMap;

use chrono::{Duration, Utc};

use super::flags::{given, last, Flag, FlagGroup, ToolFlags};
use super::verify::{run_verify, VerifyArgs};
use super::{Invocation, Running, Tool, CUTOVER};
use crate::error::{Error, Result};
use crate::manager::passes::{plan_pass, recorded_specs, PassKind, PassSpec, DELTA_MARGIN_SECONDS};
use crate::model::{ChangeSet, Counters, TransferOperation};
use crate::options::{Options, GENERAL, HEARTBEAT, JOBS, LOOP, OBJECTS, STATE, TRANSFER};
use crate::records::{Pass, PassPrefix};
use crate::settings::{open_manager, open_store};
use crate::store::StateStore;
use crate::verify::VerifyResult;

pub const CUTOVER_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "cutover options",
    flags: &[
        Flag::value(
            "until-objects",
            "N",
            "Run delta passes until one copies fewer than N objects (default: 1000)",
        ),
        Flag::value(
            "max-passes",
            "N",
            "Run at most N delta passes in this run (default: 10)",
        ),
        Flag::switch(
            "frozen",
            "Writes to the source are stopped: run one final pass, then verify every prefix;\n\
             exit 0 only when the destination matches",
        ),
        Flag::switch(
            "delete-unique-in-destination",
            "With --frozen: the final pass mirrors (deleteObjectsUniqueInSink), deleting what\n\
             only the destination holds under the prefixes; without it nothing is deleted",
        ),
    ],
}];

pub const TOOL: Tool = Tool {
    name: CUTOVER,
    about: "Keeps the destination current with delta passes (objects modified since the previous pass), then with --frozen runs the final pass and verifies every prefix.",
    after: "Exit codes: 0 converged (or, with --frozen, the destination matches), 4 a difference \
            after the final pass, 3 another manager holds the job table, 1 failure, 2 bad input.",
    groups: &[&GENERAL, &STATE, &TRANSFER, &JOBS, &OBJECTS, &LOOP, &HEARTBEAT],
    own: CUTOVER_FLAGS,
    stops_itself: false,
    run,
};

/// `sts-cutover`'s own flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoverArgs {
    pub until_objects: i64,
    pub max_passes: u32,
    pub frozen: bool,
    pub mirror: bool,
}

impl CutoverArgs {
    pub fn parse(found: &ToolFlags) -> std::result::Result<CutoverArgs, String> {
        let number = |flag: &str, default: u64, min: u64| match last(found, flag) {
            None => Ok(default),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n >= min && n <= i64::MAX as u64 => Ok(n),
                _ => Err(format!(
                    "option '--{flag}': '{text}' is not a whole number of at least {min}"
                )),
            },
        };
        let frozen = given(found, "frozen");
        let mirror = given(found, "delete-unique-in-destination");
        if mirror && !frozen {
            return Err(
                "--delete-unique-in-destination applies to the final pass: give it with --frozen"
                    .into(),
            );
        }
        Ok(CutoverArgs {
            until_objects: number("until-objects", 1000, 0)? as i64,
            max_passes: number("max-passes", 10, 1)?.min(u32::MAX as u64) as u32,
            frozen,
            mirror,
        })
    }
}

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let args = CutoverArgs::parse(&invocation.flags).map_err(Error::Input)?;
        run_cutover(invocation.options, &args).await
    })
}

/// Pass kinds as the pass table names them.
const MIGRATION: &str = "migration";
const DELTA: &str = "delta";
const FINAL: &str = "final";
const MIRROR: &str = "mirror";

fn is_final(pass: &Pass) -> bool {
    pass.kind == FINAL || pass.kind == MIRROR
}

pub async fn run_cutover(mut options: Options, args: &CutoverArgs) -> Result<i32> {
    if options.r#move && args.mirror {
        // STS: "This option and delete_objects_unique_in_sink are mutually
        // exclusive" (TransferOptions, discovery document).
        return Err(Error::Input(
            "--move and --delete-unique-in-destination cannot be combined: STS refuses              deleteObjectsFromSourceAfterTransfer with deleteObjectsUniqueInSink"
                .into(),
        ));
    }
    options.exit_when_done = true;
    let store = open_store(&options)?;
    let holder = crate::store::lease_holder();
    let ttl = std::time::Duration::from_secs_f64(options.lease_seconds);
    let mut deltas_run = 0u32;
    loop {
        // Passes are read and begun under the job table's lease, as the
        // manager that runs them holds it (given up before it takes it).
        hold_lease(&*store, &holder, ttl, &options.job_table).await?;
        let current = current_pass(&*store).await?;
        if current.ended_at.is_none() {
            store.release_lease(&holder).await?;
            // Begun, not ended (this run's, or one stopped): finish it.
            if current.pass > 1 && !is_final(&current) {
                deltas_run += 1;
            }
            let ended = finish_pass(&options, &*store, current).await?;
            crate::outln!("{}", describe(&ended));
            if is_final(&ended) {
                return prove(&options, ended.kind == MIRROR).await;
            }
            continue;
        }
        if args.frozen {
            if is_final(&current) {
                store.release_lease(&holder).await?;
                crate::outln!(
                    "The final pass (pass {}) is complete; verifying again (run sts-cutover \
                     without --frozen to start new passes).",
                    current.pass
                );
                return prove(&options, current.kind == MIRROR).await;
            }
            let kind = if args.mirror { MIRROR } else { FINAL };
            begin_pass(&options, &*store, &current, kind).await?;
            continue;
        }
        let converged = current.kind == DELTA && current.objects_copied < args.until_objects;
        if converged || deltas_run >= args.max_passes {
            store.release_lease(&holder).await?;
            advise(&current, args, converged);
            return Ok(0);
        }
        begin_pass(&options, &*store, &current, DELTA).await?;
    }
}

/// Takes (or renews) the job table's lease for `holder`, or says who has it.
async fn hold_lease(
    store: &dyn StateStore,
    holder: &str,
    ttl: std::time::Duration,
    table: &str,
) -> Result<()> {
    match store.acquire_lease(holder, ttl).await? {
        crate::store::Lease::Acquired => Ok(()),
        crate::store::Lease::HeldBy { holder, until } => {
            Err(Error::from(crate::manager::ManagerError::LeaseHeld {
                holder,
                table: table.to_string(),
                until: until.to_rfc3339(),
            }))
        }
    }
}

/// The latest pass; the migration recorded as pass 1 when no pass is.
async fn current_pass(store: &dyn StateStore) -> Result<Pass> {
    if let Some(latest) = store.read_passes().await?.pop() {
        return Ok(latest);
    }
    let now = Utc::now();
    let jobs = store.read_jobs().await?;
    let rows: Vec<PassPrefix> = jobs
        .iter()
        .map(|j| PassPrefix {
            prefix: j.prefix.clone(),
            pass: 1,
            modified_since: None,
            mirror: false,
        })
        .collect();
    store.save_pass_prefixes(&rows).await?;
    let first = Pass {
        pass: 1,
        kind: MIGRATION.into(),
        started_at: jobs.iter().map(|j| j.last_updated).min().unwrap_or(now),
        // The migration's prefixes were queued by sts-prepare-tables.
        queued_at: Some(now),
        ended_at: None,
        ..Pass::default()
    };
    store.save_pass(&first).await?;
    Ok(first)
}

/// Each prefix's latest operation as the history holds it.
async fn latest_operations(store: &dyn StateStore) -> Result<HashMap<String, TransferOperation>> {
    Ok(store
        .latest_snapshots()
        .await?
        .into_iter()
        .filter_map(|row| {
            let op = serde_json::from_str::<TransferOperation>(row.operation_results.as_deref()?)
                .ok()?;
            Some((row.prefix, op))
        })
        .collect())
}

/// Records the next pass after `previous` and its prefixes' specs.
async fn begin_pass(
    options: &Options,
    store: &dyn StateStore,
    previous: &Pass,
    kind: &str,
) -> Result<()> {
    let jobs = store.read_jobs().await?;
    let latest = latest_operations(store).await?;
    let plan_kind = if kind == MIRROR {
        PassKind::Mirror
    } else {
        PassKind::Delta
    };
    let planned = plan_pass(
        &jobs,
        &latest,
        plan_kind,
        Duration::seconds(DELTA_MARGIN_SECONDS),
    )
    .map_err(|e| Error::Failed(format!("cannot begin pass {}: {e}", previous.pass + 1)))?;
    let pass = previous.pass + 1;
    let rows: Vec<PassPrefix> = planned
        .iter()
        .map(|p| PassPrefix {
            prefix: p.prefix.clone(),
            pass,
            modified_since: p.spec.modified_since,
            mirror: p.spec.delete_unique_in_sink,
        })
        .collect();
    store.save_pass_prefixes(&rows).await?;
    store
        .save_pass(&Pass {
            pass,
            kind: kind.into(),
            started_at: Utc::now(),
            ..Pass::default()
        })
        .await?;
    tracing::info!(
        pass,
        kind,
        prefixes = rows.len(),
        job_table = %options.job_table,
        "pass recorded"
    );
    Ok(())
}

/// Queues the pass's prefixes (once), runs the manager on them until every
/// prefix is done, and records the pass's end and figures.
async fn finish_pass(options: &Options, store: &dyn StateStore, mut pass: Pass) -> Result<Pass> {
    let rows = store.read_pass_prefixes().await?;
    let members: std::collections::HashSet<String> = rows
        .iter()
        .filter(|r| r.pass == pass.pass)
        .map(|r| r.prefix.clone())
        .collect();
    // The migration's prefixes keep the migration's spec.
    let specs: HashMap<String, PassSpec> = if pass.kind == MIGRATION {
        HashMap::new()
    } else {
        recorded_specs(&rows, pass.pass)
    };
    let mut manager = open_manager(options.clone()).await?.with_pass_specs(specs);
    // Every change to the job table is made under the manager's lease.
    manager.claim_lease().await?;
    if pass.queued_at.is_none() {
        let now = Utc::now();
        let mut changes = ChangeSet::default();
        let mut prefixes: Vec<&String> = members.iter().collect();
        prefixes.sort();
        for prefix in prefixes {
            changes.requeue(prefix, now);
        }
        for chunk in changes
            .updates
            .chunks(10_000)
            .zip(changes.history.chunks(10_000))
        {
            // A pass runs whole prefixes: no manifest of an earlier
            // requeue applies to them.
            super::requeue::plain_requeue(
                store,
                &ChangeSet {
                    updates: chunk.0.to_vec(),
                    history: chunk.1.to_vec(),
                },
            )
            .await?;
        }
        pass.queued_at = Some(now);
        store.save_pass(&pass).await?;
    }
    tracing::info!(pass = pass.pass, kind = %pass.kind, "running the pass");
    manager.run(std::future::pending()).await?;
    drop(manager);
    let latest = latest_operations(store).await?;
    let mut total = Counters::default();
    for (prefix, op) in &latest {
        if members.contains(prefix) {
            total += &op.counters;
        }
    }
    pass.objects_found = total.objects_found_from_source;
    pass.bytes_found = total.bytes_found_from_source;
    pass.objects_copied = total.objects_copied_to_sink;
    pass.bytes_copied = total.bytes_copied_to_sink;
    pass.objects_deleted = total.objects_deleted_from_sink;
    pass.ended_at = Some(Utc::now());
    store.save_pass(&pass).await?;
    if total.objects_deleted_from_source > 0 {
        crate::outln!(
            "Pass {} moved {} objects ({}): deleted from the source once copied.",
            pass.pass,
            total.objects_deleted_from_source,
            super::plan::human_bytes(total.bytes_deleted_from_source.max(0) as u64)
        );
    }
    Ok(pass)
}

fn describe(pass: &Pass) -> String {
    format!(
        "Pass {} ({}) done: {} objects ({}) found, {} objects ({}) copied, {} deleted from the destination.",
        pass.pass,
        pass.kind,
        pass.objects_found,
        super::plan::human_bytes(pass.bytes_found.max(0) as u64),
        pass.objects_copied,
        super::plan::human_bytes(pass.bytes_copied.max(0) as u64),
        pass.objects_deleted,
    )
}

/// What to do next, once deltas are small enough (or the passes allowed ran).
fn advise(last: &Pass, args: &CutoverArgs, converged: bool) {
    let took = last
        .queued_at
        .zip(last.ended_at)
        .map(|(from, to)| (to - from).num_seconds().max(0))
        .unwrap_or(0);
    if converged {
        crate::outln!(
            "Converged: pass {} copied {} objects ({}), fewer than {}.",
            last.pass,
            last.objects_copied,
            super::plan::human_bytes(last.bytes_copied.max(0) as u64),
            args.until_objects
        );
    } else {
        crate::outln!(
            "Not converged after {} delta passes: pass {} copied {} objects ({}), not fewer than {}.",
            args.max_passes,
            last.pass,
            last.objects_copied,
            super::plan::human_bytes(last.bytes_copied.max(0) as u64),
            args.until_objects
        );
    }
    crate::outln!(
        "A final pass should take about as long as the last one: {took} s (pass {} ran {} s from queue to end).",
        last.pass,
        took
    );
    crate::outln!(
        "Next: freeze writes to the source, then run sts-cutover --frozen (add \
         --delete-unique-in-destination to delete what only the destination holds)."
    );
}

/// The proof: every prefix verified as `sts-verify --all`; 0 when the
/// destination matches, else 4 with the differences named. Objects only
/// the destination holds are counted apart, and are a difference only
/// after a mirror.
async fn prove(options: &Options, mirror: bool) -> Result<i32> {
    let report = run_verify(
        options,
        &VerifyArgs {
            all: true,
            concurrency: 16,
            ..VerifyArgs::default()
        },
    )
    .await?;
    crate::out!("{}", super::verify::render(&report));
    let unique: u64 = report.checked.iter().map(|c| c.unique_in_destination).sum();
    let mismatched = report.mismatched();
    if mirror {
        for checked in report
            .checked
            .iter()
            .filter(|c| c.unique_in_destination > 0)
        {
            crate::outln!(
                "ONLY IN DESTINATION {}: {} objects after a mirror",
                checked.verification.prefix,
                checked.unique_in_destination
            );
        }
    }
    crate::outln!("Objects only in the destination: {unique}.");
    let failed = mismatched > 0 || (mirror && unique > 0);
    if failed {
        crate::outln!(
            "The destination differs from the source: {} prefixes mismatched{}.",
            mismatched,
            if mirror && unique > 0 {
                format!(", {unique} objects only in the destination")
            } else {
                String::new()
            }
        );
        return Ok(4);
    }
    let verified = report
        .checked
        .iter()
        .filter(|c| c.verification.result == VerifyResult::Verified)
        .count();
    crate::outln!(
        "The destination {} the source: {verified} prefixes verified.",
        if mirror { "mirrors" } else { "holds all of" }
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&'static str, &str)]) -> ToolFlags {
        let mut found = ToolFlags::new();
        for (k, v) in pairs {
            found.entry(*k).or_default().push(v.to_string());
        }
        found
    }

    #[test]
    fn flags_parse_with_defaults_and_refuse_a_mirror_without_frozen() {
        let args = CutoverArgs::parse(&flags(&[])).unwrap();
        assert_eq!(args.until_objects, 1000);
        assert_eq!(args.max_passes, 10);
        assert!(!args.frozen && !args.mirror);
        assert!(CutoverArgs::parse(&flags(&[("delete-unique-in-destination", "")])).is_err());
        assert!(CutoverArgs::parse(&flags(&[("max-passes", "0")])).is_err());
        assert!(CutoverArgs::parse(&flags(&[("until-objects", "x")])).is_err());
        let frozen = CutoverArgs::parse(&flags(&[
            ("frozen", ""),
            ("delete-unique-in-destination", ""),
        ]))
        .unwrap();
        assert!(frozen.frozen && frozen.mirror);
    }
}
