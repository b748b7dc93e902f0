//! The options that choose a vector store, shared by the commands that use one. They only
//! build the core's [`StoreConfig`]; opening is the core's.

use std::path::PathBuf;
use std::sync::Arc;

use aistack_core::store::{StoreConfig, VectorStore};
use aistack_core::{Error, Result};
use clap::{Args, ValueEnum};

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The embedded store in `--data-dir` (no server).
    Embedded,
    /// PostgreSQL with pgvector at `--dsn`.
    Pgvector,
    /// A Qdrant server at `--url` (gRPC).
    Qdrant,
}

/// Store selection.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The vector store.
    #[arg(long, value_enum, default_value = "embedded")]
    store: Backend,
    /// Data directory of the embedded store.
    #[arg(long, default_value = "aistack-data")]
    data_dir: PathBuf,
    /// PostgreSQL DSN for `--store pgvector` (or `AISTACK_PG_DSN`).
    #[arg(long, env = "AISTACK_PG_DSN", hide_env_values = true)]
    dsn: Option<String>,
    /// Qdrant gRPC URL for `--store qdrant`, e.g. `http://127.0.0.1:6334` (or `AISTACK_QDRANT_URL`).
    #[arg(long, env = "AISTACK_QDRANT_URL")]
    url: Option<String>,
    /// File holding the Qdrant API key (first line), if the server requires one.
    #[arg(long, env = "AISTACK_QDRANT_API_KEY_FILE")]
    qdrant_api_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store the flags name.
    pub fn config(&self) -> Result<StoreConfig> {
        Ok(match self.store {
            Backend::Embedded => StoreConfig::Embedded {
                path: self.data_dir.clone(),
            },
            Backend::Pgvector => StoreConfig::Pgvector {
                dsn: self.dsn.clone().ok_or_else(|| {
                    Error::config("--dsn", "--store pgvector needs --dsn or AISTACK_PG_DSN")
                })?,
            },
            Backend::Qdrant => StoreConfig::Qdrant {
                url: self.url.clone().ok_or_else(|| {
                    Error::config("--url", "--store qdrant needs --url or AISTACK_QDRANT_URL")
                })?,
                api_key: None,
                api_key_file: self.qdrant_api_key_file.clone(),
            },
        })
    }

    /// Opens the chosen store.
    pub async fn open(&self) -> Result<Arc<dyn VectorStore>> {
        Ok(self.config()?.open().await?.store)
    }
}
