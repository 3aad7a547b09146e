//! CPU reference kernels of softmax, log-softmax and the sparse softmax
//! cross-entropy and its gradient, numerically stable (the row maximum is
//! subtracted first). Out-of-range labels are the error of
//! [`crate::core::op::softmax`].

use super::CpuData;
use super::arena::{from_f64, with_scratch};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::softmax::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;
use rayon::prelude::*;

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], dtype: DType) -> Result<CpuData> {
    let (rows, r, inner) = match op {
        Op::Softmax { axis, .. } => view(x[0].shape(), *axis),
        _ => (x[0].shape()[0], x[0].shape()[1], 1),
    };
    with_scratch(x[0].numel(), |v: &mut [f64]| {
        x[0].cpu_data().write_f64(v);
        with_scratch(numel(out), |y: &mut [f64]| {
            fill(op, x, v, (rows, r, inner), y).map(|()| from_f64(dtype, y))
        })
    })
}

/// The f64 results of `op` over `v` (x[0] widened) into `y`.
fn fill(op: &Op, x: &[Operand], v: &[f64], (rows, r, inner): (usize, usize, usize), y: &mut [f64]) -> Result<()> {
    let stats = |base: usize| {
        let m = (0..r).map(|k| v[base + k * inner]).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..r).map(|k| (v[base + k * inner] - m).exp()).sum();
        (m, s)
    };
    match op {
        Op::Softmax { log, .. } => {
            if y.is_empty() {
                return Ok(());
            }
            // Rows in parallel: each owns a block of r * inner outputs.
            y.par_chunks_mut(r * inner).enumerate().for_each(|(row, yr)| {
                for b in 0..inner {
                    let base = row * r * inner + b;
                    let (m, s) = stats(base);
                    for k in 0..r {
                        let z = v[base + k * inner] - m;
                        yr[b + k * inner] = if *log { z - s.ln() } else { z.exp() / s };
                    }
                }
            });
        }
        _ => {
            let CpuData::I32(labels) = x[1].cpu_data() else {
                unreachable!()
            };
            if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= r) {
                return Err(label_error(bad, r as u32));
            }
            for row in 0..rows {
                let (m, s) = stats(row * r);
                let l = labels[row] as usize;
                if let Op::SparseXent = op {
                    y[row] = s.ln() + m - v[row * r + l];
                } else {
                    for k in 0..r {
                        y[row * r + k] = (v[row * r + k] - m).exp() / s - (k == l) as u8 as f64;
                    }
                }
            }
        }
    }
    Ok(())
}
