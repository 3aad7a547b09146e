//! Fused optimizer steps on the CPU: the element rule of `core::op::optim`
//! over every element, computed in f64 and rounded to the variable's dtype.

use super::CpuData;
use super::arena::output;
use crate::core::dtype::DType;
use crate::core::op::{Rule, Update};
use crate::runtime::Operand;
use rayon::prelude::*;

/// Elements per parallel task: big enough that rayon's overhead vanishes,
/// small enough that a 2-core machine splits a 200k-element kernel.
const CHUNK: usize = 1 << 14;

/// (new variable, new slots...) from (variable, gradient, slots..., hyper, [norm]).
pub(crate) fn cpu(u: &Update, x: &[Operand], dtype: DType) -> Vec<CpuData> {
    let k = u.slots();
    let h = x[2 + k].cpu_data().to_f64();
    let hyper = [h[0], h[1]];
    let norm = if u.clip.is_some() {
        x[3 + k].cpu_data().to_f64()[0]
    } else {
        0.0
    };
    if let Some(out) = f32_step(u, x, k, norm, hyper) {
        return out;
    }
    let w = x[0].cpu_data().to_f64();
    let g = x[1].cpu_data().to_f64();
    let s: Vec<Vec<f64>> = (0..k).map(|i| x[2 + i].cpu_data().to_f64()).collect();
    let n = w.len();
    let mut ow = vec![0.0; n];
    let mut os = vec![vec![0.0; n]; k];
    for i in 0..n {
        let si = [s.first().map_or(0.0, |v| v[i]), s.get(1).map_or(0.0, |v| v[i])];
        let (nw, ns) = u.step(w[i], g[i], si, norm, hyper);
        ow[i] = nw;
        for j in 0..k {
            os[j][i] = ns[j];
        }
    }
    let mut out = vec![CpuData::from_f64(dtype, &ow)];
    out.extend(os.iter().map(|v| CpuData::from_f64(dtype, v)));
    out
}

/// The f32 case without f64 copies of the operands, in parallel chunks;
/// each element still steps in f64, so results equal the generic path's.
/// `None` for other dtypes.
fn f32_step(u: &Update, x: &[Operand], k: usize, norm: f64, hyper: [f64; 2]) -> Option<Vec<CpuData>> {
    let f32s = |i: usize| match x[i].cpu_data() {
        CpuData::F32(v) => Some(v.as_slice()),
        _ => None,
    };
    let (w, g) = (f32s(0)?, f32s(1)?);
    let s: Vec<&[f32]> = (0..k).map(|i| f32s(2 + i)).collect::<Option<_>>()?;
    let n = w.len();
    // Every element of each is written by its chunk's task.
    let mut ow = output::<f32>(n);
    let mut os: Vec<Vec<f32>> = (0..k).map(|_| output::<f32>(n)).collect();
    // One task per chunk: the variable's slice and each slot's.
    let mut tasks: Vec<(usize, &mut [f32], Vec<&mut [f32]>)> = ow
        .chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, o)| (c * CHUNK, o, Vec::with_capacity(k)))
        .collect();
    for slot in os.iter_mut() {
        for (t, o) in tasks.iter_mut().zip(slot.chunks_mut(CHUNK)) {
            t.2.push(o);
        }
    }
    let run = |(start, o, mut so): (usize, &mut [f32], Vec<&mut [f32]>)| {
        let end = start + o.len();
        let (w, g) = (&w[start..end], &g[start..end]);
        match (&s[..], &mut so[..]) {
            ([], []) => steps(u, w, g, [], o, [], norm, hyper),
            ([a], [p]) => steps(u, w, g, [&a[start..end]], o, [p], norm, hyper),
            ([a, b], [p, q]) => steps(u, w, g, [&a[start..end], &b[start..end]], o, [p, q], norm, hyper),
            _ => unreachable!("optimizer rules have at most two slots"),
        }
    };
    if n > CHUNK {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    let mut out = vec![CpuData::F32(ow)];
    out.extend(os.into_iter().map(CpuData::F32));
    Some(out)
}

/// One chunk with `K` slots. The rule is matched once outside the loop, so
/// each arm's loop is straight-line f64 arithmetic the compiler vectorizes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn steps<const K: usize>(
    u: &Update,
    w: &[f32],
    g: &[f32],
    s: [&[f32]; K],
    o: &mut [f32],
    mut so: [&mut [f32]; K],
    norm: f64,
    hyper: [f64; 2],
) {
    let go = |u: Update, o: &mut [f32], so: &mut [&mut [f32]; K]| {
        for i in 0..o.len() {
            let mut si = [0.0; 2];
            for j in 0..K {
                si[j] = s[j][i] as f64;
            }
            let (nw, ns) = u.step(w[i] as f64, g[i] as f64, si, norm, hyper);
            o[i] = nw as f32;
            for j in 0..K {
                so[j][i] = ns[j] as f32;
            }
        }
    };
    let u = *u;
    match u.rule {
        Rule::Sgd { .. } => go(u, o, &mut so),
        Rule::Adam { .. } => go(u, o, &mut so),
        Rule::RmsProp { .. } => go(u, o, &mut so),
    }
}
