//! The four command-line tools. Python's console scripts call `main`.

use std::future::Future;

use crate::backends::open_manager;
use crate::error::{Error, Result};
use crate::options::{Command, Options};
use crate::runtime::{init_logging, runtime};
use crate::tools;

pub const MANAGER: &str = "sts-job-manager";
pub const PREPARE: &str = "sts-prepare-tables";
pub const PAUSE: &str = "sts-pause-all-jobs";
pub const REMOVE: &str = "sts-remove-successful-one-time-jobs";
pub const EMULATOR: &str = "sts-emulator";
pub const REQUEUE: &str = "sts-requeue";

fn summary(program: &str) -> Option<&'static str> {
    Some(match program {
        MANAGER => "The STS Job Manager: creates STS jobs for the prefixes of the job table and records each job's state.",
        PREPARE => "Creates the dataset and tables if they do not exist, and loads the job table with a list of prefixes.",
        PAUSE => "Pauses every running Storage Transfer Service operation of the project.",
        REMOVE => "Deletes one-time transfer jobs whose operations all succeeded.",
        REQUEUE => "Puts prefixes back to 'waiting' with a fresh retry count: every prefix in 'error', or those listed in --job-prefix-source-file.",
        _ => return None,
    })
}

/// Runs one tool; returns the process exit code (0 ok, 1 failed, 2 bad usage
/// or input, 3 another manager holds the job table, 4 the migration finished
/// with prefixes in error).
pub fn main(program: &str, args: &[String]) -> i32 {
    if program == EMULATOR {
        return crate::emulator::cli::main(args);
    }
    let Some(about) = summary(program) else {
        eprintln!("error: unknown tool '{program}'");
        return 2;
    };
    let options = match Options::from_args(args) {
        Ok(Command::Help) => {
            print!("{}", Options::help(program, about));
            return 0;
        }
        Ok(Command::Run(options)) => *options,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return 2;
        }
    };
    init_logging();
    let outcome = runtime().block_on(async {
        match program {
            MANAGER => run_manager(options, stop_signal()?).await,
            PREPARE => tools::prepare_tables(&options).await.map(|r| {
                println!(
                    "Tables '{}' and '{}' are ready; loaded {} prefixes ({} already present).",
                    options.job_table, options.job_history_table, r.loaded, r.already_present
                );
            }),
            PAUSE => tools::pause_all_jobs(&options).await.map(|r| {
                println!("Paused {} transfer operations.", r.count);
                for e in &r.errors {
                    eprintln!("  not paused: {e}");
                }
            }),
            REQUEUE => tools::requeue(&options).await.map(|r| {
                println!("Requeued {} prefixes.", r.requeued.len());
                for prefix in r.requeued.iter().take(20) {
                    println!("  {prefix:?}");
                }
                if r.requeued.len() > 20 {
                    println!("  ... and {} more", r.requeued.len() - 20);
                }
            }),
            _ => tools::remove_successful_one_time_jobs(&options)
                .await
                .map(|r| {
                    println!("Removed {} successful one-time transfer jobs.", r.count);
                    for e in &r.errors {
                        eprintln!("  not removed: {e}");
                    }
                }),
        }
    });
    match outcome {
        Ok(()) => 0,
        Err(e @ Error::Busy(_)) => {
            eprintln!("{program}: error: {e}");
            3
        }
        Err(e @ Error::FinishedWithErrors(_)) => {
            eprintln!("{program}: {e}");
            4
        }
        Err(
            e @ (Error::Options(_)
            | Error::Input(_)
            | Error::Unsupported(_)
            | Error::Store(
                crate::store::StoreError::InvalidIdentifier(_)
                | crate::store::StoreError::InvalidProject(_)
                | crate::store::StoreError::NoProject,
            )),
        ) => {
            eprintln!("{program}: error: {e}");
            2
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            1
        }
    }
}

/// Resolves on SIGINT or SIGTERM. Registered before the loop starts, so a
/// signal that lands mid-iteration stops the loop once the step is written.
pub(crate) fn stop_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let register =
        |kind| signal(kind).map_err(|e| Error::Input(format!("cannot watch signals: {e}")));
    let mut interrupt = register(SignalKind::interrupt())?;
    let mut terminate = register(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

async fn run_manager(options: Options, stop: impl Future<Output = ()>) -> Result<()> {
    let mut manager = open_manager(options).await?;
    manager.run(stop).await?;
    Ok(())
}
