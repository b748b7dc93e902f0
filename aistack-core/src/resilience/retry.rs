//! Retry with exponential backoff and full jitter, built on `backon` (the `backoff` crate is
//! unmaintained, RUSTSEC-2025-0012).

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, Retryable};
use rand::Rng;

use crate::config::ResilienceSettings;
use crate::error::Result;

/// How a failing call is retried: only retryable errors, with exponentially growing, fully
/// jittered delays, bounded by attempts and by total elapsed time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The base delay before the first retry; each retry doubles it.
    pub initial_delay: Duration,
    /// The cap on the base delay.
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from_settings(&ResilienceSettings::default())
    }
}

impl RetryPolicy {
    /// The policy described by the `resilience` settings.
    pub fn from_settings(s: &ResilienceSettings) -> Self {
        Self {
            max_attempts: s.retry_max_attempts.max(1),
            initial_delay: Duration::from_millis(s.retry_initial_delay_ms),
            max_delay: Duration::from_millis(s.retry_max_delay_ms),
            max_elapsed: Some(Duration::from_millis(s.retry_max_elapsed_ms)),
        }
    }

    /// The delays this policy would sleep between attempts, jittered afresh on each call.
    pub fn delays(&self) -> FullJitterBackoff {
        FullJitterBackoff {
            base: self.initial_delay,
            max: self.max_delay,
            retries_left: self.max_attempts.saturating_sub(1),
            started: Instant::now(),
            max_elapsed: self.max_elapsed,
        }
    }
}

/// The delay sequence of a [`RetryPolicy`]: the n-th delay is uniform in
/// `[0, min(max, initial × 2ⁿ)]` ("full jitter"), and the sequence ends when attempts or elapsed
/// time run out.
#[derive(Debug, Clone)]
pub struct FullJitterBackoff {
    base: Duration,
    max: Duration,
    retries_left: u32,
    started: Instant,
    max_elapsed: Option<Duration>,
}

impl Iterator for FullJitterBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        let ceiling = self.base.min(self.max);
        let delay = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            let nanos = rand::rng().random_range(0..=ceiling.as_nanos() as u64);
            Duration::from_nanos(nanos)
        };
        if let Some(limit) = self.max_elapsed {
            if self.started.elapsed() + delay >= limit {
                self.retries_left = 0;
                return None;
            }
        }
        self.retries_left -= 1;
        self.base = self.base.saturating_mul(2);
        Some(delay)
    }
}

impl BackoffBuilder for &RetryPolicy {
    type Backoff = FullJitterBackoff;

    fn build(self) -> FullJitterBackoff {
        self.delays()
    }
}

/// Runs `op` and retries it under `policy` while it fails with a retryable error
/// ([`crate::Error::is_retryable`]). Each retry is logged with the operation's name, the attempt
/// number, the error and the delay; the last error is returned when the policy gives up.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, name: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1u32;
    let result = op
        .retry(policy)
        .when(|e: &crate::Error| e.is_retryable())
        .notify(|e: &crate::Error, delay: Duration| {
            tracing::warn!(
                operation = name,
                attempt,
                error = %e.chain(),
                retry_in_ms = delay.as_millis() as u64,
                "attempt failed; retrying"
            );
            attempt += 1;
        })
        .await;
    if let Err(e) = &result {
        if attempt > 1 || e.is_retryable() {
            tracing::warn!(operation = name, attempts = attempt, error = %e.chain(), "giving up");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_elapsed: None,
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicU32::new(0);
        let out = retry(&fast(5), "flaky", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(Error::unavailable("not yet"))
            } else {
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let err = retry(&fast(3), "down", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::unavailable("down"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_caller_errors() {
        let calls = AtomicU32::new(0);
        let err = retry(&fast(5), "bad", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::invalid("empty text"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn max_elapsed_bounds_the_retrying() {
        let policy = RetryPolicy {
            max_attempts: 1000,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(5),
            max_elapsed: Some(Duration::from_millis(60)),
        };
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let _ = retry(&policy, "slow", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::unavailable("down"))
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let n = calls.load(Ordering::SeqCst);
        assert!(n > 1 && n < 1000, "made {n} calls");
    }

    #[test]
    fn delays_are_fully_jittered_and_capped() {
        let policy = RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_elapsed: None,
        };
        let mut saw_small = false;
        for _ in 0..200 {
            let d: Vec<Duration> = policy.delays().collect();
            assert_eq!(d.len(), 7);
            assert!(d[0] <= Duration::from_millis(100));
            assert!(d[1] <= Duration::from_millis(200));
            assert!(d.iter().all(|x| *x <= Duration::from_millis(400)));
            saw_small |= d[6] < Duration::from_millis(200);
        }
        // Full jitter draws from [0, cap]: later delays are sometimes small, too.
        assert!(saw_small);
    }
}
