//! The CPU device: host storage ([`CpuData`]) and the reference kernel of
//! every op, one file per op family. They are plain Rust, simple and
//! obviously correct where speed would cost clarity (the oracle of the
//! conformance suite and `WGFLOW_CROSS_CHECK`), threaded with rayon and
//! cache-blocked (the `gemm` crate) where the CPU device needs speed.
//! f16 ops compute in f32 (the caller casts around them).
//!
//! Part of [`crate::runtime`]: [`crate::runtime::CpuBackend`] implements
//! [`crate::runtime::Backend`] with these kernels, each of which follows the
//! per-element semantics in [`crate::core::op`]. Its GPU counterpart is
//! [`crate::runtime::wgpu`].

pub(crate) mod arena;
mod binary;
mod conv;
mod creation;
mod layout;
mod matmul;
mod optim;
mod pool;
mod reduce;
mod softmax;
mod unary;

pub(crate) use creation::{from_cpu_data, to_cpu_data};
pub(crate) use unary::apply3;

use super::{Operand, Storage};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::{Family, Op};
use crate::core::shape::numel;
use half::{bf16, f16};
use std::sync::Arc;

/// Reserves room for `n` more elements in `v`, or `Error::OutOfMemory` on
/// the CPU device (instead of the allocator aborting the process).
pub(crate) fn reserve<T>(v: &mut Vec<T>, n: usize, op: &'static str) -> Result<()> {
    v.try_reserve_exact(n)
        .map_err(|_| out_of_memory(n.saturating_mul(size_of::<T>()), op))
}

fn out_of_memory(bytes: usize, op: &'static str) -> crate::core::error::Error {
    log::debug!("{op}: {bytes} bytes do not fit on the CPU device");
    crate::core::error::Error::OutOfMemory {
        device: format!("cpu ({op})"),
        requested: bytes as u64,
        in_use: 0,
        limit: 0,
    }
}

/// Whether the host can allocate an output of `n` elements (computed in f64
/// by the reference kernels, so 8 bytes each): the probe memory is returned
/// at once, untouched. `Error::OutOfMemory` where it cannot.
pub(crate) fn probe(n: usize, op: &'static str) -> Result<()> {
    let bytes = n.saturating_mul(8);
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes).map_err(|_| out_of_memory(bytes, op))
}

/// Keeps freed host memory in the process for the next op. Every CPU op
/// returns a fresh vector of its result; glibc's defaults hand blocks of
/// a few MiB back to the kernel on free and take them again with page
/// faults and zeroing on the next allocation, which cost more than the
/// arithmetic of an elementwise op (the eager MNIST CNN step ran 1.5x
/// slower for it). Held back: up to 512 MiB of free heap; blocks over 64
/// MiB still come from and go back to the kernel directly. A user's own
/// `MALLOC_*` settings win.
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if !std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
            // SAFETY: mallopt only sets allocator parameters; it is safe to
            // call at any time from any thread.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        }
    });
}

/// Runs the reference kernel of `op` (see `Backend::run`).
pub(crate) fn run(op: &Op, x: &[Operand], shape: &[usize], dtype: DType) -> Result<Vec<Storage>> {
    keep_freed_memory();
    if numel(shape) > 1 << 24 {
        probe(numel(shape), op.name())?;
    }
    let one = |d: CpuData| Ok(vec![Storage::Cpu(Arc::new(d))]);
    match op.family() {
        Family::Unary => one(unary::cpu(op, x, shape, dtype)?),
        Family::Binary => one(binary::cpu(op, x, shape, dtype)?),
        Family::Layout => one(layout::cpu(op, x, shape, dtype)?),
        Family::MatMul => one(matmul::cpu(op, x, shape, dtype)?),
        Family::Conv => one(conv::cpu(op, x, shape, dtype)?),
        Family::Pool => one(pool::cpu(op, x, shape, dtype)?),
        Family::Reduce => one(reduce::cpu(op, x, shape, dtype)?),
        Family::Softmax => one(softmax::cpu(op, x, shape, dtype)?),
        Family::Creation => one(creation::cpu(op)?),
        Family::Optim => {
            let Op::Optimizer(u) = op else { unreachable!() };
            Ok(optim::cpu(u, x, dtype)
                .into_iter()
                .map(|d| Storage::Cpu(Arc::new(d)))
                .collect())
        }
    }
}

/// A flat, row-major host vector of one dtype: the CPU device's storage, and
/// how values enter and leave any device
/// ([`Tensor::from_data`](crate::Tensor::from_data),
/// [`Tensor::to_data`](crate::Tensor::to_data)).
#[derive(Clone, Debug, PartialEq)]
pub enum CpuData {
    /// [`DType::F32`] values.
    F32(Vec<f32>),
    /// [`DType::F16`] values.
    F16(Vec<f16>),
    /// [`DType::F64`] values.
    F64(Vec<f64>),
    /// [`DType::BF16`] values.
    BF16(Vec<bf16>),
    /// [`DType::I32`] values.
    I32(Vec<i32>),
    /// [`DType::Bool`] values.
    Bool(Vec<bool>),
}

/// Applies an expression to the vector inside any variant, rebuilding the
/// same variant: `map_data!(d, v => v.iter().rev().copied().collect())`.
macro_rules! map_data {
    ($d:expr, $v:ident => $e:expr) => {
        match $d {
            $crate::runtime::cpu::CpuData::F32($v) => $crate::runtime::cpu::CpuData::F32($e),
            $crate::runtime::cpu::CpuData::F16($v) => $crate::runtime::cpu::CpuData::F16($e),
            $crate::runtime::cpu::CpuData::F64($v) => $crate::runtime::cpu::CpuData::F64($e),
            $crate::runtime::cpu::CpuData::BF16($v) => $crate::runtime::cpu::CpuData::BF16($e),
            $crate::runtime::cpu::CpuData::I32($v) => $crate::runtime::cpu::CpuData::I32($e),
            $crate::runtime::cpu::CpuData::Bool($v) => $crate::runtime::cpu::CpuData::Bool($e),
        }
    };
}
pub(crate) use map_data;

impl CpuData {
    /// The dtype of the variant.
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
            CpuData::F64(_) => DType::F64,
            CpuData::BF16(_) => DType::BF16,
            CpuData::I32(_) => DType::I32,
            CpuData::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
            CpuData::F64(v) => v.len(),
            CpuData::BF16(v) => v.len(),
            CpuData::I32(v) => v.len(),
            CpuData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (`false` for bool) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(vec![0.0; n]),
            DType::F16 => CpuData::F16(vec![f16::ZERO; n]),
            DType::F64 => CpuData::F64(vec![0.0; n]),
            DType::BF16 => CpuData::BF16(vec![bf16::ZERO; n]),
            DType::I32 => CpuData::I32(vec![0; n]),
            DType::Bool => CpuData::Bool(vec![false; n]),
        }
    }

    /// Every element as f64 (for comparisons and printing).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            CpuData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuData::F64(v) => v.clone(),
            CpuData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Every element as f64 into `out` (as long as this).
    pub(crate) fn write_f64(&self, out: &mut [f64]) {
        debug_assert_eq!(out.len(), self.len(), "write_f64 into a buffer of another length");
        fn each<A: Copy>(v: &[A], out: &mut [f64], f: impl Fn(A) -> f64) {
            for (o, &x) in out.iter_mut().zip(v) {
                *o = f(x);
            }
        }
        match self {
            CpuData::F32(v) => each(v, out, |x| x as f64),
            CpuData::F16(v) => each(v, out, |x| x.to_f64()),
            CpuData::F64(v) => each(v, out, |x| x),
            CpuData::BF16(v) => each(v, out, |x| x.to_f64()),
            CpuData::I32(v) => each(v, out, |x| x as f64),
            CpuData::Bool(v) => each(v, out, |x| x as u8 as f64),
        }
    }

    /// Builds `dtype` data from f64 values (rounding as the dtype does).
    pub fn from_f64(dtype: DType, v: &[f64]) -> CpuData {
        arena::from_f64(dtype, v)
    }

    /// Device layout: 32-bit words for f32/i32/bool, packed halves for f16
    /// and bf16.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            CpuData::F32(v) => bytemuck::cast_slice(v).to_vec(),
            CpuData::F16(v) => bytemuck::cast_slice(v).to_vec(),
            CpuData::F64(v) => bytemuck::cast_slice(v).to_vec(),
            CpuData::BF16(v) => bytemuck::cast_slice(v).to_vec(),
            CpuData::I32(v) => bytemuck::cast_slice(v).to_vec(),
            CpuData::Bool(v) => v.iter().flat_map(|&b| (b as u32).to_le_bytes()).collect(),
        }
    }

    /// The inverse of [`to_bytes`](Self::to_bytes): `n` values of `dtype`
    /// from the first `n * dtype.size()` bytes of `b` (bool: any non-zero
    /// 32-bit word is `true`). Panics if `b` is shorter.
    pub fn from_bytes(dtype: DType, n: usize, b: &[u8]) -> CpuData {
        let b = &b[..n * dtype.size()];
        match dtype {
            DType::F32 => CpuData::F32(bytemuck::pod_collect_to_vec(b)),
            DType::F16 => CpuData::F16(bytemuck::pod_collect_to_vec(b)),
            DType::F64 => CpuData::F64(bytemuck::pod_collect_to_vec(b)),
            DType::BF16 => CpuData::BF16(bytemuck::pod_collect_to_vec(b)),
            DType::I32 => CpuData::I32(bytemuck::pod_collect_to_vec(b)),
            DType::Bool => CpuData::Bool(b.chunks_exact(4).map(|w| w != [0, 0, 0, 0]).collect()),
        }
    }

    /// Conversion between dtypes with TensorFlow's rules: float to int
    /// truncates toward zero (NaN, infinities and out-of-range values give
    /// `i32::MIN`, as TF's x86 kernel), anything to bool is `!= 0`.
    pub fn cast(&self, to: DType) -> CpuData {
        if self.dtype() == to {
            return self.clone();
        }
        arena::cast(self, to)
    }
}

thread_local! {
    static IN_GEMM_CRATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Clears [`IN_GEMM_CRATE`] when the call returns or unwinds.
struct Unset;

impl Drop for Unset {
    fn drop(&mut self) {
        IN_GEMM_CRATE.with(|f| f.set(false));
    }
}

/// Whether this thread is inside a call of the `gemm` crate, which
/// allocates its packing buffers per call. For tests that count the
/// allocations of a traced step on the CPU device (safe to call from a
/// global allocator: it neither allocates nor blocks).
#[doc(hidden)]
pub fn in_gemm_crate() -> bool {
    IN_GEMM_CRATE.with(|f| f.get())
}

/// Whether the CPU has AVX2 and FMA, for which hot loops have variants
/// compiled (`#[target_feature]`) beside the baseline build's SSE2 ones.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
}

/// Whether the CPU has AVX-512F besides AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f"))
}

/// Strided GEMM for the CPU reference: C = A·B + beta·C with row and column
/// strides for every operand.
pub trait Gemm: Float {
    /// # Safety
    /// Every element addressed by the dims and strides must lie inside the
    /// allocations behind the pointers.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// [`Gemm::gemm`] split over rayon's threads: blocks of C's rows, or of
    /// its columns where C is wider than tall, each a single-threaded GEMM
    /// writing its own block. Small products stay on the calling thread.
    /// One thread pool for every CPU kernel: nested pools only spin against
    /// each other on a machine with few cores.
    ///
    /// # Safety
    /// As [`Gemm::gemm`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn par_gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        let work = m.saturating_mul(n).saturating_mul(k);
        if threads <= 1 || work < 1 << 18 {
            return unsafe { Self::gemm(m, k, n, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) };
        }
        // Whole register tiles per block, and the pointers as addresses so
        // the closure is Send; blocks of C are disjoint.
        let (a, b, c) = (a as usize, b as usize, c as usize);
        let size = size_of::<Self>() as isize;
        // Split the longer of C's rows and columns: a block of rows moves A
        // and C along their row strides, one of columns B and C along
        // their column strides.
        let rows = m >= n;
        let len = if rows { m } else { n };
        let bl = len.div_ceil(threads).next_multiple_of(16);
        (0..len.div_ceil(bl)).into_par_iter().for_each(|i| {
            let (s0, cnt) = (i * bl, bl.min(len - i * bl));
            let s0 = s0 as isize * size;
            let (ao, bo, co) = if rows {
                (s0 * rsa, 0, s0 * rsc)
            } else {
                (0, s0 * csb, s0 * csc)
            };
            let (bm, bn) = if rows { (cnt, n) } else { (m, cnt) };
            // SAFETY: the block's rows (or columns) of A (or B) and C lie
            // inside the caller's allocations, and no other block writes
            // them.
            unsafe {
                Self::gemm(
                    bm,
                    k,
                    bn,
                    (a as isize + ao) as *const Self,
                    rsa,
                    csa,
                    (b as isize + bo) as *const Self,
                    rsb,
                    csb,
                    beta,
                    (c as isize + co) as *mut Self,
                    rsc,
                    csc,
                )
            }
        });
    }
}

/// C = A·B + beta·C through the `gemm` crate (runtime-detected AVX2+FMA
/// or NEON kernels; its AVX-512 kernels need its `nightly` feature), on
/// the calling thread: [`Gemm::par_gemm`]
/// does the splitting. beta is 0 or 1 in every caller; with 0, C is not
/// read (it may hold anything, NaN included).
///
/// # Safety
/// As [`Gemm::gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_crate<T: Gemm + 'static>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    // gemm computes dst = alpha·dst + beta·lhs·rhs, column stride first.
    let read = beta != T::ZERO;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: C = beta·C, written here rather than trusting the
        // kernel's empty case.
        if !read {
            for i in 0..m as isize {
                for j in 0..n as isize {
                    // SAFETY: (i, j) lies inside C, as the caller promises.
                    unsafe { *c.offset(i * rsc + j * csc) = T::ZERO };
                }
            }
        }
        return;
    }
    if m == 1 && n > 1 {
        // The crate takes a matrix-vector path for a single row, which sums
        // in another order than its matrix kernels: a request served alone
        // would then differ in the last bits from the same request served
        // in a batch. Two rows (the second zero) take the matrix path.
        let (mut a2, mut c2) = (arena::zeros::<T>(2 * k), arena::zeros::<T>(2 * n));
        for j in 0..k {
            // SAFETY: row 0 of A, inside the caller's allocation.
            a2[j] = unsafe { *a.offset(j as isize * csa) };
        }
        for j in 0..n {
            // SAFETY: row 0 of C, inside the caller's allocation.
            c2[j] = unsafe { *c.offset(j as isize * csc) };
        }
        // SAFETY: a2 is [2, k], c2 is [2, n], both row-major; B as given.
        unsafe {
            gemm_crate(
                2,
                k,
                n,
                a2.as_ptr(),
                k as isize,
                1,
                b,
                rsb,
                csb,
                beta,
                c2.as_mut_ptr(),
                n as isize,
                1,
            )
        };
        for (j, &v) in c2[..n].iter().enumerate() {
            // SAFETY: row 0 of C, as above.
            unsafe { *c.offset(j as isize * csc) = v };
        }
        arena::give_back(a2);
        arena::give_back(c2);
        return;
    }
    // The crate packs its operands into memory it allocates per call (it
    // takes no workspace from its caller); the flag lets an allocation
    // count tell those allocations from ours.
    IN_GEMM_CRATE.with(|f| f.set(true));
    let _unset = Unset;
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            read,
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            beta,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl Gemm for f32 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        unsafe { gemm_crate(m, k, n, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Gemm for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        unsafe { gemm_crate(m, k, n, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

#[cfg(test)]
mod gemm_tests {
    use super::Gemm;

    /// A row's result does not depend on how many rows share the call, so
    /// a request served alone and the same request in a batch agree to the
    /// bit (the model server's batching promises it).
    #[test]
    fn rows_do_not_depend_on_the_batch() {
        let mut seed = 3u64;
        let mut rand = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for (k, n) in [(800, 10), (784, 256), (144, 32), (9, 16), (100, 1), (1, 7)] {
            let rows = 70;
            let a: Vec<f32> = (0..rows * k).map(|_| rand()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rand()).collect();
            let run = |m: usize| {
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: a is [rows >= m, k], b is [k, n], c is [m, n].
                unsafe {
                    f32::par_gemm(
                        m,
                        k,
                        n,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                c
            };
            let all = run(rows);
            for m in [1, 2, 3, 16, 17, 33, 69] {
                let c = run(m);
                for (i, (x, y)) in c.iter().zip(&all).enumerate() {
                    assert_eq!(x.to_bits(), y.to_bits(), "k={k} n={n} m={m} element {i}: {x} vs {y}");
                }
            }
        }
    }
}
