//! The verification and plan tables as column frames.

use super::columns::{Frame, PrimitiveBuilder, StrBuilder};
use super::micros;
use crate::records::{PlannedPrefix, Verification};

/// prefix, result, objects_compared, missing, different, checked_at,
/// offending_objects (a JSON array of names).
pub fn verification_frame(rows: &[Verification]) -> Frame {
    let n = rows.len();
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
