//! The transformer architectures a model can have, chosen by `config.json`'s `model_type`. Each
//! architecture is one file of its own that reads its config and wires its layers from the
//! shared [`kernels`](super::kernels); this module holds what they share: the [`Network`] trait,
//! reading weights, and the driver that splits a batch across threads.
//!
//! - [`bert`]: BERT (`bert`);
//! - [`distilbert`]: DistilBERT (`distilbert`);
//! - [`roberta`]: the RoBERTa family (`roberta`, `xlm-roberta`, `camembert`; positions after
//!   the padding id);
//! - [`mpnet`]: MPNet (`mpnet`, relative position buckets);
//! - [`post_norm`]: the post-norm encoder wiring all of the above use;
//! - [`modernbert`]: ModernBERT (`modernbert`; rotary, GeGLU, global and local attention);
//! - [`qwen3`]: Qwen3 (`qwen3`; a causal decoder, RMS norms, grouped-query attention, SwiGLU);
//! - [`nomic_bert`]: NomicBERT (`nomic_bert`; post-norm, rotary, SwiGLU, no biases);
//! - [`gte`]: GTE (`new`; post-norm, NTK-scaled rotary, GeGLU);
//! - [`pre_norm`]: the rotary wiring those four share (norms before or after each block).

pub(crate) mod bert;
pub(crate) mod distilbert;
pub(crate) mod gte;
pub(crate) mod modernbert;
pub(crate) mod mpnet;
pub(crate) mod nomic_bert;
pub(crate) mod post_norm;
pub(crate) mod pre_norm;
pub(crate) mod qwen3;
pub(crate) mod roberta;

use std::path::Path;

use candle_core::{DType, Shape};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::kernels::parallelism;
use super::source::read_json;
use crate::error::{Error, Result};

/// The `model_type`s aistack runs, as `config.json` names them.
pub const SUPPORTED: &[&str] = &[
    "bert",
    "distilbert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "mpnet",
    "modernbert",
    "qwen3",
    "nomic_bert",
    "new",
];

/// A loaded transformer: turns packed token sequences into their final token states.
pub(crate) trait Network: Send + Sync {
    /// Width of a token state.
    fn hidden(&self) -> usize;
    /// Longest sequence the position scheme allows, special tokens included.
    fn max_positions(&self) -> usize;
    /// Size of the token vocabulary.
    fn vocab(&self) -> usize;
    /// Runs `seqs` (one group, packed end to end) and calls `emit(i, rows)` with sequence `i`'s
    /// final states, `len × hidden` row-major, in order.
    fn encode(&self, seqs: &[&[u32]], par: gemm::Parallelism, emit: &mut dyn FnMut(usize, &[f32]));
}

/// A model's `config.json`, read for the architecture it names.
#[derive(Debug, Clone)]
pub(crate) enum ArchConfig {
    /// `bert`.
    Bert(bert::BertConfig),
    /// `distilbert`.
    DistilBert(distilbert::DistilBertConfig),
    /// `roberta`, `xlm-roberta` or `camembert` (the name kept for display).
    Roberta(roberta::RobertaConfig, &'static str),
    /// `mpnet`.
    MpNet(mpnet::MpNetConfig),
    /// `modernbert`.
    ModernBert(modernbert::ModernBertConfig),
    /// `qwen3`.
    Qwen3(qwen3::Qwen3Config),
    /// `nomic_bert`.
    NomicBert(nomic_bert::NomicBertConfig),
    /// `new` (GTE).
    Gte(gte::GteConfig),
}

#[derive(serde::Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

impl ArchConfig {
    /// Reads `config.json`; an architecture aistack does not run is refused with the list of
    /// those it does.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let kind: ModelType = read_json(path)?;
        // transformers names some types with a dash, some with an underscore.
        let name = kind
            .model_type
            .as_deref()
            .unwrap_or("bert")
            .replace('_', "-");
        match name.as_str() {
            "bert" => Ok(Self::Bert(read_json(path)?)),
            "distilbert" => Ok(Self::DistilBert(read_json(path)?)),
            "roberta" => Ok(Self::Roberta(read_json(path)?, "roberta")),
            "xlm-roberta" => Ok(Self::Roberta(read_json(path)?, "xlm-roberta")),
            "camembert" => Ok(Self::Roberta(read_json(path)?, "camembert")),
            "mpnet" => Ok(Self::MpNet(read_json(path)?)),
            "modernbert" => Ok(Self::ModernBert(read_json(path)?)),
            "qwen3" => Ok(Self::Qwen3(read_json(path)?)),
            "nomic-bert" => Ok(Self::NomicBert(read_json(path)?)),
            "new" => Ok(Self::Gte(read_json(path)?)),
            other => Err(Error::model(
                format!(
                    "{}: model_type '{other}' is not supported (supported: {})",
                    path.display(),
                    SUPPORTED.join(", ")
                ),
                "unsupported architecture",
            )),
        }
    }

    /// The `model_type`, as shown to users.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Bert(_) => "bert",
            Self::DistilBert(_) => "distilbert",
            Self::Roberta(_, name) => name,
            Self::MpNet(_) => "mpnet",
            Self::ModernBert(_) => "modernbert",
            Self::Qwen3(_) => "qwen3",
            Self::NomicBert(_) => "nomic_bert",
            Self::Gte(_) => "new",
        }
    }

    /// Longest sequence the position scheme allows.
    pub(crate) fn max_positions(&self) -> usize {
        match self {
            Self::Bert(c) => c.common.max_position_embeddings,
            Self::DistilBert(c) => c.max_position_embeddings,
            Self::Roberta(c, _) => c.max_positions(),
            Self::MpNet(c) => c.max_positions(),
            Self::ModernBert(c) => c.max_position_embeddings,
            Self::Qwen3(c) => c.max_position_embeddings,
            Self::NomicBert(c) => c.n_positions,
            Self::Gte(c) => c.max_position_embeddings,
        }
    }

    /// Size of the token vocabulary.
    pub(crate) fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(c) => c.common.vocab_size,
            Self::DistilBert(c) => c.vocab_size,
            Self::Roberta(c, _) => c.common.vocab_size,
            Self::MpNet(c) => c.common.vocab_size,
            Self::ModernBert(c) => c.vocab_size,
            Self::Qwen3(c) => c.vocab_size,
            Self::NomicBert(c) => c.vocab_size,
            Self::Gte(c) => c.vocab_size,
        }
    }

    /// Loads the weights for this architecture.
    pub(crate) fn load(&self, vb: VarBuilder) -> candle_core::Result<Box<dyn Network>> {
        Ok(match self {
            Self::Bert(c) => Box::new(bert::load(vb, c)?),
            Self::DistilBert(c) => Box::new(distilbert::load(vb, c)?),
            Self::Roberta(c, _) => Box::new(roberta::load(vb, c)?),
            Self::MpNet(c) => Box::new(mpnet::load(vb, c)?),
            Self::ModernBert(c) => Box::new(modernbert::load(vb, c)?),
            Self::Qwen3(c) => Box::new(qwen3::load(vb, c)?),
            Self::NomicBert(c) => Box::new(nomic_bert::load(vb, c)?),
            Self::Gte(c) => Box::new(gte::load(vb, c)?),
        })
    }
}

/// Working buffers larger than this (in floats) are freed after use rather than kept.
const RETAIN_FLOATS: usize = 8 << 20;

/// One set of an encoder's working buffers.
pub(crate) trait ScratchSet: Default + Send {
    /// Floats held, to decide whether the set is kept for the next call.
    fn floats(&self) -> usize;
}

/// Working buffers reused across calls instead of allocated per op: one set per group running
/// at once; a set grown past [`RETAIN_FLOATS`] (a very long batch) is dropped after use, so
/// memory does not stay at a rare peak.
pub(crate) struct Scratch<T> {
    sets: parking_lot::Mutex<Vec<T>>,
}

impl<T: ScratchSet> Scratch<T> {
    /// No sets yet; they are made on first use.
    pub(crate) fn new() -> Self {
        Self {
            sets: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a set of buffers, then keeps the set unless it grew too large.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut set = self.sets.lock().pop().unwrap_or_default();
        let out = f(&mut set);
        if set.floats() <= RETAIN_FLOATS {
            self.sets.lock().push(set);
        }
        out
    }
}

/// A weight as a flat `f32` array, checked against `shape`.
pub(crate) fn tensor(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
) -> candle_core::Result<Vec<f32>> {
    vb.get(shape, name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// The weights under the architecture's own prefix when the file has one (`bert.`, `mpnet.`,
/// or the `model_type`), found by `probe`, a tensor every such file holds.
pub(crate) fn unprefixed<'a>(vb: VarBuilder<'a>, probe: &str, prefixes: &[&str]) -> VarBuilder<'a> {
    if vb.contains_tensor(probe) {
        return vb;
    }
    for p in prefixes {
        if vb.contains_tensor(&format!("{p}.{probe}")) {
            return vb.pp(*p);
        }
    }
    vb
}

/// Runs `batch` through `net` on `threads` threads of the current rayon pool and returns
/// `pool(i, rows)` for each sequence `i`, in order. Sequences are checked against the network's
/// limits first: an empty one, one too long, or a token outside the vocabulary is `InvalidInput`.
pub(crate) fn forward_pooled(
    net: &dyn Network,
    batch: &[&[u32]],
    threads: usize,
    pool: &(dyn Fn(usize, &[f32]) -> Vec<f32> + Sync),
) -> Result<Vec<Vec<f32>>> {
    let (max, vocab) = (net.max_positions(), net.vocab());
    for seq in batch {
        if seq.is_empty() {
            return Err(Error::invalid("a token sequence is empty"));
        }
        if seq.len() > max {
            return Err(Error::invalid(format!(
                "a token sequence has {} tokens; the model takes at most {max}",
                seq.len(),
            )));
        }
        if let Some(id) = seq.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::invalid(format!(
                "token id {id} is outside the model's vocabulary of {vocab}"
            )));
        }
    }
    let threads = threads.max(1);
    let groups = split_by_cost(batch, threads.min(batch.len()).max(1));
    let run = |range: std::ops::Range<usize>, par| {
        let mut out = Vec::with_capacity(range.len());
        net.encode(&batch[range.clone()], par, &mut |i, rows| {
            out.push(pool(range.start + i, rows))
        });
        out
    };
    if groups.len() <= 1 {
        return Ok(run(0..batch.len(), parallelism(threads)));
    }
    let par = parallelism(threads / groups.len());
    let parts: Vec<Vec<Vec<f32>>> = groups.par_iter().map(|r| run(r.clone(), par)).collect();
    Ok(parts.into_iter().flatten().collect())
}

/// Splits `batch` into at most `groups` contiguous ranges of about equal compute cost.
fn split_by_cost(batch: &[&[u32]], groups: usize) -> Vec<std::ops::Range<usize>> {
    // Linear layers cost ~len; attention adds ~len² (about equal at len ≈ 2,300 for MiniLM, but
    // softmax and small products make it count earlier).
    let cost = |s: &&[u32]| {
        let l = s.len() as f64;
        l + l * l / 512.0
    };
    let total: f64 = batch.iter().map(cost).sum();
    let n = batch.len();
    let mut ranges = Vec::with_capacity(groups);
    let (mut start, mut acc) = (0, 0.0);
    for (idx, s) in batch.iter().enumerate() {
        let c = cost(s);
        let still_to_open = groups - ranges.len() - 1;
        if idx > start && still_to_open > 0 {
            let target = total * (ranges.len() + 1) as f64 / groups as f64;
            let must = n - idx <= still_to_open;
            if must || (target - acc).abs() <= (acc + c - target).abs() {
                ranges.push(start..idx);
                start = idx;
            }
        }
        acc += c;
    }
    ranges.push(start..n);
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_split_keeps_order_and_balances() {
        let seqs: Vec<Vec<u32>> = [10, 10, 10, 10, 40].iter().map(|&n| vec![1; n]).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        assert_eq!(split_by_cost(&refs, 2), vec![0..4, 4..5]);
        assert_eq!(split_by_cost(&refs, 1), vec![0..5]);
        let r = split_by_cost(&refs[..2], 2);
        assert_eq!(r, vec![0..1, 1..2]);
        let many: Vec<&[u32]> = vec![&seqs[0][..]; 7];
        let r = split_by_cost(&many, 3);
        assert_eq!(r.len(), 3);
        assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), 7);
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn an_unsupported_architecture_is_refused_with_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"model_type": "gpt2", "vocab_size": 10}"#).unwrap();
        let err = ArchConfig::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("'gpt2'") && err.contains("camembert, mpnet, modernbert, qwen3"),
            "{err}"
        );
    }
}
