//! Whether a quantized "fast mode" can beat the f32 forward pass on this CPU (issue 3): the
//! peak multiply-accumulate rate of one core for f32 FMA, int8 (`vpmaddubsw`) and int16
//! (`vpmaddwd`) instruction chains, then candle's quantized matmul (Q8_0 weights) against
//! candle's f32 matmul on the encoder's product shapes, with the quantized result's error.
//!
//! Usage: `quant-probe` (no arguments; runs for about a minute).

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

#[cfg(target_arch = "x86_64")]
mod peak {
    //! Chains of 12 independent accumulators per instruction kind, so throughput (not
    //! latency) bounds each loop. Inputs are re-read through `read_volatile` every step, so
    //! the compiler cannot hoist the products out of the loop.
    use std::arch::x86_64::*;

    const CHAINS: usize = 12;

    /// f32 FMA: 8 multiply-accumulates per instruction.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma(steps: usize) -> f32 {
        let src = [_mm256_set1_ps(1.0001); CHAINS];
        let b = _mm256_set1_ps(0.9999);
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..steps {
            for (a, s) in acc.iter_mut().zip(&src) {
                *a = _mm256_fmadd_ps(std::ptr::read_volatile(s), b, *a);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        _mm256_cvtss_f32(sum)
    }

    /// int8 as AVX2 has it (u8 × i8 pairs to i16, widened to i32, added): 32 per step.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn int8(steps: usize) -> i32 {
        let src = [_mm256_set1_epi8(3); CHAINS];
        let b = _mm256_set1_epi8(-2);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..steps {
            for (a, s) in acc.iter_mut().zip(&src) {
                let pairs = _mm256_maddubs_epi16(std::ptr::read_volatile(s), b);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
            }
        }
        let mut sum = _mm256_setzero_si256();
        for a in acc {
            sum = _mm256_add_epi32(sum, a);
        }
        _mm256_extract_epi32::<0>(sum)
    }

    /// int16 pairs to i32 (`vpmaddwd`), added: 16 per step.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn int16(steps: usize) -> i32 {
        let src = [_mm256_set1_epi16(3); CHAINS];
        let b = _mm256_set1_epi16(-2);
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..steps {
            for (a, s) in acc.iter_mut().zip(&src) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(std::ptr::read_volatile(s), b));
            }
        }
        let mut sum = _mm256_setzero_si256();
        for a in acc {
            sum = _mm256_add_epi32(sum, a);
        }
        _mm256_extract_epi32::<0>(sum)
    }

    /// Prints the three rates in GMAC/s for one core, or says why they were skipped.
    pub fn report() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            println!("peak MAC rates: skipped (no AVX2+FMA)");
            return;
        }
        let steps = 50_000_000usize;
        let rate = |macs_per_step: usize, run: &dyn Fn() -> i64| {
            let t = std::time::Instant::now();
            std::hint::black_box(run());
            (steps * CHAINS * macs_per_step) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        // SAFETY (all three): AVX2 and FMA were detected above, which is all each one needs.
        let f = rate(8, &|| unsafe { fma(std::hint::black_box(steps)) } as i64);
        // SAFETY: as above.
        let i8r = rate(32, &|| unsafe { int8(std::hint::black_box(steps)) } as i64);
        // SAFETY: as above.
        let i16r = rate(16, &|| unsafe { int16(std::hint::black_box(steps)) } as i64);
        println!(
            "peak GMAC/s on one core: f32 FMA {f:.1}, int8 maddubs+madd+add {i8r:.1}, int16 madd+add {i16r:.1}"
        );
    }
}

fn main() -> candle_core::Result<()> {
    #[cfg(target_arch = "x86_64")]
    peak::report();
    #[cfg(not(target_arch = "x86_64"))]
    println!("peak MAC rates: skipped (not x86_64)");

    // A batch of 32 corpus sentences packs to about 1,072 tokens; one short sentence is ~34.
    let dev = Device::Cpu;
    let shapes = [
        (1072usize, 384usize, 1536usize),
        (1072, 1536, 384),
        (34, 384, 1536),
    ];
    for (m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev)?;
        let wt = w.t()?.contiguous()?;
        let q8 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let exact = x.matmul(&wt)?;
        let norm = exact.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
        let flops = 2.0 * (m * k * n) as f64;
        let reps = 20;
        let product = |quantized: bool| {
            if quantized {
                q8.forward(&x)
            } else {
                x.matmul(&wt)
            }
        };
        for (name, quantized) in [("f32", false), ("q8_0", true)] {
            product(quantized)?;
            let t = Instant::now();
            let mut out = product(quantized)?;
            for _ in 1..reps {
                out = product(quantized)?;
            }
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            let err = (out - &exact)?
                .sqr()?
                .mean_all()?
                .to_scalar::<f32>()?
                .sqrt()
                / norm;
            println!(
                "{m}x{k}x{n} {name}: {:.2} ms, {:.1} GFLOP/s, relative RMS error {err:.1e}",
                secs * 1e3,
                flops / secs / 1e9
            );
        }
    }
    Ok(())
}
