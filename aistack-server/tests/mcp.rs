//! `/mcp` in-process: JSON-RPC over the router's whole layer stack (keys, request ids,
//! metrics), each tool through its HTTP handler, and every failure a tool error carrying the
//! API's code. The official Python SDK (both transports) and the conformance suite drive the
//! real binary in `serve.rs`.

mod common;

use std::sync::Arc;

use aistack_core::config::Settings;
use aistack_core::embed::EmbeddingEngine;
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::EmbeddedStore;
use aistack_server::serve::{router, AppState};
use axum::body::Body;
use axum::http::{Method, Request};
use common::{app, app_with, send, App, Reply, KEY};
use serde_json::{json, Value};

/// A JSON-RPC request to `/mcp` as a streamable-HTTP client sends it.
fn rpc(method: &str, params: Value, key: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    b.body(Body::from(body.to_string())).unwrap()
}

async fn call(app: &App, method: &str, params: Value) -> Value {
    let r = send(app, rpc(method, params, None)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert!(r.headers.contains_key("x-request-id"));
    r.json()
}

/// Calls a tool and returns its result (`isError`, `content`, `structuredContent`).
async fn tool(app: &App, name: &str, args: Value) -> Value {
    let v = call(app, "tools/call", json!({"name": name, "arguments": args})).await;
    v.get("result").cloned().unwrap_or_else(|| panic!("{v}"))
}

fn ok(r: &Value) -> &Value {
    assert_eq!(r["isError"], false, "{r}");
    assert!(
        r["content"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    &r["structuredContent"]
}

/// The code of a tool error, after checking its shape.
fn tool_error(r: &Value) -> String {
    assert_eq!(r["isError"], true, "{r}");
    let e = &r["structuredContent"]["error"];
    let code = e["code"].as_str().unwrap().to_string();
    assert_eq!(e["error_id"].as_str().unwrap().len(), 32, "{r}");
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("error {code}: ")),
        "{r}"
    );
    code
}

#[tokio::test]
async fn initialize_names_the_server_and_the_revisions_it_speaks() {
    let app = app(|_| {}).await;
    let v = call(
        &app,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    )
    .await;
    let r = &v["result"];
    assert_eq!(r["protocolVersion"], "2025-11-25", "{v}");
    assert_eq!(r["serverInfo"]["name"], "aistack");
    assert!(r["capabilities"]["tools"].is_object(), "{v}");
    assert!(r["capabilities"]["resources"].is_object(), "{v}");
    // An older revision than the two served is answered with the newest handshake one.
    let mut req = rpc(
        "initialize",
        json!({"protocolVersion": "2024-11-05", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
        None,
    );
    req.headers_mut().remove("mcp-protocol-version");
    let r = send(&app, req).await;
    assert_eq!(
        r.json()["result"]["protocolVersion"],
        "2025-11-25",
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn tools_store_search_and_delete_through_the_api_handlers() {
    let app = app(|_| {}).await;
    let listed = call(&app, "tools/list", json!({})).await;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "search",
            "add_documents",
            "delete_document",
            "list_collections",
            "describe_collection",
            "embed"
        ]
    );
    let docs = json!([
        {"id": "a", "text": "alpha particles and ENOENT errors", "metadata": {"lang": "en"}},
        {"id": "b", "text": "beta decay of heavy nuclei", "metadata": {"lang": "de"}},
    ]);
    let r = tool(
        &app,
        "add_documents",
        json!({"collection": "docs", "documents": docs}),
    )
    .await;
    let added = ok(&r);
    assert_eq!(added["documents"], 2, "{r}");
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Stored 2 document(s)"),
        "{r}"
    );
    let dims = app.state.engine.embedder().unwrap().info().dims;
    let r = tool(&app, "describe_collection", json!({"collection": "docs"})).await;
    assert_eq!(ok(&r)["count"], added["chunks"], "{r}");
    assert_eq!(ok(&r)["dims"], dims, "{r}");

    let r = tool(
        &app,
        "search",
        json!({"collection": "docs", "query": "ENOENT", "mode": "lexical", "k": 5}),
    )
    .await;
    let hits = ok(&r)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 1, "{r}");
    assert_eq!(hits[0]["document_id"], "a");
    assert!(
        r["content"][0]["text"].as_str().unwrap().contains("a#0"),
        "{r}"
    );
    let r = tool(
        &app,
        "search",
        json!({"collection": "docs", "query": "nuclei", "k": 5, "filter": {"lang": "de"}}),
    )
    .await;
    let ids: Vec<&str> = ok(&r)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b"], "{r}");

    let r = tool(
        &app,
        "delete_document",
        json!({"collection": "docs", "id": "a"}),
    )
    .await;
    assert_eq!(ok(&r)["deleted"], true, "{r}");
    let r = tool(
        &app,
        "search",
        json!({"collection": "docs", "query": "ENOENT", "mode": "lexical"}),
    )
    .await;
    assert_eq!(ok(&r)["hits"], json!([]), "{r}");
    let r = tool(
        &app,
        "delete_document",
        json!({"collection": "docs", "id": "a"}),
    )
    .await;
    assert_eq!(tool_error(&r), "not_found");

    let r = tool(&app, "embed", json!({"texts": ["one", "two", "three"]})).await;
    let e = ok(&r);
    assert_eq!(e["dimensions"], dims);
    assert_eq!(e["embeddings"].as_array().unwrap().len(), 3);
    // Matryoshka dimensions and named prompts, as on /v1/embeddings.
    let r = tool(&app, "embed", json!({"texts": ["one"], "dimensions": 5})).await;
    let e = ok(&r);
    assert_eq!(e["dimensions"], 5, "{r}");
    let cut = aistack_testing::floats(&e["embeddings"][0]);
    assert!(
        (cut.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4,
        "{cut:?}"
    );
    let r = tool(&app, "list_collections", json!({})).await;
    assert_eq!(ok(&r)["collections"][0]["name"], "docs", "{r}");

    // Collections are resources too.
    let v = call(&app, "resources/list", json!({})).await;
    assert_eq!(
        v["result"]["resources"][0]["uri"], "aistack://collections/docs",
        "{v}"
    );
    let v = call(
        &app,
        "resources/read",
        json!({"uri": "aistack://collections/docs"}),
    )
    .await;
    let text = v["result"]["contents"][0]["text"].as_str().unwrap();
    let view: Value = serde_json::from_str(text).unwrap();
    assert_eq!(view["name"], "docs");
    let v = call(
        &app,
        "resources/read",
        json!({"uri": "aistack://collections/none-such"}),
    )
    .await;
    assert_eq!(v["error"]["code"], -32002, "{v}");
    assert_eq!(v["error"]["data"]["error"]["code"], "not_found", "{v}");

    // Every call is counted by tool, transport and outcome.
    let m = send(&app, common::get("/metrics")).await.text();
    for series in [
        r#"aistack_mcp_tool_calls_total{tool="search",transport="http",outcome="ok"} 3"#,
        r#"aistack_mcp_tool_calls_total{tool="delete_document",transport="http",outcome="not_found"} 1"#,
        r#"aistack_http_requests_total{route="/mcp",method="POST",status="200"}"#,
    ] {
        assert!(m.contains(series), "{series} missing from:\n{m}");
    }
}

#[tokio::test]
async fn bad_input_is_a_tool_error_with_the_api_code() {
    let app = app(|s| {
        s.server.max_search_k = 20;
        s.server.max_documents_per_request = 2;
        s.server.max_document_chars = 100;
    })
    .await;
    tool(
        &app,
        "add_documents",
        json!({"collection": "docs", "documents": [{"id": "a", "text": "some text"}]}),
    )
    .await;
    let cases = [
        (
            "describe_collection",
            json!({"collection": "missing"}),
            "not_found",
        ),
        (
            "describe_collection",
            json!({"collection": "../x"}),
            "invalid_input",
        ),
        ("describe_collection", json!({}), "invalid_input"),
        (
            "describe_collection",
            json!({"collection": 7}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": "x", "k": 0}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": "x", "k": 21}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": ""}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": "x", "mode": "fuzzy"}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "vector": [1.0, 2.0]}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": "x", "filter": {"$bogus": 1}}),
            "invalid_input",
        ),
        (
            "search",
            json!({"collection": "docs", "query": "x", "top": 3}),
            "invalid_input",
        ),
        (
            "add_documents",
            json!({"collection": "docs", "documents": []}),
            "invalid_input",
        ),
        (
            "add_documents",
            json!({"collection": "docs", "documents": [{"id": "", "text": "x"}]}),
            "invalid_input",
        ),
        (
            "add_documents",
            json!({"collection": "docs", "documents": [{"id": "b", "text": "  "}]}),
            "invalid_input",
        ),
        (
            "add_documents",
            json!({"collection": "docs", "documents": [
            {"id": "b", "text": "x"}, {"id": "c", "text": "y"}, {"id": "d", "text": "z"}]}),
            "invalid_input",
        ),
        (
            "add_documents",
            json!({"collection": "docs", "documents": [{"id": "b", "text": "x".repeat(101)}]}),
            "invalid_input",
        ),
        ("embed", json!({"texts": []}), "invalid_input"),
        ("embed", json!({"texts": "not a list"}), "invalid_input"),
        (
            "embed",
            json!({"texts": ["x"], "prompt_name": "nope"}),
            "invalid_input",
        ),
        (
            "embed",
            json!({"texts": ["x"], "dimensions": 0}),
            "invalid_input",
        ),
        (
            "embed",
            json!({"texts": ["x"], "dimensions": 100000}),
            "invalid_input",
        ),
        ("list_collections", json!({"extra": true}), "invalid_input"),
    ];
    for (name, args, want) in cases {
        let r = tool(&app, name, args.clone()).await;
        assert_eq!(tool_error(&r), want, "{name} {args}: {r}");
    }
    // The failed calls changed nothing.
    let r = tool(&app, "describe_collection", json!({"collection": "docs"})).await;
    assert_eq!(ok(&r)["count"], 1, "{r}");
    // An unknown tool is the protocol's error, naming the tools there are.
    let v = call(
        &app,
        "tools/call",
        json!({"name": "drop_everything", "arguments": {}}),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("search"),
        "{v}"
    );
}

#[tokio::test]
async fn overload_and_a_loading_model_are_tool_errors_with_a_retry_hint() {
    let app = app(|s| s.server.max_concurrent_requests = 1).await;
    let held = app.state.api_slots.clone().acquire_owned().await.unwrap();
    let r = tool(&app, "list_collections", json!({})).await;
    assert_eq!(tool_error(&r), "overloaded");
    assert_eq!(r["structuredContent"]["retry_after_seconds"], 1, "{r}");
    // HTTP routes share the same slots.
    let busy = send(&app, common::get("/v1/collections")).await;
    assert_eq!(busy.error_code(429), "overloaded");
    drop(held);
    let r = tool(&app, "list_collections", json!({})).await;
    ok(&r);

    // A model that cannot load: embedding is `unavailable`, the store still answers.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.embed.model = "/nonexistent/model".into();
    settings.embed.load_attempts = 1;
    let engine = EmbeddingEngine::start(settings.embed.clone(), settings.cache.clone());
    let store = EmbeddedStore::open(dir.path().join("data")).await.unwrap();
    let state = Arc::new(
        AppState::new(
            engine,
            Arc::new(store),
            Arc::new(BreakerRegistry::new()),
            settings,
            false,
        )
        .unwrap(),
    );
    let loading = App {
        router: router(state.clone(), None),
        state,
        _dir: dir,
    };
    let r = tool(&loading, "embed", json!({"texts": ["x"]})).await;
    assert_eq!(tool_error(&r), "unavailable", "{r}");
    let r = tool(
        &loading,
        "add_documents",
        json!({"collection": "c", "documents": [{"id": "a", "text": "x"}]}),
    )
    .await;
    assert_eq!(tool_error(&r), "unavailable", "{r}");
    let r = tool(&loading, "list_collections", json!({})).await;
    ok(&r);
}

#[tokio::test]
async fn mcp_takes_the_api_key_and_refuses_foreign_hosts() {
    let app = app_with(|_| {}, Some(KEY), |s, _| s).await;
    let r: Reply = send(&app, rpc("tools/list", json!({}), None)).await;
    assert_eq!(r.error_code(401), "unauthorized");
    let r = send(
        &app,
        rpc("tools/list", json!({}), Some("wrong-key-0123456789")),
    )
    .await;
    assert_eq!(r.error_code(401), "unauthorized");
    let r = send(&app, rpc("tools/list", json!({}), Some(KEY))).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["result"]["tools"].as_array().unwrap().len(), 6);
    // DNS rebinding: a page on another name that resolves to loopback is refused.
    let mut req = rpc("tools/list", json!({}), Some(KEY));
    req.headers_mut()
        .insert("host", "evil.example.com".parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.error_code(403), "forbidden");
    // A deployment reached by its own name lists it.
    let named = app_with(
        |s| s.server.mcp_allowed_hosts = vec!["search.internal".into()],
        None,
        |s, _| s,
    )
    .await;
    let mut req = rpc("tools/list", json!({}), None);
    req.headers_mut()
        .insert("host", "search.internal:8443".parse().unwrap());
    let r = send(&named, req).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
}

#[tokio::test]
async fn refusals_of_the_transport_have_the_one_error_shape() {
    let app = app(|s| s.server.max_body_bytes = 4096).await;
    // A body over the limit, declared or chunked.
    let big =
        json!({"name": "search", "arguments": {"collection": "c", "query": "x".repeat(5000)}});
    let mut declared = rpc("tools/call", big.clone(), None);
    let len = big.to_string().len() + 60;
    declared
        .headers_mut()
        .insert("content-length", len.to_string().parse().unwrap());
    let r = send(&app, declared).await;
    assert_eq!(r.error_code(413), "payload_too_large");
    assert!(r.text().contains("server.max_body_bytes"), "{}", r.text());
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": big}).to_string();
    let chunks = futures::stream::iter(
        body.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let mut req = rpc("tools/list", json!({}), None);
    *req.body_mut() = Body::from_stream(chunks);
    let r = send(&app, req).await;
    assert_eq!(r.error_code(413), "payload_too_large");
    // A client that takes neither JSON nor event streams, and a body that is not JSON.
    let mut req = rpc("tools/list", json!({}), None);
    req.headers_mut()
        .insert("accept", "text/html".parse().unwrap());
    assert_eq!(send(&app, req).await.error_code(406), "not_acceptable");
    let mut req = rpc("tools/list", json!({}), None);
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    assert_eq!(
        send(&app, req).await.error_code(415),
        "unsupported_media_type"
    );
    // A JSON body that is no JSON-RPC message is bad input.
    let mut req = rpc("tools/list", json!({}), None);
    *req.body_mut() = Body::from("{not json");
    assert_eq!(send(&app, req).await.error_code(400), "invalid_input");
    // GET opens no event stream on a stateless endpoint: 405, saying what is allowed.
    let mut req = rpc("tools/list", json!({}), None);
    *req.method_mut() = Method::GET;
    *req.body_mut() = Body::empty();
    let r = send(&app, req).await;
    assert_eq!(r.error_code(405), "method_not_allowed");
}
