//! The options that choose a vector store, shared by the commands that use one.

use std::path::PathBuf;
use std::sync::Arc;

use aistack_core::store::{EmbeddedStore, PgConfig, PgVectorStore, VectorStore};
use aistack_core::{Error, Result};
use clap::{Args, ValueEnum};

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The embedded store in `--data-dir` (no server).
    Embedded,
    /// PostgreSQL with pgvector at `--dsn`.
    Pgvector,
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
        })
    }
}
