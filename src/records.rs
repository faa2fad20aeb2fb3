//! Plain rows of the tables beside the job table: the plan (`sts-plan
//! --load`) and the verification results (`sts-verify`). Both stores read
//! and write them; nothing here depends on anything above the model.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One planned prefix: what the listing found under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPrefix {
    pub prefix: String,
    pub objects: u64,
    pub bytes: u64,
}

/// What one node of the planner's name trie covers: every name starting
/// with `lo` (see `plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub lo: String,
    /// The first and last name of the group (name order).
    pub first: String,
    pub last: String,
    pub objects: u64,
    pub bytes: u64,
}

/// The verdict on one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyResult {
    Verified,
    Mismatch,
}

impl VerifyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Verified => "verified",
            VerifyResult::Mismatch => "mismatch",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "verified" => Some(VerifyResult::Verified),
            "mismatch" => Some(VerifyResult::Mismatch),
            _ => None,
        }
    }
}

/// Most offending object names kept per prefix.
pub const MAX_OFFENDING: usize = 100;

/// One row of the verification table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub prefix: String,
    pub result: VerifyResult,
    /// Source objects compared.
    pub objects_compared: u64,
    /// Source objects absent from the destination.
    pub missing: u64,
    /// Objects present on both sides whose size or checksums differ.
    pub different: u64,
    pub checked_at: DateTime<Utc>,
    /// Up to [`MAX_OFFENDING`] names of missing or different objects.
    pub offending_objects: Vec<String>,
}

/// A prefix's pending manifest (`{job_table}_manifests`): its next start
/// runs with `transferSpec.transferManifest` at `location`, copying only the
/// objects listed there (`sts-requeue --failed-objects`, `sts-verify
/// --requeue --objects`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingManifest {
    pub prefix: String,
    /// `gs://bucket/path/file.csv`.
    pub location: String,
    /// Objects the manifest lists.
    pub objects: u64,
    pub queued_at: DateTime<Utc>,
}

/// One row of the failed-objects table (`{job_table}_failed_objects`): an
/// object whose action failed in an operation, as STS's transfer log says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedObject {
    pub prefix: String,
    pub object: String,
    /// `COPY` or `DELETE`.
    pub action: String,
    /// The google.rpc code (`PERMISSION_DENIED`, ...).
    pub error_code: String,
    pub message: String,
    pub operation: String,
    /// When the action failed.
    pub time: DateTime<Utc>,
}

/// One pass of the migration (`{job_table}_passes`, `sts-cutover`): the
/// migration itself is pass 1, each delta or mirror pass the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pass {
    pub pass: u32,
    /// "migration", "delta" or "mirror".
    pub kind: String,
    pub started_at: DateTime<Utc>,
    /// When its prefixes were queued (a pass recorded but not queued is
    /// queued again when resumed).
    pub queued_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Over the latest operation of each prefix of the pass, at its end.
    pub objects_found: i64,
    pub bytes_found: i64,
    pub objects_copied: i64,
    pub bytes_copied: i64,
    pub objects_deleted: i64,
}

/// A prefix's pass (`{job_table}_pass_prefixes`): the pass its latest
/// operation belongs to, and the spec that pass gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassPrefix {
    pub prefix: String,
    pub pass: u32,
    pub modified_since: Option<DateTime<Utc>>,
    pub mirror: bool,
}
