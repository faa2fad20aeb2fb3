//! Reading what a report needs through the store: the job table, one
//! latest snapshot per prefix, one per earlier attempt, and the snapshots at
//! the window's start and at `now - stall_after` only where needed.

use super::*;

/// Reads what `report` needs through the store: the job table, one latest
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
        let failures = store.failure_counts().await?;
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
    let passes = store.read_passes().await?;
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
    let inputs = read_inputs(store, now, params).await?;
    Ok(report(&inputs, now, params))
}
