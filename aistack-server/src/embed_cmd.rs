//! `aistack embed`: JSON lines in, JSON lines of vectors out, in input order.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::jsonl::{Reader, Record};
use aistack_core::config::Settings;
use aistack_core::embed::{Embedder, EmbeddingEngine, InputKind, ModelEmbedder};
use aistack_core::{Error, Result};
use clap::Args;
use serde::Serialize;

/// Arguments of `aistack embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model directory, Hugging Face cache folder, or Hub id (default: `embed.model`).
    #[arg(long)]
    model: Option<String>,
    /// Input file of JSON lines, or `-` for stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// Output file, or `-` for stdout.
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Lines per embedding request (also raises the per-request input limit to match).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
}

#[derive(Serialize)]
struct OutLine<'a> {
    id: &'a serde_json::Value,
    embedding: &'a [f32],
}

/// Requests in flight at once, so tokenization and I/O overlap the model's compute.
const IN_FLIGHT: usize = 4;

/// Runs the command.
pub async fn run(args: EmbedArgs, mut settings: Settings) -> Result<()> {
    if let Some(m) = args.model {
        settings.embed.model = m;
    }
    let batch = args.batch_size as usize;
    settings.embed.max_inputs_per_request = settings.embed.max_inputs_per_request.max(batch);
    // A batch job waits behind its own earlier chunks: give each chunk ample time.
    settings.embed.request_timeout_ms = settings.embed.request_timeout_ms.max(600_000);
    settings.validate()?;
    let max_line = settings.embed.max_input_chars * 4 + 4096;

    let engine = EmbeddingEngine::start(settings.embed.clone(), settings.cache.clone());
    let embedder = engine.wait_ready(None).await?;

    let input: Box<dyn BufRead + Send> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.input)
            .map_err(|e| Error::io(args.input.display().to_string(), e))?;
        Box::new(BufReader::new(f))
    };
    let mut output: Box<dyn Write + Send> = if args.output.as_os_str() == "-" {
        Box::new(BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(&args.output)
            .map_err(|e| Error::io(args.output.display().to_string(), e))?;
        Box::new(BufWriter::new(f))
    };

    // A reading thread parses and checks lines and sends them in chunks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Record>>>(IN_FLIGHT);
    let limits = embedder.limits();
    std::thread::spawn(move || {
        let mut reader = Reader::new(input, max_line);
        let mut chunk = Vec::with_capacity(batch);
        loop {
            match reader.next_record() {
                Ok(Some(r)) => {
                    if let Err(why) = limits.check_text(&r.text) {
                        let _ = tx.blocking_send(Err(Error::invalid(format!(
                            "line {}: text {why}",
                            r.line
                        ))));
                        return;
                    }
                    chunk.push(r);
                    if chunk.len() == batch
                        && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {
                    if !chunk.is_empty() {
                        let _ = tx.blocking_send(Ok(chunk));
                    }
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });

    type Job = tokio::task::JoinHandle<Result<(Vec<Record>, Vec<Vec<f32>>)>>;
    let mut in_flight: VecDeque<Job> = VecDeque::new();
    let mut written = 0usize;
    let mut input_error = None;
    let mut input_done = false;
    loop {
        while in_flight.len() < IN_FLIGHT && !input_done {
            match rx.recv().await {
                Some(Ok(records)) => {
                    in_flight.push_back(tokio::spawn(embed_chunk(embedder.clone(), records)))
                }
                Some(Err(e)) => {
                    input_error = Some(e);
                    input_done = true;
                }
                None => input_done = true,
            }
        }
        let Some(job) = in_flight.pop_front() else {
            break;
        };
        let (records, vectors) = job
            .await
            .map_err(|e| Error::internal("an embedding task failed", e))??;
        for (r, v) in records.iter().zip(&vectors) {
            serde_json::to_writer(
                &mut output,
                &OutLine {
                    id: &r.id,
                    embedding: v,
                },
            )
            .map_err(|e| Error::internal("writing output", e))?;
            output
                .write_all(b"\n")
                .map_err(|e| Error::io("writing output", e))?;
        }
        written += records.len();
    }
    output.flush().map_err(|e| Error::io("writing output", e))?;
    if let Some(e) = input_error {
        return Err(e);
    }
    tracing::info!(records = written, "embedding finished");
    Ok(())
}

async fn embed_chunk(
    embedder: Arc<ModelEmbedder>,
    records: Vec<Record>,
) -> Result<(Vec<Record>, Vec<Vec<f32>>)> {
    let texts: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
    let vectors = embedder
        .embed(&texts, InputKind::Plain)
        .await
        .map_err(|e| match e.kind() {
            aistack_core::ErrorKind::InvalidInput => Error::invalid(format!(
                "lines {}-{}: {e}",
                records.first().map(|r| r.line).unwrap_or(0),
                records.last().map(|r| r.line).unwrap_or(0)
            )),
            _ => e,
        })?;
    Ok((records, vectors))
}
