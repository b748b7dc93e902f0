//! What the in-process router suites share: an app over the tiny model and a fresh embedded
//! store, and requests and whole replies.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::Settings;
use aistack_core::embed::EmbeddingEngine;
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::{EmbeddedStore, VectorStore};
use aistack_server::serve::auth::ApiKeys;
use aistack_server::serve::{router, AppState};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

pub const KEY: &str = "test-key-0123456789abcdef";

/// A router over the tiny model and a fresh embedded store, with `tune` applied to the settings.
pub struct App {
    pub router: Router,
    pub state: Arc<AppState>,
    pub _dir: tempfile::TempDir,
}

pub async fn app_with(
    tune: impl FnOnce(&mut Settings),
    keys: Option<&str>,
    wrap: impl FnOnce(Arc<dyn VectorStore>, &BreakerRegistry) -> Arc<dyn VectorStore>,
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let model = aistack_testing::tiny_model(&dir.path().join("model"));
    let mut settings = Settings::default();
    settings.embed.model = model.display().to_string();
    tune(&mut settings);
    let engine = EmbeddingEngine::start(settings.embed.clone(), settings.cache.clone());
    engine
        .wait_ready(Some(Duration::from_secs(30)))
        .await
        .expect("the tiny model loads");
    let store = EmbeddedStore::open(dir.path().join("data")).await.unwrap();
    let breakers = Arc::new(BreakerRegistry::new());
    let store = wrap(Arc::new(store), &breakers);
    let state = Arc::new(AppState::new(engine, store, breakers, settings, false).unwrap());
    let keys = keys.map(|k| ApiKeys::parse(k).unwrap());
    App {
        router: router(state.clone(), keys),
        state,
        _dir: dir,
    }
}

pub async fn app(tune: impl FnOnce(&mut Settings)) -> App {
    app_with(tune, None, |s, _| s).await
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks the one error shape and returns the code.
    pub fn error_code(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert!(self.headers.contains_key("x-request-id"));
        assert_eq!(self.headers["content-type"], "application/json");
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(e["error_id"].as_str().unwrap().len(), 32, "{v}");
        e["code"].as_str().unwrap().to_string()
    }
}

pub async fn send(app: &App, req: Request<Body>) -> Reply {
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn req(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

pub fn post_json(path: &str, body: Value) -> Request<Body> {
    req(Method::POST, path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn post_raw(path: &str, body: impl Into<Body>, content_type: &str) -> Request<Body> {
    req(Method::POST, path)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    req(Method::GET, path).body(Body::empty()).unwrap()
}

/// A request whose body never finishes arriving: it holds its handler (and its slot) open.
pub fn never_ending(path: &str) -> Request<Body> {
    let stream = futures::stream::pending::<Result<Bytes, std::io::Error>>();
    post_raw(path, Body::from_stream(stream), "application/json")
}
