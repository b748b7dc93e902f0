//! `aistack ingest` and `aistack search`: documents into a collection, and text queries out.

use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aistack_core::config::Settings;
use aistack_core::embed::EmbeddingEngine;
use aistack_core::ingest::{Document, IngestReport, Ingestor, SearchOptions};
use aistack_core::store::SearchMode;
use aistack_core::{Error, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::store_args::StoreArgs;

/// Arguments of `aistack ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Model directory, Hugging Face cache folder, or Hub id (default: `embed.model`).
    #[arg(long)]
    model: Option<String>,
    /// The collection (created if missing, with the model's dimensions).
    #[arg(long)]
    collection: String,
    /// `.txt` and `.md` files, folders of them (recursively), and `.jsonl` files of
    /// `{"id", "text", "metadata"}` lines.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Documents per write.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
}

/// Arguments of `aistack search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Model directory, Hugging Face cache folder, or Hub id (default: `embed.model`).
    #[arg(long)]
    model: Option<String>,
    /// The collection.
    #[arg(long)]
    collection: String,
    /// How many hits.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    k: u32,
    /// A metadata filter in JSON, e.g. `{"lang": "en", "year": {"$gte": 2022}}`.
    #[arg(long)]
    filter: Option<String>,
    /// `vector` (nearest by meaning), `lexical` (BM25 over the text: exact terms and
    /// identifiers) or `hybrid` (both, fused by reciprocal rank).
    #[arg(long, default_value = "vector", value_parser = ["vector", "lexical", "hybrid"])]
    mode: String,
    /// The query text.
    query: String,
}

async fn ingestor(
    settings: &mut Settings,
    model: Option<String>,
    store: &StoreArgs,
) -> Result<Ingestor> {
    if let Some(m) = model {
        settings.embed.model = m;
    }
    settings.embed.request_timeout_ms = settings.embed.request_timeout_ms.max(600_000);
    settings.validate()?;
    let engine = EmbeddingEngine::start(settings.embed.clone(), settings.cache.clone());
    let store = store.open().await?;
    let embedder = engine.wait_ready(None).await?;
    Ingestor::new(embedder, store, None, 0)
}

/// One source of documents, found from the paths given.
enum Source {
    Text(PathBuf),
    Jsonl(PathBuf),
}

fn collect(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            files.sort();
            out.extend(files.into_iter().map(Source::Text));
        } else {
            match p.extension().and_then(|e| e.to_str()) {
                Some("jsonl") => out.push(Source::Jsonl(p.clone())),
                Some("txt" | "md") => out.push(Source::Text(p.clone())),
                _ => {
                    return Err(Error::invalid(format!(
                        "{}: only .txt, .md and .jsonl files are ingested",
                        p.display()
                    )))
                }
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))? {
        let path = entry
            .map_err(|e| Error::io(dir.display().to_string(), e))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("txt" | "md")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn text_document(path: &Path) -> Result<Document> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid(format!("{}: not valid UTF-8", path.display())))?;
    let mut metadata = Map::new();
    metadata.insert("path".into(), Value::from(path.display().to_string()));
    Ok(Document {
        id: path.display().to_string(),
        text,
        metadata,
    })
}

fn jsonl_documents(path: &Path, out: &mut Vec<Document>) -> Result<()> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line.map_err(|e| Error::io(path.display().to_string(), e))?;
        let at = || format!("{} line {}", path.display(), n + 1);
        let line = std::str::from_utf8(&line)
            .map_err(|_| Error::invalid(format!("{}: not valid UTF-8", at())))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: Document = serde_json::from_str(line).map_err(|e| {
            Error::invalid(format!(
                "{}: expected {{\"id\", \"text\", \"metadata\"}} ({e})",
                at()
            ))
        })?;
        out.push(doc);
    }
    Ok(())
}

/// Runs `aistack ingest`.
pub async fn ingest(args: IngestArgs, mut settings: Settings) -> Result<()> {
    let sources = collect(&args.paths)?;
    let ing = ingestor(&mut settings, args.model, &args.store).await?;
    ing.ensure_collection(&args.collection).await?;
    let mut docs = Vec::new();
    for s in &sources {
        match s {
            Source::Text(p) => docs.push(text_document(p)?),
            Source::Jsonl(p) => jsonl_documents(p, &mut docs)?,
        }
    }
    let total = docs.len();
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} documents {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let started = Instant::now();
    let mut report = IngestReport::default();
    let mut stderr = std::io::stderr();
    for batch in docs.chunks(args.batch as usize) {
        let last_id = batch.last().map(|d| d.id.clone()).unwrap_or_default();
        let r = ing.ingest(&args.collection, batch.to_vec()).await?;
        report.documents += r.documents;
        report.chunks += r.chunks;
        report.removed += r.removed;
        match &bar {
            Some(b) => b.inc(batch.len() as u64),
            None => {
                // Machine-readable progress: every document up to `last_id` is durably stored.
                let _ = writeln!(
                    stderr,
                    "{}",
                    json!({"progress": {"documents": report.documents, "of": total, "last_id": last_id}})
                );
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "collection": args.collection,
            "documents": report.documents,
            "chunks": report.chunks,
            "removed_stale_chunks": report.removed,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "documents_per_s": (report.documents as f64 / secs * 10.0).round() / 10.0,
            "chunks_per_s": (report.chunks as f64 / secs * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

/// Runs `aistack search`: hits as JSON lines, best first.
pub async fn search(args: SearchArgs, mut settings: Settings) -> Result<()> {
    let filter: Option<Value> = args
        .filter
        .as_deref()
        .map(|f| {
            serde_json::from_str(f)
                .map_err(|e| Error::invalid(format!("--filter is not JSON: {e}")))
        })
        .transpose()?;
    let opts = SearchOptions {
        mode: SearchMode::parse(&args.mode)?,
        filter,
        ..SearchOptions::default()
    };
    let ing: Arc<Ingestor> = Arc::new(ingestor(&mut settings, args.model, &args.store).await?);
    let hits = ing
        .search_with(&args.collection, &args.query, args.k as usize, &opts)
        .await?;
    let mut out = std::io::stdout().lock();
    for h in hits.iter() {
        serde_json::to_writer(&mut out, h).map_err(|e| Error::internal("writing output", e))?;
        out.write_all(b"\n")
            .map_err(|e| Error::io("writing output", e))?;
    }
    Ok(())
}
