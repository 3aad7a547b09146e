//! Graph compilation: dead-op elimination, then fusion of elementwise ops.
//!
//! Fusion: a group is a set of f32 elementwise ops (unary, their gradients,
//! binary arithmetic, `broadcast_to`) whose intermediate results are used
//! only inside the group. Every op of a group is evaluated at each
//! coordinate of the group's output (broadcasting commutes with elementwise
//! math), reading the group's inputs ("leaves") through their broadcast
//! strides, which are known at compile time and written into the kernel as
//! constants. A sum, mean, max or min over a contiguous block of axes that
//! consumes the group's result joins it too, so `0.5 * sum((a x + b - y)^2)`
//! is one kernel. The kernel's WGSL entry point is generated from the group's
//! expression (it calls the shared op library, shaders/elementwise.wgsl) and
//! validated by naga before use; the CPU runs the same expression with the
//! CPU reference's op functions.

use super::graph::{Graph, Node, Source};
use crate::Device;
use crate::device::cpu::CpuData;
use crate::device::gpu::{KType, Kernel, Launch, grid};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::ops::binary::BinaryOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use crate::shape::{broadcast_strides, numel, strides};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

pub(crate) fn compile(g: &mut Graph) -> Result<()> {
    eliminate_dead(g);
    fuse(g)
}

/// Drops ops whose results reach no output and no assignment.
fn eliminate_dead(g: &mut Graph) {
    let mut live: HashSet<usize> = g.outputs.iter().copied().collect();
    live.extend(g.assigns.iter().map(|(_, v)| *v));
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs().iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(n.inputs().iter().copied());
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    g.sources
        .retain(|(v, s)| live.contains(v) || matches!(s, Source::Arg(_) | Source::Host(_)));
}

/// A reference to a fused op's operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Arg {
    Leaf(usize),
    Tmp(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FOp {
    Const(f32),
    Unary(UnaryOp, Arg),
    UnaryGrad(UnaryOp, Arg, Arg, Arg),
    Binary(BinaryOp, Arg, Arg),
}

/// One fused kernel: the expression, its leaves' shapes, the elementwise
/// shape and an optional trailing reduction over axes [lo, hi].
pub(crate) struct Fused {
    ops: Vec<FOp>,
    leaves: Vec<Vec<usize>>,
    shape: Vec<usize>,
    reduce: Option<(ReduceOp, usize, usize)>,
    kernel: OnceLock<&'static Kernel>,
}

impl Fused {
    pub(crate) fn len(&self) -> usize {
        self.ops.len() + self.reduce.is_some() as usize
    }

    /// The ops covered, in order ("mul add ... | reduce_sum").
    pub(crate) fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .ops
            .iter()
            .map(|o| match o {
                FOp::Const(c) => format!("{c}"),
                FOp::Unary(u, _) => u.name().into(),
                FOp::UnaryGrad(u, ..) => u.grad_name().into(),
                FOp::Binary(b, ..) => b.name().into(),
            })
            .collect();
        if let Some((r, ..)) = self.reduce {
            names.push(format!("| {}", r.name()));
        }
        names.join(" ")
    }
}

fn fusible(op: &Op) -> bool {
    match op {
        Op::Unary(u) | Op::UnaryGrad(u) => !matches!(u, UnaryOp::LeakyRelu(_)),
        Op::Binary(b) => !matches!(b, BinaryOp::LogicalAnd | BinaryOp::LogicalOr | BinaryOp::LogicalXor),
        Op::BroadcastTo(_) | Op::Fill { .. } => true,
        _ => false,
    }
}

/// The shape without leading 1s: shapes with the same core broadcast alike.
fn core(s: &[usize]) -> &[usize] {
    &s[s.iter().take_while(|&&d| d == 1).count()..]
}

/// Whether node `n` may join a fused group: an f32 elementwise op, or a
/// reshape that only adds or drops leading 1s (or of a single element).
fn eligible(g: &Graph, n: &Node) -> bool {
    let Node::Op { op, inputs, outputs } = n else {
        return false;
    };
    let f32s = outputs.len() == 1
        && g.values[outputs[0]].dtype == DType::F32
        && inputs.iter().all(|&v| g.values[v].dtype == DType::F32);
    if !f32s {
        return false;
    }
    match op {
        Op::Reshape(to) => {
            let from = &g.values[inputs[0]].shape;
            numel(from) == 1 || core(from) == core(to)
        }
        op => fusible(op),
    }
}

fn fusible_reduce(op: &Op) -> Option<(ReduceOp, &[usize])> {
    match op {
        Op::Reduce {
            op: r @ (ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min),
            axes,
            ..
        } if !axes.is_empty() && axes.windows(2).all(|w| w[1] == w[0] + 1) => Some((*r, axes)),
        _ => None,
    }
}

/// Fuses elementwise ops. Roots are the results that must exist as tensors
/// (outputs, assigned values, inputs of other ops) and the reductions fed
/// by elementwise ops; each root's group takes in every elementwise op it
/// depends on, up to results that are roots themselves. An op used by
/// several groups is computed in each (cheap next to a launch and a round
/// trip through memory), and disappears when every use is inside fused
/// groups.
fn fuse(g: &mut Graph) -> Result<()> {
    let n = g.nodes.len();
    let ok: Vec<bool> = g.nodes.iter().map(|node| eligible(g, node)).collect();
    let prod: HashMap<usize, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, node)| node.outputs().into_iter().map(move |o| (o, i)))
        .collect();
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        for &v in node.inputs() {
            consumers.entry(v).or_default().push(i);
        }
    }
    let exported: HashSet<usize> = g
        .outputs
        .iter()
        .copied()
        .chain(g.assigns.iter().map(|(_, v)| *v))
        .collect();
    let reduce_of = |i: usize| -> Option<(ReduceOp, usize, usize)> {
        let Node::Op { op, inputs, outputs } = &g.nodes[i] else {
            return None;
        };
        let (r, axes) = fusible_reduce(op)?;
        let src = *prod.get(&inputs[0])?;
        (ok[src] && g.values[outputs[0]].dtype == DType::F32 && numel(&g.values[inputs[0]].shape) > 0)
            .then(|| (r, axes[0], *axes.last().unwrap()))
    };
    // Results that must be materialized.
    let mut root = vec![false; n];
    for i in 0..n {
        if !ok[i] {
            continue;
        }
        let out = g.nodes[i].outputs()[0];
        let outside = consumers
            .get(&out)
            .is_some_and(|cs| cs.iter().any(|&c| !ok[c] && reduce_of(c).is_none()));
        root[i] = exported.contains(&out) || outside;
    }
    let max_leaves = g
        .values
        .first()
        .and_then(|v| v.device.max_storage_buffers())
        .map_or(7, |m| m.saturating_sub(1).clamp(2, 15));
    let mut fused_at: HashMap<usize, Node> = HashMap::new();
    let mut absorbed: HashSet<usize> = HashSet::new();
    for i in 0..n {
        let reduce = if root[i] { None } else { reduce_of(i) };
        if !root[i] && reduce.is_none() {
            continue;
        }
        // The elementwise root: the node itself, or the reduction's input.
        let top = match reduce {
            Some(_) => {
                let Node::Op { inputs, .. } = &g.nodes[i] else {
                    unreachable!()
                };
                prod[&inputs[0]]
            }
            None => i,
        };
        if reduce.is_some() && root[top] {
            // The input is materialized anyway: a plain reduction reads it.
            continue;
        }
        // Collect the group: `top` and every non-root elementwise producer.
        let mut members = vec![top];
        let mut seen: HashSet<usize> = HashSet::from([top]);
        let mut stack = vec![top];
        while let Some(m) = stack.pop() {
            for &v in g.nodes[m].inputs() {
                if let Some(&p) = prod.get(&v) {
                    if ok[p] && !root[p] && seen.insert(p) {
                        members.push(p);
                        stack.push(p);
                    }
                }
            }
        }
        members.sort_unstable();
        // Worth a generated kernel only when it replaces more than one launch.
        if members.len() + (reduce.is_some() as usize) < 2 {
            continue;
        }
        let (fused, leaves) = build(g, &members, reduce)?;
        if fused.ops.is_empty() || leaves.len() > max_leaves || numel(&fused.shape) == 0 {
            continue;
        }
        let output = g.nodes[i].outputs()[0];
        for &m in &members {
            if m != i {
                absorbed.insert(m);
            }
        }
        fused_at.insert(
            i,
            Node::Fused {
                kernel: fused,
                inputs: leaves,
                output,
            },
        );
    }
    // A node disappears when each of its consumers is fused (it is computed
    // inside that group) or has disappeared itself.
    let mut removed: HashSet<usize> = HashSet::new();
    for m in (0..n).rev() {
        if !absorbed.contains(&m) || root[m] {
            continue;
        }
        let out = g.nodes[m].outputs()[0];
        let covered = consumers
            .get(&out)
            .is_some_and(|cs| cs.iter().all(|c| removed.contains(c) || fused_at.contains_key(c)));
        if covered && !exported.contains(&out) {
            removed.insert(m);
        }
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, node) in old.into_iter().enumerate() {
        if let Some(f) = fused_at.remove(&i) {
            g.nodes.push(f);
        } else if !removed.contains(&i) {
            g.nodes.push(node);
        }
    }
    Ok(())
}

/// The expression of a group (members in graph order) and its leaf values.
fn build(g: &Graph, members: &[usize], reduce: Option<(ReduceOp, usize, usize)>) -> Result<(Fused, Vec<usize>)> {
    let mut leaves: Vec<usize> = Vec::new();
    let mut tmp_of: HashMap<usize, Arg> = HashMap::new();
    let mut ops = Vec::new();
    let root_out = g.nodes[*members.last().unwrap()].outputs()[0];
    let shape = g.values[root_out].shape.clone();
    let arg = |v: usize, leaves: &mut Vec<usize>, tmp_of: &HashMap<usize, Arg>| -> Arg {
        if let Some(a) = tmp_of.get(&v) {
            return *a;
        }
        match leaves.iter().position(|&l| l == v) {
            Some(i) => Arg::Leaf(i),
            None => {
                leaves.push(v);
                Arg::Leaf(leaves.len() - 1)
            }
        }
    };
    for &m in members {
        let Node::Op { op, inputs, outputs } = &g.nodes[m] else {
            unreachable!()
        };
        let a: Vec<Arg> = inputs.iter().map(|&v| arg(v, &mut leaves, &tmp_of)).collect();
        let res = match op {
            // A broadcast is a view: its value at a coordinate is its input's.
            // Views: the value at a coordinate is the input's.
            Op::BroadcastTo(_) | Op::Reshape(_) => a[0],
            Op::Fill { value, .. } => {
                ops.push(FOp::Const(*value as f32));
                Arg::Tmp(ops.len() - 1)
            }
            Op::Unary(u) => {
                ops.push(FOp::Unary(*u, a[0]));
                Arg::Tmp(ops.len() - 1)
            }
            Op::UnaryGrad(u) => {
                ops.push(FOp::UnaryGrad(*u, a[0], a[1], a[2]));
                Arg::Tmp(ops.len() - 1)
            }
            Op::Binary(b) => {
                ops.push(FOp::Binary(*b, a[0], a[1]));
                Arg::Tmp(ops.len() - 1)
            }
            _ => unreachable!("only fusible ops join groups"),
        };
        tmp_of.insert(outputs[0], res);
    }
    // The result: the last op, or a leaf when the group only forwards one.
    let result = tmp_of[&root_out];
    if let Arg::Leaf(_) = result {
        return Err(Error::arg("function", "internal: a fused group without an op"));
    }
    let leaf_shapes = leaves.iter().map(|&v| g.values[v].shape.clone()).collect();
    Ok((
        Fused {
            ops,
            leaves: leaf_shapes,
            shape,
            reduce,
            kernel: OnceLock::new(),
        },
        leaves,
    ))
}

/// A bit-exact f32 literal.
fn wgsl_f32(c: f32) -> String {
    format!("bitcast<f32>({}u)", c.to_bits())
}

fn unary_code(u: UnaryOp) -> u32 {
    UnaryOp::ALL
        .iter()
        .position(|o| std::mem::discriminant(o) == std::mem::discriminant(&u))
        .unwrap() as u32
}

impl Fused {
    /// (outer, r, inner) of the trailing reduction over the elementwise shape.
    fn block(&self) -> Option<(ReduceOp, usize, usize, usize)> {
        self.reduce.map(|(r, lo, hi)| {
            let s = &self.shape;
            (
                r,
                s[..lo].iter().product(),
                s[lo..=hi].iter().product(),
                s[hi + 1..].iter().product(),
            )
        })
    }

    /// WGSL expression reading leaf `k` at linear index `i` of the elementwise shape.
    fn load(&self, k: usize) -> String {
        let ls = &self.leaves[k];
        let n = numel(&self.shape);
        if numel(ls) == n {
            return format!("f32(l{k}[i])");
        }
        if numel(ls) == 1 {
            return format!("f32(l{k}[0])");
        }
        let core: Vec<usize> = ls.iter().copied().skip_while(|&d| d == 1).collect();
        if self.shape.ends_with(&core) {
            return format!("f32(l{k}[i % {}u])", numel(&core));
        }
        let bs = broadcast_strides(ls, &self.shape);
        let os = strides(&self.shape);
        let mut idx = String::from("0u");
        for d in 0..self.shape.len() {
            if bs[d] != 0 {
                let _ = write!(idx, " + ((i / {}u) % {}u) * {}u", os[d], self.shape[d], bs[d]);
            }
        }
        format!("f32(l{k}[{idx}])")
    }

    fn source(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "// Generated by a compiled graph: {} fused ops.", self.len());
        for k in 0..self.leaves.len() {
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read> l{k}: array<T>;", k + 1);
        }
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> out: array<T>;",
            self.leaves.len() + 1
        );
        let _ = writeln!(s, "\nfn expr(i: u32) -> f32 {{");
        let arg = |a: &Arg, loads: &[String]| match a {
            Arg::Leaf(k) => loads[*k].clone(),
            Arg::Tmp(t) => format!("t{t}"),
        };
        let loads: Vec<String> = (0..self.leaves.len()).map(|k| self.load(k)).collect();
        for (t, op) in self.ops.iter().enumerate() {
            let e = match op {
                FOp::Const(c) => wgsl_f32(*c),
                FOp::Unary(u, a) => format!("unary_apply({}u, {}, 0.0)", unary_code(*u), arg(a, &loads)),
                FOp::UnaryGrad(u, x, y, dy) => format!(
                    "{} * unary_deriv({}u, {}, {}, 0.0)",
                    arg(dy, &loads),
                    unary_code(*u),
                    arg(x, &loads),
                    arg(y, &loads)
                ),
                FOp::Binary(b, x, y) => format!("binary_apply({}u, {}, {})", *b as u32, arg(x, &loads), arg(y, &loads)),
            };
            let _ = writeln!(s, "    let t{t} = {e};");
        }
        let _ = writeln!(s, "    return t{};\n}}\n", self.ops.len() - 1);
        match self.block() {
            None => {
                let n = numel(&self.shape);
                let _ = writeln!(
                    s,
                    "@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    let i = linear_index(gid, nwg);\n    if (i < {n}u) {{\n        out[i] = T(expr(i));\n    }}\n}}"
                );
            }
            Some((r, outer, len, inner)) => {
                let (init, comb, fin) = match r {
                    ReduceOp::Sum => ("expr(base)", "acc + v", "acc".to_string()),
                    ReduceOp::Mean => ("expr(base)", "acc + v", format!("acc / {len}.0")),
                    ReduceOp::Max => ("expr(base)", "max(acc, v)", "acc".to_string()),
                    _ => ("expr(base)", "min(acc, v)", "acc".to_string()),
                };
                let _ = writeln!(
                    s,
                    "@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    let o = linear_index(gid, nwg);\n    if (o >= {}u) {{\n        return;\n    }}\n    let base = (o / {inner}u) * {}u + o % {inner}u;\n    var acc = {init};\n    for (var k = 1u; k < {len}u; k++) {{\n        let v = expr(base + k * {inner}u);\n        acc = {comb};\n    }}\n    out[o] = T({fin});\n}}",
                    outer * inner,
                    len * inner
                );
            }
        }
        s
    }

    /// The generated kernel (built once; identical sources share one).
    fn kernel(&self) -> Result<&'static Kernel> {
        if let Some(k) = self.kernel.get() {
            return Ok(k);
        }
        static CACHE: Mutex<Option<HashMap<String, &'static Kernel>>> = Mutex::new(None);
        let src = self.source();
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let map = cache.get_or_insert_with(HashMap::new);
        let k = match map.get(&src) {
            Some(k) => *k,
            None => {
                // Kernels live as long as the pipelines cached for them: for the process.
                let name: &'static str = Box::leak(format!("fused_{}", map.len()).into_boxed_str());
                let body: &'static str = Box::leak(src.clone().into_boxed_str());
                let sources: &'static [&'static str] = Box::leak(
                    vec![
                        include_str!("../../shaders/common.wgsl"),
                        include_str!("../../shaders/elementwise.wgsl"),
                        body,
                    ]
                    .into_boxed_slice(),
                );
                let k: &'static Kernel = Box::leak(Box::new(Kernel {
                    name,
                    sources,
                    types: &[KType::F32],
                }));
                // Checked by naga now, so a bad generated kernel is an error here.
                k.validate(KType::F32)?;
                map.insert(src, k);
                k
            }
        };
        let _ = self.kernel.set(k);
        Ok(k)
    }

    /// Runs the fused kernel on its leaves.
    pub(crate) fn run(&self, x: &[Tensor], shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n_out = numel(shape);
        match device {
            Device::Cpu => Ok(Tensor::from_cpu(CpuData::F32(self.cpu(x)), shape.to_vec())),
            Device::Gpu(g) => {
                let k = self.kernel()?;
                let y = g.alloc("fused", (n_out * dtype.size()) as u64)?;
                let mut bufs: Vec<&crate::device::memory::GpuBuf> = x.iter().map(|t| t.gpu_buf()).collect();
                bufs.push(&y);
                g.launch(&Launch {
                    kernel: k,
                    entry: "main",
                    ty: KType::F32,
                    consts: &[],
                    params: &[],
                    bufs: &bufs,
                    groups: grid(n_out, 256),
                })?;
                Ok(Tensor::from_gpu(y, shape.to_vec(), dtype, device))
            }
        }
    }

    /// The CPU reference of the fused expression: the same ops, in f32.
    fn cpu(&self, x: &[Tensor]) -> Vec<f32> {
        let data: Vec<&[f32]> = x
            .iter()
            .map(|t| match t.cpu_data() {
                CpuData::F32(v) => v.as_slice(),
                _ => unreachable!("fused groups are f32"),
            })
            .collect();
        let n = numel(&self.shape);
        let os = strides(&self.shape);
        let bst: Vec<Vec<usize>> = self.leaves.iter().map(|l| broadcast_strides(l, &self.shape)).collect();
        let at = |k: usize, i: usize| -> f32 {
            let v = data[k];
            if v.len() == n {
                return v[i];
            }
            let mut off = 0;
            for d in 0..self.shape.len() {
                off += ((i / os[d]) % self.shape[d]) * bst[k][d];
            }
            v[off]
        };
        let mut tmp = vec![0f32; self.ops.len()];
        let mut expr = |i: usize| -> f32 {
            for (t, op) in self.ops.iter().enumerate() {
                let get = |a: &Arg, tmp: &[f32]| match a {
                    Arg::Leaf(k) => at(*k, i),
                    Arg::Tmp(j) => tmp[*j],
                };
                tmp[t] = match op {
                    FOp::Const(c) => *c,
                    FOp::Unary(u, a) => u.apply(get(a, &tmp)),
                    FOp::UnaryGrad(u, xa, ya, da) => get(da, &tmp) * u.derivative(get(xa, &tmp), get(ya, &tmp)),
                    FOp::Binary(b, p, q) => b.float_op(get(p, &tmp), get(q, &tmp)),
                };
            }
            tmp[self.ops.len() - 1]
        };
        match self.block() {
            None => (0..n).map(expr).collect(),
            Some((r, outer, len, inner)) => {
                let mut out = Vec::with_capacity(outer * inner);
                for o in 0..outer * inner {
                    let base = (o / inner) * len * inner + o % inner;
                    let mut acc = expr(base) as f64;
                    for k in 1..len {
                        let v = expr(base + k * inner) as f64;
                        acc = match r {
                            ReduceOp::Sum | ReduceOp::Mean => acc + v,
                            ReduceOp::Max => acc.max(v),
                            _ => acc.min(v),
                        };
                    }
                    if r == ReduceOp::Mean {
                        acc /= len as f64;
                    }
                    out.push(acc as f32);
                }
                out
            }
        }
    }
}
