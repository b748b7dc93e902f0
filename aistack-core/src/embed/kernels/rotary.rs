//! Rotary position embeddings (RoPE) as transformers computes them: the two halves of each head
//! rotated by `position · θ^(−2i/d)` (`rotate_half`, not interleaved), in `f32`.

/// The rotation angles of one head width and base.
pub(crate) struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    /// For heads of width `d` (even) and base `theta`: `1 / θ^(2i/d)` for `i < d/2`, in `f32`
    /// as PyTorch computes it.
    pub(crate) fn new(d: usize, theta: f64) -> Self {
        let base = theta as f32;
        let inv_freq = (0..d / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32))
            .collect();
        Self { inv_freq }
    }

    /// gte's static NTK scaling (`rope_scaling: {type: ntk, factor}`): the base multiplied by
    /// `factor`, then every frequency divided by `factor^(2/d)`, as its modeling code does once
    /// its cache outgrows the trained positions (at load, since it is built for `factor` times
    /// as many).
    pub(crate) fn ntk(d: usize, theta: f64, factor: f64) -> Self {
        let mut r = Self::new(d, theta * factor);
        let shrink = factor.powf(2.0 / d as f64) as f32;
        r.inv_freq.iter_mut().for_each(|f| *f /= shrink);
        r
    }

    /// The head width it rotates.
    pub(crate) fn width(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// `cos` and `sin` for positions `0..len`: `len × d/2` each.
    pub(crate) fn table(&self, len: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// Rotates one head vector `x` (`d` wide) at the position whose `cos`/`sin` rows (`d/2`
    /// each) are given: `x·cos + rotate_half(x)·sin`.
    #[inline]
    pub(crate) fn apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = x.len() / 2;
        let (a, b) = x.split_at_mut(half);
        for (((x1, x2), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
            let (u, v) = (*x1, *x2);
            *x1 = u * c - v * s;
            *x2 = v * c + u * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_norm_and_relative_angles() {
        let r = Rotary::new(8, 10_000.0);
        let (cos, sin) = r.table(5);
        assert_eq!(cos.len(), 5 * 4);
        // Position 0 is the identity.
        let mut x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        Rotary::apply(&mut x, &cos[..4], &sin[..4]);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        // q·k depends only on the distance between positions.
        let q0 = [0.3f32, -1.0, 0.5, 2.0, 1.5, 0.1, -0.7, 0.9];
        let k0 = [1.1f32, 0.4, -0.2, 0.8, -1.3, 0.6, 0.25, -0.5];
        let dot_at = |pq: usize, pk: usize| {
            let (mut q, mut k) = (q0, k0);
            Rotary::apply(&mut q, &cos[pq * 4..pq * 4 + 4], &sin[pq * 4..pq * 4 + 4]);
            Rotary::apply(&mut k, &cos[pk * 4..pk * 4 + 4], &sin[pk * 4..pk * 4 + 4]);
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((dot_at(1, 3) - dot_at(2, 4)).abs() < 1e-5);
        assert!((dot_at(1, 3) - dot_at(1, 1)).abs() > 1e-3);
        let mut y = q0;
        Rotary::apply(&mut y, &cos[12..16], &sin[12..16]);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&y) - n(&q0)).abs() < 1e-4);
    }
}
