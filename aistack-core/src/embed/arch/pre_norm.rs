//! The rotary transformer that ModernBERT, Qwen3 and NomicBERT share: rotary positions, a gated
//! MLP (`act(a) · b`), per layer an attention mask (full, causal or a window), and norms either
//! before each block (`x = x + attention(norm(x))`, `x = x + mlp(norm(x))`, then a final norm:
//! ModernBERT, Qwen3) or after it (`x = norm(x + attention(x))`, `x = norm(x + mlp(x))`:
//! NomicBERT), as [`Placement`] says.
//!
//! It runs packed sequences on the shared kernels exactly as the post-norm encoder does (see
//! [`super::post_norm`]): no padding, fused projections in panels, a group of sequences per core.

use candle_nn::VarBuilder;
use gemm::Parallelism;

use super::{tensor, Network};
use crate::embed::kernels::attention::{attention_head, Head, Mask};
use crate::embed::kernels::linear::{linear, Panels};
pub(crate) use crate::embed::kernels::rotary::Rotary;
use crate::embed::kernels::{simd, take};

/// A norm: layer norm (with or without a bias) or RMS norm.
pub(crate) struct Norm {
    rms: bool,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    /// A layer norm's `weight` (and `bias` where the file has one) under `vb`.
    pub(crate) fn layer(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        let beta = if vb.contains_tensor("bias") {
            tensor(vb, size, "bias")?
        } else {
            vec![0.0; size]
        };
        Ok(Self {
            rms: false,
            gamma: tensor(vb, size, "weight")?,
            beta,
            eps: eps as f32,
        })
    }

    /// An RMS norm's `weight` under `vb`.
    pub(crate) fn rms(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            rms: true,
            gamma: tensor(vb, size, "weight")?,
            beta: Vec::new(),
            eps: eps as f32,
        })
    }

    /// Normalizes each `gamma.len()`-wide row of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        if self.rms {
            simd::rms_norm(x, h, &self.gamma, self.eps);
        } else {
            simd::layer_norm(x, None, h, &self.gamma, &self.beta, self.eps);
        }
    }
}

/// A linear layer's weights in panels and its bias (zeros where it has none).
pub(crate) struct Linear {
    w: Panels,
    b: Vec<f32>,
}

impl Linear {
    /// Reads `weight` (`[out, in]`) and, where present, `bias` of each of `parts`, stacked in
    /// order into one layer (fused projections).
    pub(crate) fn stacked(
        parts: &[(VarBuilder, usize)],
        input: usize,
    ) -> candle_core::Result<Self> {
        let out: usize = parts.iter().map(|(_, n)| n).sum();
        let mut w = Vec::with_capacity(out * input);
        let mut b = Vec::with_capacity(out);
        for (vb, n) in parts {
            w.extend(tensor(vb, (*n, input), "weight")?);
            if vb.contains_tensor("bias") {
                b.extend(tensor(vb, *n, "bias")?);
            } else {
                b.extend(std::iter::repeat_n(0.0, *n));
            }
        }
        Ok(Self {
            w: Panels::new(&w, out, input),
            b,
        })
    }

    /// A layer from its weights (`[out, in]`, row-major) and bias (`None`: zeros).
    pub(crate) fn from_parts(w: &[f32], b: Option<Vec<f32>>, out: usize, input: usize) -> Self {
        Self {
            w: Panels::new(w, out, input),
            b: b.unwrap_or_else(|| vec![0.0; out]),
        }
    }

    /// One layer: `weight` (`[out, in]`) and its `bias` if present.
    pub(crate) fn load(vb: VarBuilder, out: usize, input: usize) -> candle_core::Result<Self> {
        Self::stacked(&[(vb, out)], input)
    }
}

/// The gated MLP's activation, applied to the first half of the up projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GluAct {
    /// Exact GELU (ModernBERT's GeGLU).
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// SiLU (Qwen3's SwiGLU).
    Silu,
}

/// One layer's weights and attention scheme.
pub(crate) struct Layer {
    /// `None`: the layer attends to its input as is (ModernBERT's first layer).
    pub attn_norm: Option<Norm>,
    /// Query, key and value projections stacked: `[heads·d; kv·d; kv·d]` outputs.
    pub qkv: Linear,
    /// Per-head RMS norms of queries and keys, before the rotation (Qwen3).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub out: Linear,
    pub mlp_norm: Norm,
    /// The MLP's up projection: `[act part; linear part]`, `2 · intermediate` outputs.
    pub up: Linear,
    pub down: Linear,
    pub mask: Mask,
    /// Which of the encoder's rotary bases this layer uses.
    pub rotary: usize,
}

/// Where a layer's norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Before each block, on its input; the residual stream is normalized at the end only.
    Pre,
    /// After each block's residual sum (BERT's wiring); every layer needs `attn_norm`.
    Post,
}

/// The shape of a rotary encoder.
pub(crate) struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub act: GluAct,
    pub placement: Placement,
}

impl Shape {
    /// Full multi-head attention (as many key/value heads as query heads, each
    /// `hidden / heads` wide); an error if `hidden` does not split so.
    pub(crate) fn multi_head(
        hidden: usize,
        heads: usize,
        intermediate: usize,
        (vocab, max_positions): (usize, usize),
        act: GluAct,
        placement: Placement,
    ) -> candle_core::Result<Self> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            candle_core::bail!("hidden size {hidden} is not a multiple of {heads} attention heads");
        }
        Ok(Self {
            hidden,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            intermediate,
            vocab,
            max_positions,
            act,
            placement,
        })
    }
}

/// BERT-style token embeddings for the rotary wiring: `word_embeddings.weight` under `emb`,
/// with the row of token type 0 (where the model has `types` > 0) folded into every token once,
/// as every token has type 0.
pub(crate) fn bert_tokens(
    emb: &VarBuilder,
    vocab: usize,
    hidden: usize,
    types: usize,
) -> candle_core::Result<Vec<f32>> {
    let mut word = tensor(emb, (vocab, hidden), "word_embeddings.weight")?;
    if types > 0 {
        let table = tensor(emb, (types, hidden), "token_type_embeddings.weight")?;
        for row in word.chunks_exact_mut(hidden) {
            row.iter_mut()
                .zip(&table[..hidden])
                .for_each(|(w, t)| *w += t);
        }
    }
    Ok(word)
}

/// A loaded rotary encoder.
pub(crate) struct Encoder {
    shape: Shape,
    word: Vec<f32>,
    embed_norm: Option<Norm>,
    layers: Vec<Layer>,
    final_norm: Option<Norm>,
    rotaries: Vec<Rotary>,
    scratch: super::Scratch<Buffers>,
}

/// The encoder's working buffers.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    up: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
}

impl super::ScratchSet for Buffers {
    fn floats(&self) -> usize {
        [
            &self.x,
            &self.normed,
            &self.qkv,
            &self.ctx,
            &self.tmp,
            &self.up,
            &self.inter,
            &self.scores,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum()
    }
}

impl Encoder {
    /// An encoder of `shape` from its token embeddings (`vocab × hidden`), layers and norms;
    /// `rotaries` are the position rotations (one per base) the layers index.
    pub(crate) fn new(
        shape: Shape,
        word: Vec<f32>,
        embed_norm: Option<Norm>,
        layers: Vec<Layer>,
        final_norm: Option<Norm>,
        rotaries: Vec<Rotary>,
    ) -> candle_core::Result<Self> {
        let s = &shape;
        if s.heads == 0
            || s.kv_heads == 0
            || !s.heads.is_multiple_of(s.kv_heads)
            || !s.head_dim.is_multiple_of(2)
        {
            candle_core::bail!(
                "{} attention heads cannot share {} key/value heads of width {}",
                s.heads,
                s.kv_heads,
                s.head_dim
            );
        }
        if word.len() != s.vocab * s.hidden {
            candle_core::bail!("the token embeddings are not vocab × hidden");
        }
        if s.placement == Placement::Post && layers.iter().any(|l| l.attn_norm.is_none()) {
            candle_core::bail!("a post-norm layer needs its attention norm");
        }
        if rotaries.iter().any(|r| r.width() != s.head_dim) {
            candle_core::bail!("a rotary table is not {} wide", s.head_dim);
        }
        if layers.iter().any(|l| l.rotary >= rotaries.len()) {
            candle_core::bail!("a layer names a rotary base that does not exist");
        }
        Ok(Self {
            shape,
            word,
            embed_norm,
            layers,
            final_norm,
            rotaries,
            scratch: super::Scratch::new(),
        })
    }

    fn run(
        &self,
        seqs: &[&[u32]],
        par: Parallelism,
        s: &mut Buffers,
        emit: &mut dyn FnMut(usize, &[f32]),
    ) {
        let sh = &self.shape;
        let (h, d, i) = (sh.hidden, sh.head_dim, sh.intermediate);
        let (qw, kvw) = (sh.heads * d, sh.kv_heads * d);
        let row = qw + 2 * kvw;
        let group = sh.heads / sh.kv_heads;
        let t: usize = seqs.iter().map(|q| q.len()).sum();
        let longest = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let x = take(&mut s.x, t * h);
        let normed = take(&mut s.normed, t * h);
        let qkv = take(&mut s.qkv, t * row);
        let ctx = take(&mut s.ctx, t * qw);
        let tmp = take(&mut s.tmp, t * h);
        let up = take(&mut s.up, t * 2 * i);
        let inter = take(&mut s.inter, t * i);
        let scores = take(&mut s.scores, longest * longest);
        let tables: Vec<(Vec<f32>, Vec<f32>)> =
            self.rotaries.iter().map(|r| r.table(longest)).collect();

        let mut at = 0;
        for seq in seqs {
            for &id in seq.iter() {
                let id = id as usize;
                x[at * h..(at + 1) * h].copy_from_slice(&self.word[id * h..(id + 1) * h]);
                at += 1;
            }
        }
        if let Some(n) = &self.embed_norm {
            n.apply(x);
        }

        let scale = 1.0 / (d as f32).sqrt();
        let half = d / 2;
        let pre = sh.placement == Placement::Pre;
        for layer in &self.layers {
            let input: &[f32] = match &layer.attn_norm {
                Some(n) if pre => {
                    normed.copy_from_slice(x);
                    n.apply(normed);
                    &*normed
                }
                _ => &*x,
            };
            linear(input, &layer.qkv.w, &layer.qkv.b, qkv, t, par);
            for r in qkv.chunks_exact_mut(row) {
                if let Some(n) = &layer.q_norm {
                    n.apply(&mut r[..qw]);
                }
                if let Some(n) = &layer.k_norm {
                    n.apply(&mut r[qw..qw + kvw]);
                }
            }
            let (cos, sin) = &tables[layer.rotary];
            let mut start = 0;
            for seq in seqs {
                for p in 0..seq.len() {
                    let r = &mut qkv[(start + p) * row..(start + p + 1) * row];
                    let (c, sn) = (
                        &cos[p * half..(p + 1) * half],
                        &sin[p * half..(p + 1) * half],
                    );
                    for head in r[..qw + kvw].chunks_exact_mut(d) {
                        Rotary::apply(head, c, sn);
                    }
                }
                for n in 0..sh.heads {
                    let kv = n / group;
                    let view = Head {
                        row,
                        q: n * d,
                        k: qw + kv * d,
                        v: qw + kvw + kv * d,
                        ctx_row: qw,
                        ctx: n * d,
                        d,
                    };
                    attention_head(
                        qkv,
                        ctx,
                        scores,
                        start,
                        seq.len(),
                        view,
                        scale,
                        None,
                        layer.mask,
                        par,
                    );
                }
                start += seq.len();
            }
            linear(ctx, &layer.out.w, &layer.out.b, tmp, t, par);
            x.iter_mut().zip(tmp.iter()).for_each(|(a, b)| *a += b);
            if let (false, Some(n)) = (pre, &layer.attn_norm) {
                n.apply(x);
            }

            let input: &[f32] = if pre {
                normed.copy_from_slice(x);
                layer.mlp_norm.apply(normed);
                &*normed
            } else {
                &*x
            };
            linear(input, &layer.up.w, &layer.up.b, up, t, par);
            for (u, o) in up.chunks_exact_mut(2 * i).zip(inter.chunks_exact_mut(i)) {
                let (a, b) = u.split_at_mut(i);
                match sh.act {
                    GluAct::Gelu => simd::gelu_erf(a),
                    GluAct::GeluTanh => simd::gelu_tanh(a),
                    GluAct::Silu => simd::silu(a),
                }
                o.iter_mut()
                    .zip(a.iter().zip(b.iter()))
                    .for_each(|(o, (a, b))| *o = a * b);
            }
            linear(inter, &layer.down.w, &layer.down.b, tmp, t, par);
            x.iter_mut().zip(tmp.iter()).for_each(|(a, b)| *a += b);
            if !pre {
                layer.mlp_norm.apply(x);
            }
        }
        if let Some(n) = &self.final_norm {
            n.apply(x);
        }

        let mut start = 0;
        for (n, seq) in seqs.iter().enumerate() {
            emit(n, &x[start * h..(start + seq.len()) * h]);
            start += seq.len();
        }
    }
}

impl Network for Encoder {
    fn hidden(&self) -> usize {
        self.shape.hidden
    }

    fn max_positions(&self) -> usize {
        self.shape.max_positions
    }

    fn vocab(&self) -> usize {
        self.shape.vocab
    }

    fn encode(&self, seqs: &[&[u32]], par: Parallelism, emit: &mut dyn FnMut(usize, &[f32])) {
        self.scratch.with(|s| self.run(seqs, par, s, emit));
    }
}
