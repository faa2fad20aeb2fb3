//! Checks of single values against their discovery schema: JSON types,
//! enums, integer ranges, string formats, and the limits descriptions state
//! in words.

use super::*;

pub(super) fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `transfer_job` -> `transferJob` (proto JSON accepts the field's own
/// name as well as its lowerCamel JSON name).
pub(super) fn camel(key: &str) -> String {
    crate::transfer::wire::snake_to_camel(key)
}

pub(super) fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn enum_ok(spec: &Value, value: &Value) -> bool {
    let Some(names) = spec.get("enum").and_then(Value::as_array) else {
        return true;
    };
    match value {
        Value::String(s) => names.iter().any(|n| n.as_str() == Some(s)),
        // GAPIC clients send enums as their numbers.
        Value::Number(n) => n.as_u64().is_some_and(|i| (i as usize) < names.len()),
        _ => false,
    }
}

pub(super) fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A JSON value of a scalar schema (string, integer, number, boolean).
pub(super) fn check_scalar_json(at: &str, spec: &Value, value: &Value) -> Result<(), String> {
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("any");
    let format = spec.get("format").and_then(Value::as_str).unwrap_or("");
    let bad = || {
        format!(
            "{at}: {} is not a valid {kind}{}",
            value,
            if format.is_empty() {
                String::new()
            } else {
                format!(" ({format})")
            }
        )
    };
    match (kind, value) {
        ("string", Value::String(text)) => {
            if !enum_ok(spec, value) {
                return Err(format!("{at}: {text:?} is not one of {}", spec["enum"]));
            }
            check_string_format(at, format, text)?;
            if let Some(pattern) = spec.get("pattern").and_then(Value::as_str) {
                if Regex::new(pattern).is_ok_and(|r| !r.is_match(text)) {
                    return Err(format!("{at}: {text:?} does not match {pattern}"));
                }
            }
            Ok(())
        }
        // int64 and uint64 travel as strings, but parsers take numbers too;
        // enums may be numbers (GAPIC).
        ("string", Value::Number(n))
            if matches!(format, "int64" | "uint64") && (n.is_i64() || n.is_u64()) =>
        {
            Ok(())
        }
        ("string", Value::Number(_)) if spec.get("enum").is_some() && enum_ok(spec, value) => {
            Ok(())
        }
        ("integer", Value::Number(n)) => {
            let i = n.as_i64().ok_or_else(bad)?;
            check_integer_range(at, format, spec, i)
        }
        ("integer", Value::String(text)) if is_integer_text(text) => {
            let i = text.parse::<i64>().map_err(|_| bad())?;
            check_integer_range(at, format, spec, i)
        }
        ("number", Value::Number(_)) => Ok(()),
        ("number", Value::String(text))
            if matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity")
                || text.parse::<f64>().is_ok() =>
        {
            Ok(())
        }
        ("boolean", Value::Bool(_)) => Ok(()),
        _ => Err(bad()),
    }
}

pub(super) fn check_integer_range(
    at: &str,
    format: &str,
    spec: &Value,
    value: i64,
) -> Result<(), String> {
    let (low, high) = match format {
        "int32" => (i64::from(i32::MIN), i64::from(i32::MAX)),
        "uint32" => (0, i64::from(u32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    let bound = |key: &str| {
        spec.get(key)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok())
    };
    let low = bound("minimum").unwrap_or(low);
    let high = bound("maximum").unwrap_or(high);
    let described = spec
        .get("description")
        .and_then(Value::as_str)
        .and_then(|d| max_value_words().captures(d))
        .and_then(|c| c[1].parse::<i64>().ok());
    let high = described.map_or(high, |d| d.min(high));
    if value < low || value > high {
        return Err(format!("{at}: {value} is outside {low}..={high}"));
    }
    Ok(())
}

pub(super) fn check_string_format(at: &str, format: &str, text: &str) -> Result<(), String> {
    let ok = match format {
        "int64" | "uint64" => is_integer_text(text),
        "google-datetime" | "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "google-duration" => text
            .strip_suffix('s')
            .is_some_and(|n| n.parse::<f64>().is_ok_and(f64::is_finite)),
        "byte" => text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{at}: {text:?} is not a valid {format}"))
    }
}

/// The limits a string field's description states in words.
pub(super) fn check_described_limits(value: &Value, spec: &Value, at: &str) -> Result<(), String> {
    let (Some(text), Some(description)) = (
        value.as_str(),
        spec.get("description").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    for limit in limit_words().captures_iter(description) {
        let Ok(max) = limit[1].replace(',', "").parse::<usize>() else {
            continue;
        };
        let unit = limit[2].to_ascii_lowercase();
        let (size, what) = match unit.as_str() {
            "bytes" => (text.len(), "bytes"),
            _ => (text.chars().count(), "characters"),
        };
        if size > max {
            return Err(format!("{at}: {size} {what}, the document allows {max}"));
        }
        if unit == "ascii characters" && !text.is_ascii() {
            return Err(format!("{at}: must be ASCII"));
        }
    }
    Ok(())
}

/// A query parameter's text against its spec (type, enum, pattern, the
/// described maximum).
pub(super) fn check_scalar_text(
    method: &str,
    name: &str,
    spec: &Value,
    text: &str,
) -> Result<(), String> {
    let at = format!("{method}: query parameter {name}");
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("string");
    match kind {
        "integer" => {
            let value = text
                .parse::<i64>()
                .map_err(|_| format!("{at}: {text:?} is not an integer"))?;
            let format = spec.get("format").and_then(Value::as_str).unwrap_or("");
            check_integer_range(&at, format, spec, value)
        }
        "boolean" if !matches!(text, "true" | "false") => {
            Err(format!("{at}: {text:?} is not true or false"))
        }
        "boolean" => Ok(()),
        _ => {
            if !enum_ok(spec, &Value::String(text.to_string())) {
                return Err(format!("{at}: {text:?} is not one of {}", spec["enum"]));
            }
            if let Some(pattern) = spec.get("pattern").and_then(Value::as_str) {
                if Regex::new(pattern).is_ok_and(|r| !r.is_match(text)) {
                    return Err(format!("{at}: {text:?} does not match {pattern}"));
                }
            }
            check_described_limits(&Value::String(text.to_string()), spec, &at)
        }
    }
}
