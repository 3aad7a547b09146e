//! CPU reference kernel of batched matmul with broadcast batch dimensions
//! and transpose flags: each batch entry is one strided GEMM
//! ([`super::Gemm`], the `gemm` crate), so transposes cost no copy.

use super::arena::output;
use super::{CpuData, Gemm};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::matmul::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], _dtype: DType) -> Result<CpuData> {
    let Op::MatMul { ta, tb } = *op else {
        return Ok(CpuData::F32(int8(x, out)));
    };
    let (a, b) = (x[0], x[1]);
    let (m, n, k, _) = dims(ta, tb, a.shape(), b.shape());
    let ob = &out[..out.len() - 2];
    // Batch offsets through broadcast strides over the output batch.
    let sa = broadcast_strides(&a.shape()[..a.rank() - 2], ob);
    let sb = broadcast_strides(&b.shape()[..b.rank() - 2], ob);
    let (lda, ldb) = (a.shape()[a.rank() - 1], b.shape()[b.rank() - 1]);
    let (rsa, csa) = if ta { (1, lda) } else { (lda, 1) };
    let (rsb, csb) = if tb { (1, ldb) } else { (ldb, 1) };
    let offsets = |st: &[usize], mat: usize| -> Vec<usize> {
        crate::core::shape::StridedIter::new(ob, st, 0)
            .map(|i| i * mat)
            .collect()
    };
    let oa = offsets(&sa, m * k);
    let obb = offsets(&sb, k * n);
    fn run<F: Gemm>(
        av: &[F],
        bv: &[F],
        oa: &[usize],
        ob: &[usize],
        m: usize,
        n: usize,
        k: usize,
        st: [usize; 4],
    ) -> Vec<F> {
        // Every element is written: the GEMMs run with beta = 0.
        let mut c = output::<F>(oa.len() * m * n);
        if m * n == 0 {
            return c;
        }
        for i in 0..oa.len() {
            // SAFETY: infer checked the operand shapes, so every index a GEMM
            // with these dims and strides touches lies inside the slices.
            unsafe {
                F::par_gemm(
                    m,
                    k,
                    n,
                    av.as_ptr().add(oa[i]),
                    st[0] as isize,
                    st[1] as isize,
                    bv.as_ptr().add(ob[i]),
                    st[2] as isize,
                    st[3] as isize,
                    F::ZERO,
                    c.as_mut_ptr().add(i * m * n),
                    n as isize,
                    1,
                );
            }
        }
        c
    }
    let st = [rsa, csa, rsb, csb];
    Ok(match (a.cpu_data(), b.cpu_data()) {
        (CpuData::F32(av), CpuData::F32(bv)) => CpuData::F32(run(av, bv, &oa, &obb, m, n, k, st)),
        (CpuData::F64(av), CpuData::F64(bv)) => CpuData::F64(run(av, bv, &oa, &obb, m, n, k, st)),
        _ => unreachable!(),
    })
}

/// `matmul_int8`: the weights dequantized (`[N, K]`), then one GEMM over
/// every row of `a` against their transpose.
fn int8(x: &[Operand], out: &[usize]) -> Vec<f32> {
    let k = x[0].shape().last().copied().unwrap_or(0);
    let n = out.last().copied().unwrap_or(0);
    let rows = numel(&out[..out.len() - 1]);
    let w = super::layout::dequantize(&x[1], &x[2], k);
    let CpuData::F32(a) = x[0].cpu_data() else {
        unreachable!()
    };
    let mut c = output::<f32>(rows * n);
    if rows * n == 0 {
        return c;
    }
    // SAFETY: a is [rows, k], w is [n, k] read as its transpose, c is [rows, n].
    unsafe {
        f32::par_gemm(
            rows,
            k,
            n,
            a.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}
