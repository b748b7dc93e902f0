//! The chat gateway: OpenAI-compatible chat and completions in front of llama.cpp, vLLM, Ollama
//! or remote APIs. Each route (the model name a client sends) has a fallback chain of upstreams;
//! each upstream has a circuit breaker, concurrency slots and a background health probe.
//!
//! Retry and fallback happen only before the first token reaches the client (connect errors,
//! 429, 5xx, a missed first-token deadline); caller errors go straight back. A grounded route
//! searches collections with the last user message and puts the hits into the prompt.

mod grounding;
mod observe;
mod settings;
mod sse;
mod stream;
mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

pub use grounding::{
    inject, last_user_text, render_sources, retrieve, Citation, RetrievalPlan, Retriever,
};
pub use observe::{AnswerEnd, AnswerOutcome, AttemptOutcome, LlmObserver, NoMetrics, TokenUsage};
pub use settings::{LlmSettings, RouteSettings, UpstreamSettings, DEFAULT_GROUNDING_TEMPLATE};
pub use sse::SseReader;
pub use stream::{error_event, EventStream};
pub use upstream::{Readiness, Upstream, UpstreamHealth};

use crate::config::ResilienceSettings;
use crate::error::{Error, Result};
use crate::resilience::{BreakerConfig, BreakerRegistry};
use stream::{pass_through, usage_of, StreamContext};
use upstream::{Attempt, Reply};

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
        }
    }
}

/// What grounding did for one request.
#[derive(Debug, Clone, Default)]
pub struct Grounding {
    /// The sources put into the prompt.
    pub citations: Vec<Citation>,
    /// Why the answer is not grounded although it should be (the search failed), if so.
    pub skipped: Option<String>,
}

/// The gateway's answer.
pub enum ChatReply {
    /// A whole JSON answer, `aistack.citations` added when grounded.
    Full {
        /// The upstream that answered.
        upstream: String,
        /// The upstream's status (2xx).
        status: u16,
        /// The answer.
        body: Value,
        /// What grounding did.
        grounding: Grounding,
    },
    /// A stream of server-sent events, passed through as they arrive.
    Stream {
        /// The upstream that answers.
        upstream: String,
        /// The events, as text for the client.
        events: EventStream,
        /// What grounding did.
        grounding: Grounding,
    },
}

/// One chat or completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The client's JSON body; unknown fields go upstream untouched.
    pub body: Map<String, Value>,
    /// The request id, for logs.
    pub request_id: String,
}

struct Route {
    settings: RouteSettings,
    slots: Arc<Semaphore>,
}

/// The chat gateway over its configured upstreams and routes.
pub struct Gateway {
    settings: LlmSettings,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    routes: BTreeMap<String, Route>,
    observer: Arc<dyn LlmObserver>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("upstreams", &self.upstreams.values().collect::<Vec<_>>())
            .finish()
    }
}

fn take_bool(body: &Map<String, Value>, key: &str) -> Result<bool> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::invalid(format!("{key} must be true or false"))),
    }
}

impl Gateway {
    /// A gateway from validated settings; upstream breakers (`llm.<name>`) join `breakers`.
    pub fn new(
        settings: &LlmSettings,
        resilience: &ResilienceSettings,
        breakers: &BreakerRegistry,
        observer: Arc<dyn LlmObserver>,
    ) -> Result<Self> {
        settings.validate()?;
        let breaker = BreakerConfig::from_settings(resilience);
        let mut upstreams = BTreeMap::new();
        for (i, u) in settings.upstreams.iter().enumerate() {
            let up = Upstream::new(u.clone(), breakers, &breaker, i)?;
            upstreams.insert(u.name.clone(), Arc::new(up));
        }
        let routes = settings
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Route {
                        slots: Arc::new(Semaphore::new(r.max_concurrent)),
                        settings: r.clone(),
                    },
                )
            })
            .collect();
        Ok(Self {
            settings: settings.clone(),
            upstreams,
            routes,
            observer,
        })
    }

    /// The route names clients can send as `model`.
    pub fn route_names(&self) -> Vec<&str> {
        self.routes.keys().map(String::as_str).collect()
    }

    /// Whether `model` is a chat route.
    pub fn has_route(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// Every upstream's health, for `/health`.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.upstreams.values().map(|u| u.health()).collect()
    }

    /// The gateway's settings.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// Probes every upstream once, concurrently.
    pub async fn probe_all(&self) {
        futures::future::join_all(self.upstreams.values().map(|u| u.probe())).await;
    }

    /// Probes every upstream every `probe_interval_ms` until the gateway is dropped.
    pub fn spawn_probes(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.settings.probe_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(g) = weak.upgrade() else { return };
                g.probe_all().await;
            }
        })
    }

    /// Answers one request: grounding, then the route's upstreams in order until one commits.
    pub async fn chat(
        &self,
        mut req: ChatRequest,
        retriever: Option<&dyn Retriever>,
    ) -> Result<ChatReply> {
        let started = Instant::now();
        let body = &mut req.body;
        let model = match body.get("model") {
            Some(Value::String(m)) => m.clone(),
            None => return Err(Error::invalid("model is required: a route name")),
            Some(_) => return Err(Error::invalid("model must be a string")),
        };
        let Some(route) = self.routes.get(&model) else {
            return Err(Error::NotFound {
                what: format!(
                    "chat model {:?} (served: {})",
                    model.chars().take(64).collect::<String>(),
                    self.route_names().join(", ")
                ),
            });
        };
        let stream = take_bool(body, "stream")?;
        self.check_shape(req.endpoint, body)?;
        let plan = self.plan(route, body.remove("aistack"))?;
        let route_slot = route.slots.clone().try_acquire_owned().map_err(|_| {
            Error::Overloaded(format!(
                "route {model:?} has {} requests in flight",
                route.settings.max_concurrent
            ))
        })?;
        let grounding = self
            .ground(req.endpoint, body, &plan, route, retriever)
            .await?;
        let client_wants_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if stream {
            let opts = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if opts.is_null() {
                *opts = Value::Object(Map::new());
            }
            match opts {
                Value::Object(o) => {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
                _ => return Err(Error::invalid("stream_options must be an object")),
            }
        }
        let loading_deadline = started + Duration::from_millis(self.settings.loading_wait_ms);
        let max_retry_after = Duration::from_millis(self.settings.max_retry_after_ms);
        let mut failures: Vec<(String, Error)> = Vec::new();
        loop {
            let mut loading = false;
            failures.clear();
            for name in &route.settings.upstreams {
                let up = &self.upstreams[name];
                let mut upstream_body;
                let send = match &up.settings.model {
                    Some(m) => {
                        upstream_body = body.clone();
                        upstream_body.insert("model".into(), Value::String(m.clone()));
                        &upstream_body
                    }
                    None => &*body,
                };
                let attempt = up
                    .attempt(req.endpoint.path(), send, stream, max_retry_after)
                    .await;
                match attempt {
                    Attempt::Committed(c) => {
                        self.observer.attempt(&model, name, AttemptOutcome::Ok);
                        self.observer
                            .first_token(&model, name, c.first_token - started);
                        return Ok(self.commit(
                            *c,
                            &model,
                            up,
                            grounding,
                            started,
                            client_wants_usage,
                            route_slot,
                            &req.request_id,
                        ));
                    }
                    Attempt::Rejected(e) => {
                        self.observer
                            .attempt(&model, name, AttemptOutcome::CallerError);
                        return Err(e);
                    }
                    Attempt::Loading => {
                        self.observer.attempt(&model, name, AttemptOutcome::Loading);
                        loading = true;
                        failures.push((
                            name.clone(),
                            Error::unavailable(format!("upstream {name:?} is loading its model")),
                        ));
                    }
                    Attempt::Failed(e, outcome) => {
                        self.observer.attempt(&model, name, outcome);
                        tracing::warn!(route = %model, upstream = %name, request_id = %req.request_id,
                            outcome = outcome.as_str(), error = %e, "upstream attempt failed");
                        failures.push((name.clone(), e));
                    }
                }
            }
            if !loading || Instant::now() >= loading_deadline {
                break;
            }
            let wait = Duration::from_millis(500)
                .min(loading_deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
        }
        Err(Self::failed(&model, failures))
    }

    /// The error of a request no upstream took: the shared kind when all failed alike (all
    /// breakers open: 503 with the soonest `Retry-After`; all timed out: 504; all rate limited
    /// or full: 429), else 502 naming each upstream's failure.
    fn failed(route: &str, failures: Vec<(String, Error)>) -> Error {
        use crate::ErrorKind;
        let all = |f: &dyn Fn(&Error) -> bool| failures.iter().all(|(_, e)| f(e));
        if all(&|e| matches!(e, Error::CircuitOpen { .. })) {
            let retry_after = failures.iter().filter_map(|(_, e)| e.retry_after()).min();
            return Error::CircuitOpen {
                name: failures
                    .iter()
                    .map(|(n, _)| format!("llm.{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                retry_after,
            };
        }
        let summary = failures
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        if all(&|e| e.kind() == ErrorKind::Timeout) {
            let after = failures
                .iter()
                .filter_map(|(_, e)| match e {
                    Error::Timeout { after, .. } => Some(*after),
                    _ => None,
                })
                .max()
                .unwrap_or_default();
            return Error::Timeout {
                what: format!("route {route:?} ({summary})"),
                after,
            };
        }
        if all(&|e| e.kind() == ErrorKind::Overloaded) {
            return Error::Overloaded(format!("route {route:?}: {summary}"));
        }
        if all(&|e| e.kind() == ErrorKind::Unavailable) {
            return Error::unavailable(format!("route {route:?}: {summary}"));
        }
        Error::Upstream(format!(
            "no upstream of route {route:?} answered: {summary}"
        ))
    }

    fn check_shape(&self, endpoint: Endpoint, body: &Map<String, Value>) -> Result<()> {
        match endpoint {
            Endpoint::Chat => {
                let Some(Value::Array(messages)) = body.get("messages") else {
                    return Err(Error::invalid("messages must be an array of messages"));
                };
                if messages.is_empty() {
                    return Err(Error::invalid("messages must not be empty"));
                }
                if messages.len() > self.settings.max_messages {
                    return Err(Error::invalid(format!(
                        "{} messages are more than the {} allowed (llm.max_messages)",
                        messages.len(),
                        self.settings.max_messages
                    )));
                }
                for (i, m) in messages.iter().enumerate() {
                    if m.get("role").and_then(Value::as_str).is_none() {
                        return Err(Error::invalid(format!(
                            "messages[{i}] must be an object with a string role"
                        )));
                    }
                }
            }
            Endpoint::Completions => match body.get("prompt") {
                Some(Value::String(_)) | Some(Value::Array(_)) => {}
                _ => {
                    return Err(Error::invalid(
                        "prompt must be a string or an array of strings",
                    ))
                }
            },
        }
        Ok(())
    }

    /// The route's retrieval settings, overridden by the request's `aistack` object.
    /// Also says whether the request named the collections itself (then a missing one is its
    /// mistake, a 404; a route's missing collection degrades like any failed search).
    fn plan(
        &self,
        route: &Route,
        ext: Option<Value>,
    ) -> Result<(RetrievalPlan, usize, bool, bool)> {
        let r = &route.settings;
        let mut plan = RetrievalPlan {
            collections: r.collections.clone(),
            k: Some(r.k),
            filter: r.filter.clone(),
            min_score: r.min_score,
            mode: Some(r.mode),
        };
        let mut asked_collections = false;
        if let Some(ext) = ext {
            let asked: RetrievalPlan =
                serde_json::from_value(ext).map_err(|e| Error::invalid(format!("aistack: {e}")))?;
            if !asked.collections.is_empty() {
                for c in &asked.collections {
                    crate::store::validate_collection_name(c)?;
                }
                plan.collections = asked.collections;
                asked_collections = true;
            }
            if let Some(k) = asked.k {
                if k == 0 || k > 100 {
                    return Err(Error::invalid(format!(
                        "aistack.k must be 1 to 100, got {k}"
                    )));
                }
                plan.k = Some(k);
            }
            if let Some(f) = asked.filter {
                crate::store::Filter::from_json(&f)?;
                plan.filter = Some(f);
            }
            if let Some(s) = asked.min_score {
                plan.min_score = Some(s);
            }
            if let Some(m) = asked.mode {
                plan.mode = Some(m);
            }
        }
        let k = plan.k.unwrap_or(r.k);
        Ok((plan, k, r.require_retrieval, asked_collections))
    }

    async fn ground(
        &self,
        endpoint: Endpoint,
        body: &mut Map<String, Value>,
        (plan, k, required, asked): &(RetrievalPlan, usize, bool, bool),
        route: &Route,
        retriever: Option<&dyn Retriever>,
    ) -> Result<Grounding> {
        if plan.collections.is_empty() || endpoint != Endpoint::Chat {
            return Ok(Grounding::default());
        }
        let Some(Value::Array(messages)) = body.get_mut("messages") else {
            return Ok(Grounding::default());
        };
        let Some(query) = last_user_text(messages) else {
            return Ok(Grounding::default());
        };
        let found = match retriever {
            Some(r) => retrieve(r, plan, *k, &query).await,
            None => Err(Error::unavailable("no store to search")),
        };
        match found {
            Ok(citations) => {
                if !citations.is_empty() {
                    let sources = render_sources(&citations, self.settings.max_source_chars);
                    inject(messages, &self.settings.grounding_template, &sources)?;
                }
                Ok(Grounding {
                    citations,
                    skipped: None,
                })
            }
            Err(e) if *asked && e.is_caller_error() => Err(e),
            Err(e) if *required => Err(Error::Unavailable {
                reason: format!(
                    "route {:?} requires retrieval and the search failed",
                    route.settings.name
                ),
                source: Some(Box::new(e)),
            }),
            Err(e) => {
                tracing::warn!(route = %route.settings.name, error = %e.chain(),
                    "retrieval failed; answering without sources");
                Ok(Grounding {
                    citations: Vec::new(),
                    skipped: Some(e.kind().code().to_string()),
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        c: upstream::Committed,
        route: &str,
        up: &Arc<Upstream>,
        grounding: Grounding,
        started: Instant,
        client_wants_usage: bool,
        route_slot: tokio::sync::OwnedSemaphorePermit,
        request_id: &str,
    ) -> ChatReply {
        let name = up.name().to_string();
        match c.response {
            Reply::Full { status, mut body } => {
                let usage = usage_of(&body);
                if !grounding.citations.is_empty() {
                    if let Some(o) = body.as_object_mut() {
                        o.insert(
                            "aistack".into(),
                            serde_json::json!({"citations": grounding.citations}),
                        );
                    }
                }
                self.observer.answer(
                    route,
                    &name,
                    &AnswerEnd {
                        outcome: AnswerOutcome::Complete,
                        total: started.elapsed(),
                        usage,
                    },
                );
                ChatReply::Full {
                    upstream: name,
                    status,
                    body,
                    grounding,
                }
            }
            Reply::Stream {
                reader,
                first,
                rest,
            } => {
                let ctx = StreamContext {
                    route: route.to_string(),
                    upstream: name.clone(),
                    request_id: request_id.to_string(),
                    observer: self.observer.clone(),
                    breaker: up.breaker.clone(),
                    citations: grounding.citations.clone(),
                    client_wants_usage,
                    started,
                    idle: up.settings.idle_timeout(),
                    deadline: started + up.settings.total_timeout(),
                    model: Some(route.to_string()),
                };
                let events = pass_through(ctx, reader, first, rest, vec![route_slot, c.slot]);
                ChatReply::Stream {
                    upstream: name,
                    events,
                    grounding,
                }
            }
        }
    }
}
