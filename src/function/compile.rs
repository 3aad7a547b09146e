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
}

fn fusible(op: &Op) -> bool {
    match op {
        Op::Unary(u) => !matches!(u, UnaryOp::LeakyRelu(_)),
        Op::UnaryGrad(u) => !matches!(u, UnaryOp::LeakyRelu(_)),
        Op::Binary(b) => !matches!(b, BinaryOp::LogicalAnd | BinaryOp::LogicalOr | BinaryOp::LogicalXor),
        Op::BroadcastTo(_) => true,
        _ => false,
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

fn fuse(g: &mut Graph) -> Result<()> {
    let is_f32 = |v: usize| g.values[v].dtype == DType::F32;
    // Consumers of every value; outputs and assignments count as outside uses.
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in n.inputs() {
            consumers.entry(v).or_default().push(i);
        }
    }
    let exported: HashSet<usize> = g
        .outputs
        .iter()
        .copied()
        .chain(g.assigns.iter().map(|(_, v)| *v))
        .collect();
    let eligible: Vec<bool> = g
        .nodes
        .iter()
        .map(|n| match n {
            Node::Op { op, inputs, outputs } => {
                fusible(op) && outputs.len() == 1 && is_f32(outputs[0]) && inputs.iter().all(|&v| is_f32(v))
            }
            _ => false,
        })
        .collect();
    let mut group_of: Vec<Option<usize>> = vec![None; g.nodes.len()];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    // Grow groups from their last op backwards.
    for root in (0..g.nodes.len()).rev() {
        if !eligible[root] || group_of[root].is_some() {
            continue;
        }
        let gi = groups.len();
        group_of[root] = Some(gi);
        let mut members = vec![root];
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            for &v in g.nodes[n].inputs() {
                let Some(p) = producer(&g.nodes, v) else { continue };
                if !eligible[p] || group_of[p].is_some() || exported.contains(&v) {
                    continue;
                }
                // Every use of the producer's value must be inside the group.
                if consumers[&v].iter().all(|c| group_of[*c] == Some(gi)) {
                    group_of[p] = Some(gi);
                    members.push(p);
                    stack.push(p);
                }
            }
        }
        members.sort_unstable();
        groups.push(members);
    }
    // Build fused nodes; a group replaces its root, a trailing reduction
    // replaces the reduce node.
    let mut replace: HashMap<usize, Node> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for members in groups {
        let root = *members.last().unwrap();
        let root_out = g.nodes[root].outputs()[0];
        let mut reduce_at = None;
        if let Some(uses) = consumers.get(&root_out) {
            if uses.len() == 1 && !exported.contains(&root_out) {
                if let Node::Op { op, outputs, .. } = &g.nodes[uses[0]] {
                    if let Some((r, axes)) = fusible_reduce(op) {
                        if is_f32(outputs[0]) {
                            reduce_at = Some((uses[0], r, axes[0], *axes.last().unwrap(), outputs[0]));
                        }
                    }
                }
            }
        }
        let ops_in_group = members
            .iter()
            .filter(|&&m| {
                !matches!(
                    g.nodes[m],
                    Node::Op {
                        op: Op::BroadcastTo(_),
                        ..
                    }
                )
            })
            .count();
        if ops_in_group + (reduce_at.is_some() as usize) < 2 {
            continue;
        }
        let (fused, leaves) = build(g, &members, reduce_at.map(|(_, r, lo, hi, _)| (r, lo, hi)))?;
        for &m in &members {
            removed.insert(m);
        }
        let (at, output) = match reduce_at {
            Some((node, _, _, _, out)) => {
                removed.insert(node);
                (node, out)
            }
            None => (root, root_out),
        };
        removed.remove(&at);
        replace.insert(
            at,
            Node::Fused {
                kernel: fused,
                inputs: leaves,
                output,
            },
        );
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, n) in old.into_iter().enumerate() {
        if let Some(f) = replace.remove(&i) {
            g.nodes.push(f);
        } else if !removed.contains(&i) {
            g.nodes.push(n);
        }
    }
    Ok(())
}

fn producer(nodes: &[Node], v: usize) -> Option<usize> {
    nodes.iter().position(|n| n.outputs().contains(&v))
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
            Op::BroadcastTo(_) => a[0],
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
