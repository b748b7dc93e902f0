//! Circuit breakers on `failsafe`'s state machine, with what it lacks added: a cap on trial
//! calls while half-open, a per-call timeout that counts as a failure, caller errors never
//! counted, and state and counters readable through a [`BreakerRegistry`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, Instant};

use failsafe::failure_policy::{self, ConsecutiveFailures, SuccessRateOverTimeWindow};
use failsafe::{FailurePolicy, Instrument, StateMachine};
use serde::Serialize;

use crate::config::ResilienceSettings;
use crate::error::{Error, Result};

/// A breaker's state: closed lets calls through, open rejects them, half-open lets a few trial
/// calls through to probe the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected at once.
    Open,
    /// A limited number of trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// The state as a gauge value: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    fn from_gauge(v: u8) -> Self {
        match v {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }

    /// The state's name: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// When a breaker opens.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerPolicy {
    /// After this many failures in a row.
    ConsecutiveFailures(u32),
    /// When the success rate over `window` drops below `required_success_rate` (0..=1), once at
    /// least `min_requests` calls were seen in the window.
    FailureRate {
        /// The lowest acceptable success rate.
        required_success_rate: f64,
        /// Calls needed in the window before the rate is judged.
        min_requests: u32,
        /// The window, in whole seconds (at least one).
        window: Duration,
    },
}

/// A breaker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// When to open.
    pub policy: BreakerPolicy,
    /// The first open interval; it doubles while trials keep failing, up to `max_open`.
    pub open_for: Duration,
    /// The longest open interval.
    pub max_open: Duration,
    /// Trial calls let through at once while half-open.
    pub half_open_max_calls: u32,
    /// Deadline of one call; exceeding it fails the call with `Timeout` and counts as a failure.
    pub call_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::from_settings(&ResilienceSettings::default())
    }
}

impl BreakerConfig {
    /// The breaker described by the `resilience` settings.
    pub fn from_settings(s: &ResilienceSettings) -> Self {
        Self {
            policy: BreakerPolicy::ConsecutiveFailures(s.breaker_consecutive_failures.max(1)),
            open_for: Duration::from_millis(s.breaker_open_ms.max(1)),
            max_open: Duration::from_millis(s.breaker_max_open_ms.max(s.breaker_open_ms)),
            half_open_max_calls: s.breaker_half_open_calls.max(1),
            call_timeout: Duration::from_millis(s.breaker_call_timeout_ms.max(1)),
        }
    }

    fn validate(&self) -> Result<()> {
        if let BreakerPolicy::FailureRate {
            required_success_rate,
            window,
            ..
        } = &self.policy
        {
            if !(0.0..=1.0).contains(required_success_rate) {
                return Err(Error::config(
                    "breaker.required_success_rate",
                    format!("{required_success_rate} is not within 0..=1"),
                ));
            }
            if window.as_secs() == 0 {
                return Err(Error::config(
                    "breaker.window",
                    "must be at least one second",
                ));
            }
        }
        if self.open_for.is_zero() || self.open_for > self.max_open {
            return Err(Error::config(
                "breaker.open_for",
                "must be > 0 and not exceed max_open",
            ));
        }
        if self.half_open_max_calls == 0 {
            return Err(Error::config("breaker.half_open_max_calls", "must be > 0"));
        }
        Ok(())
    }
}

/// Open intervals that double from `open_for` up to `max_open`. failsafe's own backoffs count in
/// whole seconds and panic below one second, so this one is ours.
#[derive(Debug, Clone)]
struct OpenBackoff {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next.min(self.max);
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(d)
    }
}

/// The two failsafe policies behind one type, so a registry can hold either.
enum PolicyKind {
    Consecutive(ConsecutiveFailures<OpenBackoff>),
    Rate(SuccessRateOverTimeWindow<OpenBackoff>),
}

/// A failsafe policy that also records when the breaker will let a trial call through, which
/// failsafe keeps to itself; rejected callers are told it as their `Retry-After`.
struct Policy {
    kind: PolicyKind,
    counters: Arc<Counters>,
}

impl FailurePolicy for Policy {
    fn record_success(&mut self) {
        match &mut self.kind {
            PolicyKind::Consecutive(p) => p.record_success(),
            PolicyKind::Rate(p) => p.record_success(),
        }
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let open_for = match &mut self.kind {
            PolicyKind::Consecutive(p) => p.mark_dead_on_failure(),
            PolicyKind::Rate(p) => p.mark_dead_on_failure(),
        };
        if let Some(d) = open_for {
            let until = self.counters.epoch.elapsed().saturating_add(d);
            self.counters
                .open_until_ms
                .store(until.as_millis() as u64, Ordering::SeqCst);
        }
        open_for
    }

    fn revived(&mut self) {
        match &mut self.kind {
            PolicyKind::Consecutive(p) => p.revived(),
            PolicyKind::Rate(p) => p.revived(),
        }
    }
}

/// Counters and the state gauge, fed by failsafe's `Instrument` callbacks and by the wrapper.
#[derive(Debug)]
struct Counters {
    /// The time `open_until_ms` counts from.
    epoch: Instant,
    /// When the open breaker lets a trial through, in ms since `epoch`.
    open_until_ms: AtomicU64,
    state: AtomicU8,
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    ignored_errors: AtomicU64,
    rejected: AtomicU64,
    timeouts: AtomicU64,
    opened: AtomicU64,
}

#[derive(Clone)]
struct Gauge(Arc<Counters>);

impl Instrument for Gauge {
    fn on_call_rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_open(&self) {
        self.0
            .state
            .store(BreakerState::Open.as_gauge(), Ordering::SeqCst);
        self.0.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn on_half_open(&self) {
        self.0
            .state
            .store(BreakerState::HalfOpen.as_gauge(), Ordering::SeqCst);
    }

    fn on_closed(&self) {
        self.0.open_until_ms.store(0, Ordering::SeqCst);
        self.0
            .state
            .store(BreakerState::Closed.as_gauge(), Ordering::SeqCst);
    }
}

/// A named circuit breaker around calls to one backend.
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    machine: StateMachine<Policy, Gauge>,
    counters: Arc<Counters>,
    trials_in_flight: AtomicU32,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// A point-in-time view of one breaker, for health and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The registry name.
    pub name: String,
    /// The current state.
    pub state: BreakerState,
    /// Calls let through.
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed and counted against the backend (timeouts included).
    pub failures: u64,
    /// Calls that failed with a caller error, not counted against the backend.
    pub ignored_errors: u64,
    /// Calls rejected without being tried.
    pub rejected: u64,
    /// Calls that exceeded the call timeout.
    pub timeouts: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

impl CircuitBreaker {
    /// Builds a breaker; fails with `Config` on invalid settings.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<Self> {
        config.validate()?;
        let backoff = OpenBackoff {
            next: config.open_for,
            max: config.max_open,
        };
        let kind = match &config.policy {
            BreakerPolicy::ConsecutiveFailures(n) => {
                PolicyKind::Consecutive(failure_policy::consecutive_failures((*n).max(1), backoff))
            }
            BreakerPolicy::FailureRate {
                required_success_rate,
                min_requests,
                window,
            } => PolicyKind::Rate(failure_policy::success_rate_over_time_window(
                *required_success_rate,
                *min_requests,
                *window,
                backoff,
            )),
        };
        let counters = Arc::new(Counters {
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            state: AtomicU8::new(BreakerState::Closed.as_gauge()),
            calls: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ignored_errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        });
        let policy = Policy {
            kind,
            counters: counters.clone(),
        };
        let machine = failsafe::Config::new()
            .failure_policy(policy)
            .instrument(Gauge(counters.clone()))
            .build();
        Ok(Self {
            name: name.into(),
            config,
            machine,
            counters,
            trials_in_flight: AtomicU32::new(0),
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state. An open breaker whose interval has passed still reads `Open` until the
    /// next call asks to go through.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_gauge(self.counters.state.load(Ordering::SeqCst))
    }

    /// Runs `call` through the breaker: rejected at once with `CircuitOpen` while open (or when
    /// the half-open trial slots are taken), failed with `Timeout` past the call timeout.
    /// Caller errors and a full disk ([`Error::spares_breaker`]) do not count as backend failures.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let permit = self.permit()?;
        let result = match tokio::time::timeout(self.config.call_timeout, call()).await {
            Ok(r) => r,
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Error::Timeout {
                    what: format!("call through breaker '{}'", self.name),
                    after: self.config.call_timeout,
                })
            }
        };
        match &result {
            Ok(_) => permit.success(),
            Err(e) if e.spares_breaker() => permit.ignore(),
            Err(e) => permit.failure(e),
        }
        result
    }

    /// Asks to let one call through, for calls whose outcome is known only later (a stream):
    /// rejected with `CircuitOpen` like [`CircuitBreaker::call`]. The caller reports the outcome
    /// on the permit; a permit dropped without one counts as neither success nor failure.
    pub fn permit(&self) -> Result<BreakerPermit<'_>> {
        if !self.machine.is_call_permitted() {
            return Err(Error::CircuitOpen {
                name: self.name.clone(),
                retry_after: self.half_opens_in(),
            });
        }
        let trial = self.state() == BreakerState::HalfOpen;
        if trial {
            let before = self.trials_in_flight.fetch_add(1, Ordering::SeqCst);
            if before >= self.config.half_open_max_calls {
                self.trials_in_flight.fetch_sub(1, Ordering::SeqCst);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Error::CircuitOpen {
                    name: self.name.clone(),
                    retry_after: None,
                });
            }
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        Ok(BreakerPermit {
            breaker: self,
            trial,
        })
    }

    /// Counts a failure seen outside a permit (e.g. a stream that broke after its call
    /// succeeded), so a backend that fails mid-answer still opens its breaker.
    pub fn record_failure(&self, error: &Error) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let was = self.state();
        self.machine.on_error();
        if self.state() == BreakerState::Open && was != BreakerState::Open {
            tracing::warn!(breaker = %self.name, error = %error.chain(), "circuit breaker opened");
        }
    }

    /// How long until an open breaker lets a trial call through; `None` once that time has come.
    pub fn half_opens_in(&self) -> Option<Duration> {
        let c = &self.counters;
        let until = Duration::from_millis(c.open_until_ms.load(Ordering::SeqCst));
        until
            .checked_sub(c.epoch.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Closes the breaker and forgets its failure history.
    pub fn reset(&self) {
        self.machine.reset();
        self.counters.open_until_ms.store(0, Ordering::SeqCst);
    }

    /// A snapshot of the state and counters.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let c = &self.counters;
        BreakerSnapshot {
            name: self.name.clone(),
            state: self.state(),
            calls: c.calls.load(Ordering::Relaxed),
            successes: c.successes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            ignored_errors: c.ignored_errors.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            opened: c.opened.load(Ordering::Relaxed),
        }
    }
}

/// One call let through a [`CircuitBreaker`]; holds a half-open trial slot until dropped.
#[must_use = "report the call's outcome on the permit"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
}

impl BreakerPermit<'_> {
    /// The call succeeded: a half-open breaker closes.
    pub fn success(self) {
        self.breaker
            .counters
            .successes
            .fetch_add(1, Ordering::Relaxed);
        self.breaker.machine.on_success();
    }

    /// The call failed because of the backend: counts towards opening the breaker.
    pub fn failure(self, error: &Error) {
        self.breaker.record_failure(error);
    }

    /// The call failed for a reason that says nothing about the backend's health (a caller
    /// error, a backend still starting up).
    pub fn ignore(self) {
        self.breaker
            .counters
            .ignored_errors
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.breaker.trials_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Breakers by name, shared by the parts that call backends and the parts that report health.
#[derive(Debug, Default)]
pub struct BreakerRegistry {
    breakers: RwLock<BTreeMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The breaker called `name`, created with `config` if it does not exist yet.
    pub fn get_or_create(&self, name: &str, config: &BreakerConfig) -> Result<Arc<CircuitBreaker>> {
        if let Some(b) = self.get(name) {
            return Ok(b);
        }
        let mut map = self.breakers.write();
        if let Some(b) = map.get(name) {
            return Ok(b.clone());
        }
        let b = Arc::new(CircuitBreaker::new(name, config.clone())?);
        map.insert(name.to_string(), b.clone());
        Ok(b)
    }

    /// The breaker called `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        self.breakers.read().get(name).cloned()
    }

    /// Snapshots of every breaker, sorted by name.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        self.breakers
            .read()
            .values()
            .map(|b| b.snapshot())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32, open_ms: u64) -> BreakerConfig {
        BreakerConfig {
            policy: BreakerPolicy::ConsecutiveFailures(failures),
            open_for: Duration::from_millis(open_ms),
            max_open: Duration::from_millis(open_ms * 4),
            half_open_max_calls: 1,
            call_timeout: Duration::from_millis(200),
        }
    }

    async fn fail(b: &CircuitBreaker) -> Error {
        b.call(|| async { Err::<(), _>(Error::unavailable("backend down")) })
            .await
            .unwrap_err()
    }

    async fn succeed(b: &CircuitBreaker) -> Result<u32> {
        b.call(|| async { Ok(7) }).await
    }

    #[tokio::test]
    async fn an_open_breaker_tells_when_it_half_opens() {
        let b = CircuitBreaker::new("pg", config(1, 3_000)).unwrap();
        assert_eq!(b.half_opens_in(), None);
        fail(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
        match succeed(&b).await.unwrap_err() {
            Error::CircuitOpen {
                retry_after: Some(d),
                ..
            } => assert!(
                d > Duration::from_millis(2_000) && d <= Duration::from_millis(3_000),
                "{d:?}"
            ),
            other => panic!("expected CircuitOpen with a retry time, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn closed_open_half_open_closed() {
        let b = CircuitBreaker::new("pg", config(3, 50)).unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..2 {
            fail(&b).await;
            assert_eq!(b.state(), BreakerState::Closed);
        }
        fail(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
        // Open: rejected without calling.
        let called = std::sync::atomic::AtomicBool::new(false);
        let err = b
            .call(|| async {
                called.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CircuitOpen { .. }));
        assert!(!called.load(Ordering::SeqCst));
        // After the open interval a trial goes through; success closes the breaker.
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(succeed(&b).await.unwrap(), 7);
        assert_eq!(b.state(), BreakerState::Closed);
        let s = b.snapshot();
        assert_eq!(s.failures, 3);
        assert_eq!(s.rejected, 1);
        assert_eq!(s.opened, 1);
    }

    #[tokio::test]
    async fn failed_trial_reopens_for_longer() {
        let b = CircuitBreaker::new("q", config(1, 40)).unwrap();
        fail(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        fail(&b).await; // the trial fails
        assert_eq!(b.state(), BreakerState::Open);
        // The second open interval is longer (80 ms): still open after 60 ms.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(matches!(
            succeed(&b).await.unwrap_err(),
            Error::CircuitOpen { .. }
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(succeed(&b).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn half_open_admits_only_the_trial_cap() {
        let b = Arc::new(CircuitBreaker::new("cap", config(1, 20)).unwrap());
        fail(&b).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let b2 = b.clone();
        let trial = tokio::spawn(async move {
            b2.call(|| async {
                release_rx.await.ok();
                Ok(1)
            })
            .await
        });
        // Let the trial start and take the only slot.
        while b.snapshot().calls < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let err = succeed(&b).await.unwrap_err();
        assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
        release_tx.send(()).unwrap();
        assert_eq!(trial.await.unwrap().unwrap(), 1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(succeed(&b).await.is_ok());
    }

    #[tokio::test]
    async fn caller_errors_are_not_counted() {
        let b = CircuitBreaker::new("caller", config(2, 1000)).unwrap();
        for _ in 0..10 {
            let e = b
                .call(|| async { Err::<(), _>(Error::invalid("bad vector")) })
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().ignored_errors, 10);
        assert_eq!(b.snapshot().failures, 0);
    }

    #[tokio::test]
    async fn slow_calls_time_out_and_count() {
        let b = CircuitBreaker::new("slow", config(2, 1000)).unwrap();
        for _ in 0..2 {
            let e = b
                .call(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().timeouts, 2);
    }

    #[tokio::test]
    async fn failure_rate_policy_opens() {
        let cfg = BreakerConfig {
            policy: BreakerPolicy::FailureRate {
                required_success_rate: 0.9,
                min_requests: 4,
                window: Duration::from_secs(1),
            },
            ..config(1, 1000)
        };
        let b = CircuitBreaker::new("rate", cfg).unwrap();
        let started = std::time::Instant::now();
        // Four quick failures: the rate is judged only once a full window has been observed.
        for _ in 0..4 {
            fail(&b).await;
        }
        if started.elapsed() < Duration::from_millis(900) {
            assert_eq!(b.state(), BreakerState::Closed);
        }
        let deadline = started + Duration::from_secs(5);
        while b.state() == BreakerState::Closed && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fail(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[test]
    fn invalid_config_is_refused_not_panicking() {
        let cfg = BreakerConfig {
            policy: BreakerPolicy::FailureRate {
                required_success_rate: 1.5,
                min_requests: 1,
                window: Duration::from_secs(1),
            },
            ..config(1, 10)
        };
        assert_eq!(
            CircuitBreaker::new("x", cfg).unwrap_err().kind(),
            crate::ErrorKind::Config
        );
    }

    #[test]
    fn registry_returns_the_same_breaker() {
        let r = BreakerRegistry::new();
        let a = r.get_or_create("pg", &config(3, 10)).unwrap();
        let b = r.get_or_create("pg", &config(9, 10)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        r.get_or_create("qdrant", &config(3, 10)).unwrap();
        let names: Vec<_> = r.snapshot().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["pg", "qdrant"]);
    }
}
