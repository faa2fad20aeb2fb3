//! `sts-emulator --root DIR [--port P] [faults...]`.

use std::path::PathBuf;

use super::flags::{given, last, Flag, FlagGroup, ToolFlags};
use super::{Invocation, Running, Tool, EMULATOR};
use crate::emulator::{serve, write_engine_faults, ApiFaults};
use crate::error::Error;
use crate::transfer::local::{Faults, ENGINE_DIR};

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

/// The emulator's own flags: where it serves, and its faults.
pub const EMULATOR_FLAGS: &[FlagGroup] = &[
    FlagGroup {
        heading: "Options",
        flags: &[
            Flag::value("root", "DIR", "Directory holding one directory per bucket").required(),
            Flag::value(
                "port",
                "P",
                "Port to listen on (0: any free port) [default: 0]",
            ),
            Flag::switch(
                "lenient",
                "Do not check requests against Google's discovery documents (strict mode is\n\
                 the default: a request the real API would refuse is answered 400 and counted\n\
                 in /_emulator/stats)",
            ),
            Flag::value(
                "bigquery-upstream",
                "HOST:PORT",
                "Forward /bigquery/v2/ requests to this BigQuery emulator (bqemulator), after\n\
                 the strict check: point BIGQUERY_EMULATOR_HOST at this emulator instead",
            ),
        ],
    },
    FlagGroup {
        heading: FAULTS,
        flags: &[
            Flag::value(
                "fail-objects",
                "PATTERN",
                "Objects matching this *-pattern fail to copy",
            ),
            Flag::value(
                "error-code",
                "CODE",
                "google.rpc code of those failures [default: PERMISSION_DENIED]",
            ),
            Flag::value(
                "bytes-per-second",
                "N",
                "Copy rate per operation (0: unlimited) [default: 0]",
            ),
            Flag::switch("freeze-counters", "Operations make no progress (a stall)"),
            Flag::value(
                "max-in-progress",
                "N",
                "Operations in progress at once; more are QUEUED [default: 200]",
            ),
            Flag::switch(
                "skip-scheduled-starts",
                "New one-time jobs do not start on their own (run still works)",
            ),
            Flag::value(
                "api-error-rate",
                "F",
                "Share of API requests answered with an error, 0 to 1 [default: 0]",
            ),
            Flag::value(
                "api-error-codes",
                "LIST",
                "Comma-separated HTTP codes for those errors [default: 429,503]",
            ),
            Flag::switch(
                "sts-quotas",
                "Enforce STS's per-project quotas (create 600/min and 5,000/day, read 1,500/min,\n\
                 update and delete 600/min, pause/resume/cancel 900/min): 429 RESOURCE_EXHAUSTED",
            ),
            Flag::value(
                "quota",
                "NAME=N",
                "Enforce one quota (create_per_day=20, read_per_minute=100, ...); repeatable",
            )
            .repeated(),
        ],
    },
];

pub const TOOL: Tool = Tool {
    name: EMULATOR,
    about: ABOUT,
    after: AFTER,
    groups: &[],
    own: EMULATOR_FLAGS,
    stops_itself: true,
    run,
};

/// The settings the flags give; a value that is not usable is named.
fn settings(found: &ToolFlags) -> Result<Settings, String> {
    let text = |name: &str| last(found, name).map(str::to_string);
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
    api.sts_quotas = given(found, "sts-quotas");
    api.lenient = given(found, "lenient");
    api.bigquery_upstream = text("bigquery-upstream");
    for text in found.get("quota").into_iter().flatten() {
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
    let engine = if ENGINE_FAULTS.iter().any(|name| given(found, name)) {
        let mut faults = Faults {
            fail_objects_matching: text("fail-objects"),
            freeze_counters: given(found, "freeze-counters"),
            skip_scheduled_starts: given(found, "skip-scheduled-starts"),
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
        return Err(format!("--root {} is not a directory", root.display()));
    }
    Ok(Settings {
        root,
        port,
        api,
        engine,
    })
}

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let settings = settings(&invocation.flags).map_err(Error::Input)?;
        if let Some(faults) = &settings.engine {
            write_engine_faults(&settings.root, faults).map_err(|e| {
                Error::Failed(format!(
                    "cannot write {}/{ENGINE_DIR}/faults.json: {e}",
                    settings.root.display()
                ))
            })?;
        }
        let stop = super::stop_signal()?;
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
        .map_err(|e| Error::Failed(e.to_string()))?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Parsed {
        Print(String),
        Run(Box<Settings>),
    }

    enum ParseError {
        Usage(String),
        Invalid,
    }

    /// The command line through the registry's parser, then the flags into
    /// settings.
    fn run(args: &[&str]) -> Result<Parsed, ParseError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match super::super::parse(&TOOL, &args) {
            Ok(super::super::Parsed::Print(text)) => Ok(Parsed::Print(text)),
            Ok(super::super::Parsed::Run(_, found)) => settings(&found)
                .map(|s| Parsed::Run(Box::new(s)))
                .map_err(|_| ParseError::Invalid),
            Err(e) => Err(ParseError::Usage(e.to_string())),
        }
    }

    #[test]
    fn the_help_shows_the_engine_defaults() {
        let engine = Faults::default();
        let help = EMULATOR_FLAGS
            .iter()
            .flat_map(|g| g.flags)
            .map(|f| f.help)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(help.contains(&format!("[default: {}]", engine.error_code)));
        assert!(help.contains(&format!("[default: {}]", engine.max_in_progress)));
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
            assert!(matches!(run(bad), Err(ParseError::Invalid)), "{bad:?}");
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
