//! Prometheus metrics: request counters and latency histograms recorded per request, and the
//! engine, cache, breaker and pool figures read at scrape time by a [`Collector`] that encodes
//! the core's own monotonic counters as const metrics.

use std::sync::Arc;
use std::time::Instant;

use aistack_core::cache::CacheStats;
use aistack_core::embed::{BatcherStats, EmbeddingEngine, ModelState};
use aistack_core::ingest::Ingestor;
use aistack_core::llm::{AnswerEnd, AttemptOutcome, Gateway, LlmObserver, Readiness};
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::{PoolStats, VectorStore};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::OnceCell;

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
struct ToolLabels {
    tool: &'static str,
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLatencyLabels {
    tool: &'static str,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmLabels {
    route: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmOutcomeLabels {
    route: String,
    upstream: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmTokenLabels {
    route: String,
    upstream: String,
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The live sources the collector reads at each scrape.
pub struct LiveSources {
    /// The embeddings engine (model state, batcher and cache figures).
    pub engine: Arc<EmbeddingEngine>,
    /// The ingestor once built (search-cache figures).
    pub ingestor: Arc<OnceCell<Arc<Ingestor>>>,
    /// Every circuit breaker.
    pub breakers: Arc<BreakerRegistry>,
    /// The store, for its connection pool's figures.
    pub store: Arc<dyn VectorStore>,
    /// The chat gateway once built (upstream readiness and load).
    pub gateway: Arc<OnceCell<Arc<Gateway>>>,
}

impl std::fmt::Debug for LiveSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSources").finish_non_exhaustive()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One labelled family of const metrics of type `kind`: `(labels, value)` rows under one
/// descriptor, which is written even when there are no rows yet.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result {
    let mut d = e.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in rows {
        metric.encode(d.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for LiveSources {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let ready = matches!(self.engine.state(), ModelState::Ready);
        gauge(
            &mut e,
            "model_ready",
            "1 when the embedding model is ready, else 0",
            ready as i64,
        )?;
        let mut caches: Vec<(&'static str, CacheStats)> = Vec::new();
        // Zeros until the model is ready, so every series exists from the first scrape.
        let b = match self.engine.embedder() {
            Ok(embedder) => {
                let s = embedder.stats();
                caches.push(("embeddings", s.cache));
                s.batcher
            }
            Err(_) => BatcherStats::default(),
        };
        gauge(
            &mut e,
            "embed_queue_depth",
            "Embedding requests admitted and not yet answered",
            b.in_flight as i64,
        )?;
        counter(
            &mut e,
            "embed_rejected",
            "Embedding requests refused because the queue was full",
            b.rejected,
        )?;
        counter(
            &mut e,
            "embed_rejected_wait",
            "Embedding requests refused by admission by wait: interactive ones that would have queued longer than the wait bound, bulk ones the queue could not finish before their deadline",
            b.rejected_wait,
        )?;
        gauge(
            &mut e,
            "embed_queued_tokens",
            "Tokens queued or computing, ingestion included",
            b.queued_tokens as i64,
        )?;
        gauge(
            &mut e,
            "embed_urgent_tokens",
            "Tokens of queries and embeddings calls waiting for a pass: with the pass in progress, the work ahead of a new one",
            b.urgent_tokens as i64,
        )?;
        gauge(
            &mut e,
            "embed_tokens_per_second",
            "Recent compute throughput that admission by wait time divides by",
            b.tokens_per_second as i64,
        )?;
        counter(&mut e, "embed_batches", "Forward passes run", b.batches)?;
        counter(
            &mut e,
            "embed_sequences",
            "Sequences embedded (batch size = sequences / batches)",
            b.sequences,
        )?;
        counter(
            &mut e,
            "embed_padded_tokens",
            "Padded tokens computed",
            b.padded_tokens,
        )?;
        counter(&mut e, "embed_tokens", "Real tokens computed", b.tokens)?;
        counter(
            &mut e,
            "embed_queue_wait_microseconds",
            "Total time requests waited in the batching queue",
            b.queue_wait_us,
        )?;
        if let Some(i) = self.ingestor.get() {
            caches.push(("search", i.cache_stats()));
        }
        let by_cache = |f: fn(&CacheStats) -> u64| {
            caches
                .iter()
                .map(move |(cache, s)| (CacheLabels { cache }, f(s)))
                .collect::<Vec<_>>()
        };
        let cc = |rows: Vec<(CacheLabels, u64)>| {
            rows.into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v)))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "cache_hits",
            "Cache hits",
            MetricType::Counter,
            cc(by_cache(|s| s.hits)),
        )?;
        family(
            &mut e,
            "cache_misses",
            "Cache misses",
            MetricType::Counter,
            cc(by_cache(|s| s.misses)),
        )?;
        family(
            &mut e,
            "cache_entries",
            "Entries held",
            MetricType::Gauge,
            by_cache(|s| s.entries)
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        let breakers = self.breakers.snapshot();
        let name = |b: &aistack_core::resilience::BreakerSnapshot| NameLabels {
            name: b.name.clone(),
        };
        family(
            &mut e,
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            MetricType::Gauge,
            breakers
                .iter()
                .map(|b| (name(b), ConstGauge::new(b.state.as_gauge() as i64))),
        )?;
        family(
            &mut e,
            "breaker_rejected",
            "Calls a breaker rejected without trying",
            MetricType::Counter,
            breakers
                .iter()
                .map(|b| (name(b), ConstCounter::new(b.rejected))),
        )?;
        family(
            &mut e,
            "breaker_failures",
            "Calls that failed through a breaker",
            MetricType::Counter,
            breakers
                .iter()
                .map(|b| (name(b), ConstCounter::new(b.failures))),
        )?;
        let upstreams = self.gateway.get().map(|g| g.health()).unwrap_or_default();
        let up = |u: &aistack_core::llm::UpstreamHealth| NameLabels {
            name: u.name.clone(),
        };
        family(
            &mut e,
            "llm_upstream_ready",
            "1 when the last probe of the upstream succeeded, else 0",
            MetricType::Gauge,
            upstreams.iter().map(|u| {
                (
                    up(u),
                    ConstGauge::new((u.readiness == Readiness::Ready) as i64),
                )
            }),
        )?;
        family(
            &mut e,
            "llm_upstream_in_flight",
            "Requests in flight to the upstream",
            MetricType::Gauge,
            upstreams
                .iter()
                .map(|u| (up(u), ConstGauge::new(u.in_flight as i64))),
        )?;
        // Zeros for a store without a pool, as before the collector existed.
        let pool = self
            .store
            .pool_stats()
            .unwrap_or(PoolStats { size: 0, idle: 0 });
        gauge(
            &mut e,
            "store_pool_connections",
            "Open connections of the store's pool (pgvector)",
            pool.size as i64,
        )?;
        gauge(
            &mut e,
            "store_pool_idle_connections",
            "Idle connections of the store's pool (pgvector)",
            pool.idle as i64,
        )?;

        Ok(())
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The chat gateway's series: attempts and answers by outcome, tokens, and histograms of time to
/// first token, answer time and the gap between stream chunks, per route and upstream.
#[derive(Clone)]
pub struct LlmMetrics {
    attempts: Family<LlmOutcomeLabels, Counter>,
    answers: Family<LlmOutcomeLabels, Counter>,
    tokens: Family<LlmTokenLabels, Counter>,
    first_token: Histograms<LlmLabels>,
    total: Histograms<LlmLabels>,
    gap: Histograms<LlmLabels>,
}

impl std::fmt::Debug for LlmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmMetrics").finish_non_exhaustive()
    }
}

fn gap_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl LlmMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            attempts: Family::default(),
            answers: Family::default(),
            tokens: Family::default(),
            first_token: Family::new_with_constructor(latency_histogram),
            total: Family::new_with_constructor(latency_histogram),
            gap: Family::new_with_constructor(gap_histogram),
        };
        registry.register(
            "llm_attempts",
            "Attempts at upstreams by route, upstream and outcome",
            m.attempts.clone(),
        );
        registry.register(
            "llm_answers",
            "Answers by route, upstream and how they ended (complete, failed, cancelled)",
            m.answers.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens the upstreams reported, by route, upstream and kind (prompt, completion)",
            m.tokens.clone(),
        );
        registry.register(
            "llm_time_to_first_token_seconds",
            "From the request to the upstream's first token",
            m.first_token.clone(),
        );
        registry.register(
            "llm_answer_seconds",
            "From the request to the end of the answer",
            m.total.clone(),
        );
        registry.register(
            "llm_chunk_gap_seconds",
            "Gaps between the chunks of a streamed answer",
            m.gap.clone(),
        );
        m
    }
}

fn llm(route: &str, upstream: &str) -> LlmLabels {
    LlmLabels {
        route: route.to_string(),
        upstream: upstream.to_string(),
    }
}

impl LlmObserver for LlmMetrics {
    fn attempt(&self, route: &str, upstream: &str, outcome: AttemptOutcome) {
        self.attempts
            .get_or_create(&LlmOutcomeLabels {
                route: route.to_string(),
                upstream: upstream.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    fn first_token(&self, route: &str, upstream: &str, after: std::time::Duration) {
        self.first_token
            .get_or_create(&llm(route, upstream))
            .observe(after.as_secs_f64());
    }

    fn chunk_gap(&self, route: &str, upstream: &str, gap: std::time::Duration) {
        self.gap
            .get_or_create(&llm(route, upstream))
            .observe(gap.as_secs_f64());
    }

    fn answer(&self, route: &str, upstream: &str, end: &AnswerEnd) {
        self.answers
            .get_or_create(&LlmOutcomeLabels {
                route: route.to_string(),
                upstream: upstream.to_string(),
                outcome: end.outcome.as_str(),
            })
            .inc();
        self.total
            .get_or_create(&llm(route, upstream))
            .observe(end.total.as_secs_f64());
        if let Some(u) = end.usage {
            for (kind, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
            ] {
                self.tokens
                    .get_or_create(&LlmTokenLabels {
                        route: route.to_string(),
                        upstream: upstream.to_string(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
    }
}

/// Every metric the server exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// The chat gateway's series, fed by the gateway as it works.
    pub llm: LlmMetrics,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_latency: Family<ToolLatencyLabels, Histogram, fn() -> Histogram>,
    collections: Gauge,
}

impl Metrics {
    /// All metrics, registered under `aistack_`, with `live` read at every scrape.
    pub fn new(live: LiveSources) -> Self {
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
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls by tool, transport and outcome (`ok` or the error code)",
            tool_calls.clone(),
        );
        let tool_latency =
            Family::<ToolLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "mcp_tool_call_duration_seconds",
            "MCP tool call latency by tool and transport",
            tool_latency.clone(),
        );
        let collections = Gauge::default();
        registry.register(
            "store_collections",
            "Collections in the store",
            collections.clone(),
        );
        let llm = LlmMetrics::register(&mut registry);
        registry.register_collector(Box::new(live));
        Self {
            registry,
            llm,
            requests,
            latency,
            tool_calls,
            tool_latency,
            collections,
        }
    }

    /// Records one MCP tool call; every label is one of a fixed set (tool names, `http` or
    /// `stdio`, `ok` or an error code), so the series stay few.
    pub fn observe_tool(
        &self,
        tool: &'static str,
        transport: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool,
                transport,
                outcome,
            })
            .inc();
        self.tool_latency
            .get_or_create(&ToolLatencyLabels { tool, transport })
            .observe(seconds);
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

    /// Records the number of collections (read from the store, which is async, by the caller).
    pub fn set_collections(&self, n: usize) {
        self.collections.set(n as i64);
    }

    /// Renders everything in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The route template a request matched (never its raw path), or `unmatched`.
pub fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// Middleware: counts every request by its route template (not its raw path) and status.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.observe(
        &route,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}
