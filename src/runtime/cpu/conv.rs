//! CPU reference kernels of 2-D convolution and its two gradients (NHWC
//! activations, HWIO filters, groups): im2col / col2im around a strided GEMM
//! ([`super::Gemm`]), batch entries in parallel. The geometry (padding,
//! dilation, groups) is [`crate::core::op::conv`]'s.

use super::arena::{give_back, with_scratch_unzeroed, zeros};
use super::{CpuData, Gemm};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::conv::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;

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

/// Direct convolution of a block (`y` holds its rows) for group `gi`: per
/// output pixel and block of [`LANES`] output channels, every tap inside
/// the input scales filter rows into register accumulators, stored once
/// (tap bounds worked out per row and column, not per element).
fn direct<F: Gemm>(x: &[F], f: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, y: &mut [F]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { direct_avx2(x, f, g, gi, n0, nb, y) };
    }
    direct_body(x, f, g, gi, n0, nb, y)
}

/// [`direct_body`] compiled for AVX2: its accumulators then fill two
/// 8-lane registers instead of four SSE ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn direct_avx2<F: Gemm>(x: &[F], f: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, y: &mut [F]) {
    direct_body(x, f, g, gi, n0, nb, y)
}

#[inline(always)]
fn direct_body<F: Gemm>(x: &[F], f: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, y: &mut [F]) {
    let (og, o) = (g.og, g.o);
    let cols: Vec<(usize, usize)> = (0..g.kw).map(|kw| inside(g, kw)).collect();
    // (first filter row of the tap row, input row offset) of the taps rows
    // inside the input, for the current output row.
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(g.kh);
    for n in 0..nb {
        for oh in 0..g.oh {
            rows.clear();
            for kh in 0..g.kh {
                let ih = (oh * g.sh + kh * g.dh) as isize - g.pt as isize;
                if ih >= 0 && (ih as usize) < g.h {
                    rows.push((kh * g.kw, ((n0 + n) * g.h + ih as usize) * g.w * g.c));
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
                };
                j0 += match og - j0 {
                    l if l >= LANES => r.pixels::<LANES>(yrow),
                    l if l >= 4 => r.pixels::<4>(yrow),
                    _ => r.pixels::<1>(yrow),
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
}

impl<F: Gemm> Row<'_, F> {
    /// Output channels `fcol..fcol + L` of every pixel of the row into
    /// `yrow`; returns `L`.
    #[inline(always)]
    fn pixels<const L: usize>(&self, yrow: &mut [F]) -> usize {
        let g = self.g;
        // Columns whose every tap is inside the input go [`PIXELS`] at a
        // time: independent sums, so the adds do not wait on each other.
        let lo = self.cols.iter().map(|c| c.0).max().unwrap_or(0);
        let hi = self.cols.iter().map(|c| c.1).min().unwrap_or(0);
        let mut ow = 0;
        while ow < g.ow {
            if ow >= lo && ow + PIXELS <= hi {
                let acc = self.sums::<L, PIXELS>(ow, false);
                for (p, acc) in acc.iter().enumerate() {
                    self.store(yrow, ow + p, acc);
                }
                ow += PIXELS;
            } else {
                let [acc] = self.sums::<L, 1>(ow, true);
                self.store(yrow, ow, &acc);
                ow += 1;
            }
        }
        L
    }

    /// The sums of pixels `ow..ow + P` (`edge`: skipping taps outside the
    /// input, else all taps are inside).
    #[inline(always)]
    fn sums<const L: usize, const P: usize>(&self, ow: usize, edge: bool) -> [[F; L]; P] {
        let (g, cg, o) = (self.g, self.g.cg, self.g.o);
        let step = g.sw * g.c;
        let mut acc = [[F::ZERO; L]; P];
        for &(tap0, xrow) in self.rows {
            for (kw, &(lo, hi)) in self.cols.iter().enumerate() {
                if edge && (ow < lo || ow >= hi) {
                    continue;
                }
                let src = xrow + at(g, self.gi, ow, kw);
                let w0 = (tap0 + kw) * cg * o + self.fcol;
                for c in 0..cg {
                    let w = &self.f[w0 + c * o..][..L];
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let v = self.x[src + p * step + c];
                        for t in 0..L {
                            acc[t] += v * w[t];
                        }
                    }
                }
            }
        }
        acc
    }

    #[inline(always)]
    fn store<const L: usize>(&self, yrow: &mut [F], ow: usize, acc: &[F; L]) {
        if let Ok(out) = <&mut [F; L]>::try_from(&mut yrow[ow * self.g.o + self.fcol..][..L]) {
            *out = *acc;
        }
    }
}

/// Output pixels per block of the direct convolution's interior.
const PIXELS: usize = 4;

/// Direct filter gradient of a block for group `gi`, added into `df`
/// ([k, o]): per filter row (tap, channel) and block of output channels,
/// the input values at that tap scale output-gradient pixels into
/// accumulators, added once.
fn direct_filter<F: Gemm>(x: &[F], dy: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, df: &mut [F]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { direct_filter_avx2(x, dy, g, gi, n0, nb, df) };
    }
    direct_filter_body(x, dy, g, gi, n0, nb, df)
}

/// [`direct_filter_body`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn direct_filter_avx2<F: Gemm>(x: &[F], dy: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, df: &mut [F]) {
    direct_filter_body(x, dy, g, gi, n0, nb, df)
}

#[inline(always)]
fn direct_filter_body<F: Gemm>(x: &[F], dy: &[F], g: &Geom, gi: usize, n0: usize, nb: usize, df: &mut [F]) {
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
                        l if l >= LANES => t.sums::<LANES>(gi * og + j0, d),
                        l if l >= 4 => t.sums::<4>(gi * og + j0, d),
                        _ => t.sums::<1>(gi * og + j0, d),
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
    fn sums<const L: usize>(&self, j: usize, d: &mut [F]) -> usize {
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
                            acc[t] += v * e[t];
                        }
                    }
                    ow += PIXELS;
                }
                for (p, ow) in (ow..hi).enumerate() {
                    let v = self.x[xrow + at(g, self.gi, ow, self.kw)];
                    let e = &self.dy[(row + ow) * o + j..][..L];
                    for t in 0..L {
                        acc[p][t] += v * e[t];
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
    conv_with(op, g, p, q, DIRECT)
}

/// [`conv_cpu`] with the longest patch that runs direct (tests force each
/// path with it).
fn conv_with<F: Gemm>(op: &Op, g: &Geom, p: &[F], q: &[F], direct_max: usize) -> Vec<F> {
    let k = g.kh * g.kw * g.cg;
    let o = g.o as isize;
    let nb = block::<F>(g);
    let rows = nb * g.oh * g.ow;
    match op {
        Op::Conv2d(_) => {
            let mut y = zeros::<F>(g.n * g.oh * g.ow * g.o);
            if y.is_empty() {
                return y;
            }
            y.par_chunks_mut(rows * g.o).enumerate().for_each(|(b, yb)| {
                let m = yb.len() / g.o;
                if k <= direct_max {
                    for gi in 0..g.g {
                        direct(p, q, g, gi, b * nb, m / (g.oh * g.ow), yb);
                    }
                    return;
                }
                with_scratch_unzeroed(m * k, |cols: &mut [F]| {
                    for gi in 0..g.g {
                        im2col(p, g, gi, b * nb, m / (g.oh * g.ow), cols);
                        // SAFETY: cols is [m, k], f is [k, o] read at column
                        // offset gi*og, yb is [m, o] written at the same offset.
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
                                yb.as_mut_ptr().add(gi * g.og),
                                o,
                                1,
                            );
                        }
                    }
                });
            });
            y
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
            let mut partial = zeros::<F>(g.n.div_ceil(nb) * size);
            partial.par_chunks_mut(size).enumerate().for_each(|(b, df)| {
                let n = nb.min(g.n - b * nb);
                let m = n * g.oh * g.ow;
                let dy = &q[b * rows * g.o..];
                if k <= direct_max {
                    for gi in 0..g.g {
                        direct_filter(p, dy, g, gi, b * nb, n, df);
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
        let cases: [([usize; 4], [usize; 4], [usize; 2], Padding, [usize; 2]); 7] = [
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
                let (direct, gemm) = (conv_with(&op, &g, p, q, usize::MAX), conv_with(&op, &g, p, q, 0));
                assert_eq!(direct.len(), gemm.len());
                for (i, (d, m)) in direct.iter().zip(&gemm).enumerate() {
                    assert!(
                        (d - m).abs() <= 1e-9 * (1.0 + m.abs()),
                        "{op:?} {xs:?} {fs:?} at {i}: {d} vs {m}"
                    );
                }
            }
        }
    }
}
