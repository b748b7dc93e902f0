//! The embeddings engine: loads a model in the background (reporting Loading, Ready or Failed)
//! and serves it through validation, the embedding cache and the batcher.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;

use super::batcher::{
    calibrated_bound, time_passes, Batcher, BatcherConfig, BatcherStats, QueueWaitInfo,
    QueueWaitSource,
};
use super::model::{ModelInfo, SentenceModel};
use super::source::{model_names, ModelFiles, ModelSource};
use super::validate::InputLimits;
use super::{Embedder, InputKind, Sequences};
use crate::cache::{Cache, CacheBound, CacheConfig, CacheStats};
use crate::config::{CacheSettings, EmbedSettings};
use crate::error::{Error, Result};
use crate::resilience::RetryPolicy;
use crate::store::{EmbeddingOrigin, PROBE_DIMS, PROBE_TEXT};

/// Where the engine's model is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum ModelState {
    /// Files are being fetched or the model is being loaded.
    Loading,
    /// Requests are served.
    Ready,
    /// Loading gave up; the reason says why.
    Failed(String),
}

#[derive(Clone)]
enum Slot {
    Loading,
    Ready(Arc<ModelEmbedder>),
    Failed(String),
}

/// Owns the model's lifecycle. Cheap to share as `Arc<EmbeddingEngine>`.
pub struct EmbeddingEngine {
    model_spec: String,
    /// The name clients know the model by (never a path): in every message they may see.
    name: String,
    slot: watch::Receiver<Slot>,
}

impl std::fmt::Debug for EmbeddingEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingEngine")
            .field("model", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl EmbeddingEngine {
    /// Starts loading `settings.model` in the background and returns at once. Must be called
    /// inside a tokio runtime. Downloads are retried up to `embed.load_attempts` times.
    pub fn start(settings: EmbedSettings, cache: CacheSettings) -> Arc<Self> {
        Self::start_named(settings, cache, None)
    }

    /// As [`EmbeddingEngine::start`], with the name clients know the model by (a server's
    /// `server.model_name`); by default the model's own name ([`model_names`]).
    pub fn start_named(
        settings: EmbedSettings,
        cache: CacheSettings,
        name: Option<&str>,
    ) -> Arc<Self> {
        let name = display_name(&settings.model, name);
        let spec = settings.model.clone();
        let revision = settings.revision.clone();
        let attempts = settings.load_attempts;
        let threads = settings.threads;
        Self::spawn(settings, cache, name, move || async move {
            let source = ModelSource::parse(&spec, &revision)?;
            let policy = RetryPolicy {
                max_attempts: attempts.max(1),
                initial_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                max_elapsed: Some(Duration::from_secs(600)),
            };
            let files = ModelFiles::fetch(&source, &policy).await?;
            let id = spec.clone();
            tokio::task::spawn_blocking(move || {
                SentenceModel::load_with_threads(&id, &files, threads)
            })
            .await
            .map_err(|e| Error::internal("the model loading task failed", e))?
        })
    }

    /// Starts the engine with a custom loader (for example one that builds the model from files
    /// already in memory). The loader's error becomes the `Failed` reason.
    pub fn start_with<F, Fut>(settings: EmbedSettings, cache: CacheSettings, load: F) -> Arc<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<SentenceModel>> + Send + 'static,
    {
        let name = display_name(&settings.model, None);
        Self::spawn(settings, cache, name, load)
    }

    fn spawn<F, Fut>(
        settings: EmbedSettings,
        cache: CacheSettings,
        name: String,
        load: F,
    ) -> Arc<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<SentenceModel>> + Send + 'static,
    {
        let (tx, rx) = watch::channel(Slot::Loading);
        let spec = settings.model.clone();
        let logged = spec.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let ready = match load().await {
                // Serving starts with a few timed passes (the calibration): off the async threads.
                Ok(model) => tokio::task::spawn_blocking(move || {
                    ModelEmbedder::new(Arc::new(model), &settings, &cache)
                })
                .await
                .map_err(|e| Error::internal("the model start task failed", e))
                .and_then(|r| r),
                Err(e) => Err(e),
            };
            let slot = match ready {
                Ok(e) => {
                    let q = e.queue_wait;
                    tracing::info!(
                        model = %e.info.model_id,
                        dims = e.info.dims,
                        max_input_tokens = e.info.max_input_tokens,
                        load_ms = started.elapsed().as_millis() as u64,
                        queue_wait_ms = q.bound_ms,
                        queue_wait = ?q.source,
                        calibration_pass_ms = q.calibration_pass_ms,
                        "embedding model ready"
                    );
                    Slot::Ready(Arc::new(e))
                }
                Err(e) => {
                    tracing::error!(model = %logged, error = %e.chain(), "embedding model failed to load");
                    Slot::Failed(e.chain())
                }
            };
            let _ = tx.send(slot);
        });
        Arc::new(Self {
            model_spec: spec,
            name,
            slot: rx,
        })
    }

    /// The model as configured (a directory or a Hub id).
    pub fn model_spec(&self) -> &str {
        &self.model_spec
    }

    /// Loading, Ready or Failed.
    pub fn state(&self) -> ModelState {
        match &*self.slot.borrow() {
            Slot::Loading => ModelState::Loading,
            Slot::Ready(_) => ModelState::Ready,
            Slot::Failed(r) => ModelState::Failed(r.clone()),
        }
    }

    /// The name clients know the model by, never a path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ready embedder, or `Unavailable` at once while loading or after a failure. The
    /// message names the model by [`EmbeddingEngine::name`]; a failure's cause (which may name
    /// files) is the error's source, for logs and in-process callers, not its message.
    pub fn embedder(&self) -> Result<Arc<ModelEmbedder>> {
        match &*self.slot.borrow() {
            Slot::Ready(e) => Ok(e.clone()),
            Slot::Loading => Err(Error::unavailable(format!(
                "the embedding model {} is still loading",
                self.name
            ))),
            Slot::Failed(r) => Err(Error::Unavailable {
                reason: format!("the embedding model {} failed to load", self.name),
                source: Some(r.clone().into()),
            }),
        }
    }

    /// Waits until the model is ready (or failed), for at most `timeout` if given.
    pub async fn wait_ready(&self, timeout: Option<Duration>) -> Result<Arc<ModelEmbedder>> {
        let mut rx = self.slot.clone();
        let wait = async {
            let _ = rx.wait_for(|s| !matches!(s, Slot::Loading)).await;
        };
        match timeout {
            Some(t) => {
                if tokio::time::timeout(t, wait).await.is_err() {
                    return Err(Error::Timeout {
                        what: format!("loading the embedding model {}", self.name),
                        after: t,
                    });
                }
            }
            None => wait.await,
        }
        self.embedder()
    }

    /// Embeds through the ready model; fails fast with `Unavailable` before it is ready.
    pub async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>> {
        self.embedder()?.embed(texts, kind).await
    }
}

/// The name clients know the model given as `spec` by: `configured`, else its first name from
/// [`model_names`], else `unnamed`. Never a path.
fn display_name(spec: &str, configured: Option<&str>) -> String {
    model_names(spec, configured)
        .into_iter()
        .next()
        .unwrap_or_else(|| "unnamed".to_string())
}

/// How returned vectors are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// As the model's pipeline defines (L2-normalized when it ends with a Normalize step).
    Model,
    /// Always L2-normalized.
    Unit,
    /// The pooled vectors before any normalization (TEI's `normalize=false`).
    Pooled,
}

/// What a request asks beyond the texts: one of the model's prompts by name, and Matryoshka
/// dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// A prompt of the model's `config_sentence_transformers.json` by name (`query`,
    /// `passage`, an instruction); `None`: the prompt of the input's kind (the model's default
    /// prompt for plain inputs).
    pub prompt_name: Option<String>,
    /// Keep the first this many dimensions (Matryoshka), normalized again where the output is
    /// normalized; between 1 and the model's dimensions.
    pub dimensions: Option<usize>,
}

/// Cache key: the model, the prefix applied and the text. Hashing borrows; no allocation on
/// lookup beyond the key's own strings.
#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    model: Arc<str>,
    prefix: Option<Arc<str>>,
    text: Arc<str>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.model.hash(state);
        self.prefix.hash(state);
        self.text.hash(state);
    }
}

/// Counters of a ready embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// The batcher's counters.
    pub batcher: BatcherStats,
    /// The embedding cache's counters.
    pub cache: CacheStats,
}

/// A loaded model served with input validation, the embedding cache and the batcher. It is the
/// [`Embedder`] the rest of aistack uses.
pub struct ModelEmbedder {
    model: Arc<SentenceModel>,
    info: ModelInfo,
    model_key: Arc<str>,
    query_prefix: Option<Arc<str>>,
    passage_prefix: Option<Arc<str>>,
    /// The model's default prompt (`default_prompt_name`), for plain inputs.
    plain_prefix: Option<Arc<str>>,
    limits: InputLimits,
    timeout: Duration,
    batcher: Batcher,
    queue_wait: QueueWaitInfo,
    cache: Cache<CacheKey, Arc<[f32]>>,
    origin: EmbeddingOrigin,
}

impl std::fmt::Debug for ModelEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEmbedder")
            .field("info", &self.info)
            .finish()
    }
}

/// The model's identity for collections: the leading values of its normalized embedding of
/// [`PROBE_TEXT`] (no prompt).
fn probe(model: &SentenceModel) -> Result<Vec<f32>> {
    let seqs = model.tokenize(&[PROBE_TEXT])?;
    let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let mut v = model
        .forward_pooled(&batch)?
        .pop()
        .ok_or_else(|| Error::internal("probe", "the probe pass returned no vector"))?;
    super::normalize(&mut v);
    v.truncate(PROBE_DIMS);
    Ok(v)
}

/// The reference batch of the wait bound's calibration: eight short sentences, the shape of a
/// typical interactive request (queries, a chat turn's retrieval).
const CALIBRATION_TEXTS: [&str; 8] = [
    "How do I reset my password if I no longer have access to my email?",
    "The quarterly report shows revenue growth in every region except Europe.",
    "Which Python version added structural pattern matching?",
    "Cats often sleep for more than twelve hours a day.",
    "Restart the service after changing its configuration file.",
    "What is the difference between a process and a thread?",
    "The museum is closed on Mondays and public holidays.",
    "Vector databases store embeddings for similarity search.",
];

/// Timed passes of the calibration (after one warm-up); their median is used.
const CALIBRATION_PASSES: usize = 5;

/// Texts at or below this many bytes in total are tokenized on the calling task; more go to the
/// blocking pool so a large request never stalls the async runtime.
const INLINE_TOKENIZE_BYTES: usize = 4096;

impl ModelEmbedder {
    /// Serves `model` with the limits, batching and cache of `settings` and `cache`.
    pub fn new(
        model: Arc<SentenceModel>,
        settings: &EmbedSettings,
        cache: &CacheSettings,
    ) -> Result<Self> {
        let info = model.info().clone();
        // The wait bound: configured, off, or (a server's default) calibrated from a measured
        // pass of a typical interactive request, which also seeds the throughput estimate.
        let calibration = if settings.calibrate_queue_wait {
            let seqs = model.tokenize(&CALIBRATION_TEXTS)?;
            let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            Some((time_passes(&*model, &batch, CALIBRATION_PASSES)?, seqs))
        } else {
            None
        };
        let (max_queue_wait, queue_wait) = match &calibration {
            Some((pass, _)) => {
                let bound = calibrated_bound(*pass);
                let info = QueueWaitInfo {
                    bound_ms: Some(bound.as_millis() as u64),
                    source: QueueWaitSource::Calibrated,
                    calibration_pass_ms: Some((pass.as_secs_f64() * 1e4).round() / 10.0),
                };
                (Some(bound), info)
            }
            None => {
                let bound = settings.max_queue_wait();
                let info = QueueWaitInfo {
                    bound_ms: bound.map(|b| b.as_millis() as u64),
                    source: if bound.is_some() {
                        QueueWaitSource::Configured
                    } else {
                        QueueWaitSource::Off
                    },
                    calibration_pass_ms: None,
                };
                (bound, info)
            }
        };
        let batcher = Batcher::start(
            model.clone(),
            BatcherConfig {
                max_batch_tokens: settings.max_batch_tokens.max(info.max_input_tokens),
                max_batch_requests: settings.max_batch_requests,
                max_concurrent_requests: settings.max_concurrent_requests,
                max_queue_wait,
            },
        )?;
        if let Some((pass, seqs)) = &calibration {
            let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            batcher.observe_pass(&batch, *pass);
        }
        let prefix = |configured: &Option<String>, own: &Option<String>| {
            configured
                .clone()
                .or_else(|| own.clone())
                .filter(|p| !p.is_empty())
                .map(Arc::<str>::from)
        };
        let dims = info.dims;
        let query_prefix = prefix(&settings.query_prefix, &info.query_prompt);
        let passage_prefix = prefix(&settings.passage_prefix, &info.passage_prompt);
        let origin = EmbeddingOrigin {
            model: display_name(&info.model_id, None),
            model_dims: info.dims,
            query_prompt: query_prefix.as_deref().map(str::to_string),
            document_prompt: passage_prefix.as_deref().map(str::to_string),
            probe: probe(&model)?,
        };
        let embed_cache = Cache::new(
            CacheConfig {
                bound: CacheBound::Bytes(cache.embeddings_max_bytes),
                ttl: (cache.embeddings_ttl_secs > 0)
                    .then(|| Duration::from_secs(cache.embeddings_ttl_secs)),
            },
            move |k: &CacheKey, _v: &Arc<[f32]>| {
                let bytes = 64 + k.text.len() + dims * 4;
                bytes.min(u32::MAX as usize) as u32
            },
        );
        let default_prompt = info
            .default_prompt_name
            .as_ref()
            .and_then(|n| info.prompts.get(n))
            .cloned();
        Ok(Self {
            query_prefix,
            passage_prefix,
            plain_prefix: prefix(&None, &default_prompt),
            model_key: Arc::from(info.model_id.as_str()),
            limits: InputLimits::from_settings(settings),
            timeout: settings.request_timeout(),
            info,
            model,
            batcher,
            queue_wait,
            cache: embed_cache,
            origin,
        })
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The wait bound interactive requests are admitted with, and where it came from.
    pub fn queue_wait(&self) -> QueueWaitInfo {
        self.queue_wait
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> InputLimits {
        self.limits
    }

    /// The prefix applied to inputs of `kind`, if any.
    pub fn prefix(&self, kind: InputKind) -> Option<&str> {
        self.kind_prefix(kind).as_deref()
    }

    fn kind_prefix(&self, kind: InputKind) -> &Option<Arc<str>> {
        match kind {
            InputKind::Plain => &self.plain_prefix,
            InputKind::Query => &self.query_prefix,
            InputKind::Passage => &self.passage_prefix,
        }
    }

    /// The prefix a request gets: its named prompt, else its kind's. An unknown prompt name is
    /// `InvalidInput` naming the model's prompts.
    fn request_prefix(&self, kind: InputKind, options: &EmbedOptions) -> Result<Option<Arc<str>>> {
        let Some(name) = options.prompt_name.as_deref() else {
            return Ok(self.kind_prefix(kind).clone());
        };
        match self.info.prompts.get(name) {
            Some(p) if p.is_empty() => Ok(None),
            Some(p) => Ok(Some(Arc::from(p.as_str()))),
            None if self.info.prompts.is_empty() => Err(Error::invalid(format!(
                "prompt_name '{name}': the model has no prompts"
            ))),
            None => Err(Error::invalid(format!(
                "prompt_name '{name}' is not one of the model's prompts ({})",
                self.info
                    .prompts
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The output width a request asks for: its `dimensions`, checked, else the model's.
    pub fn output_dims(&self, options: &EmbedOptions) -> Result<usize> {
        match options.dimensions {
            None => Ok(self.info.dims),
            Some(d) if d >= 1 && d <= self.info.dims => Ok(d),
            Some(d) => Err(Error::invalid(format!(
                "dimensions must be between 1 and the model's {}, got {d}",
                self.info.dims
            ))),
        }
    }

    /// Token count of each text after truncation, special tokens included.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>> {
        Ok(self
            .model
            .tokenize(texts)?
            .iter()
            .map(|t| t.len())
            .collect())
    }

    /// Batcher and cache counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            batcher: self.batcher.stats(),
            cache: self.cache.stats(),
        }
    }

    /// Embeds `texts` with the output `norm` and the prompt and dimensions `options` ask for,
    /// one vector per text.
    pub async fn embed_with(
        &self,
        texts: &[String],
        kind: InputKind,
        norm: Norm,
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let dims = self.output_dims(options)?;
        let prefix = self.request_prefix(kind, options)?;
        let bulk = kind == InputKind::Passage;
        let rows = self.timed(self.embed_inner(texts, prefix, bulk)).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut v = r[..dims].to_vec();
                self.finish(&mut v, norm);
                v
            })
            .collect())
    }

    /// Embeds any number of texts into one row-major buffer (`texts.len() × dims`), sending
    /// them through the batcher in groups of at most `group` (capped at the per-request input
    /// limit), a few groups at a time. For library callers; the buffer is the only copy made.
    pub async fn embed_all_flat(
        &self,
        texts: &[String],
        kind: InputKind,
        norm: Norm,
        options: &EmbedOptions,
        group: usize,
    ) -> Result<Vec<f32>> {
        use futures::stream::TryStreamExt;
        let group = group.clamp(1, self.limits.max_inputs);
        let dims = self.output_dims(options)?;
        let prefix = self.request_prefix(kind, options)?;
        let bulk = kind == InputKind::Passage;
        let mut out = vec![0f32; texts.len() * dims];
        let groups = super::in_groups(texts, group, super::GROUPS_IN_FLIGHT, |g| {
            self.timed(self.embed_inner(g, prefix.clone(), bulk))
        });
        let mut groups = std::pin::pin!(groups);
        let mut row = 0;
        while let Some(rows) = groups.try_next().await? {
            for r in rows {
                let dst = &mut out[row * dims..(row + 1) * dims];
                dst.copy_from_slice(&r[..dims]);
                self.finish(dst, norm);
                row += 1;
            }
        }
        Ok(out)
    }

    /// Applies `norm` to one pooled vector.
    fn finish(&self, v: &mut [f32], norm: Norm) {
        let unit = match norm {
            Norm::Model => self.info.normalize,
            Norm::Unit => true,
            Norm::Pooled => false,
        };
        if unit {
            super::model::normalize(v);
        }
    }

    async fn timed<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: "embedding request".into(),
                after: self.timeout,
            }),
        }
    }

    /// Embeds through the cache and the batcher, which hold pooled vectors (before any
    /// normalization); callers shape the output with [`Norm`].
    async fn embed_inner(
        &self,
        texts: &[String],
        prefix: Option<Arc<str>>,
        bulk: bool,
    ) -> Result<Vec<Arc<[f32]>>> {
        self.limits.check(texts)?;
        let admission = self.batcher.admit()?;
        let keys: Vec<CacheKey> = texts
            .iter()
            .map(|t| CacheKey {
                model: self.model_key.clone(),
                prefix: prefix.clone(),
                text: Arc::from(t.as_str()),
            })
            .collect();
        let mut out: Vec<Option<Arc<[f32]>>> = keys.iter().map(|k| self.cache.get(k)).collect();
        // Compute each distinct missing text once, in first-seen order.
        let mut misses: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        let mut dup_of: Vec<Option<usize>> = vec![None; texts.len()];
        for (i, v) in out.iter().enumerate() {
            if v.is_none() {
                match seen.get(&keys[i].text) {
                    Some(&first) => dup_of[i] = Some(first),
                    None => {
                        seen.insert(keys[i].text.clone(), i);
                        misses.push(i);
                    }
                }
            }
        }
        if !misses.is_empty() {
            // Latency-bound requests are refused at once when the queue would make them wait
            // too long (checked here before tokenizing, and again as their tokens join the
            // queue); passages (ingestion) queue up to their deadline instead.
            if !bulk {
                // At most: a token per byte, and the special tokens, each within the model's
                // limit (so only what is surely interactive is refused before tokenizing).
                let prefix_len = prefix.as_deref().map_or(0, str::len);
                let max_tokens: usize = misses
                    .iter()
                    .map(|&i| (texts[i].len() + prefix_len + 2).min(self.info.max_input_tokens))
                    .sum();
                self.batcher.check_wait(max_tokens)?;
            }
            let inputs: Vec<String> = misses
                .iter()
                .map(|&i| match &prefix {
                    Some(p) => format!("{p}{}", texts[i]),
                    None => texts[i].clone(),
                })
                .collect();
            let bytes: usize = inputs.iter().map(|s| s.len()).sum();
            let seqs = if bytes <= INLINE_TOKENIZE_BYTES {
                self.model.tokenize(&inputs)?
            } else {
                let model = self.model.clone();
                tokio::task::spawn_blocking(move || model.tokenize(&inputs))
                    .await
                    .map_err(|e| Error::internal("the tokenization task failed", e))??
            };
            // A model that leaves its prompt out of pooling starts pooling after it.
            let pool_from = match &prefix {
                Some(p) if !self.info.include_prompt => self.model.prompt_tokens(p)?,
                _ => 0,
            };
            let seqs = Sequences {
                ids: seqs,
                pool_from,
            };
            let vectors = if bulk {
                self.batcher.submit(admission, seqs, self.timeout).await?
            } else {
                self.batcher
                    .submit_bounded(admission, seqs, self.timeout)
                    .await?
            };
            for (&i, v) in misses.iter().zip(vectors) {
                let v: Arc<[f32]> = Arc::from(v);
                self.cache.insert(keys[i].clone(), v.clone());
                out[i] = Some(v);
            }
            for i in 0..out.len() {
                if let Some(first) = dup_of[i] {
                    out[i] = out[first].clone();
                }
            }
        }
        out.into_iter()
            .map(|v| {
                v.ok_or_else(|| Error::Internal {
                    context: "an embedding was missing from a batch result".into(),
                    source: None,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for ModelEmbedder {
    fn model_id(&self) -> &str {
        &self.info.model_id
    }

    fn origin(&self) -> &EmbeddingOrigin {
        &self.origin
    }

    fn dims(&self) -> usize {
        self.info.dims
    }

    fn max_input_tokens(&self) -> usize {
        self.info.max_input_tokens
    }

    fn max_batch(&self) -> usize {
        self.limits.max_inputs
    }

    fn token_spans(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>> {
        self.model.token_spans(text)
    }

    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>> {
        self.embed_with(texts, kind, Norm::Model, &EmbedOptions::default())
            .await
    }
}
