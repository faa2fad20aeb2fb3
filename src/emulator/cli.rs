//! `sts-emulator --root DIR [--port P] [faults...]`.

use std::path::PathBuf;

use crate::runtime::{init_logging, runtime};
use crate::transfer::local::{Faults, ENGINE_DIR};

use super::{serve, write_engine_faults, ApiFaults};

const ABOUT: &str = "An STS v1 REST API on 127.0.0.1 over the local transfer engine: bucket B is
the directory ROOT/B. Point clients at it with STORAGE_TRANSFER_EMULATOR_HOST.
It also serves the Cloud Storage JSON API for those buckets (bucket get,
object list and get): point Cloud Storage clients at it with STORAGE_EMULATOR_HOST.";

const AFTER: &str = "Faults can be changed while it runs: POST a JSON object with the same names
(underscores) to /_emulator/faults; GET it to read them.";

const FAULTS: &str = "Faults";

/// Engine faults (written to the root's faults.json when any is given).
const ENGINE_FAULTS: &[&str] = &[
    "fail-objects",
    "error-code",
    "bytes-per-second",
    "freeze-counters",
    "max-in-progress",
    "skip-scheduled-starts",
];

struct Settings {
    root: PathBuf,
    port: u16,
    api: ApiFaults,
    engine: Option<Faults>,
}

fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let engine = Faults::default();
    let value = |name: &'static str, value_name: &'static str, help: String| {
        Arg::new(name)
            .long(name)
            .value_name(value_name)
            .action(ArgAction::Set)
            .help(help)
    };
    let flag = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .action(ArgAction::SetTrue)
            .help(help)
    };
    clap::Command::new(crate::cli::EMULATOR)
        .about(ABOUT)
        .after_help(AFTER)
        .version(env!("CARGO_PKG_VERSION"))
        .args_override_self(true)
        .next_line_help(true)
        .arg(
            value(
                "root",
                "DIR",
                "Directory holding one directory per bucket".into(),
            )
            .required(true),
        )
        .arg(value(
            "port",
            "P",
            "Port to listen on (0: any free port) [default: 0]".into(),
        ))
        .arg(flag(
            "lenient",
            "Do not check requests against Google's discovery documents (strict mode is\n\
             the default: a request the real API would refuse is answered 400 and counted\n\
             in /_emulator/stats)",
        ))
        .arg(value(
            "bigquery-upstream",
            "HOST:PORT",
            "Forward /bigquery/v2/ requests to this BigQuery emulator (bqemulator), after\n\
             the strict check: point BIGQUERY_EMULATOR_HOST at this emulator instead"
                .into(),
        ))
        .next_help_heading(FAULTS)
        .arg(value(
            "fail-objects",
            "PATTERN",
            "Objects matching this *-pattern fail to copy".into(),
        ))
        .arg(value(
            "error-code",
            "CODE",
            format!(
                "google.rpc code of those failures [default: {}]",
                engine.error_code
            ),
        ))
        .arg(value(
            "bytes-per-second",
            "N",
            "Copy rate per operation (0: unlimited) [default: 0]".into(),
        ))
        .arg(flag(
            "freeze-counters",
            "Operations make no progress (a stall)",
        ))
        .arg(value(
            "max-in-progress",
            "N",
            format!(
                "Operations in progress at once; more are QUEUED [default: {}]",
                engine.max_in_progress
            ),
        ))
        .arg(flag(
            "skip-scheduled-starts",
            "New one-time jobs do not start on their own (run still works)",
        ))
        .arg(
            value(
                "api-error-rate",
                "F",
                "Share of API requests answered with an error, 0 to 1 [default: 0]".into(),
            )
            .allow_negative_numbers(true),
        )
        .arg(value(
            "api-error-codes",
            "LIST",
            "Comma-separated HTTP codes for those errors [default: 429,503]".into(),
        ))
        .arg(flag(
            "sts-quotas",
            "Enforce STS's per-project quotas (create 600/min and 5,000/day, read 1,500/min,\n\
             update and delete 600/min, pause/resume/cancel 900/min): 429 RESOURCE_EXHAUSTED",
        ))
        .arg(
            value(
                "quota",
                "NAME=N",
                "Enforce one quota (create_per_day=20, read_per_minute=100, ...); repeatable"
                    .into(),
            )
            .action(ArgAction::Append),
        )
}

enum Parsed {
    /// `--help`, `--version`: print this and exit 0.
    Print(String),
    Run(Box<Settings>),
}

/// A command line clap refuses (its message on one line) or a value
/// that is not usable.
enum ParseError {
    Usage(String),
    Invalid(String),
}

impl From<String> for ParseError {
    fn from(problem: String) -> Self {
        ParseError::Invalid(problem)
    }
}

impl From<&str> for ParseError {
    fn from(problem: &str) -> Self {
        ParseError::Invalid(problem.to_string())
    }
}

fn parse(args: &[String]) -> Result<Parsed, ParseError> {
    use clap::error::ErrorKind;
    let argv = std::iter::once(crate::cli::EMULATOR).chain(args.iter().map(String::as_str));
    let matches = match command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Parsed::Print(e.render().to_string()));
        }
        Err(e) => return Err(ParseError::Usage(crate::options::one_line(&e))),
    };
    let text = |name: &str| matches.get_one::<String>(name).cloned();
    let number = |name: &str| -> Result<Option<f64>, String> {
        text(name)
            .map(|t| {
                t.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or(format!("--{name}: '{t}' is not a non-negative number"))
            })
            .transpose()
    };
    let port = match text("port") {
        None => 0,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("--port: '{p}' is not a port number"))?,
    };
    let mut api = ApiFaults::default();
    if let Some(rate) = number("api-error-rate")? {
        api.api_error_rate = rate;
    }
    if let Some(codes) = text("api-error-codes") {
        api.api_error_codes = codes
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("--api-error-codes: '{c}' is not an HTTP code"))
            })
            .collect::<Result<_, _>>()?;
    }
    api.sts_quotas = matches.get_flag("sts-quotas");
    api.lenient = matches.get_flag("lenient");
    api.bigquery_upstream = text("bigquery-upstream");
    for text in matches.get_many::<String>("quota").into_iter().flatten() {
        let (name, limit) = text
            .split_once('=')
            .ok_or_else(|| format!("--quota: '{text}' is not NAME=N"))?;
        let limit = limit
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("--quota: '{limit}' is not a whole number"))?;
        api.quotas.insert(name.trim().to_string(), limit);
    }
    api.validate()?;
    let engine = if ENGINE_FAULTS
        .iter()
        .any(|name| matches.value_source(name) == Some(clap::parser::ValueSource::CommandLine))
    {
        let mut faults = Faults {
            fail_objects_matching: text("fail-objects"),
            freeze_counters: matches.get_flag("freeze-counters"),
            skip_scheduled_starts: matches.get_flag("skip-scheduled-starts"),
            ..Faults::default()
        };
        if let Some(code) = text("error-code") {
            faults.error_code = code;
        }
        if let Some(rate) = number("bytes-per-second")? {
            faults.bytes_per_second = rate as u64;
        }
        if let Some(max) = number("max-in-progress")? {
            faults.max_in_progress = max as usize;
        }
        Some(faults)
    } else {
        None
    };
    let root = PathBuf::from(text("root").ok_or("--root is required")?);
    if !root.is_dir() {
        return Err(format!("--root {} is not a directory", root.display()).into());
    }
    Ok(Parsed::Run(Box::new(Settings {
        root,
        port,
        api,
        engine,
    })))
}

pub fn main(args: &[String]) -> i32 {
    let settings = match parse(args) {
        Ok(Parsed::Run(settings)) => settings,
        Ok(Parsed::Print(text)) => {
            crate::out!("{text}");
            return 0;
        }
        Err(ParseError::Usage(e) | ParseError::Invalid(e)) => {
            crate::logging::report("ERROR", &format!("sts-emulator: error: {e}"));
            return 2;
        }
    };
    init_logging();
    if let Some(faults) = &settings.engine {
        if let Err(e) = write_engine_faults(&settings.root, faults) {
            crate::logging::report(
                "ERROR",
                &format!(
                    "sts-emulator: error: cannot write {}/{ENGINE_DIR}/faults.json: {e}",
                    settings.root.display()
                ),
            );
            return 1;
        }
    }
    let outcome = runtime().block_on(async {
        let stop = match crate::runtime::stop_signal() {
            Ok(stop) => stop,
            Err(e) => return Err(format!("cannot watch signals: {e}")),
        };
        serve(
            &settings.root,
            settings.port,
            settings.api,
            |address| {
                use std::io::Write;
                crate::outln!("sts-emulator listening on http://{address}");
                let _ = std::io::stdout().flush();
            },
            stop,
        )
        .await
        .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            crate::logging::report("ERROR", &format!("sts-emulator: error: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, ParseError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_parse_into_settings_and_faults() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_str().unwrap();
        let Ok(Parsed::Run(plain)) = run(&["--root", dir]) else {
            panic!("--root alone should run")
        };
        assert!(plain.engine.is_none() && plain.port == 0);
        let Ok(Parsed::Run(s)) = run(&[
            "--root",
            dir,
            "--port",
            "8123",
            "--fail-objects",
            "a/*",
            "--freeze-counters",
            "--api-error-rate",
            "0.2",
            "--api-error-codes",
            "429, 500",
            "--sts-quotas",
            "--quota",
            "create_per_day=20",
            "--quota",
            "read_per_minute=100",
        ]) else {
            panic!("every flag should parse")
        };
        let engine = s.engine.unwrap();
        assert_eq!(engine.fail_objects_matching.as_deref(), Some("a/*"));
        assert!(engine.freeze_counters);
        assert_eq!(engine.error_code, "PERMISSION_DENIED");
        assert_eq!((s.port, s.api.api_error_rate), (8123, 0.2));
        assert_eq!(s.api.api_error_codes, [429, 500]);
        assert!(s.api.sts_quotas);
        assert_eq!(s.api.quotas.get("create_per_day"), Some(&20));
        assert_eq!(s.api.quotas.get("read_per_minute"), Some(&100));
        for bad in [
            &["--root", dir, "--api-error-rate", "2"][..],
            &["--root", dir, "--port", "http"],
            &["--root", "/nonexistent/dir"],
            &["--root", dir, "--quota", "create_per_day"],
        ] {
            assert!(matches!(run(bad), Err(ParseError::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(run(&[]), Err(ParseError::Usage(m)) if m.contains("--root")));
        assert!(matches!(
            run(&["--root", dir, "--state", "x"]),
            Err(ParseError::Usage(_))
        ));
        let Ok(Parsed::Print(help)) = run(&["--help"]) else {
            panic!("--help")
        };
        assert!(help.contains("Faults:") && help.contains("--skip-scheduled-starts"));
        assert!(!help.contains("--sleep-timeout"));
        assert!(
            matches!(run(&["--version"]), Ok(Parsed::Print(v)) if v.starts_with("sts-emulator "))
        );
    }
}
