//! aistack-core: the hard core of a self-hosted AI stack.
//!
//! - [`embed`]: batched text embeddings with candle (BERT-family sentence-transformers models),
//!   loaded in the background, validated, cached and batched.
//! - [`store`]: one vector-store API; the embedded store is durable and needs no server.
//! - [`ingest`]: documents → chunks → embeddings → store, and cached text search.
//! - [`cache`]: bounded caches with hit/miss counters and epoch invalidation.
//! - [`llm`]: the chat gateway: OpenAI-compatible chat over upstream model servers, with
//!   fallbacks, breakers and grounded answers.
//! - [`resilience`]: retry with backoff and jitter, and circuit breakers.
//! - [`config`]: typed, layered, validated settings.
//! - [`error`]: the one error type, with a stable [`ErrorKind`].
//!
//! ```no_run
//! use aistack_core::config::Settings;
//! use aistack_core::embed::{EmbeddingEngine, Embedder, InputKind};
//!
//! # async fn run() -> aistack_core::Result<()> {
//! let settings = Settings::load(None)?;
//! let engine = EmbeddingEngine::start(settings.embed, settings.cache);
//! let embedder = engine.wait_ready(None).await?;
//! let vectors = embedder.embed(&["hello world".to_string()], InputKind::Plain).await?;
//! assert_eq!(vectors[0].len(), embedder.dims());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod embed;
pub mod error;
pub mod ingest;
pub mod llm;
pub mod resilience;
pub mod store;

pub use error::{Error, ErrorKind, Result};
