//! Linear layers over weights kept in the matrix kernels' own panel layout.

use gemm::Parallelism;
use rayon::prelude::*;

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
pub(crate) struct Panels {
    data: Vec<f32>,
    /// Output features.
    n: usize,
    /// Input features.
    k: usize,
}

impl Panels {
    /// Rearranges `w`, `[n, k]` row-major.
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
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
pub(crate) fn linear(
    x: &[f32],
    w: &Panels,
    b: &[f32],
    out: &mut [f32],
    t: usize,
    par: Parallelism,
) {
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
}
