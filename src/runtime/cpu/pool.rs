//! CPU reference kernels of max and average 2-D pooling over NHWC and
//! their gradients; window geometry from [`crate::core::op::pool`], batch
//! entries in parallel. Max pooling routes the gradient to the first maximum of
//! each window.

use super::CpuData;
use super::arena::{output_filled, zeros};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::pool::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The pooling (dy = None) or its gradient, on typed data; batch entries in
/// parallel (each writes its own block of y).
fn pool_cpu<F: Float>(p: &Pool2d, s: &[usize], geom: [usize; 4], xv: &[F], dy: Option<&[F]>, n_out: usize) -> Vec<F> {
    // Gradients of windows that do not overlap are written, not added:
    // each input position takes at most one window's. Where the windows
    // also tile the input (and always for the pooling), every position is
    // written, so the output need not be zeroed first.
    let assign = dy.is_some() && p.disjoint();
    let every = dy.is_none() || (assign && p.tiles(s, geom));
    let fill = |y: &mut [MaybeUninit<F>]| {
        // The mode as a constant, so that each variant's channel loops
        // are branch-free; compiled for AVX2 where the CPU has it (twice
        // the lanes of the baseline's SSE).
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { pool_avx2(p, s, geom, xv, dy, assign, y) };
        }
        if p.max {
            pool_impl::<F, true>(p, s, geom, xv, dy, assign, y)
        } else {
            pool_impl::<F, false>(p, s, geom, xv, dy, assign, y)
        }
    };
    if every {
        // SAFETY: with `every`, the windows cover every output position
        // (the pooling writes each output, a tiling gradient each input).
        unsafe { output_filled(n_out, fill) }
    } else if assign {
        // Disjoint windows that leave positions out (an odd size, a
        // stride past the window): only those are zeroed, the windows
        // write the rest.
        let covered = uncovered_zeroed(p, s, geom);
        let fill = |y: &mut [MaybeUninit<F>]| {
            covered(y);
            fill(y)
        };
        // SAFETY: `covered` writes every position no window holds, the
        // gradient (assigning) every position a window holds.
        unsafe { output_filled(n_out, fill) }
    } else {
        let mut y = zeros::<F>(n_out);
        // SAFETY: MaybeUninit<F> has F's layout, and y's values are
        // initialized (zeros), which the kernel adds onto.
        fill(unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast::<MaybeUninit<F>>(), y.len()) });
        y
    }
}

/// A function that zeroes the input positions of `y` ([n, h, w, c]) that
/// no window of `p` holds. The windows are the products of their row and
/// column ranges, so a position is held when its row and its column are.
fn uncovered_zeroed<F: Float>(p: &Pool2d, s: &[usize], geom: [usize; 4]) -> impl Fn(&mut [MaybeUninit<F>]) {
    let (h, w, c) = (s[1], s[2], s[3]);
    let [oh, ow, pt, pl] = geom;
    let held = |len: usize, outs: usize, k: usize, st: usize, pad: usize| {
        let mut v = vec![false; len];
        for o in 0..outs {
            let s0 = (o * st) as isize - pad as isize;
            let (lo, hi) = (
                s0.max(0) as usize,
                ((s0 + k as isize).min(len as isize)).max(0) as usize,
            );
            for e in v.iter_mut().take(hi).skip(lo) {
                *e = true;
            }
        }
        v
    };
    let rows = held(h, oh, p.ksize[0], p.strides[0], pt);
    let cols = held(w, ow, p.ksize[1], p.strides[1], pl);
    move |y: &mut [MaybeUninit<F>]| {
        if h * w * c == 0 {
            return;
        }
        y.par_chunks_mut(h * w * c).for_each(|yb| {
            for (ih, row) in yb.chunks_mut(w * c).enumerate() {
                for (iw, px) in row.chunks_mut(c).enumerate() {
                    if !(rows[ih] && cols[iw]) {
                        for e in px {
                            e.write(F::ZERO);
                        }
                    }
                }
            }
        });
    }
}

/// [`pool_impl`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_avx2<F: Float>(
    p: &Pool2d,
    s: &[usize],
    geom: [usize; 4],
    xv: &[F],
    dy: Option<&[F]>,
    assign: bool,
    y: &mut [MaybeUninit<F>],
) {
    if p.max {
        pool_impl::<F, true>(p, s, geom, xv, dy, assign, y)
    } else {
        pool_impl::<F, false>(p, s, geom, xv, dy, assign, y)
    }
}

/// The pooling (dy None) or its gradient into `y`, which holds zeros
/// unless `assign` or the pooling; batch entries in parallel (each writes
/// its own block of y).
#[inline(always)]
fn pool_impl<F: Float, const MAX: bool>(
    p: &Pool2d,
    s: &[usize],
    geom: [usize; 4],
    xv: &[F],
    dy: Option<&[F]>,
    assign: bool,
    y: &mut [MaybeUninit<F>],
) {
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let [oh, ow, pt, pl] = geom;
    let n_out = y.len();
    if n_out == 0 {
        return;
    }
    let win = |o: usize, k: usize, st: usize, pad: usize, lim: usize| {
        let s0 = (o * st) as isize - pad as isize;
        (s0.max(0) as usize, ((s0 + k as isize).min(lim as isize)) as usize)
    };
    y.par_chunks_mut(n_out / n).enumerate().for_each(|(b, yb)| {
        let xb = &xv[b * h * w * c..(b + 1) * h * w * c];
        for i in 0..oh {
            let rows = win(i, p.ksize[0], p.strides[0], pt, h);
            for j in 0..ow {
                let cols = win(j, p.ksize[1], p.strides[1], pl, w);
                let v = Window {
                    x: xb,
                    w,
                    c,
                    rows,
                    cols,
                    count: F::of(((rows.1 - rows.0) * (cols.1 - cols.0)) as f64),
                    assign,
                };
                // dy is indexed over the whole batch, y per batch entry.
                let (o, out) = match dy {
                    None => ((i * ow + j) * c, None),
                    Some(g) => (0, Some(&g[((b * oh + i) * ow + j) * c..][..c])),
                };
                // Channels in fixed-width blocks: the accumulators stay in
                // registers and every loop has a constant trip count.
                let mut c0 = 0;
                while c0 < c {
                    c0 = match c - c0 {
                        r if r >= 16 => v.block::<MAX, 16>(c0, out, o, yb),
                        r if r >= 4 => v.block::<MAX, 4>(c0, out, o, yb),
                        _ => v.block::<MAX, 1>(c0, out, o, yb),
                    };
                }
            }
        }
    });
}

/// One pooling window of one batch entry's input `x` ([h, w, c]).
struct Window<'a, F> {
    x: &'a [F],
    w: usize,
    c: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    /// The positions in the window.
    count: F,
    /// The gradient's values replace y's (windows do not overlap) rather
    /// than add to them.
    assign: bool,
}

impl<F: Float> Window<'_, F> {
    /// Channels `c0..c0 + L` of the window: the pooled values into
    /// `y[o + c0..]` (`dy` None), or the gradient `dy` (this window's
    /// channels) added onto `y` at the inputs it came from. Returns the
    /// next channel.
    #[inline(always)]
    fn block<const MAX: bool, const L: usize>(
        &self,
        c0: usize,
        dy: Option<&[F]>,
        o: usize,
        y: &mut [MaybeUninit<F>],
    ) -> usize {
        let at = |ih: usize, iw: usize| (ih * self.w + iw) * self.c + c0;
        let lane = |s: &[F]| -> [F; L] {
            let mut a = [F::ZERO; L];
            a.copy_from_slice(&s[..L]);
            a
        };
        // The running maximum (or sum) and, for max pooling's gradient, its
        // position in the window (as a float: every lane the same width);
        // positions count from 0 in row-major order.
        let mut acc = if MAX {
            lane(&self.x[at(self.rows.0, self.cols.0)..])
        } else {
            [F::ZERO; L]
        };
        let mut arg = [F::ZERO; L];
        let mut pos = F::ZERO;
        for ih in self.rows.0..self.rows.1 {
            for iw in self.cols.0..self.cols.1 {
                let e = lane(&self.x[at(ih, iw)..]);
                for t in 0..L {
                    if !MAX {
                        acc[t] += e[t];
                    } else {
                        // The first NaN is the maximum (TF propagates NaN),
                        // else the first maximum in window order. `&` and
                        // `|`, not `&&` and `||`: no branches, so the loop
                        // vectorizes.
                        let take = !acc[t].is_nan() & ((e[t] > acc[t]) | e[t].is_nan());
                        acc[t] = F::select(take, e[t], acc[t]);
                        if dy.is_some() {
                            arg[t] = F::select(take, pos, arg[t]);
                        }
                    }
                }
                pos += F::ONE;
            }
        }
        match dy {
            None => {
                let out = &mut y[o + c0..][..L];
                for t in 0..L {
                    out[t].write(if MAX { acc[t] } else { acc[t] / self.count });
                }
            }
            Some(g) => {
                let g = lane(&g[c0..]);
                // A second pass adds dy where the window position is the
                // maximum's: lane-wise selects, no scatter.
                let mut pos = F::ZERO;
                for ih in self.rows.0..self.rows.1 {
                    for iw in self.cols.0..self.cols.1 {
                        let out = &mut y[at(ih, iw)..][..L];
                        for t in 0..L {
                            let v = if MAX {
                                F::select(arg[t] == pos, g[t], F::ZERO)
                            } else {
                                g[t] / self.count
                            };
                            // 0 + v when assigning, so that a dy of -0
                            // gives +0 as the sum does (and TensorFlow).
                            let sum = if self.assign {
                                F::ZERO + v
                            } else {
                                // SAFETY: without `assign`, y holds zeros
                                // and earlier windows' sums.
                                let old = unsafe { out[t].assume_init() };
                                old + v
                            };
                            out[t].write(sum);
                        }
                        pos += F::ONE;
                    }
                }
            }
        }
        c0 + L
    }
}

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], _dtype: DType) -> Result<CpuData> {
    let (Op::Pool(p) | Op::PoolGrad(p)) = op else {
        unreachable!()
    };
    let s = x[0].shape();
    let geom = p.geom(s)?;
    let n = numel(out);
    let dy = if let Op::PoolGrad(_) = op {
        Some(x[1].cpu_data())
    } else {
        None
    };
    // The max gradient keeps the argmax's window position in the value
    // type, exact in f32 only up to 2^24 positions: larger windows pool in
    // f64 (the maximum itself is exact either way).
    let positions = p.ksize[0].min(s[1]).saturating_mul(p.ksize[1].min(s[2]));
    if p.max && positions > 1 << 24 {
        if let (CpuData::F32(v), Some(CpuData::F32(g))) = (x[0].cpu_data(), dy) {
            let wide = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
            let d = pool_cpu(p, s, geom, &wide(v), Some(&wide(g)), n);
            return Ok(CpuData::F32(d.into_iter().map(|e| e as f32).collect()));
        }
    }
    Ok(match (x[0].cpu_data(), dy) {
        (CpuData::F32(v), None) => CpuData::F32(pool_cpu(p, s, geom, v, None, n)),
        (CpuData::F32(v), Some(CpuData::F32(g))) => CpuData::F32(pool_cpu(p, s, geom, v, Some(g), n)),
        (CpuData::F64(v), None) => CpuData::F64(pool_cpu(p, s, geom, v, None, n)),
        (CpuData::F64(v), Some(CpuData::F64(g))) => CpuData::F64(pool_cpu(p, s, geom, v, Some(g), n)),
        _ => unreachable!("f16 runs through f32; dtypes checked by infer"),
    })
}

#[cfg(test)]
mod tests {
    use crate::core::op::Pool2d;
    use crate::ops::conv::Padding;
    use crate::{Device, Tensor};

    /// A window of more than 2^24 positions (past f32's exact integers)
    /// still routes the gradient to the one maximum.
    #[test]
    fn max_gradient_of_a_huge_window_goes_to_one_element() {
        let side = 4097; // 4097^2 > 2^24
        let mut v = vec![0.0f32; side * side];
        let last = v.len() - 1;
        v[last] = 1.0;
        let x = Tensor::from_vec(v, &[1, side, side, 1], &Device::Cpu).unwrap();
        let dy = Tensor::from_vec(vec![1.0f32], &[1, 1, 1, 1], &Device::Cpu).unwrap();
        let p = Pool2d {
            max: true,
            ksize: [side, side],
            strides: [1, 1],
            padding: Padding::Valid,
        };
        let dx = crate::ops::pool::pool2d_grad(&x, &dy, &p)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(dx[last], 1.0);
        assert_eq!(dx.iter().sum::<f32>(), 1.0);
    }
}
