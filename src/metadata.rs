//! Object metadata kept across a transfer (issue 23, `--preserve`): which
//! fields the user asked to keep ([`Preserve`]), how a transfer spec says so
//! (`transferOptions.metadataOptions`, [`MetadataOptions`], with the
//! discovery document's enum values), and the per-object fields the local
//! engine and the emulator keep and verification compares
//! ([`ObjectMetadata`]). Plain data: nothing here does I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `MetadataOptions` enum values, spelt as the discovery document does.
pub mod values {
    pub const ACL_PRESERVE: &str = "ACL_PRESERVE";
    pub const STORAGE_CLASS_PRESERVE: &str = "STORAGE_CLASS_PRESERVE";
    pub const KMS_KEY_PRESERVE: &str = "KMS_KEY_PRESERVE";
    pub const TEMPORARY_HOLD_PRESERVE: &str = "TEMPORARY_HOLD_PRESERVE";
    pub const TEMPORARY_HOLD_SKIP: &str = "TEMPORARY_HOLD_SKIP";
    pub const TIME_CREATED_PRESERVE_AS_CUSTOM_TIME: &str = "TIME_CREATED_PRESERVE_AS_CUSTOM_TIME";
}

/// `TransferOptions.metadataOptions` (the fields for transfers between
/// Cloud Storage buckets; the POSIX ones are not sent). Unset fields take
/// STS's defaults: the destination bucket's default ACL, storage class and
/// KMS key, no `customTime` from `timeCreated`, and (the odd one out) the
/// temporary hold *preserved*.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetadataOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary_hold: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_created: Option<String>,
}

/// One `--preserve` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preserved {
    StorageClass,
    Acl,
    KmsKey,
    TemporaryHold,
    TimeCreated,
}

impl Preserved {
    pub const ALL: [Preserved; 5] = [
        Preserved::StorageClass,
        Preserved::Acl,
        Preserved::KmsKey,
        Preserved::TemporaryHold,
        Preserved::TimeCreated,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Preserved::StorageClass => "storage-class",
            Preserved::Acl => "acl",
            Preserved::KmsKey => "kms-key",
            Preserved::TemporaryHold => "temporary-hold",
            Preserved::TimeCreated => "time-created",
        }
    }
}

/// What `--preserve` asked for: a set of [`Preserved`] fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preserve {
    pub storage_class: bool,
    pub acl: bool,
    pub kms_key: bool,
    pub temporary_hold: bool,
    pub time_created: bool,
}

impl Preserve {
    /// Reads `storage-class,acl,...` (commas, spaces around words allowed;
    /// repeats are harmless). A word that is none of them is refused, named.
    pub fn parse(text: &str) -> Result<Preserve, String> {
        let mut preserve = Preserve::default();
        for word in text.split(',').map(str::trim) {
            if word.is_empty() {
                continue;
            }
            let field = Preserved::ALL
                .into_iter()
                .find(|f| f.word() == word.to_ascii_lowercase().replace('_', "-"))
                .ok_or_else(|| {
                    format!(
                        "'{word}' is not a field to preserve (one of {})",
                        Preserved::ALL.map(Preserved::word).join(", ")
                    )
                })?;
            preserve.set(field);
        }
        Ok(preserve)
    }

    fn set(&mut self, field: Preserved) {
        match field {
            Preserved::StorageClass => self.storage_class = true,
            Preserved::Acl => self.acl = true,
            Preserved::KmsKey => self.kms_key = true,
            Preserved::TemporaryHold => self.temporary_hold = true,
            Preserved::TimeCreated => self.time_created = true,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Preserve::default()
    }

    /// The `metadataOptions` of every transfer this manager starts: the
    /// fields asked for set to their PRESERVE value, the others left to
    /// STS's defaults; none at all when nothing is asked for.
    pub fn metadata_options(&self) -> Option<MetadataOptions> {
        use values::*;
        let pick = |asked: bool, value: &str| asked.then(|| value.to_string());
        (!self.is_empty()).then(|| MetadataOptions {
            acl: pick(self.acl, ACL_PRESERVE),
            storage_class: pick(self.storage_class, STORAGE_CLASS_PRESERVE),
            kms_key: pick(self.kms_key, KMS_KEY_PRESERVE),
            temporary_hold: pick(self.temporary_hold, TEMPORARY_HOLD_PRESERVE),
            time_created: pick(self.time_created, TIME_CREATED_PRESERVE_AS_CUSTOM_TIME),
        })
    }
}

/// The metadata of one object that a transfer may keep, as Cloud Storage's
/// `storage#object` names it. `None`: not set (or, from a lister that does
/// not read it, unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary_hold: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_created: Option<DateTime<Utc>>,
}

/// The storage class of a bucket that sets none (the emulator's buckets).
pub const DEFAULT_STORAGE_CLASS: &str = "STANDARD";

impl ObjectMetadata {
    /// What a copy of an object with `source` metadata (created at
    /// `source_created`) carries in the destination under `options`, as STS
    /// documents each field: the destination bucket's default storage class
    /// and KMS key unless preserved (or, for the storage class, named); the
    /// temporary hold preserved unless `TEMPORARY_HOLD_SKIP`; `customTime`
    /// the source's `timeCreated` only with
    /// `TIME_CREATED_PRESERVE_AS_CUSTOM_TIME`. `timeCreated` is the copy's
    /// own (left unset here). ACLs are not represented.
    pub fn copied(
        source: &ObjectMetadata,
        source_created: Option<DateTime<Utc>>,
        options: Option<&MetadataOptions>,
    ) -> ObjectMetadata {
        use values::*;
        let options = options.cloned().unwrap_or_default();
        let storage_class = match options.storage_class.as_deref() {
            Some(STORAGE_CLASS_PRESERVE) => source.storage_class.clone(),
            Some(named) => named
                .strip_prefix("STORAGE_CLASS_")
                .filter(|class| !matches!(*class, "UNSPECIFIED" | "DESTINATION_BUCKET_DEFAULT"))
                .map(str::to_string),
            None => None,
        };
        ObjectMetadata {
            storage_class,
            kms_key_name: (options.kms_key.as_deref() == Some(KMS_KEY_PRESERVE))
                .then(|| source.kms_key_name.clone())
                .flatten(),
            temporary_hold: (options.temporary_hold.as_deref() != Some(TEMPORARY_HOLD_SKIP))
                .then_some(source.temporary_hold)
                .flatten()
                .filter(|held| *held),
            custom_time: (options.time_created.as_deref()
                == Some(TIME_CREATED_PRESERVE_AS_CUSTOM_TIME))
            .then(|| source.time_created.or(source_created))
            .flatten(),
            time_created: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ObjectMetadata::default()
    }
}

/// How a copy's preserved fields differ from its source's, one line each
/// ("storage class differs: NEARLINE in the source, STANDARD in the
/// destination"); empty when they agree. Fields not asked for are not
/// compared. The storage class of an object that names none is the
/// bucket's default ([`DEFAULT_STORAGE_CLASS`]); a missing hold is no hold.
pub fn preserved_differences(
    preserve: &Preserve,
    source: &ObjectMetadata,
    source_created: Option<DateTime<Utc>>,
    destination: &ObjectMetadata,
) -> Vec<String> {
    let mut out = Vec::new();
    let shown = |v: Option<&str>| v.unwrap_or("none").to_string();
    let mut differ = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!(
                "{what} differs: {a} in the source, {b} in the destination"
            ));
        }
    };
    if preserve.storage_class {
        let class = |m: &ObjectMetadata| {
            m.storage_class
                .clone()
                .unwrap_or_else(|| DEFAULT_STORAGE_CLASS.to_string())
        };
        differ("storage class", class(source), class(destination));
    }
    if preserve.kms_key {
        differ(
            "KMS key",
            shown(source.kms_key_name.as_deref()),
            shown(destination.kms_key_name.as_deref()),
        );
    }
    if preserve.temporary_hold {
        let hold = |m: &ObjectMetadata| m.temporary_hold.unwrap_or(false).to_string();
        differ("temporary hold", hold(source), hold(destination));
    }
    if preserve.time_created {
        let time = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "none".into())
        };
        let created = source.time_created.or(source_created);
        if time(created) != time(destination.custom_time) {
            out.push(format!(
                "customTime differs: the source's timeCreated is {}, the destination's customTime {}",
                time(created),
                time(destination.custom_time)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserve_words_are_read_and_a_bad_one_is_named() {
        let p = Preserve::parse("storage-class, acl,kms-key,temporary-hold,time-created").unwrap();
        assert!(p.storage_class && p.acl && p.kms_key && p.temporary_hold && p.time_created);
        assert!(Preserve::parse("").unwrap().is_empty());
        assert_eq!(Preserve::parse("").unwrap().metadata_options(), None);
        let err = Preserve::parse("storage-class,colour").unwrap_err();
        assert!(err.contains("'colour'"), "{err}");
        let options = Preserve::parse("storage-class,time-created")
            .unwrap()
            .metadata_options()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&options).unwrap(),
            serde_json::json!({
                "storageClass": "STORAGE_CLASS_PRESERVE",
                "timeCreated": "TIME_CREATED_PRESERVE_AS_CUSTOM_TIME"
            })
        );
    }

    #[test]
    fn a_copy_keeps_what_is_preserved_and_takes_defaults_otherwise() {
        let created = DateTime::from_timestamp(1_600_000_000, 0).unwrap();
        let source = ObjectMetadata {
            storage_class: Some("NEARLINE".into()),
            kms_key_name: Some("projects/p/locations/l/keyRings/r/cryptoKeys/k".into()),
            temporary_hold: Some(true),
            custom_time: None,
            time_created: Some(created),
        };
        let all = Preserve::parse("storage-class,kms-key,temporary-hold,time-created").unwrap();
        let copy = ObjectMetadata::copied(&source, None, all.metadata_options().as_ref());
        assert_eq!(copy.storage_class.as_deref(), Some("NEARLINE"));
        assert_eq!(copy.kms_key_name, source.kms_key_name);
        assert_eq!(copy.temporary_hold, Some(true));
        assert_eq!(copy.custom_time, Some(created));
        assert!(preserved_differences(&all, &source, None, &copy).is_empty());
        // Nothing asked: bucket defaults, but STS preserves holds by default.
        let plain = ObjectMetadata::copied(&source, None, None);
        assert_eq!(plain.storage_class, None);
        assert_eq!(plain.kms_key_name, None);
        assert_eq!(plain.temporary_hold, Some(true));
        assert_eq!(plain.custom_time, None);
        let differences = preserved_differences(&all, &source, None, &plain);
        assert_eq!(differences.len(), 3, "{differences:?}");
        assert_eq!(
            differences[0],
            "storage class differs: NEARLINE in the source, STANDARD in the destination"
        );
        let named = MetadataOptions {
            storage_class: Some("STORAGE_CLASS_COLDLINE".into()),
            temporary_hold: Some(values::TEMPORARY_HOLD_SKIP.into()),
            ..MetadataOptions::default()
        };
        let copy = ObjectMetadata::copied(&source, None, Some(&named));
        assert_eq!(copy.storage_class.as_deref(), Some("COLDLINE"));
        assert_eq!(copy.temporary_hold, None);
    }
}
