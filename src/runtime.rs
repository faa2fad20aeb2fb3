//! One tokio runtime per process, shared by the command line and Python.
//!
//! The runtime starts on first use, not at import, and belongs to the process
//! that started it. A forked child (Celery prefork workers, multiprocessing,
//! gunicorn preload, Airflow executors) inherits the parent's runtime without
//! its worker threads, so blocking on it would hang forever: every call
//! checks the process id, and a child builds its own runtime on first use.
//! The parent's copy is leaked in the child, never dropped (its drop would
//! wait for threads that do not exist there). No lock is taken, so a fork
//! at any moment leaves nothing locked in the child.

use std::sync::atomic::{AtomicPtr, Ordering};

use tokio::runtime::Runtime;

struct Owned {
    pid: u32,
    runtime: Runtime,
}

/// The runtime of the process that built it (a leaked `Owned`), or null.
static CURRENT: AtomicPtr<Owned> = AtomicPtr::new(std::ptr::null_mut());

fn load() -> (*mut Owned, Option<&'static Owned>) {
    let ptr = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT holds null or a pointer from `Box::leak`, never freed,
    // so it stays valid for 'static (in a forked child too: memory is copied).
    let owned = unsafe { ptr.as_ref() };
    (ptr, owned.filter(|o| o.pid == std::process::id()))
}

/// The runtime of this process, built on first use (and again in a forked
/// child, on its first use there).
pub fn runtime() -> &'static Runtime {
    let (seen, owned) = load();
    if let Some(owned) = owned {
        return &owned.runtime;
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sts-job-manager")
        .build()
        // Without a runtime nothing can run; this only fails when the OS
        // refuses threads, and there is no caller that could recover.
        .expect("could not start the tokio runtime");
    let fresh = Box::into_raw(Box::new(Owned {
        pid: std::process::id(),
        runtime: built,
    }));
    match CURRENT.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` came from Box::into_raw just above and is now
        // published for good (never freed).
        Ok(_) => &unsafe { &*fresh }.runtime,
        Err(_) => {
            // Another thread of this process built one first: use that one
            // and stop ours without waiting (it never ran anything).
            // SAFETY: `fresh` was never published; we still own it.
            let ours = unsafe { Box::from_raw(fresh) };
            ours.runtime.shutdown_background();
            self::runtime()
        }
    }
}

/// This process's runtime if something already started it (never starts one).
pub fn existing() -> Option<&'static Runtime> {
    load().1.map(|o| &o.runtime)
}

/// Logs go to stderr at LOGLEVEL, as text or (`LOG_FORMAT=json`) JSON lines.
pub fn init_logging() {
    crate::logging::init();
}

/// Resolves on SIGINT or SIGTERM. Registered when called (before a loop
/// starts), so a signal that lands mid-iteration stops the loop once the
/// step is written. For every long-running entry point: the manager, the
/// status watch, the emulator.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
