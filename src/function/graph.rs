//! A traced graph and its replay.

use super::Signature;
use super::compile;
use super::def::{Bindings, Feed, GraphDef, NodeDef, ValueDef, VariableDef};
use super::fused::Fused;
use super::trace::{Builder, into_parts};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::numel;
use crate::ops::Op;
use crate::runtime::Device;
use crate::runtime::ExecContext;
use crate::runtime::cpu::CpuData;
use crate::runtime::cpu::arena::Arena;
use crate::runtime::wgpu::GraphParams;
use crate::runtime::wgpu::memory::{GpuBuf, size_class};
use crate::tensor::{Tensor, Variable};
use std::sync::Arc;

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
    /// Ops recorded by the trace.
    pub traced_ops: usize,
    /// Nodes left after compilation (a fused kernel counts once).
    pub ops: usize,
    /// Generated kernels that each replace a chain of elementwise ops.
    pub fused_kernels: usize,
    /// Traced ops those fused kernels cover.
    pub fused_ops: usize,
}

/// A traced and compiled step.
pub struct Graph {
    def: GraphDef,
    sig: Signature,
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) sources: Vec<(usize, Source)>,
    pub(crate) assigns: Vec<(Variable, usize)>,
    pub(crate) outputs: Vec<usize>,
    stats: GraphStats,
    runs: u64,
    /// Per value: the last node that reads it (`usize::MAX` when it leaves
    /// the graph as an output or an assignment).
    last_use: Vec<usize>,
    plan: MemPlan,
    /// A graph on the CPU device: its recycled host buffers (the CPU's
    /// memory plan, made by the replays themselves).
    /// (A mutex so that a replay, which borrows the graph, can hold it, and
    /// a panic inside one leaves it in place.)
    arena: Option<std::sync::Mutex<Arena>>,
    /// Kernel launches of one replay (counted on the first).
    launches: u64,
}

/// Where a GPU graph's intermediate results live across replays.
enum MemPlan {
    /// The next replay records which results share storage (views), then
    /// the plan is made.
    Unobserved,
    /// CPU graphs, and graphs spanning devices: every result from the pool.
    Off,
    On(Slots),
}

/// Buffers assigned by liveness: results whose lifetimes do not overlap
/// share a buffer of their size class; the buffers stay with the graph.
struct Slots {
    slot_of: Vec<Option<usize>>,
    sizes: Vec<u64>,
    bufs: Vec<GpuBuf>,
    /// The launches' uniform parameters, written once.
    params: Option<Arc<GraphParams>>,
}

/// The memory plan of a compiled GPU graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanStats {
    /// Intermediate results written into planned buffers.
    pub values: usize,
    /// Buffers they share.
    pub buffers: usize,
    /// Bytes of those buffers.
    pub bytes: u64,
    /// Bytes the same results would hold if none shared a buffer.
    pub unshared_bytes: u64,
}

impl Graph {
    /// The graph a trace recorded: its [`GraphDef`], compiled.
    pub(crate) fn build(b: Builder, sig: Signature, _args: &[Tensor], out: &[Tensor]) -> Result<Graph> {
        let (def, bindings) = split(b, out);
        Graph::from_def(def, bindings, sig)
    }

    /// The executable of `def` with `bindings`: values, nodes and sources
    /// bound, then compiled (dead ops dropped, kernels fused).
    pub(crate) fn from_def(def: GraphDef, mut b: Bindings, sig: Signature) -> Result<Graph> {
        let mut values = Vec::with_capacity(def.values.len());
        for (i, v) in def.values.iter().enumerate() {
            let shape = v
                .concrete()
                .ok_or_else(|| Error::arg("function", format!("value {i} has unknown dimensions {:?}", v.shape)))?;
            let device = b
                .devices
                .get(i)
                .cloned()
                .ok_or_else(|| Error::arg("function", format!("value {i} has no device binding")))?;
            values.push(Value {
                shape,
                dtype: v.dtype,
                device,
            });
        }
        let missing = |what: &str, i: usize| Error::arg("function", format!("the graph's {what} {i} is not bound"));
        let mut sources = Vec::with_capacity(def.feeds.len());
        for (v, f) in &def.feeds {
            let src = match f {
                Feed::Arg(i) => Source::Arg(*i),
                Feed::Variable(i) => Source::Read(b.variables.get(*i).cloned().ok_or_else(|| missing("variable", *i))?),
                Feed::Capture(i) => {
                    Source::Constant(b.captures.get(*i).cloned().ok_or_else(|| missing("capture", *i))?)
                }
                Feed::Host(i) => Source::Host(
                    b.hosts
                        .get_mut(*i)
                        .and_then(Option::take)
                        .ok_or_else(|| missing("host input", *i))?,
                ),
            };
            sources.push((*v, src));
        }
        let mut assigns = Vec::with_capacity(def.assigns.len());
        for &(var, v) in &def.assigns {
            assigns.push((
                b.variables.get(var).cloned().ok_or_else(|| missing("variable", var))?,
                v,
            ));
        }
        let nodes: Vec<Node> = def
            .nodes
            .iter()
            .map(|n| Node::Op {
                op: n.op.clone(),
                inputs: n.inputs.clone(),
                outputs: n.outputs.clone(),
            })
            .collect();
        let outputs = def.outputs.clone();
        let traced_ops = nodes.len();
        let mut g = Graph {
            def,
            sig,
            values,
            nodes,
            sources,
            assigns,
            outputs,
            stats: GraphStats::default(),
            runs: 0,
            last_use: Vec::new(),
            plan: MemPlan::Unobserved,
            arena: None,
            launches: 0,
        };
        compile::compile(&mut g)?;
        g.last_use = vec![0; g.values.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for v in n.inputs().iter().copied().chain(n.outputs()) {
                g.last_use[v] = g.last_use[v].max(i);
            }
        }
        for &v in g.outputs.iter().chain(g.assigns.iter().map(|(_, v)| v)) {
            g.last_use[v] = usize::MAX;
        }
        let devices: Vec<&Device> = g.values.iter().map(|v| &v.device).collect();
        if devices.iter().any(|d| !d.is_gpu() || *d != devices[0]) {
            g.plan = MemPlan::Off;
        }
        if devices.iter().all(|d| **d == Device::Cpu) {
            g.arena = Some(std::sync::Mutex::new(Arena::default()));
        }
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

    /// The serializable graph this executable was compiled from (as traced,
    /// before dead ops were dropped and kernels fused).
    pub fn def(&self) -> &GraphDef {
        &self.def
    }

    /// How much compilation shrank the graph.
    pub fn stats(&self) -> GraphStats {
        self.stats
    }

    /// One line per node of the compiled graph: its op (or the ops a fused
    /// kernel covers; for GEMMs on a GPU, the kernel the adapter runs them
    /// on, `matmul [matmul::gemm]`) and output shapes.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let shapes: Vec<String> = n
                .outputs()
                .iter()
                .map(|&o| format!("{:?}", self.values[o].shape))
                .collect();
            let what = match n {
                Node::Op { op, inputs, .. } => {
                    let mut what = op.name().to_string();
                    // GEMMs name the kernel they run on this adapter.
                    let first = inputs.first().map(|&i| &self.values[i]);
                    if let Some(Value {
                        device: Device::Gpu(g),
                        dtype,
                        ..
                    }) = first
                    {
                        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.values[i].shape.as_slice()).collect();
                        let runs_in = first.map_or(*dtype, |v| v.device.computes_in(*dtype));
                        if let Some(k) = g.gemm_kernel(op, &shapes, runs_in) {
                            what += &format!(" [{k}]");
                        }
                    }
                    what
                }
                Node::Fused { kernel, .. } => format!("fused[{}]", kernel.describe()),
            };
            out += &format!("{i:>3} {what} -> {}\n", shapes.join(", "));
        }
        out
    }

    /// The memory plan, once a replay has made it. On a GPU, results share
    /// buffers by liveness. On the CPU device, a result's buffer goes back
    /// to the graph when it dies and serves the next result of its dtype
    /// and length; there `values` counts the results of the last replay
    /// that reused a buffer, `buffers` and `bytes` what the graph keeps
    /// between replays, and `unshared_bytes` every result of that replay.
    pub fn memory_plan(&self) -> Option<PlanStats> {
        if let Some(a) = &self.arena {
            let a = a.lock().unwrap_or_else(|p| p.into_inner());
            return (self.runs > 0).then(|| PlanStats {
                values: a.reused,
                buffers: a.buffers(),
                bytes: a.bytes(),
                unshared_bytes: a.served_bytes,
            });
        }
        let MemPlan::On(p) = &self.plan else { return None };
        let bytes_of = |v: usize| {
            let info = &self.values[v];
            size_class((numel(&info.shape) * info.dtype.size()) as u64)
        };
        Some(PlanStats {
            values: p.slot_of.iter().flatten().count(),
            buffers: p.sizes.len(),
            bytes: p.sizes.iter().sum(),
            unshared_bytes: (0..self.values.len())
                .filter(|&v| p.slot_of[v].is_some())
                .map(bytes_of)
                .sum(),
        })
    }

    /// Replays the graph on `args`: binds the sources, runs every node,
    /// assigns the variables, returns the outputs. Results are dropped after
    /// their last use; with a memory plan, intermediates go to the graph's
    /// own buffers.
    pub fn run(&mut self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_observed(args, &mut |_, _| Ok(()))
    }

    /// [`Graph::run`], calling `ready(i, value)` as soon as output `i` is
    /// computed (queued), in the order the graph computes them: a caller
    /// can start reading the first gradients back while the device still
    /// runs the rest of the backward pass.
    pub fn run_observed(
        &mut self,
        args: &[Tensor],
        ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
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
        let observe = matches!(self.plan, MemPlan::Unobserved);
        let device = self.values.first().map(|v| v.device.clone());
        let launched = device.as_ref().map_or(0, |d| d.counters().dispatches);
        if let Some(Device::Gpu(g)) = &device {
            if self.launches > 0 {
                g.reserve(self.launches as usize)?;
            }
        }
        // Which value's storage each result shares (itself unless a view).
        let mut root: Vec<usize> = (0..self.values.len()).collect();
        let ctx = match &self.plan {
            MemPlan::On(Slots { params: Some(p), .. }) => ExecContext::replaying(p.clone()),
            _ if observe => ExecContext::recording(),
            _ => ExecContext::eager(),
        };
        let mut out_at: Vec<Vec<usize>> = vec![Vec::new(); self.values.len()];
        for (i, &v) in self.outputs.iter().enumerate() {
            out_at[v].push(i);
        }
        for (v, _) in &self.sources {
            for &i in &out_at[*v] {
                if let Some(t) = &vals[*v] {
                    ready(i, t)?;
                }
            }
        }
        let ran = match &self.arena {
            Some(a) => {
                let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
                a.reset_counts();
                let ran = a.serve(|| self.run_nodes(&mut vals, &mut root, observe, &ctx, &out_at, ready));
                a.trim();
                ran
            }
            None => self.run_nodes(&mut vals, &mut root, observe, &ctx, &out_at, ready),
        };
        let out = ran?;
        let recorded = ctx.recorded();
        if observe {
            self.launches = device.map_or(0, |d| d.counters().dispatches - launched);
            // Without a plan (say, out of memory for it) replays use the pool.
            self.plan = self.make_plan(&root, recorded).unwrap_or(MemPlan::Off);
        }
        Ok(out)
    }

    /// Runs every node on `vals` (sources filled in), assigns the variables
    /// and gives the outputs. Results are released after their last use,
    /// the rest and a variable's old value at the end (on the CPU device,
    /// to the graph's arena); with `observe`, notes which results are views.
    fn run_nodes(
        &self,
        vals: &mut [Option<Tensor>],
        root: &mut [usize],
        observe: bool,
        ctx: &ExecContext,
        out_at: &[Vec<usize>],
        ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        let runs = self.runs;
        for (i, node) in self.nodes.iter().enumerate() {
            let take = |v: &usize| vals[*v].clone().expect("graph values are computed before use");
            let x: Vec<Tensor> = node.inputs().iter().map(take).collect();
            let outputs = node.outputs();
            let planned = |o: usize| match &self.plan {
                MemPlan::On(p) => p.slot_of[o].map(|s| p.bufs[s].view(self.bytes(o))),
                _ => None,
            };
            let run = || match node {
                Node::Op { op, .. } => {
                    let refs: Vec<&Tensor> = x.iter().collect();
                    let first = &self.values[outputs[0]];
                    let op = match op {
                        // Every call draws new random numbers.
                        Op::Random(r) => Op::Random(r.reseeded(runs)),
                        op => op.clone(),
                    };
                    let views: Vec<GpuBuf> = outputs.iter().filter_map(|&o| planned(o)).collect();
                    ctx.offer(views);
                    op.run(&refs, &first.shape, first.dtype, &first.device, ctx)
                }
                Node::Fused { kernel, .. } => {
                    let shapes: Vec<Vec<usize>> = outputs.iter().map(|&o| self.values[o].shape.clone()).collect();
                    let views = outputs.iter().map(|&o| planned(o)).collect();
                    kernel.run(&x, &shapes, &self.values[outputs[0]].device, views)
                }
            };
            let out = if crate::ops::profile::enabled() {
                let name = match node {
                    Node::Op { op, .. } => op.name().to_string(),
                    Node::Fused { kernel, .. } => format!("fused[{}]", kernel.describe()),
                };
                crate::ops::profile::time(&name, &self.values[outputs[0]].device, run)?
            } else {
                run()?
            };
            for (&o, t) in outputs.iter().zip(out) {
                if observe {
                    if let Some(k) = x.iter().position(|a| a.same_storage(&t)) {
                        root[o] = root[node.inputs()[k]];
                    }
                }
                for &k in &out_at[o] {
                    ready(k, &t)?;
                }
                vals[o] = Some(t);
            }
            // The inputs' last handles may now be in `vals`: dead ones recycle.
            drop(x);
            for &v in node.inputs().iter().chain(&outputs) {
                if self.last_use[v] == i {
                    if let Some(t) = vals[v].take() {
                        t.recycle();
                    }
                }
            }
        }
        for (var, v) in &self.assigns {
            var.replace_raw(vals[*v].clone().expect("assigned values are computed"))
                .recycle();
        }
        let out = self
            .outputs
            .iter()
            .map(|v| vals[*v].clone().expect("outputs are computed"))
            .collect();
        vals.iter_mut().filter_map(Option::take).for_each(Tensor::recycle);
        Ok(out)
    }

    /// Bytes of value `v` as a buffer holds them.
    fn bytes(&self, v: usize) -> u64 {
        let info = &self.values[v];
        ((numel(&info.shape) * info.dtype.size()) as u64).div_ceil(4) * 4
    }

    /// Assigns buffers to intermediates by liveness (greedy, in node order,
    /// one free list per size class) and allocates them.
    fn make_plan(&self, root: &[usize], params: Vec<Vec<u8>>) -> Result<MemPlan> {
        let nv = self.values.len();
        // A result leaves the graph when any view of its storage does.
        let mut end: Vec<usize> = vec![0; nv];
        for v in 0..nv {
            end[root[v]] = end[root[v]].max(self.last_use[v]);
        }
        let mut slot_of: Vec<Option<usize>> = vec![None; nv];
        let mut sizes: Vec<u64> = Vec::new();
        let mut busy_until: Vec<usize> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let outputs = node.outputs();
            for &o in &outputs {
                let bytes = self.bytes(o);
                // An op's outputs are told apart by size when it allocates them.
                let distinct = matches!(node, Node::Fused { .. })
                    || outputs.iter().filter(|&&p| self.bytes(p) == bytes).count() == 1;
                if root[o] != o || end[o] == usize::MAX || bytes == 0 || !distinct {
                    continue;
                }
                let class = size_class(bytes);
                let free = (0..sizes.len()).find(|&s| sizes[s] == class && busy_until[s] < i);
                let s = free.unwrap_or_else(|| {
                    sizes.push(class);
                    busy_until.push(0);
                    sizes.len() - 1
                });
                busy_until[s] = end[o];
                slot_of[o] = Some(s);
            }
        }
        let Device::Gpu(g) = &self.values[0].device else {
            return Ok(MemPlan::Off);
        };
        let bufs = sizes.iter().map(|&b| g.alloc("graph", b)).collect::<Result<Vec<_>>>()?;
        // Launch parameters are fixed too, but for ops that draw new random
        // numbers (their seed changes per call): those use the arena.
        let params = (!params.is_empty()).then(|| Arc::new(g.graph_params(params)));
        Ok(MemPlan::On(Slots {
            slot_of,
            sizes,
            bufs,
            params,
        }))
    }
}

/// A trace's recording as a [`GraphDef`] and what it refers to here.
pub(crate) fn split(b: Builder, out: &[Tensor]) -> (GraphDef, Bindings) {
    let (values, nodes, ids, sources, assigns) = into_parts(b);
    let mut def = GraphDef {
        values: values.iter().map(|v| ValueDef::known(&v.shape, v.dtype)).collect(),
        ..GraphDef::default()
    };
    let mut bind = Bindings {
        variables: Vec::new(),
        captures: Vec::new(),
        hosts: Vec::new(),
        devices: values.iter().map(|v| v.device.clone()).collect(),
    };
    let variable = |def: &mut GraphDef, bind: &mut Bindings, var: &Variable| -> usize {
        if let Some(i) = bind.variables.iter().position(|x| x.id() == var.id()) {
            return i;
        }
        let t = var.peek_raw();
        def.variables.push(VariableDef {
            name: var.name().to_string(),
            value: ValueDef::known(t.shape(), t.dtype()),
            trainable: var.trainable(),
        });
        bind.variables.push(var.clone());
        bind.variables.len() - 1
    };
    let capture = |def: &mut GraphDef, bind: &mut Bindings, t: &Tensor| -> usize {
        def.captures.push(ValueDef::known(t.shape(), t.dtype()));
        bind.captures.push(t.clone());
        bind.captures.len() - 1
    };
    for (v, src) in sources {
        let feed = match src {
            Source::Arg(i) => Feed::Arg(i),
            Source::Read(var) => Feed::Variable(variable(&mut def, &mut bind, &var)),
            Source::Constant(t) => Feed::Capture(capture(&mut def, &mut bind, &t)),
            Source::Host(f) => {
                def.host_inputs.push(def.values[v].clone());
                bind.hosts.push(Some(f));
                Feed::Host(bind.hosts.len() - 1)
            }
        };
        def.feeds.push((v, feed));
    }
    for (var, v) in &assigns {
        let i = variable(&mut def, &mut bind, var);
        def.assigns.push((i, *v));
    }
    for n in nodes {
        if let Node::Op { op, inputs, outputs } = n {
            let device = outputs
                .first()
                .map_or_else(String::new, |&o| bind.devices[o].to_string());
            def.nodes.push(NodeDef {
                op,
                inputs,
                outputs,
                device,
                dims: None,
            });
        }
    }
    for t in out {
        match ids.get(&t.id()) {
            Some(&v) => def.outputs.push(v),
            None => {
                // An output the trace never touched: a captured constant.
                let v = def.values.len();
                def.values.push(ValueDef::known(t.shape(), t.dtype()));
                bind.devices.push(t.device().clone());
                let c = capture(&mut def, &mut bind, t);
                def.feeds.push((v, Feed::Capture(c)));
                def.outputs.push(v);
            }
        }
    }
    (def, bind)
}
