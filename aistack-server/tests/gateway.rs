//! The chat gateway in-process, against small scripted upstreams: real HTTP servers on loopback
//! that answer as told (429s, 500s, stalls, cut streams, malformed chunks, trickles, 400s,
//! "Loading model"). Each test checks what the client sees, how many attempts each upstream got
//! and its breaker's state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::config::Settings;
use aistack_core::llm::{LlmSettings, RouteSettings, UpstreamSettings};
use aistack_core::resilience::BreakerState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get as route_get, post};
use axum::Json;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::*;

/// What a scripted upstream does with one request.
#[derive(Clone, Debug)]
enum Step {
    /// A JSON answer with a status (and `Retry-After` when given).
    Json(u16, Value, Option<u64>),
    /// A stream of `data:` events `gap` apart, then `end`.
    Stream(Vec<String>, Duration, End),
    /// No answer at all, not even headers.
    Stall,
}

#[derive(Clone, Debug)]
enum End {
    /// `data: [DONE]`, then close.
    Done,
    /// Close without `[DONE]`.
    Close,
    /// Keep the connection open and silent.
    Hang,
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    /// Used when the script runs out.
    fallback: Mutex<Option<Step>>,
    calls: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    auth: Mutex<Vec<Option<String>>>,
    /// Streams whose body was dropped before its end (the client went away).
    abandoned: AtomicUsize,
}

struct Scripted {
    url: String,
    script: Arc<Script>,
}

impl Scripted {
    fn calls(&self) -> usize {
        self.script.calls.load(Ordering::SeqCst)
    }
    fn push(&self, s: Step) {
        self.script.steps.lock().push_back(s);
    }
    fn last_body(&self) -> Value {
        self.script
            .bodies
            .lock()
            .last()
            .cloned()
            .expect("a request")
    }
}

struct Guard(Arc<Script>, bool);
impl Guard {
    fn done(&mut self) {
        self.1 = true;
    }
}
impl Drop for Guard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn answer(
    State(s): State<Arc<Script>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.bodies.lock().push(body);
    s.auth.lock().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    let step = s
        .steps
        .lock()
        .pop_front()
        .or_else(|| s.fallback.lock().clone());
    match step.expect("the script has a step for this request") {
        Step::Json(status, v, retry) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), Json(v)).into_response();
            if let Some(secs) = retry {
                r.headers_mut().insert("retry-after", secs.into());
            }
            r
        }
        Step::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Step::Stream(events, gap, end) => {
            let guard = Guard(s.clone(), false);
            let stream = futures::stream::unfold(
                (events.into_iter(), Some(end), guard, true),
                move |(mut it, end, mut guard, first)| async move {
                    if !first {
                        tokio::time::sleep(gap).await;
                    }
                    if let Some(e) = it.next() {
                        return Some((
                            Ok::<_, std::io::Error>(format!("data: {e}\n\n")),
                            (it, end, guard, false),
                        ));
                    }
                    match end? {
                        End::Done => {
                            guard.done();
                            Some((Ok("data: [DONE]\n\n".into()), (it, None, guard, false)))
                        }
                        End::Close => {
                            guard.done();
                            None
                        }
                        End::Hang => {
                            guard.done();
                            futures::future::pending::<()>().await;
                            None
                        }
                    }
                },
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

async fn scripted() -> Scripted {
    let script = Arc::new(Script::default());
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(answer))
        .route("/v1/completions", post(answer))
        .route(
            "/v1/models",
            route_get(|| async { Json(json!({"object": "list", "data": []})) }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Scripted {
        url: format!("http://{addr}/v1"),
        script,
    }
}

fn upstream(name: &str, url: &str) -> UpstreamSettings {
    UpstreamSettings {
        name: name.into(),
        base_url: url.into(),
        api_key_file: None,
        model: None,
        connect_timeout_ms: 500,
        first_token_timeout_ms: 400,
        idle_timeout_ms: 300,
        total_timeout_ms: 5_000,
        max_concurrent: 8,
    }
}

fn route(name: &str, upstreams: &[&str]) -> RouteSettings {
    RouteSettings {
        name: name.into(),
        upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
        collections: vec![],
        k: 2,
        filter: None,
        min_score: None,
        mode: Default::default(),
        require_retrieval: false,
        max_concurrent: 8,
    }
}

/// Settings with upstreams `a` and `b` and routes `ab` (a then b), `a` and `b`.
fn llm(a: &Scripted, b: &Scripted) -> LlmSettings {
    LlmSettings {
        upstreams: vec![upstream("a", &a.url), upstream("b", &b.url)],
        routes: vec![
            route("ab", &["a", "b"]),
            route("a", &["a"]),
            route("b", &["b"]),
        ],
        probe_interval_ms: 3_600_000,
        loading_wait_ms: 1_000,
        ..LlmSettings::default()
    }
}

fn tuned(l: LlmSettings) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.llm = l;
        s.resilience.breaker_consecutive_failures = 2;
        s.resilience.breaker_open_ms = 400;
        s.resilience.breaker_max_open_ms = 400;
    }
}

fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
}

fn chunk(text: &str) -> String {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    .to_string()
}

fn usage_chunk() -> String {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    .to_string()
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

fn events(body: &str) -> Vec<String> {
    let mut r = aistack_core::llm::SseReader::new(1 << 20);
    r.push(body.as_bytes()).unwrap()
}

fn breaker(app: &App, name: &str) -> BreakerState {
    app.state
        .breakers
        .get(&format!("llm.{name}"))
        .expect("the upstream's breaker")
        .state()
}

fn metric(app: &App, line_start: &str) -> f64 {
    let text = app.state.metrics.render();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn models_list_every_accepted_name_and_unknown_ones_are_404() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    let r = send(&app, get("/v1/models")).await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&"ab".to_string()) && ids.contains(&"b".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.iter().all(|i| !i.contains("/tmp")),
        "no path in {ids:?}"
    );
    // The embedding model's entries say what it is; the chat routes' have no such part.
    for m in r.json()["data"].as_array().unwrap() {
        match m["owned_by"].as_str().unwrap() {
            "aistack-embeddings" => {
                assert_eq!(m["aistack"]["architecture"], "bert", "{m}");
                assert_eq!(m["aistack"]["pooling"], json!(["mean"]), "{m}");
            }
            _ => assert!(m.get("aistack").is_none(), "{m}"),
        }
    }
    let r = send(&app, post_json("/v1/chat/completions", ask("gpt-9", false))).await;
    assert_eq!(r.error_code(404), "not_found");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"ab\""));
    // The embedding model answers to the names listed, never a route name.
    let r = send(
        &app,
        post_json("/v1/embeddings", json!({"model": ids[0], "input": "x"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // TEI's root route embeds as /embed does.
    let r = send(&app, post_json("/", json!({"inputs": ["one", "two"]}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    // With chat routes configured, the OpenAPI document lists the chat routes.
    let doc = send(&app, get("/openapi.json")).await.json();
    for path in ["/v1/chat/completions", "/v1/completions", "/mcp"] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
    assert_eq!(a.calls() + b.calls(), 0);
}

#[tokio::test]
async fn a_500_falls_back_and_fields_pass_through() {
    let (a, b) = (scripted().await, scripted().await);
    a.push(Step::Json(500, json!({"error": {"message": "boom"}}), None));
    b.push(Step::Json(200, completion("from b"), None));
    let app = app(tuned(llm(&a, &b))).await;
    let mut body = ask("ab", false);
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    body["logprobs"] = json!(true);
    let r = send(&app, post_json("/v1/chat/completions", body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from b");
    assert_eq!(r.headers["x-aistack-upstream"], "b");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    let sent = b.last_body();
    assert_eq!(sent["tools"][0]["function"]["name"], "f");
    assert_eq!(sent["logprobs"], true);
    assert_eq!(sent["model"], "ab");
    assert_eq!(breaker(&app, "a"), BreakerState::Closed);
    assert_eq!(
        metric(
            &app,
            "aistack_llm_attempts_total{route=\"ab\",upstream=\"a\",outcome=\"server_error\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &app,
            "aistack_llm_tokens_total{route=\"ab\",upstream=\"b\",kind=\"prompt\"}"
        ),
        5.0
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_or_passed_on() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    // Retry-After 0 is short: the same upstream is tried again.
    a.push(Step::Json(
        429,
        json!({"error": {"message": "slow down"}}),
        Some(0),
    ));
    a.push(Step::Json(200, completion("after wait"), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((a.calls(), b.calls()), (2, 0));
    // Retry-After 60 is longer than llm.max_retry_after_ms: on to the next upstream at once.
    a.push(Step::Json(
        429,
        json!({"error": {"message": "slow down"}}),
        Some(60),
    ));
    b.push(Step::Json(200, completion("from b"), None));
    let t = Instant::now();
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!((a.calls(), b.calls()), (3, 1));
    // Without Retry-After on a route of one: one short wait, then the client gets 429.
    a.push(Step::Json(429, json!({}), None));
    a.push(Step::Json(429, json!({}), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.error_code(429), "overloaded");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(a.calls(), 5);
    assert_eq!(
        breaker(&app, "a"),
        BreakerState::Closed,
        "429 is not a failure"
    );
}

#[tokio::test]
async fn a_stall_before_the_first_byte_moves_on_or_times_out() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    a.push(Step::Stall);
    b.push(Step::Stream(vec![chunk("hi")], Duration::ZERO, End::Done));
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", true))).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.text());
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    a.push(Step::Stall);
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.error_code(504), "timeout");
    // Two missed deadlines in a row open the breaker.
    assert_eq!(breaker(&app, "a"), BreakerState::Open);
}

async fn stream_ends_with_error(a: &Scripted, step: Step, want_chunks: usize) -> App {
    let b = scripted().await;
    a.push(step);
    let app = app(tuned(llm(a, &b))).await;
    let r = send(&app, post_json("/v1/chat/completions", ask("a", true))).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.text());
    assert_eq!(ev.len(), want_chunks + 2, "{ev:?}");
    for e in &ev[..want_chunks] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
    }
    let err: Value = serde_json::from_str(&ev[want_chunks]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_failed", "{err}");
    assert_eq!(ev[want_chunks + 1], "[DONE]");
    assert_eq!(a.calls(), 1, "nothing is retried after the first byte");
    assert_eq!(
        metric(
            &app,
            "aistack_llm_answers_total{route=\"a\",upstream=\"a\",outcome=\"failed\"}"
        ),
        1.0
    );
    app
}

#[tokio::test]
async fn a_stream_cut_after_n_chunks_ends_with_an_error_event() {
    let a = scripted().await;
    let step = Step::Stream(
        vec![chunk("one"), chunk("two"), chunk("three")],
        Duration::from_millis(10),
        End::Close,
    );
    let app = stream_ends_with_error(&a, step, 3).await;
    assert_eq!(
        app.state.breakers.get("llm.a").unwrap().snapshot().failures,
        1,
        "a broken stream counts against the breaker"
    );
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_stream_with_an_error_event() {
    let a = scripted().await;
    let step = Step::Stream(
        vec![chunk("one"), "{not json".into(), chunk("never")],
        Duration::from_millis(10),
        End::Done,
    );
    stream_ends_with_error(&a, step, 1).await;
}

#[tokio::test]
async fn a_trickle_slower_than_the_idle_gap_ends_the_stream() {
    let a = scripted().await;
    // idle_timeout_ms is 300.
    let step = Step::Stream(
        vec![chunk("one"), chunk("two")],
        Duration::from_millis(700),
        End::Done,
    );
    stream_ends_with_error(&a, step, 1).await;
}

#[tokio::test]
async fn a_stream_that_never_sends_done_ends_with_an_error_event() {
    let a = scripted().await;
    let step = Step::Stream(vec![chunk("one"), chunk("two")], Duration::ZERO, End::Hang);
    stream_ends_with_error(&a, step, 2).await;
}

#[tokio::test]
async fn a_context_length_400_goes_straight_back() {
    let (a, b) = (scripted().await, scripted().await);
    a.push(Step::Json(
        400,
        json!({"error": {"message": "This model's maximum context length is 512 tokens.",
            "type": "invalid_request_error", "code": "context_length_exceeded"}}),
        None,
    ));
    let app = app(tuned(llm(&a, &b))).await;
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", false))).await;
    assert_eq!(r.error_code(400), "invalid_input");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length is 512"));
    assert_eq!((a.calls(), b.calls()), (1, 0));
    let snap = app.state.breakers.get("llm.a").unwrap().snapshot();
    assert_eq!((snap.failures, snap.state), (0, BreakerState::Closed));
}

#[tokio::test]
async fn a_flapping_upstream_opens_half_opens_and_closes_its_breaker() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    for _ in 0..2 {
        a.push(Step::Json(502, json!({}), None));
        let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
        assert_eq!(r.error_code(502), "upstream_failed");
    }
    assert_eq!(breaker(&app, "a"), BreakerState::Open);
    // Open: not tried, 503 with Retry-After; the fallback chain still answers.
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.error_code(503), "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    b.push(Step::Json(200, completion("b"), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", false))).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.calls(), 2);
    // After breaker_open_ms a trial goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(450)).await;
    a.push(Step::Json(200, completion("back"), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(breaker(&app, "a"), BreakerState::Closed);
    assert_eq!(a.calls(), 3);
    assert!(app
        .state
        .metrics
        .render()
        .contains("aistack_breaker_state{name=\"llm.a\"} 0"));
}

#[tokio::test]
async fn loading_model_is_not_a_failure() {
    let (a, b) = (scripted().await, scripted().await);
    let loading = || {
        Step::Json(
            503,
            json!({"error": {"message": "Loading model", "code": 503}}),
            None,
        )
    };
    let app = app(tuned(llm(&a, &b))).await;
    // The next upstream takes it.
    a.push(loading());
    b.push(Step::Json(200, completion("b"), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("ab", false))).await;
    assert_eq!(r.status, 200);
    // Alone, the route waits for it (up to llm.loading_wait_ms) and gets the answer.
    a.push(loading());
    a.push(Step::Json(200, completion("loaded"), None));
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "loaded");
    // Still loading at the bound: 503 unavailable; the breaker never opened.
    *a.script.fallback.lock() = Some(loading());
    let t = Instant::now();
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.error_code(503), "unavailable");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let snap = app.state.breakers.get("llm.a").unwrap().snapshot();
    assert_eq!((snap.failures, snap.state), (0, BreakerState::Closed));
}

#[tokio::test]
async fn streams_pass_through_and_usage_is_counted() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    let upstream_events = vec![chunk("Hel"), chunk("lo"), usage_chunk()];
    a.push(Step::Stream(
        upstream_events.clone(),
        Duration::from_millis(5),
        End::Done,
    ));
    let r = send(&app, post_json("/v1/chat/completions", ask("a", true))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    // The client did not ask for usage: the usage chunk is the gateway's, not passed on.
    assert_eq!(
        events(&r.text()),
        vec![chunk("Hel"), chunk("lo"), "[DONE]".into()]
    );
    assert_eq!(a.last_body()["stream_options"]["include_usage"], true);
    assert_eq!(
        metric(
            &app,
            "aistack_llm_tokens_total{route=\"a\",upstream=\"a\",kind=\"completion\"}"
        ),
        3.0
    );
    // A client that asks gets it, byte for byte.
    a.push(Step::Stream(
        upstream_events.clone(),
        Duration::ZERO,
        End::Done,
    ));
    let mut body = ask("a", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = send(&app, post_json("/v1/chat/completions", body)).await;
    let mut want = upstream_events;
    want.push("[DONE]".into());
    assert_eq!(events(&r.text()), want);
    assert!(app
        .state
        .metrics
        .render()
        .contains("aistack_llm_time_to_first_token_seconds_count{route=\"a\",upstream=\"a\"} 2"));
}

#[tokio::test]
async fn the_first_token_reaches_the_client_before_the_answer_ends() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    a.push(Step::Stream(
        vec![chunk("first"), chunk("second")],
        Duration::from_millis(250),
        End::Done,
    ));
    let t = Instant::now();
    let resp = app
        .router
        .clone()
        .oneshot(post_json("/v1/chat/completions", ask("a", true)))
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = t.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    let mut rest = Vec::new();
    while let Some(c) = body.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("second"));
    assert!(
        t.elapsed() - first_at >= Duration::from_millis(200),
        "the first chunk came {first_at:?} in, not buffered until the end"
    );
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request() {
    let (a, b) = (scripted().await, scripted().await);
    let app = app(tuned(llm(&a, &b))).await;
    let many: Vec<String> = (0..200).map(|i| chunk(&format!("t{i}"))).collect();
    a.push(Step::Stream(many, Duration::from_millis(20), End::Done));
    let resp = app
        .router
        .clone()
        .oneshot(post_json("/v1/chat/completions", ask("a", true)))
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let t = Instant::now();
    while a.script.abandoned.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the upstream kept generating"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(
            &app,
            "aistack_llm_answers_total{route=\"a\",upstream=\"a\",outcome=\"cancelled\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn limits_refuse_with_the_one_error_shape() {
    let (a, b) = (scripted().await, scripted().await);
    let mut l = llm(&a, &b);
    l.max_messages = 2;
    l.routes[1].max_concurrent = 1;
    let app = app(tuned(l)).await;
    let mut body = ask("a", false);
    body["messages"] = json!([{"role": "user", "content": "1"}, {"role": "user", "content": "2"},
        {"role": "user", "content": "3"}]);
    let r = send(&app, post_json("/v1/chat/completions", body)).await;
    assert_eq!(r.error_code(400), "invalid_input");
    for bad in [
        json!({"model": "a"}),
        json!({"model": "a", "messages": []}),
        json!({"model": "a", "messages": [{"content": "no role"}]}),
        json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "a", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "a", "messages": [{"role": "user", "content": "x"}], "aistack": {"bogus": 1}}),
    ] {
        let r = send(&app, post_json("/v1/chat/completions", bad.clone())).await;
        assert_eq!(r.error_code(400), "invalid_input", "{bad}");
    }
    let r = send(&app, post_json("/v1/completions", json!({"model": "a"}))).await;
    assert_eq!(r.error_code(400), "invalid_input");
    let big = "x".repeat(LlmSettings::default().max_body_bytes + 1);
    let r = send(
        &app,
        post_json(
            "/v1/chat/completions",
            json!({"model": "a", "messages": [{"role": "user", "content": big}]}),
        ),
    )
    .await;
    assert_eq!(r.error_code(413), "payload_too_large");
    // The chat routes take llm.max_body_bytes (4 MiB), more than server.max_body_bytes (2 MiB).
    a.push(Step::Json(200, completion("long prompt read"), None));
    let long = "y".repeat(3 * 1024 * 1024);
    let r = send(
        &app,
        post_json(
            "/v1/chat/completions",
            json!({"model": "a", "stream": null, "stream_options": null,
            "messages": [{"role": "user", "content": long}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One request holds the route's only slot; the next is shed with Retry-After.
    a.push(Step::Stream(vec![chunk("x")], Duration::ZERO, End::Hang));
    let held = app
        .router
        .clone()
        .oneshot(post_json("/v1/chat/completions", ask("a", true)))
        .await
        .unwrap();
    let r = send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    assert_eq!(r.error_code(429), "overloaded");
    assert!(r.headers.contains_key("retry-after"));
    drop(held);
    assert_eq!(a.calls(), 2);
}

#[tokio::test]
async fn completions_pass_through_with_the_upstreams_model_and_key() {
    let (a, b) = (scripted().await, scripted().await);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-remote-secret-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut l = llm(&a, &b);
    l.upstreams[0].api_key_file = Some(key);
    l.upstreams[0].model = Some("upstream-model".into());
    let app = app(tuned(l)).await;
    a.push(Step::Json(
        200,
        json!({"id": "cmpl-1", "object": "text_completion", "choices": [{"text": " Paris", "index": 0}]}),
        None,
    ));
    let r = send(
        &app,
        post_json(
            "/v1/completions",
            json!({"model": "a", "prompt": "The capital of France is"}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["text"], " Paris");
    assert_eq!(a.last_body()["model"], "upstream-model");
    assert_eq!(
        a.script.auth.lock().last().unwrap().as_deref(),
        Some("Bearer sk-remote-secret-0123456789")
    );
    // The key shows nowhere: not in health, metrics or an error.
    a.push(Step::Json(500, json!({}), None));
    let err = send(
        &app,
        post_json("/v1/completions", json!({"model": "a", "prompt": "x"})),
    )
    .await;
    let health = send(&app, get("/health")).await;
    let metrics = app.state.metrics.render();
    for text in [err.text(), health.text(), metrics] {
        assert!(!text.contains("sk-remote-secret"), "{text}");
    }
    assert!(health.json()["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "a"));
}

#[tokio::test]
async fn grounded_routes_put_sources_in_the_prompt_and_cite_them() {
    let (a, b) = (scripted().await, scripted().await);
    let mut l = llm(&a, &b);
    l.routes.push(RouteSettings {
        collections: vec!["docs".into()],
        ..route("docs-chat", &["a"])
    });
    l.routes.push(RouteSettings {
        collections: vec!["missing".into()],
        require_retrieval: true,
        ..route("strict", &["a"])
    });
    l.routes.push(RouteSettings {
        collections: vec!["missing".into()],
        ..route("lenient", &["a"])
    });
    let app = app(tuned(l)).await;
    let r = send(
        &app,
        post_json(
            "/v1/collections/docs/documents",
            json!({"documents": [
                {"id": "hnsw", "text": "HNSW is a graph index for approximate nearest neighbour search."},
                {"id": "wal", "text": "The write-ahead log makes every acknowledged write durable."}
            ]}),
        ),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.text());
    a.push(Step::Json(200, completion("It is a graph [1]."), None));
    let mut body = ask("docs-chat", false);
    body["messages"] = json!([{"role": "user", "content": "What is HNSW?"}]);
    let r = send(&app, post_json("/v1/chat/completions", body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cites = r.json()["aistack"]["citations"].clone();
    assert_eq!(cites.as_array().unwrap().len(), 2, "{cites}");
    assert_eq!(cites[0]["index"], 1);
    assert!(cites[0]["text"].as_str().unwrap().len() > 10);
    let sent = a.last_body();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(system.contains("<source id=\"1\" name=\""), "{system}");
    assert!(system.contains("<source id=\"2\""), "{system}");
    assert!(
        sent.get("aistack").is_none(),
        "the extension never goes upstream"
    );
    // Streaming: the citations come in one chunk just before [DONE].
    a.push(Step::Stream(
        vec![chunk("It is")],
        Duration::ZERO,
        End::Done,
    ));
    let r = send(
        &app,
        post_json("/v1/chat/completions", ask("docs-chat", true)),
    )
    .await;
    let ev = events(&r.text());
    assert_eq!(ev.len(), 3, "{ev:?}");
    let c: Value = serde_json::from_str(&ev[1]).unwrap();
    assert_eq!(c["choices"], json!([]));
    assert_eq!(c["aistack"]["citations"].as_array().unwrap().len(), 2);
    // A request may ask for grounding on an ungrounded route.
    a.push(Step::Json(200, completion("x"), None));
    let mut body = ask("a", false);
    body["aistack"] = json!({"collections": ["docs"], "k": 1});
    let r = send(&app, post_json("/v1/chat/completions", body)).await;
    assert_eq!(
        r.json()["aistack"]["citations"].as_array().unwrap().len(),
        1
    );
    // A failing search degrades to an ungrounded answer, saying so, unless the route requires it.
    a.push(Step::Json(200, completion("ungrounded"), None));
    let r = send(
        &app,
        post_json("/v1/chat/completions", ask("lenient", false)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-aistack-grounding-skipped"], "not_found");
    assert!(r.json().get("aistack").is_none());
    let calls = a.calls();
    let r = send(
        &app,
        post_json("/v1/chat/completions", ask("strict", false)),
    )
    .await;
    assert_eq!(r.error_code(503), "unavailable");
    assert_eq!(a.calls(), calls, "no answer without the required sources");
}

#[tokio::test]
async fn the_background_probe_keeps_health_and_breakers_current() {
    let (a, b) = (scripted().await, scripted().await);
    let mut l = llm(&a, &b);
    // Nothing listens on port 9 of loopback.
    l.upstreams[1].base_url = "http://127.0.0.1:9/v1".into();
    let app = app(tuned(l)).await;
    let health = |app: &App| {
        app.state
            .gateway
            .health()
            .into_iter()
            .map(|u| (u.name, u.readiness, u.breaker))
            .collect::<Vec<_>>()
    };
    use aistack_core::llm::Readiness;
    assert!(health(&app).iter().all(|h| h.1 == Readiness::Unknown));
    app.state.gateway.probe_all().await;
    let h = health(&app);
    assert_eq!(h[0], ("a".into(), Readiness::Ready, BreakerState::Closed));
    assert_eq!(h[1].1, Readiness::Down);
    let r = send(&app, get("/health")).await;
    let ups = r.json()["upstreams"].clone();
    assert_eq!(ups[1]["readiness"], "down", "{ups}");
    assert!(
        !ups.to_string().contains("127.0.0.1"),
        "no URL in health: {ups}"
    );
    // Two failed probes open the breaker, with no client traffic at all.
    app.state.gateway.probe_all().await;
    assert_eq!(breaker(&app, "b"), BreakerState::Open);
    assert!(app
        .state
        .metrics
        .render()
        .contains("aistack_llm_upstream_ready{name=\"a\"} 1"));
    // An upstream that comes back is closed again by the probe once the breaker half-opens.
    a.push(Step::Json(500, json!({}), None));
    a.push(Step::Json(500, json!({}), None));
    for _ in 0..2 {
        send(&app, post_json("/v1/chat/completions", ask("a", false))).await;
    }
    assert_eq!(breaker(&app, "a"), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(450)).await;
    app.state.gateway.probe_all().await;
    assert_eq!(breaker(&app, "a"), BreakerState::Closed);
    assert_eq!(a.calls(), 2, "probes are GETs of /models, not chats");
}
