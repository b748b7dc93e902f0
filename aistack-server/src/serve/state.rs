//! What every handler shares: the engine, the store, the ingestor (built once the model is
//! ready), the breakers and the metrics.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::embed::{Embedder, EmbeddingEngine, ModelEmbedder, ModelState};
use aistack_core::ingest::{DocHit, Ingestor};
use aistack_core::llm::{Gateway, Retriever};
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::VectorStore;
use aistack_core::Result;
use tokio::sync::{OnceCell, Semaphore};

use super::metrics::{LiveSources, Metrics};
use aistack_core::config::Settings;

/// Shared state of the server.
pub struct AppState {
    /// The embeddings engine (loading in the background at start).
    pub engine: Arc<EmbeddingEngine>,
    /// The vector store (behind retry and a breaker when it is remote).
    pub store: Arc<dyn VectorStore>,
    /// Named breakers, shown in health and metrics.
    pub breakers: Arc<BreakerRegistry>,
    /// All settings.
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the store is shared with other processes (then searches are not cached here).
    pub shared_store: bool,
    /// The names clients may send as the embedding model's `model` (never a path).
    pub model_names: Vec<String>,
    /// The chat gateway (no routes unless `[llm]` configures some).
    pub gateway: Arc<Gateway>,
    /// The API's request slots (`server.max_concurrent_requests`), shared by the HTTP routes and
    /// MCP tool calls: a request that finds none free is refused as overloaded.
    pub api_slots: Arc<Semaphore>,
    /// How long a request waits for a model that is still loading: `None` (HTTP) answers 503
    /// at once, which a client retries after `Retry-After`; stdio MCP, whose client starts the
    /// process and calls at once, waits up to the request deadline.
    pub model_wait: Option<Duration>,
    ingestor: Arc<OnceCell<Arc<Ingestor>>>,
}

impl AppState {
    /// State over a started engine and an open store; fails on an invalid `[llm]` section (an
    /// unreadable upstream key file, say).
    pub fn new(
        engine: Arc<EmbeddingEngine>,
        store: Arc<dyn VectorStore>,
        breakers: Arc<BreakerRegistry>,
        settings: Settings,
        shared_store: bool,
    ) -> Result<Self> {
        let ingestor = Arc::new(OnceCell::new());
        let gateway_cell = Arc::new(OnceCell::new());
        let metrics = Arc::new(Metrics::new(LiveSources {
            engine: engine.clone(),
            ingestor: ingestor.clone(),
            breakers: breakers.clone(),
            store: store.clone(),
            gateway: gateway_cell.clone(),
        }));
        let gateway = Arc::new(Gateway::new(
            &settings.llm,
            &settings.resilience,
            &breakers,
            Arc::new(metrics.llm.clone()),
        )?);
        let _ = gateway_cell.set(gateway.clone());
        let model_names = aistack_core::embed::model_names(
            engine.model_spec(),
            settings.server.model_name.as_deref(),
        );
        let api_slots = Arc::new(Semaphore::new(settings.server.max_concurrent_requests));
        Ok(Self {
            api_slots,
            model_wait: None,
            model_names,
            engine,
            store,
            breakers,
            settings,
            metrics,
            shared_store,
            gateway,
            ingestor,
        })
    }

    /// The ready embedder. While the model loads: `Unavailable` at once, or with `model_wait`
    /// set, once it is ready (or failed, or the wait ran out).
    pub async fn embedder(&self) -> Result<Arc<ModelEmbedder>> {
        match (self.model_wait, self.engine.state()) {
            (Some(wait), ModelState::Loading) => self.engine.wait_ready(Some(wait)).await,
            _ => self.engine.embedder(),
        }
    }

    /// The ingestor; `Unavailable` until the model is ready (see [`AppState::embedder`]).
    pub async fn ingestor(&self) -> Result<Arc<Ingestor>> {
        let embedder = self.embedder().await?;
        self.ingestor
            .get_or_try_init(|| async {
                // Another server over the same store could write at any time: no result cache.
                let entries = if self.shared_store {
                    0
                } else {
                    self.settings.server.search_cache_entries
                };
                let embedder: Arc<dyn Embedder> = embedder;
                Ingestor::new(embedder, self.store.clone(), None, entries).map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Forgets cached searches of a collection.
    pub fn invalidate(&self, collection: &str) {
        if let Some(i) = self.ingestor.get() {
            i.invalidate(collection);
        }
    }
}

/// Grounding searches through the ingestor, which exists once the model is ready.
#[async_trait::async_trait]
impl Retriever for AppState {
    async fn retrieve(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        opts: &aistack_core::ingest::SearchOptions,
    ) -> Result<Vec<DocHit>> {
        self.ingestor()
            .await?
            .retrieve(collection, query, k, opts)
            .await
    }
}
