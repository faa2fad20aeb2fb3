//! Keeps calls under STS's per-project quotas with token buckets: a call
//! that would exceed its bucket waits instead of earning a 429.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// STS quota groups (STS_API.md "Service limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Create,
    Read,
    /// Every `transferJobs.patch`, the status patch that deletes a job too.
    Update,
    Control,
    /// `transferJobs.run`: in no quota group; paced on its own, at a rate
    /// that never holds back starts (a start is one patch plus one run).
    Run,
}

pub(crate) struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(per_minute: f64, capacity: f64) -> Bucket {
        Bucket {
            per_second: per_minute / 60.0,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes a token, going into debt if none is left; returns how long the
    /// caller must wait for its token to exist.
    pub(crate) fn reserve(&mut self, now: Instant) -> Duration {
        let earned = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.capacity);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

pub struct Pacer {
    create_per_minute: Mutex<Bucket>,
    create_per_day: Mutex<Bucket>,
    read: Mutex<Bucket>,
    update: Mutex<Bucket>,
    control: Mutex<Bucket>,
    run: Mutex<Bucket>,
}

impl Default for Pacer {
    fn default() -> Self {
        // Bursts of a few seconds' worth, then the steady quota rate.
        Pacer {
            create_per_minute: Mutex::new(Bucket::new(600.0, 20.0)),
            create_per_day: Mutex::new(Bucket::new(5000.0 / 1440.0, 5000.0)),
            read: Mutex::new(Bucket::new(1500.0, 50.0)),
            update: Mutex::new(Bucket::new(600.0, 20.0)),
            control: Mutex::new(Bucket::new(900.0, 30.0)),
            run: Mutex::new(Bucket::new(1200.0, 40.0)),
        }
    }
}

impl Pacer {
    pub async fn wait(&self, quota: Quota) {
        let now = Instant::now();
        let mut wait = match quota {
            Quota::Create => self.create_per_minute.lock().await.reserve(now),
            Quota::Read => self.read.lock().await.reserve(now),
            Quota::Update => self.update.lock().await.reserve(now),
            Quota::Control => self.control.lock().await.reserve(now),
            Quota::Run => self.run.lock().await.reserve(now),
        };
        if quota == Quota::Create {
            let daily = self.create_per_day.lock().await.reserve(now);
            if daily > Duration::from_secs(60) {
                tracing::warn!(
                    "the daily quota of 5,000 job creations is spent; waiting {:.0} s",
                    daily.as_secs_f64()
                );
            }
            wait = wait.max(daily);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_paces_at_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(600.0, 3.0);
        bucket.last = start;
        let waits: Vec<Duration> = (0..5).map(|_| bucket.reserve(start)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        // 600/min is one every 100 ms: the 4th waits 0.1 s, the 5th 0.2 s.
        assert!((waits[3].as_secs_f64() - 0.1).abs() < 1e-9);
        assert!((waits[4].as_secs_f64() - 0.2).abs() < 1e-9);
        // After a second the debt is paid and tokens are back.
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(2)),
            Duration::ZERO
        );
    }
}
