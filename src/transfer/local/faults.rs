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
        }
    }
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
