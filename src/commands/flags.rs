//! A tool's own flags (`sts-plan --shards`, `sts-status --watch`, the
//! emulator's faults), declared once each with their help, added to the same
//! clap command as the shared options (so `--help` lists them under their
//! heading) and handed to the tool as [`ToolFlags`].

use std::collections::HashMap;

/// One flag of one tool.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Without dashes.
    pub name: &'static str,
    /// The value's name in `--help` (`N`, `FILE`); `None`: a switch.
    pub value: Option<&'static str>,
    /// May be given more than once, every value kept (else the last wins).
    pub repeat: bool,
    pub required: bool,
    pub help: &'static str,
}

impl Flag {
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: None,
            repeat: false,
            required: false,
            help,
        }
    }

    pub const fn value(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: Some(value),
            repeat: false,
            required: false,
            help,
        }
    }

    pub const fn repeated(self) -> Flag {
        Flag {
            repeat: true,
            ..self
        }
    }

    pub const fn required(self) -> Flag {
        Flag {
            required: true,
            ..self
        }
    }
}

/// Flags listed together in `--help` under `heading`.
#[derive(Debug, Clone, Copy)]
pub struct FlagGroup {
    pub heading: &'static str,
    pub flags: &'static [Flag],
}

/// A tool's own flags as given: name (no dashes) -> its values in the order given
/// (`""` for a switch). A flag not given has no entry.
pub type ToolFlags = HashMap<&'static str, Vec<String>>;

/// The last value given for `flag` (its name, no dashes), if any.
pub fn last<'a>(found: &'a ToolFlags, flag: &str) -> Option<&'a str> {
    found.get(flag).and_then(|v| v.last()).map(String::as_str)
}

/// Whether the switch `flag` (its name, no dashes) was given.
pub fn given(found: &ToolFlags, flag: &str) -> bool {
    found.contains_key(flag)
}

/// Adds `groups` to `command`.
pub fn add(mut command: clap::Command, groups: &[FlagGroup]) -> clap::Command {
    use clap::{Arg, ArgAction};
    for group in groups {
        for flag in group.flags {
            let mut arg = Arg::new(flag.name)
                .long(flag.name)
                .help(flag.help)
                .help_heading(group.heading)
                .required(flag.required);
            arg = match (flag.value, flag.repeat) {
                (None, _) => arg.action(ArgAction::SetTrue),
                (Some(value), repeat) => {
                    arg.value_name(value)
                        .allow_negative_numbers(true)
                        .action(if repeat {
                            ArgAction::Append
                        } else {
                            ArgAction::Set
                        })
                }
            };
            command = command.arg(arg);
        }
    }
    command
}

/// The flags of `groups` that `matches` holds from the command line.
pub fn collect(matches: &clap::ArgMatches, groups: &[FlagGroup]) -> ToolFlags {
    let mut found = ToolFlags::new();
    for flag in groups.iter().flat_map(|g| g.flags) {
        if matches.value_source(flag.name) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let values: Vec<String> = match flag.value {
            None => vec![String::new()],
            Some(_) => matches
                .get_many::<String>(flag.name)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        };
        found.insert(flag.name, values);
    }
    found
}

/// Own flags alone (the Python API): `args` as on a command line, checked
/// by the same declarations. A clap refusal is one line.
pub fn parse(
    program: &'static str,
    groups: &[FlagGroup],
    args: &[String],
) -> Result<ToolFlags, String> {
    let command = add(
        clap::Command::new(program)
            .no_binary_name(true)
            .args_override_self(true)
            .disable_help_flag(true)
            .disable_version_flag(true),
        groups,
    );
    match command.try_get_matches_from(args) {
        Ok(matches) => Ok(collect(&matches, groups)),
        Err(e) => Err(crate::options::one_line(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &[FlagGroup] = &[FlagGroup {
        heading: "t options",
        flags: &[
            Flag::value("shards", "N", "how many"),
            Flag::switch("load", "load them"),
            Flag::value("prefix", "PREFIX", "one prefix").repeated(),
        ],
    }];

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn own_flags_parse_with_repeats_last_wins_and_negative_values() {
        let found = parse(
            "t",
            GROUPS,
            &args(&[
                "--shards",
                "3",
                "--shards=5",
                "--load",
                "--prefix",
                "a/",
                "--prefix",
                "b/",
            ]),
        )
        .unwrap();
        assert_eq!(last(&found, "shards"), Some("5"));
        assert!(given(&found, "load"));
        assert_eq!(found["prefix"], ["a/", "b/"]);
        // A negative number is a value (refused by the tool with its own
        // words), not a flag.
        let found = parse("t", GROUPS, &args(&["--shards", "-2"])).unwrap();
        assert_eq!(last(&found, "shards"), Some("-2"));
        assert!(parse("t", GROUPS, &args(&["--shards"])).is_err());
        assert!(parse("t", GROUPS, &args(&["--load=yes"])).is_err());
        let unknown = parse("t", GROUPS, &args(&["--nope"])).unwrap_err();
        assert!(unknown.contains("--nope"), "{unknown}");
        assert!(parse("t", GROUPS, &[]).unwrap().is_empty());
    }
}
