//! Transfer manifests (`transferSpec.transferManifest`): a CSV file in Cloud
//! Storage listing the objects an operation transfers. The one writer (what
//! `sts-requeue --failed-objects` and `sts-verify --requeue --objects` upload)
//! and the one reader (what the local engine, and so the emulator, run).
//!
//! Storage Transfer's "Transfer specific files or objects using a manifest":
//! CSV, any UTF-8; the first column is the object name, relative to the
//! bucket and `path` of the source; an optional second column is the
//! object's generation; a name with a comma is enclosed in double quotes.
//! Silent there, and handled here: a header row (none is written; one read
//! is an object name like any other, and absent from the source it selects
//! nothing), quotes and line breaks inside names (RFC 4180 quoting), CRLF
//! line ends, blank lines (skipped).

use std::fmt::Write as _;

/// A manifest location `gs://BUCKET/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsLocation {
    pub bucket: String,
    /// The object name (a file) or folder (`PATH/`, may be empty) under it.
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("'{0}' is not a Cloud Storage location: expected gs://BUCKET/PATH/")]
    NotGcs(String),
    #[error("'{location}': {problem}")]
    BadLocation { location: String, problem: String },
    #[error("manifest line {line}: {problem}")]
    Csv { line: usize, problem: String },
    #[error("manifest line {line}: generation '{text}' is not a number")]
    Generation { line: usize, text: String },
}

impl GcsLocation {
    /// `gs://BUCKET/PATH` (a file) or, with `folder`, `gs://BUCKET/PATH/`
    /// (a folder for several manifests; a missing trailing `/` is added).
    pub fn parse(text: &str, folder: bool) -> Result<GcsLocation, ManifestError> {
        let rest = text
            .strip_prefix("gs://")
            .ok_or_else(|| ManifestError::NotGcs(text.to_string()))?;
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        let bad = |problem: String| ManifestError::BadLocation {
            location: text.to_string(),
            problem,
        };
        crate::storage::validate_bucket_name(bucket).map_err(bad)?;
        if path.contains(['\r', '\n']) || path.starts_with('/') || path.contains("//") {
            return Err(bad(
                "the path may not start with '/', hold '//' or a line break".into(),
            ));
        }
        let mut path = path.to_string();
        if folder && !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        if !folder && (path.is_empty() || path.ends_with('/')) {
            return Err(bad("it names a folder, not a manifest file".into()));
        }
        Ok(GcsLocation {
            bucket: bucket.to_string(),
            path,
        })
    }

    pub fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.path)
    }

    /// The location of a file `name` in this folder.
    pub fn join(&self, name: &str) -> GcsLocation {
        GcsLocation {
            bucket: self.bucket.clone(),
            path: format!("{}{name}", self.path),
        }
    }
}

/// One CSV field, quoted when it must be (a comma, a quote, a line break,
/// or space at either end that a reader might trim).
fn field(text: &str, into: &mut String) {
    let plain = !text.contains([',', '"', '\n', '\r'])
        && !text.starts_with(char::is_whitespace)
        && !text.ends_with(char::is_whitespace);
    if plain {
        into.push_str(text);
    } else {
        into.push('"');
        into.push_str(&text.replace('"', "\"\""));
        into.push('"');
    }
}

/// A manifest of these object names (one column, no header, `\n` line
/// ends), in the order given.
pub fn write_csv<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for name in names {
        field(name, &mut out);
        out.push('\n');
    }
    out
}

/// One entry of a manifest: an object name and, when given, its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub generation: Option<i64>,
}

/// Reads a manifest (RFC 4180: quoted fields may hold commas, doubled
/// quotes and line breaks). Blank lines are skipped; columns past the
/// second are ignored.
pub fn read_csv(text: &str) -> Result<Vec<Entry>, ManifestError> {
    let mut entries = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut quoted_field = false;
        loop {
            match chars.next() {
                None => break,
                Some('"') if current.is_empty() && !quoted_field => {
                    quoted_field = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(ManifestError::Csv {
                                    line: start_line,
                                    problem: "a quoted name is never closed".into(),
                                })
                            }
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                current.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                current.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',') | Some('\n') | Some('\r') => {}
                        Some(c) => {
                            return Err(ManifestError::Csv {
                                line,
                                problem: format!("{c:?} after a closing quote"),
                            })
                        }
                    }
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut current));
                    quoted_field = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    line += 1;
                    break;
                }
                Some(c) => current.push(c),
            }
        }
        let blank = fields.is_empty() && current.is_empty() && !quoted_field;
        fields.push(current);
        if blank {
            continue;
        }
        let mut fields = fields.into_iter();
        let name = fields.next().unwrap_or_default();
        let generation = match fields.next().map(|g| g.trim().to_string()) {
            None => None,
            Some(g) if g.is_empty() => None,
            Some(g) => Some(g.parse::<i64>().map_err(|_| ManifestError::Generation {
                line: start_line,
                text: g,
            })?),
        };
        if name.is_empty() {
            return Err(ManifestError::Csv {
                line: start_line,
                problem: "an empty object name".into(),
            });
        }
        entries.push(Entry { name, generation });
    }
    Ok(entries)
}

/// The file name of a prefix's manifest in the manifest folder: readable,
/// unique per prefix (a hash of it) and per requeue (the time), so a new
/// manifest never overwrites one an operation may still be reading.
pub fn file_name(prefix: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let mut readable = String::new();
    for c in prefix.chars().take(60) {
        readable.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        });
    }
    let hash = crc32c::crc32c(prefix.as_bytes());
    let mut name = String::new();
    let _ = write!(
        name,
        "sts-jm-{}-{readable}-{hash:08x}.csv",
        at.format("%Y%m%dT%H%M%S%3fZ")
    );
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_commas_quotes_spaces_and_line_breaks_round_trip() {
        let names = [
            "plain/a.txt",
            "doe,john.txt",
            "say \"hi\".txt",
            " leading and trailing ",
            "two\nlines",
            "crlf\r\nname",
            "ünïcödé/日本語.bin",
            "\"",
        ];
        let csv = write_csv(names.iter().copied());
        let read: Vec<String> = read_csv(&csv)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(read, names);
        assert!(csv.starts_with("plain/a.txt\n\"doe,john.txt\"\n\"say \"\"hi\"\".txt\"\n"));
    }

    #[test]
    fn generations_blank_lines_and_crlf_are_read() {
        let entries = read_csv("a,17\r\n\r\n\"b,c\",\nd\n").unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    name: "a".into(),
                    generation: Some(17)
                },
                Entry {
                    name: "b,c".into(),
                    generation: None
                },
                Entry {
                    name: "d".into(),
                    generation: None
                },
            ]
        );
        assert!(matches!(
            read_csv("a,x\n"),
            Err(ManifestError::Generation { line: 1, .. })
        ));
        assert!(matches!(
            read_csv("\"open\n"),
            Err(ManifestError::Csv { .. })
        ));
        assert!(matches!(
            read_csv("\"a\"b\n"),
            Err(ManifestError::Csv { .. })
        ));
    }

    #[test]
    fn locations_are_gs_urls() {
        let folder = GcsLocation::parse("gs://my-bucket/manifests", true).unwrap();
        assert_eq!(folder.path, "manifests/");
        assert_eq!(folder.join("x.csv").url(), "gs://my-bucket/manifests/x.csv");
        assert_eq!(GcsLocation::parse("gs://my-bucket", true).unwrap().path, "");
        assert!(matches!(
            GcsLocation::parse("s3://b/x/", true),
            Err(ManifestError::NotGcs(_))
        ));
        assert!(GcsLocation::parse("gs://UPPER/x/", true).is_err());
        assert!(GcsLocation::parse("gs://my-bucket/a//b/", true).is_err());
        assert!(GcsLocation::parse("gs://my-bucket/m/", false).is_err());
        let file = GcsLocation::parse("gs://my-bucket/m/a.csv", false).unwrap();
        assert_eq!(
            (file.bucket.as_str(), file.path.as_str()),
            ("my-bucket", "m/a.csv")
        );
    }

    #[test]
    fn file_names_differ_per_prefix() {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let a = file_name("logs/2019/", at);
        assert!(
            a.starts_with("sts-jm-19700101T000000000Z-logs_2019_-"),
            "{a}"
        );
        assert_ne!(a, file_name("logs_2019_", at));
    }
}
