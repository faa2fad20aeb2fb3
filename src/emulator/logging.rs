//! Cloud Logging v2 `entries.list` (POST /v2/entries:list) over the local
//! engine's transfer log entries: the part of the Logging query language
//! the manager's filter uses (comparisons joined by AND, `field=("a" OR
//! "b")`, `severity>=ERROR`), `orderBy` "timestamp asc" (the order written)
//! and paging. Anything else is refused with 400, naming it.

use serde_json::Value;

use super::routes::Reply;
use crate::transfer::local::LocalEngine;

const SEVERITIES: [&str; 9] = [
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
];

/// One comparison of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Path segments (`jsonPayload`, `@type`).
    pub field: Vec<String>,
    pub op: String,
    /// Any of these matches.
    pub values: Vec<String>,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Lexer<'_> {
    fn skip_spaces(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err("an unterminated string".into()),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.chars.next().ok_or("a dangling backslash")?),
                Some(c) => out.push(c),
            }
        }
    }

    /// A quoted string or a bare word (up to a space, `=`, `(`, `)`, `<`,
    /// `>`, `!`, `.`).
    fn word(&mut self, stop_at_dot: bool) -> Result<String, String> {
        self.skip_spaces();
        if self.chars.peek() == Some(&'"') {
            self.chars.next();
            return self.quoted();
        }
        let mut out = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || "=()<>!:".contains(c) || (stop_at_dot && c == '.') {
                break;
            }
            out.push(c);
            self.chars.next();
        }
        if out.is_empty() {
            return Err(format!(
                "expected a name or a value at '{}'",
                self.chars.clone().collect::<String>()
            ));
        }
        Ok(out)
    }
}

/// Parses `a.b="x" AND c=("y" OR "z") AND severity>=ERROR`.
pub fn parse_filter(filter: &str) -> Result<Vec<Condition>, String> {
    let mut lexer = Lexer {
        chars: filter.chars().peekable(),
    };
    let mut conditions = Vec::new();
    loop {
        lexer.skip_spaces();
        if lexer.chars.peek().is_none() {
            break;
        }
        if !conditions.is_empty() {
            let and = lexer.word(false)?;
            if and != "AND" {
                return Err(format!(
                    "the emulator joins comparisons with AND only, not '{and}'"
                ));
            }
        }
        let mut field = vec![lexer.word(true)?];
        while lexer.chars.peek() == Some(&'.') {
            lexer.chars.next();
            field.push(lexer.word(true)?);
        }
        lexer.skip_spaces();
        let mut op = String::new();
        while let Some(&c) = lexer.chars.peek().filter(|c| "=<>!:".contains(**c)) {
            op.push(c);
            lexer.chars.next();
        }
        if !matches!(op.as_str(), "=" | ">=") {
            return Err(format!(
                "the emulator compares with = and >= only, not '{op}'"
            ));
        }
        lexer.skip_spaces();
        let mut values = Vec::new();
        if lexer.chars.peek() == Some(&'(') {
            lexer.chars.next();
            loop {
                values.push(lexer.word(false)?);
                lexer.skip_spaces();
                if lexer.chars.peek() == Some(&')') {
                    lexer.chars.next();
                    break;
                }
                let or = lexer.word(false)?;
                if or != "OR" {
                    return Err(format!("expected OR or ')' in a list, not '{or}'"));
                }
            }
        } else {
            values.push(lexer.word(false)?);
        }
        if op == ">=" && field != ["severity"] {
            return Err("the emulator takes >= on severity only".into());
        }
        conditions.push(Condition { field, op, values });
    }
    Ok(conditions)
}

fn severity_rank(name: &str) -> Option<usize> {
    SEVERITIES.iter().position(|s| *s == name)
}

/// Whether `entry` satisfies every condition.
pub fn matches(conditions: &[Condition], entry: &Value) -> bool {
    conditions.iter().all(|c| {
        let mut value = entry;
        for segment in &c.field {
            value = &value[segment.as_str()];
        }
        let Some(text) = value.as_str() else {
            return false;
        };
        if c.op == ">=" {
            let (Some(have), Some(least)) = (
                severity_rank(text),
                c.values.first().and_then(|v| severity_rank(v)),
            ) else {
                return false;
            };
            return have >= least;
        }
        c.values.iter().any(|v| v == text)
    })
}

/// Serves one `entries.list`.
pub fn list_entries(engine: &LocalEngine, body: &str) -> Reply {
    match list(engine, body) {
        Ok(reply) => reply,
        Err(problem) => Reply::error(400, problem),
    }
}

fn list(engine: &LocalEngine, body: &str) -> Result<Reply, String> {
    let request: Value = serde_json::from_str(body).map_err(|e| format!("body: {e}"))?;
    let projects: Vec<&str> = request["resourceNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str()?.strip_prefix("projects/"))
        .collect();
    let [project] = projects.as_slice() else {
        return Err("resourceNames must name one project (projects/ID)".into());
    };
    if let Some(order) = request["orderBy"]
        .as_str()
        .filter(|o| *o != "timestamp asc")
    {
        return Err(format!(
            "the emulator orders by 'timestamp asc' only, not '{order}'"
        ));
    }
    let conditions = parse_filter(request["filter"].as_str().unwrap_or_default())?;
    let page_size = match request["pageSize"].as_i64() {
        None => 50,
        // logging.proto: "If the value is negative or exceeds 1000, the
        // request is rejected."
        Some(n) if !(0..=1000).contains(&n) => {
            return Err(format!("pageSize {n} is negative or over 1000"))
        }
        Some(n) => n.max(1) as usize,
    };
    let mut after = match request["pageToken"].as_str() {
        None | Some("") => 0,
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| format!("pageToken '{token}' was not given by this emulator"))?,
    };
    let mut entries = Vec::new();
    let mut more = false;
    'scan: loop {
        let batch = engine.log_entries(project, None, after, 1000)?;
        if batch.is_empty() {
            break;
        }
        for (seq, entry) in batch {
            if matches(&conditions, &entry) {
                if entries.len() == page_size {
                    more = true;
                    break 'scan;
                }
                entries.push(entry);
            }
            after = seq;
        }
    }
    let mut reply = serde_json::json!({ "entries": entries });
    if more {
        reply["nextPageToken"] = Value::String(after.to_string());
    }
    Ok(Reply::ok(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managers_filter_parses_and_matches() {
        let operations = vec![
            "transferOperations/a".to_string(),
            "transferOperations/b \"q\"".to_string(),
        ];
        let filter = crate::transfer::logs::failure_filter("p", &operations);
        let conditions = parse_filter(&filter).unwrap();
        assert_eq!(conditions.len(), 5);
        assert_eq!(conditions[2].field, ["jsonPayload", "@type"]);
        assert_eq!(conditions[4].values, operations);
        let entry = |operation: &str, severity: &str| {
            let mut e = crate::transfer::logs::failure_entry(
                "p",
                "transferJobs/j",
                operation,
                "COPY",
                ("s", "d"),
                "o",
                ("NOT_FOUND", "gone"),
                "2026-01-01T00:00:00Z",
                "1",
            );
            e["severity"] = Value::String(severity.into());
            e
        };
        assert!(matches(
            &conditions,
            &entry("transferOperations/b \"q\"", "ERROR")
        ));
        assert!(matches(
            &conditions,
            &entry("transferOperations/a", "CRITICAL")
        ));
        assert!(!matches(
            &conditions,
            &entry("transferOperations/c", "ERROR")
        ));
        assert!(!matches(
            &conditions,
            &entry("transferOperations/a", "INFO")
        ));
    }

    #[test]
    fn what_the_emulator_cannot_filter_is_refused_by_name() {
        assert!(parse_filter("a=1 OR b=2").unwrap_err().contains("AND only"));
        assert!(parse_filter("a!=1").unwrap_err().contains("'!='"));
        assert!(parse_filter("a=(\"x\" \"y\")").is_err());
        assert!(parse_filter("").unwrap().is_empty());
    }
}
