//! Faults the emulator injects: API errors answered before any work
//! (in memory), and the engine's copy faults (`faults.json`, shared with the
//! engine's executor threads).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::transfer::local::{Faults, ENGINE_DIR};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiFaults {
    /// Share of API requests (0.0 to 1.0) answered with an error.
    pub api_error_rate: f64,
    /// HTTP codes to answer with, picked in turn (429 and 503 by default).
    pub api_error_codes: Vec<u16>,
    /// STS's per-project quotas to enforce (429 RESOURCE_EXHAUSTED past
    /// them), by name: `create_per_day`, `create_per_minute`,
    /// `read_per_minute`, `update_per_minute`, `delete_per_minute`,
    /// `control_per_minute` (pause, resume, cancel), and Cloud Logging's
    /// `logging_read_per_minute` (`entries.list`). Empty: none enforced;
    /// `sts_quotas: true` sets STS's published values.
    pub quotas: std::collections::BTreeMap<String, u64>,
    pub sts_quotas: bool,
    /// Strict mode off: requests are no longer checked against Google's
    /// discovery documents (`strict.rs`). Strict is the default.
    pub lenient: bool,
    /// `host:port` of a BigQuery emulator (bqemulator): `/bigquery/v2/`
    /// requests are checked strictly, then forwarded there.
    pub bigquery_upstream: Option<String>,
    /// Where STS's documents are silent, the other plausible answers:
    /// jobs made without a schedule come back with `"schedule": {}`;
    pub empty_schedule: bool,
    /// the next N creates make their job but the reply is lost (503), so
    /// a retried create meets 409 ALREADY_EXISTS;
    pub lose_create_replies: u32,
    /// `transferJobs.list` ignores `sourceBucket` and `sinkBucket`.
    pub ignore_bucket_filter: bool,
    /// Every list (`transferJobs`, `transferOperations`, Cloud Storage
    /// `objects`) answers empty pages whose tokens cycle: none -> A, A -> B,
    /// B -> A (a broken server; a lister must stop with an error).
    pub cycle_page_tokens: bool,
    /// What `sts-doctor` looks at, each made to fail on its own: services
    /// answered DISABLED by Service Usage;
    pub disabled_apis: Vec<String>,
    /// googleServiceAccounts.get refused (403);
    pub no_service_agent: bool,
    /// the roles the STS service agent holds on a bucket (bucket -> roles;
    /// a bucket not named grants it roles/storage.admin);
    pub bucket_roles: std::collections::BTreeMap<String, Vec<String>>,
    /// permissions the caller lacks (testIamPermissions on buckets and on
    /// the project).
    pub caller_denied: Vec<String>,
}

/// Cloud Logging's `entries.list` quota per minute (not among STS's, so
/// `sts_quotas` leaves it off).
pub const LOGGING_READ_QUOTA: &str = "logging_read_per_minute";

/// STS's published quotas per project (STS_API.md "Service limits").
pub const STS_QUOTAS: [(&str, u64); 6] = [
    ("create_per_day", 5000),
    ("create_per_minute", 600),
    ("read_per_minute", 1500),
    ("update_per_minute", 600),
    ("delete_per_minute", 600),
    ("control_per_minute", 900),
];

impl ApiFaults {
    /// The limit in force for `name`: a set one, else STS's when asked.
    pub fn quota(&self, name: &str) -> Option<u64> {
        self.quotas.get(name).copied().or_else(|| {
            self.sts_quotas
                .then(|| STS_QUOTAS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
                .flatten()
        })
    }
}

impl Default for ApiFaults {
    fn default() -> Self {
        ApiFaults {
            api_error_rate: 0.0,
            api_error_codes: vec![429, 503],
            quotas: Default::default(),
            sts_quotas: false,
            lenient: false,
            bigquery_upstream: None,
            empty_schedule: false,
            lose_create_replies: 0,
            ignore_bucket_filter: false,
            cycle_page_tokens: false,
            disabled_apis: Vec::new(),
            no_service_agent: false,
            bucket_roles: Default::default(),
            caller_denied: Vec::new(),
        }
    }
}

impl ApiFaults {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.api_error_rate) {
            return Err(format!(
                "api_error_rate must be between 0 and 1, got {}",
                self.api_error_rate
            ));
        }
        if self.api_error_codes.is_empty()
            || self
                .api_error_codes
                .iter()
                .any(|c| !(400..=599).contains(c))
        {
            return Err("api_error_codes must list HTTP error codes (400-599)".into());
        }
        let known = || {
            STS_QUOTAS
                .iter()
                .map(|(n, _)| *n)
                .chain([LOGGING_READ_QUOTA])
        };
        if let Some(name) = self.quotas.keys().find(|k| !known().any(|n| n == *k)) {
            return Err(format!(
                "unknown quota '{name}' (known: {})",
                known().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }
}

/// Applies a control request `{...api faults, ...engine faults}`: API faults
/// are returned, engine faults merged into `faults.json`. All checked first.
pub fn apply_control(
    root: &Path,
    current: &ApiFaults,
    request: &Value,
) -> Result<ApiFaults, String> {
    let Value::Object(fields) = request else {
        return Err("faults must be a JSON object".into());
    };
    let mut api = serde_json::to_value(current).map_err(|e| e.to_string())?;
    // The API's own names are the fields of ApiFaults; the rest are the engine's.
    let (api_fields, engine_fields): (Map<String, Value>, Map<String, Value>) = fields
        .clone()
        .into_iter()
        .partition(|(k, _)| api.get(k).is_some());
    for (k, v) in api_fields {
        api[k] = v;
    }
    let api: ApiFaults = serde_json::from_value(api).map_err(|e| e.to_string())?;
    api.validate()?;
    let dir = root.join(ENGINE_DIR);
    let mut engine = serde_json::to_value(Faults::load(&dir)).map_err(|e| e.to_string())?;
    for (k, v) in engine_fields {
        engine[k] = v;
    }
    let engine: Faults = serde_json::from_value(engine).map_err(|e| e.to_string())?;
    write_engine_faults(root, &engine)?;
    Ok(api)
}

pub fn write_engine_faults(root: &Path, faults: &Faults) -> Result<(), String> {
    let dir = root.join(ENGINE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let body = serde_json::to_string_pretty(faults).map_err(|e| e.to_string())?;
    // Write then rename: executor threads never read half a file.
    let temp = dir.join("faults.json.tmp");
    std::fs::write(&temp, body).map_err(|e| e.to_string())?;
    std::fs::rename(&temp, dir.join(Faults::FILE)).map_err(|e| e.to_string())
}
