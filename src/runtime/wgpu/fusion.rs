//! Eager fusion: elementwise f32 ops launched one by one from user code
//! wait in a per-device list instead of being encoded at once, and run as
//! few kernels as possible when something else needs the GPU (Burn's lazy
//! fusion, within one device's stream).
//!
//! An op waits when it is `Op::Unary` or `Op::Binary` on f32 whose every
//! operand is laid out like the output, is one value, or repeats along it
//! as a row (a bias) or a column, called through
//! `ops::exec` (not from a compiled graph's run, whose kernels are already
//! fused and whose memory is planned). Its output buffer is allocated at
//! once, so the tensor exists and owns its memory as before; only the
//! kernel waits. Whatever else touches the device first encodes the list
//! (`GpuDevice::flush_deferred`): any other launch, a read, a submit, a
//! wait, a settle of the pool; so the GPU sees every op in program order.
//!
//! At a flush, a waiting op's result is written only if someone still
//! holds it: a tensor, a tape, a later waiting op that is not fused with
//! it. Results no one holds (the intermediates of `x * y + x` once the
//! statement ends) are never written, and a result no one holds and no one
//! reads is never computed. The list is split into runs of ops whose
//! buffers fit one kernel's bindings; a run of one op launches that op's own
//! kernel, a longer run one generated kernel that reads each leaf once,
//! evaluates the run per element in registers (the same `unary_apply` and
//! `binary_apply` as the ops' kernels) and writes the results held. The
//! generated kernels take n as a uniform, so one pipeline serves every
//! length. Where n and the buffers' offsets allow, an invocation takes
//! four elements as vec4s, or on CPU adapters with 64-bit integers eight
//! as a `vec4<u64>` (shaders/wide.wgsl), as the ops' own kernels do.
//!
//! A flush cut short by an error (a kernel refused, a submission failing)
//! returns the error to the call that flushed and puts the ops not yet
//! encoded back at the head of the list: the next flush encodes them, so a
//! tensor never holds a result that was silently left unwritten. An error
//! that comes back every time (a per-op kernel the driver always refuses)
//! thus fails every later use of the device, as an error does TensorFlow's
//! async eager executor, rather than let a wrong value through. A refused
//! generated kernel is not such an error: its ops run their own kernels.
//!
//! `WGFLOW_EAGER_FUSION=0` turns this off (each op is encoded when called).

use super::generated::{ZERO_DECL, ZERO_SET, opaque};
use super::memory::GpuBuf;
use super::{ExecContext, Gpu, GpuDevice, KType, Launch, ParamBlock, binary, grid, unary};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::core::op::binary::{is_column, without_leading_ones};
use crate::core::op::unary::UnaryOp;
use crate::core::shape::numel;
use crate::runtime::{Operand, Storage};
use std::cell::Cell;
use std::fmt::Write;
use std::sync::Arc;

/// Ops a list holds before the next one flushes it.
const MAX_WAITING: usize = 16;
/// Buffers a generated kernel binds at most (leaves and results).
const MAX_BINDINGS: usize = 16;

params! {
    /// The generated kernels' `Params`.
    pub struct FusionParams = "Params" {
        n: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// One waiting op: its operands (storage and shape), its output's shape and buffer.
pub(crate) struct Node {
    op: Op,
    x: Vec<(Storage, Vec<usize>)>,
    shape: Vec<usize>,
    out: Arc<GpuBuf>,
}

thread_local! {
    /// This thread is encoding a list: the launches it makes must not flush.
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

/// Clears `FLUSHING` however the encoding ends.
struct Flushing;

impl Drop for Flushing {
    fn drop(&mut self) {
        FLUSHING.with(|f| f.set(false));
    }
}

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WGFLOW_EAGER_FUSION").map_or(true, |v| v != "0"))
}

fn buf_of(s: &Storage) -> Option<&Arc<GpuBuf>> {
    match s {
        Storage::Gpu(b) => Some(b),
        Storage::Cpu(_) => None,
    }
}

/// Where a waiting op's operand comes from.
#[derive(Clone, Copy, PartialEq)]
enum Src {
    /// A buffer no waiting op of the group writes.
    Buf,
    /// The result of waiting op j.
    Node(usize),
}

impl GpuDevice {
    /// Whether `op` on `x` may wait (see the module docs).
    pub(super) fn deferrable(&self, op: &Op, x: &[Operand], shape: &[usize], dtype: DType, ctx: &ExecContext) -> bool {
        let n = numel(shape);
        ctx.defer
            && enabled()
            && matches!(op, Op::Unary(_) | Op::Binary(_))
            && dtype == DType::F32
            && n > 0
            && x.iter().all(|o| {
                o.dtype == DType::F32 && matches!(o.storage, Storage::Gpu(_)) && Kind::of(o.shape, shape).is_some()
            })
    }

    /// Allocates `op`'s output and puts the op on the waiting list.
    pub(super) fn defer(&self, op: &Op, x: &[Operand], shape: &[usize]) -> Result<Storage> {
        let n = numel(shape);
        let mut y = self.alloc(op.name(), (n * DType::F32.size()) as u64)?;
        self.depend(&mut y, x.iter().filter_map(|o| buf_of(o.storage).map(|b| &**b)))?;
        let out = Arc::new(y);
        let node = Node {
            op: op.clone(),
            x: x.iter().map(|o| (o.storage.clone(), o.shape.to_vec())).collect(),
            shape: shape.to_vec(),
            out: out.clone(),
        };
        // Pushed under the lock that finds room, however threads interleave.
        loop {
            {
                let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if w.len() < MAX_WAITING {
                    w.push(node);
                    break;
                }
            }
            self.flush_deferred()?;
        }
        Ok(Storage::Gpu(out))
    }

    /// Encodes the waiting ops (see the module docs); a no-op inside the
    /// encoding itself.
    pub(crate) fn flush_deferred(&self) -> Result<()> {
        if FLUSHING.with(|f| f.get()) {
            return Ok(());
        }
        // One flush at a time: another thread's launch waits for this
        // list to be encoded before its own kernel.
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if nodes.is_empty() {
            return Ok(());
        }
        FLUSHING.with(|f| f.set(true));
        let _reset = Flushing;
        // By length, shortest first: an op reads operands no longer than
        // its result (its own length, a row, a column, one value), so what
        // it reads of another group is computed before it. The list order
        // holds within each group.
        let mut groups: Vec<Vec<Node>> = Vec::new();
        for node in nodes {
            let n = numel(&node.shape);
            match groups.iter_mut().find(|g| numel(&g[0].shape) == n) {
                Some(g) => g.push(node),
                None => groups.push(vec![node]),
            }
        }
        groups.sort_by_key(|g| numel(&g[0].shape));
        let failed = groups
            .iter()
            .enumerate()
            .find_map(|(i, g)| self.encode_waiting(g).err().map(|(err, k)| (err, i, k)));
        if let Some((err, i, k)) = failed {
            // The ops not encoded wait again, ahead of any pushed since, so
            // that no result stays unwritten behind a tensor: the next flush
            // retries them (what they read of the ops encoded was written).
            let rest: Vec<Node> = groups
                .into_iter()
                .skip(i)
                .enumerate()
                .flat_map(|(j, g)| g.into_iter().skip(if j == 0 { k } else { 0 }))
                .collect();
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let pushed = std::mem::replace(&mut *w, rest);
            w.extend(pushed);
            return Err(err);
        }
        Ok(())
        // `groups` drops here: results no one holds go back to the pool unwritten.
    }

    /// Flushes the waiting ops, if any (not from inside a flush); whether
    /// there were some, whose unwritten results are now free.
    pub(super) fn flush_deferred_freed(&self) -> Result<bool> {
        let any = !FLUSHING.with(|f| f.get()) && !self.waiting.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        if any {
            self.flush_deferred()?;
        }
        Ok(any)
    }

    /// Encodes one group; on an error, also the index of the first op not encoded.
    fn encode_waiting(&self, nodes: &[Node]) -> std::result::Result<(), (Error, usize)> {
        // Each operand's source, by buffer identity.
        let srcs: Vec<Vec<Src>> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                node.x
                    .iter()
                    .map(|(s, _)| {
                        let b = buf_of(s);
                        nodes[..i]
                            .iter()
                            .rposition(|m| b.is_some_and(|b| Arc::ptr_eq(b, &m.out)))
                            .map_or(Src::Buf, Src::Node)
                    })
                    .collect()
            })
            .collect();
        // Held outside this group: more references than the group's own
        // (the node's, and one per operand naming it); another group's
        // operand counts as outside, so what it reads is written.
        let held: Vec<bool> = nodes
            .iter()
            .map(|node| {
                let inside = 1 + nodes
                    .iter()
                    .flat_map(|m| &m.x)
                    .filter(|(s, _)| buf_of(s).is_some_and(|b| Arc::ptr_eq(b, &node.out)))
                    .count();
                Arc::strong_count(&node.out) > inside
            })
            .collect();
        let limit = MAX_BINDINGS.min(self.limits.max_storage_buffers_per_shader_stage as usize);
        let mut s = 0;
        while s < nodes.len() {
            let mut e = s + 1;
            while e < nodes.len() && Run::new(nodes, &srcs, &held, s, e + 1).bindings() <= limit {
                e += 1;
            }
            let run = Run::new(nodes, &srcs, &held, s, e);
            if !run.outs.is_empty() {
                if e - s == 1 {
                    self.encode_one(&nodes[s]).map_err(|err| (err, s))?;
                } else if let Err(err) = self.encode_run(nodes, &srcs, &run) {
                    // A generated kernel the driver refuses: the ops' own
                    // kernels, every result written. Any other error (a
                    // failed submission, a lost device) is the flush's.
                    if !matches!(err, Error::ShaderCompilation { .. }) {
                        return Err((err, s));
                    }
                    log::warn!("{}: eager fusion falls back to one kernel per op: {err}", self.label);
                    for (i, node) in nodes.iter().enumerate().take(e).skip(s) {
                        self.encode_one(node).map_err(|err| (err, i))?;
                    }
                }
            }
            s = e;
        }
        Ok(())
    }

    /// One op through its own kernel, into its allocated output.
    fn encode_one(&self, node: &Node) -> Result<()> {
        let ctx = ExecContext::eager();
        let g = &Gpu { dev: self, ctx: &ctx };
        let x: Vec<Operand> = node
            .x
            .iter()
            .map(|(s, shape)| Operand {
                storage: s,
                shape,
                dtype: DType::F32,
            })
            .collect();
        match node.op {
            Op::Unary(_) => unary::encode(&node.op, g, &x, &node.shape, DType::F32, &node.out),
            _ => binary::encode(&node.op, g, &x, &node.shape, DType::F32, &node.out),
        }
    }

    /// A run of ops as one generated kernel.
    fn encode_run(&self, nodes: &[Node], srcs: &[Vec<Src>], run: &Run) -> Result<()> {
        let n = numel(&nodes[run.s].shape);
        let full: Vec<&GpuBuf> = run
            .leaves
            .iter()
            .filter(|l| l.kind == Kind::Full)
            .map(|l| &*l.buf)
            .chain(run.outs.iter().map(|&i| &*nodes[i].out))
            .collect();
        let per = self.elements_per_invocation(n, DType::F32, &full);
        // Rows load as vectors where their period and offset allow.
        let vector: Vec<bool> = run
            .leaves
            .iter()
            .map(|l| match l.kind {
                Kind::Full => per > 1,
                Kind::Row(p) => per > 1 && p % per == 0 && l.buf.offset % (4 * per as u64) == 0,
                Kind::Scalar | Kind::Col(_) => false,
            })
            .collect();
        let src = run.source(nodes, srcs, per, &vector);
        let sources: &'static [&'static str] = if per == 8 {
            &[
                include_str!("../../../shaders/common.wgsl"),
                include_str!("../../../shaders/elementwise.wgsl"),
                include_str!("../../../shaders/wide.wgsl"),
            ]
        } else {
            &[
                include_str!("../../../shaders/common.wgsl"),
                include_str!("../../../shaders/elementwise.wgsl"),
            ]
        };
        let kernel = super::generated::generated_kernel("eager_fused", src, sources)?;
        let bufs: Vec<&GpuBuf> = run
            .leaves
            .iter()
            .map(|l| &*l.buf)
            .chain(run.outs.iter().map(|&i| &*nodes[i].out))
            .collect();
        self.launch(&Launch {
            kernel: &kernel,
            entry: "main",
            ty: KType::F32,
            consts: &[],
            params: ParamBlock::of(&FusionParams {
                n: n as u32,
                ..FusionParams::default()
            }),
            bufs: &bufs,
            groups: grid(n / per, 256),
        })
    }
}

/// How a run reads a leaf at element i of its output.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Laid out like the output: element i.
    Full,
    /// One value: element 0.
    Scalar,
    /// A row repeating with period p (a bias): element i % p.
    Row(usize),
    /// Each value repeated q times (a column): element i / q.
    Col(usize),
}

impl Kind {
    /// How an operand of `shape` broadcasts over `out`, if a run can read it.
    fn of(shape: &[usize], out: &[usize]) -> Option<Kind> {
        let (m, n) = (numel(shape), numel(out));
        if m == n {
            Some(Kind::Full)
        } else if m == 1 {
            Some(Kind::Scalar)
        } else if m == 0 {
            None
        } else if !shape.is_empty() && out.ends_with(without_leading_ones(shape)) {
            Some(Kind::Row(m))
        } else if is_column(shape, out) {
            Some(Kind::Col(n / m))
        } else {
            None
        }
    }
}

/// A leaf of a run: a buffer it reads, and how.
struct Leaf {
    buf: Arc<GpuBuf>,
    kind: Kind,
}

/// Waiting ops s..e as one kernel: the buffers it reads and the results it
/// writes (those held outside the list or read by a later run).
struct Run {
    s: usize,
    e: usize,
    leaves: Vec<Leaf>,
    outs: Vec<usize>,
}

impl Run {
    fn new(nodes: &[Node], srcs: &[Vec<Src>], held: &[bool], s: usize, e: usize) -> Run {
        let mut leaves: Vec<Leaf> = Vec::new();
        for i in s..e {
            for k in 0..srcs[i].len() {
                let Some((buf, kind)) = Run::operand(nodes, srcs, s, i, k) else {
                    continue;
                };
                if !leaves.iter().any(|l| Arc::ptr_eq(&l.buf, buf) && l.kind == kind) {
                    leaves.push(Leaf { buf: buf.clone(), kind });
                }
            }
        }
        let read_later = |i: usize| srcs[e..].iter().flatten().any(|&src| src == Src::Node(i));
        let outs = (s..e).filter(|&i| held[i] || read_later(i)).collect();
        Run { s, e, leaves, outs }
    }

    fn bindings(&self) -> usize {
        self.leaves.len() + self.outs.len()
    }

    /// The leaf that operand k of op i reads in a run starting at s, and
    /// how; `None` for a result of the run itself.
    fn operand<'a>(
        nodes: &'a [Node],
        srcs: &[Vec<Src>],
        s: usize,
        i: usize,
        k: usize,
    ) -> Option<(&'a Arc<GpuBuf>, Kind)> {
        let (st, shape) = &nodes[i].x[k];
        let kind = Kind::of(shape, &nodes[i].shape)?;
        match srcs[i][k] {
            Src::Node(j) if j >= s => None,
            Src::Node(j) => Some((&nodes[j].out, kind)),
            Src::Buf => buf_of(st).map(|b| (b, kind)),
        }
    }

    /// Index of the leaf holding `buf` read as `kind`.
    fn leaf(&self, buf: &Arc<GpuBuf>, kind: Kind) -> usize {
        self.leaves
            .iter()
            .position(|l| Arc::ptr_eq(&l.buf, buf) && l.kind == kind)
            .unwrap_or(0)
    }

    /// The kernel. `elem` evaluates the run at element `i` from the values
    /// of the leaves read as vectors (`x{k}`; the others it reads itself),
    /// `main` calls it for `per` elements: one, four read and written as
    /// vec4s, or eight as `vec4<u64>`s (shaders/wide.wgsl). `vector[k]`:
    /// leaf k is read as vectors (laid out like the output, or a row whose
    /// period is a multiple of `per`).
    fn source(&self, nodes: &[Node], srcs: &[Vec<Src>], per: usize, vector: &[bool]) -> String {
        let mut s = String::new();
        let names: Vec<&str> = nodes[self.s..self.e].iter().map(|m| m.op.name()).collect();
        let _ = writeln!(s, "// Eager ops fused at a flush: {}.", names.join(" "));
        let _ = writeln!(
            s,
            "struct Params {{\n    n: u32,\n    _p0: u32,\n    _p1: u32,\n    _p2: u32,\n}}\n\
             @group(0) @binding(0) var<uniform> p: Params;"
        );
        let nl = self.leaves.len();
        let vec = match per {
            8 => "vec4<u64>",
            4 => "vec4<f32>",
            _ => "f32",
        };
        for k in 0..nl {
            let ty = if vector[k] { vec } else { "f32" };
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read> l{k}: array<{ty}>;", k + 1);
        }
        for j in 0..self.outs.len() {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, read_write> o{j}: array<{vec}>;",
                nl + 1 + j
            );
        }
        let fields: Vec<String> = (0..self.outs.len()).map(|j| format!("v{j}: f32")).collect();
        let _ = writeln!(s, "\nstruct Out {{\n    {},\n}}\n", fields.join(",\n    "));
        let vectors: Vec<usize> = (0..nl).filter(|&k| vector[k]).collect();
        let args: Vec<String> = std::iter::once("i: u32".to_string())
            .chain(vectors.iter().map(|k| format!("x{k}: f32")))
            .collect();
        let _ = writeln!(s, "{ZERO_DECL}\nfn elem({}) -> Out {{", args.join(", "));
        let mut salt = 0;
        for i in self.s..self.e {
            // Each operand opaque, as in the op's own kernel (which reads it).
            let mut arg = |k: usize| {
                let v = match Run::operand(nodes, srcs, self.s, i, k) {
                    Some((buf, kind)) => self.value(self.leaf(buf, kind), vector),
                    None => match srcs[i][k] {
                        Src::Node(j) => format!("t{j}"),
                        Src::Buf => "0.0".into(),
                    },
                };
                salt += 1;
                opaque(&v, salt)
            };
            let rhs = match nodes[i].op {
                Op::Unary(u) => {
                    let alpha = if let UnaryOp::LeakyRelu(a) = u { a } else { 0.0 };
                    let x = arg(0);
                    salt += 1;
                    let alpha = opaque(&format!("bitcast<f32>({}u)", alpha.to_bits()), salt);
                    format!("unary_apply({}u, {x}, {alpha})", u.code())
                }
                Op::Binary(b) => {
                    let (x, y) = (arg(0), arg(1));
                    format!("binary_apply({}u, {x}, {y})", b as u32)
                }
                _ => "0.0".into(),
            };
            let _ = writeln!(s, "    let t{i} = {rhs};");
        }
        let vals: Vec<String> = self.outs.iter().map(|i| format!("t{i}")).collect();
        let _ = writeln!(s, "    return Out({});\n}}", vals.join(", "));
        let _ = writeln!(
            s,
            "\n@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, \
             @builtin(num_workgroups) nwg: vec3<u32>) {{\n{ZERO_SET}\n    let j = linear_index(gid, nwg);"
        );
        let _ = writeln!(s, "    if (j >= p.n / {per}u) {{\n        return;\n    }}");
        if per == 1 {
            let xs: Vec<String> = std::iter::once("j".to_string())
                .chain(vectors.iter().map(|k| format!("l{k}[j]")))
                .collect();
            let _ = writeln!(s, "    let e = elem({});", xs.join(", "));
            for j in 0..self.outs.len() {
                let _ = writeln!(s, "    o{j}[j] = e.v{j};");
            }
            s.push_str("}\n");
            return s;
        }
        for &k in &vectors {
            // A row's vectors repeat every period / per.
            let at = match self.leaves[k].kind {
                Kind::Row(p) => format!("j % {}u", p / per),
                _ => "j".into(),
            };
            let load = if per == 8 {
                format!("unpack8(l{k}[{at}])")
            } else {
                format!("l{k}[{at}]")
            };
            let _ = writeln!(s, "    let w{k} = {load};");
        }
        const LANES: [&str; 8] = ["lo.x", "lo.y", "lo.z", "lo.w", "hi.x", "hi.y", "hi.z", "hi.w"];
        let lanes = if per == 8 {
            &LANES[..]
        } else {
            &["x", "y", "z", "w"][..]
        };
        for (c, lane) in lanes.iter().enumerate() {
            let xs: Vec<String> = std::iter::once(format!("{per}u * j + {c}u"))
                .chain(vectors.iter().map(|k| format!("w{k}.{lane}")))
                .collect();
            let _ = writeln!(s, "    let e{c} = elem({});", xs.join(", "));
        }
        for j in 0..self.outs.len() {
            let v: Vec<String> = (0..per).map(|c| format!("e{c}.v{j}")).collect();
            let store = if per == 8 {
                format!(
                    "pack8(Eight(vec4<f32>({}), vec4<f32>({})))",
                    v[..4].join(", "),
                    v[4..].join(", ")
                )
            } else {
                format!("vec4<f32>({})", v.join(", "))
            };
            let _ = writeln!(s, "    o{j}[j] = {store};");
        }
        s.push_str("}\n");
        s
    }

    /// The WGSL value of leaf `k` inside `elem`, at element `i`.
    fn value(&self, k: usize, vector: &[bool]) -> String {
        if vector[k] {
            return format!("x{k}");
        }
        match self.leaves[k].kind {
            Kind::Full => format!("l{k}[i]"),
            Kind::Scalar => format!("l{k}[0]"),
            Kind::Row(p) => format!("l{k}[i % {p}u]"),
            Kind::Col(q) => format!("l{k}[i / {q}u]"),
        }
    }
}
