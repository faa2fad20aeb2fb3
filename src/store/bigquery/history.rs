//! The history table on BigQuery as analysis reads it: page by page, or
//! one snapshot per prefix or operation.

use super::quiet;
use super::*;

#[async_trait]
impl HistoryReads for BigQueryStore {
    async fn read_history(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let output = self
            .run(&sql::select_history(&self.history), vec![])
            .await?;
        history_rows(&output)
    }

    async fn scan_history(
        &self,
        visit: &mut (dyn FnMut(HistoryRow) + Send),
    ) -> Result<(), StoreError> {
        // Page by page: the history of a long migration never held at once.
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.api
            .query_pages(&sql::select_history(&self.history), vec![], &mut |page| {
                for row in &page {
                    visit(history_row(row)?);
                }
                Ok(())
            })
            .await
            .map_err(|e| self.missing_table(e))?;
        Ok(())
    }

    async fn latest_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let output = self
            .run(
                &sql::select_latest_snapshots(&self.history, &self.jobs),
                vec![],
            )
            .await?;
        history_rows(&output)
    }

    async fn status_view(
        &self,
        quiet_before: DateTime<Utc>,
    ) -> Result<Option<crate::figures::StatusView>, StoreError> {
        self.read_status_view(quiet_before).await.map(Some)
    }

    async fn figures_total(&self) -> Result<Option<crate::figures::Figures>, StoreError> {
        self.read_figures_total().await.map(Some)
    }

    fn figures_every(&self) -> std::time::Duration {
        quiet::FIGURES_EVERY
    }

    async fn snapshots_before(
        &self,
        requests: &[(String, DateTime<Utc>)],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let mut rows = Vec::new();
        let one_time = requests.first().map(|(_, t)| *t);
        for batch in requests.chunks(SNAPSHOT_BATCH) {
            let output = match one_time {
                Some(t) if requests.iter().all(|(_, b)| *b == t) => {
                    let prefixes: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
                    self.run(
                        &sql::select_snapshots_before_one_time(&self.history),
                        vec![
                            sql::string_array_param("prefixes", &prefixes),
                            sql::timestamp_param("before", t),
                        ],
                    )
                    .await?
                }
                _ => {
                    self.run(
                        &sql::select_snapshots_before_each(&self.history),
                        vec![sql::wanted_param(batch)],
                    )
                    .await?
                }
            };
            rows.extend(history_rows(&output)?);
        }
        Ok(rows)
    }
}
