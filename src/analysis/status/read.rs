//! Reading what a report needs through the store: the job table, one
//! latest snapshot per prefix, one per earlier attempt, and the snapshots at
//! the window's start and at `now - stall_after` only where needed; or, from
//! a store that folds its history (`HistoryReads::status_view`), finished
//! prefixes as one aggregate and the others' folds.

use super::*;
use crate::figures::StatusView;

/// Reads what `report` needs through the store, every prefix one by one
/// (`sts-report` and `progress()` list them all): the job table, one latest
/// snapshot per prefix, one per earlier attempt, and the snapshots at the
/// window's start and at `now - stall_after` only for the prefixes that
/// need them.
pub async fn read_inputs(
    store: &dyn crate::store::StateStore,
    now: DateTime<Utc>,
    params: &StatusParams,
) -> Result<Inputs, crate::store::StoreError> {
    let jobs = store.read_jobs().await?;
    let mut unreadable = 0;
    // Each batch of rows is parsed (and its JSON freed) before the next read.
    let latest = by_prefix(store.latest_snapshots().await?, &mut unreadable);
    let earlier = figures::earlier_attempts(store, &latest, &mut unreadable).await?;
    let read = Read {
        jobs,
        latest,
        earlier,
        unreadable,
        ..Read::default()
    };
    complete(store, now, params, read).await
}

/// What `sts-status` reads: from a store that folds its history, done
/// prefixes that ended before the throughput window as totals and every
/// other prefix from its fold (no snapshot of a finished prefix is read);
/// from another store, `read_inputs`.
pub async fn read_status_inputs(
    store: &dyn crate::store::StateStore,
    now: DateTime<Utc>,
    params: &StatusParams,
) -> Result<Inputs, crate::store::StoreError> {
    // An open pass sums its prefixes' latest snapshots: all of them needed.
    let passes = store.read_passes().await?;
    let pass_open = passes.last().is_some_and(|p| p.ended_at.is_none());
    let view = if pass_open {
        None
    } else {
        store.status_view(now - THROUGHPUT_WINDOW).await?
    };
    let Some(StatusView { quiet, jobs, folds }) = view else {
        return read_inputs(store, now, params).await;
    };
    let mut read = Read {
        jobs,
        quiet,
        failures: Some(HashMap::new()),
        passes: Some(passes),
        ..Read::default()
    };
    for (prefix, fold) in folds {
        read.unreadable += fold.unreadable as usize;
        if let Some(failures) = read.failures.as_mut().filter(|_| fold.failures > 0) {
            failures.insert(prefix.clone(), fold.failures);
        }
        if let Some(latest) = fold.latest {
            read.earlier_sums.insert(prefix.clone(), fold.earlier);
            read.latest.insert(prefix, latest);
        }
    }
    complete(store, now, params, read).await
}

/// What the two ways of reading differ in.
#[derive(Default)]
struct Read {
    jobs: Vec<PrefixJob>,
    latest: Snapshots,
    earlier: HashMap<String, Vec<Snapshot>>,
    earlier_sums: HashMap<String, Sums>,
    quiet: QuietTotals,
    /// Failures per prefix since queued, when the store folded them.
    failures: Option<HashMap<String, u32>>,
    /// The pass table, when already read.
    passes: Option<Vec<crate::records::Pass>>,
    unreadable: usize,
}

/// The rest of the inputs, read the same way for both.
async fn complete(
    store: &dyn crate::store::StateStore,
    now: DateTime<Utc>,
    params: &StatusParams,
    read: Read,
) -> Result<Inputs, crate::store::StoreError> {
    let Read {
        jobs,
        latest,
        earlier,
        earlier_sums,
        quiet,
        failures,
        passes,
        mut unreadable,
    } = read;
    let window_start = now - THROUGHPUT_WINDOW;
    let running: HashSet<&str> = jobs
        .iter()
        .filter(|j| j.status == Status::Running)
        .map(|j| j.prefix.as_str())
        .collect();
    let mut at_window = Vec::new();
    let mut at_stall = Vec::new();
    // "At or before t": strictly before 1 µs later.
    let just_after = |t: DateTime<Utc>| t + Duration::microseconds(1);
    for (prefix, snap) in &latest {
        // Only operations that ran inside the window and began before it
        // need the snapshot at its start.
        let began_before = snap.op.start_time.is_none_or(|s| s < window_start);
        if snap.updated() > window_start && began_before {
            at_window.push((prefix.clone(), just_after(window_start)));
        }
        if running.contains(prefix.as_str()) {
            at_stall.push((prefix.clone(), just_after(now - params.stall_after)));
        }
    }
    let baseline = by_prefix(store.snapshots_before(&at_window).await?, &mut unreadable);
    drop(at_window);
    let stall_base = by_prefix(store.snapshots_before(&at_stall).await?, &mut unreadable);
    // Sizes listed by sts-plan --load count for prefixes not started yet.
    let planned: HashMap<String, i64> = store
        .read_plan()
        .await?
        .into_iter()
        .map(|p| (p.prefix, i64::try_from(p.bytes).unwrap_or(i64::MAX)))
        .collect();
    let final_errors = if jobs.iter().any(|j| j.status == Status::Error) {
        let failures = match failures {
            Some(folded) => folded,
            None => store.failure_counts().await?,
        };
        crate::manager::failures::final_errors(
            &jobs,
            &failures,
            params.max_retries,
            params.retry_errors,
        )
        .into_iter()
        .collect()
    } else {
        HashSet::new()
    };
    let verifications = store.read_verifications().await?;
    // Quiet prefixes' job rows, for the verdicts that speak of them.
    let quiet_verified = if quiet.prefixes > 0 && !verifications.is_empty() {
        let listed: HashSet<&str> = jobs.iter().map(|j| j.prefix.as_str()).collect();
        let others: Vec<String> = verifications
            .iter()
            .filter(|v| !listed.contains(v.prefix.as_str()))
            .map(|v| v.prefix.clone())
            .collect();
        store
            .read_prefixes(&others)
            .await?
            .into_iter()
            .filter(|j| j.status == Status::Done)
            .collect()
    } else {
        Vec::new()
    };
    let passes = match passes {
        Some(passes) => passes,
        None => store.read_passes().await?,
    };
    // Prefixes are read only while a pass runs (an ended one has its figures).
    let pass_of = if passes.last().is_some_and(|p| p.ended_at.is_none()) {
        store
            .read_pass_prefixes()
            .await?
            .into_iter()
            .map(|r| (r.prefix, r.pass))
            .collect()
    } else {
        HashMap::new()
    };
    Ok(Inputs {
        jobs,
        verifications,
        latest,
        earlier,
        earlier_sums,
        quiet,
        quiet_verified,
        baseline,
        stall_base,
        planned,
        final_errors,
        unreadable,
        passes,
        pass_of,
    })
}

/// `sts-status`'s report, read through the store.
pub async fn read_status(
    store: &dyn crate::store::StateStore,
    now: DateTime<Utc>,
    params: &StatusParams,
) -> Result<StatusReport, crate::store::StoreError> {
    let inputs = read_status_inputs(store, now, params).await?;
    Ok(report(&inputs, now, params))
}
