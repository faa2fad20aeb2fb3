//! The job table's lease on BigQuery: one manager at a time, by a
//! conditional MERGE.

use super::*;

#[async_trait]
impl LeaseStore for BigQueryStore {
    /// One UPDATE per renewal; a read only when it is refused. A few rounds,
    /// because the lease can change hands between the two (freed, expired,
    /// or its holder found dead).
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError> {
        let mut replaced = holder.to_string();
        let mut refused = None;
        for _ in 0..3 {
            if self.take_lease(holder, &replaced, ttl).await? {
                return Ok(Lease::Acquired);
            }
            match self.current_lease().await? {
                None => self.seed_lease().await?,
                Some((other, _)) if other != replaced && holder_is_dead_here(&other) => {
                    tracing::info!("lease holder {other} is no longer running; taking over");
                    replaced = other;
                }
                Some((other, until)) => {
                    if !other.is_empty() && until > Utc::now() {
                        return Ok(Lease::HeldBy {
                            holder: other,
                            until,
                        });
                    }
                    refused = Some((other, until));
                }
            }
        }
        let (holder, until) = refused.unwrap_or_default();
        Ok(Lease::HeldBy { holder, until })
    }

    async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match self
            .api
            .query(
                &sql::release_lease(&self.lease),
                vec![sql::string_param("holder", holder)],
            )
            .await
        {
            // Never leased: nothing to give up.
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
