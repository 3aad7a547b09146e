//! Graph compilation: dead-op elimination, int8 weights fused into the
//! products that read them (`fuse_int8`), then fusion into generated
//! kernels (see [`super::fused`] for what one kernel can do).
//!
//! Grouping, in graph order:
//! 1. Every f32 sum, mean, max or min over contiguous axes starts a group
//!    with the elementwise ops it reads (pulled back to results that must
//!    exist anyway). Reductions over the same shape and axes that do not
//!    depend on one another share one group: one pass over the data.
//! 2. Elementwise ops and optimizer updates on a group's reduced values join
//!    it as its epilogue when they produce values laid out like the reduced
//!    ones (`0.5 * sum(..)`, `var - lr * sum(..)`).
//! 3. Every remaining elementwise result that must exist as a tensor (an
//!    output, an assigned value, an input of a non-elementwise op) starts a
//!    group with the elementwise ops it reads; results of the same shape share
//!    a kernel when independent.
//!
//! An elementwise op used by several groups is computed in each (cheap next
//! to a launch and a round trip through memory) and disappears when nothing
//! else needs its result. Groups that would replace a single op are left as
//! that op. The compiled nodes are ordered topologically, so a kernel runs
//! once everything it reads exists.

use super::fused::{Arg, FOp, Fused, Reduce};
use super::graph::{Graph, Node, Source};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::numel;
use crate::ops::Op;
use crate::ops::binary::BinaryOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

pub(crate) fn compile(g: &mut Graph) -> Result<()> {
    eliminate_dead(g);
    fuse_int8(g);
    // A bug in the fuser must not cost the user their step: run unfused.
    if let Err(e) = plan(g).and_then(|p| apply(g, p)) {
        log::warn!("graph fusion failed ({e}); running the graph unfused");
    }
    Ok(())
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

/// Int8 weights go into the kernels that read them: `dequantize_int8`
/// feeding a matmul's transposed `b` becomes `matmul_int8`, and
/// `dequantize_int8 -> reshape [O, KH, KW, CG] -> transpose [1, 2, 3, 0]`
/// feeding a convolution's filter becomes `conv2d_int8` (the shapes
/// `ConcreteFunction::with_int8_weights` writes), when nothing else reads
/// the intermediate values. The f32 weights then never exist on the device.
fn fuse_int8(g: &mut Graph) {
    let mut uses = vec![0usize; g.values.len()];
    let reads = g.nodes.iter().flat_map(|n| n.inputs().to_vec());
    for v in reads
        .chain(g.outputs.iter().copied())
        .chain(g.assigns.iter().map(|(_, v)| *v))
    {
        if let Some(u) = uses.get_mut(v) {
            *u += 1;
        }
    }
    // The node producing each value.
    let mut producer = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.outputs() {
            producer.insert(o, i);
        }
    }
    let single = |v: usize| uses.get(v) == Some(&1);
    let op_of = |i: usize| match &g.nodes[i] {
        Node::Op { op, inputs, .. } => Some((op, inputs.as_slice())),
        Node::Fused { .. } => None,
    };
    // The dequantize node whose output is `v`, read once, and its inputs.
    let dequant = |v: usize| -> Option<(usize, Vec<usize>, usize)> {
        let i = *producer.get(&v)?;
        match op_of(i)? {
            (Op::DequantizeInt8 { cols }, x) if single(v) => Some((i, x.to_vec(), *cols)),
            _ => None,
        }
    };
    let f32_on = |v: usize, dev: &crate::runtime::Device| {
        g.values
            .get(v)
            .is_some_and(|x| x.dtype == DType::F32 && &x.device == dev)
    };
    let mut rewrites: Vec<(usize, Op, Vec<usize>, Vec<usize>)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Node::Op { op, inputs, outputs } = n else { continue };
        let (Some(&a), Some(&w), Some(&out)) = (inputs.first(), inputs.get(1), outputs.first()) else {
            continue;
        };
        let dev = &g.values[out].device;
        let fused = match op {
            Op::MatMul { ta: false, tb: true } => dequant(w).and_then(|(d, x, cols)| {
                let wshape = &g.values[w].shape;
                let k = g.values[a].shape.last().copied();
                (wshape.len() == 2 && k == Some(cols) && f32_on(a, dev)).then(|| (Op::MatMulInt8, x, vec![d]))
            }),
            Op::Conv2d(attrs) => (|| {
                let (ri, rx) = op_of(*producer.get(&w)?)?;
                let (Op::Permute(perm), &[r]) = (ri, rx) else {
                    return None;
                };
                let (ro, rin) = op_of(*producer.get(&r)?)?;
                let (Op::Reshape(o4), &[dv]) = (ro, rin) else {
                    return None;
                };
                let (d, x, cols) = dequant(dv)?;
                let fs = g.values[w].shape.clone();
                let ok = perm.as_slice() == [1, 2, 3, 0]
                    && single(w)
                    && single(r)
                    && o4.len() == 4
                    && fs.len() == 4
                    && o4.as_slice() == [fs[3], fs[0], fs[1], fs[2]]
                    && cols == fs[0] * fs[1] * fs[2]
                    && f32_on(a, dev);
                let drop = vec![d, producer[&r], producer[&w]];
                ok.then(|| (Op::Conv2dInt8(attrs.clone(), fs), x, drop))
            })(),
            _ => None,
        };
        if let Some((op, x, drop)) = fused {
            let all_on = x.iter().all(|&v| g.values.get(v).is_some_and(|x| &x.device == dev));
            if all_on && x.len() == 2 {
                rewrites.push((i, op, vec![a, x[0], x[1]], drop));
            }
        }
    }
    if rewrites.is_empty() {
        return;
    }
    let mut dropped = vec![false; g.nodes.len()];
    for (i, op, inputs, drop) in rewrites {
        let outputs = g.nodes[i].outputs();
        g.nodes[i] = Node::Op { op, inputs, outputs };
        for d in drop {
            dropped[d] = true;
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !dropped[i - 1]
    });
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
        Op::StopGradient => true,
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

/// An f32 optimizer update (its hyper-parameter input aside).
fn update_f32(g: &Graph, n: &Node) -> bool {
    let Node::Op {
        op: Op::Optimizer(_),
        inputs,
        outputs,
    } = n
    else {
        return false;
    };
    outputs.iter().chain(inputs).all(|&v| g.values[v].dtype == DType::F32)
}

/// A kernel in the making.
struct Group {
    domain: Vec<usize>,
    /// The reduced axes [lo, hi], for a reduction group.
    axes: Option<(usize, usize)>,
    /// Nodes whose results it produces: reductions, or elementwise roots.
    roots: Vec<usize>,
    /// Elementwise nodes evaluated over the domain (roots of an elementwise
    /// group included); other groups may evaluate them too.
    members: BTreeSet<usize>,
    /// Nodes applied to the reduced values, in graph order.
    post: Vec<usize>,
    /// Constants (`fill`s) the epilogue reads, inlined.
    consts: BTreeSet<usize>,
}

impl Group {
    fn nodes(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.members
            .iter()
            .copied()
            .chain(self.roots.iter().copied())
            .chain(self.post.iter().copied())
            .chain(self.consts.iter().copied())
    }
}

struct Planner<'g> {
    g: &'g Graph,
    ok: Vec<bool>,
    prod: HashMap<usize, usize>,
    exported: HashSet<usize>,
    root: Vec<bool>,
    /// The group that produces a node's results (its roots and epilogues).
    owner: HashMap<usize, usize>,
    groups: Vec<Group>,
    /// Buffers one kernel may bind.
    limit: usize,
}

impl Planner<'_> {
    fn out_shape(&self, v: usize) -> &[usize] {
        &self.g.values[v].shape
    }

    /// Elementwise producers of `tops` (and `tops`), back to roots and to
    /// results other groups produce.
    fn pull(&self, tops: &[usize]) -> BTreeSet<usize> {
        let mut seen: BTreeSet<usize> = tops.iter().copied().collect();
        let mut stack: Vec<usize> = tops.to_vec();
        while let Some(m) = stack.pop() {
            for &v in self.g.nodes[m].inputs() {
                if let Some(&p) = self.prod.get(&v) {
                    if self.ok[p] && !self.root[p] && !self.owner.contains_key(&p) && seen.insert(p) {
                        stack.push(p);
                    }
                }
            }
        }
        seen
    }

    /// Values a set of nodes reads and does not compute.
    fn leaves_of(&self, nodes: impl Iterator<Item = usize> + Clone) -> BTreeSet<usize> {
        let made: HashSet<usize> = nodes.clone().flat_map(|n| self.g.nodes[n].outputs()).collect();
        nodes
            .flat_map(|n| self.g.nodes[n].inputs().to_vec())
            .filter(|v| !made.contains(v))
            .collect()
    }

    fn leaves(&self, gi: usize) -> BTreeSet<usize> {
        self.leaves_of(self.groups[gi].nodes())
    }

    /// Buffers a group would bind at most: its leaves and everything its
    /// roots and epilogue could write.
    fn bindings(&self, grp: &Group) -> usize {
        let writes: usize = grp
            .roots
            .iter()
            .chain(&grp.post)
            .map(|&n| self.g.nodes[n].outputs().len())
            .sum();
        self.leaves_of(grp.nodes()).len() + writes
    }

    /// Whether any of `values` depends on a node of `target`. A node a group
    /// produces stands for the whole group (a kernel runs after all it reads).
    fn depends(&self, values: &BTreeSet<usize>, target: &HashSet<usize>) -> bool {
        let mut stack: Vec<usize> = values.iter().copied().collect();
        let mut seen: HashSet<usize> = HashSet::new();
        let mut groups_seen: HashSet<usize> = HashSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            let Some(&p) = self.prod.get(&v) else { continue };
            if target.contains(&p) {
                return true;
            }
            match self.owner.get(&p) {
                Some(&h) => {
                    if groups_seen.insert(h) {
                        for n in self.groups[h].nodes() {
                            if target.contains(&n) {
                                return true;
                            }
                            stack.extend(self.g.nodes[n].inputs());
                        }
                    }
                }
                None => stack.extend(self.g.nodes[p].inputs()),
            }
        }
        false
    }

    fn produced(&self, grp: &Group) -> HashSet<usize> {
        grp.roots.iter().chain(&grp.post).copied().collect()
    }

    /// Adds `grp` to an existing group of the same kind and shape when the
    /// two are independent and the kernel stays within the binding limit;
    /// else makes it a group of its own.
    fn place(&mut self, grp: Group) {
        let mine = self.leaves_of(grp.nodes());
        let mine_made = self.produced(&grp);
        for h in 0..self.groups.len() {
            let other = &self.groups[h];
            if other.domain != grp.domain || other.axes != grp.axes {
                continue;
            }
            if self.depends(&mine, &self.produced(other)) || self.depends(&self.leaves(h), &mine_made) {
                continue;
            }
            let merged = Group {
                domain: grp.domain.clone(),
                axes: grp.axes,
                roots: other.roots.iter().chain(&grp.roots).copied().collect(),
                members: other.members.union(&grp.members).copied().collect(),
                post: Vec::new(),
                consts: BTreeSet::new(),
            };
            if self.bindings(&merged) > self.limit {
                continue;
            }
            for &r in &grp.roots {
                self.owner.insert(r, h);
            }
            self.groups[h] = merged;
            return;
        }
        let h = self.groups.len();
        for &r in &grp.roots {
            self.owner.insert(r, h);
        }
        self.groups.push(grp);
    }

    /// Elements of a reduction group's outputs, and their shape without 1s.
    fn out_space(&self, h: usize) -> (usize, Vec<usize>) {
        let grp = &self.groups[h];
        let (lo, hi) = grp.axes.unwrap();
        let kept: Vec<usize> = grp
            .domain
            .iter()
            .enumerate()
            .filter(|&(d, &n)| (d < lo || d > hi) && n != 1)
            .map(|(_, &n)| n)
            .collect();
        (kept.iter().product(), kept)
    }

    /// Whether a value of `shape` is laid out like group h's outputs.
    fn fits(&self, h: usize, shape: &[usize]) -> bool {
        let (n, squeezed) = self.out_space(h);
        numel(shape) == n && shape.iter().copied().filter(|&d| d != 1).eq(squeezed)
    }

    /// Tries to make node i part of a reduction group's epilogue.
    fn absorb(&mut self, i: usize) -> bool {
        let node = &self.g.nodes[i];
        let Node::Op { op, inputs, outputs } = node else {
            return false;
        };
        let is_update = update_f32(self.g, node);
        if !(self.ok[i] || is_update) || matches!(op, Op::Fill { .. }) {
            return false;
        }
        // Inputs from one reduction group; constants join along.
        let mut from: Option<usize> = None;
        for &v in inputs {
            if let Some(&h) = self.prod.get(&v).and_then(|p| self.owner.get(p)) {
                if self.groups[h].axes.is_none() || from.is_some_and(|f| f != h) {
                    return false;
                }
                from = Some(h);
            }
        }
        let Some(h) = from else { return false };
        if !outputs.iter().all(|&o| self.fits(h, self.out_shape(o))) {
            return false;
        }
        let hyper = match op {
            Op::Optimizer(u) => Some(inputs[2 + u.slots()]),
            _ => None,
        };
        let mut fills = Vec::new();
        let mut leaves = BTreeSet::new();
        for &v in inputs {
            let p = self.prod.get(&v).copied();
            if p.is_some_and(|p| self.owner.get(&p) == Some(&h)) {
                continue;
            }
            if let Some(p) = p.filter(|&p| {
                matches!(
                    self.g.nodes[p],
                    Node::Op {
                        op: Op::Fill { .. },
                        ..
                    }
                )
            }) {
                if self.ok[p] && Some(v) != hyper {
                    fills.push(p);
                    continue;
                }
            }
            let shape = self.out_shape(v);
            if Some(v) != hyper && numel(shape) != 1 && !self.fits(h, shape) {
                return false;
            }
            leaves.insert(v);
        }
        if self.depends(&leaves, &self.produced(&self.groups[h])) {
            return false;
        }
        let mut grown = Group {
            domain: self.groups[h].domain.clone(),
            axes: self.groups[h].axes,
            roots: self.groups[h].roots.clone(),
            members: self.groups[h].members.clone(),
            post: self.groups[h].post.clone(),
            consts: self.groups[h].consts.clone(),
        };
        grown.consts.extend(fills);
        grown.post.push(i);
        if self.bindings(&grown) > self.limit {
            return false;
        }
        self.owner.insert(i, h);
        self.groups[h] = grown;
        true
    }
}

/// What fusion decided: the groups kept, and for each the values it writes.
struct Plan {
    groups: Vec<(Group, Vec<usize>)>,
    /// Nodes that stay as they are.
    standalone: Vec<usize>,
}

fn plan(g: &Graph) -> Result<Plan> {
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
        let x = &g.values[inputs[0]];
        (x.dtype == DType::F32 && g.values[outputs[0]].dtype == DType::F32 && numel(&x.shape) > 0)
            .then(|| (r, axes[0], *axes.last().unwrap()))
    };
    // Elementwise results that must exist as tensors.
    let mut root = vec![false; n];
    for i in 0..n {
        if ok[i] {
            let out = g.nodes[i].outputs()[0];
            let outside = consumers
                .get(&out)
                .is_some_and(|cs| cs.iter().any(|&c| !ok[c] && reduce_of(c).is_none()));
            root[i] = exported.contains(&out) || outside;
        }
    }
    let limit = g
        .values
        .first()
        .and_then(|v| v.device.max_storage_buffers())
        .map_or(16, |m| m.clamp(4, 30));
    let mut p = Planner {
        g,
        ok,
        prod,
        exported,
        root,
        owner: HashMap::new(),
        groups: Vec::new(),
        limit,
    };
    // 1. Reductions.
    for i in 0..n {
        let Some((_, lo, hi)) = reduce_of(i) else { continue };
        let x = g.nodes[i].inputs()[0];
        let members = match p.prod.get(&x) {
            Some(&q) if p.ok[q] && !p.root[q] && !p.owner.contains_key(&q) => p.pull(&[q]),
            _ => BTreeSet::new(),
        };
        let grp = Group {
            domain: g.values[x].shape.clone(),
            axes: Some((lo, hi)),
            roots: vec![i],
            members,
            post: Vec::new(),
            consts: BTreeSet::new(),
        };
        if p.bindings(&grp) <= p.limit {
            p.place(grp);
        }
    }
    // 2. Epilogues.
    for i in 0..n {
        if !p.owner.contains_key(&i) {
            p.absorb(i);
        }
    }
    // A lone reduction of a materialized tensor stays the reduce op.
    for h in 0..p.groups.len() {
        let grp = &p.groups[h];
        if grp.roots.len() == 1 && grp.post.is_empty() && grp.members.iter().all(|&m| is_view(g, m)) {
            let r = grp.roots[0];
            p.owner.remove(&r);
            p.groups[h].roots.clear();
        }
    }
    // 3. Elementwise results.
    for i in 0..n {
        if p.ok[i] && p.root[i] && !p.owner.contains_key(&i) {
            let grp = Group {
                domain: g.values[g.nodes[i].outputs()[0]].shape.clone(),
                axes: None,
                roots: vec![i],
                members: p.pull(&[i]),
                post: Vec::new(),
                consts: BTreeSet::new(),
            };
            if numel(&grp.domain) > 0 && p.bindings(&grp) <= p.limit {
                p.place(grp);
            }
        }
    }
    // Keep the groups that replace more than one launch.
    let worth = |grp: &Group| {
        let ops = grp.members.iter().filter(|&&m| !is_view(g, m)).count();
        match grp.axes {
            Some(_) => !grp.roots.is_empty() && (grp.roots.len() > 1 || !grp.post.is_empty() || ops > 0),
            None => grp.roots.len() > 1 || ops > 1,
        }
    };
    let kept: Vec<usize> = (0..p.groups.len()).filter(|&h| worth(&p.groups[h])).collect();
    let mut owner: HashMap<usize, usize> = HashMap::new();
    let mut member_of: HashSet<usize> = HashSet::new();
    let mut group_leaves: HashSet<usize> = HashSet::new();
    for &h in &kept {
        for n in p.groups[h].roots.iter().chain(&p.groups[h].post) {
            owner.insert(*n, h);
        }
        member_of.extend(p.groups[h].members.iter().chain(&p.groups[h].consts).copied());
        group_leaves.extend(p.leaves(h));
    }
    // Which results must be written, and which nodes must still run: a
    // result is needed when exported, read by a kernel as a leaf, or read by
    // a node that runs; an elementwise node other kernels evaluate runs only
    // when its result is needed.
    let mut needed: HashSet<usize> = HashSet::new();
    let mut runs = vec![false; n];
    for i in (0..n).rev() {
        let outs = g.nodes[i].outputs();
        let need = |v: &usize| {
            p.exported.contains(v)
                || group_leaves.contains(v)
                || consumers.get(v).is_some_and(|cs| cs.iter().any(|&c| runs[c]))
        };
        for v in outs.iter().filter(|v| need(v)) {
            needed.insert(*v);
        }
        runs[i] = !owner.contains_key(&i) && (!member_of.contains(&i) || outs.iter().any(|v| needed.contains(v)));
    }
    let mut groups = Vec::new();
    for &h in &kept {
        let grp = std::mem::replace(
            &mut p.groups[h],
            Group {
                domain: Vec::new(),
                axes: None,
                roots: Vec::new(),
                members: BTreeSet::new(),
                post: Vec::new(),
                consts: BTreeSet::new(),
            },
        );
        let mut made: Vec<usize> = grp.roots.iter().chain(&grp.post).copied().collect();
        made.sort_unstable();
        let writes: Vec<usize> = made
            .iter()
            .flat_map(|&m| g.nodes[m].outputs())
            .filter(|v| needed.contains(v))
            .collect();
        if !writes.is_empty() {
            groups.push((grp, writes));
        }
    }
    let standalone = (0..n).filter(|&i| runs[i]).collect();
    Ok(Plan { groups, standalone })
}

/// Views and constants: no arithmetic of their own.
fn is_view(g: &Graph, i: usize) -> bool {
    matches!(
        g.nodes[i],
        Node::Op {
            op: Op::Reshape(_) | Op::StopGradient | Op::BroadcastTo(_) | Op::Fill { .. },
            ..
        }
    )
}

/// The kernel of a group: its expression, leaves and written values.
fn build(g: &Graph, grp: &Group, writes: &[usize]) -> Result<(Fused, Vec<usize>)> {
    let mut leaves: Vec<usize> = Vec::new();
    let mut val: HashMap<usize, Arg> = HashMap::new();
    let leaf = |v: usize, leaves: &mut Vec<usize>| -> Arg {
        Arg::Leaf(leaves.iter().position(|&l| l == v).unwrap_or_else(|| {
            leaves.push(v);
            leaves.len() - 1
        }))
    };
    // One elementwise node as an op of `ops` (a view forwards its input).
    fn lower(op: &Op, a: &[Arg], ops: &mut Vec<FOp>, tag: fn(usize) -> Arg) -> Result<Arg> {
        let push = |ops: &mut Vec<FOp>, f: FOp| {
            ops.push(f);
            tag(ops.len() - 1)
        };
        Ok(match op {
            Op::BroadcastTo(_) | Op::Reshape(_) | Op::StopGradient => a[0],
            Op::Fill { value, .. } => push(ops, FOp::Const(*value as f32)),
            Op::Unary(u) => push(ops, FOp::Unary(*u, a[0])),
            Op::UnaryGrad(u) => push(ops, FOp::UnaryGrad(*u, a[0], a[1], a[2])),
            Op::Binary(b) => push(ops, FOp::Binary(*b, a[0], a[1])),
            _ => {
                return Err(Error::arg(
                    "function",
                    format!("internal: {} in a fused kernel", op.name()),
                ));
            }
        })
    }
    let mut pre = Vec::new();
    for &m in &grp.members {
        let Node::Op { op, inputs, outputs } = &g.nodes[m] else {
            unreachable!()
        };
        let a: Vec<Arg> = inputs
            .iter()
            .map(|&v| val.get(&v).copied().unwrap_or_else(|| leaf(v, &mut leaves)))
            .collect();
        val.insert(outputs[0], lower(op, &a, &mut pre, Arg::Pre)?);
    }
    let mut reduce = None;
    let mut post = Vec::new();
    if let Some((lo, hi)) = grp.axes {
        let mut reds = Vec::new();
        let mut roots = grp.roots.clone();
        roots.sort_unstable();
        for &r in &roots {
            let Node::Op { op, inputs, outputs } = &g.nodes[r] else {
                unreachable!()
            };
            let (rop, _) = fusible_reduce(op).expect("reduction groups hold reductions");
            let x = val
                .get(&inputs[0])
                .copied()
                .unwrap_or_else(|| leaf(inputs[0], &mut leaves));
            reds.push((rop, x));
            val.insert(outputs[0], Arg::Red(reds.len() - 1));
        }
        reduce = Some(Reduce { lo, hi, reds });
        // Post ops see reduced values, constants and their own leaves.
        let mut pval: HashMap<usize, Arg> = HashMap::new();
        for &r in &roots {
            let o = g.nodes[r].outputs()[0];
            pval.insert(o, val[&o]);
        }
        for &c in &grp.consts {
            let Node::Op { op, outputs, .. } = &g.nodes[c] else {
                unreachable!()
            };
            pval.insert(outputs[0], lower(op, &[], &mut post, Arg::Post)?);
        }
        for &m in &grp.post {
            let Node::Op { op, inputs, outputs } = &g.nodes[m] else {
                unreachable!()
            };
            let a: Vec<Arg> = inputs
                .iter()
                .map(|&v| pval.get(&v).copied().unwrap_or_else(|| leaf(v, &mut leaves)))
                .collect();
            if let Op::Optimizer(u) = op {
                let Arg::Leaf(hyper) = a[2 + u.slots()] else {
                    return Err(Error::arg("function", "internal: fused optimizer hyper-parameters"));
                };
                let mut args = a[..2 + u.slots()].to_vec();
                if u.clip.is_some() {
                    args.push(a[3 + u.slots()]);
                }
                post.push(FOp::Update { u: *u, args, hyper });
                let t = post.len() - 1;
                for (f, &o) in outputs.iter().enumerate() {
                    pval.insert(o, Arg::Field(t, f as u8));
                }
            } else {
                pval.insert(outputs[0], lower(op, &a, &mut post, Arg::Post)?);
            }
        }
        val = pval;
    }
    let outs: Vec<Arg> = writes.iter().map(|v| val[v]).collect();
    if outs.iter().any(|a| matches!(a, Arg::Leaf(_))) {
        return Err(Error::arg(
            "function",
            "internal: a fused kernel that only forwards an input",
        ));
    }
    let leaf_shapes = leaves.iter().map(|&v| g.values[v].shape.clone()).collect();
    let covered: BTreeSet<usize> = grp.nodes().collect();
    Ok((
        Fused::new(grp.domain.clone(), leaf_shapes, pre, reduce, post, outs, covered.len()),
        leaves,
    ))
}

/// Rebuilds the node list: kernels and the nodes that still run, in an
/// order where everything runs after what it reads. Leaves `g` untouched
/// when it fails.
fn apply(g: &mut Graph, plan: Plan) -> Result<()> {
    let mut kernels: Vec<(usize, Node)> = Vec::new();
    for (grp, writes) in &plan.groups {
        let (kernel, inputs) = build(g, grp, writes)?;
        let at = grp.roots.iter().chain(&grp.post).min().copied().unwrap_or(0);
        let node = Node::Fused {
            kernel,
            inputs,
            outputs: writes.clone(),
        };
        kernels.push((at, node));
    }
    // Items: kernels first, then the nodes that still run (by position).
    let items: Vec<(usize, &Node)> = kernels
        .iter()
        .map(|(at, node)| (*at, node))
        .chain(plan.standalone.iter().map(|&i| (i, &g.nodes[i])))
        .collect();
    // Kahn's algorithm, earliest original position first.
    let made: HashMap<usize, usize> = items
        .iter()
        .enumerate()
        .flat_map(|(k, (_, node))| node.outputs().into_iter().map(move |v| (v, k)))
        .collect();
    let mut waiting: Vec<usize> = vec![0; items.len()];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (k, (_, node)) in items.iter().enumerate() {
        let deps: HashSet<usize> = node.inputs().iter().filter_map(|v| made.get(v).copied()).collect();
        waiting[k] = deps.len();
        for d in deps {
            next[d].push(k);
        }
    }
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..items.len())
        .filter(|&k| waiting[k] == 0)
        .map(|k| Reverse((items[k].0, k)))
        .collect();
    let mut order = Vec::with_capacity(items.len());
    while let Some(Reverse((_, k))) = ready.pop() {
        order.push(k);
        for &c in &next[k] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(Reverse((items[c].0, c)));
            }
        }
    }
    if order.len() != items.len() {
        return Err(Error::arg(
            "function",
            "internal: fused kernels depend on each other in a cycle",
        ));
    }
    let nk = kernels.len();
    let mut slots: Vec<Option<Node>> = kernels.into_iter().map(|(_, n)| Some(n)).collect();
    let mut old: Vec<Option<Node>> = std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    g.nodes = order
        .into_iter()
        .map(|k| match k < nk {
            true => slots[k].take().unwrap(),
            false => old[plan.standalone[k - nk]].take().unwrap(),
        })
        .collect();
    Ok(())
}
