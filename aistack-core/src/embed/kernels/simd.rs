//! Elementwise kernels written to vectorize, compiled twice: for AVX2+FMA (chosen at run time)
//! and for the baseline target.

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
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
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

dispatch! {
    /// `x = rms_norm(x) · gamma` over each `h`-wide row: `x / √(mean(x²) + eps) · gamma`
    /// (Qwen3's, Llama's).
    fn rms_norm / rms_norm_avx2 (x: &mut [f32], h: usize, gamma: &[f32], eps: f32) {
        for row in x.chunks_exact_mut(h) {
            let ms = lane_sum(row, |v| v * v) / h as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for (v, g) in row.iter_mut().zip(gamma) {
                *v = g * (*v * inv);
            }
        }
    }
}

dispatch! {
    /// SiLU in place: `x · σ(x)`.
    fn silu / silu_avx2 (xs: &mut [f32]) {
        for v in xs.iter_mut() {
            let x = *v;
            *v = x / (1.0 + exp(-x));
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

    #[test]
    fn rms_norm_and_silu_match_their_definitions() {
        let h = 11;
        let mut x: Vec<f32> = (0..h * 2).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let gamma: Vec<f32> = (0..h).map(|i| 0.5 + i as f32 / 10.0).collect();
        let want: Vec<f32> = x
            .chunks(h)
            .flat_map(|r| {
                let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
                let inv = 1.0 / (ms + 1e-6).sqrt();
                r.iter()
                    .zip(&gamma)
                    .map(move |(&v, &g)| (v as f64 * inv * g as f64) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        rms_norm(&mut x, h, &gamma, 1e-6);
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 50.0).collect();
        let mut got = xs.clone();
        silu(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!(
                (*g as f64 - want).abs() < 2e-6,
                "silu({x}) = {g}, want {want}"
            );
        }
    }
}
