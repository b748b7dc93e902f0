//! `aistack mcp`: the MCP server over stdin and stdout, for desktop clients and IDEs that start
//! a local process. stdout carries protocol messages only; logs go to stderr.

use aistack_core::config::Settings;
use aistack_core::{Error, Result};
use clap::Args;
use rmcp::ServiceExt;

use super::McpServer;
use crate::serve::open_app;
use crate::store_args::StoreArgs;

/// Flags of `aistack mcp`; each overrides its config key.
#[derive(Args, Debug)]
pub struct McpArgs {
    /// The embedding model: a directory or a Hugging Face id (`embed.model`).
    #[arg(long, env = "AISTACK_MODEL")]
    model: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Serves MCP on stdio until the client closes stdin (or SIGTERM/SIGINT), then flushes the
/// embedded store.
pub async fn run(args: McpArgs, mut settings: Settings) -> Result<()> {
    if let Some(m) = args.model {
        settings.embed.model = m;
    }
    settings.validate()?;
    // A desktop client starts the process and calls at once: a tool call made while the model
    // loads waits for it (up to the request deadline) instead of failing.
    let wait = std::time::Duration::from_millis(settings.server.request_timeout_ms);
    let (state, opened) = open_app(&args.store, &settings, Some(wait)).await?;
    tracing::info!(
        store = state.store.backend(),
        model = %state.engine.model_spec(),
        "serving MCP on stdio"
    );
    let server = McpServer::new(state, "stdio")
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::internal("starting the MCP session on stdio", e))?;
    let cancel = server.cancellation_token();
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        cancel.cancel();
    });
    server
        .waiting()
        .await
        .map_err(|e| Error::internal("the MCP session on stdio failed", e))?;
    if let Some(e) = &opened.embedded {
        e.flush().await?;
        tracing::info!("store flushed");
    }
    tracing::info!("stopped");
    Ok(())
}
