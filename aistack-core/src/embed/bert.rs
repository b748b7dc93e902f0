//! A tuned BERT encoder forward pass for the CPU, over weights loaded with candle.
//!
//! Faster than the generic candle-transformers graph on the same weights because it:
//! - packs a batch's sequences end to end (no padding rows, no attention mask);
//! - fuses the query, key and value projections into one matrix product;
//! - runs a batch as one group of whole sequences per core, each with single-threaded matrix
//!   products (no barrier between threads), or one sequence with every core in its products;
//! - computes GELU, softmax and layer norm in vectorized loops (AVX2/FMA where present);
//! - reuses its working buffers between calls instead of allocating a tensor per op;
//! - keeps the linear layers' weights in the matrix kernels' own panel layout, so a product
//!   repacks nothing.
//!
//! Matrix products go through `gemm`, the kernel crate candle's CPU backend uses.

use parking_lot::Mutex;

use candle_core::{DType, Shape};
use candle_nn::VarBuilder;
use gemm::Parallelism;
use rayon::prelude::*;

use super::model::Pooling;
use crate::error::{Error, Result};

/// Working buffers larger than this (in floats) are freed after use rather than kept.
const RETAIN_FLOATS: usize = 8 << 20;

/// The fields of a BERT `config.json` that the encoder reads (as transformers writes them);
/// others are ignored. A small struct of ours instead of candle-transformers' whole crate.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Only `absolute` is implemented; anything else is refused rather than computed wrongly.
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    pub model_type: Option<String>,
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HiddenAct {
    /// Exact GELU (erf).
    Gelu,
    /// GELU's tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluApproximate,
    /// ReLU.
    Relu,
}

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PositionEmbeddingType {
    /// One learned vector per position.
    #[default]
    Absolute,
}

/// A loaded BERT encoder: its shape and its weights as `f32` arrays (row-major, the linear
/// layers' in panels).
pub(crate) struct Encoder {
    hidden: usize,
    heads: usize,
    inter: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    act: HiddenAct,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    scratch: Mutex<Vec<Scratch>>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One transformer layer; weight matrices in panels (see [`Panels`]).
struct Layer {
    qkv_w: Panels,
    qkv_b: Vec<f32>,
    out_w: Panels,
    out_b: Vec<f32>,
    attn_norm: Norm,
    up_w: Panels,
    up_b: Vec<f32>,
    down_w: Panels,
    down_b: Vec<f32>,
    out_norm: Norm,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
}

impl Scratch {
    fn floats(&self) -> usize {
        [
            &self.x,
            &self.qkv,
            &self.ctx,
            &self.tmp,
            &self.inter,
            &self.scores,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum()
    }
}

/// Grows `v` to at least `n` floats (never shrinks it) and returns its first `n`.
fn take(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

fn tensor(vb: &VarBuilder, shape: impl Into<Shape>, name: &str) -> candle_core::Result<Vec<f32>> {
    vb.get(shape, name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

fn norm(vb: &VarBuilder, size: usize) -> candle_core::Result<Norm> {
    let pick = |a: &str, b: &str| {
        if vb.contains_tensor(a) {
            a.to_string()
        } else {
            b.to_string()
        }
    };
    Ok(Norm {
        gamma: tensor(vb, size, &pick("weight", "gamma"))?,
        beta: tensor(vb, size, &pick("bias", "beta"))?,
    })
}

impl Encoder {
    /// Reads the encoder's weights (with or without a `bert.` or `<model_type>.` prefix).
    pub(crate) fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        let word = "embeddings.word_embeddings.weight";
        let vb = match &config.model_type {
            _ if vb.contains_tensor(word) => vb,
            _ if vb.contains_tensor(&format!("bert.{word}")) => vb.pp("bert"),
            Some(t) if vb.contains_tensor(&format!("{t}.{word}")) => vb.pp(t),
            _ => vb,
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let emb = vb.pp("embeddings");
        let token_types = tensor(
            &emb,
            (config.type_vocab_size, h),
            "token_type_embeddings.weight",
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{index}"));
            let att = l.pp("attention");
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                let p = att.pp("self").pp(part);
                qkv_w.extend(tensor(&p, (h, h), "weight")?);
                qkv_b.extend(tensor(&p, h, "bias")?);
            }
            layers.push(Layer {
                qkv_w: Panels::new(&qkv_w, 3 * h, h),
                qkv_b,
                out_w: Panels::new(&tensor(&att.pp("output.dense"), (h, h), "weight")?, h, h),
                out_b: tensor(&att.pp("output.dense"), h, "bias")?,
                attn_norm: norm(&att.pp("output.LayerNorm"), h)?,
                up_w: Panels::new(
                    &tensor(&l.pp("intermediate.dense"), (i, h), "weight")?,
                    i,
                    h,
                ),
                up_b: tensor(&l.pp("intermediate.dense"), i, "bias")?,
                down_w: Panels::new(&tensor(&l.pp("output.dense"), (h, i), "weight")?, h, i),
                down_b: tensor(&l.pp("output.dense"), h, "bias")?,
                out_norm: norm(&l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            inter: i,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
            word: tensor(&emb, (config.vocab_size, h), "word_embeddings.weight")?,
            position: tensor(
                &emb,
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type0: token_types[..h].to_vec(),
            embed_norm: norm(&emb.pp("LayerNorm"), h)?,
            layers,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Runs `batch` through the encoder on `threads` threads of the current rayon pool and
    /// returns one pooled (unnormalized) vector per sequence, in order.
    pub(crate) fn forward_pooled(
        &self,
        batch: &[&[u32]],
        pooling: Pooling,
        threads: usize,
    ) -> Result<Vec<Vec<f32>>> {
        for seq in batch {
            if seq.is_empty() {
                return Err(Error::invalid("a token sequence is empty"));
            }
            if seq.len() > self.max_positions {
                return Err(Error::invalid(format!(
                    "a token sequence has {} tokens; the model takes at most {}",
                    seq.len(),
                    self.max_positions
                )));
            }
            if let Some(id) = seq.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::invalid(format!(
                    "token id {id} is outside the model's vocabulary of {}",
                    self.vocab
                )));
            }
        }
        let threads = threads.max(1);
        let groups = split_by_cost(batch, threads.min(batch.len()).max(1));
        if groups.len() <= 1 {
            let par = parallelism(threads);
            return Ok(self.run_group(batch, pooling, par));
        }
        let par = parallelism(threads / groups.len());
        let parts: Vec<Vec<Vec<f32>>> = groups
            .par_iter()
            .map(|r| self.run_group(&batch[r.clone()], pooling, par))
            .collect();
        Ok(parts.into_iter().flatten().collect())
    }

    fn run_group(&self, seqs: &[&[u32]], pooling: Pooling, par: Parallelism) -> Vec<Vec<f32>> {
        let mut scratch = self.scratch.lock().pop().unwrap_or_default();
        let out = self.encode(seqs, pooling, par, &mut scratch);
        if scratch.floats() <= RETAIN_FLOATS {
            self.scratch.lock().push(scratch);
        }
        out
    }

    fn encode(
        &self,
        seqs: &[&[u32]],
        pooling: Pooling,
        par: Parallelism,
        s: &mut Scratch,
    ) -> Vec<Vec<f32>> {
        let (h, i) = (self.hidden, self.inter);
        let t: usize = seqs.iter().map(|q| q.len()).sum();
        let longest = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let x = take(&mut s.x, t * h);
        let qkv = take(&mut s.qkv, t * 3 * h);
        let ctx = take(&mut s.ctx, t * h);
        let tmp = take(&mut s.tmp, t * h);
        let inter = take(&mut s.inter, t * i);
        let scores = take(&mut s.scores, longest * longest);

        // Embeddings: word + position + token type 0, then layer norm.
        let mut row = 0;
        for seq in seqs {
            for (pos, &id) in seq.iter().enumerate() {
                let dst = &mut x[row * h..(row + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                for (((d, w), p), k) in dst.iter_mut().zip(w).zip(p).zip(&self.token_type0) {
                    *d = w + p + k;
                }
                row += 1;
            }
        }
        simd::layer_norm(
            x,
            None,
            h,
            &self.embed_norm.gamma,
            &self.embed_norm.beta,
            self.eps,
        );

        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        for layer in &self.layers {
            linear(x, &layer.qkv_w, &layer.qkv_b, qkv, t, par);
            let mut start = 0;
            for seq in seqs {
                let l = seq.len();
                for head in 0..self.heads {
                    attention_head(qkv, ctx, scores, start, l, h, head * d, d, scale, par);
                }
                start += l;
            }
            linear(ctx, &layer.out_w, &layer.out_b, tmp, t, par);
            simd::layer_norm(
                x,
                Some(tmp),
                h,
                &layer.attn_norm.gamma,
                &layer.attn_norm.beta,
                self.eps,
            );
            linear(x, &layer.up_w, &layer.up_b, inter, t, par);
            match self.act {
                HiddenAct::Gelu => simd::gelu_erf(inter),
                HiddenAct::GeluApproximate => simd::gelu_tanh(inter),
                HiddenAct::Relu => inter.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
            linear(inter, &layer.down_w, &layer.down_b, tmp, t, par);
            simd::layer_norm(
                x,
                Some(tmp),
                h,
                &layer.out_norm.gamma,
                &layer.out_norm.beta,
                self.eps,
            );
        }

        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for seq in seqs {
            let rows = &x[start * h..(start + seq.len()) * h];
            out.push(match pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut v = vec![0f32; h];
                    for r in rows.chunks_exact(h) {
                        v.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                    }
                    let n = seq.len() as f32;
                    v.iter_mut().for_each(|a| *a /= n);
                    v
                }
            });
            start += seq.len();
        }
        out
    }
}

fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
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

/// Output features per weight panel: one AVX-512 microkernel's rows (4 × 16 floats).
const PANEL: usize = 64;

/// A linear layer's `[n, k]` weight matrix (PyTorch's `[out, in]`) rearranged once at load
/// into panels of [`PANEL`] output features, each stored `[k][PANEL]` and contiguous (the
/// last panel may be narrower).
///
/// [`linear`] computes `outᵀ = W · xᵀ` one panel of `W` at a time. Read that way, a panel is
/// a left operand already in the kernels' own layout, so no operand is repacked per call and
/// the weights stream in order. Asked for `x · Wᵀ` with `W` as PyTorch stores it, the kernels
/// repacked `x` for every block of output columns: 25% of a pass of 8 short sentences and 45%
/// of a lone sentence's went to that copy (`perf`, AVX-512).
struct Panels {
    data: Vec<f32>,
    /// Output features.
    n: usize,
    /// Input features.
    k: usize,
}

impl Panels {
    /// Rearranges `w`, `[n, k]` row-major.
    fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k);
        let mut data = vec![0f32; n * k];
        for p0 in (0..n).step_by(PANEL) {
            let width = PANEL.min(n - p0);
            let panel = &mut data[p0 * k..(p0 + width) * k];
            for i in 0..width {
                let row = &w[(p0 + i) * k..(p0 + i + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * width + i] = v;
                }
            }
        }
        Self { data, n, k }
    }

    /// The panel of output features `p0..p0 + width` (`p0` a multiple of [`PANEL`]), `[k][width]`.
    fn panel(&self, p0: usize) -> (&[f32], usize) {
        let width = PANEL.min(self.n - p0);
        (&self.data[p0 * self.k..(p0 + width) * self.k], width)
    }
}

/// `out[t, n] = x[t, k] · Wᵀ + b[n]` for the layer's weights `w` (`[n, k]`, in panels), `x`
/// and `out` row-major.
fn linear(x: &[f32], w: &Panels, b: &[f32], out: &mut [f32], t: usize, par: Parallelism) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() == t * k && out.len() == t * n && b.len() == n);
    for row in out.chunks_exact_mut(n) {
        row.copy_from_slice(b);
    }
    let parts = match par {
        Parallelism::Rayon(p) if p > 1 => p,
        _ => 1,
    };
    // Several threads on one product: each computes its own band of output features (a
    // multiple of 16, which may cut a panel) with single-threaded products, one per panel or
    // part of one it covers (no barrier inside a product).
    let per_band = n.div_ceil(parts).next_multiple_of(16).min(n);
    let dst = SyncPtr(out.as_mut_ptr());
    let band = |j0: usize| {
        let j1 = n.min(j0 + per_band);
        let mut j = j0;
        while j < j1 {
            let p0 = j / PANEL * PANEL;
            let (panel, width) = w.panel(p0);
            let rows = (p0 + width).min(j1) - j;
            // SAFETY: the product is `rows × t` over `k`, for output features j..j + rows, all
            // in this panel (p0 ≤ j, j + rows ≤ p0 + width). The left operand reaches
            // `panel[kk·width + (j − p0) + i]` for kk < k, i < rows: below k·width, the panel's
            // length. The right operand reaches `x[tok·k + kk]` for tok < t: inside x (t·k,
            // checked above). The destination reaches `out[tok·n + j + i]` < t·n = out.len()
            // (checked above), as j + rows ≤ n. Bands are disjoint ranges of output features,
            // so no two threads write one element, and `out` does not alias the inputs.
            unsafe {
                gemm::gemm(
                    rows,
                    t,
                    k,
                    dst.get().add(j),
                    n as isize,
                    1,
                    true,
                    panel.as_ptr().add(j - p0),
                    width as isize,
                    1,
                    x.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            j += rows;
        }
    };
    if per_band >= n {
        band(0);
    } else {
        (0..n)
            .step_by(per_band)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(band);
    }
}

/// A pointer shared by threads that write disjoint parts of its buffer.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: the invariant its one user (`linear`) keeps: every thread reads and writes only its
// own disjoint band of columns of a buffer that outlives the parallel loop, and no thread
// touches another's band, so moving the pointer to another thread cannot race.
unsafe impl Send for SyncPtr {}
// SAFETY: as for `Send`: shared references only hand out the pointer, and the writes through
// it are disjoint.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Self-attention of one head over the `len` rows from `start`: `ctx = softmax(q·kᵀ·scale)·v`,
/// with q, k and v side by side in each `3h`-wide row of `qkv`.
#[allow(clippy::too_many_arguments)]
fn attention_head(
    qkv: &[f32],
    ctx: &mut [f32],
    scores: &mut [f32],
    start: usize,
    len: usize,
    h: usize,
    col: usize,
    d: usize,
    scale: f32,
    par: Parallelism,
) {
    let row = 3 * h;
    let base = start * row + col;
    assert!(base + (len - 1) * row + 2 * h + d <= qkv.len());
    assert!((start + len - 1) * h + col + d <= ctx.len() && len * len <= scores.len());
    // SAFETY: the asserts above bound every element the strided views reach; `scores` and
    // `ctx` are distinct buffers from `qkv`.
    unsafe {
        let q = qkv.as_ptr().add(base);
        let k = q.add(h);
        let v = q.add(2 * h);
        gemm::gemm(
            len,
            len,
            d,
            scores.as_mut_ptr(),
            1,
            len as isize,
            false,
            q,
            1,
            row as isize,
            k,
            row as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            par,
        );
        simd::softmax_rows(&mut scores[..len * len], len);
        gemm::gemm(
            len,
            d,
            len,
            ctx.as_mut_ptr().add(start * h + col),
            1,
            h as isize,
            false,
            scores.as_ptr(),
            1,
            len as isize,
            v,
            1,
            row as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Elementwise kernels written to vectorize, compiled twice: for AVX2+FMA (chosen at run time)
/// and for the baseline target.
mod simd {
    macro_rules! dispatch {
        ($(#[$doc:meta])* fn $name:ident / $fast:ident ($($arg:ident : $ty:ty),*) $body:block) => {
            $(#[$doc])*
            pub(crate) fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features this copy was compiled for.
                    return unsafe { $fast($($arg),*) };
                }
                inner($($arg),*);
                #[inline(always)]
                fn inner($($arg: $ty),*) $body
            }
            /// # Safety
            /// Callable only where the CPU has AVX2 and FMA (checked by the dispatcher).
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $fast($($arg: $ty),*) $body
        };
    }

    /// `e^x` to about 2 ulp for x in [-87, 88] (Cephes' polynomial), branch-free so it
    /// vectorizes.
    #[inline(always)]
    pub(crate) fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.0, 88.0);
        let k = (x * std::f32::consts::LOG2_E + 0.5).floor();
        let r = x - k * 0.693_359_4 + k * 2.121_944_4e-4;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let e = p * r * r + r + 1.0;
        e * f32::from_bits(((k as i32 + 127) << 23) as u32)
    }

    /// `erf(x)` with absolute error under 2e-7 (Abramowitz & Stegun 7.1.26), branch-free.
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t;
        let y = 1.0 - poly * exp(-a * a);
        y.copysign(x)
    }

    dispatch! {
        /// Exact GELU in place: `x · (1 + erf(x / √2)) / 2`.
        fn gelu_erf / gelu_erf_avx2 (xs: &mut [f32]) {
            for v in xs.iter_mut() {
                let x = *v;
                *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }

    dispatch! {
        /// The tanh approximation of GELU in place.
        fn gelu_tanh / gelu_tanh_avx2 (xs: &mut [f32]) {
            for v in xs.iter_mut() {
                let x = *v;
                let y = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                // tanh(y) = 1 - 2 / (e^{2y} + 1)
                let th = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
                *v = 0.5 * x * (1.0 + th);
            }
        }
    }

    dispatch! {
        /// Softmax of each `cols`-wide row of `m`, in place.
        fn softmax_rows / softmax_rows_avx2 (m: &mut [f32], cols: usize) {
            for row in m.chunks_exact_mut(cols) {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut lanes = [0f32; 8];
                let mut chunks = row.chunks_exact_mut(8);
                for c in &mut chunks {
                    for (l, v) in lanes.iter_mut().zip(c.iter_mut()) {
                        *v = exp(*v - max);
                        *l += *v;
                    }
                }
                let mut sum: f32 = lanes.iter().sum();
                for v in chunks.into_remainder() {
                    *v = exp(*v - max);
                    sum += *v;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }

    dispatch! {
        /// `x = layer_norm(x + residual)` over each `h`-wide row (biased variance, as PyTorch).
        fn layer_norm / layer_norm_avx2 (
            x: &mut [f32],
            residual: Option<&[f32]>,
            h: usize,
            gamma: &[f32],
            beta: &[f32],
            eps: f32
        ) {
            for (r, row) in x.chunks_exact_mut(h).enumerate() {
                if let Some(res) = residual {
                    row.iter_mut().zip(&res[r * h..(r + 1) * h]).for_each(|(a, b)| *a += b);
                }
                let mean = lane_sum(row, |v| v) / h as f32;
                let var = lane_sum(row, |v| (v - mean) * (v - mean)) / h as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                    *v = (*v - mean) * inv * g + b;
                }
            }
        }
    }

    /// The sum of `f(v)` over `row`, in eight independent lanes so it vectorizes.
    #[inline(always)]
    fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut lanes = [0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += f(v);
            }
        }
        lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn erf_ref(x: f64) -> f64 {
            // erf by its Taylor series, accurate for |x| <= 3 in f64.
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }

        #[test]
        fn exp_matches_std_within_a_few_ulp() {
            let mut worst = 0f64;
            let mut x = -87.0f32;
            while x < 88.0 {
                let got = exp(x) as f64;
                let want = (x as f64).exp();
                worst = worst.max(((got - want) / want).abs());
                x += 0.0137;
            }
            assert!(worst < 5e-7, "worst relative error {worst}");
            assert_eq!(exp(0.0), 1.0);
            assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        }

        #[test]
        fn gelu_matches_the_exact_definition() {
            let xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 / 1000.0).collect();
            let mut got = xs.clone();
            gelu_erf(&mut got);
            for (x, g) in xs.iter().zip(&got) {
                let x = *x as f64;
                let want = 0.5 * x * (1.0 + erf_ref(x / std::f64::consts::SQRT_2));
                assert!(
                    (*g as f64 - want).abs() < 5e-7,
                    "gelu({x}) = {g}, want {want}"
                );
            }
            let mut big = vec![-20.0f32, 20.0, 0.0];
            gelu_erf(&mut big);
            assert_eq!(big, vec![0.0, 20.0, 0.0]);
        }

        #[test]
        fn gelu_tanh_matches_its_definition() {
            let xs: Vec<f32> = (-6000..=6000).map(|i| i as f32 / 1000.0).collect();
            let mut got = xs.clone();
            gelu_tanh(&mut got);
            for (x, g) in xs.iter().zip(&got) {
                let x = *x as f64;
                let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                let want = 0.5 * x * (1.0 + y.tanh());
                assert!(
                    (*g as f64 - want).abs() < 2e-6,
                    "gelu_tanh({x}) = {g}, want {want}"
                );
            }
        }

        #[test]
        fn softmax_rows_sum_to_one_and_keep_order() {
            let cols = 13;
            let mut m: Vec<f32> = (0..cols * 3)
                .map(|i| (i as f32 * 0.37).sin() * 20.0)
                .collect();
            let orig = m.clone();
            softmax_rows(&mut m, cols);
            for (row, o) in m.chunks(cols).zip(orig.chunks(cols)) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6);
                let max = o.iter().cloned().fold(f32::MIN, f32::max);
                let z: f64 = o.iter().map(|&v| ((v - max) as f64).exp()).sum();
                for (p, v) in row.iter().zip(o) {
                    let want = ((v - max) as f64).exp() / z;
                    assert!((*p as f64 - want).abs() < 1e-6);
                }
            }
        }

        #[test]
        fn layer_norm_normalizes_each_row_with_the_residual() {
            let h = 19;
            let mut x: Vec<f32> = (0..h * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
            let res: Vec<f32> = (0..h * 2).map(|i| (i % 3) as f32).collect();
            let gamma = vec![2.0; h];
            let beta = vec![1.0; h];
            let want: Vec<f32> = x
                .chunks(h)
                .zip(res.chunks(h))
                .flat_map(|(a, b)| {
                    let s: Vec<f64> = a.iter().zip(b).map(|(a, b)| (a + b) as f64).collect();
                    let m = s.iter().sum::<f64>() / h as f64;
                    let v = s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / h as f64;
                    s.into_iter()
                        .map(move |x| ((x - m) / (v + 1e-12).sqrt() * 2.0 + 1.0) as f32)
                })
                .collect();
            layer_norm(&mut x, Some(&res), h, &gamma, &beta, 1e-12);
            for (g, w) in x.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_in_panels_matches_the_plain_product() {
        // 150 outputs: two full panels and a narrow one. Bands of 3 threads fall on panel
        // edges; those of 2 and 4 threads cut panels.
        let (t, k, n) = (7, 40, 150);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 32.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|j| j as f32 / 16.0).collect();
        let panels = Panels::new(&w, n, k);
        for par in [
            Parallelism::None,
            Parallelism::Rayon(2),
            Parallelism::Rayon(3),
            Parallelism::Rayon(4),
        ] {
            let mut out = vec![f32::NAN; t * n];
            linear(&x, &panels, &b, &mut out, t, par);
            for r in 0..t {
                for j in 0..n {
                    let want: f64 = b[j] as f64
                        + (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                            .sum::<f64>();
                    let got = out[r * n + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{par:?} [{r}, {j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

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
}
