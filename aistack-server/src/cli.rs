//! The command line: `aistack serve | embed | ingest | search | mcp`, parsed with clap and run on
//! one tokio runtime after the settings are loaded and logging is set up.

use std::path::PathBuf;
use std::process::ExitCode;

use aistack_core::config::Settings;
use clap::{Parser, Subcommand};

use crate::{embed_cmd, ingest_cmd, logging, mcp, serve};

/// aistack: fast local embeddings and vector search.
#[derive(Parser, Debug)]
#[command(name = "aistack", version, about)]
pub struct Cli {
    /// Configuration file (TOML); its `<name>.<AISTACK_ENV>.toml` overlay is applied too.
    #[arg(long, global = true, env = "AISTACK_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API server (embeddings, collections, documents, search, health, metrics).
    Serve(serve::ServeArgs),
    /// Embed JSON-lines texts and write JSON-lines vectors, in input order.
    Embed(embed_cmd::EmbedArgs),
    /// Chunk, embed and store documents (.txt, .md, folders, .jsonl) in a collection.
    Ingest(ingest_cmd::IngestArgs),
    /// Search a collection by text; prints hits as JSON lines, best first.
    Search(ingest_cmd::SearchArgs),
    /// Serve MCP (Model Context Protocol) tools and resources on stdio, for agents and IDEs.
    Mcp(mcp::stdio::McpArgs),
}

/// Parses the process's arguments, runs the command and returns its exit status: 0, 1 for a
/// failure, 2 for bad input or configuration.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match logging::init(&settings.log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args, settings).await,
            Command::Embed(args) => embed_cmd::run(args, settings).await,
            Command::Ingest(args) => ingest_cmd::ingest(args, settings).await,
            Command::Search(args) => ingest_cmd::search(args, settings).await,
            Command::Mcp(args) => mcp::stdio::run(args, settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e.kind() {
                aistack_core::ErrorKind::InvalidInput | aistack_core::ErrorKind::Config => {
                    ExitCode::from(2)
                }
                _ => ExitCode::from(1),
            }
        }
    }
}
