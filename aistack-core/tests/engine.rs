//! The engine's behaviour through the public API, with the real model: loading states,
//! validation, admission, timeouts, caching and batching.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{
    EmbedOptions, Embedder, EmbeddingEngine, InputKind, ModelFiles, ModelState, Norm, SentenceModel,
};
use aistack_core::ErrorKind;
use aistack_testing::{cosine, model_dir, reference};

fn settings() -> EmbedSettings {
    EmbedSettings {
        model: model_dir().display().to_string(),
        // These tests check behaviour, not speed: a loaded machine must not time them out.
        request_timeout_ms: 600_000,
        ..EmbedSettings::default()
    }
}

fn load_model() -> aistack_core::Result<SentenceModel> {
    SentenceModel::load("minilm", &ModelFiles::from_dir(&model_dir())?)
}

async fn ready(
    settings: EmbedSettings,
    cache: CacheSettings,
) -> Arc<aistack_core::embed::ModelEmbedder> {
    EmbeddingEngine::start(settings, cache)
        .wait_ready(Some(Duration::from_secs(120)))
        .await
        .expect("model ready")
}

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn unavailable_while_loading_then_ready() {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let engine =
        EmbeddingEngine::start_with(settings(), CacheSettings::default(), move || async move {
            go_rx.await.ok();
            tokio::task::spawn_blocking(load_model).await.unwrap()
        });
    assert_eq!(engine.state(), ModelState::Loading);
    let err = engine
        .embed(&texts(&["hello"]), InputKind::Plain)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("loading"), "{err}");
    // A bounded wait while loading times out.
    let err = engine
        .wait_ready(Some(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    go_tx.send(()).unwrap();
    engine
        .wait_ready(Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(engine.state(), ModelState::Ready);
    let v = engine
        .embed(&texts(&["hello"]), InputKind::Plain)
        .await
        .unwrap();
    assert_eq!(v[0].len(), 384);
}

#[tokio::test]
async fn a_broken_model_directory_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let src = model_dir();
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // No weights at all.
    let s = EmbedSettings {
        model: dir.path().display().to_string(),
        ..EmbedSettings::default()
    };
    let engine = EmbeddingEngine::start(s.clone(), CacheSettings::default());
    let err = engine
        .wait_ready(Some(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    match engine.state() {
        ModelState::Failed(reason) => assert!(reason.contains("model.safetensors"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // Corrupt weights.
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    let engine = EmbeddingEngine::start(s.clone(), CacheSettings::default());
    assert!(engine
        .wait_ready(Some(Duration::from_secs(30)))
        .await
        .is_err());
    assert!(matches!(engine.state(), ModelState::Failed(r) if r.contains("safetensors")));
    // Real weights but a config that doesn't match them.
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["hidden_size"] = serde_json::json!(768);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let engine = EmbeddingEngine::start(s, CacheSettings::default());
    assert!(engine
        .wait_ready(Some(Duration::from_secs(60)))
        .await
        .is_err());
    assert!(
        matches!(engine.state(), ModelState::Failed(r) if r.contains("do not match")),
        "{:?}",
        engine.state()
    );
}

#[tokio::test]
async fn hugging_face_cache_layout_loads() {
    // models--owner--name/{refs/main, snapshots/<hash>/...} as hf-hub and huggingface_hub write it.
    let dir = tempfile::tempdir().unwrap();
    let root = dir
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2");
    let snap = root.join("snapshots/0123abcd");
    std::fs::create_dir_all(snap.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "0123abcd").unwrap();
    let src = model_dir();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::os::unix::fs::symlink(src.join(f), snap.join(f)).unwrap();
    }
    let s = EmbedSettings {
        model: root.display().to_string(),
        ..settings()
    };
    let e = ready(s, CacheSettings::default()).await;
    assert_eq!(e.max_input_tokens(), 256);
    // And through HF_HOME as a Hub id, offline: served from the cache without a network.
    let hub = dir.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::rename(
        &root,
        hub.join("models--sentence-transformers--all-MiniLM-L6-v2"),
    )
    .unwrap();
    // No other test in this binary reads these variables.
    std::env::set_var("HF_HOME", dir.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let s = EmbedSettings {
        model: "sentence-transformers/all-MiniLM-L6-v2".into(),
        ..settings()
    };
    let e = ready(s, CacheSettings::default()).await;
    let r = reference();
    let v = e
        .embed(&[r[0].text.clone()], InputKind::Plain)
        .await
        .unwrap();
    assert!(cosine(&v[0], &r[0].embedding) >= 0.9999);
}

#[tokio::test]
async fn invalid_input_is_refused_with_a_clear_error() {
    let e = ready(
        EmbedSettings {
            max_inputs_per_request: 4,
            max_input_chars: 100,
            ..settings()
        },
        CacheSettings::default(),
    )
    .await;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "no inputs"),
        (texts(&["a", "b", "c", "d", "e"]), "5 inputs"),
        (texts(&["fine", ""]), "input 1 is empty"),
        (texts(&["fine", " \t\n"]), "input 1 is empty"),
        (vec!["x".repeat(101)], "input 0 has 101 characters"),
    ];
    for (input, want) in cases {
        let err = e.embed(&input, InputKind::Plain).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(want),
            "{err} should contain {want}"
        );
    }
    assert_eq!(e.stats().batcher.sequences, 0, "nothing was computed");
    // Exactly at the limits is fine; multi-byte characters count once.
    let ok = e.embed(&["é".repeat(100)], InputKind::Plain).await.unwrap();
    assert_eq!(ok.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_when_admission_is_full() {
    let e = ready(
        EmbedSettings {
            max_concurrent_requests: 1,
            ..settings()
        },
        CacheSettings {
            embeddings_max_bytes: 0,
            ..CacheSettings::default()
        },
    )
    .await;
    let long: Vec<String> = reference()
        .into_iter()
        .filter(|r| r.tokens >= 256)
        .map(|r| r.text)
        .take(16)
        .collect();
    let e2 = e.clone();
    let busy = tokio::spawn(async move { e2.embed(&long, InputKind::Plain).await });
    while e.stats().batcher.in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let err = e
        .embed(&texts(&["one more"]), InputKind::Plain)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(err.is_retryable());
    busy.await.unwrap().unwrap();
    assert_eq!(e.stats().batcher.rejected, 1);
    // Once answered, the place is free again.
    e.embed(&texts(&["one more"]), InputKind::Plain)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out() {
    let e = ready(
        EmbedSettings {
            request_timeout_ms: 1,
            ..settings()
        },
        CacheSettings::default(),
    )
    .await;
    let long: Vec<String> = reference()
        .into_iter()
        .filter(|r| r.tokens >= 256)
        .map(|r| r.text)
        .take(20)
        .collect();
    let err = e.embed(&long, InputKind::Plain).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn cache_hits_skip_compute_and_keep_order() {
    let e = ready(settings(), CacheSettings::default()).await;
    let r = reference();
    let first: Vec<String> = r[..5].iter().map(|x| x.text.clone()).collect();
    let a = e.embed(&first, InputKind::Plain).await.unwrap();
    assert_eq!(e.stats().batcher.sequences, 5);
    // Three cached, two new, interleaved: only the two new ones are computed.
    let mixed = vec![
        r[5].text.clone(),
        r[2].text.clone(),
        r[0].text.clone(),
        r[6].text.clone(),
        r[4].text.clone(),
    ];
    let b = e.embed(&mixed, InputKind::Plain).await.unwrap();
    let s = e.stats();
    assert_eq!(s.batcher.sequences, 7);
    assert_eq!(s.cache.hits, 3);
    assert_eq!(b[1], a[2]);
    assert_eq!(b[2], a[0]);
    assert_eq!(b[4], a[4]);
    for (v, i) in b.iter().zip([5, 2, 0, 6, 4]) {
        assert!(cosine(v, &r[i].embedding) >= 0.9999);
    }
    // Duplicates within one request are computed once.
    let dup = vec![r[7].text.clone(), r[7].text.clone(), r[7].text.clone()];
    let d = e.embed(&dup, InputKind::Plain).await.unwrap();
    assert_eq!(e.stats().batcher.sequences, 8);
    assert_eq!(d[0], d[2]);
}

#[tokio::test]
async fn prefixes_apply_by_input_kind_and_key_the_cache() {
    let e = ready(
        EmbedSettings {
            query_prefix: Some("query: ".into()),
            passage_prefix: Some("passage: ".into()),
            ..settings()
        },
        CacheSettings::default(),
    )
    .await;
    let t = texts(&["how do I read a file"]);
    let plain = e.embed(&t, InputKind::Plain).await.unwrap();
    let query = e.embed(&t, InputKind::Query).await.unwrap();
    let prefixed = e
        .embed(&texts(&["query: how do I read a file"]), InputKind::Plain)
        .await
        .unwrap();
    assert!(
        cosine(&plain[0], &query[0]) < 0.9999,
        "the prefix changed the input"
    );
    assert!(cosine(&query[0], &prefixed[0]) > 0.99999);
    assert_eq!(e.prefix(InputKind::Passage), Some("passage: "));
    assert_eq!(
        e.stats().cache.hits,
        0,
        "the same text with another prefix is another key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_results_equal_unbatched_results() {
    let e = ready(
        EmbedSettings {
            max_concurrent_requests: 64,
            ..settings()
        },
        CacheSettings {
            embeddings_max_bytes: 0,
            ..CacheSettings::default()
        },
    )
    .await;
    let r = Arc::new(reference());
    let mut alone = Vec::new();
    for i in 0..40 {
        alone.push(
            e.embed(&[r[i].text.clone()], InputKind::Plain)
                .await
                .unwrap()
                .remove(0),
        );
    }
    let batches_before = e.stats().batcher.batches;
    let mut handles = Vec::new();
    for i in 0..40 {
        let e = e.clone();
        let r = r.clone();
        handles.push(tokio::spawn(async move {
            e.embed(&[r[i].text.clone()], InputKind::Plain)
                .await
                .unwrap()
                .remove(0)
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let v = h.await.unwrap();
        assert!(cosine(&v, &alone[i]) > 0.99999, "request {i}");
    }
    let batches = e.stats().batcher.batches - batches_before;
    assert!(
        batches < 40,
        "40 concurrent requests ran in {batches} forward passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_number_of_texts_embed_into_one_buffer_in_order() {
    let e = ready(settings(), CacheSettings::default()).await;
    let r = reference();
    // More texts than one request may carry (32), in groups of 7.
    let all: Vec<String> = r[..75].iter().map(|x| x.text.clone()).collect();
    let flat = e
        .embed_all_flat(
            &all,
            InputKind::Plain,
            Norm::Model,
            &EmbedOptions::default(),
            7,
        )
        .await
        .unwrap();
    let dims = e.info().dims;
    assert_eq!(flat.len(), 75 * dims);
    for (i, row) in flat.chunks(dims).enumerate() {
        assert!(cosine(row, &r[i].embedding) >= 0.9999, "row {i}");
    }
    // Pooled vectors keep the direction but not the unit length; Unit restores it.
    let pooled = e
        .embed_with(
            &all[..2],
            InputKind::Plain,
            Norm::Pooled,
            &EmbedOptions::default(),
        )
        .await
        .unwrap();
    let unit = e
        .embed_with(
            &all[..2],
            InputKind::Plain,
            Norm::Unit,
            &EmbedOptions::default(),
        )
        .await
        .unwrap();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&pooled[0]) - 1.0).abs() > 0.05);
    assert!((norm(&unit[0]) - 1.0).abs() < 1e-4);
    assert!(cosine(&pooled[1], &r[1].embedding) >= 0.9999);
    // One bad text fails the whole call with the input error.
    let mut bad = all.clone();
    bad[40] = String::new();
    let err = e
        .embed_all_flat(
            &bad,
            InputKind::Plain,
            Norm::Model,
            &EmbedOptions::default(),
            32,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Nothing in, nothing out.
    assert!(e
        .embed_all_flat(
            &[],
            InputKind::Plain,
            Norm::Model,
            &EmbedOptions::default(),
            32
        )
        .await
        .unwrap()
        .is_empty());
}
