//! One manager per job table. Every way of running the manager (the CLI
//! loop, `run_once`, `run_until_done`, a caller-driven `iteration`) takes
//! the store's lease first and renews it each step; a second manager is
//! refused with [`ManagerError::LeaseHeld`].

use std::time::{Duration, Instant};

use super::summary::log_summary;
use super::{CycleSummary, Manager, ManagerError};
use crate::store::{Lease, StoreError};

impl Manager {
    /// Takes the job table's lease, or renews it, for `lease-seconds`.
    pub async fn claim_lease(&mut self) -> Result<(), ManagerError> {
        let ttl = Duration::from_secs_f64(self.settings.lease_seconds);
        match self.store.acquire_lease(&self.holder, ttl).await? {
            Lease::Acquired => {
                self.holding_lease = true;
                Ok(())
            }
            Lease::HeldBy { holder, until } => {
                // Ours expired and someone else took it: it is not ours.
                self.holding_lease = false;
                Err(ManagerError::LeaseHeld {
                    holder,
                    table: self.settings.job_table.clone(),
                    until: until.to_rfc3339(),
                })
            }
        }
    }

    /// Gives the lease up so another manager may start at once. A failure
    /// only costs waiting for the lease to expire, so it is logged.
    pub async fn release_lease(&mut self) {
        if !self.holding_lease {
            return;
        }
        self.holding_lease = false;
        if let Err(e) = self.store.release_lease(&self.holder).await {
            tracing::warn!("could not release the lease (it will expire): {e}");
        }
    }

    /// One loop iteration honouring the intervals, under the lease (kept
    /// afterwards: the caller drives the loop).
    pub async fn iteration(&mut self) -> Result<CycleSummary, ManagerError> {
        self.claim_lease().await?;
        self.step().await
    }

    /// One full cycle whatever the intervals: sync, start jobs, sync. The
    /// lease is held for the cycle and given up after it.
    pub async fn run_once(&mut self) -> Result<CycleSummary, ManagerError> {
        self.claim_lease().await?;
        self.last_sync = None;
        self.last_job_round = None;
        let outcome = self.step().await;
        self.release_lease().await;
        outcome
    }

    /// Iterates until nothing is pending or running (true) or `deadline`
    /// passes (false), with the last summary: the loop of [`Manager::run`],
    /// with its error policy. The lease is given up at the end.
    pub async fn run_until_done(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(bool, CycleSummary), ManagerError> {
        self.claim_lease().await?;
        let outcome = self
            .run_loop(std::future::pending(), true, deadline)
            .await
            .map(|end| match end {
                LoopEnd::Done(summary) => (true, summary),
                LoopEnd::Deadline(summary) => (false, summary),
                LoopEnd::Stopped => (false, CycleSummary::default()),
            });
        self.release_lease().await;
        outcome
    }

    /// The loop: iterate, sleep what is left of `sleep-timeout`, until
    /// `stop` resolves or (with `--exit-when-done`) nothing is left to do.
    pub async fn run(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ManagerError> {
        self.claim_lease().await?;
        let exit_when_done = self.settings.exit_when_done;
        let outcome = self.run_loop(stop, exit_when_done, None).await;
        self.release_lease().await;
        match outcome? {
            LoopEnd::Done(summary) if summary.failed_count > 0 => {
                Err(finished_with_errors(&summary))
            }
            LoopEnd::Done(_) => {
                tracing::info!("every prefix is finished; exiting");
                Ok(())
            }
            LoopEnd::Stopped | LoopEnd::Deadline(_) => Ok(()),
        }
    }

    /// The one run loop and its one error policy: a failed iteration is
    /// logged and tried again next iteration, unless no later iteration can
    /// succeed ([`ends_the_run`]); the same permanent cause with nothing left
    /// running ends it with what to fix.
    async fn run_loop(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
        until_done: bool,
        deadline: Option<Instant>,
    ) -> Result<LoopEnd, ManagerError> {
        tokio::pin!(stop);
        let mut last = CycleSummary::default();
        loop {
            let started = Instant::now();
            let outcome = {
                let step = async {
                    match self.claim_lease().await {
                        Ok(()) => self.step().await,
                        Err(e) => Err(e),
                    }
                };
                tokio::pin!(step);
                tokio::select! {
                    outcome = &mut step => outcome,
                    _ = &mut stop => {
                        // A stop mid-step (a token fetch, a listing): the
                        // step gets a few seconds to write what it has; past
                        // them it is dropped, which leaves what a crash
                        // leaves (every write is whole; the next start
                        // adopts from STS's own record).
                        match tokio::time::timeout(STOP_GRACE, &mut step).await {
                            Ok(_) => tracing::info!("stop requested; state is written, exiting"),
                            Err(_) => tracing::warn!(
                                "stop requested; the step in progress did not end within {} s and was dropped (the next start picks up from STS's record)",
                                STOP_GRACE.as_secs()
                            ),
                        }
                        return Ok(LoopEnd::Stopped);
                    }
                }
            };
            match outcome {
                Ok(summary) => {
                    log_summary(&summary);
                    let in_flight = summary.counts["running"] + summary.counts["paused"];
                    if let Some(line) = summary.halted.as_ref().filter(|_| in_flight == 0) {
                        return Err(ManagerError::Halted(line.clone()));
                    }
                    if until_done && summary.done {
                        return Ok(LoopEnd::Done(summary));
                    }
                    last = summary;
                }
                Err(e) if ends_the_run(&e) => return Err(e),
                Err(e) => tracing::error!("iteration failed, trying again next iteration: {e}"),
            }
            let mut rest = Duration::from_secs_f64(self.settings.sleep_timeout)
                .saturating_sub(started.elapsed());
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(LoopEnd::Deadline(last));
                }
                rest = rest.min(left);
            }
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = &mut stop => {
                    tracing::info!("stop requested; state is written, exiting");
                    return Ok(LoopEnd::Stopped);
                }
            }
        }
    }
}

/// How long a step in progress may go on after a stop is asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How the run loop ended.
enum LoopEnd {
    Done(CycleSummary),
    Deadline(CycleSummary),
    Stopped,
}

/// Errors no later iteration can get past: another manager took the table,
/// a bucket or the state file is missing, the tables do not exist, the
/// credentials are refused. Anything else (429/5xx after retries, a network
/// failure) is tried again next iteration.
fn ends_the_run(error: &ManagerError) -> bool {
    match error {
        ManagerError::LeaseHeld { .. }
        | ManagerError::Halted(_)
        | ManagerError::Preflight(_)
        | ManagerError::FinishedWithErrors { .. } => true,
        ManagerError::Store(e) => matches!(
            e,
            StoreError::FileGone(_)
                | StoreError::MissingTable(_)
                | StoreError::InvalidIdentifier(_)
                | StoreError::InvalidProject(_)
                | StoreError::NoProject
                | StoreError::Auth(_)
        ),
        ManagerError::Transfer(e) => matches!(
            e,
            crate::transfer::TransferError::Auth(_)
                | crate::transfer::TransferError::Unauthenticated(_)
                | crate::transfer::TransferError::PermissionDenied(_)
                | crate::transfer::TransferError::Unsupported(_)
        ),
    }
}

/// The error that ends a migration whose prefixes are not all done.
pub(crate) fn finished_with_errors(summary: &CycleSummary) -> ManagerError {
    let sample = summary
        .failed
        .iter()
        .take(3)
        .map(super::failures::Failure::brief)
        .collect::<Vec<_>>()
        .join(", ");
    ManagerError::FinishedWithErrors {
        count: summary.failed_count,
        sample,
    }
}

/// A manager dropped while it may hold the lease (a cancelled Python call,
/// a collected notebook object) gives it up in the background, so a new
/// manager need not wait for it to expire. Best effort: without a runtime
/// to run on, the lease simply expires.
impl Drop for Manager {
    fn drop(&mut self) {
        if !self.holding_lease {
            return;
        }
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| crate::runtime::existing().map(|r| r.handle().clone()));
        if let Some(handle) = handle {
            let store = std::sync::Arc::clone(&self.store);
            let holder = std::mem::take(&mut self.holder);
            handle.spawn(async move {
                if let Err(e) = store.release_lease(&holder).await {
                    tracing::warn!("could not release the lease (it will expire): {e}");
                }
            });
        }
    }
}
