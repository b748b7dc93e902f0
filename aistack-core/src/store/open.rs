//! One way to open a store: a serde-tagged [`StoreConfig`] naming the backend and how to reach
//! it, which the CLI, the server and the Python module all open through [`StoreConfig::open`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{EmbeddedStore, VectorStore};
use crate::error::{Error, Result};

#[cfg(feature = "pgvector")]
use super::{PgConfig, PgVectorStore};
#[cfg(feature = "qdrant")]
use super::{QdrantConfig, QdrantStore};

/// Which vector store, and how to reach it. As TOML or JSON: `{"backend": "embedded", "path":
/// "./data"}`, `{"backend": "pgvector", "dsn": "postgres://..."}` or `{"backend": "qdrant",
/// "url": "http://127.0.0.1:6334", "api_key_file": "..."}`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded store in a data directory: durable, no server (the default).
    Embedded {
        /// The data directory (created if missing).
        path: PathBuf,
    },
    /// PostgreSQL with pgvector (needs the `pgvector` feature).
    Pgvector {
        /// `postgres://user:password@host:port/database`.
        dsn: String,
    },
    /// A Qdrant server over gRPC (needs the `qdrant` feature).
    Qdrant {
        /// The gRPC URL, e.g. `http://127.0.0.1:6334`.
        url: String,
        /// The API key, if the server requires one.
        #[serde(default)]
        api_key: Option<String>,
        /// A file whose first line is the API key (instead of `api_key`).
        #[serde(default)]
        api_key_file: Option<PathBuf>,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded {
            path: PathBuf::from("aistack-data"),
        }
    }
}

/// Secrets (the DSN's password, API keys) never reach a log through `Debug`; for the same reason
/// the type is not `Serialize`.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Embedded { path } => {
                f.debug_struct("Embedded").field("path", path).finish()
            }
            StoreConfig::Pgvector { .. } => f.write_str("Pgvector { dsn: <redacted> }"),
            StoreConfig::Qdrant {
                url, api_key_file, ..
            } => f
                .debug_struct("Qdrant")
                .field("url", url)
                .field("api_key_file", api_key_file)
                .finish_non_exhaustive(),
        }
    }
}

/// An open store, with the embedded store kept apart where a caller must flush it on shutdown.
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn VectorStore>,
    /// The embedded store, when that is the backend.
    pub embedded: Option<EmbeddedStore>,
}

impl StoreConfig {
    /// The backend's name: `embedded`, `pgvector` or `qdrant`.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreConfig::Embedded { .. } => "embedded",
            StoreConfig::Pgvector { .. } => "pgvector",
            StoreConfig::Qdrant { .. } => "qdrant",
        }
    }

    /// Whether other processes may share the store (a server, not a local directory): then
    /// nothing read from it may be cached, and calls to it go through retry and a breaker.
    pub fn is_shared(&self) -> bool {
        !matches!(self, StoreConfig::Embedded { .. })
    }

    /// Opens the store; `Config` when the backend was not compiled in or is misconfigured.
    pub async fn open(&self) -> Result<OpenedStore> {
        match self {
            StoreConfig::Embedded { path } => {
                let e = EmbeddedStore::open(path).await?;
                Ok(OpenedStore {
                    store: Arc::new(e.clone()),
                    embedded: Some(e),
                })
            }
            #[cfg(feature = "pgvector")]
            StoreConfig::Pgvector { dsn } => {
                let p = PgVectorStore::connect(PgConfig::new(dsn.clone())).await?;
                Ok(OpenedStore {
                    store: Arc::new(p),
                    embedded: None,
                })
            }
            #[cfg(feature = "qdrant")]
            StoreConfig::Qdrant {
                url,
                api_key,
                api_key_file,
            } => {
                let mut cfg = QdrantConfig::new(url.clone());
                cfg.api_key = match (api_key, api_key_file) {
                    (Some(_), Some(_)) => {
                        return Err(Error::config(
                            "store.api_key",
                            "give api_key or api_key_file, not both",
                        ))
                    }
                    (Some(k), None) => Some(k.clone()),
                    (None, Some(path)) => Some(read_key_file(path)?),
                    (None, None) => None,
                };
                Ok(OpenedStore {
                    store: Arc::new(QdrantStore::connect(cfg).await?),
                    embedded: None,
                })
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::config(
                "store.backend",
                format!(
                    "aistack-core was built without the `{}` feature",
                    other.backend()
                ),
            )),
        }
    }
}

/// The first line of a key file, which must not be empty.
#[cfg(feature = "qdrant")]
fn read_key_file(path: &std::path::Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        return Err(Error::config(
            "store.api_key_file",
            format!("{} holds no key", path.display()),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_tagged_by_backend_and_hide_secrets() {
        let c: StoreConfig =
            serde_json::from_str(r#"{"backend": "pgvector", "dsn": "postgres://u:hunter2@h/db"}"#)
                .unwrap();
        assert_eq!(c.backend(), "pgvector");
        assert!(c.is_shared());
        assert!(!format!("{c:?}").contains("hunter2"));
        let q: StoreConfig = serde_json::from_str(
            r#"{"backend": "qdrant", "url": "http://q:6334", "api_key": "sekret"}"#,
        )
        .unwrap();
        assert!(!format!("{q:?}").contains("sekret"));
        assert_eq!(StoreConfig::default().backend(), "embedded");
        assert!(!StoreConfig::default().is_shared());
        let bad = serde_json::from_str::<StoreConfig>(r#"{"backend": "embedded", "dsn": "x"}"#);
        assert!(bad.is_err(), "unknown fields are refused");
        assert!(serde_json::from_str::<StoreConfig>(r#"{"backend": "mongo"}"#).is_err());
    }

    #[tokio::test]
    async fn opens_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::Embedded {
            path: dir.path().join("data"),
        };
        let opened = cfg.open().await.unwrap();
        assert_eq!(opened.store.backend(), "embedded");
        assert!(opened.embedded.is_some());
    }

    #[cfg(feature = "qdrant")]
    #[tokio::test]
    async fn an_empty_key_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "\n").unwrap();
        let cfg = StoreConfig::Qdrant {
            url: "http://127.0.0.1:1".into(),
            api_key: None,
            api_key_file: Some(key),
        };
        let err = cfg.open().await.err().expect("refused");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("holds no key"), "{err}");
    }
}
