//! The candle backend: a sentence-transformers model (all-MiniLM-L6-v2, all-mpnet-base-v2,
//! bge-*, e5-*, gte-*) with its tokenizer and its modules after the transformer, run on the CPU.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::arch::{forward_pooled, ArchConfig, Network};
use super::pipeline::{Pipeline, Pooling};
use super::source::{read_json, ModelFiles};
use crate::error::{Error, Result};

/// How much lower than the process's other threads the compute threads run (a `nice`
/// increment). The HTTP threads then take a core at once when a request arrives while a batch
/// computes, so admitting, refusing and answering are never queued behind a forward pass; with
/// no other work, the compute threads have every core all the same.
pub const COMPUTE_NICE: i32 = 10;

/// The prompt names that mean "a search query", in the order they are looked for (e5 and
/// Qwen3 name it `query`, nomic-embed-text `search_query`).
pub const QUERY_PROMPTS: &[&str] = &["query", "search_query"];
/// The prompt names that mean "a document to be searched".
pub const PASSAGE_PROMPTS: &[&str] = &["passage", "document", "search_document"];

/// The first non-empty prompt among `names`.
fn first_prompt(
    prompts: &std::collections::BTreeMap<String, String>,
    names: &[&str],
) -> Option<String> {
    names
        .iter()
        .find_map(|n| prompts.get(*n))
        .filter(|p| !p.is_empty())
        .cloned()
}

/// What a loaded model is: its id, architecture, size, pipeline and input limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The id the model was loaded by (the Hub id or the directory given).
    pub model_id: String,
    /// The transformer's architecture, as `config.json`'s `model_type` names it.
    pub architecture: String,
    /// Embedding dimensions (after pooling and any Dense layers).
    pub dims: usize,
    /// Longest input in tokens, special tokens included; longer inputs are truncated.
    pub max_input_tokens: usize,
    /// How token vectors are pooled: these modes, concatenated in order.
    pub pooling: Vec<Pooling>,
    /// Whether embeddings are L2-normalized.
    pub normalize: bool,
    /// The model's own query prompt (from `config_sentence_transformers.json`), if any.
    pub query_prompt: Option<String>,
    /// The model's own passage/document prompt, if any.
    pub passage_prompt: Option<String>,
    /// Every prompt of `config_sentence_transformers.json` by name, as requests name them.
    pub prompts: std::collections::BTreeMap<String, String>,
    /// The prompt applied when a request names none (`default_prompt_name`), if any.
    pub default_prompt_name: Option<String>,
    /// Whether a prompt's tokens count in pooling (`include_prompt`).
    pub include_prompt: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// `tokenizer_config.json`: sentence-transformers 6 saves `max_seq_length` as the tokenizer's
/// `model_max_length`.
#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: std::collections::BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

/// A loaded sentence-embedding model. Its methods block: run them off the async runtime.
pub struct SentenceModel {
    network: Box<dyn Network>,
    pipeline: Pipeline,
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
        let config = ArchConfig::read(&files.config)?;
        let st_model: Option<SentenceBertConfig> = files
            .sentence_bert_config
            .as_deref()
            .map(read_json::<SentenceBertConfig>)
            .transpose()?;
        // As sentence-transformers: `max_seq_length` of sentence_bert_config.json (older
        // models), else the tokenizer's `model_max_length` (newer ones), else the position
        // table; never past what the position scheme allows.
        let from_tokenizer = files
            .tokenizer_config
            .as_deref()
            .map(read_json::<TokenizerConfig>)
            .transpose()?
            .and_then(|c| c.model_max_length)
            .filter(|n| (1.0..1e9).contains(n))
            .map(|n| n as usize);
        let max_seq = st_model
            .as_ref()
            .and_then(|c| c.max_seq_length)
            .or(from_tokenizer)
            .unwrap_or(config.max_positions())
            .min(config.max_positions());
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
        if st_model.as_ref().is_some_and(|c| c.do_lower_case) {
            // As sentence-transformers does: a Lowercase normalizer before the tokenizer's own.
            let mut steps: Vec<NormalizerWrapper> = vec![Lowercase.into()];
            steps.extend(tokenizer.get_normalizer().cloned());
            tokenizer.with_normalizer(Some(Sequence::new(steps)));
        }
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
        if vocab > config.vocab_size() {
            return Err(Error::model(
                format!(
                    "tokenizer.json has {vocab} tokens but config.json's vocab_size is {}",
                    config.vocab_size()
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
        let network = config.load(vb).map_err(|e| {
            Error::model(
                format!(
                    "the weights in {} do not match {}",
                    files.weights.display(),
                    files.config.display()
                ),
                e,
            )
        })?;
        let pipeline = Pipeline::load(files, network.hidden())?;
        let info = ModelInfo {
            model_id: model_id.to_string(),
            architecture: config.name().to_string(),
            dims: pipeline.dims(),
            max_input_tokens: max_seq,
            pooling: pipeline.pooling.clone(),
            normalize: pipeline.normalize,
            query_prompt: first_prompt(&st.prompts, QUERY_PROMPTS),
            passage_prompt: first_prompt(&st.prompts, PASSAGE_PROMPTS),
            default_prompt_name: st
                .default_prompt_name
                .clone()
                .filter(|n| st.prompts.contains_key(n)),
            prompts: st.prompts.clone(),
            include_prompt: pipeline.include_prompt,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aistack-compute-{i}"))
            .start_handler(|_| lower_this_threads_priority(COMPUTE_NICE))
            .build()
            .map_err(|e| Error::model("cannot start the compute threads", e))?;
        let model = Self {
            network,
            pipeline,
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

    /// Like [`SentenceModel::forward`], but returns the vectors before `Normalize` (pooled,
    /// then through any Dense layers).
    pub fn forward_pooled(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.forward_pooled_from(batch, &vec![0; batch.len()])
    }

    /// Like [`SentenceModel::forward_pooled`], where sequence `i` starts with a prompt of
    /// `prompt[i]` tokens, which pooling leaves out when the model says so
    /// (`include_prompt: false`).
    pub fn forward_pooled_from(&self, batch: &[&[u32]], prompt: &[usize]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if prompt.len() != batch.len() {
            return Err(Error::invalid("one prompt length per sequence is needed"));
        }
        let h = self.network.hidden();
        self.pool.install(|| {
            forward_pooled(self.network.as_ref(), batch, self.threads, &|i, rows| {
                self.pipeline.pooled(rows, h, prompt[i])
            })
        })
    }

    /// Tokens a prompt takes at the start of a text, as sentence-transformers counts them: the
    /// prompt tokenized with special tokens, less a special token at its end.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<usize> {
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| Error::Model {
                context: "tokenization failed".into(),
                source: Some(e),
            })?;
        let n = enc.get_ids().len();
        let special_last = enc.get_special_tokens_mask().last() == Some(&1);
        Ok(n - usize::from(special_last && n > 0))
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

/// Lowers the calling thread's scheduling priority by `nice` (Linux threads have a nice value
/// of their own). Failure is harmless (the thread keeps the process's priority) and ignored.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority(nice: i32) {
    // SAFETY: `gettid`, `getpriority` and `setpriority` have no memory preconditions; on this
    // thread's own id they change only its scheduling weight.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now.saturating_add(nice));
    }
}

/// Elsewhere threads keep the process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority(_nice: i32) {}
