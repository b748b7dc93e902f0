//! The health report (`GET /health`).

use aistack_core::resilience::BreakerSnapshot;
use serde::Serialize;
use utoipa::ToSchema;

/// The model's part of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelHealth {
    /// `loading`, `ready` or `failed`.
    pub state: String,
    /// Why loading failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The model as configured.
    pub id: String,
    /// Embedding dimensions, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dims: Option<usize>,
}

/// The store's part of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded`, `pgvector` or `qdrant`.
    pub backend: String,
    /// `ok` or `down`.
    pub status: String,
    /// The error kind when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One circuit breaker in the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerHealth {
    /// The breaker's name.
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Calls rejected while open.
    pub rejected: u64,
    /// Times it opened.
    pub opened: u64,
}

impl From<BreakerSnapshot> for BreakerHealth {
    fn from(b: BreakerSnapshot) -> Self {
        Self {
            name: b.name,
            state: b.state.as_str().to_string(),
            rejected: b.rejected,
            opened: b.opened,
        }
    }
}

/// `GET /health`: 200 only when the model is ready and the store answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// The embedding model.
    pub model: ModelHealth,
    /// The vector store.
    pub store: StoreHealth,
    /// Every circuit breaker.
    pub breakers: Vec<BreakerHealth>,
}
