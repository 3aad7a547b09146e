//! A traced graph and its replay.

use super::Signature;
use super::compile;
use super::fused::Fused;
use super::trace::{Builder, into_parts};
use crate::Device;
use crate::device::cpu::CpuData;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::{Tensor, Variable};

pub(crate) type HostFn = Box<dyn FnMut() -> CpuData + Send>;

/// Shape, dtype and device of one value of the graph.
#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub device: Device,
}

/// Where a value that no node computes comes from at each replay.
pub(crate) enum Source {
    /// The i-th argument.
    Arg(usize),
    /// A variable's value at the start of the replay.
    Read(Variable),
    /// A tensor captured while tracing.
    Constant(Tensor),
    /// Recomputed by the host (`host_input`).
    Host(HostFn),
}

pub(crate) enum Node {
    Op {
        op: Op,
        inputs: Vec<usize>,
        outputs: Vec<usize>,
    },
    /// Several ops in one generated kernel.
    Fused {
        kernel: Fused,
        inputs: Vec<usize>,
        outputs: Vec<usize>,
    },
}

impl Node {
    pub(crate) fn inputs(&self) -> &[usize] {
        match self {
            Node::Op { inputs, .. } | Node::Fused { inputs, .. } => inputs,
        }
    }
    pub(crate) fn outputs(&self) -> Vec<usize> {
        match self {
            Node::Op { outputs, .. } | Node::Fused { outputs, .. } => outputs.clone(),
        }
    }
}

/// Sizes of a graph before and after compilation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    pub traced_ops: usize,
    pub ops: usize,
    pub fused_kernels: usize,
    pub fused_ops: usize,
}

/// A traced and compiled step.
pub struct Graph {
    sig: Signature,
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) sources: Vec<(usize, Source)>,
    pub(crate) assigns: Vec<(Variable, usize)>,
    pub(crate) outputs: Vec<usize>,
    stats: GraphStats,
    runs: u64,
}

impl Graph {
    pub(crate) fn build(b: Builder, sig: Signature, _args: &[Tensor], out: &[Tensor]) -> Result<Graph> {
        let (values, nodes, ids, sources, assigns) = into_parts(b);
        let mut sources = sources;
        let mut values = values;
        let mut outputs = Vec::new();
        for t in out {
            match ids.get(&t.id()) {
                Some(&v) => outputs.push(v),
                None => {
                    // An output the trace never touched: a constant of the graph.
                    let v = values.len();
                    values.push(Value {
                        shape: t.shape().to_vec(),
                        dtype: t.dtype(),
                        device: t.device().clone(),
                    });
                    sources.push((v, Source::Constant(t.clone())));
                    outputs.push(v);
                }
            }
        }
        let traced_ops = nodes.len();
        let mut g = Graph {
            sig,
            values,
            nodes,
            sources,
            assigns,
            outputs,
            stats: GraphStats::default(),
            runs: 0,
        };
        compile::compile(&mut g)?;
        g.stats = GraphStats {
            traced_ops,
            ops: g.nodes.len(),
            fused_kernels: g.nodes.iter().filter(|n| matches!(n, Node::Fused { .. })).count(),
            fused_ops: g
                .nodes
                .iter()
                .map(|n| {
                    if let Node::Fused { kernel, .. } = n {
                        kernel.covered
                    } else {
                        0
                    }
                })
                .sum(),
        };
        Ok(g)
    }

    pub fn stats(&self) -> GraphStats {
        self.stats
    }

    /// One line per node of the compiled graph: its op (or the ops a fused
    /// kernel covers) and output shapes.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let shapes: Vec<String> = n
                .outputs()
                .iter()
                .map(|&o| format!("{:?}", self.values[o].shape))
                .collect();
            let what = match n {
                Node::Op { op, .. } => op.name().to_string(),
                Node::Fused { kernel, .. } => format!("fused[{}]", kernel.describe()),
            };
            out += &format!("{i:>3} {what} -> {}\n", shapes.join(", "));
        }
        out
    }

    /// Replays the graph on `args`: binds the sources, runs every node,
    /// assigns the variables, returns the outputs.
    pub fn run(&mut self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        super::check_args("function", &self.sig, args)?;
        self.runs += 1;
        let mut vals: Vec<Option<Tensor>> = vec![None; self.values.len()];
        for (v, src) in self.sources.iter_mut() {
            let info = &self.values[*v];
            vals[*v] = Some(match src {
                Source::Arg(i) => args[*i].clone(),
                Source::Read(var) => {
                    let t = var.peek_raw();
                    if t.shape() != info.shape.as_slice() || t.dtype() != info.dtype {
                        return Err(Error::arg(
                            "function",
                            format!("variable {} changed shape or dtype since the trace", var.name()),
                        ));
                    }
                    t
                }
                Source::Constant(t) => t.clone(),
                Source::Host(f) => Tensor::from_data(f(), &info.shape, &info.device)?,
            });
        }
        let runs = self.runs;
        for node in &self.nodes {
            let take = |i: &usize| vals[*i].clone().expect("graph values are computed before use");
            match node {
                Node::Op { op, inputs, outputs } => {
                    let x: Vec<Tensor> = inputs.iter().map(take).collect();
                    let refs: Vec<&Tensor> = x.iter().collect();
                    let first = &self.values[outputs[0]];
                    let op = match op {
                        // Every call draws new random numbers.
                        Op::Random(r) => Op::Random(r.reseeded(runs)),
                        op => op.clone(),
                    };
                    let out = op.replay(&refs, &first.shape, first.dtype, &first.device)?;
                    for (o, t) in outputs.iter().zip(out) {
                        vals[*o] = Some(t);
                    }
                }
                Node::Fused {
                    kernel,
                    inputs,
                    outputs,
                } => {
                    let x: Vec<Tensor> = inputs.iter().map(take).collect();
                    let shapes: Vec<Vec<usize>> = outputs.iter().map(|&o| self.values[o].shape.clone()).collect();
                    let device = &self.values[outputs[0]].device;
                    for (o, t) in outputs.iter().zip(kernel.run(&x, &shapes, device)?) {
                        vals[*o] = Some(t);
                    }
                }
            }
        }
        for (var, v) in &self.assigns {
            var.assign_raw(vals[*v].clone().expect("assigned values are computed"));
        }
        Ok(self
            .outputs
            .iter()
            .map(|v| vals[*v].clone().expect("outputs are computed"))
            .collect())
    }
}
