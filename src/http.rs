//! One retry policy for every Google API the crate calls over HTTP (Storage
//! Transfer Service, Cloud Storage, BigQuery, Cloud Monitoring): how many
//! attempts, for how long, how far apart (exponential backoff with full
//! jitter), with which timeouts; which failures are worth another attempt;
//! and one driver, [`retry`], that runs a call under a policy.
//!
//! Each client keeps its own numbers (a constructor per service below), its
//! own log lines (the driver hands every retry to the caller to describe) and
//! its own typed errors (the driver returns the last failure, and whether the
//! retries ran out, for the client to map).

use std::future::Future;
use std::time::Duration;

/// How hard to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retried).
    pub attempts: u32,
    /// The first retry waits up to this; each further one up to twice the last.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// No new attempt starts once this much time (with the wait before it)
    /// would have gone into one call; `Duration::MAX`: the attempts alone bound it.
    pub max_total: Duration,
    /// Per attempt: an endpoint that accepts connections and never answers
    /// costs at most `request_timeout`.
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Storage Transfer Service's policy (README: "Every STS call has a 10 s
/// connect and a 30 s request timeout ... at most 3 minutes").
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_total: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Storage Transfer Service: the [`Default`].
    pub fn storage_transfer() -> Self {
        RetryPolicy::default()
    }

    /// Cloud Storage: STS's backoff, but a page of 1,000 objects may take
    /// longer than 30 s to list, and a listing is not limited in time.
    pub fn cloud_storage() -> Self {
        RetryPolicy {
            max_total: Duration::MAX,
            request_timeout: Duration::from_secs(120),
            ..RetryPolicy::default()
        }
    }

    /// BigQuery: fewer, slower retries (its rate limits are per second or
    /// more), and a statement may run up to 120 s. gcp-bigquery-client builds
    /// its own HTTP client, so the request timeout bounds each whole call and
    /// the connect timeout is that same bound.
    pub fn bigquery() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            max_total: Duration::MAX,
            connect_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(120),
        }
    }

    /// Cloud Monitoring's heartbeat: one attempt (a point is not written
    /// twice; the next cycle writes a fresh one), bounded at 30 s.
    pub fn monitoring() -> Self {
        RetryPolicy {
            attempts: 1,
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_total: Duration::MAX,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The longest wait before retry number `retry + 1` (0: the first retry):
    /// `first_backoff` doubled per retry, at most `max_backoff`.
    pub fn bound(&self, retry: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_backoff)
    }

    /// Full jitter: `jitter` (in [0, 1)) of [`RetryPolicy::bound`], so that
    /// clients failing together do not retry together.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        // `mul_f64` panics on NaN or a negative factor.
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.bound(retry).mul_f64(jitter)
    }

    /// A reqwest client with this policy's timeouts.
    pub fn http_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .build()
    }
}

/// A number in [0, 1) that differs between calls and processes: enough
/// randomness to spread retries, with no RNG dependency.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How one attempt failed, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request never left (connection refused, DNS): the server did nothing.
    NotSent,
    /// No complete answer (a timeout, a reset): the server may have acted.
    NoAnswer,
    /// The server answered with this HTTP status.
    Status(u16),
    /// The service says, in its own terms, that a later attempt may succeed
    /// (BigQuery's `backendError`, `rateLimitExceeded`, ...).
    Transient,
    /// Asking again cannot help: credentials, a response that cannot be read.
    Permanent,
}

/// Whether a request may be sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it is harmless: a read, a write of the same state, or a
    /// create the server recognises when repeated (a job name, a request id).
    Safe,
    /// A second copy could act twice (a POST create without a request id):
    /// repeated only when the first surely did nothing.
    Unsafe,
}

/// 429 (a rate limit: nothing was done) and the 5xx that mean "not now":
/// internal error, bad gateway, unavailable, gateway timeout. Not 501 (not
/// implemented) or any 4xx: the same request gets the same answer.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The decision: is `failure` worth another attempt of a request that is
/// `idempotency`?
pub fn retryable(failure: Failure, idempotency: Idempotency) -> bool {
    let safe = idempotency == Idempotency::Safe;
    match failure {
        Failure::NotSent | Failure::Status(429) => true,
        Failure::Status(status) => safe && retryable_status(status),
        Failure::NoAnswer | Failure::Transient => safe,
        Failure::Permanent => false,
    }
}

/// How a reqwest send failed: a connect error never reached the server; a
/// timeout or a broken request may have; anything else (a redirect loop, a
/// body that cannot be encoded) will fail again.
pub fn send_failure(e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        Failure::NotSent
    } else if e.is_timeout() || e.is_request() {
        Failure::NoAnswer
    } else {
        Failure::Permanent
    }
}

/// One failed attempt of a call made with reqwest: how it failed, what a
/// retry says about it, and the client's own error when the answer is final
/// (`None` when there was no answer to tell it).
#[derive(Debug)]
pub struct Failed<E> {
    pub failure: Failure,
    pub last: String,
    pub answer: Option<E>,
}

impl<E: std::fmt::Display> Failed<E> {
    /// Credentials, a body that cannot be read: never retried.
    pub fn permanent(error: E) -> Self {
        Failed {
            failure: Failure::Permanent,
            last: error.to_string(),
            answer: Some(error),
        }
    }
}

impl<E> Failed<E> {
    /// A send that got no answer (see [`send_failure`]), or, when asking
    /// again cannot help, the error back. Never with the URL: no secret is
    /// in it, but messages stay short and stable.
    /// An answer whose body could not be read to its end (a reset, a
    /// timeout mid-body): no answer at all, never an empty one (an empty
    /// list page would read as the last).
    pub fn unread_body(e: reqwest::Error, what: &str) -> Self {
        Failed {
            failure: Failure::NoAnswer,
            last: format!(
                "{what}: the answer's body could not be read: {}",
                e.without_url()
            ),
            answer: None,
        }
    }

    pub fn unanswered(e: reqwest::Error, what: &str) -> Result<Self, reqwest::Error> {
        let failure = send_failure(&e);
        let e = e.without_url();
        match failure {
            Failure::Permanent => Err(e),
            failure => Ok(Failed {
                failure,
                last: format!("{what}: {e}"),
                answer: None,
            }),
        }
    }
}

impl<E> GaveUp<Failed<E>> {
    /// The client's error: the answer itself when it was final, else
    /// `unavailable(attempts, elapsed, last)`.
    pub fn into_error(self, unavailable: impl FnOnce(u32, Duration, String) -> E) -> E {
        match self.last.answer {
            Some(error) if !self.exhausted => error,
            _ => unavailable(self.attempts, self.elapsed, self.last.last),
        }
    }
}

/// A retry about to happen, for the caller to log in its own words.
#[derive(Debug)]
pub struct Retry<'a, E> {
    /// 1 for the first retry.
    pub retry: u32,
    /// The policy's attempts in all.
    pub attempts: u32,
    pub wait: Duration,
    pub last: &'a E,
}

/// A call that did not succeed: its last failure, after how many attempts
/// and how long, and whether that failure was worth retrying (the attempts or
/// the time ran out) or was final.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub attempts: u32,
    pub elapsed: Duration,
    pub last: E,
    pub exhausted: bool,
}

/// Runs `call` until it succeeds, fails in a way [`retryable`] refuses
/// (judged by `classify`), or `policy` is spent; before each retry it
/// waits [`RetryPolicy::backoff`] and tells `on_retry`.
pub async fn retry<T, E, Fut>(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    classify: impl Fn(&E) -> Failure,
    on_retry: impl FnMut(&Retry<'_, E>),
    call: impl FnMut() -> Fut,
) -> Result<T, GaveUp<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    retry_with(policy, idempotency, classify, on_retry, call, jitter).await
}

/// [`retry`] with the jitter chosen by the caller (tests).
async fn retry_with<T, E, Fut>(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    classify: impl Fn(&E) -> Failure,
    mut on_retry: impl FnMut(&Retry<'_, E>),
    mut call: impl FnMut() -> Fut,
    mut jitter: impl FnMut() -> f64,
) -> Result<T, GaveUp<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let began = tokio::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match call().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let gave_up = |last, exhausted| GaveUp {
            attempts,
            elapsed: began.elapsed(),
            last,
            exhausted,
        };
        if !retryable(classify(&last), idempotency) {
            return Err(gave_up(last, false));
        }
        if attempts >= policy.attempts {
            return Err(gave_up(last, true));
        }
        let wait = policy.backoff(attempts - 1, jitter());
        if began.elapsed().saturating_add(wait) >= policy.max_total {
            return Err(gave_up(last, true));
        }
        on_retry(&Retry {
            retry: attempts,
            attempts: policy.attempts,
            wait,
            last: &last,
        });
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const NEVER: [u16; 6] = [400, 401, 403, 404, 409, 501];
    const ALWAYS: [u16; 5] = [429, 500, 502, 503, 504];

    #[test]
    fn backoff_grows_exponentially_up_to_its_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.bound(0), Duration::from_millis(200));
        assert_eq!(policy.bound(1), Duration::from_millis(400));
        assert_eq!(policy.bound(4), Duration::from_millis(3200));
        for retry in 0..40 {
            assert!(policy.bound(retry) <= policy.max_backoff);
            assert!(policy.bound(retry + 1) >= policy.bound(retry));
        }
        assert_eq!(policy.bound(7), policy.max_backoff);
        assert_eq!(policy.bound(u32::MAX), policy.max_backoff);
        let bigquery = RetryPolicy::bigquery();
        assert_eq!(bigquery.bound(0), Duration::from_millis(500));
        assert_eq!(bigquery.bound(3), Duration::from_secs(4));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_bound() {
        let policy = RetryPolicy::default();
        for retry in 0..10 {
            let bound = policy.bound(retry);
            assert_eq!(policy.backoff(retry, 0.0), Duration::ZERO);
            assert_eq!(policy.backoff(retry, 0.5), bound / 2);
            assert!(policy.backoff(retry, 0.999) < bound);
            for _ in 0..50 {
                let wait = policy.backoff(retry, jitter());
                assert!(wait < bound || bound.is_zero(), "{wait:?} {bound:?}");
            }
        }
        // Out-of-range jitter never panics nor exceeds the bound.
        for odd in [f64::NAN, -1.0, 7.0, f64::INFINITY] {
            assert!(policy.backoff(3, odd) <= policy.bound(3));
        }
        let spread: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(spread.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(spread.iter().any(|j| *j != spread[0]), "jitter is constant");
    }

    #[test]
    fn rate_limits_and_server_errors_retry_client_errors_never() {
        for status in ALWAYS {
            assert!(retryable_status(status), "{status}");
            assert!(retryable(Failure::Status(status), Idempotency::Safe));
        }
        for status in NEVER {
            assert!(!retryable_status(status), "{status}");
            for idempotency in [Idempotency::Safe, Idempotency::Unsafe] {
                assert!(!retryable(Failure::Status(status), idempotency));
            }
        }
        assert!(retryable(Failure::NotSent, Idempotency::Safe));
        assert!(retryable(Failure::NoAnswer, Idempotency::Safe));
        assert!(retryable(Failure::Transient, Idempotency::Safe));
        assert!(!retryable(Failure::Permanent, Idempotency::Safe));
    }

    #[test]
    fn an_unsafe_request_is_repeated_only_when_it_surely_did_nothing() {
        let unsafe_ = Idempotency::Unsafe;
        // Never sent, or refused by a rate limit: nothing happened.
        assert!(retryable(Failure::NotSent, unsafe_));
        assert!(retryable(Failure::Status(429), unsafe_));
        // May have reached the server and acted.
        assert!(!retryable(Failure::NoAnswer, unsafe_));
        assert!(!retryable(Failure::Transient, unsafe_));
        for status in [500, 502, 503, 504] {
            assert!(!retryable(Failure::Status(status), unsafe_), "{status}");
        }
    }

    /// `call` failing with `failure` every time, counting its attempts.
    async fn failing(
        policy: &RetryPolicy,
        idempotency: Idempotency,
        failure: Failure,
        jitter: f64,
    ) -> (GaveUp<Failure>, u32, Vec<Duration>) {
        let calls = Cell::new(0);
        let mut waits = Vec::new();
        let gave_up = retry_with(
            policy,
            idempotency,
            |f: &Failure| *f,
            |r| waits.push(r.wait),
            || {
                calls.set(calls.get() + 1);
                async move { Err::<(), _>(failure) }
            },
            || jitter,
        )
        .await
        .unwrap_err();
        (gave_up, calls.get(), waits)
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_makes_every_attempt_then_gives_up() {
        let policy = RetryPolicy {
            max_total: Duration::MAX,
            ..RetryPolicy::default()
        };
        let began = tokio::time::Instant::now();
        let (gave_up, calls, waits) =
            failing(&policy, Idempotency::Safe, Failure::Status(503), 0.5).await;
        assert_eq!((calls, gave_up.attempts), (8, 8));
        assert!(gave_up.exhausted);
        assert_eq!(gave_up.last, Failure::Status(503));
        // Seven waits of half the bound: 100 ms, 200 ms, ... 6.4 s.
        assert_eq!(waits.len(), 7);
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[6], Duration::from_millis(6400));
        assert_eq!(began.elapsed(), waits.iter().sum::<Duration>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_time_limit_stops_retries() {
        let policy = RetryPolicy {
            attempts: 100,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            max_total: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let began = tokio::time::Instant::now();
        // Waits of 1, 2, 4, 4 s = 11 s: the fourth would end past 10 s.
        let (gave_up, calls, waits) =
            failing(&policy, Idempotency::Safe, Failure::NoAnswer, 0.999_999).await;
        assert_eq!(calls, 4, "{waits:?}");
        assert!(gave_up.exhausted);
        assert!(began.elapsed() < policy.max_total);
        assert_eq!(gave_up.elapsed, began.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn final_failures_and_unsafe_requests_are_not_repeated() {
        let policy = RetryPolicy::default();
        let (gave_up, calls, _) =
            failing(&policy, Idempotency::Safe, Failure::Status(404), 0.5).await;
        assert_eq!((calls, gave_up.exhausted), (1, false));
        let (gave_up, calls, _) =
            failing(&policy, Idempotency::Unsafe, Failure::NoAnswer, 0.5).await;
        assert_eq!((calls, gave_up.exhausted), (1, false));
        // Never sent: repeated even though unsafe.
        let (gave_up, calls, _) =
            failing(&policy, Idempotency::Unsafe, Failure::NotSent, 0.5).await;
        assert_eq!((calls, gave_up.exhausted), (8, true));
        // One attempt in all: never retried.
        let (gave_up, calls, waits) = failing(
            &RetryPolicy::monitoring(),
            Idempotency::Safe,
            Failure::Status(503),
            0.5,
        )
        .await;
        assert_eq!((calls, gave_up.exhausted, waits.len()), (1, true, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_failures_is_returned() {
        let calls = Cell::new(0);
        let mut retries = Vec::new();
        let value = retry_with(
            &RetryPolicy::bigquery(),
            Idempotency::Safe,
            |f: &Failure| *f,
            |r| retries.push((r.retry, r.attempts)),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(Failure::Transient)
                    } else {
                        Ok(n)
                    }
                }
            },
            || 0.5,
        )
        .await
        .unwrap();
        assert_eq!(value, 3);
        assert_eq!(retries, vec![(1, 6), (2, 6)]);
    }
}
