//! What the gateway reports as it works, for metrics: attempts, first tokens, gaps between
//! chunks and how each answer ended. The server turns these into Prometheus series.

use std::time::Duration;

/// How one attempt at an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The upstream answered (for a stream: its first chunk came).
    Ok,
    /// The upstream refused the request as the caller's mistake (400, 413, 422): not retried.
    CallerError,
    /// 429: rate limited.
    RateLimited,
    /// 503 "Loading model": up, not ready yet.
    Loading,
    /// A 5xx, or a 4xx that says the upstream is misconfigured (401, 403, 404).
    ServerError,
    /// The connection failed.
    ConnectError,
    /// The first-token deadline passed.
    Timeout,
    /// The answer was not what the OpenAI API promises (bad JSON, an error object).
    Malformed,
    /// Not tried: its breaker is open.
    BreakerOpen,
    /// Not tried: it has `max_concurrent` requests in flight.
    Full,
}

impl AttemptOutcome {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::CallerError => "caller_error",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::Loading => "loading",
            AttemptOutcome::ServerError => "server_error",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Malformed => "malformed",
            AttemptOutcome::BreakerOpen => "breaker_open",
            AttemptOutcome::Full => "full",
        }
    }
}

/// How an answer that reached the client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerOutcome {
    /// Complete: the whole answer, ending with `[DONE]` when streamed.
    Complete,
    /// The upstream failed after the first byte; the client got an error event.
    Failed,
    /// The client went away; the upstream request was cancelled.
    Cancelled,
}

impl AnswerOutcome {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerOutcome::Complete => "complete",
            AnswerOutcome::Failed => "failed",
            AnswerOutcome::Cancelled => "cancelled",
        }
    }
}

/// Token counts an upstream reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// The end of one answer.
#[derive(Debug, Clone, Copy)]
pub struct AnswerEnd {
    /// How it ended.
    pub outcome: AnswerOutcome,
    /// From the request reaching the gateway to the end.
    pub total: Duration,
    /// The tokens the upstream reported, if it did.
    pub usage: Option<TokenUsage>,
}

/// Receives the gateway's events. Every method does nothing by default, so a library user
/// without metrics passes [`NoMetrics`].
pub trait LlmObserver: Send + Sync + 'static {
    /// One attempt at `upstream` for `route` ended with `outcome`.
    fn attempt(&self, route: &str, upstream: &str, outcome: AttemptOutcome) {
        let _ = (route, upstream, outcome);
    }
    /// The first token came `after` the request reached the gateway.
    fn first_token(&self, route: &str, upstream: &str, after: Duration) {
        let _ = (route, upstream, after);
    }
    /// Two stream chunks came `gap` apart.
    fn chunk_gap(&self, route: &str, upstream: &str, gap: Duration) {
        let _ = (route, upstream, gap);
    }
    /// An answer ended.
    fn answer(&self, route: &str, upstream: &str, end: &AnswerEnd) {
        let _ = (route, upstream, end);
    }
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl LlmObserver for NoMetrics {}
