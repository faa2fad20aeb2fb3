//! The rules an include prefix must meet, shared by the prefix loader (which
//! refuses a bad file before writing anything) and the local engine (which
//! refuses what STS refuses). Pure functions over strings.

/// STS refuses include prefixes longer than this.
pub const MAX_PREFIX_BYTES: usize = 1024;
/// STS allows at most this many include prefixes in one job.
pub const MAX_PREFIXES_PER_JOB: usize = 1000;

/// Why one prefix cannot be used.
pub fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("empty prefix (it would copy the whole bucket)".into());
    }
    if let Some(c) = prefix.chars().find(|c| matches!(c, '\0' | '\r' | '\n')) {
        let shown = match c {
            '\0' => "a NUL byte",
            '\r' => "a carriage return (CR)",
            _ => "a line feed (LF)",
        };
        return Some(format!(
            "{} contains {shown}; Cloud Storage object names cannot hold it",
            shown_prefix(prefix)
        ));
    }
    if prefix.starts_with('/') {
        return Some(format!(
            "{} starts with '/' (STS refuses it)",
            shown_prefix(prefix)
        ));
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Some(format!(
            "prefix is {} bytes; STS allows at most {MAX_PREFIX_BYTES}",
            prefix.len()
        ));
    }
    None
}

/// A prefix quoted for a message: `'logs/'`, or with control characters
/// escaped (`"a\0x/"`) so the message shows what the file holds.
pub fn shown_prefix(prefix: &str) -> String {
    if prefix.chars().any(char::is_control) {
        format!("{prefix:?}")
    } else {
        format!("'{prefix}'")
    }
}

/// Pairs `(shorter, longer)` where `shorter` is a prefix of `longer`: the
/// objects under `longer` would be copied by both. Sorted order puts every
/// such pair's members next to a run of entries all starting with the
/// shorter one, so this is O(n log n) plus the pairs found.
pub fn overlapping_pairs<'a>(prefixes: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut sorted: Vec<&str> = prefixes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut pairs = Vec::new();
    // Open "ancestors": earlier entries that later ones may start with.
    let mut stack: Vec<&str> = Vec::new();
    for p in sorted {
        while stack.last().is_some_and(|top| !p.starts_with(top)) {
            stack.pop();
        }
        if let Some(top) = stack.last() {
            pairs.push((*top, p));
        }
        stack.push(p);
    }
    pairs
}

/// STS's rules for the include prefixes of one job.
pub fn include_prefixes_problem(prefixes: &[String]) -> Option<String> {
    if prefixes.len() > MAX_PREFIXES_PER_JOB {
        return Some(format!(
            "{} include prefixes; STS allows at most {MAX_PREFIXES_PER_JOB} per job",
            prefixes.len()
        ));
    }
    if let Some(problem) = prefixes.iter().find_map(|p| prefix_problem(p)) {
        return Some(problem);
    }
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    overlapping_pairs(&refs).first().map(|(a, b)| {
        format!(
            "include prefix {} is a prefix of {} (STS refuses overlapping include prefixes)",
            shown_prefix(a),
            shown_prefix(b)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_leading_slash_and_length_are_refused() {
        for bad in ["", "a\0x/", "a\rb", "a\nb", "/logs", &"x".repeat(1025)] {
            assert!(prefix_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["a", "logs/2019/", "ü/日本/", &"x".repeat(1024)] {
            assert_eq!(prefix_problem(good), None, "{good:?} refused");
        }
        let nul = prefix_problem("a\0x/").unwrap();
        assert!(nul.contains("NUL") && nul.contains("\\0"), "{nul}");
    }

    #[test]
    fn overlaps_are_found_with_both_names() {
        assert_eq!(
            overlapping_pairs(&["a/b/", "b/", "a/", "a/c"]),
            vec![("a/", "a/b/"), ("a/", "a/c")]
        );
        assert_eq!(overlapping_pairs(&["a/", "ab/", "b"]), vec![]);
        // A chain reports each member against its nearest ancestor.
        assert_eq!(
            overlapping_pairs(&["a", "ab", "abc", "b"]),
            vec![("a", "ab"), ("ab", "abc")]
        );
    }

    #[test]
    fn a_job_with_overlapping_prefixes_is_refused() {
        let job = vec!["a/".to_string(), "a/b/".to_string()];
        assert!(include_prefixes_problem(&job).unwrap().contains("'a/'"));
        assert_eq!(include_prefixes_problem(&["a/".into(), "b/".into()]), None);
        let many: Vec<String> = (0..1001).map(|i| format!("p{i:05}/")).collect();
        assert!(include_prefixes_problem(&many).is_some());
    }
}
