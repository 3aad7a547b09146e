//! Recognizes batch normalization in a traced graph: inference-mode
//! BatchNormalization runs as `(x - mean) * rsqrt(var + eps) [* gamma]
//! [+ beta]` with `mean`, `var`, `gamma`, `beta` variables, which the
//! exporter writes as one ONNX `BatchNormalization` node with its epsilon.

use crate::core::op::Op;
use crate::core::op::binary::BinaryOp;
use crate::core::op::unary::UnaryOp;
use crate::function::{Feed, GraphDef};
use std::collections::HashMap;

/// One matched batch normalization: its input, variables (graph values),
/// epsilon, the nodes it replaces, and the node whose output it produces.
pub(super) struct BatchNorm {
    pub x: usize,
    pub mean: usize,
    pub var: usize,
    pub gamma: Option<usize>,
    pub beta: Option<usize>,
    pub eps: f64,
    /// Index of the last replaced node: the fused node is emitted there.
    pub last: usize,
    pub nodes: Vec<usize>,
}

/// Every batch normalization of `def`, each node in at most one.
pub(super) fn batch_norms(def: &GraphDef) -> Vec<BatchNorm> {
    let mut producer: HashMap<usize, usize> = HashMap::new();
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, n) in def.nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer.insert(o, i);
        }
        for &v in &n.inputs {
            consumers.entry(v).or_default().push(i);
        }
    }
    let outputs: Vec<usize> = def.outputs.clone();
    let uses = |v: usize| consumers.get(&v).map_or(0, Vec::len) + outputs.iter().filter(|&&o| o == v).count();
    let variables: Vec<usize> = def
        .feeds
        .iter()
        .filter(|(_, f)| matches!(f, Feed::Variable(_)))
        .map(|(v, _)| *v)
        .collect();
    let is_var = |v: usize| variables.contains(&v);
    let node_of = |v: usize, op: &dyn Fn(&Op) -> bool| -> Option<usize> {
        let i = *producer.get(&v)?;
        op(&def.nodes[i].op).then_some(i)
    };
    let binary = |b: BinaryOp| move |op: &Op| matches!(op, Op::Binary(x) if *x == b);
    let mut out = Vec::new();
    let mut taken = vec![false; def.nodes.len()];
    for (d, node) in def.nodes.iter().enumerate() {
        if !binary(BinaryOp::Mul)(&node.op) || node.inputs.len() != 2 || taken[d] {
            continue;
        }
        // (x - mean) * rsqrt(var + eps), in either operand order.
        let found = [(0, 1), (1, 0)].into_iter().find_map(|(p, q)| {
            let (c_out, b_out) = (node.inputs[p], node.inputs[q]);
            let c = node_of(c_out, &binary(BinaryOp::Sub))?;
            let b = node_of(b_out, &|op| matches!(op, Op::Unary(UnaryOp::Rsqrt)))?;
            let a_out = *def.nodes[b].inputs.first()?;
            let a = node_of(a_out, &binary(BinaryOp::Add))?;
            let (x, mean) = (*def.nodes[c].inputs.first()?, *def.nodes[c].inputs.get(1)?);
            let ai = &def.nodes[a].inputs;
            let (var, e) = if is_var(*ai.first()?) {
                (ai[0], *ai.get(1)?)
            } else {
                (*ai.get(1)?, ai[0])
            };
            let fill = node_of(
                e,
                &|op| matches!(op, Op::Fill { shape, .. } if shape.iter().product::<usize>() == 1),
            )?;
            let Op::Fill { value: eps, .. } = def.nodes[fill].op else {
                return None;
            };
            let ok = is_var(mean) && is_var(var) && uses(c_out) == 1 && uses(b_out) == 1 && uses(a_out) == 1;
            let mut nodes = vec![c, b, a];
            if uses(e) == 1 {
                nodes.push(fill);
            }
            ok.then_some((x, mean, var, eps, nodes))
        });
        let Some((x, mean, var, eps, mut nodes)) = found else {
            continue;
        };
        let xs = &def.values[x].shape;
        let c = def.values[mean].shape.clone();
        let rank_ok = matches!(xs.len(), 2 | 4) && c.len() == 1 && xs.last() == c.first();
        if !rank_ok || def.values[x].dtype != crate::core::dtype::DType::F32 || nodes.iter().any(|&n| taken[n]) {
            continue;
        }
        nodes.push(d);
        let mut last = d;
        let Some(&out0) = node.outputs.first() else { continue };
        let mut cur = out0;
        // Then `* gamma` and `+ beta`, each a variable of shape [C].
        let follow = |op: BinaryOp, cur: &mut usize, last: &mut usize, nodes: &mut Vec<usize>| -> Option<usize> {
            if uses(*cur) != 1 || outputs.contains(cur) {
                return None;
            }
            let &n = consumers.get(cur)?.first()?;
            let nd = &def.nodes[n];
            if !binary(op)(&nd.op) || nd.inputs.len() != 2 {
                return None;
            }
            let other = if nd.inputs[0] == *cur {
                nd.inputs[1]
            } else {
                nd.inputs[0]
            };
            (is_var(other) && def.values[other].shape == c).then(|| {
                nodes.push(n);
                *last = n;
                *cur = nd.outputs[0];
                other
            })
        };
        let gamma = follow(BinaryOp::Mul, &mut cur, &mut last, &mut nodes);
        let beta = follow(BinaryOp::Add, &mut cur, &mut last, &mut nodes);
        for &n in &nodes {
            taken[n] = true;
        }
        out.push(BatchNorm {
            x,
            mean,
            var,
            gamma,
            beta,
            eps,
            last,
            nodes,
        });
    }
    out
}
