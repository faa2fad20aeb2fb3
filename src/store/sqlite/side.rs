//! The tables beside the job table on SQLite, created on first use: the
//! plan, the verification results, the failed objects and the passes.

use super::*;

#[async_trait]
impl SideTables for SqliteStore {
    async fn requeue_with_manifests(
        &self,
        changes: &ChangeSet,
        manifests: &[PendingManifest],
    ) -> Result<(), StoreError> {
        self.check_file()?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let statements = self.apply_in(&tx, changes)?;
        tx.execute_batch(&self.manifests_schema())?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO {}_manifests (prefix, location, objects, queued_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (prefix) DO UPDATE SET location = excluded.location,
                    objects = excluded.objects, queued_at = excluded.queued_at",
                self.job_table
            ))?;
            for m in manifests {
                insert.execute(params![
                    m.prefix,
                    m.location,
                    i64::try_from(m.objects).unwrap_or(i64::MAX),
                    timestamp_text(m.queued_at)
                ])?;
            }
        }
        tx.commit()?;
        self.count(statements + 2);
        Ok(())
    }

    async fn clear_manifests(&self, which: &[(String, Option<String>)]) -> Result<(), StoreError> {
        if which.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let sql = format!(
                "DELETE FROM {}_manifests WHERE prefix = ?1 AND (?2 IS NULL OR location = ?2)",
                self.job_table
            );
            let Some(mut delete) = side_table_statement(&tx, &sql)? else {
                return Ok(());
            };
            for (prefix, location) in which {
                delete.execute(params![prefix, location])?;
            }
        }
        tx.commit()?;
        self.count(1);
        Ok(())
    }

    async fn read_manifests(&self) -> Result<Vec<PendingManifest>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT prefix, location, objects, queued_at FROM {}_manifests ORDER BY prefix",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (prefix, location, objects, at) = row?;
            out.push(PendingManifest {
                prefix,
                location,
                objects: objects.max(0) as u64,
                queued_at: parse_timestamp(&at)?,
            });
        }
        self.count(1);
        Ok(out)
    }

    async fn save_plan(&self, planned: &[PlannedPrefix]) -> Result<(), StoreError> {
        let rows = serde_json::to_string(
            &planned
                .iter()
                .map(|p| (&p.prefix, p.objects, p.bytes))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.plan_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_plan (prefix, objects, bytes, planned_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT (prefix) DO UPDATE SET objects = excluded.objects,
                    bytes = excluded.bytes, planned_at = excluded.planned_at",
                self.job_table
            ),
            params![rows, timestamp_text(Utc::now())],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    async fn read_plan(&self) -> Result<Vec<PlannedPrefix>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT prefix, objects, bytes FROM {}_plan ORDER BY prefix",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok(PlannedPrefix {
                prefix: r.get(0)?,
                objects: r.get::<_, i64>(1)?.max(0) as u64,
                bytes: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        self.count(1);
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn save_verifications(&self, rows: &[Verification]) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(rows.len());
        for v in rows {
            encoded.push((
                &v.prefix,
                v.result.as_str(),
                v.objects_compared,
                v.missing,
                v.different,
                timestamp_text(v.checked_at),
                serde_json::to_string(&v.offending_objects)
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?,
            ));
        }
        let encoded =
            serde_json::to_string(&encoded).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.verification_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_verification (prefix, result, objects_compared, missing,
                    different, checked_at, offending_objects)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                    value ->> 5, value ->> 6 FROM json_each(?1) WHERE true
                 ON CONFLICT (prefix) DO UPDATE SET result = excluded.result,
                    objects_compared = excluded.objects_compared, missing = excluded.missing,
                    different = excluded.different, checked_at = excluded.checked_at,
                    offending_objects = excluded.offending_objects",
                self.job_table
            ),
            params![encoded],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    async fn read_verifications(&self) -> Result<Vec<Verification>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT prefix, result, objects_compared, missing, different, checked_at,
                    offending_objects FROM {}_verification ORDER BY prefix",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (prefix, result, compared, missing, different, at, offending) = row?;
            out.push(Verification {
                prefix,
                result: VerifyResult::parse(&result)
                    .ok_or_else(|| StoreError::CorruptRow(format!("result '{result}'")))?,
                objects_compared: compared.max(0) as u64,
                missing: missing.max(0) as u64,
                different: different.max(0) as u64,
                checked_at: parse_timestamp(&at)?,
                offending_objects: serde_json::from_str(&offending).map_err(|e| {
                    StoreError::CorruptRow(format!("offending_objects '{offending}': {e}"))
                })?,
            });
        }
        self.count(1);
        Ok(out)
    }

    async fn save_failed_objects(&self, rows: &[FailedObject]) -> Result<(), StoreError> {
        let encoded: Vec<_> = rows
            .iter()
            .map(|f| {
                (
                    &f.prefix,
                    &f.object,
                    &f.action,
                    &f.error_code,
                    &f.message,
                    &f.operation,
                    timestamp_text(f.time),
                )
            })
            .collect();
        let encoded =
            serde_json::to_string(&encoded).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.failed_objects_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_failed_objects (prefix, object, action, error_code, message,
                    operation, time)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                    value ->> 5, value ->> 6 FROM json_each(?1) WHERE true
                 ON CONFLICT (operation, object, action) DO NOTHING",
                self.job_table
            ),
            params![encoded],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    async fn read_failed_objects(&self) -> Result<Vec<FailedObject>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT prefix, object, action, error_code, message, operation, time
                 FROM {}_failed_objects ORDER BY prefix, operation, object, action",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (prefix, object, action, error_code, message, operation, time) = row?;
            out.push(FailedObject {
                prefix,
                object,
                action,
                error_code,
                message,
                operation,
                time: parse_timestamp(&time)?,
            });
        }
        self.count(1);
        Ok(out)
    }

    async fn count_all_failed_objects(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let counted = conn.query_row(
            &format!("SELECT COUNT(*) FROM {}_failed_objects", self.job_table),
            [],
            |r| r.get::<_, i64>(0),
        );
        self.count(1);
        match counted {
            Err(e) if is_missing_table(&e) => Ok(0),
            other => Ok(other?.max(0) as u64),
        }
    }

    async fn count_failed_objects(
        &self,
        operations: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let names =
            serde_json::to_string(operations).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT operation, COUNT(*) FROM {}_failed_objects
                 WHERE operation IN (SELECT value FROM json_each(?1)) GROUP BY operation",
                self.job_table
            ),
        )?
        else {
            return Ok(Default::default());
        };
        let rows = statement.query_map(params![names], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        let out = rows.collect::<Result<_, _>>()?;
        self.count(1);
        Ok(out)
    }

    async fn save_pass(&self, pass: &Pass) -> Result<(), StoreError> {
        self.save_pass_row(pass)
    }

    async fn read_passes(&self) -> Result<Vec<Pass>, StoreError> {
        self.read_pass_rows()
    }

    async fn save_pass_prefixes(&self, rows: &[PassPrefix]) -> Result<(), StoreError> {
        for chunk in rows.chunks(10_000) {
            self.save_pass_prefix_rows(chunk)?;
        }
        Ok(())
    }

    async fn read_pass_prefixes(&self) -> Result<Vec<PassPrefix>, StoreError> {
        self.read_pass_prefix_rows()
    }
}

impl SqliteStore {
    /// The failed-objects table (README "State"): created on first use.
    fn failed_objects_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {0}_failed_objects (
                prefix TEXT NOT NULL,
                object TEXT NOT NULL,
                action TEXT NOT NULL,
                error_code TEXT NOT NULL,
                message TEXT NOT NULL,
                operation TEXT NOT NULL,
                time TEXT NOT NULL,
                PRIMARY KEY (operation, object, action));
             CREATE INDEX IF NOT EXISTS {0}_failed_objects_prefix
                ON {0}_failed_objects (prefix, object)",
            self.job_table
        )
    }

    pub(super) fn save_pass_row(&self, pass: &Pass) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.pass_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_passes (pass, kind, started_at, queued_at, ended_at,
                    objects_found, bytes_found, objects_copied, bytes_copied, objects_deleted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (pass) DO UPDATE SET kind = excluded.kind,
                    started_at = excluded.started_at, queued_at = excluded.queued_at,
                    ended_at = excluded.ended_at, objects_found = excluded.objects_found,
                    bytes_found = excluded.bytes_found, objects_copied = excluded.objects_copied,
                    bytes_copied = excluded.bytes_copied, objects_deleted = excluded.objects_deleted",
                self.job_table
            ),
            params![
                pass.pass,
                pass.kind,
                timestamp_text(pass.started_at),
                pass.queued_at.map(timestamp_text),
                pass.ended_at.map(timestamp_text),
                pass.objects_found,
                pass.bytes_found,
                pass.objects_copied,
                pass.bytes_copied,
                pass.objects_deleted
            ],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    pub(super) fn read_pass_rows(&self) -> Result<Vec<Pass>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT pass, kind, started_at, queued_at, ended_at, objects_found, bytes_found,
                    objects_copied, bytes_copied, objects_deleted FROM {}_passes ORDER BY pass",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                [
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, i64>(9)?,
                ],
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (pass, kind, started, queued, ended, figures) = row?;
            out.push(Pass {
                pass,
                kind,
                started_at: parse_timestamp(&started)?,
                queued_at: queued.as_deref().map(parse_timestamp).transpose()?,
                ended_at: ended.as_deref().map(parse_timestamp).transpose()?,
                objects_found: figures[0],
                bytes_found: figures[1],
                objects_copied: figures[2],
                bytes_copied: figures[3],
                objects_deleted: figures[4],
            });
        }
        self.count(1);
        Ok(out)
    }

    pub(super) fn save_pass_prefix_rows(&self, rows: &[PassPrefix]) -> Result<(), StoreError> {
        let encoded: Vec<(&str, u32, Option<String>, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.prefix.as_str(),
                    r.pass,
                    r.modified_since.map(timestamp_text),
                    r.mirror,
                )
            })
            .collect();
        let encoded =
            serde_json::to_string(&encoded).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.pass_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_pass_prefixes (prefix, pass, modified_since, mirror)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3
                 FROM json_each(?1) WHERE true
                 ON CONFLICT (prefix) DO UPDATE SET pass = excluded.pass,
                    modified_since = excluded.modified_since, mirror = excluded.mirror",
                self.job_table
            ),
            params![encoded],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    pub(super) fn read_pass_prefix_rows(&self) -> Result<Vec<PassPrefix>, StoreError> {
        let conn = self.lock();
        let Some(mut statement) = side_table_statement(
            &conn,
            &format!(
                "SELECT prefix, pass, modified_since, mirror FROM {}_pass_prefixes ORDER BY prefix",
                self.job_table
            ),
        )?
        else {
            return Ok(Vec::new());
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (prefix, pass, since, mirror) = row?;
            out.push(PassPrefix {
                prefix,
                pass,
                modified_since: since.as_deref().map(parse_timestamp).transpose()?,
                mirror,
            });
        }
        self.count(1);
        Ok(out)
    }

    /// The pass tables: created on first use.
    fn pass_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {0}_passes (
                pass INTEGER NOT NULL PRIMARY KEY,
                kind TEXT NOT NULL,
                started_at TEXT NOT NULL,
                queued_at TEXT,
                ended_at TEXT,
                objects_found INTEGER NOT NULL,
                bytes_found INTEGER NOT NULL,
                objects_copied INTEGER NOT NULL,
                bytes_copied INTEGER NOT NULL,
                objects_deleted INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS {0}_pass_prefixes (
                prefix TEXT NOT NULL PRIMARY KEY,
                pass INTEGER NOT NULL,
                modified_since TEXT,
                mirror INTEGER NOT NULL)",
            self.job_table
        )
    }

    /// The plan table (README "State"): created on first use.
    fn plan_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {0}_plan (
                prefix TEXT NOT NULL PRIMARY KEY,
                objects INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                planned_at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {0}_plan_bytes ON {0}_plan (bytes DESC, prefix)",
            self.job_table
        )
    }

    /// The manifest table (README "State"): created on first use.
    fn manifests_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}_manifests (
                prefix TEXT NOT NULL PRIMARY KEY,
                location TEXT NOT NULL,
                objects INTEGER NOT NULL,
                queued_at TEXT NOT NULL)",
            self.job_table
        )
    }

    /// The verification table (README "State"): created on first use.
    fn verification_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}_verification (
                prefix TEXT NOT NULL PRIMARY KEY,
                result TEXT NOT NULL CHECK (result IN ('verified','mismatch')),
                objects_compared INTEGER NOT NULL,
                missing INTEGER NOT NULL,
                different INTEGER NOT NULL,
                checked_at TEXT NOT NULL,
                offending_objects TEXT NOT NULL)",
            self.job_table
        )
    }

    /// Whether the job table exists (the tools give a clear message if not).
    pub fn has_tables(&self) -> Result<bool, StoreError> {
        let conn = self.lock();
        let found: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![self.job_table],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }
}

/// A side table is created on first use: until then it reads as empty.
fn is_missing_table(error: &rusqlite::Error) -> bool {
    error.to_string().contains("no such table")
}

/// `sql` over a side table, prepared; `None` when the table does not exist
/// yet (it reads as empty).
fn side_table_statement<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<Option<rusqlite::Statement<'c>>, StoreError> {
    match conn.prepare(sql) {
        Ok(statement) => Ok(Some(statement)),
        Err(e) if is_missing_table(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
