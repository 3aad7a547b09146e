//! Fused optimizer steps on the CPU: the element rule of `core::op::optim`
//! over every element, computed in f64.

use super::CpuData;
use crate::core::dtype::DType;
use crate::core::op::Update;
use crate::runtime::Operand;

/// (new variable, new slots...) from (variable, gradient, slots..., hyper, [norm]).
pub(crate) fn cpu(u: &Update, x: &[Operand], dtype: DType) -> Vec<CpuData> {
    let n = x[0].numel();
    let k = u.slots();
    let w = x[0].cpu_data().to_f64();
    let g = x[1].cpu_data().to_f64();
    let s: Vec<Vec<f64>> = (0..k).map(|i| x[2 + i].cpu_data().to_f64()).collect();
    let h = x[2 + k].cpu_data().to_f64();
    let hyper = [h[0], h[1]];
    let norm = if u.clip.is_some() {
        x[3 + k].cpu_data().to_f64()[0]
    } else {
        0.0
    };
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
