//! Plain data shared by every layer: table statuses, STS operations and jobs
//! (with STS's JSON field names), and the rows of the two state tables.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration an option may give (ten years): every duration
/// becomes a std or chrono duration somewhere, kept far from their limits.
pub const MAX_SECONDS: f64 = 315_360_000.0;

/// A prefix's status in the job table (the public contract of SPEC 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Waiting,
    Running,
    Paused,
    Done,
    Error,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Waiting,
        Status::Running,
        Status::Paused,
        Status::Done,
        Status::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Done => "done",
            Status::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `TransferOperation.status` as STS sends it (name or number). Values this
/// build does not know are kept, so a new STS status never stops the manager.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OperationStatus {
    Unspecified,
    InProgress,
    Paused,
    Success,
    Failed,
    Aborted,
    Queued,
    Suspending,
    Unknown(String),
}

impl OperationStatus {
    const NAMED: [(OperationStatus, &'static str, i64); 8] = [
        (OperationStatus::Unspecified, "STATUS_UNSPECIFIED", 0),
        (OperationStatus::InProgress, "IN_PROGRESS", 1),
        (OperationStatus::Paused, "PAUSED", 2),
        (OperationStatus::Success, "SUCCESS", 3),
        (OperationStatus::Failed, "FAILED", 4),
        (OperationStatus::Aborted, "ABORTED", 5),
        (OperationStatus::Queued, "QUEUED", 6),
        (OperationStatus::Suspending, "SUSPENDING", 7),
    ];

    pub fn from_name(name: &str) -> OperationStatus {
        let upper = name.to_ascii_uppercase();
        Self::NAMED
            .iter()
            .find(|(_, n, _)| *n == upper)
            .map(|(s, _, _)| s.clone())
            .unwrap_or(OperationStatus::Unknown(name.to_string()))
    }

    pub fn from_number(number: i64) -> OperationStatus {
        Self::NAMED
            .iter()
            .find(|(_, _, n)| *n == number)
            .map(|(s, _, _)| s.clone())
            .unwrap_or(OperationStatus::Unknown(number.to_string()))
    }

    /// Whether `transferOperations.list`'s filter takes this status: its
    /// description lists IN_PROGRESS, PAUSED, SUCCESS, FAILED and ABORTED
    /// only (QUEUED and SUSPENDING are filtered on our side).
    pub fn filterable(&self) -> bool {
        matches!(
            self,
            OperationStatus::InProgress
                | OperationStatus::Paused
                | OperationStatus::Success
                | OperationStatus::Failed
                | OperationStatus::Aborted
        )
    }

    pub fn name(&self) -> &str {
        match self {
            OperationStatus::Unknown(raw) => raw,
            known => Self::NAMED
                .iter()
                .find(|(s, _, _)| s == known)
                .map(|(_, n, _)| *n)
                .unwrap_or("STATUS_UNSPECIFIED"),
        }
    }

    /// SPEC 3: the table status an operation status stands for; `None` means
    /// "unknown: keep the prefix's current status".
    pub fn table_status(&self) -> Option<Status> {
        match self {
            OperationStatus::InProgress | OperationStatus::Queued => Some(Status::Running),
            OperationStatus::Paused | OperationStatus::Suspending => Some(Status::Paused),
            OperationStatus::Success => Some(Status::Done),
            OperationStatus::Failed => Some(Status::Error),
            OperationStatus::Aborted => Some(Status::Waiting),
            OperationStatus::Unspecified | OperationStatus::Unknown(_) => None,
        }
    }

    /// Whether the operation can still change (it holds a concurrency slot).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            OperationStatus::InProgress
                | OperationStatus::Queued
                | OperationStatus::Paused
                | OperationStatus::Suspending
        )
    }
}

impl Serialize for OperationStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for OperationStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(name) => Ok(OperationStatus::from_name(&name)),
            serde_json::Value::Number(n) => Ok(n
                .as_i64()
                .map(OperationStatus::from_number)
                .unwrap_or_else(|| OperationStatus::Unknown(n.to_string()))),
            other => Ok(OperationStatus::Unknown(other.to_string())),
        }
    }
}

/// `TransferJob.status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JobStatus {
    #[default]
    Unspecified,
    Enabled,
    Disabled,
    Deleted,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Unspecified => "STATUS_UNSPECIFIED",
            JobStatus::Enabled => "ENABLED",
            JobStatus::Disabled => "DISABLED",
            JobStatus::Deleted => "DELETED",
        }
    }

    pub fn parse(text: &str) -> JobStatus {
        match text.to_ascii_uppercase().as_str() {
            "ENABLED" | "1" => JobStatus::Enabled,
            "DISABLED" | "2" => JobStatus::Disabled,
            "DELETED" | "3" => JobStatus::Deleted,
            _ => JobStatus::Unspecified,
        }
    }
}

impl Serialize for JobStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => JobStatus::parse(&s),
            serde_json::Value::Number(n) => JobStatus::parse(&n.to_string()),
            _ => JobStatus::Unspecified,
        })
    }
}

/// int64 fields travel as JSON strings in STS; accept numbers too.
pub(crate) mod int64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| serde::de::Error::custom("int64 out of range")),
            serde_json::Value::Null => Ok(0),
            other => Err(serde::de::Error::custom(format!(
                "expected an int64, found {other}"
            ))),
        }
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// The `TransferCounters` the manager and its progress views read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Counters {
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_found_from_source: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_found_from_source: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_copied_to_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_copied_to_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_from_source_skipped_by_sync: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_from_source_skipped_by_sync: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_from_source_failed: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_from_source_failed: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_deleted_from_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_deleted_from_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_deleted_from_source: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_deleted_from_source: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_found_only_from_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_found_only_from_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub objects_failed_to_delete_from_sink: i64,
    #[serde(with = "int64_string", skip_serializing_if = "is_zero")]
    pub bytes_failed_to_delete_from_sink: i64,
}

/// Totals over several operations (progress views).
impl std::ops::AddAssign<&Counters> for Counters {
    /// Saturating: two valid int64 byte counts of big prefixes must never
    /// add up to a negative total (or a panic).
    fn add_assign(&mut self, c: &Counters) {
        let add = |a: &mut i64, b: i64| *a = a.saturating_add(b);
        add(
            &mut self.objects_found_from_source,
            c.objects_found_from_source,
        );
        add(&mut self.bytes_found_from_source, c.bytes_found_from_source);
        add(&mut self.objects_copied_to_sink, c.objects_copied_to_sink);
        add(&mut self.bytes_copied_to_sink, c.bytes_copied_to_sink);
        add(
            &mut self.objects_from_source_skipped_by_sync,
            c.objects_from_source_skipped_by_sync,
        );
        add(
            &mut self.bytes_from_source_skipped_by_sync,
            c.bytes_from_source_skipped_by_sync,
        );
        add(
            &mut self.objects_from_source_failed,
            c.objects_from_source_failed,
        );
        add(
            &mut self.bytes_from_source_failed,
            c.bytes_from_source_failed,
        );
        add(
            &mut self.objects_deleted_from_sink,
            c.objects_deleted_from_sink,
        );
        add(&mut self.bytes_deleted_from_sink, c.bytes_deleted_from_sink);
        add(
            &mut self.objects_deleted_from_source,
            c.objects_deleted_from_source,
        );
        add(
            &mut self.bytes_deleted_from_source,
            c.bytes_deleted_from_source,
        );
        add(
            &mut self.objects_found_only_from_sink,
            c.objects_found_only_from_sink,
        );
        add(
            &mut self.bytes_found_only_from_sink,
            c.bytes_found_only_from_sink,
        );
        add(
            &mut self.objects_failed_to_delete_from_sink,
            c.objects_failed_to_delete_from_sink,
        );
        add(
            &mut self.bytes_failed_to_delete_from_sink,
            c.bytes_failed_to_delete_from_sink,
        );
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorLogEntry {
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_details: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorSummary {
    pub error_code: String,
    #[serde(with = "int64_string")]
    pub error_count: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_log_entries: Vec<ErrorLogEntry>,
}

/// STS keeps at most this many log entries per error code.
pub const MAX_ERROR_LOG_ENTRIES: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GcsData {
    pub bucket_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectConditions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_prefixes: Vec<String>,
    /// "only objects with a last modification time on or after this
    /// timestamp ... are transferred" (discovery document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_since: Option<DateTime<Utc>>,
    /// "only objects with a last modification time before this timestamp".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_before: Option<DateTime<Utc>>,
}

impl ObjectConditions {
    /// Whether a time-based condition is set: STS refuses those together
    /// with `deleteObjectsUniqueInSink` (INVALID_ARGUMENT).
    pub fn has_time_condition(&self) -> bool {
        self.last_modified_since.is_some() || self.last_modified_before.is_some()
    }

    /// Whether an object last modified at `modified` (`None`: no such
    /// time) passes the time conditions.
    pub fn admits(&self, modified: Option<DateTime<Utc>>) -> bool {
        let Some(modified) = modified else {
            return true;
        };
        self.last_modified_since
            .is_none_or(|since| modified >= since)
            && self
                .last_modified_before
                .is_none_or(|before| modified < before)
    }
}

/// `TransferOptions.overwriteWhen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OverwriteWhen {
    #[serde(rename = "OVERWRITE_WHEN_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "DIFFERENT")]
    Different,
    #[serde(rename = "NEVER")]
    Never,
    #[serde(rename = "ALWAYS")]
    Always,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TransferOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overwrite_objects_already_existing_in_sink: bool,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "overwrite_when"
    )]
    pub overwrite_when: Option<OverwriteWhen>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete_objects_unique_in_sink: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete_objects_from_source_after_transfer: bool,
    /// What object metadata is kept (`--preserve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<crate::metadata::MetadataOptions>,
}

/// `overwriteWhen` as a name or (GAPIC's int encoding) a number.
fn overwrite_when<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OverwriteWhen>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(1) => Some(OverwriteWhen::Different),
            Some(2) => Some(OverwriteWhen::Never),
            Some(3) => Some(OverwriteWhen::Always),
            _ => Some(OverwriteWhen::Unspecified),
        },
        Some(serde_json::Value::String(s)) => Some(match s.to_ascii_uppercase().as_str() {
            "DIFFERENT" => OverwriteWhen::Different,
            "NEVER" => OverwriteWhen::Never,
            "ALWAYS" => OverwriteWhen::Always,
            _ => OverwriteWhen::Unspecified,
        }),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "overwriteWhen: expected a name or a number, found {other}"
            )))
        }
    })
}

impl TransferOptions {
    /// When an object already in the sink is overwritten: `overwriteWhen`
    /// if set; "If not set, overwrite behavior is determined by
    /// overwrite_objects_already_existing_in_sink" (discovery document),
    /// whose default is "only objects that are different from the source
    /// are overwritten".
    pub fn effective_overwrite(&self) -> OverwriteWhen {
        match self.overwrite_when {
            Some(when) if when != OverwriteWhen::Unspecified => when,
            _ if self.overwrite_objects_already_existing_in_sink => OverwriteWhen::Always,
            _ => OverwriteWhen::Different,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TransferSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs_data_source: Option<GcsData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs_data_sink: Option<GcsData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_conditions: Option<ObjectConditions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_options: Option<TransferOptions>,
    /// Only the objects this CSV in Cloud Storage lists ("ObjectConditions
    /// still apply": discovery document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_manifest: Option<TransferManifest>,
}

/// `TransferManifest`: where the manifest is, `gs://bucket/path/file.csv`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TransferManifest {
    pub location: String,
}

impl TransferSpec {
    /// The spec of a transfer of one prefix between two buckets (no paths):
    /// the one builder, for the jobs this manager makes and for recognising
    /// their operations when listed.
    pub fn for_prefix(
        source: &str,
        destination: &str,
        prefix: &str,
        options: Option<TransferOptions>,
    ) -> TransferSpec {
        let bucket = |name: &str| {
            Some(GcsData {
                bucket_name: name.to_string(),
                path: String::new(),
            })
        };
        TransferSpec {
            gcs_data_source: bucket(source),
            gcs_data_sink: bucket(destination),
            object_conditions: Some(ObjectConditions {
                include_prefixes: vec![prefix.to_string()],
                ..ObjectConditions::default()
            }),
            transfer_options: options,
            transfer_manifest: None,
        }
    }

    /// The same spec, transferring only the objects the manifest at
    /// `location` lists (`None` leaves it).
    pub fn with_manifest(mut self, location: Option<&str>) -> TransferSpec {
        if let Some(location) = location {
            self.transfer_manifest = Some(TransferManifest {
                location: location.to_string(),
            });
        }
        self
    }

    /// The manifest's location, when the spec has one.
    pub fn manifest(&self) -> Option<&str> {
        self.transfer_manifest.as_ref().map(|m| m.location.as_str())
    }

    /// The same spec, transferring only objects last modified on or after
    /// `since` (`objectConditions.lastModifiedSince`; `None` leaves it).
    pub fn modified_since(mut self, since: Option<DateTime<Utc>>) -> TransferSpec {
        if since.is_some() {
            self.object_conditions
                .get_or_insert_with(ObjectConditions::default)
                .last_modified_since = since;
        }
        self
    }

    pub fn source_bucket(&self) -> Option<&str> {
        self.gcs_data_source
            .as_ref()
            .map(|g| g.bucket_name.as_str())
    }

    pub fn sink_bucket(&self) -> Option<&str> {
        self.gcs_data_sink.as_ref().map(|g| g.bucket_name.as_str())
    }

    pub fn include_prefixes(&self) -> &[String] {
        self.object_conditions
            .as_ref()
            .map(|c| c.include_prefixes.as_slice())
            .unwrap_or(&[])
    }

    pub fn overwrite(&self) -> bool {
        self.transfer_options
            .as_ref()
            .is_some_and(|o| o.overwrite_objects_already_existing_in_sink)
    }

    /// When objects already in the sink are overwritten (see
    /// [`TransferOptions::effective_overwrite`]).
    pub fn overwrite_when(&self) -> OverwriteWhen {
        self.transfer_options
            .as_ref()
            .map(TransferOptions::effective_overwrite)
            .unwrap_or(OverwriteWhen::Different)
    }

    /// The object conditions, or none.
    pub fn conditions(&self) -> ObjectConditions {
        self.object_conditions.clone().unwrap_or_default()
    }

    /// What STS refuses in a spec's options with INVALID_ARGUMENT: the two
    /// delete options together ("mutually exclusive"), and
    /// `deleteObjectsUniqueInSink` with a time-based object condition
    /// ("If the option delete_objects_unique_in_sink is `true` and
    /// time-based object conditions such as 'last modification time' are
    /// specified, the request fails with an INVALID_ARGUMENT error":
    /// TransferSpec.transferOptions, discovery document).
    pub fn options_problem(&self) -> Option<String> {
        let options = self.transfer_options.as_ref()?;
        if options.delete_objects_unique_in_sink
            && options.delete_objects_from_source_after_transfer
        {
            return Some(
                "transferOptions: deleteObjectsUniqueInSink and                  deleteObjectsFromSourceAfterTransfer are mutually exclusive"
                    .into(),
            );
        }
        if options.delete_objects_unique_in_sink
            && self
                .object_conditions
                .as_ref()
                .is_some_and(ObjectConditions::has_time_condition)
        {
            return Some(
                "transferOptions: deleteObjectsUniqueInSink cannot be combined with time-based                  object conditions such as 'last modification time'"
                    .into(),
            );
        }
        None
    }
}

/// `LoggingConfig` (discovery document): which actions in which states STS
/// writes to Cloud Logging, one entry per object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoggingConfig {
    /// `FIND`, `DELETE`, `COPY` (numbers from the GAPIC client are read as
    /// these names).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "loggable::actions"
    )]
    pub log_actions: Vec<String>,
    /// `SUCCEEDED`, `FAILED`, `SKIPPED`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "loggable::states"
    )]
    pub log_action_states: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_onprem_gcs_transfer_logs: bool,
}

impl LoggingConfig {
    /// What the manager asks for: every failed copy, and every failed
    /// deletion when the transfer deletes objects.
    pub fn failed_objects(deletes: bool) -> LoggingConfig {
        let mut log_actions = vec!["COPY".to_string()];
        if deletes {
            log_actions.push("DELETE".into());
        }
        LoggingConfig {
            log_actions,
            log_action_states: vec!["FAILED".into()],
            enable_onprem_gcs_transfer_logs: false,
        }
    }

    /// Whether failed `action`s (COPY, DELETE) are logged.
    pub fn logs_failed(&self, action: &str) -> bool {
        self.log_actions.iter().any(|a| a == action)
            && self.log_action_states.iter().any(|s| s == "FAILED")
    }
}

/// Enum lists as names or as the GAPIC client's numbers.
mod loggable {
    use serde::{Deserialize, Deserializer};

    const ACTIONS: [&str; 4] = ["LOGGABLE_ACTION_UNSPECIFIED", "FIND", "DELETE", "COPY"];
    const STATES: [&str; 4] = [
        "LOGGABLE_ACTION_STATE_UNSPECIFIED",
        "SUCCEEDED",
        "FAILED",
        "SKIPPED",
    ];

    fn names<'de, D: Deserializer<'de>>(d: D, table: &[&str]) -> Result<Vec<String>, D::Error> {
        let values = Vec::<serde_json::Value>::deserialize(d)?;
        values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .and_then(|i| table.get(i as usize))
                    .map(|s| s.to_string())
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown enum number {n}"))),
                other => Err(serde::de::Error::custom(format!(
                    "an enum name or number, not {other}"
                ))),
            })
            .collect()
    }

    pub fn actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        names(d, &ACTIONS)
    }

    pub fn states<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        names(d, &STATES)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    pub fn today_utc() -> Date {
        use chrono::Datelike;
        let today = Utc::now().date_naive();
        Date {
            year: today.year(),
            month: today.month(),
            day: today.day(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Schedule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_start_date: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_end_date: Option<Date>,
}

impl Schedule {
    /// A job that runs once: its start and end dates are the same day.
    pub fn one_time(date: Date) -> Schedule {
        Schedule {
            schedule_start_date: Some(date),
            schedule_end_date: Some(date),
        }
    }

    pub fn is_one_time(&self) -> bool {
        self.schedule_start_date.is_some() && self.schedule_start_date == self.schedule_end_date
    }
}

/// `TransferJob`, restricted to the fields the manager writes and reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferJob {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub transfer_spec: TransferSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_config: Option<LoggingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_operation_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_time: Option<DateTime<Utc>>,
}

/// `TransferOperation`: the metadata of an STS long-running operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferOperation {
    pub name: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub transfer_spec: TransferSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    pub status: OperationStatus,
    #[serde(default)]
    pub counters: Counters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_breakdowns: Vec<ErrorSummary>,
    #[serde(default)]
    pub transfer_job_name: String,
    /// The job's logging configuration when the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_config: Option<LoggingConfig>,
}

/// One row of the job table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixJob {
    pub prefix: String,
    pub status: Status,
    pub job_name: Option<String>,
    pub last_updated: DateTime<Utc>,
}

/// One row of the job history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub prefix: String,
    pub status: Status,
    pub job_name: Option<String>,
    pub operation_results: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// Plain data the manager hands the store: the store depends on nothing above it.
/// A new status and/or job name for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    pub prefix: String,
    pub status: Status,
    pub job_name: Option<String>,
    pub last_updated: DateTime<Utc>,
}

/// Everything one step writes: applied by a store in one transaction with a
/// constant number of statements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub updates: Vec<JobUpdate>,
    pub history: Vec<HistoryRow>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.history.is_empty()
    }

    /// Adds the update of a prefix, replacing one already here for it: a
    /// change set holds one update per prefix (BigQuery refuses an UPDATE
    /// or MERGE whose source holds two rows for one key), the latest.
    pub fn push_update(&mut self, update: JobUpdate) {
        match self
            .updates
            .iter_mut()
            .rev()
            .find(|u| u.prefix == update.prefix)
        {
            Some(existing) => *existing = update,
            None => self.updates.push(update),
        }
    }

    /// A prefix's change with the history row that records it: the row
    /// takes `status` and follows `job_name` as of `since`; the history row,
    /// dated `at`, holds `results` (an operation's or a refusal's JSON).
    pub fn change(
        &mut self,
        prefix: &str,
        status: Status,
        job_name: Option<String>,
        results: Option<String>,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) {
        self.push_update(JobUpdate {
            prefix: prefix.to_string(),
            status,
            job_name: job_name.clone(),
            last_updated: since,
        });
        self.history.push(HistoryRow {
            prefix: prefix.to_string(),
            status,
            job_name,
            operation_results: results,
            timestamp: at,
        });
    }

    /// The prefix back to `waiting` with no job name, recorded in its
    /// history the same way: the mark that restarts its retry count, after
    /// which a sync takes no operation that began before.
    pub fn requeue(&mut self, prefix: &str, now: DateTime<Utc>) {
        self.change(prefix, Status::Waiting, None, None, now, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_big_prefixes_never_add_up_to_a_negative_total() {
        let big = Counters {
            bytes_found_from_source: i64::MAX - 5,
            bytes_copied_to_sink: i64::MAX / 2 + 1,
            ..Counters::default()
        };
        let mut total = big.clone();
        total += &big;
        assert_eq!(total.bytes_found_from_source, i64::MAX);
        assert_eq!(total.bytes_copied_to_sink, i64::MAX);
    }

    #[test]
    fn a_change_set_holds_one_update_per_prefix_the_latest() {
        let update = |prefix: &str, status| JobUpdate {
            prefix: prefix.into(),
            status,
            job_name: None,
            last_updated: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        };
        let mut changes = ChangeSet::default();
        changes.push_update(update("a/", Status::Waiting));
        changes.push_update(update("b/", Status::Running));
        changes.push_update(update("a/", Status::Running));
        assert_eq!(changes.updates.len(), 2);
        assert_eq!(changes.updates[0].status, Status::Running);
    }

    #[test]
    fn every_sts_status_maps_as_spec_section_3() {
        let expected = [
            ("IN_PROGRESS", Some(Status::Running)),
            ("QUEUED", Some(Status::Running)),
            ("PAUSED", Some(Status::Paused)),
            ("SUSPENDING", Some(Status::Paused)),
            ("SUCCESS", Some(Status::Done)),
            ("FAILED", Some(Status::Error)),
            ("ABORTED", Some(Status::Waiting)),
            ("STATUS_UNSPECIFIED", None),
            ("SOMETHING_NEW", None),
        ];
        for (name, status) in expected {
            assert_eq!(
                OperationStatus::from_name(name).table_status(),
                status,
                "{name}"
            );
        }
    }

    #[test]
    fn status_decodes_from_numbers_and_names() {
        for (number, name) in [(1, "IN_PROGRESS"), (6, "QUEUED"), (7, "SUSPENDING")] {
            let by_number: OperationStatus = serde_json::from_str(&number.to_string()).unwrap();
            let by_name: OperationStatus = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(by_number, by_name);
        }
        let unknown: OperationStatus = serde_json::from_str("42").unwrap();
        assert_eq!(unknown, OperationStatus::Unknown("42".into()));
        assert_eq!(unknown.table_status(), None);
    }

    #[test]
    fn operation_round_trips_with_sts_field_names() {
        let wire = r#"{"name":"transferOperations/x","projectId":"p","status":"SUCCESS",
            "transferSpec":{"gcsDataSource":{"bucketName":"a"},"gcsDataSink":{"bucketName":"b"},
            "objectConditions":{"includePrefixes":["logs/"]}},
            "counters":{"objectsCopiedToSink":"3","bytesCopiedToSink":12},
            "startTime":"2026-01-01T00:00:00Z","transferJobName":"transferJobs/j"}"#;
        let op: TransferOperation = serde_json::from_str(wire).unwrap();
        assert_eq!(op.counters.objects_copied_to_sink, 3);
        assert_eq!(op.counters.bytes_copied_to_sink, 12);
        assert_eq!(op.transfer_spec.include_prefixes(), ["logs/".to_string()]);
        let back = serde_json::to_value(&op).unwrap();
        assert_eq!(back["counters"]["bytesCopiedToSink"], "12");
        assert_eq!(back["status"], "SUCCESS");
    }

    #[test]
    fn time_conditions_admit_on_or_after_since_and_before_before() {
        use chrono::TimeZone;
        let t = |s| Utc.timestamp_opt(s, 0).unwrap();
        let c = ObjectConditions {
            last_modified_since: Some(t(100)),
            last_modified_before: Some(t(200)),
            ..ObjectConditions::default()
        };
        assert!(c.admits(Some(t(100))));
        assert!(!c.admits(Some(t(99))));
        assert!(!c.admits(Some(t(200))));
        assert!(c.admits(None), "no modification time: transferred");
    }

    #[test]
    fn overwrite_when_wins_over_the_older_flag_only_when_set() {
        let mut o = TransferOptions::default();
        assert_eq!(o.effective_overwrite(), OverwriteWhen::Different);
        o.overwrite_objects_already_existing_in_sink = true;
        assert_eq!(o.effective_overwrite(), OverwriteWhen::Always);
        o.overwrite_when = Some(OverwriteWhen::Never);
        assert_eq!(o.effective_overwrite(), OverwriteWhen::Never);
        for (wire, when) in [
            ("\"NEVER\"", OverwriteWhen::Never),
            ("1", OverwriteWhen::Different),
        ] {
            let o: TransferOptions =
                serde_json::from_str(&format!("{{\"overwriteWhen\":{wire}}}")).unwrap();
            assert_eq!(o.overwrite_when, Some(when));
        }
    }

    #[test]
    fn delete_unique_in_sink_is_refused_with_time_conditions() {
        let mirror = TransferOptions {
            delete_objects_unique_in_sink: true,
            ..TransferOptions::default()
        };
        let spec = TransferSpec::for_prefix("a", "b", "p/", Some(mirror));
        assert_eq!(spec.options_problem(), None);
        let timed = spec.modified_since(Some(Utc::now()));
        assert!(timed.options_problem().is_some());
    }

    #[test]
    fn table_status_text_round_trips() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("Running"), None);
    }
}
