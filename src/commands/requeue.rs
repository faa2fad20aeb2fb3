//! `sts-requeue`: puts prefixes back to `waiting` with a fresh retry count;
//! with `--failed-objects`, each with a manifest of its failed objects, so
//! the manager's next start of it copies only those.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::flags::{Flag, FlagGroup, ToolFlags};
use super::prefix_list::read_prefix_file;
use super::{Invocation, Running, Tool, REQUEUE};
use crate::error::{Error, Result};
use crate::manifest::GcsLocation;
use crate::model::{ChangeSet, PrefixJob, Status};
use crate::options::{Options, GENERAL, REQUEUE_PREFIXES, STATE, TRANSFER};
use crate::records::PendingManifest;
use crate::settings::{open_lister, open_store};
use crate::storage::ObjectLister;
use crate::store::StateStore;

/// `sts-requeue`'s own flags.
pub const REQUEUE_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "Failed objects",
    flags: &[
        Flag::switch(
            "failed-objects",
            "Re-run only the failed objects: for each prefix whose latest operation\n\
             failed objects (or each of --job-prefix-source-file), write a CSV manifest\n\
             of them under --manifest-location; its next start copies only those",
        ),
        Flag::value(
            "manifest-location",
            "gs://BUCKET/PATH/",
            "Where --failed-objects writes its manifests (the STS service agent needs\n\
             storage.objects.get there; with --transfer local:ROOT, ROOT/BUCKET/PATH)",
        ),
    ],
}];

pub const TOOL: Tool = Tool {
    name: REQUEUE,
    about: "Puts prefixes back to 'waiting' with a fresh retry count: every prefix in 'error', or those listed in --job-prefix-source-file; with --failed-objects, only their failed objects are copied again.",
    after: "",
    groups: &[&GENERAL, &STATE, &REQUEUE_PREFIXES, &TRANSFER],
    own: REQUEUE_FLAGS,
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let location = manifest_flags(&invocation.flags)?;
        let r = match location {
            Some(location) => {
                let chosen = chosen_prefixes(&invocation.options)?;
                let r = requeue_failed_objects(&invocation.options, chosen, &location).await?;
                if r.requeued.is_empty() {
                    crate::outln!(
                        "No failed objects to re-run (none recorded for any prefix's latest operation): nothing requeued."
                    );
                    return Ok(0);
                }
                r
            }
            None => requeue(&invocation.options).await?,
        };
        crate::outln!("Requeued {} prefixes.", r.requeued.len());
        for prefix in r.requeued.iter().take(20) {
            match r.manifests.iter().find(|m| &m.prefix == prefix) {
                Some(m) => crate::outln!(
                    "  {prefix:?}: {} failed objects, manifest {}",
                    m.objects,
                    m.location
                ),
                None => crate::outln!("  {prefix:?}"),
            }
        }
        if r.requeued.len() > 20 {
            crate::outln!("  ... and {} more", r.requeued.len() - 20);
        }
        Ok(0)
    })
}

/// `--failed-objects` and `--manifest-location` go together: the folder,
/// checked, or `None` for a plain requeue.
fn manifest_flags(flags: &ToolFlags) -> Result<Option<GcsLocation>> {
    let location = super::flags::last(flags, "manifest-location");
    match (super::flags::given(flags, "failed-objects"), location) {
        (false, None) => Ok(None),
        (true, None) => Err(Error::Input(
            "--failed-objects needs --manifest-location gs://BUCKET/PATH/ (where the manifests are written)".into(),
        )),
        (false, Some(_)) => Err(Error::Input(
            "--manifest-location goes with --failed-objects".into(),
        )),
        (true, Some(text)) => manifest_folder(text).map(Some),
    }
}

/// A manifest folder, `gs://BUCKET/PATH/`, or an input error naming it.
pub fn manifest_folder(text: &str) -> Result<GcsLocation> {
    GcsLocation::parse(text, true)
        .map_err(|e| Error::Input(format!("option '--manifest-location': {e}")))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RequeueReport {
    /// Prefixes put back to `waiting`.
    pub requeued: Vec<String>,
    /// With `--failed-objects`: each requeued prefix's manifest (absent
    /// from the JSON without).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<PendingManifest>,
    /// Prefixes whose manifest names fewer objects than failed (log
    /// entries missing), one line each; absent from the JSON when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn chosen_prefixes(options: &Options) -> Result<Option<Vec<String>>> {
    options
        .job_prefix_source_file
        .as_deref()
        .map(|p| read_prefix_file(Path::new(p), true))
        .transpose()
}

/// Puts prefixes back to `waiting` with a fresh retry count: those of
/// `--job-prefix-source-file` (a JSON array of prefixes, any status but in
/// flight), else every prefix in `error`. Refused whole, naming the prefix,
/// when one is unknown or its transfer is running or paused (starting it
/// again would run two operations on it). One transaction.
pub async fn requeue(options: &Options) -> Result<RequeueReport> {
    requeue_prefixes(options, chosen_prefixes(options)?).await
}

/// The rows of `chosen` (each known and not in flight), or every row in
/// `error` without.
fn targets<'a>(
    options: &Options,
    rows: &'a [PrefixJob],
    chosen: Option<&[String]>,
) -> Result<Vec<&'a PrefixJob>> {
    let by_prefix: HashMap<&str, &PrefixJob> =
        rows.iter().map(|r| (r.prefix.as_str(), r)).collect();
    let Some(prefixes) = chosen else {
        return Ok(rows.iter().filter(|r| r.status == Status::Error).collect());
    };
    let mut targets = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let shown = crate::prefixes::shown_prefix(prefix);
        let row = by_prefix.get(prefix.as_str()).ok_or_else(|| {
            Error::Input(format!(
                "{shown} is not in job table '{}'",
                options.job_table
            ))
        })?;
        not_in_flight(row)?;
        targets.push(*row);
    }
    Ok(targets)
}

fn not_in_flight(row: &PrefixJob) -> Result<()> {
    if matches!(row.status, Status::Running | Status::Paused) {
        return Err(Error::Input(format!(
            "{} is {} (its transfer {}): wait for it to end, or cancel it first",
            crate::prefixes::shown_prefix(&row.prefix),
            row.status.as_str(),
            row.job_name.as_deref().unwrap_or("is starting")
        )));
    }
    Ok(())
}

/// [`requeue`] of the prefixes given (every prefix in `error` without). A
/// plain requeue: a pending manifest of these prefixes no longer applies.
pub async fn requeue_prefixes(
    options: &Options,
    chosen: Option<Vec<String>>,
) -> Result<RequeueReport> {
    let store = open_store(options)?;
    let rows = store.read_jobs().await?;
    let targets = targets(options, &rows, chosen.as_deref())?;
    let now = Utc::now();
    let mut changes = ChangeSet::default();
    for row in &targets {
        changes.requeue(&row.prefix, now);
    }
    plain_requeue(store.as_ref(), &changes).await?;
    Ok(RequeueReport {
        requeued: targets.iter().map(|r| r.prefix.clone()).collect(),
        ..RequeueReport::default()
    })
}

/// Writes a requeue that carries no manifest: the prefixes' pending
/// manifests are dropped first (a crash between leaves them as they were,
/// with no manifest: a whole-prefix run, never a stale manifest).
pub async fn plain_requeue(store: &dyn StateStore, changes: &ChangeSet) -> Result<()> {
    let cleared: Vec<(String, Option<String>)> = changes
        .updates
        .iter()
        .map(|u| (u.prefix.clone(), None))
        .collect();
    store.clear_manifests(&cleared).await?;
    store.apply(changes).await?;
    Ok(())
}

/// `--failed-objects`: the prefixes of `chosen` (each must have failed
/// objects), else every prefix with some, each requeued with a manifest of
/// the objects its latest operation (the one its row names) failed. The
/// manifests are written first, then the requeue and the manifest rows in
/// one transaction: nothing is half-written.
pub async fn requeue_failed_objects(
    options: &Options,
    chosen: Option<Vec<String>>,
    folder: &GcsLocation,
) -> Result<RequeueReport> {
    let store = open_store(options)?;
    let rows = store.read_jobs().await?;
    let latest: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| Some((r.prefix.as_str(), r.job_name.as_deref()?)))
        .collect();
    let mut failed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for object in store.read_failed_objects().await? {
        if object.action == "COPY"
            && latest.get(object.prefix.as_str()) == Some(&object.operation.as_str())
        {
            failed
                .entry(object.prefix)
                .or_default()
                .insert(object.object);
        }
    }
    let per_prefix: Vec<(String, Vec<String>)> = match &chosen {
        Some(prefixes) => {
            targets(options, &rows, Some(prefixes))?;
            let mut picked = Vec::new();
            for prefix in prefixes {
                let names = failed.remove(prefix).ok_or_else(|| {
                    Error::Input(format!(
                        "{}: its latest operation has no failed objects recorded \
                         (requeue it without --failed-objects to copy it whole)",
                        crate::prefixes::shown_prefix(prefix)
                    ))
                })?;
                picked.push((prefix.clone(), names.into_iter().collect()));
            }
            picked
        }
        None => {
            let by_prefix: HashMap<&str, &PrefixJob> =
                rows.iter().map(|r| (r.prefix.as_str(), r)).collect();
            let mut picked = Vec::new();
            for (prefix, names) in failed {
                // Failed objects of a prefix in flight are being retried.
                let Some(row) = by_prefix.get(prefix.as_str()) else {
                    continue;
                };
                if not_in_flight(row).is_ok() {
                    picked.push((prefix, names.into_iter().collect()));
                }
            }
            picked
        }
    };
    if per_prefix.is_empty() {
        return Ok(RequeueReport::default());
    }
    let unnamed = unnamed_failures(store.as_ref(), &per_prefix).await?;
    let lister = open_lister(options)?;
    let mut report =
        requeue_with_objects(store.as_ref(), lister, folder, per_prefix, Utc::now()).await?;
    report.warnings = unnamed;
    Ok(report)
}

/// Prefixes whose latest operation failed more objects than the transfer
/// logs named (entries that never arrived, or not read yet): said, since
/// their manifest leaves those out (`sts-verify --requeue --objects` finds
/// them by listing).
async fn unnamed_failures(
    store: &dyn StateStore,
    per_prefix: &[(String, Vec<String>)],
) -> Result<Vec<String>> {
    let named: HashMap<&str, usize> = per_prefix
        .iter()
        .map(|(prefix, names)| (prefix.as_str(), names.len()))
        .collect();
    let mut warnings = Vec::new();
    for row in store.latest_snapshots().await? {
        let Some(&count) = named.get(row.prefix.as_str()) else {
            continue;
        };
        let failed = row
            .operation_results
            .as_deref()
            .and_then(|r| serde_json::from_str::<crate::model::TransferOperation>(r).ok())
            .map(|op| op.counters.objects_from_source_failed)
            .unwrap_or_default();
        let failed = u64::try_from(failed).unwrap_or_default();
        if failed > count as u64 {
            let line = format!(
                "{}: its operation failed {failed} objects, the transfer logs name {count};                  the manifest holds those {count} (run sts-verify --requeue --objects after it                  for the rest)",
                crate::prefixes::shown_prefix(&row.prefix)
            );
            tracing::warn!("{line}");
            warnings.push(line);
        }
    }
    warnings.sort();
    Ok(warnings)
}

/// Writes one manifest per prefix (its objects) under `folder`, then
/// requeues the prefixes with them in one write: the shared end of
/// `sts-requeue --failed-objects` and `sts-verify --requeue --objects`.
pub async fn requeue_with_objects(
    store: &dyn StateStore,
    lister: Arc<dyn ObjectLister>,
    folder: &GcsLocation,
    per_prefix: Vec<(String, Vec<String>)>,
    now: DateTime<Utc>,
) -> Result<RequeueReport> {
    let mut manifests = Vec::with_capacity(per_prefix.len());
    let mut changes = ChangeSet::default();
    for (prefix, names) in per_prefix {
        let at = folder.join(&crate::manifest::file_name(&prefix, now));
        let csv = crate::manifest::write_csv(names.iter().map(String::as_str));
        lister
            .upload(&at.bucket, &at.path, csv.into_bytes(), "text/csv")
            .await
            .map_err(|e| Error::Failed(format!("writing the manifest {}: {e}", at.url())))?;
        changes.requeue(&prefix, now);
        manifests.push(PendingManifest {
            prefix,
            location: at.url(),
            objects: names.len() as u64,
            queued_at: now,
        });
    }
    store.requeue_with_manifests(&changes, &manifests).await?;
    Ok(RequeueReport {
        requeued: manifests.iter().map(|m| m.prefix.clone()).collect(),
        manifests,
        warnings: Vec::new(),
    })
}
