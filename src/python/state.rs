//! `State`: the state tables as column frames (Arrow buffers as `bytes`),
//! read through the `StateStore` trait so every store serves them.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aio::future_into_py;
use super::{block_on, handed_credentials, parse_options, to_json, to_py};
use crate::analysis::status::{read_inputs, read_status, report, StatusParams};
use crate::analysis::timeline::TimelineBuilder;
use crate::analysis::{self, columns::Frame};
use crate::error::Error;
use crate::manager::count_statuses;
use crate::runtime::init_logging;
use crate::settings::open_store;
use crate::store::StateStore;

/// (name, Arrow type, validity bitmap or None, data buffers).
type PyColumn<'py> = (
    &'static str,
    &'static str,
    Option<Bound<'py, PyBytes>>,
    Vec<Bound<'py, PyBytes>>,
);

fn frame_to_py(py: Python<'_>, frame: Frame) -> (usize, Vec<PyColumn<'_>>) {
    let columns = frame
        .columns
        .into_iter()
        .map(|(name, column)| {
            let kind = column.kind();
            let (validity, buffers) = column.into_buffers();
            (
                name,
                kind,
                validity.map(|bits| PyBytes::new(py, &bits)),
                buffers.iter().map(|b| PyBytes::new(py, b)).collect(),
            )
        })
        .collect();
    (frame.rows, columns)
}

#[pyclass(module = "sts_job_manager._core", frozen)]
pub struct State {
    store: Arc<dyn StateStore>,
    /// `max_retries`, and whether errors are retried at all (the options').
    retries: (u32, bool),
    /// `stall_after` (seconds), as the manager judges stalls.
    stall_after: f64,
    /// The process that opened the store.
    pid: u32,
}

impl State {
    /// How reports are taken: the options' retries (unless `retry_errors`
    /// overrides whether errors are retried) and the default stall rule.
    fn params(&self, retry_errors: Option<bool>, limit: usize) -> StatusParams {
        StatusParams {
            stall_after: chrono::Duration::milliseconds((self.stall_after * 1000.0) as i64),
            ..StatusParams::new(
                retry_errors.unwrap_or(self.retries.1),
                self.retries.0,
                limit,
            )
        }
    }

    /// The store, in the process that opened it only: its connections
    /// belong to that process (see `super::same_process`).
    fn store(&self) -> PyResult<Arc<dyn StateStore>> {
        super::same_process(self.pid, "State")?;
        Ok(Arc::clone(&self.store))
    }
}

/// Prefixes per status from the unfinished rows and the row count: a
/// sensor polling a million-prefix table reads what is left, not every row.
async fn counts_of(
    store: &dyn StateStore,
) -> Result<std::collections::BTreeMap<String, usize>, Error> {
    let (rows, total) = store.read_unfinished().await?;
    let mut counts = count_statuses(&rows);
    counts.insert(
        crate::model::Status::Done.as_str().to_string(),
        total.saturating_sub(rows.len()),
    );
    Ok(counts)
}

async fn final_errors_of(
    store: &dyn StateStore,
    (max_retries, retry_enabled): (u32, bool),
) -> Result<Vec<String>, Error> {
    let (rows, _) = store.read_unfinished().await?;
    Ok(
        if rows.iter().any(|r| r.status == crate::model::Status::Error) {
            let failures = store.failure_counts().await?;
            crate::manager::failures::final_errors(&rows, &failures, max_retries, retry_enabled)
        } else {
            Vec::new()
        },
    )
}

impl State {
    fn frame<'py>(
        &self,
        py: Python<'py>,
        build: impl FnOnce(Arc<dyn StateStore>) -> FrameWork + Send,
    ) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        let store = self.store()?;
        let frame = block_on(py, build(store))?;
        Ok(frame_to_py(py, frame))
    }
}

type FrameWork = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Frame, Error>> + Send>>;

#[pymethods]
impl State {
    #[new]
    #[pyo3(signature = (options_json, credentials=None, impersonation_chain=None))]
    fn new(
        options_json: &str,
        credentials: Option<&Bound<'_, PyAny>>,
        impersonation_chain: Option<Vec<String>>,
    ) -> PyResult<Self> {
        init_logging();
        let handed = handed_credentials(credentials, impersonation_chain)?;
        let options = parse_options(options_json).map_err(to_py)?;
        let store =
            crate::auth::sync_with_credentials(handed, || open_store(&options)).map_err(to_py)?;
        let retries = (options.max_retries, !options.no_retry_on_job_error);
        Ok(State {
            store,
            retries,
            stall_after: options.stall_after,
            pid: std::process::id(),
        })
    }

    /// The job table: prefix, status, job_name, last_updated.
    fn jobs<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            Box::pin(async move { Ok(analysis::jobs_frame(&store.read_jobs().await?)) })
        })
    }

    /// The history table: prefix, status, job_name, operation_results, timestamp.
    fn history<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            Box::pin(async move { Ok(analysis::history_frame(&store.read_history().await?)) })
        })
    }

    /// One row per failing object of each prefix's latest attempt.
    fn failures<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            // Only operations that list failures, and their prefixes' latest.
            Box::pin(async move { Ok(analysis::read_failures(store.as_ref()).await?) })
        })
    }

    /// Per prefix and in total: the figures, throughput and ETA (the total's
    /// as `status()` reports them).
    #[pyo3(signature = (retry_errors=None))]
    fn progress<'py>(
        &self,
        py: Python<'py>,
        retry_errors: Option<bool>,
    ) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        let params = self.params(retry_errors, usize::MAX);
        self.frame(py, move |store| {
            Box::pin(async move {
                // A few snapshots per prefix, not the whole history.
                let now = chrono::Utc::now();
                let inputs = read_inputs(store.as_ref(), now, &params).await?;
                let report = report(&inputs, now, &params);
                Ok(analysis::progress_frame(&inputs, &report))
            })
        })
    }

    /// The verification table: one row per checked prefix.
    fn verification<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            Box::pin(async move {
                Ok(analysis::verification::verification_frame(
                    &store.read_verifications().await?,
                    &store.read_jobs().await?,
                ))
            })
        })
    }

    /// The failed-objects table: one row per object whose action failed.
    fn failed_objects<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            Box::pin(async move {
                Ok(analysis::verification::failed_objects_frame(
                    &store.read_failed_objects().await?,
                ))
            })
        })
    }

    /// The plan table: planned objects and bytes per prefix.
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<(usize, Vec<PyColumn<'py>>)> {
        self.frame(py, |store| {
            Box::pin(async move {
                Ok(analysis::verification::plan_frame(
                    &store.read_plan().await?,
                ))
            })
        })
    }

    /// The migration over time in at most `max_buckets` time buckets:
    /// (statuses, copied, throughput per bucket; failed objects per bucket
    /// and error code). One pass over the history, never all of it held.
    #[pyo3(signature = (max_buckets=200))]
    #[allow(clippy::type_complexity)]
    fn timeline<'py>(
        &self,
        py: Python<'py>,
        max_buckets: usize,
    ) -> PyResult<((usize, Vec<PyColumn<'py>>), (usize, Vec<PyColumn<'py>>))> {
        let store = self.store()?;
        let (timeline, failures) = block_on(py, async move {
            let jobs = store.read_jobs().await?;
            let mut builder = TimelineBuilder::new(&jobs);
            store.scan_history(&mut |row| builder.add(row)).await?;
            Ok(builder.finish(max_buckets))
        })?;
        Ok((frame_to_py(py, timeline), frame_to_py(py, failures)))
    }

    /// What `sts-status --json` prints, as JSON.
    #[pyo3(signature = (limit=20, retry_errors=None))]
    fn status(&self, py: Python<'_>, limit: usize, retry_errors: Option<bool>) -> PyResult<String> {
        let store = self.store()?;
        let params = self.params(retry_errors, limit);
        let report = block_on(py, async move {
            Ok(read_status(store.as_ref(), chrono::Utc::now(), &params).await?)
        })?;
        to_json(&report)
    }

    /// Prefixes per status (every status, 0 included) as JSON.
    fn status_counts(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.store()?;
        to_json(&block_on(
            py,
            async move { counts_of(store.as_ref()).await },
        )?)
    }

    /// `status_counts` as an awaitable.
    fn status_counts_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.store()?;
        future_into_py(py, async move {
            to_json(&counts_of(store.as_ref()).await.map_err(to_py)?)
        })
    }

    /// The prefixes in `error` that no manager will start again (out of
    /// retries under these options) as a JSON list.
    fn final_errors(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.store()?;
        let retries = self.retries;
        let finals = block_on(
            py,
            async move { final_errors_of(store.as_ref(), retries).await },
        )?;
        to_json(&finals)
    }

    /// `final_errors` as an awaitable.
    fn final_errors_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.store()?;
        let retries = self.retries;
        future_into_py(py, async move {
            let finals = final_errors_of(store.as_ref(), retries)
                .await
                .map_err(to_py)?;
            to_json(&finals)
        })
    }
}
