//! CPU reference kernels of 2-D convolution and its two gradients (NHWC
//! activations, HWIO filters, groups): im2col / col2im around a strided GEMM
//! ([`super::Gemm`]), batch entries in parallel. The geometry (padding,
//! dilation, groups) is [`crate::core::op::conv`]'s.

use super::{CpuData, Gemm};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::conv::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;

/// Patch matrix of group `gi`: rows (n, oh, ow), columns (kh, kw, ci).
/// Batch entries in parallel, each filling its own rows.
fn im2col<F: Gemm>(x: &[F], g: &Geom, gi: usize) -> Vec<F> {
    let k = g.kh * g.kw * g.cg;
    let per = g.oh * g.ow * k;
    let mut cols = vec![F::ZERO; g.n * per];
    if per == 0 {
        return cols;
    }
    cols.par_chunks_mut(per).enumerate().for_each(|(n, cn)| {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let row = (oh * g.ow + ow) * k;
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
                        let src = ((n * g.h + ih as usize) * g.w + iw as usize) * g.c + gi * g.cg;
                        let dst = row + (kh * g.kw + kw) * g.cg;
                        cn[dst..dst + g.cg].copy_from_slice(&x[src..src + g.cg]);
                    }
                }
            }
        }
    });
    cols
}

/// Adds a patch-matrix gradient back onto the input gradient of group `gi`;
/// batch entries in parallel, each adding into its own block of dx.
fn col2im<F: Gemm>(cols: &[F], dx: &mut [F], g: &Geom, gi: usize) {
    let k = g.kh * g.kw * g.cg;
    let per = g.h * g.w * g.c;
    if per == 0 {
        return;
    }
    dx.par_chunks_mut(per).enumerate().for_each(|(n, dn)| {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let row = ((n * g.oh + oh) * g.ow + ow) * k;
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
                        let d = (ih as usize * g.w + iw as usize) * g.c + gi * g.cg;
                        let s = row + (kh * g.kw + kw) * g.cg;
                        for c in 0..g.cg {
                            dn[d + c] += cols[s + c];
                        }
                    }
                }
            }
        }
    });
}

fn conv_cpu<F: Gemm>(op: &Op, g: &Geom, p: &[F], q: &[F]) -> Vec<F> {
    let m = g.n * g.oh * g.ow;
    let k = g.kh * g.kw * g.cg;
    let o = g.o as isize;
    match op {
        Op::Conv2d(_) => {
            let mut y = vec![F::ZERO; m * g.o];
            for gi in 0..g.g {
                let cols = im2col(p, g, gi);
                // SAFETY: cols is [m, k], f is [k, o] read at column offset
                // gi*og, y is [m, o] written at the same offset.
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
                        y.as_mut_ptr().add(gi * g.og),
                        o,
                        1,
                    );
                }
            }
            y
        }
        Op::Conv2dInputGrad(..) => {
            // p = dy [m, o], q = f [k, o]
            let mut dx = vec![F::ZERO; g.n * g.h * g.w * g.c];
            let mut cols = vec![F::ZERO; m * k];
            for gi in 0..g.g {
                // SAFETY: dy is [m, o] read at column offset gi*og; f read as
                // its transpose [og, k] at the same offset; cols is [m, k].
                unsafe {
                    F::gemm(
                        m,
                        g.og,
                        k,
                        p.as_ptr().add(gi * g.og),
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
                col2im(&cols, &mut dx, g, gi);
            }
            dx
        }
        Op::Conv2dFilterGrad(..) => {
            // p = x, q = dy [m, o]
            let mut df = vec![F::ZERO; k * g.o];
            for gi in 0..g.g {
                let cols = im2col(p, g, gi);
                // SAFETY: cols read as its transpose [k, m]; dy [m, o] and
                // df [k, o] at column offset gi*og.
                unsafe {
                    F::gemm(
                        k,
                        m,
                        g.og,
                        cols.as_ptr(),
                        1,
                        k as isize,
                        q.as_ptr().add(gi * g.og),
                        o,
                        1,
                        F::ZERO,
                        df.as_mut_ptr().add(gi * g.og),
                        o,
                        1,
                    );
                }
            }
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
