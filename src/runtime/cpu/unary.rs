//! CPU reference kernel of the unary family: [`UnaryOp::apply`] and
//! [`UnaryOp::derivative`] (for `UnaryGrad`) element by element.

use super::CpuData;
use super::arena::output;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::unary::with_unary;
use crate::core::op::unary::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;

pub(crate) fn cpu(op: &Op, x: &[Operand], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    #[inline(always)]
    fn grad<F: Float>(x: &[F], y: &[F], dy: &[F], d: impl Fn(F, F) -> F + Sync + Send) -> Vec<F> {
        let mut out = output(x.len());
        let each = |(o, ((&v, &r), &g)): (&mut F, ((&F, &F), &F))| *o = g * d(v, r);
        if x.len() > 1 << 16 {
            out.par_iter_mut().zip(x.par_iter().zip(y).zip(dy)).for_each(each);
        } else {
            out.iter_mut().zip(x.iter().zip(y).zip(dy)).for_each(each);
        }
        out
    }
    /// Large arrays use every core.
    #[inline(always)]
    fn map<F: Float>(v: &[F], f: impl Fn(F) -> F + Sync + Send) -> Vec<F> {
        let mut out = output(v.len());
        if v.len() > 1 << 16 {
            out.par_iter_mut().zip(v).for_each(|(o, &e)| *o = f(e));
        } else {
            out.iter_mut().zip(v).for_each(|(o, &e)| *o = f(e));
        }
        out
    }
    Ok(match (op, x[0].cpu_data()) {
        (Op::Unary(u), CpuData::F32(v)) => with_unary!(*u, |k| CpuData::F32(map(v, |e| k.apply(e)))),
        (Op::Unary(u), CpuData::F64(v)) => CpuData::F64(map(v, |e| u.apply(e))),
        (Op::UnaryGrad(u), d) => match (d, x[1].cpu_data(), x[2].cpu_data()) {
            (CpuData::F32(a), CpuData::F32(b), CpuData::F32(c)) => {
                with_unary!(*u, |k| CpuData::F32(grad(a, b, c, |v, r| k.derivative(v, r))))
            }
            (CpuData::F64(a), CpuData::F64(b), CpuData::F64(c)) => {
                CpuData::F64(grad(a, b, c, |v, r| u.derivative(v, r)))
            }
            _ => unreachable!(),
        },
        _ => unreachable!("f16 runs through f32; ints are rejected by infer"),
    })
}
