//! Self-attention of one head over one packed sequence, and the position schemes that act inside
//! it (an additive bias by relative position, as MPNet and T5 use).

use gemm::Parallelism;

use super::simd;

/// Where one head's query, key and value sit in the projection rows, and where its context goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// Width of a row of the projections buffer (`3h` for fused q, k, v of equal width).
    pub row: usize,
    /// Columns of the head's query, key and value in that row.
    pub q: usize,
    pub k: usize,
    pub v: usize,
    /// Width of a row of the context buffer, and the head's column in it.
    pub ctx_row: usize,
    pub ctx: usize,
    /// Head width.
    pub d: usize,
}

impl Head {
    /// Head `n` of `heads` when q, k and v are of equal width `h`, side by side in each `3h`
    /// row (BERT's fused projection).
    pub(crate) fn fused(n: usize, h: usize, d: usize) -> Self {
        Self {
            row: 3 * h,
            q: n * d,
            k: h + n * d,
            v: 2 * h + n * d,
            ctx_row: h,
            ctx: n * d,
            d,
        }
    }
}

/// Which keys a query may attend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mask {
    /// Every key of the sequence (encoders).
    Full,
    /// Keys at or before the query (decoders).
    Causal,
    /// Keys within this distance of the query, either side (ModernBERT's local layers).
    Window(usize),
}

/// Self-attention of one head over the `len` rows from `start`:
/// `ctx = softmax(q·kᵀ·scale + B, masked)·v`. `bias`, when given, holds the head's additive bias
/// by relative position `j − i` at index `j − i + len − 1` (`2·len − 1` values).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_head(
    qkv: &[f32],
    ctx: &mut [f32],
    scores: &mut [f32],
    start: usize,
    len: usize,
    head: Head,
    scale: f32,
    bias: Option<&[f32]>,
    mask: Mask,
    par: Parallelism,
) {
    let Head { row, d, .. } = head;
    let base = start * row;
    let widest = head.q.max(head.k).max(head.v);
    assert!(widest + d <= row && head.ctx + d <= head.ctx_row);
    assert!(base + (len - 1) * row + widest + d <= qkv.len());
    assert!((start + len - 1) * head.ctx_row + head.ctx + d <= ctx.len());
    assert!(len * len <= scores.len());
    assert!(bias.is_none_or(|b| b.len() == 2 * len - 1));
    // SAFETY: the asserts above bound every element the strided views reach (each of q, k and
    // v is `d` columns of `len` rows of `row` floats inside `qkv`); `scores` is a distinct
    // buffer from `qkv`.
    unsafe {
        let q = qkv.as_ptr().add(base + head.q);
        let k = qkv.as_ptr().add(base + head.k);
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
    }
    let scores = &mut scores[..len * len];
    if let Some(bias) = bias {
        for (i, r) in scores.chunks_exact_mut(len).enumerate() {
            r.iter_mut()
                .zip(&bias[len - 1 - i..])
                .for_each(|(s, b)| *s += b);
        }
    }
    match mask {
        Mask::Full => {}
        Mask::Causal => {
            for (i, r) in scores.chunks_exact_mut(len).enumerate() {
                r[i + 1..].fill(f32::NEG_INFINITY);
            }
        }
        Mask::Window(w) => {
            for (i, r) in scores.chunks_exact_mut(len).enumerate() {
                r[..i.saturating_sub(w)].fill(f32::NEG_INFINITY);
                r[(i + w + 1).min(len)..].fill(f32::NEG_INFINITY);
            }
        }
    }
    simd::softmax_rows(scores, len);
    // SAFETY: as above: `v` is `d` columns of `len` rows inside `qkv`, the destination the
    // head's `d` columns of `len` rows of `ctx`, both bounded by the asserts; `ctx` is distinct
    // from `qkv` and `scores`.
    unsafe {
        let v = qkv.as_ptr().add(base + head.v);
        gemm::gemm(
            len,
            d,
            len,
            ctx.as_mut_ptr().add(start * head.ctx_row + head.ctx),
            1,
            head.ctx_row as isize,
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

/// The bucket of relative position `rel` (`key − query`) in bidirectional relative attention
/// (MPNet, T5): half the buckets for each direction, exact below `buckets / 4`, logarithmic up to
/// `max_distance`. Computed in `f32` as PyTorch does, so bucket edges fall where the reference's do.
pub(crate) fn relative_bucket(rel: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let mut n = -rel;
    let mut ret = 0;
    if n < 0 {
        ret += half;
        n = -n;
    }
    let exact = half / 2;
    let n = n as usize;
    if n < exact {
        return ret + n;
    }
    let scale = ((max_distance as f64) / (exact as f64)).ln() as f32;
    let large = exact + ((n as f32 / exact as f32).ln() / scale * (half - exact) as f32) as usize;
    ret + large.min(half - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_match_mpnets_table() {
        // Values of transformers' MPNetEncoder.relative_position_bucket (32 buckets, 128).
        let cases = [
            (0, 0),
            (-1, 1),
            (-7, 7),
            (-8, 8),
            (-11, 8),
            (-12, 9),
            (-16, 10),
            (-32, 12),
            (-64, 14),
            (-127, 15),
            (-500, 15),
            (1, 17),
            (7, 23),
            (8, 24),
            (16, 26),
            (127, 31),
            (400, 31),
        ];
        for (rel, want) in cases {
            assert_eq!(relative_bucket(rel, 32, 128), want, "rel {rel}");
        }
    }

    #[test]
    fn the_bias_is_added_by_relative_position() {
        // One head, d = 1, q = k = 0: scores are all zero, so the softmax is the bias's.
        let (len, h) = (3, 1);
        let mut qkv = vec![0f32; len * 3 * h];
        for r in 0..len {
            qkv[r * 3 + 2] = r as f32; // v = position
        }
        let bias: Vec<f32> = vec![0.0, 0.0, 50.0, 0.0, 0.0]; // only j − i = 0 counts
        let mut ctx = vec![0f32; len * h];
        let mut scores = vec![0f32; len * len];
        let head = Head::fused(0, h, 1);
        attention_head(
            &qkv,
            &mut ctx,
            &mut scores,
            0,
            len,
            head,
            1.0,
            Some(&bias),
            Mask::Full,
            Parallelism::None,
        );
        for (i, c) in ctx.iter().enumerate() {
            assert!((c - i as f32).abs() < 1e-5, "row {i}: {c}");
        }
    }

    #[test]
    fn masks_leave_out_the_keys_they_should() {
        // q = k = 0: every allowed key weighs the same, so ctx is the mean of the allowed v.
        let (len, h) = (5, 1);
        let mut qkv = vec![0f32; len * 3];
        for r in 0..len {
            qkv[r * 3 + 2] = r as f32;
        }
        let run = |mask| {
            let mut ctx = vec![0f32; len];
            let mut scores = vec![0f32; len * len];
            attention_head(
                &qkv,
                &mut ctx,
                &mut scores,
                0,
                len,
                Head::fused(0, h, 1),
                1.0,
                None,
                mask,
                Parallelism::None,
            );
            ctx
        };
        let mean = |a: usize, b: usize| (a..=b).sum::<usize>() as f32 / (b - a + 1) as f32;
        let full = run(Mask::Full);
        let causal = run(Mask::Causal);
        let window = run(Mask::Window(1));
        for i in 0..len {
            assert!((full[i] - mean(0, len - 1)).abs() < 1e-5);
            assert!((causal[i] - mean(0, i)).abs() < 1e-5, "causal row {i}");
            let (a, b) = (i.saturating_sub(1), (i + 1).min(len - 1));
            assert!((window[i] - mean(a, b)).abs() < 1e-5, "window row {i}");
        }
    }
}
