//! Matrix products against a frozen weight on the CPU, for [`crate::ops`].
//!
//! candle hands each matmul to gemm whole, and gemm then repacks the weight on the calling
//! thread before its workers start (a weight seen as `Wᵀ` has the wrong stride for its
//! micro-kernel): on SmolLM2 that serial repacking was a tenth of the training step while the
//! other core waited. Here each product is split by output columns into one block per rayon
//! thread, and each block is a single-threaded gemm call that packs its own part of the
//! weight, so both cores pack and multiply at once. The result is written once, straight
//! into the buffer the graph keeps, and a product can add into an existing buffer.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::fused::Fl;

/// Below this many multiply-adds a product runs as one block: splitting costs more than it
/// saves.
const SPLIT_MIN_WORK: usize = 1 << 18;
/// Column blocks start on a multiple of this (one AVX-512 register of f32).
const COLUMN_ALIGN: usize = 16;

/// How the weight enters the product `x · op(W)`.
#[derive(Clone, Copy)]
pub(crate) enum Weight<'a, T> {
    /// `W` is (n, k) row-major and the product uses `Wᵀ`: a linear layer's forward.
    Transposed(&'a [T]),
    /// `W` is (k, n) row-major and the product uses it as it is: a linear layer's backward.
    AsIs(&'a [T]),
}

impl<T> Weight<'_, T> {
    fn data(&self) -> &[T] {
        match self {
            Self::Transposed(w) | Self::AsIs(w) => w,
        }
    }

    /// (row stride, column stride) of `op(W)` as a (k, n) matrix.
    fn strides(&self, k: usize, n: usize) -> (usize, usize) {
        match self {
            Self::Transposed(_) => (1, k),
            Self::AsIs(_) => (n, 1),
        }
    }
}

/// A raw pointer that rayon may carry: each task writes only its own columns.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Through a method, so that closures capture the wrapper and not the bare pointer.
    fn get(self) -> *mut T {
        self.0
    }
}

/// `dst = s · x · op(W)` (or `dst += …` with `accumulate`), where `x` is (m, k), `op(W)` is
/// (k, n) and `dst` is (m, n), all row-major and contiguous.
pub(crate) fn matmul_into<T: Fl>(
    dst: &mut [T],
    x: &[T],
    w: Weight<'_, T>,
    (m, k, n): (usize, usize, usize),
    s: T,
    accumulate: bool,
) {
    assert_eq!(x.len(), m * k, "cpu_gemm: x is not (m, k)");
    assert_eq!(w.data().len(), k * n, "cpu_gemm: the weight is not (k, n)");
    assert_eq!(dst.len(), m * n, "cpu_gemm: dst is not (m, n)");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::from_f64(0.0));
        }
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let block = if threads == 1 || m * k * n < SPLIT_MIN_WORK {
        n
    } else {
        n.div_ceil(threads).next_multiple_of(COLUMN_ALIGN).min(n)
    };
    let (rs, cs) = w.strides(k, n);
    let (dst_ptr, w_ptr) = (
        SendPtr(dst.as_mut_ptr()),
        SendPtr(w.data().as_ptr().cast_mut()),
    );
    let run = |b: usize| {
        let first = b * block;
        let cols = block.min(n - first);
        // SAFETY: the block's columns [first, first + cols) lie inside dst (m × n, row stride
        // n) and inside op(W) (k × n with strides rs, cs), as the asserts above established;
        // blocks are disjoint, so no two tasks write the same element; gemm reads x and W only.
        unsafe {
            gemm_raw(
                dst_ptr.get().add(first),
                n,
                (m, cols, k),
                (x.as_ptr(), k, 1),
                (w_ptr.get().add(first * cs).cast_const(), rs, cs as isize),
                s,
                accumulate,
            );
        }
    };
    let blocks = n.div_ceil(block);
    if blocks == 1 {
        run(0);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

/// `s · x · op(W)` in a new buffer.
pub(crate) fn matmul<T: Fl>(x: &[T], w: Weight<'_, T>, mkn: (usize, usize, usize), s: T) -> Vec<T> {
    let (m, _, n) = mkn;
    let mut dst = vec![T::from_f64(0.0); m * n];
    matmul_into(&mut dst, x, w, mkn, s, false);
    dst
}

/// A matrix in a slice: element (i, j) at `i · rs + j · cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> View<'a, T> {
    /// The first `rows · cols` elements of `data`, row-major.
    pub(crate) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The same elements read as the transpose.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element the view names lies inside its slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = s · a · b` (or `dst += …` with `accumulate`) on the calling thread, where `dst` is
/// row-major with row stride `dst_rs`: for kernels that split their work themselves.
pub(crate) fn gemm_serial<T: Fl>(
    dst: &mut [T],
    dst_rs: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    s: T,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "cpu_gemm: inner dimensions differ");
    assert!(
        a.in_bounds() && b.in_bounds(),
        "cpu_gemm: a view leaves its slice"
    );
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len(),
        "cpu_gemm: dst is too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(T::from_f64(0.0));
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every element gemm reads inside `a` and `b` and every
    // element it writes inside `dst`.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            dst_rs,
            (m, n, k),
            (a.data.as_ptr(), a.rs, a.cs as isize),
            (b.data.as_ptr(), b.rs, b.cs as isize),
            s,
            accumulate,
        );
    }
}

/// One single-threaded gemm call: `dst = s · a · b` (or `dst += …`), `dst` row-major with row
/// stride `dst_rs`, `a` (m × k) and `b` (k × n) given as (pointer, row stride, column stride).
///
/// # Safety
/// Every element the strides name must lie in memory the pointers may read (a, b) or write
/// (dst), and no other thread may write the elements of dst this call writes.
unsafe fn gemm_raw<T: Fl>(
    dst: *mut T,
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (*const T, usize, isize),
    (b, b_rs, b_cs): (*const T, usize, isize),
    s: T,
    accumulate: bool,
) {
    // SAFETY: passed on from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a,
            a_cs,
            a_rs as isize,
            b,
            b_cs,
            b_rs as isize,
            T::from_f64(1.0),
            s,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], w: &[f64], transposed: bool, (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let wv = if transposed {
                        w[j * k + l]
                    } else {
                        w[l * n + j]
                    };
                    y[i * n + j] += x[i * k + l] * wv;
                }
            }
        }
        y
    }

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i * 31 + seed * 17) % 23) as f64 - 11.0) / 7.0)
            .collect()
    }

    #[test]
    fn split_products_match_the_textbook_product_for_both_weight_layouts() {
        // Sizes above the split threshold with column counts that do not divide evenly.
        for (m, k, n) in [(3, 5, 4), (70, 96, 200), (64, 130, 97), (1, 300, 1000)] {
            let x = data(m * k, 1);
            let w = data(k * n, 2);
            for transposed in [true, false] {
                let weight = if transposed {
                    Weight::Transposed(&w[..])
                } else {
                    Weight::AsIs(&w[..])
                };
                let got = matmul(&x, weight, (m, k, n), 1.0);
                let want = naive(&x, &w, transposed, (m, k, n));
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-9,
                        "({m},{k},{n}) {transposed}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn serial_products_read_transposed_views_and_write_strided_rows() {
        let (m, k, n) = (5, 7, 6);
        let a = data(k * m, 6); // stored (k, m): read as its transpose
        let b = data(k * n, 7);
        let mut dst = vec![9.0; m * (n + 3)];
        gemm_serial(
            &mut dst,
            n + 3,
            View::rows(&a, k, m).t(),
            View::rows(&b, k, n),
            2.0,
            false,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|l| 2.0 * a[l * m + i] * b[l * n + j]).sum();
                assert!((dst[i * (n + 3) + j] - want).abs() < 1e-9);
            }
            assert_eq!(dst[i * (n + 3) + n..(i + 1) * (n + 3)], [9.0; 3]);
        }
    }

    #[test]
    fn accumulating_adds_the_scaled_product_to_what_is_there() {
        let (m, k, n) = (40, 70, 90);
        let x = data(m * k, 3);
        let w = data(n * k, 4);
        let mut dst = data(m * n, 5);
        let before = dst.clone();
        matmul_into(&mut dst, &x, Weight::Transposed(&w), (m, k, n), 0.5, true);
        let p = naive(&x, &w, true, (m, k, n));
        for ((d, b), p) in dst.iter().zip(&before).zip(&p) {
            assert!((d - (b + 0.5 * p)).abs() < 1e-9);
        }
    }
}
