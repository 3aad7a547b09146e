//! CPU kernels of the creation ops (fills and seeded random values, drawn
//! by [`crate::core::op::creation`]'s generator so every device agrees), and
//! the conversions between Rust vectors and [`super::CpuData`].

use super::CpuData;
use crate::core::dtype::{DType, Element};
use crate::core::error::Result;
use crate::core::op::*;
use crate::core::shape::*;
use half::{bf16, f16};
use rayon::prelude::*;
use std::any::Any;

pub(crate) fn to_cpu_data<T: Element>(data: Vec<T>) -> CpuData {
    let any: Box<dyn Any> = Box::new(data);
    let any = match any.downcast::<Vec<f32>>() {
        Ok(v) => return CpuData::F32(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<f64>>() {
        Ok(v) => return CpuData::F64(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<f16>>() {
        Ok(v) => return CpuData::F16(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<bf16>>() {
        Ok(v) => return CpuData::BF16(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<i32>>() {
        Ok(v) => return CpuData::I32(*v),
        Err(a) => a,
    };
    match any.downcast::<Vec<bool>>() {
        Ok(v) => CpuData::Bool(*v),
        Err(_) => unreachable!("Element is implemented only for f32, f64, f16, bf16, i32, bool"),
    }
}

pub(crate) fn from_cpu_data<T: Element>(d: CpuData) -> Vec<T> {
    let b: Box<dyn Any> = match d {
        CpuData::F32(v) => Box::new(v),
        CpuData::F16(v) => Box::new(v),
        CpuData::F64(v) => Box::new(v),
        CpuData::BF16(v) => Box::new(v),
        CpuData::I32(v) => Box::new(v),
        CpuData::Bool(v) => Box::new(v),
    };
    *b.downcast::<Vec<T>>().expect("dtype checked by the caller")
}

/// The values of a creation op (no inputs). Memory is reserved fallibly:
/// a fill the host cannot hold is `Error::OutOfMemory`, not an abort (a
/// few bytes of a model file can ask for any shape).
pub(crate) fn cpu(op: &Op) -> Result<CpuData> {
    match op {
        Op::Fill { shape, value, dtype } => fill(*dtype, numel(shape), *value),
        Op::Random(r) if r.dtype == DType::F32 => {
            // Drawn in pieces on every core, each value rounded from f64
            // as `CpuData::from_f64` rounds, into an output a graph
            // replay's arena serves.
            let n = numel(&r.shape);
            super::probe(n, "random")?;
            const PIECE: usize = 1 << 14;
            // SAFETY: the pieces cover all n elements, each written.
            let v = unsafe {
                super::arena::output_filled(n, |o| {
                    o.par_chunks_mut(PIECE).enumerate().for_each(|(c, piece)| {
                        for (j, o) in piece.iter_mut().enumerate() {
                            o.write(r.value((c * PIECE + j) as u64) as f32);
                        }
                    })
                })
            };
            Ok(CpuData::F32(v))
        }
        Op::Random(r) => {
            // The values are drawn in f64 first.
            let mut probe: Vec<f64> = Vec::new();
            super::reserve(&mut probe, numel(&r.shape), "random")?;
            drop(probe);
            Ok(CpuData::from_f64(r.dtype, &r.values()))
        }
        _ => unreachable!("not a creation op"),
    }
}

/// `n` copies of `value` converted to `dtype` (as `CpuData::from_f64`
/// converts), without an f64 vector in between.
fn fill(dtype: DType, n: usize, value: f64) -> Result<CpuData> {
    fn filled<T: Clone>(n: usize, x: &[T]) -> Result<Vec<T>> {
        let mut v = Vec::new();
        super::reserve(&mut v, n, "fill")?;
        if let Some(x) = x.first() {
            v.resize(n, x.clone());
        }
        Ok(v)
    }
    Ok(match CpuData::from_f64(dtype, &[value]) {
        CpuData::F32(x) => CpuData::F32(filled(n, &x)?),
        CpuData::F16(x) => CpuData::F16(filled(n, &x)?),
        CpuData::F64(x) => CpuData::F64(filled(n, &x)?),
        CpuData::BF16(x) => CpuData::BF16(filled(n, &x)?),
        CpuData::I32(x) => CpuData::I32(filled(n, &x)?),
        CpuData::Bool(x) => CpuData::Bool(filled(n, &x)?),
    })
}
