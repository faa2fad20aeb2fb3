//! Every option of the tools (SPEC 4), read from command-line arguments,
//! from a JSON `--config-path` file (whose values win) or from key/value pairs
//! (the Python API), then validated once.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::storage::validate_bucket_name;

mod specs;
pub use specs::*;
use specs::{canonical, in_groups};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    #[error("option '--{key}': {problem}")]
    InvalidValue { key: String, problem: String },
    #[error("config file {path}: {problem}")]
    ConfigFile { path: String, problem: String },
    #[error("{0}")]
    Invalid(String),
    /// The command line does not parse (clap's message on one line).
    #[error("{0}")]
    Usage(String),
}

impl OptionsError {
    /// The option at fault, without dashes, when one is named.
    pub fn option(&self) -> Option<&str> {
        match self {
            OptionsError::UnknownOption(key) | OptionsError::InvalidValue { key, .. } => {
                Some(key.trim_start_matches('-'))
            }
            _ => None,
        }
    }
}

/// A JSON object's entries in file order, repeats kept.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of options")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Where the job and history tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    BigQuery,
    Sqlite(PathBuf),
}

/// Which transfer service runs the jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferLocation {
    Sts,
    Local(PathBuf),
}

/// Every option, once: its field, flag, kind, default and help. The
/// `Options` struct, its `Default`, the `SPECS` table `--help` and parsing
/// read, and `set` are made from this one list; a new option is one entry
/// here and a place in one group (`specs.rs`).
macro_rules! options_table {
    ($( $field:ident, $flag:literal, $kind:ident, $default:expr, $help:literal; )*) => {
        /// Every option's value, named like its flag (`max_concurrent_jobs`
        /// for `--max-concurrent-jobs`).
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Options {
            $( pub $field: options_table!(@type $kind), )*
        }

        impl Default for Options {
            fn default() -> Self {
                Options { $( $field: $default, )* }
            }
        }

        /// Every option's flag, kind and help (defaults: `Options::default()`).
        pub const SPECS: &[OptionSpec] = &[
            $( OptionSpec { name: $flag, kind: Kind::$kind, help: $help }, )*
        ];

        impl Options {
            /// Sets one option by its flag name, its value read by its kind.
            fn set_flag(&mut self, name: &'static str, value: &Value) -> Result<(), OptionsError> {
                match name {
                    $( $flag => self.$field = options_table!(@read $kind, name, value)?, )*
                    other => return Err(OptionsError::UnknownOption(other.to_string())),
                }
                Ok(())
            }
        }
    };
    (@type Text) => { String };
    (@type OptionalText) => { Option<String> };
    (@type Seconds) => { f64 };
    (@type Count) => { u32 };
    (@type Flag) => { bool };
    (@read Text, $name:ident, $value:ident) => { text($name, $value) };
    (@read OptionalText, $name:ident, $value:ident) => { optional_text($name, $value) };
    (@read Seconds, $name:ident, $value:ident) => { seconds($name, $value) };
    (@read Count, $name:ident, $value:ident) => { count($name, $value) };
    (@read Flag, $name:ident, $value:ident) => { flag($name, $value) };
}

#[rustfmt::skip]
options_table! {
    dataset, "dataset", Text, "data_migration".into(),
        "The name of the dataset to create and use";
    dataset_location, "dataset-location", Text, "US".into(),
        "The location of the dataset";
    job_table, "job-table", Text, "sts_job".into(),
        "Name of the job table";
    job_history_table, "job-history-table", Text, "sts_job_history".into(),
        "Name of the job history table";
    config_path, "config-path", OptionalText, None,
        "A JSON object of options (keys with dashes or underscores); its values win; keys of\nother tools' options are ignored";
    source_bucket, "source-bucket", Text, "migration-source".into(),
        "The source bucket to transfer data from";
    destination_bucket, "destination-bucket", Text, "migration-destination".into(),
        "The destination bucket to transfer data to";
    job_interval, "job-interval", Seconds, 1200.0,
        "Seconds between rounds that start new jobs; must be >= --sleep-timeout";
    metrics_interval, "metrics-interval", Seconds, 300.0,
        "Seconds between state syncs; must be >= --sleep-timeout";
    max_concurrent_jobs, "max-concurrent-jobs", Count, 20,
        "The most jobs allowed to run at once";
    no_retry_on_job_error, "no-retry-on-job-error", Flag, false,
        "Do not restart prefixes whose job failed";
    allow_new_jobs_when_stalled, "allow-new-jobs-when-stalled", Flag, false,
        "Stalled jobs do not count as running when deciding how many jobs to start\n(also spelt --allow-new-jobs-on-stalled)";
    publish_heartbeat, "publish-heartbeat", Flag, false,
        "Publish status counts to Cloud Monitoring every iteration";
    stackdriver_project, "stackdriver-project", OptionalText, None,
        "Project for the heartbeat [default: the manager's project]";
    overwrite_dest_objects, "overwrite-dest-objects", Flag, false,
        "New jobs overwrite objects already in the destination";
    sleep_timeout, "sleep-timeout", Seconds, 60.0,
        "Seconds between loop iterations";
    state, "state", Text, "bigquery".into(),
        "Where state is kept: 'bigquery' or 'sqlite:PATH'";
    transfer, "transfer", Text, "sts".into(),
        "Transfer backend: 'sts' or 'local:ROOT' where each bucket is a directory";
    project, "project", OptionalText, None,
        "Google Cloud project [default: GOOGLE_CLOUD_PROJECT, else the credentials' project]";
    exit_when_done, "exit-when-done", Flag, false,
        "Stop once no prefix is pending or running";
    job_prefix_source_file, "job-prefix-source-file", OptionalText, None,
        "A JSON array of prefixes: loaded into the job table as 'waiting' (sts-prepare-tables),\nor put back to 'waiting' (sts-requeue)";
    start_timeout, "start-timeout", Seconds, 1800.0,
        "Seconds a started job may show no operation before it is run again";
    lease_seconds, "lease-seconds", Seconds, 300.0,
        "How long the manager's hold on the job table lasts without renewal; a second\nmanager waits it out";
    max_retries, "max-retries", Count, 3,
        "Times a failed prefix is started again, each after a longer wait (1, 2, 4, ... job\nintervals); past it the prefix stays 'error' until requeued";
    allow_overlapping_prefixes, "allow-overlapping-prefixes", Flag, false,
        "Load prefixes even when one is a prefix of another (their common objects are then\ncopied twice)";
    no_object_logs, "no-object-logs", Flag, false,
        "Jobs log no failed object to Cloud Logging, and the manager reads none into the\nfailed-objects table (by default every failed copy is logged and read)";
    no_job_reuse, "no-job-reuse", Flag, false,
        "Create one transfer job per prefix (the original's way) instead of reusing a pool of\njobs, patched and run for each start; STS allows 5,000 creates a day";
    stall_after, "stall-after", Seconds, 600.0,
        "Seconds with no counter moving after which a running prefix is stalled (STS refreshes\ncounters only now and then: minutes, not one sync)";
    preserve, "preserve", OptionalText, None,
        "Object metadata every transfer keeps (metadataOptions), comma-separated: storage-class,\nacl, kms-key, temporary-hold, time-created (the source's timeCreated as the copy's\ncustomTime); sts-verify then compares those fields (all but acl)";
    r#move, "move", Flag, false,
        "Delete each object from the source once it is copied (deleteObjectsFromSourceAfterTransfer);\nnever with --delete-unique-in-destination. sts-verify: check that nothing copied is\nleft in the source";
    reconcile_interval, "reconcile-interval", Seconds, 86400.0,
        "Seconds between full reconciles, which list every transfer operation of the project to\nsee those started or deleted outside the manager";
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `--help` or `--version`: print this to stdout and exit 0.
    Print(String),
    Run(Box<Options>),
}

fn invalid(key: &str, problem: impl Into<String>) -> OptionsError {
    OptionsError::InvalidValue {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn seconds(key: &str, value: &Value) -> Result<f64, OptionsError> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(key, format!("expected a number of seconds, got {value}")))?;
    if !number.is_finite() || number < 0.0 {
        return Err(invalid(
            key,
            format!("must be a non-negative number of seconds, got {number}"),
        ));
    }
    // Every duration becomes a std/chrono duration somewhere: keep it far
    // from their limits rather than overflow.
    if number > MAX_SECONDS {
        return Err(invalid(
            key,
            format!("{number} s is more than {MAX_SECONDS} s (ten years)"),
        ));
    }
    Ok(number)
}

pub use crate::model::MAX_SECONDS;

fn count(key: &str, value: &Value) -> Result<u32, OptionsError> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(key, format!("expected a whole number, got {value}")))?;
    u32::try_from(number).map_err(|_| invalid(key, format!("{number} is too large")))
}

fn flag(key: &str, value: &Value) -> Result<bool, OptionsError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(invalid(key, format!("expected true or false, got {other}"))),
    }
}

fn text(key: &str, value: &Value) -> Result<String, OptionsError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(key, format!("expected a string, got {other}"))),
    }
}

fn optional_text(key: &str, value: &Value) -> Result<Option<String>, OptionsError> {
    match value {
        Value::Null => Ok(None),
        other => text(key, other).map(Some),
    }
}

impl Options {
    /// Sets one option by name (dashes or underscores, leading dashes allowed).
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), OptionsError> {
        self.set_flag(canonical(key)?, value)
    }

    /// Parses one tool's command-line arguments (without the program name)
    /// against `command(program, about, groups)`, applies the config file if
    /// one is named (keys of options outside `groups` are ignored there) and
    /// validates what the tool uses.
    pub fn from_args<S: AsRef<str>>(
        program: &'static str,
        about: &'static str,
        groups: &[&OptionGroup],
        args: &[S],
    ) -> Result<Command, OptionsError> {
        use clap::error::ErrorKind;
        let argv = std::iter::once(program).chain(args.iter().map(AsRef::as_ref));
        let matches = match command(program, about, groups).try_get_matches_from(argv) {
            Ok(matches) => matches,
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                return Ok(Command::Print(e.render().to_string()));
            }
            Err(e) => return Err(OptionsError::Usage(one_line(&e))),
        };
        Ok(Command::Run(Box::new(Options::from_matches(
            &matches, groups,
        )?)))
    }

    /// The options of `groups` from parsed arguments (of [`command`], to
    /// which a tool may have added flags of its own), then the config file
    /// if one is named (keys of options outside `groups` are ignored there),
    /// then the checks of what the tool uses.
    pub fn from_matches(
        matches: &clap::ArgMatches,
        groups: &[&OptionGroup],
    ) -> Result<Options, OptionsError> {
        let mut options = Options::default();
        for group in groups {
            for &name in group.options {
                if matches.value_source(name) != Some(clap::parser::ValueSource::CommandLine) {
                    continue;
                }
                let value = match SPECS.iter().find(|s| s.name == name).map(|s| s.kind) {
                    Some(Kind::Flag) => Value::Bool(matches.get_flag(name)),
                    _ => match matches.get_one::<String>(name) {
                        Some(v) => Value::String(v.clone()),
                        None => continue,
                    },
                };
                options.set(name, &value)?;
            }
        }
        let scope = |name: &str| in_groups(groups, name);
        options.apply_config_file(&scope)?;
        options.validate_for(&scope)?;
        Ok(options)
    }

    /// Builds options from key/value pairs (the Python API, where one
    /// `Options` serves every tool), then the config file if one is named,
    /// then validates all of them.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<Options, OptionsError> {
        let mut options = Options::default();
        for (key, value) in pairs {
            options.set(key, &value)?;
        }
        options.apply_config_file(&|_| true)?;
        options.validate()?;
        Ok(options)
    }

    /// Applies the config file's entries for the options `uses` accepts; a
    /// key that is no option at all is an error, one of another tool's
    /// options is skipped (one file can serve every tool).
    fn apply_config_file(&mut self, uses: &dyn Fn(&str) -> bool) -> Result<(), OptionsError> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let problem = |problem: String| OptionsError::ConfigFile {
            path: path.clone(),
            problem,
        };
        let body = std::fs::read_to_string(&path).map_err(|e| problem(e.to_string()))?;
        let value: Value =
            serde_json::from_str(&body).map_err(|e| problem(format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(problem("must hold a JSON object of options".into()));
        }
        // serde_json keeps the last of repeated keys: read the entries in
        // order so a repeat is refused, not silently resolved.
        let entries: Entries =
            serde_json::from_str(&body).map_err(|e| problem(format!("not valid JSON: {e}")))?;
        let mut seen: std::collections::HashMap<&'static str, &str> = Default::default();
        for (key, value) in &entries.0 {
            let name = canonical(key).map_err(|e| problem(e.to_string()))?;
            if name == "config-path" {
                return Err(problem("may not name another config-path".into()));
            }
            if let Some(first) = seen.insert(name, key) {
                return Err(problem(if first == key {
                    format!("key '{key}' appears twice")
                } else {
                    format!("option '{name}' is given twice, as '{first}' and as '{key}'")
                }));
            }
            if uses(name) {
                self.set(key, value).map_err(|e| problem(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Checks every rule.
    pub fn validate(&self) -> Result<(), OptionsError> {
        self.validate_for(&|_| true)
    }

    /// Checks the rules about the options `uses` accepts (a tool that has
    /// no loop is not held to the loop's intervals).
    pub fn validate_for(&self, uses: &dyn Fn(&str) -> bool) -> Result<(), OptionsError> {
        if uses("sleep-timeout") {
            for (name, interval) in [
                ("job-interval", self.job_interval),
                ("metrics-interval", self.metrics_interval),
            ] {
                if interval < self.sleep_timeout {
                    return Err(invalid(
                        name,
                        format!(
                            "{interval} s is shorter than --sleep-timeout ({} s)",
                            self.sleep_timeout
                        ),
                    ));
                }
            }
        }
        // The lease is renewed once per iteration, so it must outlast one.
        if uses("lease-seconds")
            && (self.lease_seconds < 2.0 * self.sleep_timeout || self.lease_seconds <= 0.0)
        {
            return Err(invalid(
                "lease-seconds",
                format!(
                    "{} s must be positive and at least twice --sleep-timeout ({} s)",
                    self.lease_seconds, self.sleep_timeout
                ),
            ));
        }
        if uses("start-timeout") && self.start_timeout <= 0.0 {
            return Err(invalid(
                "start-timeout",
                "must be a positive number of seconds",
            ));
        }
        if uses("max-concurrent-jobs") && self.max_concurrent_jobs == 0 {
            return Err(invalid("max-concurrent-jobs", "must be at least 1"));
        }
        if uses("source-bucket") {
            for (name, bucket) in [
                ("source-bucket", &self.source_bucket),
                ("destination-bucket", &self.destination_bucket),
            ] {
                validate_bucket_name(bucket).map_err(|problem| invalid(name, problem))?;
            }
            if self.source_bucket == self.destination_bucket {
                return Err(OptionsError::Invalid(
                    "--source-bucket and --destination-bucket must differ".into(),
                ));
            }
        }
        if uses("preserve") {
            self.preserve_fields()?;
        }
        if uses("state") {
            self.state_location()?;
        }
        if uses("transfer") {
            self.transfer_location()?;
        }
        Ok(())
    }

    /// The metadata `--preserve` names (none when it is not given).
    pub fn preserve_fields(&self) -> Result<crate::metadata::Preserve, OptionsError> {
        crate::metadata::Preserve::parse(self.preserve.as_deref().unwrap_or_default())
            .map_err(|problem| invalid("preserve", problem))
    }

    pub fn state_location(&self) -> Result<StateLocation, OptionsError> {
        if self.state == "bigquery" {
            return Ok(StateLocation::BigQuery);
        }
        match url_path(&self.state, "sqlite") {
            Some(path) => Ok(StateLocation::Sqlite(path)),
            None => Err(invalid(
                "state",
                format!("'{}' is neither 'bigquery' nor 'sqlite:PATH'", self.state),
            )),
        }
    }

    pub fn transfer_location(&self) -> Result<TransferLocation, OptionsError> {
        if self.transfer == "sts" {
            return Ok(TransferLocation::Sts);
        }
        match url_path(&self.transfer, "local") {
            Some(path) => Ok(TransferLocation::Local(path)),
            None => Err(invalid(
                "transfer",
                format!("'{}' is neither 'sts' nor 'local:ROOT'", self.transfer),
            )),
        }
    }

    /// The project named by `--project`, else GOOGLE_CLOUD_PROJECT.
    pub fn project_id(&self) -> Option<String> {
        self.project
            .clone()
            .or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok())
            .filter(|p| !p.is_empty())
    }
}

/// `scheme:PATH`, `scheme://PATH` or `scheme:///abs/path` -> the path.
fn url_path(text: &str, scheme: &str) -> Option<PathBuf> {
    let rest = text.strip_prefix(scheme)?.strip_prefix(':')?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    (!path.is_empty()).then(|| Path::new(path).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tool that takes every option.
    fn run(args: &[&str]) -> Result<Options, OptionsError> {
        match Options::from_args("sts-test", "A test tool.", GROUPS, args)? {
            Command::Run(options) => Ok(*options),
            Command::Print(text) => panic!("unexpected help: {text}"),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let o = run(&[]).unwrap();
        assert_eq!(o.dataset, "data_migration");
        assert_eq!(o.dataset_location, "US");
        assert_eq!(o.job_table, "sts_job");
        assert_eq!(o.job_history_table, "sts_job_history");
        assert_eq!(o.source_bucket, "migration-source");
        assert_eq!(o.destination_bucket, "migration-destination");
        assert_eq!(o.job_interval, 1200.0);
        assert_eq!(o.metrics_interval, 300.0);
        assert_eq!(o.max_concurrent_jobs, 20);
        assert_eq!(o.sleep_timeout, 60.0);
        assert!(!o.no_retry_on_job_error && !o.allow_new_jobs_when_stalled);
        assert!(!o.publish_heartbeat && !o.overwrite_dest_objects && !o.exit_when_done);
        assert_eq!(o.state_location().unwrap(), StateLocation::BigQuery);
        assert_eq!(o.transfer_location().unwrap(), TransferLocation::Sts);
    }

    #[test]
    fn flags_values_and_aliases_parse() {
        let o = run(&[
            "--max-concurrent-jobs",
            "5",
            "--sleep-timeout=2",
            "--job-interval",
            "3",
            "--metrics-interval",
            "2.5",
            "--allow-new-jobs-on-stalled",
            "--no-retry-on-job-error",
            "--state",
            "sqlite:state.db",
            "--transfer",
            "local:///tmp/buckets",
            "--exit-when-done",
        ])
        .unwrap();
        assert_eq!(o.max_concurrent_jobs, 5);
        assert_eq!(o.sleep_timeout, 2.0);
        assert_eq!(o.metrics_interval, 2.5);
        assert!(o.allow_new_jobs_when_stalled && o.no_retry_on_job_error && o.exit_when_done);
        assert_eq!(
            o.state_location().unwrap(),
            StateLocation::Sqlite("state.db".into())
        );
        assert_eq!(
            o.transfer_location().unwrap(),
            TransferLocation::Local("/tmp/buckets".into())
        );
        let help = Options::from_args("sts-test", "A test tool.", GROUPS, &["-h"]).unwrap();
        assert!(matches!(help, Command::Print(text) if text.contains("--sleep-timeout <N>")));
    }

    fn config(body: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(body.as_bytes()).unwrap();
        file
    }

    #[test]
    fn config_values_win_and_accept_both_spellings() {
        let file = config(
            r#"{"max_concurrent_jobs": 7, "source-bucket": "from-config", "overwrite_dest_objects": true}"#,
        );
        let path = file.path().to_str().unwrap();
        let o = run(&[
            "--config-path",
            path,
            "--max-concurrent-jobs",
            "3",
            "--source-bucket",
            "from-cli",
        ])
        .unwrap();
        assert_eq!(o.max_concurrent_jobs, 7);
        assert_eq!(o.source_bucket, "from-config");
        assert!(o.overwrite_dest_objects);
    }

    #[test]
    fn unknown_or_mistyped_config_keys_are_named() {
        let file = config(r#"{"max_concurent_jobs": 7}"#);
        let err = run(&["--config-path", file.path().to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("max_concurent_jobs"), "{err}");
        let file = config(r#"{"max-concurrent-jobs": "many"}"#);
        let err = run(&["--config-path", file.path().to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("max-concurrent-jobs"), "{err}");
        let file = config("[1, 2");
        let err = run(&["--config-path", file.path().to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = run(&["--bogus"]).unwrap_err();
        assert!(
            matches!(&err, OptionsError::Usage(m) if m.contains("'--bogus'")),
            "{err}"
        );
        let err = run(&["--dataset"]).unwrap_err();
        assert!(
            matches!(&err, OptionsError::Usage(m) if m.contains("--dataset <DATASET>")),
            "{err}"
        );
    }

    #[test]
    fn intervals_must_cover_the_sleep_timeout() {
        let err = run(&["--sleep-timeout", "400"]).unwrap_err();
        assert!(err.to_string().contains("metrics-interval"), "{err}");
        let err = run(&["--sleep-timeout", "10", "--job-interval", "5"]).unwrap_err();
        assert!(err.to_string().contains("job-interval"), "{err}");
        assert!(run(&["--sleep-timeout", "-1"]).is_err());
        assert!(run(&["--max-concurrent-jobs", "0"]).is_err());
    }

    #[test]
    fn backends_and_buckets_are_checked() {
        assert!(run(&["--state", "postgres://x"]).is_err());
        assert!(run(&["--transfer", "local:"]).is_err());
        assert!(run(&["--source-bucket", "Bad Bucket"]).is_err());
        assert!(run(&["--source-bucket", "same", "--destination-bucket", "same"]).is_err());
    }

    #[test]
    fn bucket_names_follow_cloud_storage_rules() {
        let refused = [
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("Upper", "not allowed"),
            ("has space", "not allowed"),
            ("-start", "start and end"),
            ("end-", "start and end"),
            ("a..b", "dot-separated"),
            ("192.168.1.1", "IP address"),
            ("goog-logs", "goog"),
            ("my-google-bucket", "google"),
            ("my-g00gle-bucket", "google"),
        ];
        for (name, why) in refused {
            let err = validate_bucket_name(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        let long_dotted = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        for name in [
            "abc",
            "logs_2019",
            "my.bucket.example",
            long_dotted.as_str(),
            "1.2.3.4.5",
        ] {
            assert_eq!(validate_bucket_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_config_file_may_not_repeat_an_option() {
        for (body, expected) in [
            (r#"{"job_table": "a", "job_table": "b"}"#, "appears twice"),
            (r#"{"job_table": "a", "job-table": "b"}"#, "given twice"),
            (
                r#"{"allow_new_jobs_on_stalled": true, "allow-new-jobs-when-stalled": true}"#,
                "given twice",
            ),
        ] {
            let file = config(body);
            let err = run(&["--config-path", file.path().to_str().unwrap()]).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn durations_too_large_are_refused_not_overflowed() {
        for huge in ["1e300", "18446744073709551616", "315360001"] {
            let err = run(&["--lease-seconds", huge]).unwrap_err();
            assert!(err.to_string().contains("ten years"), "{huge}: {err}");
        }
        assert!(run(&["--max-retries", "99999999999"]).is_err());
        let o = run(&["--max-retries", "0", "--reconcile-interval", "60"]).unwrap();
        assert_eq!((o.max_retries, o.reconcile_interval), (0, 60.0));
    }

    proptest::proptest! {
        /// No argument list makes the parser panic; what it accepts is valid.
        #[test]
        fn any_arguments_parse_or_fail_cleanly(
            args in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(
                        SPECS.iter().map(|s| format!("--{}", s.name)).collect::<Vec<_>>()
                    ),
                    proptest::strategy::Just("--allow-new-jobs-on-stalled".to_string()),
                    "-?[0-9]{0,25}(\\.[0-9]{0,5})?(e[0-9]{1,3})?",
                    "\\PC{0,12}",
                    proptest::strategy::Just("NaN".to_string()),
                    proptest::strategy::Just("inf".to_string()),
                ],
                0..12,
            )
        ) {
            if let Ok(Command::Run(options)) = Options::from_args("sts-test", "", GROUPS, &args) {
                proptest::prop_assert!(options.validate().is_ok());
                proptest::prop_assert!(options.lease_seconds <= MAX_SECONDS);
                // Durations the manager builds from them never panic.
                let _ = std::time::Duration::from_secs_f64(options.lease_seconds);
                let _ = std::time::Duration::from_secs_f64(options.start_timeout);
                let _ = std::time::Duration::from_secs_f64(options.reconcile_interval);
            }
        }
    }
}
