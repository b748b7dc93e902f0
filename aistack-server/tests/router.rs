//! The router in-process (`tower::ServiceExt::oneshot`, no socket): auth, the error table's
//! statuses and bodies, request ids, limits, metrics and the OpenAPI document, over a small
//! real BERT model written by the test and a temporary embedded store. Runs in seconds; the
//! end-to-end tests in `serve.rs` keep what needs the real binary, network or model.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::Settings;
use aistack_core::resilience::{BreakerConfig, RetryPolicy};
use aistack_core::store::ResilientStore;
use aistack_core::{Error, ErrorKind};
use aistack_testing::floats;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::*;

#[tokio::test]
async fn bad_input_gets_json_4xx_and_changes_nothing() {
    let a = app(|s| s.server.max_body_bytes = 65536).await;
    let r = send(
        &a,
        post_json(
            "/v1/collections/docs/documents",
            json!({"documents": [{"id": "a", "text": "Cats purr.", "metadata": {"n": 1}}]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let docs = "/v1/collections/docs/documents";
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            post_raw(docs, "{not json", "application/json"),
            400,
            "invalid_input",
        ),
        (
            post_raw(docs, "{\"documents\": 3}", "application/json"),
            400,
            "invalid_input",
        ),
        (
            post_raw(
                docs,
                b"{\"documents\":[{\"id\":\"b\",\"text\":\"\xff\xfe\"}]}".to_vec(),
                "application/json",
            ),
            400,
            "invalid_input",
        ),
        (
            post_raw(docs, "{}", "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            post_raw(docs, vec![b' '; 100_000], "application/json"),
            413,
            "payload_too_large",
        ),
        (
            post_raw(
                docs,
                r#"{"documents":[{"id":"b","text":"   "}]}"#,
                "application/json",
            ),
            400,
            "invalid_input",
        ),
        (
            post_raw(docs, r#"{"documents":[]}"#, "application/json"),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/embeddings", json!({"input": ""})),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/embeddings", json!({"input": []})),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/embeddings", json!({"input": [[1, 2, 4_000_000]]})),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/collections/docs/search", json!({"vector": [0.1, 0.2]})),
            400,
            "invalid_input",
        ),
        (
            post_raw(
                "/v1/collections/docs/search",
                "{\"vector\": [NaN]}",
                "application/json",
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "filter": {"n": {"$regex": "a"}}}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/collections/docs/search", json!({"query": "x", "k": 0})),
            400,
            "invalid_input",
        ),
        (
            post_json("/v1/collections/nope/search", json!({"query": "x"})),
            404,
            "not_found",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "mode": "fuzzy"}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"vector": [0.1], "mode": "lexical"}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "mode": "lexical", "min_score": 0.5}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "fusion": {"rrf_k": 10}}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "mode": "hybrid", "fusion": {"rrf_k": -1}}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections/docs/search",
                json!({"query": "x", "mode": "hybrid", "fusion": {"depth": 3}}),
            ),
            400,
            "invalid_input",
        ),
        (
            post_json(
                "/v1/collections",
                json!({"name": "z", "analyzer": "klingon"}),
            ),
            400,
            "invalid_input",
        ),
        (get("/v1/collections/nope"), 404, "not_found"),
        (get("/v1/collections/bad%20name"), 400, "invalid_input"),
        (
            req(Method::DELETE, "/v1/collections/docs/documents/missing")
                .body(Body::empty())
                .unwrap(),
            404,
            "not_found",
        ),
        (get("/no/such/route"), 404, "not_found"),
        (
            req(Method::PUT, "/v1/embeddings")
                .body(Body::empty())
                .unwrap(),
            405,
            "method_not_allowed",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let r = send(&a, request).await;
        assert_eq!(r.error_code(status), code, "case {i}");
    }
    // The document stored before is intact.
    let v = send(&a, get("/v1/collections/docs")).await.json();
    assert_eq!(v["count"], 1);
    let v = send(
        &a,
        post_json("/v1/collections/docs/search", json!({"query": "cats"})),
    )
    .await
    .json();
    assert_eq!(v["hits"][0]["document_id"], "a");
    assert_eq!(v["hits"][0]["text"], "Cats purr.");
}

fn with_key(mut r: Request<Body>, auth: &str) -> Request<Body> {
    r.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    r
}

#[tokio::test]
async fn api_keys_request_ids_and_metrics() {
    let keys = format!("# keys\nanother-key-9876543210\n{KEY}\n");
    let a = app_with(|_| {}, Some(&keys), |s, _| s).await;
    let body = json!({"input": "hello"});
    for auth in [
        None,
        Some("Bearer wrong-key-0000000000000"),
        Some("Basic abc"),
        Some("Bearer"),
        Some(&format!("Bearer {KEY}x")[..]),
    ] {
        let mut request = post_json("/v1/embeddings", body.clone());
        if let Some(h) = auth {
            request = with_key(request, h);
        }
        let r = send(&a, request).await;
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"aistack\"");
        let text = r.text();
        assert!(!text.contains(KEY) && !text.contains("wrong-key"));
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    let bearer = format!("Bearer {KEY}");
    let r = send(
        &a,
        with_key(post_json("/v1/embeddings", body.clone()), &bearer),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(
        &a,
        with_key(
            post_json("/v1/embeddings", body.clone()),
            "Bearer another-key-9876543210",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Health is public by default, metrics are not. It says what the model is.
    let health = send(&a, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    let details = &health.json()["model"]["details"];
    assert_eq!(details["architecture"], "bert", "{details}");
    assert_eq!(details["pooling"], json!(["mean"]));
    assert_eq!(details["dims"], health.json()["model"]["dims"]);
    assert!(details["max_input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        send(&a, get("/metrics")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Request ids: a well-formed one is echoed, a malformed one replaced, a missing one made.
    let mut r = get("/health");
    r.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    assert_eq!(send(&a, r).await.headers["x-request-id"], "abc-123");
    let mut r = get("/health");
    r.headers_mut()
        .insert("x-request-id", "bad id!".parse().unwrap());
    let r = send(&a, r).await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(id != "bad id!" && id.len() == 36, "{id}");
    let r = send(&a, get("/nope")).await;
    assert!(r.headers.contains_key("x-request-id"));

    let m = send(&a, with_key(get("/metrics"), &bearer)).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    let count = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{needle} not in metrics:\n{text}"))
    };
    assert_eq!(
        count(
            "aistack_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"401\"}"
        ),
        5.0
    );
    assert_eq!(
        count(
            "aistack_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(count("aistack_model_ready"), 1.0);
    assert!(count("aistack_embed_sequences_total") >= 1.0);
    assert_eq!(count("aistack_cache_hits_total{cache=\"embeddings\"}"), 1.0);
    assert!(!text.contains(KEY));
    // Unmatched paths are counted under one label, never by their raw path.
    assert_eq!(
        count("aistack_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"401\"}"),
        1.0
    );
    assert!(!text.contains("/nope"));
}

#[tokio::test]
async fn the_tiny_model_serves_openai_and_tei_shapes() {
    let a = app(|_| {}).await;
    let dims = a.state.engine.embedder().unwrap().info().dims;
    let r = send(
        &a,
        post_json("/v1/embeddings", json!({"input": ["a cat", "a dog"]})),
    )
    .await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), dims);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let r = send(&a, post_json("/embed", json!({"inputs": "a cat"}))).await;
    let tei = r.json();
    assert_eq!(tei[0].as_array().unwrap().len(), dims);
    assert_eq!(tei[0], v["data"][0]["embedding"]);
    // An unknown model is a 404 naming what is served.
    let r = send(
        &a,
        post_json(
            "/v1/embeddings",
            json!({"input": "x", "model": "text-embedding-3-small"}),
        ),
    )
    .await;
    assert_eq!(r.error_code(404), "not_found");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("serves"));
    // Matryoshka dimensions: the first 7, normalized again; more than the model has, or none,
    // is refused.
    let full = send(&a, post_json("/v1/embeddings", json!({"input": "x"}))).await;
    let full = floats(&full.json()["data"][0]["embedding"]);
    let r = send(
        &a,
        post_json("/v1/embeddings", json!({"input": "x", "dimensions": 7})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let cut = floats(&r.json()["data"][0]["embedding"]);
    assert_eq!(cut.len(), 7);
    let norm = full[..7].iter().map(|v| v * v).sum::<f32>().sqrt();
    for (c, f) in cut.iter().zip(&full[..7]) {
        assert!((c - f / norm).abs() < 1e-5, "{c} vs {}", f / norm);
    }
    for bad in [0, full.len() + 1] {
        let r = send(
            &a,
            post_json("/v1/embeddings", json!({"input": "x", "dimensions": bad})),
        )
        .await;
        assert_eq!(r.error_code(400), "invalid_input");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dimensions"));
    }
    // A prompt the model does not have is refused by name; TEI's field likewise.
    let r = send(
        &a,
        post_json(
            "/v1/embeddings",
            json!({"input": "x", "aistack": {"prompt_name": "nope"}}),
        ),
    )
    .await;
    assert_eq!(r.error_code(400), "invalid_input");
    assert!(r.text().contains("nope"), "{}", r.text());
    let r = send(
        &a,
        post_json("/embed", json!({"inputs": "x", "prompt_name": "nope"})),
    )
    .await;
    assert_eq!(r.error_code(400), "invalid_input");
    let r = send(
        &a,
        post_json("/embed", json!({"inputs": "x", "dimensions": 5})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()[0].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_full_server_sheds_with_429_and_a_slow_request_times_out_with_504() {
    let a = app(|s| {
        s.server.max_concurrent_requests = 1;
        s.server.request_timeout_ms = 300;
    })
    .await;
    // The first request holds the only slot: its body never finishes.
    let mut holder = never_ending("/v1/embeddings");
    holder
        .headers_mut()
        .insert("transfer-encoding", "chunked".parse().unwrap());
    let held = tokio::spawn(a.router.clone().oneshot(holder));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut shed = post_json("/v1/embeddings", json!({"input": "x"}));
    shed.headers_mut()
        .insert("content-length", "13".parse().unwrap());
    let r = send(&a, shed).await;
    assert_eq!(r.error_code(429), "overloaded");
    assert_eq!(r.headers["retry-after"], "1");
    // Shed before its body was read: the client is told the connection will not be reused.
    assert_eq!(r.headers["connection"], "close");
    // A bodiless request shed keeps its connection.
    let r = send(&a, get("/v1/collections")).await;
    assert_eq!(r.error_code(429), "overloaded");
    assert!(r.headers.get("connection").is_none());
    // The held request runs out of time: the core's Timeout kind, 504, without Retry-After.
    let resp = held.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(
        resp.headers()["connection"],
        "close",
        "its body never finished"
    );
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "timeout");
    // Health and metrics are outside the limit.
    assert_eq!(send(&a, get("/health")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_open_breaker_says_when_to_retry() {
    let a = app_with(
        |s| {
            s.resilience.breaker_consecutive_failures = 1;
            s.resilience.breaker_open_ms = 5_000;
            s.resilience.breaker_max_open_ms = 5_000;
        },
        None,
        |inner, breakers| {
            let settings = Settings {
                resilience: aistack_core::config::ResilienceSettings {
                    breaker_consecutive_failures: 1,
                    breaker_open_ms: 5_000,
                    breaker_max_open_ms: 5_000,
                    ..Default::default()
                },
                ..Default::default()
            };
            let breaker = breakers
                .get_or_create(
                    "store.embedded",
                    &BreakerConfig::from_settings(&settings.resilience),
                )
                .unwrap();
            Arc::new(ResilientStore::new(
                inner,
                RetryPolicy::from_settings(&settings.resilience),
                breaker,
            ))
        },
    )
    .await;
    // One backend failure through the breaker opens it.
    let breaker = a.state.breakers.get("store.embedded").unwrap();
    let _ = breaker
        .call(|| async { Err::<(), _>(Error::unavailable("backend down")) })
        .await;
    let r = send(&a, get("/v1/collections")).await;
    assert_eq!(r.error_code(503), "unavailable");
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((4..=5).contains(&after), "Retry-After {after}");
    let health = send(&a, get("/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["breakers"][0]["state"], "open");
}

#[tokio::test]
async fn the_openapi_document_lists_every_error_code_and_the_auth_scheme() {
    let a = app_with(|_| {}, Some(KEY), |s, _| s).await;
    let r = send(&a, with_key(get("/openapi.json"), &format!("Bearer {KEY}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorKind"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no ErrorKind enum: {}", doc["components"]["schemas"]))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let all: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
    assert_eq!(codes, all);
    assert_eq!(
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorKind"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer",
        "{}",
        doc["components"]["securitySchemes"]
    );
    let search = &doc["paths"]["/v1/collections/{name}/search"]["post"]["responses"];
    for status in ["401", "429", "503", "504"] {
        assert!(search.get(status).is_some(), "search lacks {status}");
    }
    // The public health route needs no key, and says so.
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
    // MCP is listed; the chat routes are not, as no chat route is configured (they answer 404).
    assert!(doc["paths"]["/mcp"]["post"]["responses"]["406"].is_object());
    assert!(doc["paths"]["/mcp"]["post"]["responses"]["401"].is_object());
    for path in ["/v1/chat/completions", "/v1/completions"] {
        assert!(doc["paths"].get(path).is_none(), "{path} is listed");
        let r = send(
            &a,
            with_key(
                post_json(path, json!({"model": "x"})),
                &format!("Bearer {KEY}"),
            ),
        )
        .await;
        assert_eq!(r.error_code(404), "not_found", "{path}");
    }
    // The document is served without the model's or the store's paths in it.
    assert!(!r.text().contains(&*a._dir.path().display().to_string()));
}

#[tokio::test]
async fn collections_documents_and_search_round_trip() {
    let a = app(|_| {}).await;
    let r = send(&a, post_json("/v1/collections", json!({"name": "notes"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["metric"], "cosine");
    let r = send(&a, post_json("/v1/collections", json!({"name": "notes"}))).await;
    assert_eq!(r.error_code(409), "conflict");
    let r = send(
        &a,
        post_json(
            "/v1/collections/notes/documents",
            json!({"documents": [
                {"id": "a", "text": "cats purr when they are happy", "metadata": {"lang": "en"}},
                {"id": "b", "text": "dogs bark at the mail carrier", "metadata": {"lang": "de"}}
            ]}),
        ),
    )
    .await;
    assert_eq!(r.json()["documents"], 2, "{}", r.text());
    let r = send(
        &a,
        post_json(
            "/v1/collections/notes/search",
            json!({"query": "cats purr", "k": 5, "filter": {"lang": "en"}}),
        ),
    )
    .await;
    let hits = r.json()["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["document_id"], "a");
    let r = send(
        &a,
        req(Method::DELETE, "/v1/collections/notes/documents/a")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.json()["deleted"], true);
    let r = send(
        &a,
        post_json(
            "/v1/collections/notes/search",
            json!({"query": "cats purr", "k": 5}),
        ),
    )
    .await;
    let ids: Vec<Value> = r.json()["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("b")]);
    let r = send(
        &a,
        req(Method::DELETE, "/v1/collections/notes")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        send(&a, get("/v1/collections/notes")).await.error_code(404),
        "not_found"
    );
}

#[tokio::test]
async fn lexical_and_hybrid_search_over_http() {
    let a = app(|_| {}).await;
    let r = send(
        &a,
        post_json(
            "/v1/collections",
            json!({"name": "code", "analyzer": "simple"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["analyzer"], "simple");
    let r = send(
        &a,
        post_json(
            "/v1/collections/code/documents",
            json!({"documents": [
                {"id": "stat", "text": "S_IFCHR is the file type of a character device", "metadata": {"lib": "stat"}},
                {"id": "os", "text": "O_NONBLOCK opens a file without blocking", "metadata": {"lib": "os"}},
                {"id": "pets", "text": "cats purr when they are happy", "metadata": {"lib": "none"}}
            ]}),
        ),
    )
    .await;
    assert_eq!(r.json()["documents"], 3, "{}", r.text());
    let search = |body: Value| {
        let a = &a;
        async move {
            let r = send(a, post_json("/v1/collections/code/search", body)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["hits"].as_array().unwrap().clone()
        }
    };
    let hits = search(json!({"query": "S_IFCHR", "mode": "lexical"})).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["document_id"], "stat");
    assert_eq!(hits[0]["lexical_rank"], 1);
    assert!(hits[0].get("vector_rank").is_none());
    // Hybrid: the exact term wins the lexical arm and so the fused ranking; every hit says
    // where each arm ranked it.
    let hits = search(json!({"query": "O_NONBLOCK", "mode": "hybrid", "k": 3})).await;
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["document_id"], "os");
    assert_eq!(hits[0]["lexical_rank"], 1);
    assert!(hits[0]["vector_rank"].as_u64().is_some());
    assert!(hits.iter().all(|h| h["vector_rank"].as_u64().is_some()));
    // The filter applies to both arms.
    let hits =
        search(json!({"query": "O_NONBLOCK", "mode": "hybrid", "filter": {"lib": "stat"}})).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["document_id"], "stat");
    // Fusion settings are taken: with the lexical arm weighted 0, ranks come from vectors only.
    let hits = search(json!({"query": "O_NONBLOCK", "mode": "hybrid", "fusion": {"lexical_weight": 0, "vector_depth": 2}})).await;
    assert!((2..=3).contains(&hits.len()), "{hits:?}");
    for h in &hits {
        let score = h["score"].as_f64().unwrap() as f32;
        match h["vector_rank"].as_u64() {
            Some(r) => {
                assert!(r <= 2, "only two vector candidates: {hits:?}");
                assert_eq!(score, (1.0 / (60.0 + r as f64)) as f32);
            }
            None => assert_eq!(score, 0.0),
        }
    }
    // Vector mode (the default) reports vector ranks.
    let hits = search(json!({"query": "cats purr"})).await;
    assert_eq!(hits[0]["document_id"], "pets");
    assert_eq!(hits[0]["vector_rank"], 1);
}

#[tokio::test]
async fn errors_echo_at_most_64_characters_of_any_input() {
    let a = app(|_| {}).await;
    let r = send(&a, post_json("/v1/collections", json!({"name": "docs"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let huge = "m".repeat(65_536);
    let long = "n".repeat(300);
    let cases = [
        post_json("/v1/embeddings", json!({"input": "x", "model": huge})),
        post_json("/v1/collections", json!({"name": long})),
        post_json(
            "/v1/collections/docs/search",
            json!({"query": "x", "mode": huge}),
        ),
        post_json(
            "/v1/collections/docs/search",
            json!({"query": "x", huge.as_str(): 1}),
        ),
        post_json(
            "/v1/collections/docs/search",
            json!({"query": "x", "filter": {huge.as_str(): {"$bogus": 1}}}),
        ),
        post_json(
            "/v1/collections/docs/documents",
            json!({"documents": [{"id": huge, "text": "x"}]}),
        ),
        req(Method::DELETE, &format!("/v1/collections/{long}"))
            .body(Body::empty())
            .unwrap(),
    ];
    for request in cases {
        let r = send(&a, request).await;
        assert!(r.status.is_client_error(), "{}", r.text());
        r.error_code(r.status.as_u16());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        for c in ['m', 'n'] {
            assert!(
                !message.contains(&c.to_string().repeat(65)),
                "{} characters of input echoed: {message}",
                message.len()
            );
        }
        assert!(message.len() < 1200, "{}", message.len());
    }
}

/// An app whose model loads through `load` (held or failing on purpose), from a directory named
/// like the model under a directory whose name must never reach a client.
async fn app_loading<F, Fut>(load: F) -> (App, String)
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = aistack_core::Result<aistack_core::embed::SentenceModel>>
        + Send
        + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret-server-path-7f3a");
    let model = aistack_testing::tiny_model(&secret.join("tiny-encoder"));
    let mut settings = Settings::default();
    settings.embed.model = model.display().to_string();
    let engine = aistack_core::embed::EmbeddingEngine::start_with(
        settings.embed.clone(),
        settings.cache.clone(),
        move || load(model),
    );
    let store = aistack_core::store::EmbeddedStore::open(dir.path().join("data"))
        .await
        .unwrap();
    let state = Arc::new(
        aistack_server::serve::AppState::new(
            engine,
            Arc::new(store),
            Arc::new(aistack_core::resilience::BreakerRegistry::new()),
            settings,
            false,
        )
        .unwrap(),
    );
    let app = App {
        router: aistack_server::serve::router(state.clone(), None),
        state,
        _dir: dir,
    };
    (app, "secret-server-path-7f3a".to_string())
}

/// The requests a client may send while the model is not ready; each must be refused with a
/// 503 whose body names the model by its served name and never shows a server path.
async fn refused_without_a_path(a: &App, secret: &str) {
    let requests = [
        post_json("/v1/embeddings", json!({"input": "hi"})),
        post_json("/embed", json!({"inputs": "hi"})),
        post_json("/v1/collections", json!({"name": "notes"})),
        post_json(
            "/v1/collections/notes/documents",
            json!({"documents": [{"id": "a", "text": "cats"}]}),
        ),
        post_json("/v1/collections/notes/search", json!({"query": "cats"})),
    ];
    for r in requests {
        let path = r.uri().path().to_string();
        let reply = send(a, r).await;
        assert!(
            reply.status.is_client_error() || reply.status.is_server_error(),
            "{path}: {}",
            reply.text()
        );
        let text = reply.text();
        assert!(!text.contains(secret), "{path} shows a server path: {text}");
        assert!(!text.contains("/tmp"), "{path} shows a server path: {text}");
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                text.contains("tiny-encoder"),
                "{path} names the model: {text}"
            );
        }
    }
    let health = send(a, get("/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!health.text().contains(secret), "{}", health.text());
}

#[tokio::test]
async fn while_the_model_loads_or_after_it_failed_no_answer_shows_its_path() {
    // Loading, held until released.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let (a, secret) = app_loading(move |dir| async move {
        let _ = held.await;
        aistack_core::embed::SentenceModel::load(
            "tiny",
            &aistack_core::embed::ModelFiles::from_dir(&dir)?,
        )
    })
    .await;
    let r = send(&a, post_json("/v1/embeddings", json!({"input": "hi"}))).await;
    assert_eq!(r.error_code(503), "unavailable");
    assert!(r.text().contains("still loading"), "{}", r.text());
    refused_without_a_path(&a, &secret).await;
    // Once loaded, the same requests work.
    release.send(()).unwrap();
    a.state
        .engine
        .wait_ready(Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let r = send(&a, post_json("/v1/embeddings", json!({"input": "hi"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Failed, with a cause that names files: the client hears that it failed, the log the cause.
    let (a, secret) = app_loading(|dir| async move {
        Err(aistack_core::Error::NotFound {
            what: format!("model file {}", dir.join("model.safetensors").display()),
        })
    })
    .await;
    let _ = a
        .state
        .engine
        .wait_ready(Some(Duration::from_secs(30)))
        .await;
    let r = send(&a, post_json("/v1/embeddings", json!({"input": "hi"}))).await;
    assert_eq!(r.error_code(503), "unavailable");
    assert!(r.text().contains("failed to load"), "{}", r.text());
    refused_without_a_path(&a, &secret).await;
    // In-process callers still get the cause, as the error's source.
    let err = a.state.engine.embedder().unwrap_err();
    assert!(err.chain().contains("model.safetensors"), "{}", err.chain());
}

/// The tiny model with CLS pooling instead of mean: the same size, other vectors.
fn other_model(dir: &std::path::Path) -> String {
    let model = aistack_testing::tiny_model(&dir.join("other-model"));
    std::fs::write(
        model.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": aistack_testing::TINY_DIMS,
               "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false})
        .to_string(),
    )
    .unwrap();
    model.display().to_string()
}

#[tokio::test]
async fn a_collection_keeps_its_model_prompts_and_dimensions() {
    let a = app(|_| {}).await;
    let dims = aistack_testing::TINY_DIMS;
    let doc = json!({"documents": [{"id": "d1", "text": "Restart the service after editing its configuration file."},
                                   {"id": "d2", "text": "Cats sleep for most of the day."}]});
    let query = json!({"query": "restart the service", "k": 2});
    // Made without dims: the served model and its prompts are recorded and shown.
    let r = send(&a, post_json("/v1/collections", json!({"name": "docs"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let view = r.json();
    assert_eq!(view["dims"], dims);
    assert_eq!(view["embedding"]["model"], "model");
    assert_eq!(view["embedding"]["model_dims"], dims);
    assert_eq!(view["embedding"]["query_prompt"], Value::Null);
    let r = send(&a, post_json("/v1/collections/docs/documents", doc.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let before = send(&a, post_json("/v1/collections/docs/search", query.clone())).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text());
    assert_eq!(before.json()["hits"].as_array().unwrap().len(), 2);
    // Collections made by ingesting record the model too.
    let r = send(&a, post_json("/v1/collections/auto/documents", doc.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(&a, get("/v1/collections/auto")).await;
    assert_eq!(r.json()["embedding"]["model"], "model", "{}", r.text());
    // A vectors-only collection (dims given) records nothing.
    let r = send(
        &a,
        post_json("/v1/collections", json!({"name": "raw", "dims": 3})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(r.json().get("embedding").is_none(), "{}", r.text());

    // Matryoshka: the first 8 dimensions, normalized again, in writes and searches alike.
    let r = send(
        &a,
        post_json("/v1/collections", json!({"name": "short", "dimensions": 8})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        (
            r.json()["dims"].clone(),
            r.json()["embedding"]["model_dims"].clone()
        ),
        (json!(8), json!(dims))
    );
    let r = send(
        &a,
        post_json("/v1/collections/short/documents", doc.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stored = a.state.store.get("short", &["d1#0".into()]).await.unwrap();
    let full = send(
        &a,
        post_json("/v1/embeddings", json!({"input": "Restart the service after editing its configuration file.", "dimensions": 8})),
    )
    .await;
    let want = floats(&full.json()["data"][0]["embedding"]);
    assert_eq!(stored[0].vector.len(), 8);
    for (s, w) in stored[0].vector.iter().zip(&want) {
        assert!((s - w).abs() < 1e-5, "{:?} vs {want:?}", stored[0].vector);
    }
    let r = send(&a, post_json("/v1/collections/short/search", query.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["hits"].as_array().unwrap().len(), 2);
    // Wider than the model, zero, or both fields: refused, nothing made.
    for body in [
        json!({"name": "wide", "dimensions": dims + 1}),
        json!({"name": "wide", "dimensions": 0}),
        json!({"name": "wide", "dims": 8, "dimensions": 8}),
    ] {
        let r = send(&a, post_json("/v1/collections", body.clone())).await;
        assert_eq!(r.error_code(400), "invalid_input", "{body}");
    }
    assert_eq!(
        send(&a, get("/v1/collections/wide")).await.status,
        StatusCode::NOT_FOUND
    );
    // Dropped and made again as vectors only: the recorded model is forgotten at once, so texts
    // are refused (the width is not the model's) instead of cut as before.
    let drop = || {
        req(Method::DELETE, "/v1/collections/again")
            .body(Body::empty())
            .unwrap()
    };
    for (request, want) in [
        (
            post_json("/v1/collections", json!({"name": "again", "dimensions": 8})),
            201,
        ),
        (
            post_json("/v1/collections/again/documents", doc.clone()),
            200,
        ),
        (drop(), 200),
        (
            post_json("/v1/collections", json!({"name": "again", "dims": 8})),
            201,
        ),
        (
            post_json("/v1/collections/again/documents", doc.clone()),
            409,
        ),
    ] {
        let r = send(&a, request).await;
        assert_eq!(r.status.as_u16(), want, "{}", r.text());
    }

    // Another model over the same store: its texts are refused (409, naming both models);
    // lexical search and searches by vector still work, and nothing stored changes.
    let models = tempfile::tempdir().unwrap();
    let other = other_model(models.path());
    let shared = a.state.store.clone();
    let b = app_with(move |s| s.embed.model = other, None, move |_, _| shared).await;
    for (path, body) in [
        ("/v1/collections/docs/search", query.clone()),
        ("/v1/collections/docs/documents", doc.clone()),
        ("/v1/collections/short/search", query.clone()),
    ] {
        let r = send(&b, post_json(path, body)).await;
        assert_eq!(r.error_code(409), "conflict", "{path}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("model model") && msg.contains("other-model"),
            "{msg}"
        );
    }
    let r = send(
        &b,
        post_json(
            "/v1/collections/docs/search",
            json!({"query": "restart", "mode": "lexical"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(
        &b,
        post_json(
            "/v1/collections/docs/search",
            json!({"vector": vec![0.1; dims]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The other model may make collections of its own in the same store.
    let r = send(&b, post_json("/v1/collections/mine/documents", doc.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The same model with another query prompt: refused, naming the setting to change.
    let shared = a.state.store.clone();
    let c = app_with(
        |s| s.embed.query_prefix = Some("query: ".into()),
        None,
        move |_, _| shared,
    )
    .await;
    let r = send(&c, post_json("/v1/collections/docs/search", query.clone())).await;
    assert_eq!(r.error_code(409), "conflict");
    assert!(r.text().contains("embed.query_prefix"), "{}", r.text());

    // The first server's collection answers as before.
    let after = send(&a, post_json("/v1/collections/docs/search", query)).await;
    assert_eq!(after.json(), before.json());
}
