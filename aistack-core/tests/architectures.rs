//! Every architecture and sentence-transformers module aistack runs, against
//! sentence-transformers' own outputs: the real all-mpnet-base-v2 (MPNet); small random-weight
//! models of every other architecture (`tests/fixtures/arch/`, made with transformers and
//! sentence-transformers by `scripts/make-arch-fixtures.py`, expected values included); and the
//! modules after the transformer (pooling modes, Dense, Normalize, do_lower_case) on the tiny
//! model.

use std::collections::HashMap;
use std::path::Path;

use aistack_core::embed::{normalize, ModelFiles, Pooling, SentenceModel};
use aistack_testing::{cosine, floats, mpnet_dir, mpnet_reference, TinyModel, TINY_DIMS};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};

const MIN_COSINE: f64 = 0.9999;
/// Largest difference of any value from sentence-transformers' (the fixtures keep 7 decimals).
const MAX_ABS_DIFF: f32 = 5e-5;

fn load(dir: &Path) -> SentenceModel {
    let files = ModelFiles::from_dir(dir).expect("model files");
    SentenceModel::load("m", &files).expect("model loads")
}

#[test]
fn all_mpnet_base_v2_matches_sentence_transformers() {
    let m = load(&mpnet_dir());
    let info = m.info();
    assert_eq!(info.architecture, "mpnet");
    assert_eq!(info.dims, 768);
    assert_eq!(info.max_input_tokens, 384);
    assert_eq!(info.pooling, vec![Pooling::Mean]);
    assert!(info.normalize, "modules.json lists Normalize");
    let refs = mpnet_reference();
    assert_eq!(refs.len(), 300);
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let ids = m.tokenize(&texts).unwrap();
    for (i, (ids, r)) in ids.iter().zip(&refs).enumerate() {
        assert_eq!(ids.len(), r.tokens, "token count of line {i}");
    }
    let long = refs.iter().filter(|r| r.tokens >= 384).count();
    assert!(
        long >= 5,
        "the reference has texts the model truncates ({long})"
    );
    // Batches of 8 in file order mix short and long texts; the batch is split across the
    // threads by cost, so texts land alone and beside others.
    let mut worst = 1.0f64;
    for (b, chunk) in ids.chunks(8).enumerate() {
        let batch: Vec<&[u32]> = chunk.iter().map(|v| v.as_slice()).collect();
        let out = m.forward(&batch).unwrap();
        for (k, v) in out.iter().enumerate() {
            let i = b * 8 + k;
            let c = cosine(v, &refs[i].embedding);
            worst = worst.min(c);
            assert!(c >= MIN_COSINE, "line {i}: cosine {c}");
        }
    }
    eprintln!("all-mpnet-base-v2: worst cosine {worst}");
}

/// One fixture: its model directory and sentence-transformers' expected values.
fn fixture(name: &str) -> (std::path::PathBuf, Vec<Value>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(name);
    let text = std::fs::read_to_string(dir.join("expected.jsonl"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let rows = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect();
    (dir, rows)
}

/// Checks every text of fixture `name` in batches of 5 (mixing lengths), returns the model.
fn matches_its_fixture(name: &str, architecture: &str) -> SentenceModel {
    let (dir, rows) = fixture(name);
    let m = load(&dir);
    assert_eq!(m.info().architecture, architecture);
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let ids = m.tokenize(&texts).unwrap();
    let max = m.info().max_input_tokens;
    let mut truncated = 0;
    for (i, (ids, r)) in ids.iter().zip(&rows).enumerate() {
        assert_eq!(
            ids.len() as u64,
            r["tokens"].as_u64().unwrap(),
            "{name}: tokens of line {i}"
        );
        truncated += usize::from(ids.len() == max);
    }
    assert!(
        truncated >= 2,
        "{name}: the fixture has texts the model truncates"
    );
    let (mut worst, mut worst_diff) = (1.0f64, 0.0f32);
    for (b, chunk) in ids.chunks(5).enumerate() {
        let batch: Vec<&[u32]> = chunk.iter().map(|v| v.as_slice()).collect();
        for (k, v) in m.forward(&batch).unwrap().iter().enumerate() {
            let i = b * 5 + k;
            let want = floats(&rows[i]["embedding"]);
            assert_eq!(v.len(), want.len(), "{name}: dims");
            let c = cosine(v, &want);
            worst = worst.min(c);
            assert!(
                c >= MIN_COSINE,
                "{name}: line {i} ({:?}): cosine {c}",
                texts[i]
            );
            // Also value by value: a near miss (tanh GELU for exact) moves some values by
            // about 4e-4 and stays above the cosine bound.
            let diff = v
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            worst_diff = worst_diff.max(diff);
            assert!(diff <= MAX_ABS_DIFF, "{name}: line {i}: |diff| {diff}");
        }
    }
    eprintln!(
        "{name}: worst cosine {worst}, worst |diff| {worst_diff} over {} texts",
        rows.len()
    );
    m
}

#[test]
fn distilbert_matches_sentence_transformers() {
    matches_its_fixture("distilbert", "distilbert");
}

#[test]
fn roberta_with_cls_pooling_and_a_dense_layer_matches_sentence_transformers() {
    let m = matches_its_fixture("roberta", "roberta");
    assert_eq!(m.info().pooling, vec![Pooling::Cls]);
    assert_eq!(m.info().dims, 16);
}

#[test]
fn xlm_roberta_with_a_unigram_tokenizer_matches_sentence_transformers() {
    let m = matches_its_fixture("xlm-roberta", "xlm-roberta");
    assert_eq!(m.info().query_prompt.as_deref(), Some("query: "));
}

#[test]
fn camembert_with_two_pooling_modes_matches_sentence_transformers() {
    let m = matches_its_fixture("camembert", "camembert");
    assert_eq!(m.info().pooling, vec![Pooling::Max, Pooling::MeanSqrtLen]);
    assert!(!m.info().normalize);
}

#[test]
fn bert_with_do_lower_case_and_weighted_mean_matches_sentence_transformers() {
    let m = matches_its_fixture("bert-cased-weightedmean", "bert");
    assert_eq!(m.info().pooling, vec![Pooling::WeightedMean]);
}

#[test]
fn modernbert_with_local_attention_matches_sentence_transformers() {
    matches_its_fixture("modernbert", "modernbert");
}

#[test]
fn qwen3_with_last_token_pooling_matches_sentence_transformers() {
    let m = matches_its_fixture("qwen3", "qwen3");
    assert_eq!(m.info().pooling, vec![Pooling::LastToken]);
}

#[test]
fn nomic_bert_matches_its_reference_code() {
    let m = matches_its_fixture("nomic-bert", "nomic_bert");
    let info = m.info();
    assert_eq!(info.pooling, vec![Pooling::Mean]);
    // nomic's prompt names are the query and document prompts search uses.
    assert_eq!(info.query_prompt.as_deref(), Some("search_query: "));
    assert_eq!(info.passage_prompt.as_deref(), Some("search_document: "));
}

#[test]
fn gte_with_ntk_scaled_rotary_matches_its_reference_code() {
    let m = matches_its_fixture("gte", "new");
    assert_eq!(m.info().pooling, vec![Pooling::Cls]);
}

/// Loading fixture `name` with `key` set to `value` in its config fails with a message naming
/// `named` and the architecture `arch`.
fn refuses(name: &str, key: &str, value: Value, named: &str, arch: &str) {
    let (dir, _) = fixture(name);
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
        }
    }
    rewrite_json(&copy.path().join("config.json"), |c| c[key] = value);
    let err = SentenceModel::load("variant", &ModelFiles::from_dir(copy.path()).unwrap())
        .err()
        .unwrap_or_else(|| panic!("{name}: {key} was accepted"));
    let msg = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        msg.contains(named) && msg.contains(arch),
        "{name} {key}: {msg}"
    );
}

/// Configs of the remote-code architectures that these encoders do not compute are refused by
/// name, not run differently.
#[test]
fn remote_code_variants_it_does_not_run_are_refused() {
    for (key, value, named) in [
        ("rotary_emb_fraction", json!(0.5), "rotary_emb_fraction"),
        ("rotary_scaling_factor", json!(2.0), "rotary_scaling_factor"),
        ("activation_function", json!("gelu"), "gelu"),
        ("prenorm", json!(true), "prenorm"),
    ] {
        refuses("nomic-bert", key, value, named, "nomic_bert");
    }
    for (key, value, named) in [
        ("logn_attention_scale", json!(true), "logn_attention_scale"),
        ("position_embedding_type", json!("absolute"), "absolute"),
        ("layer_norm_type", json!("rms_norm"), "rms_norm"),
        (
            "rope_scaling",
            json!({"type": "ntk", "factor": 2.0, "mixed_b": 0.5}),
            "mixed_b",
        ),
    ] {
        refuses("gte", key, value, named, "gte");
    }
}

/// The fixtures' prompted texts, through the engine: `prompt_name` picks the model's prompt as
/// sentence-transformers' `encode(prompt_name=...)` does; an unknown name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prompts_match_sentence_transformers() {
    use aistack_core::config::{CacheSettings, EmbedSettings};
    use aistack_core::embed::{EmbedOptions, InputKind, ModelEmbedder, Norm};
    use std::sync::Arc;
    for (name, prompts) in [
        ("xlm-roberta", &["query", "passage"][..]),
        ("modernbert", &["query", "document"][..]),
        ("qwen3", &["query"][..]),
        ("nomic-bert", &["search_query", "search_document"][..]),
        ("gte", &["query"][..]),
        // Pools without the prompt's tokens (include_prompt: false).
        ("camembert", &["query"][..]),
    ] {
        let (dir, rows) = fixture(name);
        let model = Arc::new(load(&dir));
        let embedder =
            ModelEmbedder::new(model, &EmbedSettings::default(), &CacheSettings::default())
                .unwrap();
        let texts: Vec<String> = rows
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect();
        for p in prompts {
            let options = EmbedOptions {
                prompt_name: Some(p.to_string()),
                dimensions: None,
            };
            let mut got = Vec::new();
            for chunk in texts.chunks(16) {
                got.extend(
                    embedder
                        .embed_with(chunk, InputKind::Plain, Norm::Model, &options)
                        .await
                        .unwrap(),
                );
            }
            for (i, (v, r)) in got.iter().zip(&rows).enumerate() {
                let c = cosine(v, &floats(&r["prompts"][*p]));
                assert!(c >= MIN_COSINE, "{name} prompt {p}: line {i}: cosine {c}");
            }
        }
        let err = embedder
            .embed_with(
                &texts[..1],
                InputKind::Plain,
                Norm::Model,
                &EmbedOptions {
                    prompt_name: Some("nope".into()),
                    dimensions: None,
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope") && err.to_string().contains("query"));
        if name == "camembert" {
            assert!(!embedder.info().include_prompt);
        }
    }
}

fn rewrite_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn modules(dir: &Path, after_pooling: &[(&str, &str)]) {
    let mut list = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    for (i, (path, kind)) in after_pooling.iter().enumerate() {
        list.push(json!({"idx": i + 2, "name": (i + 2).to_string(), "path": path, "type": kind}));
    }
    std::fs::write(dir.join("modules.json"), serde_json::to_vec(&list).unwrap()).unwrap();
}

fn pooling(dir: &Path, modes: Value) {
    rewrite_json(&dir.join("1_Pooling/config.json"), |c| {
        *c = json!({"embedding_dimension": TINY_DIMS, "pooling_mode": modes});
    });
}

fn texts() -> Vec<Vec<u32>> {
    let m = load(TinyModel::new().path());
    m.tokenize(&[
        "the cat sat on the mat",
        "a dog",
        "what is the answer to it all",
    ])
    .unwrap()
}

#[test]
fn pooling_modes_are_concatenated_in_the_configured_order() {
    let ids = texts();
    let batch: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let pooled = |modes: Value| {
        let t = TinyModel::new();
        modules(t.path(), &[]);
        pooling(t.path(), modes);
        let m = load(t.path());
        assert!(!m.info().normalize);
        (m.info().dims, m.forward(&batch).unwrap())
    };
    let (_, cls) = pooled(json!("cls"));
    let (_, mean) = pooled(json!("mean"));
    let (_, last) = pooled(json!("lasttoken"));
    let (dims, both) = pooled(json!(["lasttoken", "cls", "mean"]));
    assert_eq!(dims, 3 * TINY_DIMS);
    for i in 0..batch.len() {
        assert_eq!(both[i][..TINY_DIMS], last[i][..]);
        assert_eq!(both[i][TINY_DIMS..2 * TINY_DIMS], cls[i][..]);
        assert_eq!(both[i][2 * TINY_DIMS..], mean[i][..]);
        assert_ne!(cls[i], mean[i]);
        assert_ne!(last[i], cls[i]);
    }
    // The older boolean keys concatenate in sentence-transformers' fixed order: cls before
    // mean, however the file lists them.
    let t = TinyModel::new();
    modules(t.path(), &[]);
    rewrite_json(&t.path().join("1_Pooling/config.json"), |c| {
        *c = json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true});
    });
    let m = load(t.path());
    assert_eq!(m.info().pooling, vec![Pooling::Cls, Pooling::Mean]);
    assert_eq!(m.forward(&batch[..1]).unwrap()[0][..TINY_DIMS], cls[0][..]);
}

#[test]
fn dense_layers_and_normalize_run_after_pooling() {
    let ids = texts();
    let batch: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let plain = TinyModel::new();
    modules(plain.path(), &[]);
    let pooled = load(plain.path()).forward(&batch).unwrap();

    let out = 8;
    let w: Vec<f32> = (0..out * TINY_DIMS)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    let b: Vec<f32> = (0..out).map(|j| j as f32 / 10.0 - 0.3).collect();
    let t = TinyModel::new();
    let dense = t.path().join("2_Dense");
    std::fs::create_dir_all(&dense).unwrap();
    std::fs::write(
        dense.join("config.json"),
        json!({"in_features": TINY_DIMS, "out_features": out, "bias": true,
               "activation_function": "torch.nn.modules.activation.Tanh"})
        .to_string(),
    )
    .unwrap();
    let tensors: HashMap<String, Tensor> = [
        (
            "linear.weight".to_string(),
            Tensor::from_vec(w.clone(), (out, TINY_DIMS), &Device::Cpu).unwrap(),
        ),
        (
            "linear.bias".to_string(),
            Tensor::from_vec(b.clone(), out, &Device::Cpu).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    candle_core::safetensors::save(&tensors, dense.join("model.safetensors")).unwrap();
    modules(
        t.path(),
        &[
            ("2_Dense", "sentence_transformers.models.Dense"),
            ("3_Normalize", "sentence_transformers.models.Normalize"),
        ],
    );
    let m = load(t.path());
    assert_eq!(m.info().dims, out);
    assert!(m.info().normalize);
    let got = m.forward(&batch).unwrap();
    for (p, g) in pooled.iter().zip(&got) {
        let mut want: Vec<f32> = (0..out)
            .map(|j| {
                let dot: f32 = (0..TINY_DIMS).map(|k| w[j * TINY_DIMS + k] * p[k]).sum();
                (dot + b[j]).tanh()
            })
            .collect();
        normalize(&mut want);
        assert!(cosine(g, &want) > 0.999_999, "{g:?} vs {want:?}");
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    // A Dense layer that does not take the pooled width is refused by name.
    rewrite_json(&dense.join("config.json"), |c| {
        c["in_features"] = json!(TINY_DIMS + 1)
    });
    let err =
        SentenceModel::load("m", &ModelFiles::from_dir(t.path()).unwrap()).expect_err("refused");
    assert!(err.to_string().contains("Dense"), "{err}");
}

#[test]
fn do_lower_case_lowercases_before_the_tokenizer() {
    let t = TinyModel::new();
    // A tokenizer that keeps case: "The" is not the vocabulary's "the".
    rewrite_json(&t.path().join("tokenizer.json"), |c| {
        c["normalizer"]["lowercase"] = json!(false);
    });
    let cased = load(t.path());
    let upper = cased.tokenize(&["The CAT"]).unwrap();
    let lower = cased.tokenize(&["the cat"]).unwrap();
    assert_ne!(upper, lower);
    rewrite_json(&t.path().join("sentence_bert_config.json"), |c| {
        c["do_lower_case"] = json!(true);
    });
    let lowered = load(t.path());
    assert_eq!(lowered.tokenize(&["The CAT"]).unwrap(), lower);
    // Chunking measures the original text: spans still point into it.
    let spans = lowered.token_spans("The CAT").unwrap();
    assert_eq!(spans.first(), Some(&(0..3)));
}

#[test]
fn modules_aistack_cannot_run_are_refused_by_name() {
    let t = TinyModel::new();
    modules(t.path(), &[("2_LSTM", "sentence_transformers.models.LSTM")]);
    let err =
        SentenceModel::load("m", &ModelFiles::from_dir(t.path()).unwrap()).expect_err("refused");
    assert!(err.to_string().contains("LSTM"), "{err}");
    let t = TinyModel::new();
    rewrite_json(&t.path().join("config.json"), |c| {
        c["model_type"] = json!("gpt2");
    });
    let err =
        SentenceModel::load("m", &ModelFiles::from_dir(t.path()).unwrap()).expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("'gpt2'") && msg.contains("mpnet"), "{msg}");
}
