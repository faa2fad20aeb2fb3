//! Logs on stderr: plain text, or with `LOG_FORMAT=json` one JSON object per
//! line as Cloud Logging reads it from containers and the logging agent
//! (`severity`, `message`, `time`, then the event's fields). `LOGLEVEL`
//! picks the level, as in the original.

use std::fmt;
use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys Cloud Logging gives a meaning to; an event field with one of these
/// names is written as `field.NAME` so it cannot pose as one.
const RESERVED: &[&str] = &["severity", "message", "time", "target"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `LOG_FORMAT=json` (any case) is JSON; anything else is text.
    pub fn from_env() -> Format {
        Format::parse(std::env::var("LOG_FORMAT").ok().as_deref())
    }

    pub fn parse(value: Option<&str>) -> Format {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// LOGLEVEL's names (Python's, as in the original, and tracing's).
pub fn level(value: Option<&str>) -> Level {
    match value
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase()
        .as_str()
    {
        "TRACE" => Level::TRACE,
        "DEBUG" => Level::DEBUG,
        "WARNING" | "WARN" => Level::WARN,
        "ERROR" | "CRITICAL" => Level::ERROR,
        _ => Level::INFO,
    }
}

/// Cloud Logging's LogSeverity name for a level.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// Starts logging to stderr at LOGLEVEL in LOG_FORMAT. A second call (a
/// notebook re-running a cell) keeps the first subscriber.
pub fn init() {
    let level = level(std::env::var("LOGLEVEL").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    let _ = match Format::from_env() {
        Format::Json => builder.event_format(JsonLines).try_init(),
        Format::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
    };
}

/// One entry as a JSON line: the reserved keys first, then `fields`.
pub fn json_line(
    severity: &str,
    message: &str,
    target: Option<&str>,
    fields: Map<String, Value>,
) -> String {
    let mut entry = Map::new();
    entry.insert("severity".into(), severity.into());
    entry.insert("message".into(), message.into());
    entry.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    if let Some(target) = target {
        entry.insert("target".into(), target.into());
    }
    for (key, value) in fields {
        let key = if RESERVED.contains(&key.as_str()) {
            format!("field.{key}")
        } else {
            key
        };
        entry.insert(key, value);
    }
    // A Map of strings and JSON values always serialises.
    serde_json::to_string(&Value::Object(entry)).unwrap_or_default()
}

/// Writes a line a tool reports on stderr (its final error, say) in the
/// log format, so that with JSON logs every stderr line is JSON.
pub fn report(severity: &str, message: &str) {
    let line = match Format::from_env() {
        Format::Json => json_line(severity, message, None, Map::new()),
        Format::Text => message.to_string(),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The JSON event format.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let line = json_line(
            severity(metadata.level()),
            &fields.message,
            Some(metadata.target()),
            fields.values,
        );
        writeln!(writer, "{line}")
    }
}

/// An event's message and its other fields as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    values: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.values.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the subscriber under test writes into.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_become_cloud_logging_json_lines() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || sink.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(prefix = %"logs/2019/", count = 3_u64, ok = false, "stalled \"job\"\nsecond line");
            tracing::error!(severity = "spoof", "failed");
            tracing::debug!(ratio = 0.5, "debug");
            tracing::trace!("not written at DEBUG");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["message"], "stalled \"job\"\nsecond line");
        assert_eq!(lines[0]["prefix"], "logs/2019/");
        assert_eq!(lines[0]["count"], 3);
        assert_eq!(lines[0]["ok"], false);
        let time = lines[0]["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(lines[1]["severity"], "ERROR");
        assert_eq!(lines[1]["field.severity"], "spoof");
        assert_eq!(lines[2]["severity"], "DEBUG");
        assert_eq!(lines[2]["ratio"], 0.5);
    }

    #[test]
    fn level_and_format_names() {
        assert_eq!(level(Some("warning")), Level::WARN);
        assert_eq!(level(Some("CRITICAL")), Level::ERROR);
        assert_eq!(level(None), Level::INFO);
        assert_eq!(level(Some("nonsense")), Level::INFO);
        assert_eq!(Format::parse(Some("JSON")), Format::Json);
        assert_eq!(Format::parse(Some("text")), Format::Text);
        assert_eq!(Format::parse(None), Format::Text);
        let line: Value = serde_json::from_str(&json_line("ERROR", "x", None, Map::new())).unwrap();
        assert_eq!(
            (line["severity"].as_str(), line["message"].as_str()),
            (Some("ERROR"), Some("x"))
        );
    }
}
