//! CPU reference kernels of max and average 2-D pooling over NHWC and
//! their gradients; window geometry from [`crate::core::op::pool`], batch
//! entries in parallel. Max pooling routes the gradient to the first maximum of
//! each window.

use super::CpuData;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::pool::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;
use rayon::prelude::*;

/// The pooling (dy = None) or its gradient, on typed data; batch entries in
/// parallel (each writes its own block of y).
fn pool_cpu<F: Float>(p: &Pool2d, s: &[usize], geom: [usize; 4], xv: &[F], dy: Option<&[F]>, n_out: usize) -> Vec<F> {
    // The mode as a constant, so that each variant's channel loops are
    // branch-free.
    if p.max {
        pool_impl::<F, true>(p, s, geom, xv, dy, n_out)
    } else {
        pool_impl::<F, false>(p, s, geom, xv, dy, n_out)
    }
}

fn pool_impl<F: Float, const MAX: bool>(
    p: &Pool2d,
    s: &[usize],
    geom: [usize; 4],
    xv: &[F],
    dy: Option<&[F]>,
    n_out: usize,
) -> Vec<F> {
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let [oh, ow, pt, pl] = geom;
    let mut y = vec![F::ZERO; n_out];
    if n_out == 0 {
        return y;
    }
    let win = |o: usize, k: usize, st: usize, pad: usize, lim: usize| {
        let s0 = (o * st) as isize - pad as isize;
        (s0.max(0) as usize, ((s0 + k as isize).min(lim as isize)) as usize)
    };
    let max = MAX;
    y.par_chunks_mut(n_out / n).enumerate().for_each(|(b, yb)| {
        let xb = &xv[b * h * w * c..(b + 1) * h * w * c];
        // Per channel: the running maximum (or sum) and, for max pooling's
        // gradient, its position in the window.
        let mut acc = vec![F::ZERO; c];
        let mut arg = vec![F::ZERO; c];
        for i in 0..oh {
            let (h0, h1) = win(i, p.ksize[0], p.strides[0], pt, h);
            for j in 0..ow {
                let (w0, w1) = win(j, p.ksize[1], p.strides[1], pl, w);
                let count = F::of(((h1 - h0) * (w1 - w0)) as f64);
                let first = (h0 * w + w0) * c;
                // Window positions count from 0 in row-major order.
                let mut pos = F::ZERO;
                if max {
                    acc.copy_from_slice(&xb[first..first + c]);
                    arg.fill(F::ZERO);
                } else {
                    acc.fill(F::ZERO);
                }
                // Channels innermost: contiguous loads; the first maximum in
                // row-major window order wins.
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        let base = (ih * w + iw) * c;
                        let row = &xb[base..base + c];
                        if !max {
                            for (a, &e) in acc.iter_mut().zip(row) {
                                *a += e;
                            }
                        } else if dy.is_none() {
                            for (a, &e) in acc.iter_mut().zip(row) {
                                // The first NaN is the maximum (TF propagates
                                // NaN). `&` and `|`, not `&&` and `||`: no
                                // branches, so the loop vectorizes.
                                let take = !a.is_nan() & ((e > *a) | e.is_nan());
                                *a = F::select(take, e, *a);
                            }
                        } else {
                            // The gradient also keeps the maximum's window
                            // position, as a float: every lane the same width.
                            for ((a, &e), at) in acc.iter_mut().zip(row).zip(arg.iter_mut()) {
                                let take = !a.is_nan() & ((e > *a) | e.is_nan());
                                *a = F::select(take, e, *a);
                                *at = F::select(take, pos, *at);
                            }
                        }
                        pos = pos + F::ONE;
                    }
                }
                // dy is indexed over the whole batch.
                let o = ((b * oh + i) * ow + j) * c;
                match dy {
                    None => {
                        let o = (i * ow + j) * c;
                        for (ch, out) in yb[o..o + c].iter_mut().enumerate() {
                            *out = if max { acc[ch] } else { acc[ch] / count };
                        }
                    }
                    Some(g) if max => {
                        // A second pass adds dy where the window position
                        // is the maximum's: lane-wise selects, no scatter.
                        let g = &g[o..o + c];
                        let mut pos = F::ZERO;
                        for ih in h0..h1 {
                            for iw in w0..w1 {
                                let base = (ih * w + iw) * c;
                                let out = &mut yb[base..base + c];
                                for ((out, &at), &g) in out.iter_mut().zip(&arg[..c]).zip(g) {
                                    *out = *out + F::select(at == pos, g, F::ZERO);
                                }
                                pos = pos + F::ONE;
                            }
                        }
                    }
                    Some(g) => {
                        for ih in h0..h1 {
                            for iw in w0..w1 {
                                let base = (ih * w + iw) * c;
                                for ch in 0..c {
                                    yb[base + ch] += g[o + ch] / count;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    y
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
