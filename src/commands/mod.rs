//! The tool layer: one file per command-line tool and this registry. Each
//! tool is a [`Tool`]: its name, what `--help` says it does, the shared
//! option groups it takes, its own flags (each declared once, with its
//! help) and its run. This is the one place where arguments become options
//! and flags, and where an error becomes an exit code
//! ([`Error::exit_code`]). Python's console scripts call [`main`].

pub mod cutover;
pub mod doctor;
pub mod emulator;
pub mod flags;
pub mod manager;
pub mod pause;
pub mod plan;
pub mod prefix_list;
pub mod prepare;
pub mod remove;
pub mod report;
pub mod requeue;
pub mod status;
pub mod verify;

use std::future::Future;
use std::pin::Pin;

use crate::error::{Error, Result};
use crate::logging::report;
use crate::options::{OptionGroup, Options};
use crate::runtime::{init_logging, runtime};
use flags::{FlagGroup, ToolFlags};

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
pub const REPORT: &str = "sts-report";

pub const CUTOVER: &str = "sts-cutover";

/// What a tool's run is handed: the shared options (parsed, config file
/// applied, validated) and its own flags as given.
pub struct Invocation {
    pub options: Options,
    pub flags: ToolFlags,
}

/// A run's future: the exit code of a run that did its work (0; 1 when a
/// check failed; 4 when a comparison found a mismatch), or the error.
pub type Running = Pin<Box<dyn Future<Output = Result<i32>>>>;

/// One command-line tool. A new tool is one file with its `TOOL` and one
/// entry in [`TOOLS`].
pub struct Tool {
    pub name: &'static str,
    pub about: &'static str,
    /// Printed after the flags in `--help` ("" for nothing).
    pub after: &'static str,
    /// Shared options, by group (headings in `--help`).
    pub groups: &'static [&'static OptionGroup],
    /// This tool's own flags, by heading.
    pub own: &'static [FlagGroup],
    /// It takes SIGINT and SIGTERM itself (to finish the step it is in);
    /// every other tool is stopped at once.
    pub stops_itself: bool,
    pub run: fn(Invocation) -> Running,
}

pub const TOOLS: &[&Tool] = &[
    &manager::TOOL,
    &prepare::TOOL,
    &pause::TOOL,
    &remove::TOOL,
    &requeue::TOOL,
    &plan::TOOL,
    &verify::TOOL,
    &doctor::TOOL,
    &status::TOOL,
    &report::TOOL,
    &cutover::TOOL,
    &emulator::TOOL,
];

pub fn tool(program: &str) -> Option<&'static Tool> {
    TOOLS.iter().copied().find(|t| t.name == program)
}

/// What a command line asked of a tool.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` or `--version`: print this to stdout and exit 0.
    Print(String),
    Run(Box<Options>, ToolFlags),
}

/// Turns a tool's arguments (without the program name) into its options
/// and own flags: one clap command of its groups and flags, the config file
/// applied, the options it takes validated.
pub fn parse<S: AsRef<str>>(
    tool: &Tool,
    args: &[S],
) -> std::result::Result<Parsed, crate::options::OptionsError> {
    use clap::error::ErrorKind;
    let mut command = flags::add(
        crate::options::command(tool.name, tool.about, tool.groups),
        tool.own,
    );
    if !tool.after.is_empty() {
        command = command.after_help(tool.after);
    }
    let argv = std::iter::once(tool.name).chain(args.iter().map(AsRef::as_ref));
    let matches = match command.try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Parsed::Print(e.render().to_string()));
        }
        Err(e) => {
            return Err(crate::options::OptionsError::Usage(
                crate::options::one_line(&e),
            ))
        }
    };
    let options = Options::from_matches(&matches, tool.groups)?;
    Ok(Parsed::Run(
        Box::new(options),
        flags::collect(&matches, tool.own),
    ))
}

/// Runs one tool; returns the process exit code: 0 ok, 1 failed, 2 bad
/// usage or input, 3 another manager holds the job table, 4 the migration
/// finished with prefixes in error (or sts-verify found a mismatch), 130
/// stopped by a signal.
pub fn main(program: &str, args: &[String]) -> i32 {
    let Some(tool) = tool(program) else {
        report("ERROR", &format!("error: unknown tool '{program}'"));
        return 2;
    };
    let (options, flags) = match parse(tool, args) {
        Ok(Parsed::Print(text)) => {
            crate::out!("{text}");
            return 0;
        }
        Ok(Parsed::Run(options, flags)) => (*options, flags),
        Err(e) => {
            report("ERROR", &format!("{program}: error: {e}"));
            return 2;
        }
    };
    init_logging();
    let outcome = runtime().block_on(async {
        // SIGINT and SIGTERM stop every tool at once, wherever it is (a
        // token fetch, a listing, a write: each write is one transaction, so
        // a stop leaves no half of one), but those that finish their step.
        let work = (tool.run)(Invocation { options, flags });
        if tool.stops_itself {
            return work.await;
        }
        let stop = stop_signal()?;
        tokio::select! {
            outcome = work => outcome,
            _ = stop => Err(Error::Interrupted),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            // An ending (a signal, errors left) is said as it is; a failure
            // is called an error.
            let said = match code {
                130 | 4 => format!("{program}: {e}"),
                _ => format!("{program}: error: {e}"),
            };
            report("ERROR", &said);
            code
        }
    }
}

/// [`crate::runtime::stop_signal`], a failure to watch signals named.
pub fn stop_signal() -> Result<impl Future<Output = ()>> {
    crate::runtime::stop_signal().map_err(|e| Error::Input(format!("cannot watch signals: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Command, OptionsError, SPECS};

    fn help(tool: &Tool) -> String {
        match parse(tool, &["--help"]) {
            Ok(Parsed::Print(text)) => text,
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

    fn options(tool: &Tool, args: &[&str]) -> Result<Options, OptionsError> {
        match parse(tool, args)? {
            Parsed::Run(options, _) => Ok(*options),
            Parsed::Print(text) => panic!("unexpected help: {text}"),
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
                .chain(
                    tool.own
                        .iter()
                        .flat_map(|g| g.flags)
                        .map(|f| f.name.to_string()),
                )
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
            for heading in tool
                .groups
                .iter()
                .map(|g| g.heading)
                .chain(tool.own.iter().map(|g| g.heading))
            {
                assert!(text.contains(heading), "{}: {heading}", tool.name);
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
        let o = options(
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
        let o = options(
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
            options(by_name(MANAGER), &["--dataset", "x"])
                .unwrap()
                .dataset,
            "x"
        );
    }

    #[test]
    fn original_prepare_flags_parse_and_other_tools_take_none_of_the_managers() {
        let o = options(
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
            assert!(options(by_name(name), &[]).is_ok());
            let err = options(by_name(name), &["--max-concurrent-jobs", "3"]).unwrap_err();
            assert!(
                matches!(&err, OptionsError::Usage(m) if m.contains("--max-concurrent-jobs")),
                "{err}"
            );
        }
        assert!(options(by_name(PREPARE), &["--sleep-timeout", "5"]).is_err());
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
        let o = options(by_name(PREPARE), &["--config-path", path]).unwrap();
        assert_eq!(o.dataset, "from-config");
        let o = options(by_name(PAUSE), &["--config-path", path]).unwrap();
        assert_eq!(o.transfer, "local:/tmp/x");
        let err = options(by_name(MANAGER), &["--config-path", path]).unwrap_err();
        assert!(err.to_string().contains("sleep-timeout"), "{err}");
        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(br#"{"no_such_option": 1}"#).unwrap();
        let err = options(
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
