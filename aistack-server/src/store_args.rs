//! The options that choose a vector store, shared by the commands that use one.

use std::path::PathBuf;
use std::sync::Arc;

use aistack_core::store::{
    EmbeddedStore, PgConfig, PgVectorStore, QdrantConfig, QdrantStore, VectorStore,
};
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
    /// Opens the chosen store.
    pub async fn open(&self) -> Result<Arc<dyn VectorStore>> {
        Ok(match self.store {
            Backend::Embedded => Arc::new(EmbeddedStore::open(&self.data_dir).await?),
            Backend::Pgvector => {
                let dsn = self.dsn.clone().ok_or_else(|| {
                    Error::config("--dsn", "--store pgvector needs --dsn or AISTACK_PG_DSN")
                })?;
                Arc::new(PgVectorStore::connect(PgConfig::new(dsn)).await?)
            }
            Backend::Qdrant => {
                let url = self.url.clone().ok_or_else(|| {
                    Error::config("--url", "--store qdrant needs --url or AISTACK_QDRANT_URL")
                })?;
                let mut cfg = QdrantConfig::new(url);
                if let Some(path) = &self.qdrant_api_key_file {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| Error::io(path.display().to_string(), e))?;
                    let key = text.lines().next().unwrap_or("").trim().to_string();
                    if key.is_empty() {
                        return Err(Error::config(
                            "--qdrant-api-key-file",
                            format!("{} holds no key", path.display()),
                        ));
                    }
                    cfg.api_key = Some(key);
                }
                Arc::new(QdrantStore::connect(cfg).await?)
            }
        })
    }
}
