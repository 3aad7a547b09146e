//! CPU reference kernel of the unary family: [`UnaryOp::apply`] and
//! [`UnaryOp::derivative`] (for `UnaryGrad`) element by element.

use super::CpuData;
use super::arena::output_filled;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::unary::with_unary;
use crate::core::op::unary::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub(crate) fn cpu(op: &Op, x: &[Operand], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    #[inline(always)]
    fn grad<F: Float>(x: &[F], y: &[F], dy: &[F], d: impl Fn(F, F) -> F + Sync + Send) -> Vec<F> {
        let each = |(o, ((&v, &r), &g)): (&mut MaybeUninit<F>, ((&F, &F), &F))| {
            o.write(g * d(v, r));
        };
        // SAFETY: the three operands have the output's length (infer), so
        // the zips write every element.
        unsafe {
            output_filled(x.len(), |out| {
                if x.len() > 1 << 16 {
                    out.par_iter_mut().zip(x.par_iter().zip(y).zip(dy)).for_each(each);
                } else {
                    out.iter_mut().zip(x.iter().zip(y).zip(dy)).for_each(each);
                }
            })
        }
    }
    /// Large arrays use every core.
    #[inline(always)]
    fn map<F: Float>(v: &[F], f: impl Fn(F) -> F + Sync + Send) -> Vec<F> {
        // SAFETY: the zips write every element of an output as long as v.
        unsafe {
            output_filled(v.len(), |out| {
                if v.len() > 1 << 16 {
                    out.par_iter_mut().zip(v).for_each(|(o, &e)| {
                        o.write(f(e));
                    });
                } else {
                    out.iter_mut().zip(v).for_each(|(o, &e)| {
                        o.write(f(e));
                    });
                }
            })
        }
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
