//! `sts-emulator --root DIR [--port P] [faults...]`.

use std::path::PathBuf;

use crate::runtime::{init_logging, runtime};
use crate::transfer::local::{Faults, ENGINE_DIR};

use super::{serve, write_engine_faults, ApiFaults};

const HELP: &str = "usage: sts-emulator --root DIR [--port P] [faults]

An STS v1 REST API on 127.0.0.1 over the local transfer engine: bucket B is
the directory DIR/B. Point clients at it with STORAGE_TRANSFER_EMULATOR_HOST.
It also serves the Cloud Storage JSON API for those buckets (bucket get,
object list and get): point Cloud Storage clients at it with
STORAGE_EMULATOR_HOST.

options:
  --root DIR               directory holding one directory per bucket (required)
  --port P                 port to listen on (default 0: any free port)
  --fail-objects PATTERN   objects matching this *-pattern fail to copy
  --error-code CODE        google.rpc code of those failures (default PERMISSION_DENIED)
  --bytes-per-second N     copy rate per operation (default 0: unlimited)
  --freeze-counters        operations make no progress (a stall)
  --max-in-progress N      operations in progress at once; more are QUEUED (default 200)
  --skip-scheduled-starts  new one-time jobs do not start on their own (run still works)
  --api-error-rate F       share of API requests answered with an error (0 to 1)
  --api-error-codes LIST   comma-separated HTTP codes for those errors (default 429,503)
  --sts-quotas             enforce STS's per-project quotas (create 600/min and
                           5,000/day, read 1,500/min, update and delete 600/min,
                           pause/resume/cancel 900/min): 429 RESOURCE_EXHAUSTED
  --quota NAME=N           enforce one quota (create_per_day=20, read_per_minute=100, ...)

Faults can be changed while it runs: POST a JSON object with the same names
(underscores) to /_emulator/faults; GET it to read them.
";

struct Settings {
    root: PathBuf,
    port: u16,
    api: ApiFaults,
    engine: Option<Faults>,
}

fn parse(args: &[String]) -> Result<Option<Settings>, String> {
    let mut root = None;
    let mut port = 0u16;
    let mut api = ApiFaults::default();
    let mut engine: Option<Faults> = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (flag.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        let number = |name: &str, text: String| {
            text.parse::<f64>()
                .map_err(|_| format!("{name}: '{text}' is not a number"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--root" => root = Some(PathBuf::from(value(flag)?)),
            "--port" => {
                port = value(flag)?
                    .parse()
                    .map_err(|_| "--port needs a port number".to_string())?
            }
            "--fail-objects" => {
                engine
                    .get_or_insert_with(Faults::default)
                    .fail_objects_matching = Some(value(flag)?)
            }
            "--error-code" => engine.get_or_insert_with(Faults::default).error_code = value(flag)?,
            "--bytes-per-second" => {
                engine.get_or_insert_with(Faults::default).bytes_per_second =
                    number(flag, value(flag)?)? as u64
            }
            "--freeze-counters" => {
                engine.get_or_insert_with(Faults::default).freeze_counters = true
            }
            "--skip-scheduled-starts" => {
                engine
                    .get_or_insert_with(Faults::default)
                    .skip_scheduled_starts = true
            }
            "--max-in-progress" => {
                engine.get_or_insert_with(Faults::default).max_in_progress =
                    number(flag, value(flag)?)? as usize
            }
            "--api-error-rate" => api.api_error_rate = number(flag, value(flag)?)?,
            "--sts-quotas" => api.sts_quotas = true,
            "--quota" => {
                let text = value(flag)?;
                let (name, limit) = text
                    .split_once('=')
                    .ok_or_else(|| format!("--quota: '{text}' is not NAME=N"))?;
                let limit = limit
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("--quota: '{limit}' is not a whole number"))?;
                api.quotas.insert(name.trim().to_string(), limit);
            }
            "--api-error-codes" => {
                api.api_error_codes = value(flag)?
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<u16>()
                            .map_err(|_| format!("--api-error-codes: '{c}' is not an HTTP code"))
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    api.validate()?;
    let root = root.ok_or("--root is required")?;
    if !root.is_dir() {
        return Err(format!("--root {} is not a directory", root.display()));
    }
    Ok(Some(Settings {
        root,
        port,
        api,
        engine,
    }))
}

pub fn main(args: &[String]) -> i32 {
    let settings = match parse(args) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("sts-emulator: error: {e}");
            return 2;
        }
    };
    init_logging();
    if let Some(faults) = &settings.engine {
        if let Err(e) = write_engine_faults(&settings.root, faults) {
            eprintln!(
                "sts-emulator: error: cannot write {}/{ENGINE_DIR}/faults.json: {e}",
                settings.root.display()
            );
            return 1;
        }
    }
    let outcome = runtime().block_on(async {
        let stop = match crate::cli::stop_signal() {
            Ok(stop) => stop,
            Err(e) => return Err(e.to_string()),
        };
        serve(
            &settings.root,
            settings.port,
            settings.api,
            |address| {
                use std::io::Write;
                println!("sts-emulator listening on http://{address}");
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
            eprintln!("sts-emulator: error: {e}");
            1
        }
    }
}
