//! One tokio runtime per process, shared by the command line and Python.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("sts-job-manager")
            .build()
            // Without a runtime nothing can run; this only fails when the OS
            // refuses threads, and there is no caller that could recover.
            .expect("could not start the tokio runtime")
    })
}

/// The shared runtime if something already started it (never starts one).
pub fn existing() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// Logs go to stderr at the level named by LOGLEVEL (as in the original).
pub fn init_logging() {
    let level = match std::env::var("LOGLEVEL")
        .unwrap_or_default()
        .to_ascii_uppercase()
        .as_str()
    {
        "TRACE" => tracing::Level::TRACE,
        "DEBUG" => tracing::Level::DEBUG,
        "WARNING" | "WARN" => tracing::Level::WARN,
        "ERROR" | "CRITICAL" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    // A second call (a notebook re-running a cell) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
