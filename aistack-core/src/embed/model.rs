//! The candle backend: a BERT-family sentence-transformers model (all-MiniLM-L6-v2, bge-*, e5-*,
//! gte-*) with its tokenizer, pooling and normalization, run on the CPU.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::bert::{BertConfig, Encoder};
use super::source::{read_json, ModelFiles, ModuleEntry};
use crate::error::{Error, Result};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token vectors, padding excluded.
    Mean,
    /// The vector of the first (`[CLS]`) token.
    Cls,
}

/// What a loaded model is: its id, size and input limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The id the model was loaded by (the Hub id or the directory given).
    pub model_id: String,
    /// Embedding dimensions.
    pub dims: usize,
    /// Longest input in tokens, special tokens included; longer inputs are truncated.
    pub max_input_tokens: usize,
    /// How token vectors are pooled.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalized.
    pub normalize: bool,
    /// The model's own query prompt (from `config_sentence_transformers.json`), if any.
    pub query_prompt: Option<String>,
    /// The model's own passage/document prompt, if any.
    pub passage_prompt: Option<String>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
}

/// A loaded sentence-embedding model. Its methods block: run them off the async runtime.
pub struct SentenceModel {
    encoder: Encoder,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for chunking long texts.
    full_tokenizer: Tokenizer,
    info: ModelInfo,
    /// The model's own compute threads. A pool per model (rather than rayon's process-global
    /// one) means a process forked after inference can load a new model and compute without
    /// dead worker threads.
    pool: rayon::ThreadPool,
    threads: usize,
}

impl std::fmt::Debug for SentenceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceModel")
            .field("info", &self.info)
            .finish()
    }
}

impl SentenceModel {
    /// Loads the model from its files, to compute on every core. Missing or corrupt files, or a
    /// config that doesn't match the weights, give an error naming the file; never a panic.
    pub fn load(model_id: &str, files: &ModelFiles) -> Result<Self> {
        Self::load_with_threads(model_id, files, 0)
    }

    /// Like [`SentenceModel::load`], computing on `threads` threads (0: one per core).
    pub fn load_with_threads(model_id: &str, files: &ModelFiles, threads: usize) -> Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let config: BertConfig = read_json(&files.config)?;
        // RoBERTa-style encoders offset their positions differently: running them as BERT would
        // give wrong vectors silently, so anything but BERT is refused by name.
        if let Some(t) = config.model_type.as_deref().filter(|t| *t != "bert") {
            return Err(Error::model(
                format!(
                    "{}: model_type '{t}' is not supported (BERT-family encoders only)",
                    files.config.display()
                ),
                "unsupported architecture",
            ));
        }
        let (pooling, normalize) = pooling_and_normalize(files)?;
        let max_seq = files
            .sentence_bert_config
            .as_deref()
            .map(read_json::<SentenceBertConfig>)
            .transpose()?
            .and_then(|c| c.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        if max_seq < 2 {
            return Err(Error::model(
                "max_seq_length must allow at least the two special tokens",
                "invalid sentence_bert_config.json",
            ));
        }
        let st: StConfig = files
            .st_config
            .as_deref()
            .map(read_json::<StConfig>)
            .transpose()?
            .unwrap_or_default();

        let mut tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|e| Error::Model {
            context: format!("{} is not a valid tokenizer", files.tokenizer.display()),
            source: Some(e),
        })?;
        tokenizer.with_padding(None);
        let mut full_tokenizer = tokenizer.clone();
        full_tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Model {
                context: "cannot turn the tokenizer's truncation off".into(),
                source: Some(e),
            })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::Model {
                context: "cannot set the tokenizer's truncation".into(),
                source: Some(e),
            })?;
        tokenizer.with_padding(None);
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(Error::model(
                format!(
                    "tokenizer.json has {vocab} tokens but config.json's vocab_size is {}",
                    config.vocab_size
                ),
                "tokenizer does not match the model config",
            ));
        }
        let device = Device::Cpu;
        let bytes = std::fs::read(&files.weights)
            .map_err(|e| Error::io(files.weights.display().to_string(), e))?;
        let vb =
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(|e| {
                Error::model(
                    format!(
                        "{} is not a valid safetensors file",
                        files.weights.display()
                    ),
                    e,
                )
            })?;
        let encoder = Encoder::load(vb, &config).map_err(|e| {
            Error::model(
                format!(
                    "the weights in {} do not match {}",
                    files.weights.display(),
                    files.config.display()
                ),
                e,
            )
        })?;
        let info = ModelInfo {
            model_id: model_id.to_string(),
            dims: config.hidden_size,
            max_input_tokens: max_seq,
            pooling,
            normalize,
            query_prompt: st.prompts.get("query").cloned().filter(|p| !p.is_empty()),
            passage_prompt: st
                .prompts
                .get("passage")
                .or_else(|| st.prompts.get("document"))
                .cloned()
                .filter(|p| !p.is_empty()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aistack-compute-{i}"))
            .build()
            .map_err(|e| Error::model("cannot start the compute threads", e))?;
        let model = Self {
            encoder,
            tokenizer,
            full_tokenizer,
            info,
            pool,
            threads,
        };
        // One tiny forward pass proves the weights run before the model is reported ready.
        let probe = model.tokenize(&["ready"])?;
        let out = model.forward(&[probe[0].as_slice()])?;
        if out.len() != 1
            || out[0].len() != model.info.dims
            || !out[0].iter().all(|x| x.is_finite())
        {
            return Err(Error::model(
                "the model's first forward pass gave a wrong or non-finite result",
                "probe failed",
            ));
        }
        Ok(model)
    }

    /// What this model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Token ids of each text, special tokens added and truncated to `max_input_tokens`.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(t.as_ref(), true)
                    .map(|enc| enc.get_ids().to_vec())
                    .map_err(|e| Error::Model {
                        context: "tokenization failed".into(),
                        source: Some(e),
                    })
            })
            .collect()
    }

    /// Byte ranges in `text` of its tokens (special tokens excluded), without truncation: what
    /// chunking measures texts by.
    pub fn token_spans(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>> {
        let enc = self
            .full_tokenizer
            .encode(text, false)
            .map_err(|e| Error::Model {
                context: "tokenization failed".into(),
                source: Some(e),
            })?;
        Ok(enc.get_offsets().iter().map(|&(a, b)| a..b).collect())
    }

    /// Embeds a batch of token sequences in one forward pass (packed, without padding); a
    /// sequence's vector does not depend on the rest of the batch. Vectors are normalized when
    /// the model's pipeline says so.
    pub fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let mut out = self.forward_pooled(batch)?;
        if self.info.normalize {
            for v in &mut out {
                normalize(v);
            }
        }
        Ok(out)
    }

    /// Like [`SentenceModel::forward`], but returns the pooled vectors before any normalization.
    pub fn forward_pooled(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| {
            self.encoder
                .forward_pooled(batch, self.info.pooling, self.threads)
        })
    }

    /// Compute threads this model runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// L2-normalizes `v` in place as sentence-transformers does (`x / max(‖x‖, 1e-12)`).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

fn pooling_and_normalize(files: &ModelFiles) -> Result<(Pooling, bool)> {
    let normalize = match &files.modules {
        Some(m) => read_json::<Vec<ModuleEntry>>(m)?
            .iter()
            .any(|e| e.kind.ends_with(".Normalize")),
        None => false,
    };
    let pooling = match &files.pooling {
        None => Pooling::Mean,
        Some(p) => {
            let c: PoolingConfig = read_json(p)?;
            match (
                c.pooling_mode_cls_token,
                c.pooling_mode_mean_tokens,
                c.pooling_mode_max_tokens,
                c.pooling_mode_mean_sqrt_len_tokens,
            ) {
                (true, false, false, false) => Pooling::Cls,
                (false, true, false, false) => Pooling::Mean,
                _ => {
                    return Err(Error::model(
                        format!(
                            "{}: only mean or CLS pooling (one of them) is supported",
                            p.display()
                        ),
                        "unsupported pooling",
                    ))
                }
            }
        }
    };
    Ok((pooling, normalize))
}
