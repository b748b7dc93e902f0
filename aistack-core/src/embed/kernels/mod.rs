//! The shared pieces every architecture's forward pass is built from: linear layers over weights
//! in panels ([`linear`]), attention with its position schemes and masks ([`attention`]), rotary
//! positions ([`rotary`]), and vectorized elementwise kernels with run-time SIMD dispatch
//! ([`simd`]). An architecture wires these together; none copies them.
//!
//! Matrix products go through `gemm`, the kernel crate candle's CPU backend uses.

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod rotary;
pub(crate) mod simd;

use gemm::Parallelism;

/// `gemm`'s parallelism for `threads` threads.
pub(crate) fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Grows `v` to at least `n` floats (never shrinks it) and returns its first `n`.
pub(crate) fn take(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}
