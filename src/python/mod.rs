//! The PyO3 layer: converts, releases the GIL, calls the core. No logic.

mod aio;
mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::auth::{with_credentials, Handed, HandedCredentials};
use crate::commands;
use crate::error::{Detail, Error};
use crate::manager::{CycleSummary, Manager as CoreManager};
use crate::options::Options;
use crate::runtime::{init_logging, runtime};
use crate::settings::open_manager;
use aio::future_into_py;

/// Errors are raised as the classes of `sts_job_manager.errors` (a Python
/// module, so each class can have several bases, e.g. `OptionsError` is both
/// an `StsJobManagerError` and a `ValueError`).
pub(crate) fn to_py(error: Error) -> PyErr {
    let class = match &error {
        Error::Options(_) => "OptionsError",
        Error::Input(_) | Error::BadEntry { .. } => "InputError",
        Error::Store(_) => "StateError",
        Error::Transfer(_) => "TransferError",
        Error::Storage(_) => "StorageError",
        Error::Unsupported(_) => "UnsupportedBackendError",
        Error::Busy { .. } => "LeaseHeldError",
        Error::Halted(_) | Error::FinishedWithErrors(_) => "TransferError",
        Error::Interrupted | Error::Failed(_) => "StsJobManagerError",
    };
    let message = error.to_string();
    let details = error.details();
    Python::attach(|py| {
        let raised = py
            .import("sts_job_manager.errors")
            .and_then(|module| module.getattr(class))
            .and_then(|class| {
                let kwargs = PyDict::new(py);
                for (name, value) in &details {
                    match value {
                        Detail::Text(text) => kwargs.set_item(name, text)?,
                        Detail::Int(n) => kwargs.set_item(name, n)?,
                        Detail::None => kwargs.set_item(name, py.None())?,
                    }
                }
                class.call((message.clone(),), Some(&kwargs))
            });
        match raised {
            Ok(instance) => PyErr::from_value(instance),
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// Runs `work` on the shared runtime with the GIL released; Ctrl-C (checked
/// every 100 ms on this, the calling, thread) drops the work and raises
/// KeyboardInterrupt. Store writes are single transactions, so dropping the
/// work between awaits leaves the state consistent.
pub(crate) fn block_on<T: Send>(
    py: Python<'_>,
    work: impl Future<Output = Result<T, Error>> + Send,
) -> PyResult<T> {
    py.detach(|| {
        runtime().block_on(async {
            let interrupted = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        return e;
                    }
                }
            };
            tokio::select! {
                outcome = work => outcome.map_err(to_py),
                e = interrupted => Err(e),
            }
        })
    })
}

/// Access tokens from a Python callable (an Airflow hook's credentials,
/// refreshed on the Python side). Called on a blocking thread, taking the
/// GIL only for the call.
struct PyTokenSource(Arc<Py<PyAny>>);

impl crate::auth::TokenSource for PyTokenSource {
    fn token(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let callable = Arc::clone(&self.0);
        Box::pin(async move {
            let called = tokio::task::spawn_blocking(move || {
                Python::attach(|py| {
                    callable
                        .call0(py)
                        .and_then(|token| token.extract::<String>(py))
                        // The exception's type only: its text could quote a secret.
                        .map_err(|e| {
                            format!(
                                "the token callable raised {}",
                                e.get_type(py)
                                    .name()
                                    .map(|n| n.to_string())
                                    .unwrap_or_else(|_| "an exception".into())
                            )
                        })
                })
            })
            .await;
            called.map_err(|e| format!("the token callable did not return: {e}"))?
        })
    }
}

/// Credentials handed over from Python: a credentials JSON (text), a
/// callable returning access tokens, or none; plus an impersonation chain.
pub(crate) fn handed_credentials(
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<Option<HandedCredentials>> {
    let chain = impersonation_chain.unwrap_or_default();
    let source = match credentials {
        None if chain.is_empty() => return Ok(None),
        None => Handed::ApplicationDefault,
        Some(c) if c.is_instance_of::<pyo3::types::PyString>() => {
            let text: String = c.extract()?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json @ serde_json::Value::Object(_)) => Handed::Json(json),
                // Never echo the text: it may be a key.
                _ => {
                    return Err(to_py(Error::Input(
                        "credentials must be a credentials JSON object (a service account key, \
                         authorized user or impersonated service account file's content)"
                            .into(),
                    )))
                }
            }
        }
        Some(c) if c.is_callable() => {
            Handed::Tokens(Arc::new(PyTokenSource(Arc::new(c.clone().unbind()))))
        }
        Some(_) => return Err(pyo3::exceptions::PyTypeError::new_err(
            "credentials must be a credentials JSON (str) or a callable returning access tokens",
        )),
    };
    Ok(Some(HandedCredentials {
        source,
        impersonation_chain: chain,
    }))
}

pub(crate) fn parse_options(options_json: &str) -> Result<Options, Error> {
    let value: serde_json::Value = serde_json::from_str(options_json)
        .map_err(|e| Error::Input(format!("options must be a JSON object: {e}")))?;
    let serde_json::Value::Object(entries) = value else {
        return Err(Error::Input("options must be a JSON object".into()));
    };
    Ok(Options::from_pairs(
        entries.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )?)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Runs one command-line tool with `args`; returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, program: &str, args: Vec<String>) -> i32 {
    py.detach(|| crate::commands::main(program, &args))
}

/// Validates options given as a JSON object; returns them in full as JSON.
#[pyfunction]
fn resolve_options(options_json: &str) -> PyResult<String> {
    let options = parse_options(options_json).map_err(to_py)?;
    to_json(&options)
}

/// `prefixes_json`, when given, is a JSON array of prefixes to load
/// (checked like a prefix file) instead of `job-prefix-source-file`.
#[pyfunction]
#[pyo3(signature = (options_json, prefixes_json=None, credentials=None, impersonation_chain=None))]
fn prepare_tables(
    py: Python<'_>,
    options_json: &str,
    prefixes_json: Option<&str>,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<String> {
    let handed = handed_credentials(credentials, impersonation_chain)?;
    init_logging();
    let options = parse_options(options_json).map_err(to_py)?;
    let prefixes = prefixes_json
        .map(|body| match serde_json::from_str(body) {
            Ok(serde_json::Value::Array(items)) => commands::prefix_list::prefix_list(
                items,
                "prefixes",
                options.allow_overlapping_prefixes,
            ),
            _ => Err(Error::Input("prefixes must be a list of strings".into())),
        })
        .transpose()
        .map_err(to_py)?;
    let report = block_on(
        py,
        with_credentials(handed, async {
            commands::prepare::prepare_tables_with(&options, prefixes).await
        }),
    )?;
    to_json(&report)
}

#[pyfunction]
#[pyo3(signature = (options_json, credentials=None, impersonation_chain=None))]
fn pause_all_jobs(
    py: Python<'_>,
    options_json: &str,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<String> {
    init_logging();
    let handed = handed_credentials(credentials, impersonation_chain)?;
    let options = parse_options(options_json).map_err(to_py)?;
    let report = block_on(
        py,
        with_credentials(handed, async {
            commands::pause::pause_all_jobs(&options).await
        }),
    )?;
    to_json(&report)
}

#[pyfunction]
#[pyo3(signature = (options_json, credentials=None, impersonation_chain=None))]
fn remove_successful_one_time_jobs(
    py: Python<'_>,
    options_json: &str,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<String> {
    init_logging();
    let handed = handed_credentials(credentials, impersonation_chain)?;
    let options = parse_options(options_json).map_err(to_py)?;
    let report = block_on(
        py,
        with_credentials(handed, async {
            commands::remove::remove_successful_one_time_jobs(&options).await
        }),
    )?;
    to_json(&report)
}

/// A tool's own arguments from a JSON object of keyword arguments (`shards`,
/// `shard_bytes`, ...; `None` values left out), read by the same parser as
/// the command line's flags, so both refuse the same values the same way.
fn tool_flags(args_json: &str, tool: &commands::Tool) -> Result<commands::flags::ToolFlags, Error> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(args_json)
        .map_err(|e| Error::Input(format!("arguments must be a JSON object: {e}")))?;
    let mut args = Vec::new();
    for (key, value) in object {
        let name = key.replace('_', "-");
        let declared = tool
            .own
            .iter()
            .flat_map(|g| g.flags)
            .find(|f| f.name == name);
        let Some(takes_value) = declared.map(|f| f.value.is_some()) else {
            return Err(Error::Input(format!("unknown argument '{key}'")));
        };
        let flag = format!("--{name}");
        let values = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(false) if !takes_value => continue,
            serde_json::Value::Bool(true) if !takes_value => vec![None],
            serde_json::Value::Array(items) if takes_value => items.into_iter().map(Some).collect(),
            other if takes_value => vec![Some(other)],
            other => {
                return Err(Error::Input(format!(
                    "argument '{key}' is true or false, not {other}"
                )))
            }
        };
        for value in values {
            match value {
                Some(serde_json::Value::String(text)) => args.push(format!("{flag}={text}")),
                Some(serde_json::Value::Number(n)) => args.push(format!("{flag}={n}")),
                Some(other) => {
                    return Err(Error::Input(format!(
                        "argument '{key}' takes text or a number, not {other}"
                    )))
                }
                None => args.push(flag.clone()),
            }
        }
    }
    commands::flags::parse(tool.name, tool.own, &args).map_err(Error::Input)
}

/// A tool with flags of its own, called from Python: the options and the
/// keyword arguments read as the command line's are, the run made with the
/// credentials handed over; its report as JSON.
#[allow(clippy::too_many_arguments)]
fn call_tool<A, R, Fut>(
    py: Python<'_>,
    options_json: &str,
    args_json: &str,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
    tool: &commands::Tool,
    parse: fn(&commands::flags::ToolFlags) -> std::result::Result<A, String>,
    run: impl FnOnce(Options, A) -> Fut,
) -> PyResult<String>
where
    R: serde::Serialize + Send,
    Fut: Future<Output = Result<R, Error>> + Send,
{
    init_logging();
    let handed = handed_credentials(credentials, impersonation_chain)?;
    let options = parse_options(options_json).map_err(to_py)?;
    let args = tool_flags(args_json, tool)
        .and_then(|found| parse(&found).map_err(Error::Input))
        .map_err(to_py)?;
    let report = block_on(py, with_credentials(handed, run(options, args)))?;
    to_json(&report)
}

/// `sts-plan` with keyword arguments; the report as JSON.
#[pyfunction]
#[pyo3(signature = (options_json, args_json, credentials=None, impersonation_chain=None))]
fn plan(
    py: Python<'_>,
    options_json: &str,
    args_json: &str,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<String> {
    use commands::plan::{run_plan, PlanArgs, TOOL};
    call_tool(
        py,
        options_json,
        args_json,
        credentials,
        impersonation_chain,
        &TOOL,
        PlanArgs::parse,
        |options, args| async move { run_plan(&options, &args).await },
    )
}

/// `sts-verify` with keyword arguments; the report as JSON.
#[pyfunction]
#[pyo3(signature = (options_json, args_json, credentials=None, impersonation_chain=None))]
fn verify(
    py: Python<'_>,
    options_json: &str,
    args_json: &str,
    credentials: Option<&Bound<'_, PyAny>>,
    impersonation_chain: Option<Vec<String>>,
) -> PyResult<String> {
    use commands::verify::{run_verify, VerifyArgs, TOOL};
    call_tool(
        py,
        options_json,
        args_json,
        credentials,
        impersonation_chain,
        &TOOL,
        VerifyArgs::parse,
        |options, args| async move { run_verify(&options, &args).await },
    )
}

/// `sts-requeue`: the prefixes of `prefixes_json` (a JSON array), else
/// every prefix in `error`; with `manifest_location` (`--failed-objects`),
/// each with a manifest of its failed objects written there. The report as
/// JSON.
#[pyfunction]
#[pyo3(signature = (options_json, prefixes_json=None, manifest_location=None))]
fn requeue(
    py: Python<'_>,
    options_json: &str,
    prefixes_json: Option<&str>,
    manifest_location: Option<&str>,
) -> PyResult<String> {
    init_logging();
    let options = parse_options(options_json).map_err(to_py)?;
    let prefixes = prefixes_json
        .map(|body| match serde_json::from_str(body) {
            Ok(serde_json::Value::Array(items)) => {
                commands::prefix_list::prefix_list(items, "prefixes", true)
            }
            _ => Err(Error::Input("prefixes must be a list of strings".into())),
        })
        .transpose()
        .map_err(to_py)?;
    let folder = manifest_location
        .map(commands::requeue::manifest_folder)
        .transpose()
        .map_err(to_py)?;
    let report = block_on(py, async {
        match folder {
            Some(folder) => {
                commands::requeue::requeue_failed_objects(&options, prefixes, &folder).await
            }
            None => commands::requeue::requeue_prefixes(&options, prefixes).await,
        }
    })?;
    to_json(&report)
}

/// The manager; with the local engine it also executes the transfers on
/// background threads for as long as it lives.
#[pyclass(module = "sts_job_manager._core")]
struct Manager {
    inner: Arc<tokio::sync::Mutex<CoreManager>>,
    /// The process that built it.
    pid: u32,
}

/// An object built before a fork and used in the child: its connections
/// and locks belong to the parent, so it is refused at once with what to
/// do (a hang is the alternative).
pub(crate) fn same_process(pid: u32, what: &str) -> PyResult<()> {
    if pid == std::process::id() {
        return Ok(());
    }
    Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
        "this {what} was created in process {pid}, before a fork; create a new {what} in \
         this process (process {}) and use that one",
        std::process::id()
    )))
}

impl Manager {
    fn inner(&self) -> PyResult<Arc<tokio::sync::Mutex<CoreManager>>> {
        same_process(self.pid, "Manager")?;
        Ok(Arc::clone(&self.inner))
    }
}

#[pymethods]
impl Manager {
    #[new]
    #[pyo3(signature = (options_json, credentials=None, impersonation_chain=None))]
    fn new(
        py: Python<'_>,
        options_json: &str,
        credentials: Option<&Bound<'_, PyAny>>,
        impersonation_chain: Option<Vec<String>>,
    ) -> PyResult<Self> {
        init_logging();
        let handed = handed_credentials(credentials, impersonation_chain)?;
        let options = parse_options(options_json).map_err(to_py)?;
        let manager = block_on(py, with_credentials(handed, open_manager(options)))?;
        Ok(Manager {
            inner: Arc::new(tokio::sync::Mutex::new(manager)),
            pid: std::process::id(),
        })
    }

    /// One full cycle (sync, start jobs, sync); returns the summary as JSON.
    fn run_once(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner()?;
        let summary = block_on(py, async move { Ok(inner.lock().await.run_once().await?) })?;
        to_json(&summary)
    }

    /// One loop iteration honouring the intervals; returns the summary as JSON.
    fn iteration(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner()?;
        let summary = block_on(py, async move { Ok(inner.lock().await.iteration().await?) })?;
        to_json(&summary)
    }

    /// Iterates until every prefix is finished or `timeout` seconds passed;
    /// returns (finished, last summary as JSON).
    #[pyo3(signature = (timeout=None))]
    fn run_until_done(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(bool, String)> {
        let deadline = deadline(timeout)?;
        let inner = self.inner()?;
        let (done, summary) = block_on(py, until_done(inner, deadline))?;
        Ok((done, to_json(&summary)?))
    }

    /// `run_once` as an awaitable; the work runs on the shared tokio runtime.
    fn run_once_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner()?;
        future_into_py(py, async move {
            let summary = inner.lock().await.run_once().await;
            to_json(&summary.map_err(|e| to_py(e.into()))?)
        })
    }

    /// `run_until_done` as an awaitable.
    #[pyo3(signature = (timeout=None))]
    fn run_until_done_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let deadline = deadline(timeout)?;
        let inner = self.inner()?;
        future_into_py(py, async move {
            let (done, summary) = until_done(inner, deadline).await.map_err(to_py)?;
            Ok((done, to_json(&summary)?))
        })
    }
}

fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        // NaN, infinities, negatives and spans past what a clock can hold
        // are refused by name, never a panic.
        Some(t) => Duration::try_from_secs_f64(t)
            .ok()
            .and_then(|span| Instant::now().checked_add(span))
            .map(Some)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "timeout must be a finite number of seconds >= 0 (at most about 100 years), not {t}"
                ))
            }),
    }
}

/// The manager loop until nothing is pending or running, or the deadline.
async fn until_done(
    inner: Arc<tokio::sync::Mutex<CoreManager>>,
    deadline: Option<Instant>,
) -> Result<(bool, CycleSummary), Error> {
    Ok(inner.lock().await.run_until_done(deadline).await?)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_options, m)?)?;
    m.add_function(wrap_pyfunction!(prepare_tables, m)?)?;
    m.add_function(wrap_pyfunction!(pause_all_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(remove_successful_one_time_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(requeue, m)?)?;
    m.add_class::<Manager>()?;
    m.add_class::<state::State>()?;
    // No runtime starts here: it starts on first use, in each process
    // (see `runtime`), so a child forked after import gets its own.
    Ok(())
}
