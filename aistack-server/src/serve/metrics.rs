//! Prometheus metrics: request counters and latency histograms recorded per request, and the
//! engine, cache, breaker and store figures read at scrape time.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

use super::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Every metric the server exports, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    model_ready: Gauge,
    queue_depth: Gauge,
    rejected: Counter,
    batches: Counter,
    sequences: Counter,
    padded_tokens: Counter,
    tokens: Counter,
    queue_wait_us: Counter,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_entries: Family<CacheLabels, Gauge>,
    breaker_state: Family<NameLabels, Gauge>,
    breaker_rejected: Family<NameLabels, Counter>,
    breaker_failures: Family<NameLabels, Counter>,
    collections: Gauge,
    pool_size: Gauge,
    pool_idle: Gauge,
}

/// Sets a counter read from the core's own monotonic figure.
fn set_counter(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}

impl Metrics {
    /// All metrics, registered under `aistack_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aistack");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let mut m = Self {
            registry,
            requests,
            latency,
            model_ready: Gauge::default(),
            queue_depth: Gauge::default(),
            rejected: Counter::default(),
            batches: Counter::default(),
            sequences: Counter::default(),
            padded_tokens: Counter::default(),
            tokens: Counter::default(),
            queue_wait_us: Counter::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_entries: Family::default(),
            breaker_state: Family::default(),
            breaker_rejected: Family::default(),
            breaker_failures: Family::default(),
            collections: Gauge::default(),
            pool_size: Gauge::default(),
            pool_idle: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "model_ready",
            "1 when the embedding model is ready, else 0",
            m.model_ready.clone(),
        );
        r.register(
            "embed_queue_depth",
            "Embedding requests admitted and not yet answered",
            m.queue_depth.clone(),
        );
        r.register(
            "embed_rejected",
            "Embedding requests refused because the queue was full",
            m.rejected.clone(),
        );
        r.register("embed_batches", "Forward passes run", m.batches.clone());
        r.register(
            "embed_sequences",
            "Sequences embedded (batch size = sequences / batches)",
            m.sequences.clone(),
        );
        r.register(
            "embed_padded_tokens",
            "Padded tokens computed",
            m.padded_tokens.clone(),
        );
        r.register("embed_tokens", "Real tokens computed", m.tokens.clone());
        r.register(
            "embed_queue_wait_microseconds",
            "Total time requests waited in the batching queue",
            m.queue_wait_us.clone(),
        );
        r.register("cache_hits", "Cache hits", m.cache_hits.clone());
        r.register("cache_misses", "Cache misses", m.cache_misses.clone());
        r.register("cache_entries", "Entries held", m.cache_entries.clone());
        r.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "breaker_rejected",
            "Calls a breaker rejected without trying",
            m.breaker_rejected.clone(),
        );
        r.register(
            "breaker_failures",
            "Calls that failed through a breaker",
            m.breaker_failures.clone(),
        );
        r.register(
            "store_collections",
            "Collections in the store",
            m.collections.clone(),
        );
        r.register(
            "store_pool_connections",
            "Open connections of the store's pool (pgvector)",
            m.pool_size.clone(),
        );
        r.register(
            "store_pool_idle_connections",
            "Idle connections of the store's pool (pgvector)",
            m.pool_idle.clone(),
        );
        m
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Reads the live figures and renders everything in the OpenMetrics text format.
    pub async fn render(&self, app: &AppState) -> String {
        self.model_ready
            .set(matches!(app.engine.state(), aistack_core::embed::ModelState::Ready) as i64);
        if let Ok(e) = app.engine.embedder() {
            let s = e.stats();
            self.queue_depth.set(s.batcher.in_flight as i64);
            set_counter(&self.rejected, s.batcher.rejected);
            set_counter(&self.batches, s.batcher.batches);
            set_counter(&self.sequences, s.batcher.sequences);
            set_counter(&self.padded_tokens, s.batcher.padded_tokens);
            set_counter(&self.tokens, s.batcher.tokens);
            set_counter(&self.queue_wait_us, s.batcher.queue_wait_us);
            self.cache_figures("embeddings", s.cache);
        }
        if let Some(i) = app.ingestor_if_ready() {
            self.cache_figures("search", i.cache_stats());
        }
        for b in app.breakers.snapshot() {
            let l = NameLabels {
                name: b.name.clone(),
            };
            self.breaker_state
                .get_or_create(&l)
                .set(b.state.as_gauge() as i64);
            set_counter(&self.breaker_rejected.get_or_create(&l), b.rejected);
            set_counter(&self.breaker_failures.get_or_create(&l), b.failures);
        }
        if let Ok(list) = app.store.list_collections().await {
            self.collections.set(list.len() as i64);
        }
        if let Some((size, idle)) = app.pool_stats() {
            self.pool_size.set(size as i64);
            self.pool_idle.set(idle as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn cache_figures(&self, name: &str, s: aistack_core::cache::CacheStats) {
        let l = CacheLabels {
            cache: name.to_string(),
        };
        set_counter(&self.cache_hits.get_or_create(&l), s.hits);
        set_counter(&self.cache_misses.get_or_create(&l), s.misses);
        self.cache_entries.get_or_create(&l).set(s.entries as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: counts every request by its route template (not its raw path) and status.
pub async fn record(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    app.metrics.observe(
        &route,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}
