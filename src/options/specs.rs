//! Every option as declared (its flag, kind and help), the groups tools take
//! them in, and the clap command that `--help` and parsing come from.

use serde_json::Value;

use super::{Options, OptionsError, SPECS};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Text,
    OptionalText,
    Seconds,
    Count,
    Flag,
}

/// One option: its flag name (dashes), how its value is read, and its help.
/// Defaults are not repeated here: `--help` shows `Options::default()`'s.
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// A heading in `--help` and a set of options that tools take together. A
/// tool's options are the groups it lists (`commands::TOOLS`); adding an option
/// means one entry of the options table (`options/mod.rs`) and a place in one
/// group.
pub struct OptionGroup {
    pub heading: &'static str,
    pub options: &'static [&'static str],
}

/// `--help` and `--version` are listed under this group's heading too.
pub const GENERAL: OptionGroup = OptionGroup {
    heading: "Options",
    options: &["config-path", "project"],
};
pub const STATE: OptionGroup = OptionGroup {
    heading: "State (the job and history tables)",
    options: &[
        "state",
        "dataset",
        "dataset-location",
        "job-table",
        "job-history-table",
    ],
};
pub const LOAD: OptionGroup = OptionGroup {
    heading: "Prefixes",
    options: &["job-prefix-source-file", "allow-overlapping-prefixes"],
};
/// The prefixes `sts-requeue` puts back (all in `error` without it).
pub const REQUEUE_PREFIXES: OptionGroup = OptionGroup {
    heading: "Prefixes",
    options: &["job-prefix-source-file"],
};
/// Whether failed prefixes still count as pending (sts-status).
pub const STATUS_RETRIES: OptionGroup = OptionGroup {
    heading: "Retries and stalls (as the manager judges them)",
    options: &["no-retry-on-job-error", "max-retries", "stall-after"],
};
/// The two buckets alone (sts-plan, sts-verify).
pub const BUCKETS: OptionGroup = OptionGroup {
    heading: "Buckets",
    options: &["source-bucket", "destination-bucket"],
};
pub const TRANSFER: OptionGroup = OptionGroup {
    heading: "Transfer service",
    options: &["transfer"],
};
pub const JOBS: OptionGroup = OptionGroup {
    heading: "Transfer jobs",
    options: &[
        "source-bucket",
        "destination-bucket",
        "overwrite-dest-objects",
        "max-concurrent-jobs",
        "no-retry-on-job-error",
        "allow-new-jobs-when-stalled",
        "max-retries",
        "start-timeout",
        "no-job-reuse",
        "no-object-logs",
    ],
};
/// What each transfer does with objects beyond copying them (the manager,
/// sts-cutover), and what sts-verify then checks.
pub const OBJECTS: OptionGroup = OptionGroup {
    heading: "Objects (metadata kept, moves)",
    options: &["preserve", "move"],
};
/// `--move` alone: sts-doctor checks the agent may delete from the source.
pub const MOVES: OptionGroup = OptionGroup {
    heading: "Objects (moves)",
    options: &["move"],
};
pub const LOOP: OptionGroup = OptionGroup {
    heading: "The loop",
    options: &[
        "sleep-timeout",
        "metrics-interval",
        "job-interval",
        "reconcile-interval",
        "stall-after",
        "lease-seconds",
        "exit-when-done",
    ],
};
pub const HEARTBEAT: OptionGroup = OptionGroup {
    heading: "Heartbeat (Cloud Monitoring)",
    options: &["publish-heartbeat", "stackdriver-project"],
};
/// Every group, for checks that every option has a place.
pub const GROUPS: &[&OptionGroup] = &[
    &GENERAL,
    &STATE,
    &BUCKETS,
    &STATUS_RETRIES,
    &LOAD,
    &REQUEUE_PREFIXES,
    &TRANSFER,
    &JOBS,
    &OBJECTS,
    &MOVES,
    &LOOP,
    &HEARTBEAT,
];

/// Old spellings still accepted, mapped to the option they stand for.
const ALIASES: &[(&str, &str)] = &[("allow-new-jobs-on-stalled", "allow-new-jobs-when-stalled")];

pub(super) fn canonical(key: &str) -> Result<&'static str, OptionsError> {
    let dashed = key.trim_start_matches('-').replace('_', "-");
    if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == dashed) {
        return Ok(target);
    }
    SPECS
        .iter()
        .find(|s| s.name == dashed)
        .map(|s| s.name)
        .ok_or_else(|| OptionsError::UnknownOption(key.to_string()))
}

/// A tool's options: the union of its groups.
pub(super) fn in_groups(groups: &[&OptionGroup], name: &str) -> bool {
    groups.iter().any(|g| g.options.contains(&name))
}

/// `Options::default()`'s value of an option as `--help` shows it (none for
/// flags and unset values).
fn default_shown(defaults: &Value, name: &str) -> Option<String> {
    match defaults.get(name.replace('-', "_"))? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// A clap error on one line, as every other bad input is reported: its
/// message with what it lists (missing options, tips such as "a similar
/// argument exists"), then a pointer to --help; the usage block is left out.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut out = String::new();
    for line in rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
    {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line.strip_prefix("error: ").unwrap_or(line));
    }
    out.push_str(" (see --help)");
    out
}

/// The clap command of one tool: its groups' options under their headings,
/// each with its default; `--version`; argparse's habits (the last of a
/// repeated option wins, unambiguous abbreviations are accepted).
pub fn command(
    program: &'static str,
    about: &'static str,
    groups: &[&OptionGroup],
) -> clap::Command {
    use clap::{Arg, ArgAction};
    let defaults = serde_json::to_value(Options::default()).unwrap_or(Value::Null);
    let mut command = clap::Command::new(program)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .args_override_self(true)
        .infer_long_args(true)
        .next_line_help(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print this help and exit")
                .help_heading(GENERAL.heading),
        )
        .arg(
            Arg::new("version")
                .short('V')
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit")
                .help_heading(GENERAL.heading),
        );
    let mut added: Vec<&str> = Vec::new();
    for group in groups {
        for &name in group.options {
            // Groups may share an option: it is listed under the first.
            if added.contains(&name) {
                continue;
            }
            added.push(name);
            let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
                continue; // a group naming no option is caught by a unit test
            };
            let mut help = spec.help.to_string();
            if let Some(default) = default_shown(&defaults, name) {
                help.push_str(&format!(" [default: {default}]"));
            }
            let mut arg = Arg::new(name)
                .long(name)
                .help(help)
                .help_heading(group.heading);
            arg = match spec.kind {
                Kind::Flag => arg.action(ArgAction::SetTrue),
                Kind::Seconds | Kind::Count => arg
                    .action(ArgAction::Set)
                    .value_name("N")
                    .allow_negative_numbers(true),
                Kind::Text | Kind::OptionalText => arg
                    .action(ArgAction::Set)
                    .value_name(name.to_ascii_uppercase().replace('-', "_")),
            };
            for (alias, target) in ALIASES {
                if *target == name {
                    arg = arg.alias(*alias);
                }
            }
            command = command.arg(arg);
        }
    }
    command
}
