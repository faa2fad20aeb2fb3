//! Prefix lists handed to the tools (a JSON file, or a list in memory from
//! Python): every entry a prefix STS accepts, none repeated, none a prefix
//! of another unless allowed. Checked whole before anything is written.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads a prefix file: a JSON array of distinct, non-empty strings STS
/// accepts as include prefixes. Any problem names the entry.
pub fn read_prefix_file(path: &Path, allow_overlapping: bool) -> Result<Vec<String>> {
    let shown = path.display();
    let body = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("prefix file {shown}: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| Error::Input(format!("prefix file {shown} is not valid JSON: {e}")))?;
    let serde_json::Value::Array(items) = value else {
        return Err(Error::Input(format!(
            "prefix file {shown} must hold a JSON array of strings"
        )));
    };
    prefix_list(items, &format!("prefix file {shown}"), allow_overlapping)
}

/// A list of prefixes (from a file or handed over in memory, called
/// `origin` in errors) as strings, checked with [`check_prefixes`]. A
/// problem with one entry is an [`Error::BadEntry`] naming its index.
pub fn prefix_list(
    items: Vec<serde_json::Value>,
    origin: &str,
    allow_overlapping: bool,
) -> Result<Vec<String>> {
    let mut prefixes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let serde_json::Value::String(prefix) = item else {
            return Err(Error::BadEntry {
                origin: origin.to_string(),
                entry: index,
                problem: format!("{item} is not a string"),
            });
        };
        prefixes.push(prefix);
    }
    check_prefixes(&prefixes, allow_overlapping).map_err(|p| p.into_error(origin))?;
    Ok(prefixes)
}

/// What is wrong with a list of prefixes; `entry` when one entry is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListProblem {
    pub entry: Option<usize>,
    pub problem: String,
}

impl std::fmt::Display for ListProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(index) => write!(f, "entry {index}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl ListProblem {
    fn into_error(self, origin: &str) -> Error {
        match self.entry {
            Some(entry) => Error::BadEntry {
                origin: origin.to_string(),
                entry,
                problem: self.problem,
            },
            None => Error::Input(format!("{origin}, {}", self.problem)),
        }
    }
}

/// Every prefix usable by STS, none repeated, and (unless allowed) none a
/// prefix of another: their common objects would be copied twice. The
/// problem names the entry by its position.
pub fn check_prefixes(prefixes: &[String], allow_overlapping: bool) -> Result<(), ListProblem> {
    let mut seen = HashSet::with_capacity(prefixes.len());
    for (index, prefix) in prefixes.iter().enumerate() {
        if let Some(problem) = crate::prefixes::prefix_problem(prefix) {
            return Err(ListProblem {
                entry: Some(index),
                problem: problem.to_string(),
            });
        }
        if !seen.insert(prefix.as_str()) {
            return Err(ListProblem {
                entry: Some(index),
                problem: format!("{} appears twice", crate::prefixes::shown_prefix(prefix)),
            });
        }
    }
    if !allow_overlapping {
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        overlap_error(&refs).map_err(|problem| ListProblem {
            entry: None,
            problem,
        })?;
    }
    Ok(())
}

pub fn overlap_error(prefixes: &[&str]) -> std::result::Result<(), String> {
    let pairs = crate::prefixes::overlapping_pairs(prefixes);
    let Some((shorter, longer)) = pairs.first() else {
        return Ok(());
    };
    Err(format!(
        "{} is a prefix of {} ({} overlapping pairs in all): the objects under {} would be \
         copied by both jobs. Remove one, or pass --allow-overlapping-prefixes",
        crate::prefixes::shown_prefix(shorter),
        crate::prefixes::shown_prefix(longer),
        pairs.len(),
        crate::prefixes::shown_prefix(longer),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    #[test]
    fn prefix_files_are_checked_entry_by_entry() {
        assert_eq!(
            read_prefix_file(file(r#"["a/", "b/"]"#).path(), false).unwrap(),
            ["a/", "b/"]
        );
        let long = format!("[\"{}\"]", "x".repeat(1025));
        for (body, expected) in [
            ("{\"a\": 1}", "JSON array"),
            ("[\"a/\", 3]", "entry 1"),
            ("[\"a/\", \"\"]", "empty prefix"),
            ("[\"a/\", \"a/\"]", "appears twice"),
            ("[\"/abs\"]", "starts with '/'"),
            (long.as_str(), "at most 1024"),
            ("[\"a/\"", "not valid JSON"),
            (
                "[\"ok/\", \"a\\u0000x/\"]",
                "entry 1: \"a\\0x/\" contains a NUL byte",
            ),
            ("[\"a\\rb/\"]", "carriage return"),
            ("[\"a\\nb/\"]", "line feed"),
            ("[\"a/b/\", \"c/\", \"a/\"]", "'a/' is a prefix of 'a/b/'"),
        ] {
            let err = read_prefix_file(file(body).path(), false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        // Overlaps are a choice the user may make.
        assert_eq!(
            read_prefix_file(file(r#"["a/", "a/b/"]"#).path(), true).unwrap(),
            ["a/", "a/b/"]
        );
    }

    proptest::proptest! {
        /// Any JSON array of any strings is loaded or refused, never a
        /// panic; what is loaded meets every rule.
        #[test]
        fn the_prefix_loader_never_panics(
            entries in proptest::collection::vec("\\PC{0,6}|[a\r\n\u{0}/]{0,4}", 0..8),
            allow in proptest::bool::ANY,
        ) {
            let body = serde_json::to_string(&entries).unwrap();
            if let Ok(loaded) = read_prefix_file(file(&body).path(), allow) {
                proptest::prop_assert_eq!(&loaded, &entries);
                for p in &loaded {
                    proptest::prop_assert!(crate::prefixes::prefix_problem(p).is_none());
                }
                if !allow {
                    let refs: Vec<&str> = loaded.iter().map(String::as_str).collect();
                    proptest::prop_assert!(crate::prefixes::overlapping_pairs(&refs).is_empty());
                }
            }
        }
    }
}
