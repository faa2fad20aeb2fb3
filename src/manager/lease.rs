//! One manager per job table. Every way of running the manager (the CLI
//! loop, `run_once`, `run_until_done`, a caller-driven `iteration`) takes
//! the store's lease first and renews it each step; a second manager is
//! refused with [`ManagerError::LeaseHeld`].

use std::time::{Duration, Instant};

use super::{log_summary, CycleSummary, Manager, ManagerError};
use crate::store::{Lease, StoreError};

impl Manager {
    /// Takes the job table's lease, or renews it, for `lease-seconds`.
    pub async fn claim_lease(&mut self) -> Result<(), ManagerError> {
        let ttl = Duration::from_secs_f64(self.options.lease_seconds);
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
                    table: self.options.job_table.clone(),
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
    /// passes (false), with the last summary. Errors end the run (the
    /// caller, an Airflow task say, decides about retrying).
    pub async fn run_until_done(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(bool, CycleSummary), ManagerError> {
        let outcome = self.until_done(deadline).await;
        self.release_lease().await;
        outcome
    }

    async fn until_done(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(bool, CycleSummary), ManagerError> {
        loop {
            let started = Instant::now();
            let summary = self.iteration().await?;
            if summary.done {
                return Ok((true, summary));
            }
            let in_flight = summary.counts["running"] + summary.counts["paused"];
            if let Some(line) = summary.halted.as_ref().filter(|_| in_flight == 0) {
                return Err(ManagerError::Halted(line.clone()));
            }
            let mut rest = Duration::from_secs_f64(self.options.sleep_timeout)
                .saturating_sub(started.elapsed());
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok((false, summary));
                }
                rest = rest.min(left);
            }
            tokio::time::sleep(rest).await;
        }
    }

    /// The loop: iterate, sleep what is left of `sleep-timeout`, until
    /// `stop` resolves or (with `--exit-when-done`) nothing is left to do.
    /// A failed iteration is logged and the loop goes on.
    pub async fn run(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ManagerError> {
        self.claim_lease().await?;
        let outcome = self.run_holding(stop).await;
        self.release_lease().await;
        outcome
    }

    async fn run_holding(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ManagerError> {
        tokio::pin!(stop);
        loop {
            let started = Instant::now();
            match self.claim_lease().await {
                // Another manager took the table over (ours expired): stop.
                Err(e @ ManagerError::LeaseHeld { .. }) => return Err(e),
                Err(e @ ManagerError::Store(StoreError::FileGone(_))) => return Err(e),
                Err(e) => {
                    tracing::error!("could not renew the lease, trying again next iteration: {e}")
                }
                Ok(()) => match self.step().await {
                    Ok(summary) => {
                        log_summary(&summary);
                        let in_flight = summary.counts["running"] + summary.counts["paused"];
                        if let Some(line) = summary.halted.as_ref().filter(|_| in_flight == 0) {
                            return Err(ManagerError::Halted(line.clone()));
                        }
                        if self.options.exit_when_done && summary.done {
                            if summary.failed_count > 0 {
                                return Err(finished_with_errors(&summary));
                            }
                            tracing::info!("every prefix is finished; exiting");
                            return Ok(());
                        }
                    }
                    // Something the migration needs is missing: no
                    // later iteration will find it.
                    Err(e @ ManagerError::Preflight(_)) => return Err(e),
                    Err(e @ ManagerError::Store(StoreError::FileGone(_))) => return Err(e),
                    Err(e) => tracing::error!("iteration failed, trying again next iteration: {e}"),
                },
            }
            let rest = Duration::from_secs_f64(self.options.sleep_timeout)
                .saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = &mut stop => {
                    tracing::info!("stop requested; state is written, exiting");
                    return Ok(());
                }
            }
        }
    }
}

/// The error that ends a migration whose prefixes are not all done.
pub(crate) fn finished_with_errors(summary: &CycleSummary) -> ManagerError {
    let sample = summary
        .failed
        .iter()
        .take(3)
        .map(|f| {
            let codes: Vec<&str> = f.codes.iter().map(|c| c.code.as_str()).collect();
            format!("{:?} {}", f.prefix, codes.join("/"))
        })
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
