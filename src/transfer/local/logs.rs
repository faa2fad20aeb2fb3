//! The local engine's transfer logs: the entries STS writes to Cloud
//! Logging for failed objects (same log name, resource and payload,
//! `crate::transfer::logs::failure_entry`), kept in the engine's database
//! with the moment they become readable (`log_delay_seconds`). The
//! emulator serves them through `entries.list`; `--transfer local:ROOT`
//! reads them directly.

use async_trait::async_trait;
use rusqlite::{params, Connection};
use serde_json::Value;

use super::LocalEngine;
use crate::transfer::logs::{read_page, LogPage, LogsError, TransferLogs, PAGE_SIZE};

fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

/// Writes one entry, readable `delay` seconds from now.
pub(crate) fn write_entry(
    conn: &Connection,
    project: &str,
    operation: &str,
    delay: f64,
    entry: &Value,
) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO log_entries (project_id, operation, visible_at, body) VALUES (?1, ?2, ?3, ?4)",
        params![
            project,
            operation,
            now_seconds() + delay.max(0.0),
            entry.to_string()
        ],
    )?;
    Ok(())
}

impl LocalEngine {
    /// Readable entries of `project` after sequence number `after`, in the
    /// order written (with their sequence numbers), of these operations
    /// when named.
    pub fn log_entries(
        &self,
        project: &str,
        operations: Option<&[String]>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Value)>, String> {
        if super::Faults::load(&self.root.join(super::ENGINE_DIR)).withhold_logs {
            return Ok(Vec::new());
        }
        let conn = self.lock();
        let names = operations
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut statement = conn
            .prepare(
                "SELECT seq, body FROM log_entries WHERE project_id = ?1 AND seq > ?2
                    AND visible_at <= ?3
                    AND (?4 IS NULL OR operation IN (SELECT value FROM json_each(?4)))
                 ORDER BY seq LIMIT ?5",
            )
            .map_err(|e| e.to_string())?;
        let rows = statement
            .query_map(
                params![project, after, now_seconds(), names, limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row.map_err(|e| e.to_string())?;
            out.push((
                seq,
                serde_json::from_str(&body).map_err(|e| format!("log entry {seq}: {e}"))?,
            ));
        }
        Ok(out)
    }
}

/// `--transfer local:ROOT`: the engine's own entries, paged as
/// `entries.list` pages them (the token is the last sequence number read).
#[async_trait]
impl TransferLogs for LocalEngine {
    async fn failed_objects(
        &self,
        project: &str,
        operations: &[String],
        page_token: Option<&str>,
    ) -> Result<LogPage, LogsError> {
        let after = match page_token {
            None => 0,
            Some(token) => token
                .parse::<i64>()
                .map_err(|_| LogsError::Local(format!("page token '{token}' is not ours")))?,
        };
        let limit = PAGE_SIZE as usize;
        let entries = self
            .log_entries(project, Some(operations), after, limit)
            .map_err(LogsError::Local)?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|(seq, _)| seq.to_string()))
            .flatten();
        let reply = serde_json::json!({
            "entries": entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        });
        let mut page = read_page(&reply);
        page.next_page_token = next;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::local::{open_db, Mode, ENGINE_DIR};

    fn entry(operation: &str, object: &str) -> Value {
        crate::transfer::logs::failure_entry(
            "p",
            "transferJobs/j",
            operation,
            "COPY",
            ("src", "dst"),
            object,
            ("PERMISSION_DENIED", "denied"),
            "2026-01-01T00:00:00Z",
            object,
        )
    }

    #[tokio::test]
    async fn entries_are_readable_after_their_delay_unless_withheld() {
        let root = tempfile::tempdir().unwrap();
        let engine = LocalEngine::open(root.path(), Mode::Control).unwrap();
        let conn = open_db(root.path()).unwrap();
        write_entry(&conn, "p", "o/1", 0.0, &entry("o/1", "a/x, \"y\"")).unwrap();
        write_entry(&conn, "p", "o/1", 3600.0, &entry("o/1", "a/late")).unwrap();
        write_entry(&conn, "p", "o/2", 0.0, &entry("o/2", "b/z")).unwrap();
        write_entry(&conn, "other", "o/1", 0.0, &entry("o/1", "a/other")).unwrap();
        let page = engine
            .failed_objects("p", &["o/1".to_string()], None)
            .await
            .unwrap();
        let objects: Vec<&str> = page.failures.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(objects, ["a/x, \"y\""], "the late one is not readable yet");
        assert_eq!(page.next_page_token, None);
        // Withheld: nothing at all, however old.
        std::fs::write(
            root.path().join(ENGINE_DIR).join("faults.json"),
            r#"{"withhold_logs": true}"#,
        )
        .unwrap();
        let page = engine
            .failed_objects("p", &["o/1".to_string(), "o/2".to_string()], None)
            .await
            .unwrap();
        assert!(page.failures.is_empty());
        // A token that is not ours is refused by name.
        let refused = engine
            .failed_objects("p", &["o/1".to_string()], Some("x"))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("page token 'x'"), "{refused}");
    }
}
