//! The fuzz targets' bodies: each takes arbitrary bytes, drives one of aistack's decoders the way
//! the server or the store does, and panics only when an invariant breaks (a 5xx, a non-JSON
//! error, a chunk outside its text, a log that replays differently, ...). The binaries in
//! `fuzz_targets/` hand them to libFuzzer; `tests/corpus.rs` replays the kept corpora (and
//! mutations of them) in the ordinary test suite.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aistack_core::config::{Environment, Settings};
use aistack_core::embed::{EmbeddingEngine, ModelEmbedder};
use aistack_core::ingest::{chunk_text, ChunkConfig};
use aistack_core::resilience::BreakerRegistry;
use aistack_core::store::{EmbeddedStore, Filter};
use aistack_core::ErrorKind;
use aistack_server::serve::{router, AppState};
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

/// The in-process server every request target drives: the tiny model and an embedded store,
/// with one collection `fuzz` holding a few documents.
struct Http {
    rt: tokio::runtime::Runtime,
    router: Router,
    embedder: Arc<ModelEmbedder>,
    _dir: tempfile::TempDir,
}

fn http() -> &'static Http {
    static HTTP: OnceLock<Http> = OnceLock::new();
    HTTP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let model = aistack_testing::tiny_model(&dir.path().join("model"));
        let mut settings = Settings::default();
        settings.embed.model = model.display().to_string();
        let (router, embedder) = rt.block_on(async {
            let engine = EmbeddingEngine::start(settings.embed.clone(), settings.cache.clone());
            let embedder = engine
                .wait_ready(Some(Duration::from_secs(60)))
                .await
                .expect("the tiny model loads");
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
            (router(state, None), embedder)
        });
        let http = Http {
            rt,
            router,
            embedder,
            _dir: dir,
        };
        let seed = json!({"documents": [
            {"id": "a", "text": "Cats purr when they are content.", "metadata": {"lang": "en", "year": 2024}},
            {"id": "b", "text": "S_IFCHR marks a character device.", "metadata": {"lang": "en", "tags": ["c"]}},
        ]});
        let (status, body) = http.send("/v1/collections/fuzz/documents", seed.to_string().into());
        assert_eq!(status, 200, "{body}");
        http
    })
}

impl Http {
    /// POSTs `body` as JSON to `path`; returns the status and the body.
    fn send(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
            )
        })
    }
}

/// One request to `path`: never a 5xx, always JSON, an error always in the one shape with a
/// bounded message.
fn request(path: &str, data: &[u8]) {
    let (status, body) = http().send(path, data.to_vec());
    assert!(
        status < 500,
        "{path}: {status} for {:?}: {body}",
        String::from_utf8_lossy(data)
    );
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    if status >= 400 {
        let e = &v["error"];
        let message = e["message"].as_str().expect("an error message");
        assert!(e["code"].is_string() && e["error_id"].is_string(), "{body}");
        assert!(
            message.chars().count() <= 1024,
            "an unbounded message: {body}"
        );
    }
}

/// `POST /v1/embeddings` (OpenAI shape: strings, token ids, encodings, dimensions).
pub fn request_embeddings(data: &[u8]) {
    request("/v1/embeddings", data);
}

/// `POST /embed` (text-embeddings-inference shape).
pub fn request_tei(data: &[u8]) {
    request("/embed", data);
}

/// `POST /v1/collections/fuzz/search` (query or vector, filters, modes, fusion).
pub fn request_search(data: &[u8]) {
    request("/v1/collections/fuzz/search", data);
}

/// `POST /v1/collections/fuzz/documents` (documents with ids, texts and metadata).
pub fn request_documents(data: &[u8]) {
    request("/v1/collections/fuzz/documents", data);
}

/// The filter language: parsing is a pure function of the JSON (the same filter twice), and
/// matching a parsed filter against any metadata never panics.
pub fn filter(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(f) = Filter::from_json(&v) else {
        return;
    };
    let again = Filter::from_json(&v).expect("the same JSON parses again");
    assert_eq!(f, again, "{v}");
    let samples = [
        json!({}),
        json!({"lang": "en", "year": 2024, "tags": ["a", "b"], "n": {"x": 1.5}}),
        json!({"lang": ["en", "de"], "year": "2024", "tags": null, "_doc": "d", "_chunk": 3}),
    ];
    for m in samples {
        let m: Map<String, Value> = m.as_object().cloned().unwrap();
        let _ = f.matches(&m);
    }
}

/// The chunker over the tiny model's token spans: chunks in order, each a slice of the text
/// within the token budget, together covering every token.
pub fn chunker(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cfg = ChunkConfig {
        max_tokens: 1 + head[0] as usize % 64,
        overlap_tokens: head[1] as usize % 64,
    };
    if cfg.validate().is_err() {
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let spans = {
        use aistack_core::embed::Embedder;
        http()
            .embedder
            .token_spans(&text)
            .expect("any text tokenizes")
    };
    let chunks = chunk_text(&text, &spans, &cfg);
    if spans.is_empty() {
        assert!(chunks.is_empty());
        return;
    }
    assert_eq!(
        chunks[0].range.start, spans[0].start,
        "the first token is covered"
    );
    assert_eq!(
        chunks.last().unwrap().range.end,
        spans.last().unwrap().end,
        "the last token is covered"
    );
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(
            c.text,
            text[c.range.clone()],
            "a chunk is a slice of its text"
        );
        let tokens = spans
            .iter()
            .filter(|s| s.start >= c.range.start && s.end <= c.range.end)
            .count();
        assert!(
            tokens <= cfg.max_tokens,
            "{tokens} tokens in a chunk of {}",
            cfg.max_tokens
        );
        if i > 0 {
            let before = &chunks[i - 1];
            assert!(c.range.start > before.range.start, "chunks move forward");
            // No token between two chunks is left out.
            assert!(
                !spans
                    .iter()
                    .any(|s| s.start >= before.range.end && s.end <= c.range.start),
                "a token fell between chunks {} and {i}",
                i - 1
            );
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
    }
    let dir = DIR.with(|d| d.path().join(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The embedded store's log: arbitrary bytes after the magic either are refused as corrupt
/// (the file untouched) or replay, with a torn tail cut, into operations that write back the same.
pub fn log_frames(data: &[u8]) {
    aistack_core::store::fuzz::log_replay(&scratch("log"), data);
}

/// The HNSW index checkpoint (`ann.json` and its index file): loads or is refused.
pub fn checkpoint(data: &[u8]) {
    aistack_core::store::fuzz::checkpoint_load(&scratch("checkpoint"), data);
}

/// The config loader over an arbitrary `aistack.toml`: it loads (and validates) or fails with a
/// `config` error, never anything else.
pub fn config(data: &[u8]) {
    let dir = scratch("config");
    let path = dir.join("aistack.toml");
    std::fs::write(&path, data).unwrap();
    let vars = figment::providers::Env::prefixed("AISTACK_FUZZ_UNSET__").split("__");
    match Settings::load_with(Some(&path), Environment::Dev, vars) {
        // What loads has passed validation; the limits it holds are usable.
        Ok(s) => assert!(s.embed.max_inputs_per_request > 0 && s.server.max_body_bytes > 0),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Config, "{e}"),
    }
}
