//! The history folded per prefix (`crate::figures::Fold`) in a side table,
//! `{job_table}_figures`, kept up to date in the transaction that writes
//! history rows (`apply`): `sts-status` then sums finished prefixes in one
//! query instead of reading their snapshots. A one-row table records the
//! history rowid folded so far, so rows written by anyone else (the
//! original tool, a hand edit) are folded later, never missed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{parse_status, parse_timestamp, timestamp_text, SqliteStore};
use crate::figures::{parse, Figures, Fold, QuietTotals, Snapshot, StatusView, Sums};
use crate::model::{HistoryRow, PrefixJob, Status};
use crate::store::StoreError;

/// History rows folded per read: bounds memory while a large history
/// (one taken over, or a plan load) is folded the first time.
const CHUNK: i64 = 20_000;

/// The figure columns, summed by the quiet aggregate.
const FIGURE_COLUMNS: [&str; 12] = Figures::COLUMNS;

impl SqliteStore {
    fn figures_table(&self) -> String {
        format!("{}_figures", self.job_table)
    }

    /// Creates the fold's tables when missing.
    pub(super) fn create_figures_tables(&self, conn: &Connection) -> Result<(), StoreError> {
        let figures = FIGURE_COLUMNS
            .iter()
            .map(|c| format!("{c} INTEGER NOT NULL"))
            .collect::<Vec<_>>()
            .join(", ");
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                prefix TEXT NOT NULL PRIMARY KEY,
                snapshot TEXT,
                at TEXT,
                quiet_from TEXT,
                start_time TEXT,
                earlier TEXT NOT NULL,
                failures INTEGER NOT NULL,
                unreadable INTEGER NOT NULL,
                {figures}) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_quiet_from ON {t} (quiet_from);
             CREATE TABLE IF NOT EXISTS {t}_mark (
                one INTEGER PRIMARY KEY CHECK (one = 1),
                history_rowid INTEGER NOT NULL,
                totals TEXT NOT NULL);",
            t = self.figures_table(),
        ))?;
        Ok(())
    }

    /// The history rowid folded so far and the sum of every fold's figures
    /// (in `Figures::COLUMNS` order); None when the tables do not exist.
    fn read_mark(&self, conn: &Connection) -> Result<Option<(i64, [i64; 12])>, StoreError> {
        let exists: bool = conn.query_row(
            "SELECT COUNT(*) = 2 FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2)",
            params![
                self.figures_table(),
                format!("{}_mark", self.figures_table())
            ],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let mark: Option<(i64, String)> = conn
            .query_row(
                &format!(
                    "SELECT history_rowid, totals FROM {}_mark",
                    self.figures_table()
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match mark {
            None => Ok(Some((0, [0; 12]))),
            Some((rowid, totals)) => {
                let totals = serde_json::from_str(&totals)
                    .map_err(|e| self.corrupt_folds(&format!("the mark's totals: {e}")))?;
                Ok(Some((rowid, totals)))
            }
        }
    }

    /// A prefix's stored fold (the default when it has none).
    fn stored_fold(&self, conn: &Connection, prefix: &str) -> Result<Fold, StoreError> {
        let row = conn
            .prepare_cached(&format!(
                "SELECT snapshot, at, earlier, failures, unreadable FROM {} WHERE prefix = ?1",
                self.figures_table()
            ))?
            .query_row(params![prefix], fold_columns)
            .optional()?;
        row.map_or_else(
            || Ok(Fold::default()),
            |columns| self.fold_of(prefix, columns),
        )
    }

    /// A fold table that does not read, named with its way out: both
    /// tables are derived from the history, so dropping them loses nothing.
    fn corrupt_folds(&self, what: &str) -> StoreError {
        let t = self.figures_table();
        StoreError::CorruptRow(format!(
            "{t}: {what}; drop the tables {t} and {t}_mark (both are made from the \
             history: the next write or sts-prepare-tables makes them again)"
        ))
    }

    /// A stored fold from its columns. A snapshot that does not read (the
    /// table edited by hand) leaves the fold without one, counted unreadable.
    fn fold_of(&self, prefix: &str, columns: FoldColumns) -> Result<Fold, StoreError> {
        let (snapshot, at, earlier, failures, mut unreadable) = columns;
        let earlier: Sums = serde_json::from_str(&earlier).map_err(|e| {
            self.corrupt_folds(&format!("prefix '{prefix}': earlier attempts' sums: {e}"))
        })?;
        let latest = match (snapshot.as_deref().map(parse), at) {
            (Some(Some(op)), Some(at)) => Some(Snapshot {
                op,
                at: parse_timestamp(&at)?,
            }),
            (None, _) => None,
            _ => {
                unreadable = unreadable.saturating_add(1);
                None
            }
        };
        Ok(Fold {
            latest,
            earlier,
            failures,
            unreadable,
        })
    }

    /// Folds the history rows after `mark` into the stored folds, in memory:
    /// each prefix's fold starts from its stored one. Returns the folds
    /// touched and the last rowid read; `max_rows` bounds one call.
    /// `totals` loses each stored fold's figures as it is taken up (the
    /// caller adds the folds' new figures once they are folded).
    fn fold_after(
        &self,
        conn: &Connection,
        mark: i64,
        max_rows: i64,
        folds: &mut HashMap<String, Fold>,
        totals: &mut [i64; 12],
    ) -> Result<(i64, usize), StoreError> {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT rowid, prefix, status, job_name, operation_results, timestamp FROM {}
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            self.history_table
        ))?;
        let mut rows = statement.query(params![mark, max_rows])?;
        let (mut last, mut read) = (mark, 0);
        while let Some(r) = rows.next()? {
            last = r.get(0)?;
            read += 1;
            let row = HistoryRow {
                prefix: r.get(1)?,
                status: parse_status(&r.get::<_, String>(2)?)?,
                job_name: r.get(3)?,
                operation_results: r.get(4)?,
                timestamp: parse_timestamp(&r.get::<_, String>(5)?)?,
            };
            if !folds.contains_key(&row.prefix) {
                let stored = self.stored_fold(conn, &row.prefix)?;
                add_figures(totals, &stored, -1);
                folds.insert(row.prefix.clone(), stored);
            }
            if let Some(fold) = folds.get_mut(&row.prefix) {
                fold.add(&row);
            }
        }
        Ok((last, read))
    }

    /// Folds every history row not folded yet into the stored folds
    /// (`apply` calls it in its transaction, so the folds always match the
    /// rows it wrote). Returns the rows folded.
    pub(super) fn fold_history(&self, conn: &Connection) -> Result<usize, StoreError> {
        self.create_figures_tables(conn)?;
        let (mut mark, mut totals) = self.read_mark(conn)?.unwrap_or((0, [0; 12]));
        let max: i64 = conn.query_row(
            &format!("SELECT COALESCE(MAX(rowid), 0) FROM {}", self.history_table),
            [],
            |r| r.get(0),
        )?;
        if max < mark {
            // The history was rewritten (rowids renumbered): fold it anew.
            conn.execute(&format!("DELETE FROM {}", self.figures_table()), [])?;
            (mark, totals) = (0, [0; 12]);
        }
        let mut total = 0;
        loop {
            let mut folds = HashMap::new();
            let (last, read) = self.fold_after(conn, mark, CHUNK, &mut folds, &mut totals)?;
            if read == 0 {
                break;
            }
            total += read;
            mark = last;
            for fold in folds.values() {
                add_figures(&mut totals, fold, 1);
            }
            self.write_folds(conn, &folds)?;
        }
        let totals =
            serde_json::to_string(&totals).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        conn.execute(
            &format!(
                "INSERT INTO {}_mark (one, history_rowid, totals) VALUES (1, ?1, ?2)
                 ON CONFLICT (one) DO UPDATE SET history_rowid = excluded.history_rowid,
                    totals = excluded.totals",
                self.figures_table()
            ),
            params![mark, totals],
        )?;
        if total > 100_000 {
            tracing::info!("folded {total} history rows into {}", self.figures_table());
        }
        Ok(total)
    }

    fn write_folds(
        &self,
        conn: &Connection,
        folds: &HashMap<String, Fold>,
    ) -> Result<(), StoreError> {
        let placeholders = (9..9 + FIGURE_COLUMNS.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut insert = conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {} (prefix, snapshot, at, quiet_from, start_time, earlier,
                 failures, unreadable, {}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {})",
            self.figures_table(),
            FIGURE_COLUMNS.join(", "),
            placeholders
        ))?;
        for (prefix, fold) in folds {
            let snapshot = fold
                .latest
                .as_ref()
                .map(|l| serde_json::to_string(&l.op))
                .transpose()
                .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
            let earlier = serde_json::to_string(&fold.earlier)
                .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
            let at = fold.latest.as_ref().map(|l| timestamp_text(l.at));
            // Summed once it ended without failures (NULL: never).
            let quiet_from = fold
                .latest
                .as_ref()
                .filter(|_| !fold.has_errors())
                .map(|l| timestamp_text(l.updated()));
            let start = fold
                .latest
                .as_ref()
                .and_then(|l| l.op.start_time)
                .map(timestamp_text);
            let figures = fold.figures().values();
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                prefix,
                &snapshot,
                &at,
                &quiet_from,
                &start,
                &earlier,
                &fold.failures,
                &fold.unreadable,
            ];
            values.extend(figures.iter().map(|v| v as &dyn rusqlite::ToSql));
            insert.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }

    /// `HistoryReads::status_view` on SQLite: rows written since the last
    /// fold are folded here in memory (nothing is written), then one
    /// aggregate over the quiet prefixes and one read of the others.
    pub(super) fn read_status_view(
        &self,
        quiet_before: DateTime<Utc>,
    ) -> Result<Option<StatusView>, StoreError> {
        let conn = self.lock();
        let Some((_, mut delta)) = self.folded_now(&conn)? else {
            return Ok(None);
        };
        let changed = serde_json::to_string(&delta.keys().collect::<Vec<_>>())
            .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        // Quiet: done, its latest attempt without failures and ended by
        // `quiet_before`, and not changed since the last fold.
        let quiet_rule = "j.status = 'done' AND f.quiet_from <= ?1
             AND j.prefix NOT IN (SELECT value FROM json_each(?2))";
        // Its complement among done prefixes that have a fold, in terms the
        // `quiet_from` index and the primary key answer.
        let loud_rule = "(f.quiet_from IS NULL OR f.quiet_from > ?1
             OR f.prefix IN (SELECT value FROM json_each(?2)))";
        let sums = FIGURE_COLUMNS
            .iter()
            .map(|c| format!("COALESCE(SUM(f.{c}), 0)"))
            .collect::<Vec<_>>()
            .join(", ");
        let quiet_before = timestamp_text(quiet_before);
        let quiet = conn
            .query_row(
                &format!(
                    "SELECT COUNT(*), MIN(f.start_time), COALESCE(SUM(f.unreadable), 0), {sums}
                     FROM {jobs} AS j JOIN {t} AS f ON f.prefix = j.prefix
                     WHERE {quiet_rule}",
                    jobs = self.job_table,
                    t = self.figures_table(),
                ),
                params![quiet_before, changed],
                |r| {
                    let mut figures = [0i64; 12];
                    for (i, value) in figures.iter_mut().enumerate() {
                        *value = r.get(3 + i)?;
                    }
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        Figures::from_values(figures),
                    ))
                },
            )
            .map_err(|e| self.missing_table(e))?;
        let (count, first_start, unreadable, figures) = quiet;
        let quiet = QuietTotals {
            prefixes: usize::try_from(count).unwrap_or(0),
            figures,
            first_start: first_start.as_deref().map(parse_timestamp).transpose()?,
            unreadable: usize::try_from(unreadable).unwrap_or(0),
        };
        // The others, without visiting the quiet ones: prefixes not done
        // (by the status index), done ones not quiet (by `quiet_from`), and,
        // only when those do not add up to every done prefix, the done ones
        // with no fold at all (never written through a store that folds).
        let done: i64 = conn.query_row(
            &format!(
                "SELECT COUNT(*) FROM {} WHERE status = 'done'",
                self.job_table
            ),
            [],
            |r| r.get(0),
        )?;
        let columns = "j.prefix, j.status, j.job_name, j.last_updated,
                    f.snapshot, f.at, f.earlier, f.failures, f.unreadable";
        let select = |rule: &str, t_first: bool| {
            if t_first {
                format!(
                    "SELECT {columns} FROM {t} AS f CROSS JOIN {jobs} AS j
                     ON j.prefix = f.prefix WHERE {rule}",
                    jobs = self.job_table,
                    t = self.figures_table(),
                )
            } else {
                format!(
                    "SELECT {columns} FROM {jobs} AS j LEFT JOIN {t} AS f
                     ON f.prefix = j.prefix WHERE {rule}",
                    jobs = self.job_table,
                    t = self.figures_table(),
                )
            }
        };
        let mut statement = conn.prepare(&format!(
            "{} UNION ALL {}",
            select(
                "j.status IN ('waiting', 'running', 'paused', 'error')",
                false
            ),
            select(&format!("j.status = 'done' AND {loud_rule}"), true),
        ))?;
        let mut jobs = Vec::new();
        let mut folds = HashMap::new();
        self.read_view_rows(
            statement.query(params![quiet_before, changed])?,
            &mut delta,
            &mut jobs,
            &mut folds,
        )?;
        let loud_done = jobs.iter().filter(|j| j.status == Status::Done).count();
        if usize::try_from(count).unwrap_or(0) + loud_done < usize::try_from(done).unwrap_or(0) {
            let mut statement =
                conn.prepare(&select("j.status = 'done' AND f.prefix IS NULL", false))?;
            self.read_view_rows(statement.query([])?, &mut delta, &mut jobs, &mut folds)?;
        }
        self.count(5);
        Ok(Some(StatusView { quiet, jobs, folds }))
    }

    /// Job rows with their folds (a fold folded in memory since the last
    /// write replaces the stored one).
    fn read_view_rows(
        &self,
        mut rows: rusqlite::Rows<'_>,
        delta: &mut HashMap<String, Fold>,
        jobs: &mut Vec<PrefixJob>,
        folds: &mut HashMap<String, Fold>,
    ) -> Result<(), StoreError> {
        while let Some(r) = rows.next()? {
            let job = PrefixJob {
                prefix: r.get(0)?,
                status: parse_status(&r.get::<_, String>(1)?)?,
                job_name: r.get(2)?,
                last_updated: parse_timestamp(&r.get::<_, String>(3)?)?,
            };
            let fold = match delta.remove(&job.prefix) {
                Some(fold) => Some(fold),
                None => match r.get::<_, Option<String>>(6)? {
                    Some(earlier) => Some(self.fold_of(
                        &job.prefix,
                        (r.get(4)?, r.get(5)?, earlier, r.get(7)?, r.get(8)?),
                    )?),
                    None => None,
                },
            };
            if let Some(fold) = fold {
                folds.insert(job.prefix.clone(), fold);
            }
            jobs.push(job);
        }
        Ok(())
    }
}

impl SqliteStore {
    /// For a read: the running sum as the mark has it, less the stored folds
    /// of prefixes with rows written since, and those prefixes' folds with
    /// the rows folded in memory (nothing is written). None: no fold here,
    /// or the history was rewritten since (the caller reads snapshots).
    fn folded_now(&self, conn: &Connection) -> Result<Option<FoldedNow>, StoreError> {
        let Some((mark, mut totals)) = self.read_mark(conn)? else {
            return Ok(None);
        };
        let max: i64 = conn
            .query_row(
                &format!("SELECT COALESCE(MAX(rowid), 0) FROM {}", self.history_table),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.missing_table(e))?;
        if max < mark {
            return Ok(None);
        }
        let mut delta = HashMap::new();
        let mut at = mark;
        loop {
            let (last, read) = self.fold_after(conn, at, CHUNK, &mut delta, &mut totals)?;
            if read == 0 {
                break;
            }
            at = last;
        }
        Ok(Some((totals, delta)))
    }

    /// `HistoryReads::figures_total` on SQLite: the mark's running sum,
    /// with rows written since the last fold folded in memory.
    pub(super) fn read_figures_total(&self) -> Result<Option<Figures>, StoreError> {
        let conn = self.lock();
        let Some((mut totals, delta)) = self.folded_now(&conn)? else {
            return Ok(None);
        };
        for fold in delta.values() {
            add_figures(&mut totals, fold, 1);
        }
        self.count(2);
        Ok(Some(Figures::from_values(totals)))
    }
}

/// Adds (`sign` 1) or takes away (-1) a fold's figures from a running sum.
fn add_figures(totals: &mut [i64; 12], fold: &Fold, sign: i64) {
    for (total, value) in totals.iter_mut().zip(fold.figures().values()) {
        *total = total.saturating_add(value.saturating_mul(sign));
    }
}

/// The running sum of the figures and the folds changed since the mark.
type FoldedNow = ([i64; 12], HashMap<String, Fold>);

type FoldColumns = (Option<String>, Option<String>, String, u32, u32);

fn fold_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<FoldColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}
