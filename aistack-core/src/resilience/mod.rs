//! Resilience primitives: retry with exponential backoff and full jitter ([`retry`]), and named
//! circuit breakers kept in a [`BreakerRegistry`] so health and metrics can report them.

mod breaker;
mod retry;

pub use breaker::{
    BreakerConfig, BreakerPermit, BreakerPolicy, BreakerRegistry, BreakerSnapshot, BreakerState,
    CircuitBreaker,
};
pub use retry::{retry, RetryPolicy};
