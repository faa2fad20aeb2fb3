//! The side tables (verification, plan, failed objects) as column frames.

use super::columns::{Frame, PrimitiveBuilder, StrBuilder};
use super::micros;
use crate::records::{FailedObject, PlannedPrefix, Verification};

/// Whether a verification no longer speaks for its prefix: the prefix was
/// requeued or transferred since the check (its row changed after it), is
/// not `done`, or is gone from the job table. Pure.
pub fn is_stale(v: &Verification, job: Option<&crate::model::PrefixJob>) -> bool {
    job.is_none_or(|j| j.status != crate::model::Status::Done || j.last_updated > v.checked_at)
}

/// prefix, result, objects_compared, missing, different, checked_at,
/// offending_objects (a JSON array of names), stale (1: requeued or
/// transferred since the check; see [`is_stale`]).
pub fn verification_frame(rows: &[Verification], jobs: &[crate::model::PrefixJob]) -> Frame {
    let n = rows.len();
    let by_prefix: std::collections::HashMap<&str, &crate::model::PrefixJob> =
        jobs.iter().map(|j| (j.prefix.as_str(), j)).collect();
    let mut stale = PrimitiveBuilder::with_capacity(n);
    let mut prefix = StrBuilder::with_capacity(n);
    let mut result = StrBuilder::with_capacity(n);
    let mut compared = PrimitiveBuilder::with_capacity(n);
    let mut missing = PrimitiveBuilder::with_capacity(n);
    let mut different = PrimitiveBuilder::with_capacity(n);
    let mut checked_at = PrimitiveBuilder::with_capacity(n);
    let mut offending = StrBuilder::with_capacity(n);
    for v in rows {
        prefix.push(Some(&v.prefix));
        result.push(Some(v.result.as_str()));
        compared.push(Some(v.objects_compared as i64));
        missing.push(Some(v.missing as i64));
        different.push(Some(v.different as i64));
        checked_at.push(Some(micros(v.checked_at)));
        offending.push(Some(
            &serde_json::to_string(&v.offending_objects).unwrap_or_default(),
        ));
        stale.push(Some(i64::from(is_stale(
            v,
            by_prefix.get(v.prefix.as_str()).copied(),
        ))));
    }
    Frame {
        rows: n,
        columns: vec![
            ("prefix", prefix.finish()),
            ("result", result.finish()),
            ("objects_compared", compared.finish_int()),
            ("missing", missing.finish_int()),
            ("different", different.finish_int()),
            ("checked_at", checked_at.finish_timestamp()),
            ("offending_objects", offending.finish()),
            ("stale", stale.finish_int()),
        ],
    }
}

/// prefix, objects, bytes: what `sts-plan --load` listed per prefix.
pub fn plan_frame(rows: &[PlannedPrefix]) -> Frame {
    let n = rows.len();
    let mut prefix = StrBuilder::with_capacity(n);
    let mut objects = PrimitiveBuilder::with_capacity(n);
    let mut bytes = PrimitiveBuilder::with_capacity(n);
    for p in rows {
        prefix.push(Some(&p.prefix));
        objects.push(Some(p.objects as i64));
        bytes.push(Some(p.bytes as i64));
    }
    Frame {
        rows: n,
        columns: vec![
            ("prefix", prefix.finish()),
            ("objects", objects.finish_int()),
            ("bytes", bytes.finish_int()),
        ],
    }
}

/// prefix, object, action, error_code, message, operation, time: the
/// failed-objects table, one row per object whose action failed.
pub fn failed_objects_frame(rows: &[FailedObject]) -> Frame {
    let n = rows.len();
    let mut prefix = StrBuilder::with_capacity(n);
    let mut object = StrBuilder::with_capacity(n);
    let mut action = StrBuilder::with_capacity(n);
    let mut code = StrBuilder::with_capacity(n);
    let mut message = StrBuilder::with_capacity(n);
    let mut operation = StrBuilder::with_capacity(n);
    let mut time = PrimitiveBuilder::with_capacity(n);
    for f in rows {
        prefix.push(Some(&f.prefix));
        object.push(Some(&f.object));
        action.push(Some(&f.action));
        code.push(Some(&f.error_code));
        message.push(Some(&f.message));
        operation.push(Some(&f.operation));
        time.push(Some(micros(f.time)));
    }
    Frame {
        rows: n,
        columns: vec![
            ("prefix", prefix.finish()),
            ("object", object.finish()),
            ("action", action.finish()),
            ("error_code", code.finish()),
            ("message", message.finish()),
            ("operation", operation.finish()),
            ("time", time.finish_timestamp()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PrefixJob, Status};
    use crate::records::VerifyResult;
    use chrono::TimeZone;

    #[test]
    fn a_verdict_is_stale_once_its_prefix_is_requeued_or_transferred_again() {
        let at = |s: i64| chrono::Utc.timestamp_opt(s, 0).unwrap();
        let v = Verification {
            prefix: "a/".into(),
            result: VerifyResult::Verified,
            objects_compared: 1,
            missing: 0,
            different: 0,
            checked_at: at(100),
            offending_objects: vec![],
        };
        let job = |status, last| PrefixJob {
            prefix: "a/".into(),
            status,
            job_name: None,
            last_updated: at(last),
        };
        assert!(!is_stale(&v, Some(&job(Status::Done, 50))));
        assert!(
            is_stale(&v, Some(&job(Status::Done, 150))),
            "transferred again"
        );
        assert!(is_stale(&v, Some(&job(Status::Waiting, 50))), "requeued");
        assert!(is_stale(&v, None), "gone from the table");
    }
}
