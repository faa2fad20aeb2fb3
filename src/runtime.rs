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

/// Logs go to stderr at LOGLEVEL, as text or (`LOG_FORMAT=json`) JSON lines.
pub fn init_logging() {
    crate::logging::init();
}
