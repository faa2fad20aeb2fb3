//! `sts-verify`: list source and destination per prefix, compare, record
//! the verdicts in the verification table, and optionally requeue.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::flags::{Flag, FlagGroup, ToolFlags};
use super::plan::{concurrency_flag, human_bytes, ProgressLine};
use super::{Invocation, Running, Tool, VERIFY};
use crate::error::{Error, Result};
use crate::metadata::Preserve;
use crate::model::TransferOperation;
use crate::options::{Options, BUCKETS, GENERAL, OBJECTS, STATE, TRANSFER};
use crate::settings::{open_lister, open_store};
use crate::storage::{ListProgress, ObjectLister};
use crate::verify::{
    compare_kept, compare_moved, prefixes_to_check, requeue, Offense, Verification, VerifyResult,
};

#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    /// Prefixes to check whatever their status; none: every `done` prefix.
    pub prefixes: Vec<String>,
    pub requeue: bool,
    /// Every done prefix, whatever was verified before.
    pub all: bool,
    pub concurrency: usize,
    /// BigQuery inventory tables of the source and destination: compare
    /// with SQL instead of listing.
    pub source_inventory: Option<String>,
    pub destination_inventory: Option<String>,
    /// With `requeue`: requeue with a manifest of every offending object,
    /// written in this folder (`--objects --manifest-location`).
    pub manifest_location: Option<crate::manifest::GcsLocation>,
}

/// `sts-verify`'s own flags.
pub const VERIFY_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "verify options",
    flags: &[
        Flag::value(
            "prefix",
            "P",
            "Check this prefix (repeatable); default: every done prefix not verified\n\
             since its last transfer",
        )
        .repeated(),
        Flag::switch(
            "all",
            "Check every done prefix, whatever was verified before (objects changed\n\
             or deleted after a clean verification are caught)",
        ),
        Flag::switch(
            "requeue",
            "Put mismatched prefixes back to waiting, for the manager to copy again",
        ),
        Flag::switch(
            "objects",
            "With --requeue: copy again only the missing and different objects, each\n\
             mismatched prefix with a CSV manifest of them under --manifest-location",
        ),
        Flag::value(
            "manifest-location",
            "gs://BUCKET/PATH/",
            "Where --objects writes its manifests",
        ),
        Flag::value(
            "concurrency",
            "N",
            "Prefixes to check at once (default: 16)",
        ),
        Flag::value(
            "source-inventory",
            "TABLE",
            "With --state bigquery: compare this object inventory table of the source\n\
             ([project.]dataset.table, Cloud Storage inventory report columns) with\n\
             --destination-inventory, with SQL instead of listing; give both",
        ),
        Flag::value(
            "destination-inventory",
            "TABLE",
            "The destination's inventory table, with --source-inventory",
        ),
    ],
}];

pub const TOOL: Tool = Tool {
    name: VERIFY,
    about: "Compares source and destination for every done prefix (name, size, crc32c, md5 where both have it; with --preserve the metadata kept; with --move what is left in the source) and records the verdicts in the verification table.",
    after: "Exit codes: 0 every checked prefix matches, 4 a mismatch, 1 failure, 2 bad input.",
    groups: &[&GENERAL, &STATE, &TRANSFER, &BUCKETS, &OBJECTS],
    own: VERIFY_FLAGS,
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let args = VerifyArgs::parse(&invocation.flags).map_err(Error::Input)?;
        let report = run_verify(&invocation.options, &args).await?;
        crate::out!("{}", render(&report));
        Ok(if report.mismatched() > 0 { 4 } else { 0 })
    })
}

impl VerifyArgs {
    pub fn parse(found: &ToolFlags) -> std::result::Result<VerifyArgs, String> {
        let prefixes = found.get("prefix").cloned().unwrap_or_default();
        if let Some(bad) = prefixes.iter().find(|p| p.is_empty()) {
            return Err(format!("option '--prefix': '{bad}' is empty"));
        }
        let last = |flag: &str| found.get(flag).and_then(|v| v.last()).cloned();
        let (source_inventory, destination_inventory) =
            (last("source-inventory"), last("destination-inventory"));
        if source_inventory.is_some() != destination_inventory.is_some() {
            return Err(
                "give both --source-inventory and --destination-inventory, or neither".into(),
            );
        }
        let requeue = found.contains_key("requeue");
        let manifest_location = match (found.contains_key("objects"), last("manifest-location")) {
            (false, None) => None,
            (true, Some(_)) if !requeue => {
                return Err("--objects goes with --requeue".into());
            }
            (true, Some(_)) if source_inventory.is_some() => {
                return Err(
                    "--objects needs every offending name: it lists the buckets, so not with \
                     --source-inventory"
                        .into(),
                );
            }
            (true, Some(text)) => Some(
                crate::manifest::GcsLocation::parse(&text, true)
                    .map_err(|e| format!("option '--manifest-location': {e}"))?,
            ),
            (true, None) => {
                return Err(
                    "--objects needs --manifest-location gs://BUCKET/PATH/ (where the manifests are written)"
                        .into(),
                )
            }
            (false, Some(_)) => return Err("--manifest-location goes with --objects".into()),
        };
        Ok(VerifyArgs {
            prefixes,
            manifest_location,
            requeue,
            all: found.contains_key("all"),
            concurrency: concurrency_flag(found)?,
            source_inventory,
            destination_inventory,
        })
    }
}

/// One checked prefix: the row written and the first offences.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub verification: Verification,
    pub offenses: Vec<Offense>,
    /// Objects under the prefix only the destination holds (not offences:
    /// a destination may hold more; 0 when compared by inventory).
    pub unique_in_destination: u64,
    /// Every offending object (with `--objects` only), for its manifest.
    #[serde(skip)]
    pub all_offending: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub checked: Vec<Checked>,
    /// Done prefixes verified since their last transfer.
    pub skipped: usize,
    pub requeued: usize,
    /// With `--requeue --objects`: each requeued prefix's manifest (absent
    /// from the JSON without).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<crate::records::PendingManifest>,
    pub list_requests: u64,
    pub bytes_compared: u64,
}

impl VerifyReport {
    pub fn mismatched(&self) -> usize {
        self.checked
            .iter()
            .filter(|c| c.verification.result == VerifyResult::Mismatch)
            .count()
    }
}

/// What a listing comparison checks beyond names and content.
#[derive(Debug, Default)]
struct Checks {
    /// The metadata `--preserve` kept.
    preserve: Preserve,
    /// `--move`: each prefix's latest operation's start, by prefix (see
    /// [`crate::verify::compare_moved`]).
    moved: Option<HashMap<String, Option<DateTime<Utc>>>>,
}

async fn check_prefix(
    lister: Arc<dyn ObjectLister>,
    source: String,
    destination: String,
    prefix: String,
    progress: Arc<ListProgress>,
    checks: Arc<Checks>,
    every_offense: bool,
) -> Result<(Checked, u64)> {
    let (from, to) = tokio::join!(
        lister.list_all(&source, &prefix, true),
        lister.list_all(&destination, &prefix, true)
    );
    let (from, to) = (from?, to?);
    progress
        .objects
        .fetch_add(from.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let bytes: u64 = from.iter().map(|o| o.size).sum();
    progress
        .bytes
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    if let Some(starts) = &checks.moved {
        let started = starts.get(&prefix).copied().flatten();
        let (verification, offenses) = compare_moved(&prefix, &from, &to, started, Utc::now());
        // The source gave its objects away: none is "only" in the destination.
        return Ok((
            Checked {
                verification,
                offenses,
                unique_in_destination: 0,
                all_offending: Vec::new(),
            },
            bytes,
        ));
    }
    let (verification, offenses) = compare_kept(&prefix, &from, &to, Utc::now(), &checks.preserve);
    Ok((
        Checked {
            offenses,
            unique_in_destination: crate::verify::only_in_destination(&from, &to),
            all_offending: match every_offense && verification.result == VerifyResult::Mismatch {
                true => crate::verify::offending_names(&from, &to),
                false => Vec::new(),
            },
            verification,
        },
        bytes,
    ))
}

/// Lists and compares every prefix, `concurrency` at a time; the first
/// failure (if any) comes back after every other prefix was checked.
async fn compare_listings(
    options: &Options,
    args: &VerifyArgs,
    prefixes: Vec<String>,
    report: &mut VerifyReport,
    moved: Option<HashMap<String, Option<DateTime<Utc>>>>,
) -> Result<Option<Error>> {
    let checks = Arc::new(Checks {
        preserve: options.preserve_fields()?,
        moved,
    });
    let lister = open_lister(options)?;
    lister.get_bucket(&options.source_bucket).await?;
    lister.get_bucket(&options.destination_bucket).await?;
    let progress = Arc::new(ListProgress::default());
    let line = ProgressLine::start("verifying", Arc::clone(&progress));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let every_offense = args.manifest_location.is_some();
    for prefix in prefixes {
        let (lister, semaphore, progress, checks) = (
            Arc::clone(&lister),
            Arc::clone(&semaphore),
            Arc::clone(&progress),
            Arc::clone(&checks),
        );
        let (source, destination) = (
            options.source_bucket.clone(),
            options.destination_bucket.clone(),
        );
        tasks.spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|e| Error::Input(e.to_string()))?;
            check_prefix(
                lister,
                source,
                destination,
                prefix,
                progress,
                checks,
                every_offense,
            )
            .await
        });
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((checked, bytes))) => {
                report.bytes_compared += bytes;
                report.checked.push(checked);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(Error::Input(format!("a check stopped: {e}")));
            }
        }
    }
    line.finish().await;
    report.list_requests = lister.requests();
    Ok(failure)
}

/// The same verdicts from two inventory tables, with SQL.
async fn compare_inventories(
    options: &Options,
    source: &str,
    destination: &str,
    prefixes: &[String],
) -> Result<(Vec<Checked>, u64)> {
    use crate::storage::inventory::{Inventory, InventoryReader};
    let store = super::plan::inventory_store(options)?;
    let project = store.job_table().project.clone();
    let source = Inventory::parse(source, &project, &options.source_bucket)?;
    let destination = Inventory::parse(destination, &project, &options.destination_bucket)?;
    let now = Utc::now();
    let (counts, offending) = InventoryReader::new(store.api())
        .compare(&source, &destination, prefixes)
        .await?;
    let bytes = counts.iter().map(|c| c.2).sum();
    let counts: HashMap<String, (u64, u64, u64)> = counts
        .into_iter()
        .map(|(p, c, _, m, d)| (p, (c, m, d)))
        .collect();
    let mut offenses: HashMap<String, Vec<Offense>> = HashMap::new();
    for (prefix, name, reason) in offending {
        offenses
            .entry(prefix)
            .or_default()
            .push(Offense { name, reason });
    }
    let checked = prefixes
        .iter()
        .map(|prefix| {
            let (compared, missing, different) = counts.get(prefix).copied().unwrap_or_default();
            let offenses = offenses.remove(prefix).unwrap_or_default();
            Checked {
                verification: Verification {
                    prefix: prefix.clone(),
                    result: if missing + different == 0 {
                        VerifyResult::Verified
                    } else {
                        VerifyResult::Mismatch
                    },
                    objects_compared: compared,
                    missing,
                    different,
                    checked_at: now,
                    offending_objects: offenses.iter().map(|o| o.name.clone()).collect(),
                },
                offenses,
                unique_in_destination: 0,
                all_offending: Vec::new(),
            }
        })
        .collect();
    Ok((checked, bytes))
}

/// Each prefix's latest operation's start as the history holds it (what
/// a moved prefix is judged against).
async fn operation_starts(
    store: &dyn crate::store::StateStore,
) -> Result<HashMap<String, Option<DateTime<Utc>>>> {
    Ok(store
        .latest_snapshots()
        .await?
        .into_iter()
        .map(|row| {
            let start = row
                .operation_results
                .as_deref()
                .and_then(|body| serde_json::from_str::<TransferOperation>(body).ok())
                .and_then(|op| op.start_time);
            (row.prefix, start)
        })
        .collect())
}

pub async fn run_verify(options: &Options, args: &VerifyArgs) -> Result<VerifyReport> {
    let inventories = args.source_inventory.is_some() || args.destination_inventory.is_some();
    if inventories && (options.r#move || !options.preserve_fields()?.is_empty()) {
        return Err(Error::Input(
            "--preserve and --move are verified by listing, not from inventory tables: leave \
             out --source-inventory and --destination-inventory"
                .into(),
        ));
    }
    let store = open_store(options)?;
    let jobs = store.read_jobs().await?;
    // A prefix of no row (a typo, a missing '/') would be checked, recorded
    // and never requeued: refused before anything is listed.
    if let Some(unknown) = crate::verify::unknown_prefixes(&jobs, &args.prefixes).first() {
        return Err(Error::Input(format!(
            "option '--prefix': {} is not in job table '{}'",
            crate::prefixes::shown_prefix(unknown),
            options.job_table
        )));
    }
    let previous = store.read_verifications().await?;
    let (prefixes, skipped) = prefixes_to_check(&jobs, &previous, &args.prefixes, args.all);
    let mut report = VerifyReport {
        skipped,
        ..VerifyReport::default()
    };
    if prefixes.is_empty() {
        return Ok(report);
    }
    let moved = if options.r#move {
        Some(operation_starts(&*store).await?)
    } else {
        None
    };
    let failure = match (&args.source_inventory, &args.destination_inventory) {
        (Some(source), Some(destination)) => {
            let (checked, bytes) =
                compare_inventories(options, source, destination, &prefixes).await?;
            report.checked = checked;
            report.bytes_compared = bytes;
            None
        }
        _ => compare_listings(options, args, prefixes, &mut report, moved).await?,
    };
    report
        .checked
        .sort_by(|a, b| a.verification.prefix.cmp(&b.verification.prefix));
    // What was checked is kept even when another prefix's listing failed.
    let rows: Vec<Verification> = report
        .checked
        .iter()
        .map(|c| c.verification.clone())
        .collect();
    for batch in rows.chunks(1000) {
        store.save_verifications(batch).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if args.requeue {
        let mismatched: Vec<&str> = report
            .checked
            .iter()
            .filter(|c| c.verification.result == VerifyResult::Mismatch)
            .map(|c| c.verification.prefix.as_str())
            .collect();
        let changes = requeue(&jobs, &mismatched, Utc::now());
        match &args.manifest_location {
            Some(folder) => {
                // Only the prefixes `requeue` took (done or in error), each
                // with every offending object found by this run's listing.
                let taken: std::collections::HashSet<&str> =
                    changes.updates.iter().map(|u| u.prefix.as_str()).collect();
                let per_prefix: Vec<(String, Vec<String>)> = report
                    .checked
                    .iter()
                    .filter(|c| taken.contains(c.verification.prefix.as_str()))
                    .map(|c| (c.verification.prefix.clone(), c.all_offending.clone()))
                    .collect();
                let lister = open_lister(options)?;
                let done = super::requeue::requeue_with_objects(
                    store.as_ref(),
                    lister,
                    folder,
                    per_prefix,
                    Utc::now(),
                )
                .await?;
                report.requeued = done.requeued.len();
                report.manifests = done.manifests;
            }
            None => {
                super::requeue::plain_requeue(store.as_ref(), &changes).await?;
                report.requeued = changes.updates.len();
            }
        }
    }
    Ok(report)
}

/// The summary `sts-verify` prints: every mismatch with its first offending
/// objects, then the totals.
pub fn render(report: &VerifyReport) -> String {
    let mut out = String::new();
    for checked in &report.checked {
        let v = &checked.verification;
        if v.result == VerifyResult::Verified {
            continue;
        }
        out.push_str(&format!(
            "MISMATCH {}: {} objects compared, {} missing, {} different\n",
            v.prefix, v.objects_compared, v.missing, v.different
        ));
        for offense in checked.offenses.iter().take(10) {
            out.push_str(&format!("  {}: {}\n", offense.name, offense.reason));
        }
        let offending = v.missing.saturating_add(v.different);
        if offending > 10 {
            // The table keeps the first names only: say exactly that.
            let kept = v.offending_objects.len() as u64;
            out.push_str(&format!(
                "  ... {} more: {} offending objects in all, the first {kept} named in the \
                 verification table\n",
                offending - 10,
                offending
            ));
        }
    }
    let objects: u64 = report
        .checked
        .iter()
        .map(|c| c.verification.objects_compared)
        .sum();
    out.push_str(&format!(
        "Checked {} prefixes ({} objects, {}): {} verified, {} mismatched; {} skipped (verified since their last transfer).\n",
        report.checked.len(),
        objects,
        human_bytes(report.bytes_compared),
        report.checked.len() - report.mismatched(),
        report.mismatched(),
        report.skipped,
    ));
    if report.requeued > 0 {
        out.push_str(&format!(
            "Requeued {} mismatched prefixes: the manager copies them again.\n",
            report.requeued
        ));
    }
    for m in &report.manifests {
        out.push_str(&format!(
            "  {}: {} objects to copy again, manifest {}\n",
            m.prefix, m.objects, m.location
        ));
    }
    out
}
