//! The four command-line tools. Python's console scripts call `main`.

use std::future::Future;

use crate::backends::open_manager;
use crate::error::{Error, Result};
use crate::logging::report;
use crate::options::{
    Command, OptionGroup, Options, BUCKETS, GENERAL, HEARTBEAT, JOBS, LOAD, LOOP, REQUEUE_PREFIXES,
    STATE, STATUS_RETRIES, TRANSFER,
};
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
pub const DOCTOR: &str = "sts-doctor";

/// One command-line tool: its name, what `--help` says it does, and its
/// options as groups (headings in `--help`). A tool accepts these and no
/// others; a new tool is one entry here and one arm in `main`.
pub struct Tool {
    pub name: &'static str,
    pub about: &'static str,
    pub groups: &'static [&'static OptionGroup],
}

pub const TOOLS: &[Tool] = &[
    Tool {
        name: MANAGER,
        about: "The STS Job Manager: creates STS jobs for the prefixes of the job table and records each job's state.",
        groups: &[&GENERAL, &STATE, &TRANSFER, &JOBS, &LOOP, &HEARTBEAT],
    },
    Tool {
        name: PREPARE,
        about: "Creates the dataset and tables if they do not exist, and loads the job table with a list of prefixes.",
        groups: &[&GENERAL, &STATE, &LOAD],
    },
    Tool {
        name: PAUSE,
        about: "Pauses every running Storage Transfer Service operation of the project.",
        groups: &[&GENERAL, &TRANSFER],
    },
    Tool {
        name: REMOVE,
        about: "Deletes one-time transfer jobs whose operations all succeeded.",
        groups: &[&GENERAL, &TRANSFER],
    },
    Tool {
        name: REQUEUE,
        about: "Puts prefixes back to 'waiting' with a fresh retry count: every prefix in 'error', or those listed in --job-prefix-source-file.",
        groups: &[&GENERAL, &STATE, &REQUEUE_PREFIXES],
    },
    Tool {
        name: PLAN,
        about: "Lists the source bucket and proposes prefixes balanced by bytes: every object covered by exactly one prefix, none a prefix of another.",
        groups: &[&GENERAL, &STATE, &TRANSFER, &BUCKETS],
    },
    Tool {
        name: VERIFY,
        about: "Compares source and destination for every done prefix (name, size, crc32c, md5 where both have it) and records the verdicts in the verification table.",
        groups: &[&GENERAL, &STATE, &TRANSFER, &BUCKETS],
    },
    Tool {
        name: DOCTOR,
        about: "A read-only preflight against the project: APIs enabled, the STS service agent and its roles on both buckets, your own permissions, the BigQuery dataset, reusable jobs on the buckets. One line per check with the command that fixes it; exit 0 when every check passes, 1 otherwise.",
        groups: &[&GENERAL, &STATE, &BUCKETS, &HEARTBEAT],
    },
    Tool {
        name: STATUS,
        about: crate::status_cli::ABOUT,
        groups: &[&GENERAL, &STATE, &STATUS_RETRIES, &TRANSFER, &BUCKETS],
    },
];

pub fn tool(program: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == program)
}

/// Runs one tool; returns the process exit code (0 ok, 1 failed, 2 bad usage
/// or input, 3 another manager holds the job table, 4 the migration finished
/// with prefixes in error, or sts-verify found a mismatch).
pub fn main(program: &str, args: &[String]) -> i32 {
    if program == EMULATOR {
        return crate::emulator::cli::main(args);
    }
    let Some(tool) = tool(program) else {
        report("ERROR", &format!("error: unknown tool '{program}'"));
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
            report("ERROR", &format!("{program}: error: {e}"));
            return 2;
        }
    };
    let (status_flags, args) = if program == STATUS {
        match crate::status_cli::split_args(&args) {
            Ok(split) => split,
            Err(e) => {
                report("ERROR", &format!("{program}: error: {e}"));
                return 2;
            }
        }
    } else {
        (Default::default(), args)
    };
    let args = args.as_slice();
    let options = match Options::from_args(tool.name, tool.about, tool.groups, args) {
        Ok(Command::Print(text)) => {
            // --help (not --version) also lists the tool's own flags.
            let help = text.contains("Usage:");
            crate::out!("{text}");
            if help {
                crate::out!("{own_help}");
            }
            if help && program == STATUS {
                crate::out!("\n{}", crate::status_cli::HELP);
            }
            return 0;
        }
        Ok(Command::Run(options)) => *options,
        Err(e) => {
            report("ERROR", &format!("{program}: error: {e}"));
            return 2;
        }
    };
    init_logging();
    let mut mismatch = false;
    let mut checks_failed = false;
    let outcome = runtime().block_on(async {
        // SIGINT and SIGTERM stop every tool at once, wherever it is (a
        // token fetch, a listing, a write: each write is one transaction, so
        // a stop leaves no half of one). The manager and the status watch
        // take the signal themselves, to finish the step they are in.
        let interrupted = if matches!(program, MANAGER | STATUS) {
            None
        } else {
            Some(stop_signal()?)
        };
        let work = async {
            match program {
                PLAN => {
                    let plan_args =
                        crate::plan::tool::PlanArgs::parse(&own).map_err(Error::Input)?;
                    crate::plan::tool::run_plan(&options, &plan_args)
                        .await
                        .map(|report| crate::out!("{}", crate::plan::tool::render(&report)))
                }
                VERIFY => {
                    let verify_args =
                        crate::verify::tool::VerifyArgs::parse(&own).map_err(Error::Input)?;
                    crate::verify::tool::run_verify(&options, &verify_args)
                        .await
                        .map(|report| {
                            mismatch = report.mismatched() > 0;
                            crate::out!("{}", crate::verify::tool::render(&report));
                        })
                }
                MANAGER => run_manager(options, stop_signal()?).await,
                DOCTOR => crate::doctor::run(&options).await.map(|report| {
                    checks_failed = report.failed() > 0;
                    crate::outln!("{}", crate::doctor::render(&report));
                }),
                STATUS => crate::status_cli::run(&options, &status_flags, stop_signal()?).await,
                PREPARE => tools::prepare_tables(&options).await.map(|r| {
                    crate::outln!(
                        "Tables '{}' and '{}' are ready; loaded {} prefixes ({} already present).",
                        options.job_table,
                        options.job_history_table,
                        r.loaded,
                        r.already_present
                    );
                }),
                PAUSE => tools::pause_all_jobs(&options).await.map(|r| {
                    crate::outln!("Paused {} transfer operations.", r.count);
                    for e in &r.errors {
                        report("WARNING", &format!("  not paused: {e}"));
                    }
                }),
                REQUEUE => tools::requeue(&options).await.map(|r| {
                    crate::outln!("Requeued {} prefixes.", r.requeued.len());
                    for prefix in r.requeued.iter().take(20) {
                        crate::outln!("  {prefix:?}");
                    }
                    if r.requeued.len() > 20 {
                        crate::outln!("  ... and {} more", r.requeued.len() - 20);
                    }
                }),
                _ => tools::remove_successful_one_time_jobs(&options)
                    .await
                    .map(|r| {
                        crate::outln!("Removed {} successful one-time transfer jobs.", r.count);
                        for e in &r.errors {
                            report("WARNING", &format!("  not removed: {e}"));
                        }
                    }),
            }
        };
        match interrupted {
            None => work.await,
            Some(stop) => tokio::select! {
                outcome = work => outcome,
                _ = stop => Err(Error::Interrupted),
            },
        }
    });
    match outcome {
        Ok(()) if mismatch => 4,
        Ok(()) if checks_failed => 1,
        Ok(()) => 0,
        Err(e @ Error::Interrupted) => {
            report("ERROR", &format!("{program}: {e}"));
            130
        }
        Err(e @ Error::Busy { .. }) => {
            report("ERROR", &format!("{program}: error: {e}"));
            3
        }
        Err(e @ Error::FinishedWithErrors(_)) => {
            report("ERROR", &format!("{program}: {e}"));
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
                | crate::store::StoreError::Missing(_)
                | crate::store::StoreError::NoProject,
            )),
        ) => {
            report("ERROR", &format!("{program}: error: {e}"));
            2
        }
        Err(e) => {
            report("ERROR", &format!("{program}: error: {e}"));
            1
        }
    }
}

/// [`crate::runtime::stop_signal`], a failure to watch signals named.
fn stop_signal() -> Result<impl Future<Output = ()>> {
    crate::runtime::stop_signal().map_err(|e| Error::Input(format!("cannot watch signals: {e}")))
}

async fn run_manager(options: Options, stop: impl Future<Output = ()>) -> Result<()> {
    // A stop while opening (a token that never comes, a slow first call)
    // ends the tool at once: nothing was written yet.
    let mut stop = Box::pin(stop);
    let mut manager = tokio::select! {
        opened = open_manager(options) => opened?,
        _ = &mut stop => return Err(Error::Interrupted),
    };
    manager.run(stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Options, OptionsError, SPECS};

    fn help(tool: &Tool) -> String {
        match Options::from_args(tool.name, tool.about, tool.groups, &["--help"]) {
            Ok(Command::Print(text)) => text,
            other => panic!("{}: --help gave {other:?}", tool.name),
        }
    }

    /// The long options a help text lists: the `--name` of each line that
    /// starts with a dash (help texts come on the next line).
    fn listed(help: &str) -> Vec<String> {
        help.lines()
            .filter(|line| line.trim_start().starts_with('-'))
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("--"))
                    .map(|name| name.trim_end_matches(',').to_string())
            })
            .collect()
    }

    fn parse(tool: &Tool, args: &[&str]) -> Result<Options, OptionsError> {
        match Options::from_args(tool.name, tool.about, tool.groups, args)? {
            Command::Run(options) => Ok(*options),
            Command::Print(text) => panic!("unexpected help: {text}"),
        }
    }

    fn by_name(name: &str) -> &'static Tool {
        tool(name).unwrap()
    }

    #[test]
    fn each_tool_lists_exactly_its_own_options_with_defaults() {
        for tool in TOOLS {
            let text = help(tool);
            let mut expected: Vec<String> = tool
                .groups
                .iter()
                .flat_map(|g| g.options.iter().map(|o| o.to_string()))
                .collect();
            expected.extend(["help".to_string(), "version".to_string()]);
            let mut shown = listed(&text);
            // Help texts mention other options (`>= --sleep-timeout`): keep
            // only the first word of each option line.
            shown.retain(|name| {
                text.lines().any(|l| {
                    l.trim_start().starts_with(&format!("--{name}"))
                        || l.trim_start().starts_with(&format!("-h, --{name}"))
                        || l.trim_start().starts_with(&format!("-V, --{name}"))
                })
            });
            shown.sort();
            shown.dedup();
            expected.sort();
            assert_eq!(shown, expected, "{}:\n{text}", tool.name);
            for group in tool.groups {
                assert!(
                    text.contains(group.heading),
                    "{}: {}",
                    tool.name,
                    group.heading
                );
            }
        }
        let manager = help(by_name(MANAGER));
        assert!(manager.contains("[default: 1200]"), "{manager}");
        assert!(manager.contains("[default: migration-source]"), "{manager}");
        let pause = help(by_name(PAUSE));
        assert!(!pause.contains("--max-concurrent-jobs"), "{pause}");
        assert!(!pause.contains("--sleep-timeout <"), "{pause}");
    }

    #[test]
    fn every_option_belongs_to_a_group_and_every_group_names_options() {
        for spec in SPECS {
            assert!(
                crate::options::GROUPS
                    .iter()
                    .any(|g| g.options.contains(&spec.name)),
                "--{} is in no group",
                spec.name
            );
        }
        for group in crate::options::GROUPS {
            for name in group.options {
                assert!(
                    SPECS.iter().any(|s| s.name == *name),
                    "group '{}' names unknown option --{name}",
                    group.heading
                );
            }
        }
    }

    /// SPEC 4's table and the original README's spellings, on the manager.
    #[test]
    fn every_original_manager_flag_parses() {
        let o = parse(
            by_name(MANAGER),
            &[
                "--dataset",
                "d",
                "--dataset-location",
                "EU",
                "--job-table",
                "jobs",
                "--job-history-table",
                "hist",
                "--source-bucket",
                "src-b",
                "--destination-bucket",
                "dst-b",
                "--job-interval",
                "600",
                "--metrics-interval",
                "120",
                "--max-concurrent-jobs",
                "7",
                "--no-retry-on-job-error",
                "--allow-new-jobs-when-stalled",
                "--publish-heartbeat",
                "--stackdriver-project",
                "mon",
                "--overwrite-dest-objects",
                "--sleep-timeout",
                "30",
            ],
        )
        .unwrap();
        assert_eq!(
            (o.dataset.as_str(), o.dataset_location.as_str()),
            ("d", "EU")
        );
        assert_eq!(
            (o.job_table.as_str(), o.job_history_table.as_str()),
            ("jobs", "hist")
        );
        assert_eq!(
            (o.source_bucket.as_str(), o.destination_bucket.as_str()),
            ("src-b", "dst-b")
        );
        assert_eq!(
            (o.job_interval, o.metrics_interval, o.sleep_timeout),
            (600.0, 120.0, 30.0)
        );
        assert_eq!(o.max_concurrent_jobs, 7);
        assert!(o.no_retry_on_job_error && o.allow_new_jobs_when_stalled);
        assert!(o.publish_heartbeat && o.overwrite_dest_objects);
        assert_eq!(o.stackdriver_project.as_deref(), Some("mon"));
        // The original README's other spelling, `=` values, repeats (the
        // last wins, as with argparse) and argparse's unambiguous abbreviations.
        let o = parse(
            by_name(MANAGER),
            &[
                "--allow-new-jobs-on-stalled",
                "--max-concurrent-jobs=3",
                "--max-concurrent-jobs",
                "4",
                "--source-b",
                "abbrev",
            ],
        )
        .unwrap();
        assert!(o.allow_new_jobs_when_stalled);
        assert_eq!(o.max_concurrent_jobs, 4);
        assert_eq!(o.source_bucket, "abbrev");
        // `--dataset` is an option, not an ambiguous abbreviation.
        assert_eq!(
            parse(by_name(MANAGER), &["--dataset", "x"])
                .unwrap()
                .dataset,
            "x"
        );
    }

    #[test]
    fn original_prepare_flags_parse_and_other_tools_take_none_of_the_managers() {
        let o = parse(
            by_name(PREPARE),
            &[
                "--dataset",
                "d",
                "--dataset-location",
                "EU",
                "--job-prefix-source-file",
                "p.json",
                "--job-table",
                "jobs",
                "--job-history-table",
                "hist",
            ],
        )
        .unwrap();
        assert_eq!(o.job_prefix_source_file.as_deref(), Some("p.json"));
        assert_eq!(o.dataset_location, "EU");
        for name in [PAUSE, REMOVE] {
            assert!(parse(by_name(name), &[]).is_ok());
            let err = parse(by_name(name), &["--max-concurrent-jobs", "3"]).unwrap_err();
            assert!(
                matches!(&err, OptionsError::Usage(m) if m.contains("--max-concurrent-jobs")),
                "{err}"
            );
        }
        assert!(parse(by_name(PREPARE), &["--sleep-timeout", "5"]).is_err());
    }

    #[test]
    fn a_shared_config_file_serves_every_tool() {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Manager settings that would fail the manager's checks if they applied.
        file.write_all(
            br#"{"sleep_timeout": 900, "dataset": "from-config", "transfer": "local:/tmp/x"}"#,
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let o = parse(by_name(PREPARE), &["--config-path", path]).unwrap();
        assert_eq!(o.dataset, "from-config");
        let o = parse(by_name(PAUSE), &["--config-path", path]).unwrap();
        assert_eq!(o.transfer, "local:/tmp/x");
        let err = parse(by_name(MANAGER), &["--config-path", path]).unwrap_err();
        assert!(err.to_string().contains("sleep-timeout"), "{err}");
        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(br#"{"no_such_option": 1}"#).unwrap();
        let err = parse(
            by_name(PAUSE),
            &["--config-path", bad.path().to_str().unwrap()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("no_such_option"), "{err}");
    }

    #[test]
    fn version_and_exit_codes() {
        let version = Options::from_args(MANAGER, "", by_name(MANAGER).groups, &["--version"]);
        assert_eq!(
            version.unwrap(),
            Command::Print(format!("{MANAGER} {}\n", env!("CARGO_PKG_VERSION")))
        );
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(main(PAUSE, &args(&["--version"])), 0);
        assert_eq!(main(PAUSE, &args(&["--help"])), 0);
        assert_eq!(main(PAUSE, &args(&["--sleep-timeout", "5"])), 2);
        assert_eq!(main(MANAGER, &args(&["--sleep-timeout", "5000"])), 2);
        assert_eq!(main("sts-nothing", &[]), 2);
    }
}
