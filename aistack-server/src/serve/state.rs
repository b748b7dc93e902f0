//! What every handler shares: the engine, the store, the ingestor (built once the model is
//! ready), the breakers and the metrics.

use std::sync::Arc;

use aistack_core::config::Settings;
use aistack_core::embed::{Embedder, EmbeddingEngine};
use aistack_core::ingest::Ingestor;
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::{PgVectorStore, VectorStore};
use aistack_core::Result;
use tokio::sync::OnceCell;

use super::metrics::Metrics;

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
    pub metrics: Metrics,
    /// Whether the store is shared with other processes (then searches are not cached here).
    pub shared_store: bool,
    /// The PostgreSQL store under `store`, for pool figures.
    pub pg: Option<Arc<PgVectorStore>>,
    /// The OpenAPI document for this configuration, served at `/openapi.json`.
    pub openapi: String,
    ingestor: OnceCell<Arc<Ingestor>>,
}

impl AppState {
    /// State over a started engine and an open store.
    pub fn new(
        engine: Arc<EmbeddingEngine>,
        store: Arc<dyn VectorStore>,
        breakers: Arc<BreakerRegistry>,
        settings: Settings,
        shared_store: bool,
    ) -> Self {
        Self {
            openapi: super::ops::openapi_document(&settings.server),
            engine,
            store,
            breakers,
            settings,
            metrics: Metrics::new(),
            shared_store,
            pg: None,
            ingestor: OnceCell::new(),
        }
    }

    /// The ingestor; `Unavailable` until the model is ready.
    pub async fn ingestor(&self) -> Result<Arc<Ingestor>> {
        let embedder = self.engine.embedder()?;
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

    /// Open and idle connections of the PostgreSQL pool, when the store is pgvector.
    pub fn pool_stats(&self) -> Option<(u32, usize)> {
        self.pg.as_ref().map(|p| p.pool_stats())
    }

    /// The ingestor if it exists (for metrics).
    pub fn ingestor_if_ready(&self) -> Option<&Arc<Ingestor>> {
        self.ingestor.get()
    }
}
