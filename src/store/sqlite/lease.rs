//! The job table's lease on SQLite: one manager at a time.

use super::*;

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError> {
        self.check_file()?;
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut conn = self.lock();
        // IMMEDIATE: two managers starting together serialise here.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {}_lease (
                    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, until TEXT NOT NULL)",
                self.job_table
            ),
            [],
        )?;
        let current: Option<(String, String)> = tx
            .query_row(
                &format!(
                    "SELECT holder, until FROM {}_lease WHERE id = 1",
                    self.job_table
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((other, other_until)) = current {
            let other_until = parse_timestamp(&other_until)?;
            if other != holder && other_until > now && !holder_is_dead_here(&other) {
                return Ok(Lease::HeldBy {
                    holder: other,
                    until: other_until,
                });
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {}_lease (id, holder, until) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, until = excluded.until",
                self.job_table
            ),
            params![holder, timestamp_text(until)],
        )?;
        tx.commit()?;
        Ok(Lease::Acquired)
    }

    async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        let released = conn.execute(
            &format!(
                "DELETE FROM {}_lease WHERE id = 1 AND holder = ?1",
                self.job_table
            ),
            params![holder],
        );
        match released {
            Ok(_) => Ok(()),
            // Never leased: nothing to give up.
            Err(e) if e.to_string().contains("no such table") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
