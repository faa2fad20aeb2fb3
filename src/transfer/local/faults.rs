//! Fault settings of the local engine, read from `ROOT/.sts-engine/faults.json`
//! so a test (or a person) can change them while operations run.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Objects whose name matches this `*` pattern fail to copy.
    pub fail_objects_matching: Option<String>,
    /// The google.rpc code those failures carry.
    pub error_code: String,
    /// Copy at most this many bytes per second per operation (0: no limit).
    pub bytes_per_second: u64,
    /// Operations stop making progress (a stall) while this is set.
    pub freeze_counters: bool,
    /// Operations in progress at once; more wait QUEUED (STS allows 200).
    pub max_in_progress: usize,
    /// Jobs created while this is set do not start on their own (as when
    /// STS misses a one-time job's date); `transferJobs.run` still runs them.
    pub skip_scheduled_starts: bool,
    /// Every `transferJobs.create` is refused with this google.rpc code
    /// (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, ...), as STS refuses a
    /// request it will never accept.
    pub refuse_creates: Option<String>,
    /// What `transferJobs.run` answers while the job has an operation that
    /// has not ended (undocumented): a google.rpc code (FAILED_PRECONDITION
    /// when unset), or `ALLOW`: another operation starts.
    pub run_while_active: Option<String>,
    /// The google.rpc code of a patch or run of a job someone deleted or
    /// disabled (undocumented): NOT_FOUND for a deleted job and
    /// FAILED_PRECONDITION for a disabled one when unset.
    pub gone_job_code: Option<String>,
    /// Every `transferJobs.run` is refused with this google.rpc code, with
    /// nothing under way (a refusal no look at the job explains).
    pub refuse_runs: Option<String>,
    /// The service's clock this many seconds ahead of this host's (negative:
    /// behind): every time the engine stamps (operation start and end, job
    /// creation and deletion) is on that clock.
    pub clock_offset_seconds: i64,
    /// Transfer log entries (failed objects, when the job's loggingConfig
    /// asks for them) become readable this many seconds after they are
    /// written: Cloud Logging's ingestion delay, past the operation's end.
    pub log_delay_seconds: f64,
    /// While set, no transfer log entry is readable (however old): late
    /// entries, on the test's command.
    pub withhold_logs: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_objects_matching: None,
            error_code: "PERMISSION_DENIED".into(),
            bytes_per_second: 0,
            freeze_counters: false,
            max_in_progress: 200,
            skip_scheduled_starts: false,
            refuse_creates: None,
            run_while_active: None,
            gone_job_code: None,
            refuse_runs: None,
            clock_offset_seconds: 0,
            log_delay_seconds: 0.0,
            withhold_logs: false,
        }
    }
}

/// The error STS answers with google.rpc code `code`.
pub fn code_error(code: &str, message: String) -> crate::transfer::TransferError {
    use crate::transfer::TransferError;
    match code {
        "INVALID_ARGUMENT" => TransferError::InvalidArgument(message),
        "PERMISSION_DENIED" => TransferError::PermissionDenied(message),
        "FAILED_PRECONDITION" => TransferError::FailedPrecondition(message),
        "NOT_FOUND" => TransferError::NotFound(message),
        "ALREADY_EXISTS" => TransferError::AlreadyExists(message),
        _ => TransferError::Api {
            http: crate::transfer::wire::http_of(code),
            status: code.to_string(),
            message,
        },
    }
}

/// Now, on the service's clock (`clock_offset_seconds`).
pub fn service_now(root: &Path) -> chrono::DateTime<chrono::Utc> {
    let offset = Faults::load(&root.join(super::ENGINE_DIR)).clock_offset_seconds;
    chrono::Utc::now() + chrono::Duration::seconds(offset.clamp(-86_400 * 365, 86_400 * 365))
}

impl Faults {
    pub const FILE: &'static str = "faults.json";

    /// A missing file means no faults; a malformed one is reported, and the
    /// engine goes on with none rather than guess.
    pub fn load(engine_dir: &Path) -> Faults {
        let path = engine_dir.join(Self::FILE);
        match std::fs::read_to_string(&path) {
            Ok(body) => serde_json::from_str(&body).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Faults::default()
            }),
            Err(_) => Faults::default(),
        }
    }
}
