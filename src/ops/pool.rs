//! Max and average pooling 2-D over NHWC, and their gradients
//! (kernel: shaders/pool.wgsl).

use super::conv::{Padding, out_dim};
use super::{Op, Tol, exec};
use crate::device::cpu::{CpuData, Float};
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::numel;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub static POOL: Kernel = Kernel {
    name: "pool",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/pool.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

pub(crate) const TOL: Tol = Tol::new(1e-6, 1e-5);

#[derive(Clone, Debug, PartialEq)]
pub struct Pool2d {
    pub max: bool,
    pub ksize: [usize; 2],
    pub strides: [usize; 2],
    pub padding: Padding,
}

impl Pool2d {
    pub fn name(&self) -> &'static str {
        if self.max { "max_pool2d" } else { "avg_pool2d" }
    }
    pub fn grad_name(&self) -> &'static str {
        if self.max { "max_pool2d_grad" } else { "avg_pool2d_grad" }
    }

    /// [oh, ow, pad_top, pad_left] for an input [n, h, w, c].
    fn geom(&self, x: &[usize]) -> Result<[usize; 4]> {
        let op = self.name();
        if x.len() != 4 {
            return Err(Error::shape(op, &[x], "needs input [batch, height, width, channels]"));
        }
        if self.ksize.contains(&0) || self.strides.contains(&0) {
            return Err(Error::arg(
                op,
                format!("ksize {:?} and strides {:?} must be positive", self.ksize, self.strides),
            ));
        }
        let (ph, pw) = match self.padding {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => {
                if top.max(bottom) >= self.ksize[0] || left.max(right) >= self.ksize[1] {
                    return Err(Error::arg(
                        op,
                        format!(
                            "padding {:?} must be smaller than the window {:?}",
                            self.padding, self.ksize
                        ),
                    ));
                }
                (Some((top, bottom)), Some((left, right)))
            }
            _ => (None, None),
        };
        let same = self.padding == Padding::Same;
        let h = out_dim(op, x[1], self.ksize[0], self.strides[0], 1, ph, same)?;
        let w = out_dim(op, x[2], self.ksize[1], self.strides[1], 1, pw, same)?;
        Ok([h.out, w.out, h.pad_before, w.pad_before])
    }

    fn params(&self, x: &[usize], total: usize) -> Result<[u32; 16]> {
        let [oh, ow, pt, pl] = self.geom(x)?;
        Ok([
            x[0],
            x[1],
            x[2],
            x[3],
            oh,
            ow,
            self.ksize[0],
            self.ksize[1],
            self.strides[0],
            self.strides[1],
            pt,
            pl,
            total,
            self.max as usize,
            0,
            0,
        ]
        .map(|v| v as u32))
    }
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let a = x[0];
    if !a.dtype().is_float() {
        return Err(Error::dtype(name, &[a.dtype()], "needs a float tensor"));
    }
    match op {
        Op::Pool(p) => {
            let [oh, ow, ..] = p.geom(a.shape())?;
            Ok((vec![a.shape()[0], oh, ow, a.shape()[3]], a.dtype()))
        }
        Op::PoolGrad(p) => {
            let [oh, ow, ..] = p.geom(a.shape())?;
            let want = [a.shape()[0], oh, ow, a.shape()[3]];
            if x[1].shape() != want || x[1].dtype() != a.dtype() {
                return Err(Error::shape(
                    name,
                    &[a.shape(), x[1].shape()],
                    format!("the output gradient must be {want:?} of {}", a.dtype()),
                ));
            }
            Ok((a.shape().to_vec(), a.dtype()))
        }
        _ => unreachable!(),
    }
}

/// The pooling (dy = None) or its gradient, on typed data; batch entries in
/// parallel (each writes its own block of y).
fn pool_cpu<F: Float>(p: &Pool2d, s: &[usize], geom: [usize; 4], xv: &[F], dy: Option<&[F]>, n_out: usize) -> Vec<F> {
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
    y.par_chunks_mut(n_out / n).enumerate().for_each(|(b, yb)| {
        let xb = &xv[b * h * w * c..(b + 1) * h * w * c];
        let mut best = vec![0usize; c];
        let mut acc = vec![F::ZERO; c];
        for i in 0..oh {
            let (h0, h1) = win(i, p.ksize[0], p.strides[0], pt, h);
            for j in 0..ow {
                let (w0, w1) = win(j, p.ksize[1], p.strides[1], pl, w);
                let count = F::of(((h1 - h0) * (w1 - w0)) as f64);
                let first = (h0 * w + w0) * c;
                for ch in 0..c {
                    best[ch] = first + ch;
                    acc[ch] = F::ZERO;
                }
                // Channels innermost: contiguous loads; the first maximum in
                // row-major window order wins.
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        let base = (ih * w + iw) * c;
                        for ch in 0..c {
                            let e = xb[base + ch];
                            acc[ch] += e;
                            if e > xb[best[ch]] {
                                best[ch] = base + ch;
                            }
                        }
                    }
                }
                // dy is indexed over the whole batch.
                let o = ((b * oh + i) * ow + j) * c;
                match dy {
                    None => {
                        let o = (i * ow + j) * c;
                        for ch in 0..c {
                            yb[o + ch] = if p.max { xb[best[ch]] } else { acc[ch] / count };
                        }
                    }
                    Some(g) if p.max => {
                        for ch in 0..c {
                            yb[best[ch]] += g[o + ch];
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

pub(crate) fn cpu(op: &Op, x: &[&Tensor], out: &[usize], _dtype: DType) -> Result<CpuData> {
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
    Ok(match (x[0].cpu_data(), dy) {
        (CpuData::F32(v), None) => CpuData::F32(pool_cpu(p, s, geom, v, None, n)),
        (CpuData::F32(v), Some(CpuData::F32(g))) => CpuData::F32(pool_cpu(p, s, geom, v, Some(g), n)),
        (CpuData::F64(v), None) => CpuData::F64(pool_cpu(p, s, geom, v, None, n)),
        (CpuData::F64(v), Some(CpuData::F64(g))) => CpuData::F64(pool_cpu(p, s, geom, v, Some(g), n)),
        _ => unreachable!("f16 runs through f32; dtypes checked by infer"),
    })
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let (Op::Pool(p) | Op::PoolGrad(p)) = op else {
        unreachable!()
    };
    let n = numel(out);
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    let params = p.params(x[0].shape(), n)?;
    let (entry, bufs): (&'static str, Vec<&GpuBuf>) = match op {
        Op::Pool(_) => ("forward", vec![x[0].gpu_buf(), &y]),
        _ => ("backward", vec![x[0].gpu_buf(), &y, x[1].gpu_buf()]),
    };
    g.launch(&Launch {
        kernel: &POOL,
        entry,
        ty: super::ktype(dtype),
        consts: &[],
        params: &params,
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}

/// Gradient rules: a pooling's gradient is its `PoolGrad`; an average
/// pool's gradient is linear in dy, so its own gradient is the pool again.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Pool(p) => Ok(vec![Some(exec(Op::PoolGrad(p.clone()), &[x[0], dy])?)]),
        Op::PoolGrad(p) if !p.max => Ok(vec![None, Some(exec(Op::Pool(p.clone()), &[dy])?)]),
        _ => Err(Error::arg(
            op.name(),
            "the second derivative of max pooling is not implemented",
        )),
    }
}

/// `tf.nn.max_pool2d(input, ksize, strides, padding)`.
pub fn max_pool2d(x: &Tensor, ksize: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    exec(
        Op::Pool(Pool2d {
            max: true,
            ksize,
            strides,
            padding,
        }),
        &[x],
    )
}

/// `tf.nn.avg_pool2d(input, ksize, strides, padding)`.
pub fn avg_pool2d(x: &Tensor, ksize: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    exec(
        Op::Pool(Pool2d {
            max: false,
            ksize,
            strides,
            padding,
        }),
        &[x],
    )
}

/// Gradient of a pooling with respect to its input `x`, given `dy`.
pub fn pool2d_grad(x: &Tensor, dy: &Tensor, pool: &Pool2d) -> Result<Tensor> {
    exec(Op::PoolGrad(pool.clone()), &[x, dy])
}
