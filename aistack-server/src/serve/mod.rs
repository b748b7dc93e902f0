//! `aistack serve`: the HTTP API over aistack-core, hardened (auth, TLS, limits, timeouts,
//! request ids, metrics, graceful shutdown). HTTP concerns only; the logic lives in the core.

pub mod auth;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod state;
pub mod types;

pub use router::router;
pub use state::AppState;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::Settings;
use aistack_core::embed::EmbeddingEngine;
use aistack_core::resilience::{BreakerConfig, BreakerRegistry, RetryPolicy};
use aistack_core::store::{OpenedStore, ResilientStore, VectorStore};
use aistack_core::{Error, Result};
use clap::Args;

use crate::store_args::StoreArgs;

/// Flags of `aistack serve`; each overrides its config key.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (`server.bind`; default 127.0.0.1:8080).
    #[arg(long, env = "AISTACK_BIND")]
    bind: Option<SocketAddr>,
    /// The embedding model: a directory or a Hugging Face id (`embed.model`).
    #[arg(long, env = "AISTACK_MODEL")]
    model: Option<String>,
    /// API key file, one key per line, mode 600 (`server.api_key_file`).
    #[arg(long, env = "AISTACK_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// PEM certificate chain for HTTPS (`server.tls_cert`).
    #[arg(long, env = "AISTACK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (`server.tls_key`).
    #[arg(long, env = "AISTACK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Starts the engine (it loads in the background), opens the store the flags name (behind retry
/// and a breaker when it is shared) and builds the state every route and MCP tool shares;
/// `model_wait` is how long a request waits for a model still loading ([`AppState::model_wait`]).
pub async fn open_app(
    store_args: &StoreArgs,
    settings: &Settings,
    model_wait: Option<Duration>,
) -> Result<(Arc<AppState>, OpenedStore)> {
    let mut embed = settings.embed.for_server();
    // The engine's deadline is the request's: bulk work is admitted if it can finish in time.
    embed.request_timeout_ms = embed
        .request_timeout_ms
        .min(settings.server.request_timeout_ms);
    let engine = EmbeddingEngine::start_named(
        embed,
        settings.cache.clone(),
        settings.server.model_name.as_deref(),
    );
    let breakers = Arc::new(BreakerRegistry::new());
    let store_config = store_args.config()?;
    let shared = store_config.is_shared();
    let opened = store_config.open().await?;
    let store: Arc<dyn VectorStore> = if shared {
        let breaker = breakers.get_or_create(
            &format!("store.{}", opened.store.backend()),
            &BreakerConfig::from_settings(&settings.resilience),
        )?;
        Arc::new(ResilientStore::new(
            opened.store.clone(),
            RetryPolicy::from_settings(&settings.resilience),
            breaker,
        ))
    } else {
        opened.store.clone()
    };
    let mut state = AppState::new(engine, store, breakers, settings.clone(), shared)?;
    state.model_wait = model_wait;
    let state = Arc::new(state);
    Ok((state, opened))
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs, mut settings: Settings) -> Result<()> {
    if let Some(b) = args.bind {
        settings.server.bind = b;
    }
    if let Some(m) = args.model {
        settings.embed.model = m;
    }
    if let Some(k) = args.api_key_file {
        settings.server.api_key_file = Some(k);
    }
    if args.tls_cert.is_some() {
        settings.server.tls_cert = args.tls_cert;
        settings.server.tls_key = args.tls_key;
    }
    settings.validate()?;
    let s = &settings.server;
    // Everything that can be wrong with the configuration fails here, before binding.
    let keys = s
        .api_key_file
        .as_deref()
        .map(auth::ApiKeys::load)
        .transpose()?;
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(c), Some(k)) => Some(listener::tls_config(c, k)?),
        _ => None,
    };
    if keys.is_none() && !s.bind.ip().is_loopback() {
        tracing::warn!(bind = %s.bind, "listening beyond loopback without API keys: anyone who can reach this address can use the API");
    }

    let (state, opened) = open_app(&args.store, &settings, None).await?;
    // Upstream readiness is known before the first request, and kept current without traffic.
    let probes = state.gateway.spawn_probes();
    let router = router(state.clone(), keys);

    let listener = tokio::net::TcpListener::bind(settings.server.bind)
        .await
        .map_err(|e| Error::io(format!("binding {}", settings.server.bind), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    tracing::info!(
        addr = %addr,
        tls = tls.is_some(),
        auth = state.settings.server.api_key_file.is_some(),
        store = state.store.backend(),
        model = %state.engine.model_spec(),
        chat_routes = state.gateway.route_names().len(),
        "listening"
    );
    listener::serve(listener, router, &settings.server, tls, shutdown_signal()).await?;
    probes.abort();
    if let Some(e) = &opened.embedded {
        e.flush().await?;
        tracing::info!("store flushed");
    }
    tracing::info!("stopped");
    Ok(())
}
