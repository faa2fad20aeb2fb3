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
pub const PLAN: &str = "sts-plan";
pub const VERIFY: &str = "sts-verify";
pub const STATUS: &str = "sts-status";

fn summary(program: &str) -> Option<&'static str> {
    Some(match program {
        MANAGER => "The STS Job Manager: creates STS jobs for the prefixes of the job table and records each job's state.",
        PREPARE => "Creates the dataset and tables if they do not exist, and loads the job table with a list of prefixes.",
        PAUSE => "Pauses every running Storage Transfer Service operation of the project.",
        REMOVE => "Deletes one-time transfer jobs whose operations all succeeded.",
        REQUEUE => "Puts prefixes back to 'waiting' with a fresh retry count: every prefix in 'error', or those listed in --job-prefix-source-file.",
        PLAN => "Lists the source bucket and proposes prefixes balanced by bytes: every object covered by exactly one prefix, none a prefix of another.",
        VERIFY => "Compares source and destination for every done prefix (name, size, crc32c, md5 where both have it) and records the verdicts in the verification table.",
        STATUS => crate::status_cli::ABOUT,
        _ => return None,
    })
}

/// Runs one tool; returns the process exit code (0 ok, 1 failed, 2 bad usage
/// or input, 3 another manager holds the job table, 4 the migration finished
/// with prefixes in error, or sts-verify found a mismatch).
pub fn main(program: &str, args: &[String]) -> i32 {
    if program == EMULATOR {
        return crate::emulator::cli::main(args);
    }
    let Some(about) = summary(program) else {
        eprintln!("error: unknown tool '{program}'");
        return 2;
    };
    // sts-plan, sts-verify and sts-status take a few options of their own,
    // pulled out before the shared ones parse the rest.
    let (own_flags, own_help) = match program {
        PLAN => (crate::plan::tool::PLAN_FLAGS, crate::plan::tool::PLAN_HELP),
        VERIFY => (
            crate::verify::tool::VERIFY_FLAGS,
            crate::verify::tool::VERIFY_HELP,
        ),
        _ => (&[][..], ""),
    };
    let (own, args) = match crate::plan::tool::take_flags(args, own_flags) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return 2;
        }
    };
    let (status_flags, args) = if program == STATUS {
        match crate::status_cli::split_args(&args) {
            Ok(split) => split,
            Err(e) => {
                eprintln!("{program}: error: {e}");
                return 2;
            }
        }
    } else {
        (Default::default(), args)
    };
    let args = args.as_slice();
    let options = match Options::from_args(args) {
        Ok(Command::Help) => {
            print!("{}{own_help}", Options::help(program, about));
            if program == STATUS {
                print!("\n{}", crate::status_cli::HELP);
            }
            return 0;
        }
        Ok(Command::Run(options)) => *options,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return 2;
        }
    };
    init_logging();
    let mut mismatch = false;
    let outcome = runtime().block_on(async {
        match program {
            PLAN => {
                let plan_args = crate::plan::tool::PlanArgs::parse(&own).map_err(Error::Input)?;
                crate::plan::tool::run_plan(&options, &plan_args)
                    .await
                    .map(|report| print!("{}", crate::plan::tool::render(&report)))
            }
            VERIFY => {
                let verify_args =
                    crate::verify::tool::VerifyArgs::parse(&own).map_err(Error::Input)?;
                crate::verify::tool::run_verify(&options, &verify_args)
                    .await
                    .map(|report| {
                        mismatch = report.mismatched() > 0;
                        print!("{}", crate::verify::tool::render(&report));
                    })
            }
            MANAGER => run_manager(options, stop_signal()?).await,
            STATUS => crate::status_cli::run(&options, &status_flags, stop_signal()?).await,
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
        Ok(()) if mismatch => 4,
        Ok(()) => 0,
        Err(e @ Error::Busy { .. }) => {
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
            | Error::BadEntry { .. }
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
