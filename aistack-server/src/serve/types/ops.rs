//! The health report (`GET /health`).

use aistack_core::llm::{Readiness, UpstreamHealth};
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
    /// The model's name (what clients send as `model`), never a server path.
    pub id: String,
    /// Embedding dimensions, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dims: Option<usize>,
    /// Admission by wait: the bound interactive requests are admitted with, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_wait: Option<QueueWaitHealth>,
    /// What the model is, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
}

/// What an embedding model is (in `/health` and `/v1/models`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelDetails {
    /// The transformer's architecture, as its `config.json` names it (`bert`, `mpnet`, ...).
    pub architecture: String,
    /// Embedding dimensions.
    pub dims: usize,
    /// Longest input in tokens, special tokens included; longer inputs are truncated.
    pub max_input_tokens: usize,
    /// Pooling modes, concatenated in this order (`mean`, `cls`, `lasttoken`, ...).
    pub pooling: Vec<String>,
    /// Whether embeddings are L2-normalized by the model's own pipeline.
    pub normalize: bool,
    /// The model's prompts by name, as `prompt_name` takes them.
    pub prompts: std::collections::BTreeMap<String, String>,
    /// The prompt applied when a request names none, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_prompt_name: Option<String>,
}

impl From<&aistack_core::embed::ModelInfo> for ModelDetails {
    fn from(i: &aistack_core::embed::ModelInfo) -> Self {
        Self {
            architecture: i.architecture.clone(),
            dims: i.dims,
            max_input_tokens: i.max_input_tokens,
            pooling: i.pooling.iter().map(|p| p.name().to_string()).collect(),
            normalize: i.normalize,
            prompts: i.prompts.clone(),
            default_prompt_name: i.default_prompt_name.clone(),
        }
    }
}

/// The wait bound of interactive embedding requests and where it came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueWaitHealth {
    /// The bound in milliseconds; absent when admission is by count only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_ms: Option<u64>,
    /// `calibrated` (measured at start on this CPU and model), `configured`
    /// (`embed.max_queue_wait_ms`) or `off`.
    pub source: String,
    /// The measured forward pass of eight short sentences it was calibrated from, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_pass_ms: Option<f64>,
}

impl From<aistack_core::embed::QueueWaitInfo> for QueueWaitHealth {
    fn from(q: aistack_core::embed::QueueWaitInfo) -> Self {
        use aistack_core::embed::QueueWaitSource;
        Self {
            bound_ms: q.bound_ms,
            source: match q.source {
                QueueWaitSource::Calibrated => "calibrated",
                QueueWaitSource::Configured => "configured",
                QueueWaitSource::Off => "off",
            }
            .to_string(),
            calibration_pass_ms: q.calibration_pass_ms,
        }
    }
}

/// The store's part of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded`, `pgvector` or `qdrant`.
    pub backend: String,
    /// `ok`; `degraded` when reads work but writes fail (a full or read-only disk); `down`.
    pub status: String,
    /// Whether writes work now.
    pub writable: bool,
    /// The error code when degraded or down (`insufficient_storage`, `unavailable`, ...).
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

/// `GET /health`: 200 when the model is ready and the store answers reads (`degraded` when
/// the store refuses writes), 503 otherwise.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (reads and embeddings served, writes failing) or `unavailable`.
    pub status: String,
    /// The embedding model.
    pub model: ModelHealth,
    /// The vector store.
    pub store: StoreHealth,
    /// Every circuit breaker.
    pub breakers: Vec<BreakerHealth>,
    /// The chat gateway's upstreams (none unless `[llm]` configures some). Their state does not
    /// change the status: a chat route falls back, and embeddings and search go on.
    pub upstreams: Vec<UpstreamHealthView>,
}

/// One chat upstream in the health report: no URL, no key.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamHealthView {
    /// The upstream's name.
    pub name: String,
    /// What the background probe last saw: `unknown`, `ready`, `loading` or `down`.
    pub readiness: String,
    /// Its breaker: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Requests in flight.
    pub in_flight: usize,
    /// Why the last probe failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<UpstreamHealth> for UpstreamHealthView {
    fn from(u: UpstreamHealth) -> Self {
        let readiness = match u.readiness {
            Readiness::Unknown => "unknown",
            Readiness::Ready => "ready",
            Readiness::Loading => "loading",
            Readiness::Down => "down",
        };
        Self {
            name: u.name,
            readiness: readiness.to_string(),
            breaker: u.breaker.as_str().to_string(),
            in_flight: u.in_flight,
            last_error: u.last_error,
        }
    }
}
