//! CPU kernels of the creation ops (fills and seeded random values, drawn
//! by [`crate::core::op::creation`]'s generator so every device agrees), and
//! the conversions between Rust vectors and [`super::CpuData`].

use super::CpuData;
use crate::core::dtype::Element;
use crate::core::op::*;
use crate::core::shape::*;
use half::{bf16, f16};
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

/// The values of a creation op (no inputs).
pub(crate) fn cpu(op: &Op) -> CpuData {
    match op {
        Op::Fill { shape, value, dtype } => CpuData::from_f64(*dtype, &vec![*value; numel(shape)]),
        Op::Random(r) => CpuData::from_f64(r.dtype, &r.values()),
        _ => unreachable!("not a creation op"),
    }
}
