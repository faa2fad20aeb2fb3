//! List filters (`transferOperations.list`, `transferJobs.list`): the keys,
//! their kinds, the required keys and the status values, parsed from the
//! filter parameter's own description.

use super::*;

/// What a list method's `filter` description admits: its JSON keys with
/// their kind (array or string), the required ones, and the values of the
/// `...Statuses` key ("Valid values are case-insensitive: ...").
pub(super) struct FilterRules {
    pub(super) keys: Vec<(String, bool)>,
    pub(super) required: Vec<String>,
    pub(super) statuses: Vec<String>,
}

pub(super) fn filter_rules(description: &str) -> FilterRules {
    let keys = filter_keys()
        .captures_iter(description)
        .map(|c| (c[1].to_string(), &c[2] == "["))
        .fold(Vec::<(String, bool)>::new(), |mut keys, key| {
            if !keys.iter().any(|(k, _)| *k == key.0) {
                keys.push(key);
            }
            keys
        });
    let required = required_words()
        .captures_iter(description)
        .map(|c| c[1].to_string())
        .collect();
    let mut statuses = Vec::new();
    let lower = description.to_ascii_lowercase();
    if let Some(at) = lower.find("case-insensitive:") {
        for word in description[at + "case-insensitive:".len()..].split_whitespace() {
            let word = word.trim_end_matches([',', '.']);
            if word == "*" || word == "and" {
                continue;
            }
            if word.len() > 1 && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                statuses.push(word.to_string());
            } else {
                break;
            }
        }
    }
    FilterRules {
        keys,
        required,
        statuses,
    }
}

pub(super) fn check_filter(method: &str, spec: &Value, text: &str) -> Result<(), String> {
    let description = spec
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let rules = filter_rules(description);
    if rules.keys.is_empty() {
        return Ok(());
    }
    let at = format!("{method}: filter");
    let filter: Value =
        serde_json::from_str(text).map_err(|e| format!("{at} is not JSON text: {e}"))?;
    let object = filter
        .as_object()
        .ok_or_else(|| format!("{at} is not a JSON object"))?;
    for (key, value) in object {
        let name = camel(key);
        let (_, array) = rules
            .keys
            .iter()
            .find(|(k, _)| *k == name)
            .ok_or_else(|| format!("{at}: unknown key {key:?}"))?;
        if *array {
            let items = value
                .as_array()
                .ok_or_else(|| format!("{at}: {key} must be an array"))?;
            for item in items {
                let item = item
                    .as_str()
                    .ok_or_else(|| format!("{at}: {key} holds a non-string"))?;
                if name.ends_with("Statuses")
                    && !rules.statuses.is_empty()
                    && !rules.statuses.iter().any(|s| s.eq_ignore_ascii_case(item))
                {
                    return Err(format!(
                        "{at}: {key} value {item:?} is not one of {}",
                        rules.statuses.join(", ")
                    ));
                }
            }
        } else if !value.is_string() {
            return Err(format!("{at}: {key} must be a string"));
        } else if name.ends_with("Time") {
            let time = value.as_str().unwrap_or_default();
            if chrono::DateTime::parse_from_rfc3339(time).is_err() {
                return Err(format!("{at}: {key} {time:?} is not RFC 3339"));
            }
        }
    }
    for key in &rules.required {
        if !object.contains_key(key) && !object.contains_key(&snake(key)) {
            return Err(format!("{at}: {key} is required"));
        }
    }
    Ok(())
}
