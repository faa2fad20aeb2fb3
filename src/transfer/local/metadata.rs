//! Per-object metadata of the engine's buckets (storage class, KMS key
//! name, temporary hold, customTime, timeCreated): a file has none of
//! them, so they live beside the jobs in `ROOT/.sts-engine/engine.db`
//! (table `object_metadata`, one row per bucket and object that sets any).
//! An object with no row has the bucket's defaults and its file's
//! modification time as `timeCreated`. The engine writes a copy's row and
//! removes the row of an object it deletes; the emulator's control
//! endpoint (`POST /_emulator/objects`) sets a source object's.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::metadata::ObjectMetadata;

pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS object_metadata (
    bucket TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (bucket, name));";

/// Sets an object's metadata (an empty one removes its row).
pub fn save(
    conn: &Connection,
    bucket: &str,
    name: &str,
    metadata: &ObjectMetadata,
) -> Result<(), String> {
    if metadata.is_empty() {
        return remove(conn, bucket, name);
    }
    let body = serde_json::to_string(metadata).map_err(|e| e.to_string())?;
    conn.execute(
        "INSERT INTO object_metadata (bucket, name, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (bucket, name) DO UPDATE SET body = excluded.body",
        params![bucket, name, body],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Forgets an object's metadata (the object was deleted).
pub fn remove(conn: &Connection, bucket: &str, name: &str) -> Result<(), String> {
    conn.execute(
        "DELETE FROM object_metadata WHERE bucket = ?1 AND name = ?2",
        params![bucket, name],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One object's metadata (default when it has no row).
pub fn read(conn: &Connection, bucket: &str, name: &str) -> Result<ObjectMetadata, String> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM object_metadata WHERE bucket = ?1 AND name = ?2",
            params![bucket, name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    body.map(|b| decode(name, &b))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The metadata of the objects of `bucket` named from `first` to `last`
/// (one page of a listing), by name.
pub fn read_range(
    conn: &Connection,
    bucket: &str,
    first: &str,
    last: &str,
) -> Result<HashMap<String, ObjectMetadata>, String> {
    let mut statement = conn
        .prepare_cached(
            "SELECT name, body FROM object_metadata
             WHERE bucket = ?1 AND name >= ?2 AND name <= ?3",
        )
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map(params![bucket, first, last], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for row in rows {
        let (name, body) = row.map_err(|e| e.to_string())?;
        let metadata = decode(&name, &body)?;
        out.insert(name, metadata);
    }
    Ok(out)
}

fn decode(name: &str, body: &str) -> Result<ObjectMetadata, String> {
    serde_json::from_str(body).map_err(|e| format!("metadata of {name}: {e}"))
}

/// The engine's database when it exists (a root no engine ever ran on has
/// no metadata: `None`), opened as the engine opens it.
pub fn open_existing(root: &Path) -> Result<Option<Connection>, String> {
    if !root.join(super::ENGINE_DIR).join("engine.db").is_file() {
        return Ok(None);
    }
    super::open_db(root).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_saved_read_by_range_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_existing(dir.path()).unwrap().is_none());
        let conn = super::super::open_db(dir.path()).unwrap();
        let nearline = ObjectMetadata {
            storage_class: Some("NEARLINE".into()),
            temporary_hold: Some(true),
            ..ObjectMetadata::default()
        };
        save(&conn, "b", "p/a", &nearline).unwrap();
        save(&conn, "b", "p/z", &nearline).unwrap();
        save(&conn, "other", "p/a", &nearline).unwrap();
        assert_eq!(read(&conn, "b", "p/a").unwrap(), nearline);
        assert_eq!(read(&conn, "b", "p/b").unwrap(), ObjectMetadata::default());
        let page = read_range(&conn, "b", "p/a", "p/m").unwrap();
        assert_eq!(page.len(), 1);
        save(&conn, "b", "p/a", &ObjectMetadata::default()).unwrap();
        remove(&conn, "b", "p/z").unwrap();
        assert!(read_range(&conn, "b", "", "~").unwrap().is_empty());
        assert!(open_existing(dir.path()).unwrap().is_some());
    }
}
