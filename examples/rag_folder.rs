//! Ingests a folder of `.txt`/`.md` files into the embedded store and answers queries from it,
//! using only aistack's public API.
//!
//! `cargo run --release -p aistack-examples --example rag_folder -- FOLDER DATA_DIR "query" ...`
//! (the model is `embed.model`, e.g. `AISTACK__EMBED__MODEL=/path/to/all-MiniLM-L6-v2`).

use std::path::Path;
use std::sync::Arc;

use aistack_core::config::Settings;
use aistack_core::embed::EmbeddingEngine;
use aistack_core::ingest::{Document, Ingestor};
use aistack_core::store::{EmbeddedStore, VectorStore};
use serde_json::{Map, Value};

fn read_folder(dir: &Path, out: &mut Vec<Document>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            read_folder(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("txt" | "md")
        ) {
            let mut metadata = Map::new();
            metadata.insert("path".into(), Value::from(path.display().to_string()));
            out.push(Document {
                id: path.display().to_string(),
                text: std::fs::read_to_string(&path)?,
                metadata,
            });
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [folder, data_dir, queries @ ..] = args.as_slice() else {
        eprintln!("usage: rag_folder FOLDER DATA_DIR QUERY...");
        std::process::exit(2);
    };
    let mut settings = Settings::load(None)?;
    // A bulk job: each embedding request may carry 32 chunks of up to 256 tokens, so give it
    // more than an interactive request's deadline (which counts time queued, too).
    settings.embed.request_timeout_ms = settings.embed.request_timeout_ms.max(600_000);
    let engine = EmbeddingEngine::start(settings.embed, settings.cache);
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(data_dir).await?);
    let ingestor = Ingestor::new(engine.wait_ready(None).await?, store, None, 1000)?;
    ingestor.ensure_collection("docs").await?;

    let mut docs = Vec::new();
    read_folder(Path::new(folder), &mut docs)?;
    let report = ingestor.ingest("docs", docs).await?;
    println!(
        "ingested {} documents as {} chunks",
        report.documents, report.chunks
    );

    for q in queries {
        println!("\n{q}");
        for hit in ingestor.search("docs", q, 3, None, None).await?.iter() {
            let preview: String = hit
                .text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(100)
                .collect();
            println!("  {:.3}  {}  {preview}", hit.score, hit.document_id);
        }
    }
    Ok(())
}
