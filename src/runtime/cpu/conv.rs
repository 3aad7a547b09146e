//! CPU reference kernels of 2-D convolution and its two gradients (NHWC
//! activations, HWIO filters, groups): im2col / col2im around a strided GEMM
//! ([`super::Gemm`]), batch entries in parallel. The geometry (padding,
//! dilation, groups) is [`crate::core::op::conv`]'s.

use super::arena::{give_back, output_filled, with_scratch_unzeroed, zeros};
use super::{CpuData, Gemm};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::conv::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Batch entries per block: each block's patch matrix fills about 1 MiB
/// (it stays in cache between im2col and the GEMM), and the blocks come in
/// a multiple of the thread count, of even sizes (a filter gradient's GEMM
/// has a tiny output, so the batch is the only dimension to split).
fn block<F>(g: &Geom) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let bytes = [g.n, g.oh, g.ow, g.kh, g.kw, g.cg, size_of::<F>()]
        .into_iter()
        .fold(1usize, usize::saturating_mul);
    let blocks = bytes.div_ceil(1 << 20).max(1).next_multiple_of(threads);
    g.n.div_ceil(blocks).max(1)
}

/// Batch entries per block of the direct filter gradient, which reads its
/// block's output gradient once per filter row: blocks of about 256 KiB
/// of it, so that the rereads come from the core's L2 cache.
fn direct_block<F>(g: &Geom) -> usize {
    let per = [g.oh, g.ow, g.o, size_of::<F>()]
        .into_iter()
        .fold(1usize, usize::saturating_mul);
    ((256 << 10) / per.max(1)).clamp(1, g.n.max(1))
}

/// Whether some tap of some output position falls in the padding.
fn padded(g: &Geom) -> bool {
    let reach = |o: usize, s: usize, k: usize, d: usize| (o.max(1) - 1) * s + (k.max(1) - 1) * d;
    g.pt > 0 || g.pl > 0 || reach(g.oh, g.sh, g.kh, g.dh) >= g.h + g.pt || reach(g.ow, g.sw, g.kw, g.dw) >= g.w + g.pl
}

/// Patches this short (taps times channels) make a GEMM mostly packing
/// overhead: the convolution and its filter gradient then loop directly
/// over taps, vectorized along the output channels.
const DIRECT: usize = 32;

/// Calls `f(row, tap, src)` for every output position of batch entries
/// `n0..n0 + nb` (`row` counts from the block's start) and every tap inside
/// the input, `tap` indexing (kh, kw) and `src` the input offset of its
/// first channel of group `gi`.
#[inline(always)]
fn taps(g: &Geom, gi: usize, n0: usize, nb: usize, mut f: impl FnMut(usize, usize, usize)) {
    for n in 0..nb {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let row = (n * g.oh + oh) * g.ow + ow;
                for kh in 0..g.kh {
                    let ih = (oh * g.sh + kh * g.dh) as isize - g.pt as isize;
                    if ih < 0 || ih as usize >= g.h {
                        continue;
                    }
                    for kw in 0..g.kw {
                        let iw = (ow * g.sw + kw * g.dw) as isize - g.pl as isize;
                        if iw < 0 || iw as usize >= g.w {
                            continue;
                        }
                        let src = (((n0 + n) * g.h + ih as usize) * g.w + iw as usize) * g.c + gi * g.cg;
                        f(row, kh * g.kw + kw, src);
                    }
                }
            }
        }
    }
}

/// Patch matrix of group `gi` for batch entries `n0..n0 + nb`, into `cols`:
/// rows (n, oh, ow), columns (kh, kw, ci); taps in the padding stay zero.
fn im2col<F: Gemm>(x: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, cols: &mut [F]) {
    let k = g.kh * g.kw * g.cg;
    if padded(g) {
        cols.fill(F::ZERO);
    }
    taps(g, gi, n0, nb, |row, tap, src| {
        let dst = row * k + tap * g.cg;
        // An element loop: with a few channels per tap a memcpy call costs
        // more than the copy.
        for (d, &v) in cols[dst..dst + g.cg].iter_mut().zip(&x[src..src + g.cg]) {
            *d = v;
        }
    });
}

/// Adds a block's patch-matrix gradient back onto its input gradient
/// (`dx` holds the block's `nb` batch entries) for group `gi`.
fn col2im<F: Gemm>(cols: &[F], dx: &mut [F], g: &Geom, gi: usize, nb: usize) {
    let k = g.kh * g.kw * g.cg;
    taps(g, gi, 0, nb, |row, tap, d| {
        let s = row * k + tap * g.cg;
        for (o, &v) in dx[d..d + g.cg].iter_mut().zip(&cols[s..s + g.cg]) {
            *o += v;
        }
    });
}

/// The output columns `lo..hi` whose input column for horizontal tap `kw`
/// lies inside the input.
fn inside(g: &Geom, kw: usize) -> (usize, usize) {
    let off = kw * g.dw;
    let lo = if g.pl > off { (g.pl - off).div_ceil(g.sw) } else { 0 };
    let hi = if g.w + g.pl > off {
        ((g.w + g.pl - off - 1) / g.sw + 1).min(g.ow)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Input offset of output column `ow`'s tap `kw` in an input row (channel
/// 0 of group `gi`); only for columns [`inside`] says are inside.
#[inline(always)]
fn at(g: &Geom, gi: usize, ow: usize, kw: usize) -> usize {
    (ow * g.sw + kw * g.dw - g.pl) * g.c + gi * g.cg
}

/// Output channels per accumulator block of the direct loops: a fixed
/// count, so the accumulators live in registers across all taps.
const LANES: usize = 16;

/// The instruction sets the direct loops are compiled for: each variant
/// is the same generic body, compiled with its target features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// Whatever the build targets (SSE2 on x86-64): separate multiplies
    /// and adds.
    Plain,
    /// AVX2 with FMA: two 8-lane accumulators per pixel. (AVX-512 ran
    /// these loops no faster on a Xeon: they are bound by loads.)
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The widest variant this CPU runs.
    fn best() -> Isa {
        *Isa::supported().last().unwrap_or(&Isa::Plain)
    }

    /// Every variant this CPU runs, narrowest first.
    fn supported() -> &'static [Isa] {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2_fma() {
            return &[Isa::Plain, Isa::Avx2];
        }
        &[Isa::Plain]
    }
}

/// `c + a * b`, rounded once where the variant has FMA.
#[inline(always)]
fn madd<F: Float, const FMA: bool>(a: F, b: F, c: F) -> F {
    if FMA { a.mul_add(b, c) } else { c + a * b }
}

/// Generates `$name`, which runs `$body` compiled for the given [`Isa`].
macro_rules! variants {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<F: Gemm>(isa: Isa, $($arg: $ty),*) {
            /// # Safety
            /// The CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<F: Gemm>($($arg: $ty),*) {
                $body::<F, true>($($arg),*)
            }
            match isa {
                Isa::Plain => $body::<F, false>($($arg),*),
                // SAFETY: `Isa::supported` lists the variant only where the
                // CPU has its features.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::<F>($($arg),*) },
            }
        }
    };
}

variants!(direct, direct_body, (x: &[F], f: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, y: &mut [MaybeUninit<F>]));

/// Direct convolution of a block (`y` holds its rows) for group `gi`: per
/// output pixel and block of [`LANES`] output channels, every tap inside
/// the input scales filter rows into register accumulators, stored once
/// (tap bounds worked out per row and column, not per element).
#[inline(always)]
fn direct_body<F: Gemm, const FMA: bool>(
    x: &[F],
    f: &[F],
    g: &Geom,
    gi: usize,
    n0: usize,
    nb: usize,
    y: &mut [MaybeUninit<F>],
) {
    let (og, o) = (g.og, g.o);
    let cols: Vec<(usize, usize)> = (0..g.kw).map(|kw| inside(g, kw)).collect();
    // (first filter row of the tap row, input row offset) of the taps rows
    // inside the input, for the current output row.
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(g.kh);
    // Every (tap, channel) of those rows as (input offset from the first
    // column's window, filter row offset): the interior's one loop.
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(g.kh * g.kw * g.cg);
    for n in 0..nb {
        for oh in 0..g.oh {
            rows.clear();
            taps.clear();
            for kh in 0..g.kh {
                let ih = (oh * g.sh + kh * g.dh) as isize - g.pt as isize;
                if ih >= 0 && (ih as usize) < g.h {
                    let xrow = ((n0 + n) * g.h + ih as usize) * g.w * g.c;
                    rows.push((kh * g.kw, xrow));
                    for kw in 0..g.kw {
                        for c in 0..g.cg {
                            // Column kw * dw - pl of the row: the window of
                            // output column 0, which may start in the
                            // padding (only offset by interior columns).
                            let at = (xrow + kw * g.dw * g.c + gi * g.cg + c).wrapping_sub(g.pl * g.c);
                            taps.push((at, ((kh * g.kw + kw) * g.cg + c) * o));
                        }
                    }
                }
            }
            let yrow = &mut y[(n * g.oh + oh) * g.ow * o..][..g.ow * o];
            // Output channels in fixed-width blocks: every inner loop has a
            // constant trip count and the sums stay in registers.
            let mut j0 = 0;
            while j0 < og {
                let r = Row {
                    x,
                    f,
                    g,
                    gi,
                    fcol: gi * og + j0,
                    rows: &rows,
                    cols: &cols,
                    taps: &taps,
                };
                j0 += match og - j0 {
                    l if l >= LANES => r.pixels::<LANES, FMA>(yrow),
                    l if l >= 4 => r.pixels::<4, FMA>(yrow),
                    _ => r.pixels::<1, FMA>(yrow),
                };
            }
        }
    }
}

/// One output row of a direct convolution, for the output channels from
/// `fcol`.
struct Row<'a, F> {
    x: &'a [F],
    f: &'a [F],
    g: &'a Geom,
    gi: usize,
    fcol: usize,
    /// (first tap, input row offset) of the tap rows inside the input.
    rows: &'a [(usize, usize)],
    /// Per horizontal tap, the output columns that read inside the input.
    cols: &'a [(usize, usize)],
    /// (input offset for output column 0, filter offset) of every tap
    /// and channel of `rows`.
    taps: &'a [(usize, usize)],
}

impl<F: Gemm> Row<'_, F> {
    /// Output channels `fcol..fcol + L` of every pixel of the row into
    /// `yrow`; returns `L`.
    #[inline(always)]
    fn pixels<const L: usize, const FMA: bool>(&self, yrow: &mut [MaybeUninit<F>]) -> usize {
        let g = self.g;
        // Columns whose every tap is inside the input go [`PIXELS`] at a
        // time: independent sums, so the adds do not wait on each other.
        let lo = self.cols.iter().map(|c| c.0).max().unwrap_or(0);
        let hi = self.cols.iter().map(|c| c.1).min().unwrap_or(0);
        let mut ow = 0;
        while ow < g.ow {
            if ow >= lo && ow + PIXELS <= hi {
                let acc = self.interior::<L, PIXELS, FMA>(ow);
                for (p, acc) in acc.iter().enumerate() {
                    self.store(yrow, ow + p, acc);
                }
                ow += PIXELS;
            } else if ow >= lo && ow < hi {
                let [acc] = self.interior::<L, 1, FMA>(ow);
                self.store(yrow, ow, &acc);
                ow += 1;
            } else {
                let acc = self.edge::<L, FMA>(ow);
                self.store(yrow, ow, &acc);
                ow += 1;
            }
        }
        L
    }

    /// The sums of pixels `ow..ow + P`, all of whose taps are inside the
    /// input.
    #[inline(always)]
    fn interior<const L: usize, const P: usize, const FMA: bool>(&self, ow: usize) -> [[F; L]; P] {
        let g = self.g;
        let step = g.sw * g.c;
        let f = &self.f[self.fcol..];
        let mut acc = [[F::ZERO; L]; P];
        for &(at, w) in self.taps {
            let w = &f[w..][..L];
            // The P pixels' inputs, as one slice: the compiler then sees
            // every read is inside it.
            let xs = &self.x[at.wrapping_add(ow * step)..][..(P - 1) * step + 1];
            for (p, acc) in acc.iter_mut().enumerate() {
                let v = xs[p * step];
                for t in 0..L {
                    acc[t] = madd::<F, FMA>(v, w[t], acc[t]);
                }
            }
        }
        acc
    }

    /// The sums of pixel `ow`, some of whose taps may lie outside the
    /// input (skipped).
    #[inline(always)]
    fn edge<const L: usize, const FMA: bool>(&self, ow: usize) -> [F; L] {
        let (g, cg, o) = (self.g, self.g.cg, self.g.o);
        let mut acc = [F::ZERO; L];
        for &(tap0, xrow) in self.rows {
            for (kw, &(lo, hi)) in self.cols.iter().enumerate() {
                if ow < lo || ow >= hi {
                    continue;
                }
                let src = xrow + at(g, self.gi, ow, kw);
                let w0 = (tap0 + kw) * cg * o + self.fcol;
                for c in 0..cg {
                    let w = &self.f[w0 + c * o..][..L];
                    let v = self.x[src + c];
                    for t in 0..L {
                        acc[t] = madd::<F, FMA>(v, w[t], acc[t]);
                    }
                }
            }
        }
        acc
    }

    #[inline(always)]
    fn store<const L: usize>(&self, yrow: &mut [MaybeUninit<F>], ow: usize, acc: &[F; L]) {
        for (o, &v) in yrow[ow * self.g.o + self.fcol..][..L].iter_mut().zip(acc) {
            o.write(v);
        }
    }
}

/// Output pixels per block of the direct loops: with [`LANES`] channels,
/// eight independent 8-lane sums (FMA latency times its throughput).
const PIXELS: usize = 4;

variants!(direct_filter, direct_filter_body, (x: &[F], dy: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, df: &mut [F]));

/// Direct filter gradient of a block for group `gi`, added into `df`
/// ([k, o]): per filter row (tap, channel) and block of output channels,
/// the input values at that tap scale output-gradient pixels into
/// accumulators, added once.
#[inline(always)]
fn direct_filter_body<F: Gemm, const FMA: bool>(
    x: &[F],
    dy: &[F],
    g: &Geom,
    gi: usize,
    n0: usize,
    nb: usize,
    df: &mut [F],
) {
    let (cg, og, o) = (g.cg, g.og, g.o);
    for kh in 0..g.kh {
        for kw in 0..g.kw {
            let tap = kh * g.kw + kw;
            for c in 0..cg {
                let t = FilterTap {
                    x,
                    dy,
                    g,
                    gi,
                    n0,
                    nb,
                    kh,
                    kw,
                    c,
                };
                let mut j0 = 0;
                while j0 < og {
                    let d = &mut df[(tap * cg + c) * o + gi * og + j0..];
                    j0 += match og - j0 {
                        l if l >= LANES => t.sums::<LANES, FMA>(gi * og + j0, d),
                        l if l >= 4 => t.sums::<4, FMA>(gi * og + j0, d),
                        _ => t.sums::<1, FMA>(gi * og + j0, d),
                    };
                }
            }
        }
    }
}

/// One filter row (tap `kh, kw`, input channel `c`) of a block's direct
/// filter gradient.
struct FilterTap<'a, F> {
    x: &'a [F],
    dy: &'a [F],
    g: &'a Geom,
    gi: usize,
    n0: usize,
    nb: usize,
    kh: usize,
    kw: usize,
    c: usize,
}

impl<F: Gemm> FilterTap<'_, F> {
    /// Output channels `j..j + L`, added into `d[..L]`; returns `L`.
    #[inline(always)]
    fn sums<const L: usize, const FMA: bool>(&self, j: usize, d: &mut [F]) -> usize {
        let (g, o) = (self.g, self.g.o);
        let (lo, hi) = inside(g, self.kw);
        // [`PIXELS`] sums over alternating columns, so the adds do not
        // wait on each other; combined in a fixed order at the end.
        let mut acc = [[F::ZERO; L]; PIXELS];
        for n in 0..self.nb {
            for oh in 0..g.oh {
                let ih = (oh * g.sh + self.kh * g.dh) as isize - g.pt as isize;
                if ih < 0 || ih as usize >= g.h {
                    continue;
                }
                let xrow = ((self.n0 + n) * g.h + ih as usize) * g.w * g.c + self.c;
                let row = (n * g.oh + oh) * g.ow;
                let mut ow = lo;
                while ow + PIXELS <= hi {
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let v = self.x[xrow + at(g, self.gi, ow + p, self.kw)];
                        let e = &self.dy[(row + ow + p) * o + j..][..L];
                        for t in 0..L {
                            acc[t] = madd::<F, FMA>(v, e[t], acc[t]);
                        }
                    }
                    ow += PIXELS;
                }
                for (p, ow) in (ow..hi).enumerate() {
                    let v = self.x[xrow + at(g, self.gi, ow, self.kw)];
                    let e = &self.dy[(row + ow) * o + j..][..L];
                    for t in 0..L {
                        acc[p][t] = madd::<F, FMA>(v, e[t], acc[p][t]);
                    }
                }
            }
        }
        let d = &mut d[..L];
        for acc in &acc {
            for t in 0..L {
                d[t] += acc[t];
            }
        }
        L
    }
}

/// The three convolutions as GEMMs over blocks of batch entries, blocks in
/// parallel: each block builds its patch matrix, runs its GEMM and writes
/// its own rows of the output (the filter gradient sums per-block partial
/// results in block order, so the result does not depend on scheduling).
fn conv_cpu<F: Gemm>(op: &Op, g: &Geom, p: &[F], q: &[F]) -> Vec<F> {
    conv_with(op, g, p, q, DIRECT, Isa::best())
}

/// [`conv_cpu`] with the longest patch that runs direct and the direct
/// loops' variant (tests force each path with them).
fn conv_with<F: Gemm>(op: &Op, g: &Geom, p: &[F], q: &[F], direct_max: usize, isa: Isa) -> Vec<F> {
    let k = g.kh * g.kw * g.cg;
    let o = g.o as isize;
    let nb = block::<F>(g);
    let rows = nb * g.oh * g.ow;
    match op {
        Op::Conv2d(_) => {
            let n = g.n * g.oh * g.ow * g.o;
            if n == 0 {
                return zeros::<F>(0);
            }
            let fill = |y: &mut [MaybeUninit<F>]| {
                y.par_chunks_mut(rows * g.o).enumerate().for_each(|(b, yb)| {
                    let m = yb.len() / g.o;
                    if k <= direct_max {
                        for gi in 0..g.g {
                            direct(isa, p, q, g, gi, b * nb, m / (g.oh * g.ow), yb);
                        }
                        return;
                    }
                    with_scratch_unzeroed(m * k, |cols: &mut [F]| {
                        for gi in 0..g.g {
                            im2col(p, g, gi, b * nb, m / (g.oh * g.ow), cols);
                            // SAFETY: cols is [m, k], f is [k, o] read at column
                            // offset gi*og, yb is [m, o] written at the same offset
                            // (MaybeUninit<F> has F's layout).
                            unsafe {
                                F::gemm(
                                    m,
                                    k,
                                    g.og,
                                    cols.as_ptr(),
                                    k as isize,
                                    1,
                                    q.as_ptr().add(gi * g.og),
                                    o,
                                    1,
                                    F::ZERO,
                                    yb.as_mut_ptr().add(gi * g.og).cast::<F>(),
                                    o,
                                    1,
                                );
                            }
                        }
                    });
                })
            };
            // SAFETY: every block writes all its rows' columns, each group
            // its own: the direct loops store every pixel and channel, the
            // GEMM (beta 0) every element of C without reading it.
            unsafe { output_filled(n, fill) }
        }
        Op::Conv2dInputGrad(..) => {
            // p = dy [n*oh*ow, o], q = f [k, o]
            let per = g.h * g.w * g.c;
            let mut dx = zeros::<F>(g.n * per);
            if dx.is_empty() || g.oh * g.ow == 0 {
                return dx;
            }
            dx.par_chunks_mut(nb * per).enumerate().for_each(|(b, dxb)| {
                let n = dxb.len() / per;
                let m = n * g.oh * g.ow;
                let dy = &p[b * rows * g.o..];
                with_scratch_unzeroed(m * k, |cols: &mut [F]| {
                    for gi in 0..g.g {
                        // SAFETY: dy is [m, o] read at column offset gi*og; f
                        // read as its transpose [og, k] at the same offset;
                        // cols is [m, k].
                        unsafe {
                            F::gemm(
                                m,
                                g.og,
                                k,
                                dy.as_ptr().add(gi * g.og),
                                o,
                                1,
                                q.as_ptr().add(gi * g.og),
                                1,
                                o,
                                F::ZERO,
                                cols.as_mut_ptr(),
                                k as isize,
                                1,
                            );
                        }
                        col2im(cols, dxb, g, gi, n);
                    }
                });
            });
            dx
        }
        Op::Conv2dFilterGrad(..) => {
            // p = x, q = dy [n*oh*ow, o]
            let size = k * g.o;
            if size == 0 || g.n * g.oh * g.ow == 0 {
                return zeros::<F>(size);
            }
            let direct = k <= direct_max;
            let nb = if direct { direct_block::<F>(g) } else { nb };
            let rows = nb * g.oh * g.ow;
            let mut partial = zeros::<F>(g.n.div_ceil(nb) * size);
            partial.par_chunks_mut(size).enumerate().for_each(|(b, df)| {
                let n = nb.min(g.n - b * nb);
                let m = n * g.oh * g.ow;
                let dy = &q[b * rows * g.o..];
                if direct {
                    for gi in 0..g.g {
                        direct_filter(isa, p, dy, g, gi, b * nb, n, df);
                    }
                    return;
                }
                with_scratch_unzeroed(m * k, |cols: &mut [F]| {
                    for gi in 0..g.g {
                        im2col(p, g, gi, b * nb, n, cols);
                        // SAFETY: cols read as its transpose [k, m]; dy
                        // [m, o] and df [k, o] at column offset gi*og.
                        unsafe {
                            F::gemm(
                                k,
                                m,
                                g.og,
                                cols.as_ptr(),
                                1,
                                k as isize,
                                dy.as_ptr().add(gi * g.og),
                                o,
                                1,
                                F::ZERO,
                                df.as_mut_ptr().add(gi * g.og),
                                o,
                                1,
                            );
                        }
                    }
                });
            });
            let mut df = zeros::<F>(size);
            for part in partial.chunks(size) {
                for (d, &v) in df.iter_mut().zip(part) {
                    *d += v;
                }
            }
            give_back(partial);
            df
        }
        _ => unreachable!(),
    }
}

pub(crate) fn cpu(op: &Op, x: &[Operand], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    if let Op::Conv2dInt8(a, fs) = op {
        // The filter dequantized ([O, KH*KW*CG]) and laid out HWIO.
        let g = geom_of(op, &[x[0].shape(), fs])?;
        let kg = crate::core::shape::numel(&fs[..3]);
        let rows = super::layout::dequantize(&x[1], &x[2], kg);
        let mut f = vec![0.0f32; rows.len()];
        for (o, row) in rows.chunks(kg.max(1)).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                f[j * fs[3] + o] = v;
            }
        }
        let CpuData::F32(p) = x[0].cpu_data() else {
            unreachable!()
        };
        return Ok(CpuData::F32(conv_cpu(&Op::Conv2d(a.clone()), &g, p, &f)));
    }
    let g = geom_of(op, &[x[0].shape(), x[1].shape()])?;
    Ok(match (x[0].cpu_data(), x[1].cpu_data()) {
        (CpuData::F32(p), CpuData::F32(q)) => CpuData::F32(conv_cpu(op, &g, p, q)),
        (CpuData::F64(p), CpuData::F64(q)) => CpuData::F64(conv_cpu(op, &g, p, q)),
        _ => unreachable!(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct loops and the im2col GEMMs agree on awkward geometry:
    /// padding on every side, strides, dilation, groups, size-1 and prime
    /// sizes.
    #[test]
    fn direct_and_gemm_paths_agree() {
        let mut seed = 7u64;
        let mut rand = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 40) as f64 / (1u64 << 23) as f64 - 1.0
                })
                .collect()
        };
        let cases: [([usize; 4], [usize; 4], [usize; 2], Padding, [usize; 2]); 9] = [
            ([3, 7, 5, 1], [3, 3, 1, 4], [1, 1], Padding::Valid, [1, 1]),
            ([2, 6, 9, 2], [2, 3, 2, 3], [2, 1], Padding::Same, [1, 1]),
            (
                [1, 11, 7, 3],
                [3, 2, 3, 5],
                [1, 2],
                Padding::Explicit {
                    top: 2,
                    bottom: 1,
                    left: 0,
                    right: 3,
                },
                [2, 1],
            ),
            ([5, 1, 1, 4], [1, 1, 2, 6], [1, 1], Padding::Valid, [1, 1]),
            ([2, 5, 5, 4], [3, 3, 2, 4], [1, 1], Padding::Same, [1, 2]),
            ([3, 13, 3, 1], [5, 1, 1, 1], [3, 1], Padding::Same, [1, 1]),
            // More output channels than one accumulator block holds.
            ([2, 6, 5, 2], [3, 3, 2, 37], [1, 1], Padding::Same, [1, 1]),
            // Rows of several interior pixel blocks and a remainder, a
            // block of 16 channels and one of 4.
            ([2, 4, 19, 3], [3, 3, 3, 20], [1, 1], Padding::Same, [1, 1]),
            (
                [1, 5, 23, 2],
                [2, 3, 2, 5],
                [1, 2],
                Padding::Explicit {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                },
                [1, 2],
            ),
        ];
        for (xs, fs, strides, padding, dilations) in cases {
            let a = Conv2d {
                strides,
                padding,
                dilations,
                groups: xs[3] / fs[2],
            };
            let g = geom("conv2d", &a, &xs, &fs).unwrap();
            let x = rand(xs.iter().product());
            let f = rand(fs.iter().product());
            let dy = rand(g.n * g.oh * g.ow * g.o);
            for (op, p, q) in [
                (Op::Conv2d(a.clone()), &x, &f),
                (Op::Conv2dFilterGrad(a.clone(), fs.to_vec()), &x, &dy),
            ] {
                let gemm = conv_with(&op, &g, p, q, 0, Isa::Plain);
                for &isa in Isa::supported() {
                    let direct = conv_with(&op, &g, p, q, usize::MAX, isa);
                    assert_eq!(direct.len(), gemm.len());
                    for (i, (d, m)) in direct.iter().zip(&gemm).enumerate() {
                        assert!(
                            (d - m).abs() <= 1e-9 * (1.0 + m.abs()),
                            "{op:?} {isa:?} {xs:?} {fs:?} at {i}: {d} vs {m}"
                        );
                    }
                }
            }
        }
    }
}
