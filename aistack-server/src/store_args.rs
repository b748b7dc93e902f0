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

/// An open store, with the concrete backend kept where the server needs it (flush, pool figures).
pub struct OpenStore {
    /// The store.
    pub store: Arc<dyn VectorStore>,
    /// The embedded store, when that is the backend.
    pub embedded: Option<EmbeddedStore>,
    /// The PostgreSQL store, when that is the backend.
    pub pg: Option<Arc<PgVectorStore>>,
}

impl StoreArgs {
    /// Opens the chosen store.
    pub async fn open(&self) -> Result<Arc<dyn VectorStore>> {
        Ok(self.open_parts().await?.store)
    }

    /// Opens the chosen store and keeps its concrete type.
    pub async fn open_parts(&self) -> Result<OpenStore> {
        let (mut embedded, mut pg) = (None, None);
        let store: Arc<dyn VectorStore> = match self.store {
            Backend::Embedded => {
                let e = EmbeddedStore::open(&self.data_dir).await?;
                embedded = Some(e.clone());
                Arc::new(e)
            }
            Backend::Pgvector => {
                let dsn = self.dsn.clone().ok_or_else(|| {
                    Error::config("--dsn", "--store pgvector needs --dsn or AISTACK_PG_DSN")
                })?;
                let p = Arc::new(PgVectorStore::connect(PgConfig::new(dsn)).await?);
                pg = Some(p.clone());
                p
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
        };
        Ok(OpenStore {
            store,
            embedded,
            pg,
        })
    }

    /// Whether the store is shared with other processes (a server, not a local directory).
    pub fn is_shared(&self) -> bool {
        self.store != Backend::Embedded
    }
}
