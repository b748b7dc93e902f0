//! Embeds a few texts through aistack's public API and prints how similar they are.
//!
//! `cargo run --release -p aistack-examples --example embed -- [MODEL]` where MODEL is a model
//! directory or a Hugging Face id (default: `embed.model`, i.e. all-MiniLM-L6-v2).

use std::time::Duration;

use aistack_core::config::Settings;
use aistack_core::embed::{Embedder, EmbeddingEngine, InputKind};

#[tokio::main]
async fn main() -> aistack_core::Result<()> {
    let mut settings = Settings::load(None)?;
    if let Some(model) = std::env::args().nth(1) {
        settings.embed.model = model;
    }
    // Loading happens in the background; wait for it here.
    let engine = EmbeddingEngine::start(settings.embed, settings.cache);
    let embedder = engine.wait_ready(Some(Duration::from_secs(600))).await?;
    println!("{}: {} dimensions", embedder.model_id(), embedder.dims());

    let texts: Vec<String> = [
        "How do I open a file for reading in Python?",
        "Use open() with mode 'r' to read a file.",
        "The cat sat on the mat.",
    ]
    .map(String::from)
    .to_vec();
    let vectors = embedder.embed(&texts, InputKind::Plain).await?;
    for (i, t) in texts.iter().enumerate().skip(1) {
        // The vectors are normalized, so the dot product is the cosine similarity.
        let sim: f32 = vectors[0].iter().zip(&vectors[i]).map(|(a, b)| a * b).sum();
        println!("{sim:.3}  {:?} ~ {:?}", texts[0], t);
    }
    Ok(())
}
