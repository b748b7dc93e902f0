//! `aistack`: the aistack command-line tool and server.

mod embed_cmd;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use aistack_core::config::Settings;
use clap::{Parser, Subcommand};

/// aistack: fast local embeddings and vector search.
#[derive(Parser, Debug)]
#[command(name = "aistack", version, about)]
struct Cli {
    /// Configuration file (TOML); its `<name>.<AISTACK_ENV>.toml` overlay is applied too.
    #[arg(long, global = true, env = "AISTACK_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embed JSON-lines texts and write JSON-lines vectors, in input order.
    Embed(embed_cmd::EmbedArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&settings.log);
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
            Command::Embed(args) => embed_cmd::run(args, settings).await,
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
