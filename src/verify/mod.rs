//! `sts-verify`'s rules, pure: which prefixes to check, how a source and a
//! destination listing compare, and what `--requeue` writes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::manager::sync::ChangeSet;
use crate::metadata::Preserve;
use crate::model::{PrefixJob, Status};
pub use crate::records::{Verification, VerifyResult, MAX_OFFENDING};
use crate::storage::ObjectInfo;

/// One offending object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offense {
    pub name: String,
    pub reason: String,
}

/// Why two copies of an object differ, if they do: size, then CRC32C, then
/// MD5 where both sides have one (composite objects have none).
pub fn difference(source: &ObjectInfo, destination: &ObjectInfo) -> Option<String> {
    if source.size != destination.size {
        return Some(format!(
            "size {} in the source, {} in the destination",
            source.size, destination.size
        ));
    }
    if let (Some(a), Some(b)) = (source.crc32c, destination.crc32c) {
        if a != b {
            return Some(format!(
                "crc32c {} in the source, {} in the destination",
                crate::storage::encode_crc32c(a),
                crate::storage::encode_crc32c(b)
            ));
        }
    }
    if let (Some(a), Some(b)) = (&source.md5, &destination.md5) {
        if a != b {
            return Some(format!(
                "md5 {} in the source, {} in the destination",
                crate::storage::encode_md5(a),
                crate::storage::encode_md5(b)
            ));
        }
    }
    None
}

/// Why a copy differs from its source: its content ([`difference`]), else
/// the metadata `preserve` asked to keep
/// ([`crate::metadata::preserved_differences`], e.g. "storage class
/// differs: NEARLINE in the source, STANDARD in the destination").
pub fn difference_kept(
    source: &ObjectInfo,
    destination: &ObjectInfo,
    preserve: &Preserve,
) -> Option<String> {
    if let Some(why) = difference(source, destination) {
        return Some(why);
    }
    let differences = crate::metadata::preserved_differences(
        preserve,
        &source.metadata,
        source.updated,
        &destination.metadata,
    );
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// Compares every source object under `prefix` with the destination's
/// object of the same name. Objects only in the destination are not
/// offences (a destination may hold more). Up to [`MAX_OFFENDING`] offences
/// are kept, in name order.
pub fn compare(
    prefix: &str,
    source: &[ObjectInfo],
    destination: &[ObjectInfo],
    now: DateTime<Utc>,
) -> (Verification, Vec<Offense>) {
    compare_kept(prefix, source, destination, now, &Preserve::default())
}

/// [`compare`], the metadata `preserve` names compared too.
pub fn compare_kept(
    prefix: &str,
    source: &[ObjectInfo],
    destination: &[ObjectInfo],
    now: DateTime<Utc>,
    preserve: &Preserve,
) -> (Verification, Vec<Offense>) {
    let by_name: HashMap<&str, &ObjectInfo> =
        destination.iter().map(|o| (o.name.as_str(), o)).collect();
    let (mut missing, mut different) = (0u64, 0u64);
    let mut offenses = Vec::new();
    for object in source {
        let reason = match by_name.get(object.name.as_str()) {
            None => {
                missing += 1;
                "missing from the destination".to_string()
            }
            Some(copy) => match difference_kept(object, copy, preserve) {
                None => continue,
                Some(why) => {
                    different += 1;
                    why
                }
            },
        };
        if offenses.len() < MAX_OFFENDING {
            offenses.push(Offense {
                name: object.name.clone(),
                reason,
            });
        }
    }
    verdict(
        prefix,
        source.len() as u64,
        missing,
        different,
        offenses,
        now,
    )
}

fn verdict(
    prefix: &str,
    compared: u64,
    missing: u64,
    different: u64,
    mut offenses: Vec<Offense>,
    now: DateTime<Utc>,
) -> (Verification, Vec<Offense>) {
    offenses.sort_by(|a, b| a.name.cmp(&b.name));
    let result = if missing + different == 0 {
        VerifyResult::Verified
    } else {
        VerifyResult::Mismatch
    };
    let verification = Verification {
        prefix: prefix.to_string(),
        result,
        objects_compared: compared,
        missing,
        different,
        checked_at: now,
        offending_objects: offenses.iter().map(|o| o.name.clone()).collect(),
    };
    (verification, offenses)
}

/// A moved prefix (`--move`: the source's objects are deleted once
/// copied), checked with what is left to see: every source object last
/// modified before the prefix's latest operation began (`started`; every
/// one when it is unknown) should be gone from the source, so each is an
/// offence ("left in the source after the move"), counted missing when the
/// destination lacks it too and different otherwise. Objects written
/// after the operation began are not judged (the next pass moves them).
/// Compared: the destination's objects plus the leftovers it lacks. What
/// it cannot prove: that a copy equals a source object that is gone.
pub fn compare_moved(
    prefix: &str,
    source: &[ObjectInfo],
    destination: &[ObjectInfo],
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Verification, Vec<Offense>) {
    let by_name: HashMap<&str, &ObjectInfo> =
        destination.iter().map(|o| (o.name.as_str(), o)).collect();
    let (mut missing, mut different) = (0u64, 0u64);
    let mut offenses = Vec::new();
    let left = source.iter().filter(|o| match (started, o.updated) {
        (Some(started), Some(updated)) => updated < started,
        _ => true,
    });
    for object in left {
        let reason = match by_name.get(object.name.as_str()) {
            None => {
                missing += 1;
                "left in the source after the move, and missing from the destination".to_string()
            }
            Some(copy) => {
                different += 1;
                match difference(object, copy) {
                    Some(why) => format!("left in the source after the move ({why})"),
                    None => "left in the source after the move (the destination's copy matches)"
                        .to_string(),
                }
            }
        };
        if offenses.len() < MAX_OFFENDING {
            offenses.push(Offense {
                name: object.name.clone(),
                reason,
            });
        }
    }
    let compared = destination.len() as u64 + missing;
    verdict(prefix, compared, missing, different, offenses, now)
}

/// Every source object that is missing from the destination or differs
/// there, by name, in source order: what `--requeue --objects` copies again
/// (the verification row keeps only the first [`MAX_OFFENDING`]).
pub fn offending_names(source: &[ObjectInfo], destination: &[ObjectInfo]) -> Vec<String> {
    let by_name: HashMap<&str, &ObjectInfo> =
        destination.iter().map(|o| (o.name.as_str(), o)).collect();
    source
        .iter()
        .filter(|o| match by_name.get(o.name.as_str()) {
            None => true,
            Some(copy) => difference(o, copy).is_some(),
        })
        .map(|o| o.name.clone())
        .collect()
}

/// How many destination objects have no source object of the same name.
pub fn only_in_destination(source: &[ObjectInfo], destination: &[ObjectInfo]) -> u64 {
    let names: std::collections::HashSet<&str> = source.iter().map(|o| o.name.as_str()).collect();
    destination
        .iter()
        .filter(|o| !names.contains(o.name.as_str()))
        .count() as u64
}

/// The prefixes to check: those named (always), else every `done` prefix
/// not verified since its row last changed (its last transfer).
pub fn prefixes_to_check(
    jobs: &[PrefixJob],
    previous: &[Verification],
    named: &[String],
    all: bool,
) -> (Vec<String>, usize) {
    if !named.is_empty() {
        let mut named = named.to_vec();
        named.sort();
        named.dedup();
        return (named, 0);
    }
    let verified: HashMap<&str, &Verification> = previous
        .iter()
        .filter(|v| v.result == VerifyResult::Verified)
        .map(|v| (v.prefix.as_str(), v))
        .collect();
    let mut skipped = 0;
    let mut check = Vec::new();
    for job in jobs.iter().filter(|j| j.status == Status::Done) {
        match verified.get(job.prefix.as_str()) {
            Some(v) if !all && v.checked_at >= job.last_updated => skipped += 1,
            _ => check.push(job.prefix.clone()),
        }
    }
    (check, skipped)
}

/// The prefixes of `named` that have no row in `jobs`, in their order.
pub fn unknown_prefixes<'a>(jobs: &[PrefixJob], named: &'a [String]) -> Vec<&'a String> {
    let known: std::collections::HashSet<&str> = jobs.iter().map(|j| j.prefix.as_str()).collect();
    named
        .iter()
        .filter(|p| !known.contains(p.as_str()))
        .collect()
}

/// `--requeue`: every mismatched prefix of the job table back to `waiting`
/// as `sts-requeue` does it (no job name, and a `waiting` history row with
/// none: the mark that restarts the retry count, after which sync takes no
/// operation that began before). Prefixes running or paused are left to
/// their transfer.
pub fn requeue(jobs: &[PrefixJob], mismatched: &[&str], now: DateTime<Utc>) -> ChangeSet {
    let mut changes = ChangeSet::default();
    for job in jobs.iter().filter(|j| {
        mismatched.contains(&j.prefix.as_str()) && matches!(j.status, Status::Done | Status::Error)
    }) {
        changes.requeue(&job.prefix, now);
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, size: u64, crc: Option<u32>, md5: Option<u8>) -> ObjectInfo {
        ObjectInfo {
            crc32c: crc,
            md5: md5.map(|b| [b; 16]),
            ..ObjectInfo::sized(name, size)
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn names_sizes_and_checksums_are_compared() {
        let source = [
            object("p/a", 1, Some(1), Some(1)),
            object("p/b", 2, Some(2), Some(2)),
            object("p/c", 3, Some(3), Some(3)),
            object("p/d", 4, Some(4), Some(4)),
            object("p/e", 5, Some(5), None),
        ];
        let destination = [
            object("p/a", 1, Some(1), Some(1)),
            // Same size, other bytes.
            object("p/b", 2, Some(9), Some(9)),
            // p/c deleted; p/d with another size.
            object("p/d", 40, Some(4), Some(4)),
            // A composite copy: no md5, crc32c equal.
            object("p/e", 5, Some(5), Some(7)),
            object("p/extra", 1, Some(1), None),
        ];
        let (v, offenses) = compare("p/", &source, &destination, at(10));
        assert_eq!(v.result, VerifyResult::Mismatch);
        assert_eq!((v.objects_compared, v.missing, v.different), (5, 1, 2));
        assert_eq!(v.offending_objects, ["p/b", "p/c", "p/d"]);
        assert!(offenses[0].reason.contains("crc32c"), "{offenses:?}");
        assert!(offenses[1].reason.contains("missing"));
        assert!(offenses[2].reason.contains("size 4"));
        // md5 alone tells a difference when crc32c is unknown.
        let (v, _) = compare(
            "p/",
            &[object("p/a", 1, None, Some(1))],
            &[object("p/a", 1, None, Some(2))],
            at(10),
        );
        assert_eq!(v.different, 1);
        let (v, _) = compare("p/", &source[..1], &destination[..1], at(10));
        assert_eq!(v.result, VerifyResult::Verified);
    }

    #[test]
    fn preserved_fields_are_compared_only_when_asked() {
        let mut source = object("p/a", 1, Some(1), None);
        source.metadata.storage_class = Some("NEARLINE".into());
        source.metadata.temporary_hold = Some(true);
        let copy = object("p/a", 1, Some(1), None);
        let (v, _) = compare(
            "p/",
            std::slice::from_ref(&source),
            std::slice::from_ref(&copy),
            at(0),
        );
        assert_eq!(v.result, VerifyResult::Verified);
        let asked = Preserve::parse("storage-class,temporary-hold").unwrap();
        let (v, offenses) = compare_kept(
            "p/",
            std::slice::from_ref(&source),
            std::slice::from_ref(&copy),
            at(0),
            &asked,
        );
        assert_eq!((v.result, v.different), (VerifyResult::Mismatch, 1));
        assert_eq!(
            offenses[0].reason,
            "storage class differs: NEARLINE in the source, STANDARD in the destination; \
             temporary hold differs: true in the source, false in the destination"
        );
        let mut kept = copy;
        kept.metadata = source.metadata.clone();
        let (v, _) = compare_kept("p/", &[source], &[kept], at(0), &asked);
        assert_eq!(v.result, VerifyResult::Verified);
    }

    #[test]
    fn a_move_is_verified_by_what_is_left_in_the_source() {
        let aged = |name: &str, updated: i64| ObjectInfo {
            updated: Some(at(updated)),
            ..object(name, 1, Some(1), None)
        };
        let destination = [aged("p/a", 5), aged("p/b", 5)];
        // Everything moved; an object written after the operation began
        // is not judged.
        let (v, _) = compare_moved(
            "p/",
            &[aged("p/new", 20)],
            &destination,
            Some(at(10)),
            at(30),
        );
        assert_eq!((v.result, v.objects_compared), (VerifyResult::Verified, 2));
        // One left behind (copied), one never copied.
        let (v, offenses) = compare_moved(
            "p/",
            &[aged("p/b", 5), aged("p/c", 5)],
            &destination,
            Some(at(10)),
            at(30),
        );
        assert_eq!((v.missing, v.different, v.objects_compared), (1, 1, 3));
        assert!(
            offenses[0].reason.starts_with("left in the source"),
            "{offenses:?}"
        );
        // No start known: every source object is a leftover.
        let (v, _) = compare_moved("p/", &[aged("p/new", 20)], &destination, None, at(30));
        assert_eq!(v.result, VerifyResult::Mismatch);
    }

    #[test]
    fn offending_names_are_capped() {
        let source: Vec<_> = (0..150)
            .map(|i| object(&format!("x{i:03}"), 1, None, None))
            .collect();
        let (v, offenses) = compare("x", &source, &[], at(0));
        assert_eq!(v.missing, 150);
        assert_eq!(v.offending_objects.len(), MAX_OFFENDING);
        assert_eq!(offenses.len(), MAX_OFFENDING);
    }

    fn job(prefix: &str, status: Status, updated: i64) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: Some(format!("transferOperations/{prefix}")),
            last_updated: at(updated),
        }
    }

    #[test]
    fn named_prefixes_without_a_row_are_found() {
        let jobs = [job("a/", Status::Done, 0), job("b/", Status::Waiting, 0)];
        let named: Vec<String> = ["b/", "a", "a/", "zz/"].map(String::from).to_vec();
        assert_eq!(unknown_prefixes(&jobs, &named), ["a", "zz/"]);
        assert!(unknown_prefixes(&jobs, &[]).is_empty());
    }

    #[test]
    fn done_prefixes_verified_since_their_transfer_are_skipped() {
        let jobs = [
            job("a/", Status::Done, 10),
            job("b/", Status::Done, 30),
            job("c/", Status::Done, 10),
            job("d/", Status::Running, 10),
            job("e/", Status::Done, 10),
        ];
        let verification = |prefix: &str, result, checked| Verification {
            prefix: prefix.into(),
            result,
            objects_compared: 1,
            missing: 0,
            different: 0,
            checked_at: at(checked),
            offending_objects: vec![],
        };
        let previous = [
            verification("a/", VerifyResult::Verified, 20),
            // Transferred again after it was verified.
            verification("b/", VerifyResult::Verified, 20),
            // A mismatch is always checked again.
            verification("c/", VerifyResult::Mismatch, 20),
        ];
        let (check, skipped) = prefixes_to_check(&jobs, &previous, &[], false);
        // --all: every done prefix, whatever was verified before.
        let (every, none) = prefixes_to_check(&jobs, &previous, &[], true);
        assert_eq!((every.len(), none), (check.len() + skipped, 0));
        assert_eq!(check, ["b/", "c/", "e/"]);
        assert_eq!(skipped, 1);
        let (check, _) = prefixes_to_check(&jobs, &previous, &["a/".into(), "a/".into()], false);
        assert_eq!(check, ["a/"]);
    }

    #[test]
    fn requeue_puts_mismatches_back_to_waiting_with_history() {
        let jobs = [
            job("a/", Status::Done, 10),
            job("b/", Status::Done, 10),
            job("c/", Status::Running, 10),
        ];
        let changes = requeue(&jobs, &["b/", "c/"], at(50));
        assert_eq!(changes.updates.len(), 1, "a running prefix is left alone");
        assert_eq!(changes.updates[0].prefix, "b/");
        assert_eq!(changes.updates[0].status, Status::Waiting);
        assert_eq!(changes.updates[0].job_name, None);
        assert_eq!(changes.history[0].status, Status::Waiting);
        assert_eq!(changes.history[0].job_name, None);
    }
}
