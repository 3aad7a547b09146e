//! A fused kernel of a compiled graph: one generated WGSL entry point (and
//! its CPU twin) that evaluates several graph ops and writes one or more of
//! their results.
//!
//! Three stages, each optional but the first:
//! - `pre`: elementwise ops evaluated at every coordinate of the kernel's
//!   shape (the "domain"); leaves are read through their broadcast strides.
//! - `reduce`: sums, means, maxima or minima of `pre` values over one block
//!   of contiguous axes of the domain, all over the same axes (sibling
//!   reductions share one pass over the data).
//! - `post`: elementwise ops and optimizer updates on the reduced values,
//!   one per output element, so `0.5 * sum(..)` or `var - lr * sum(..)` is
//!   computed where the sum is.
//!
//! Without a reduction every output has the domain's shape; with one, every
//! output has the reduced shape (the domain with the reduced axes dropped).
//! The GPU reduces a block with one invocation per output when outputs are
//! many and blocks short, and with one workgroup per output (a tree in
//! workgroup memory) otherwise. Without a reduction, CPU adapters with
//! 64-bit integers run an eight-wide form (`Fused::source_wide`) that reads
//! and writes eight elements per invocation as a `vec4<u64>`.

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::binary::with_binary;
use crate::core::op::unary::with_unary;
use crate::core::shape::{broadcast_strides, numel, strides};
use crate::ops::binary::BinaryOp;
use crate::ops::optim::Update;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use crate::runtime::Device;
use crate::runtime::cpu::CpuData;
use crate::runtime::cpu::apply3;
use crate::runtime::cpu::arena::{output, with_scratch_unzeroed};
use crate::runtime::wgpu::generated::{ZERO_DECL, ZERO_SET, generated_kernel, opaque};
use crate::runtime::wgpu::memory::GpuBuf;
use crate::runtime::wgpu::{KType, Kernel, Launch, ParamBlock, fold, grid};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fmt::Write;
use std::sync::{Arc, OnceLock};

/// An operand inside a fused kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Arg {
    /// Input buffer k, read at the current coordinate.
    Leaf(usize),
    /// Result of pre op t.
    Pre(usize),
    /// Result of reduction r.
    Red(usize),
    /// Result of post op t.
    Post(usize),
    /// Field f (0 variable, 1 and 2 slots) of post op t, an optimizer update.
    Field(usize, u8),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FOp {
    Const(f32),
    Unary(UnaryOp, Arg),
    /// dy * f'(x, y): (op, x, y, dy).
    UnaryGrad(UnaryOp, Arg, Arg, Arg),
    Binary(BinaryOp, Arg, Arg),
    /// One optimizer step: variable, gradient, slots, gradient norm (only
    /// with clipping); `hyper` is the leaf holding [learning rate, Adam's rate].
    Update {
        u: Update,
        args: Vec<Arg>,
        hyper: usize,
    },
}

impl FOp {
    fn args(&self) -> Vec<&Arg> {
        match self {
            FOp::Const(_) => Vec::new(),
            FOp::Unary(_, a) => vec![a],
            FOp::UnaryGrad(_, x, y, d) => vec![x, y, d],
            FOp::Binary(_, x, y) => vec![x, y],
            FOp::Update { args, .. } => args.iter().collect(),
        }
    }

    fn name(&self) -> String {
        match self {
            FOp::Const(c) => format!("{c}"),
            FOp::Unary(u, _) => u.name().into(),
            FOp::UnaryGrad(u, ..) => u.grad_name().into(),
            FOp::Binary(b, ..) => b.name().into(),
            FOp::Update { u, .. } => u.name().into(),
        }
    }
}

/// The block of axes [lo, hi] of the domain that every reduction reduces.
pub(crate) struct Reduce {
    pub lo: usize,
    pub hi: usize,
    pub reds: Vec<(ReduceOp, Arg)>,
}

pub(crate) struct Fused {
    pub shape: Vec<usize>,
    pub leaves: Vec<Vec<usize>>,
    pub pre: Vec<FOp>,
    pub reduce: Option<Reduce>,
    pub post: Vec<FOp>,
    /// The values written, one buffer each.
    pub outs: Vec<Arg>,
    /// Graph ops this kernel replaces.
    pub covered: usize,
    /// The kernel of each [`Form`], built at its first run.
    kernels: [OnceLock<Arc<Kernel>>; 3],
}

/// A generated kernel's layout of work.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Form {
    /// An invocation per element (or per output of a reduction).
    Thread,
    /// A workgroup per output of a reduction (a tree with barriers).
    Group,
    /// Eight elements per invocation through `vec4<u64>` views.
    Wide,
}

/// Where generated code evaluates ops: at a domain index `i` (`pre`), at an
/// output index `o` (`post`), or inside `elem` of the eight-wide entry,
/// where leaves read as vectors arrive as the arguments `x{k}`.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Pre,
    Post,
    Wide,
}

/// A bit-exact f32 literal.
fn lit(c: f32) -> String {
    format!("bitcast<f32>({}u)", c.to_bits())
}

fn unary_code(u: UnaryOp) -> u32 {
    UnaryOp::ALL
        .iter()
        .position(|o| std::mem::discriminant(o) == std::mem::discriminant(&u))
        .unwrap() as u32
}

/// Reductions with fewer outputs than this, over blocks at least `WG_MIN_LEN`
/// long, use a workgroup per output.
const WG_MAX_OUTPUTS: usize = 4096;
const WG_MIN_LEN: usize = 64;
/// `WG_MIN_LEN` on CPU adapters.
const CPU_WG_MIN_LEN: usize = 16384;
const WG: usize = 256;
/// Domain elements the CPU evaluates per chunk.
const CHUNK: usize = 16384;

/// What the CPU twin's chunks share: per leaf, whether the domain reads
/// it, and a scalar's or repeating row's values tiled (with the row's
/// length) to at least a chunk and a row.
struct Tiles {
    used: Vec<bool>,
    rows: Vec<Option<(Vec<f32>, usize)>>,
}

impl Drop for Tiles {
    /// The tiles go back to the graph's arena for the next call.
    fn drop(&mut self) {
        for (tile, _) in self.rows.drain(..).flatten() {
            crate::runtime::cpu::arena::recycle(CpuData::F32(tile));
        }
    }
}
impl Fused {
    pub(crate) fn new(
        shape: Vec<usize>,
        leaves: Vec<Vec<usize>>,
        pre: Vec<FOp>,
        reduce: Option<Reduce>,
        post: Vec<FOp>,
        outs: Vec<Arg>,
        covered: usize,
    ) -> Fused {
        Fused {
            shape,
            leaves,
            pre,
            reduce,
            post,
            outs,
            covered,
            kernels: Default::default(),
        }
    }

    /// The ops covered, in order ("mul add ... | reduce_sum | mul").
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self.pre.iter().map(FOp::name).collect();
        if let Some(r) = &self.reduce {
            let reds: Vec<&str> = r.reds.iter().map(|(op, _)| op.name()).collect();
            parts.push(format!("| {} |", reds.join(" ")));
            parts.extend(self.post.iter().map(FOp::name));
        }
        format!("{} -> {} outputs", parts.join(" "), self.outs.len())
    }

    /// Elements of every output.
    pub(crate) fn out_len(&self) -> usize {
        match self.block() {
            Some((outer, _, inner)) => outer * inner,
            None => numel(&self.shape),
        }
    }

    /// (outer, len, inner) of the reduced block.
    fn block(&self) -> Option<(usize, usize, usize)> {
        self.reduce.as_ref().map(|r| {
            let s = &self.shape;
            (
                s[..r.lo].iter().product(),
                s[r.lo..=r.hi].iter().product(),
                s[r.hi + 1..].iter().product(),
            )
        })
    }

    /// Whether a reduction takes a workgroup per output: few outputs over
    /// long blocks, and on CPU adapters only the longest blocks, since
    /// their barriers cost more than a serial loop (a bias gradient's sum
    /// over a batch of 128 took 3.6 ms of llvmpipe's MLP step that way).
    fn per_workgroup(&self, cpu: bool) -> bool {
        let min = if cpu { CPU_WG_MIN_LEN } else { WG_MIN_LEN };
        self.block()
            .is_some_and(|(outer, len, inner)| outer * inner <= WG_MAX_OUTPUTS && len >= min)
    }

    /// WGSL expression of leaf `k` in the domain, at linear index `i`.
    fn load_pre(&self, k: usize) -> String {
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

    /// WGSL expression of leaf `k` in the output space, at index `o`: a
    /// scalar or a tensor laid out as the outputs (the compiler checks).
    fn load_post(&self, k: usize) -> String {
        if numel(&self.leaves[k]) == 1 {
            format!("f32(l{k}[0])")
        } else {
            format!("f32(l{k}[o])")
        }
    }

    /// The `vec4<u64>` the eight-wide entry reads of leaf `k` for elements
    /// 8j..8j+7, if it reads the leaf as vectors: laid out as the domain,
    /// or a row whose period is a multiple of 8.
    fn wide_load(&self, k: usize) -> Option<String> {
        let ls = &self.leaves[k];
        let n = numel(&self.shape);
        if numel(ls) == n {
            return Some(format!("l{k}[j]"));
        }
        let core: Vec<usize> = ls.iter().copied().skip_while(|&d| d == 1).collect();
        let period = numel(&core);
        (numel(ls) > 1 && self.shape.ends_with(&core) && period % 8 == 0).then(|| format!("l{k}[j % {}u]", period / 8))
    }

    fn expr(&self, a: &Arg, at: Place) -> String {
        match *a {
            Arg::Leaf(k) if at == Place::Post => self.load_post(k),
            Arg::Leaf(k) if at == Place::Wide && self.wide_load(k).is_some() => format!("x{k}"),
            Arg::Leaf(k) => self.load_pre(k),
            Arg::Pre(t) => format!("t{t}"),
            Arg::Red(r) => format!("r{r}"),
            Arg::Post(t) => format!("q{t}"),
            Arg::Field(t, f) => format!("q{t}.{}", ["w", "a", "b"][f as usize]),
        }
    }

    /// `let` lines evaluating `ops` (prefix t for pre, q for post).
    fn lines(&self, ops: &[FOp], at: Place, s: &mut String) {
        let e = |a: &Arg| self.expr(a, at);
        // Operands opaque (runtime::wgpu::generated::opaque), salted apart
        // between `pre` and `post`, which one kernel may both hold.
        let salt = std::cell::Cell::new(if at == Place::Post { 1 << 20 } else { 0 });
        let o = |v: String| {
            salt.set(salt.get() + 1);
            opaque(&v, salt.get())
        };
        let p = if at == Place::Post { "q" } else { "t" };
        for (t, op) in ops.iter().enumerate() {
            let rhs = match op {
                FOp::Const(c) => lit(*c),
                FOp::Unary(u, a) => format!("unary_apply({}u, {}, 0.0)", unary_code(*u), o(e(a))),
                FOp::UnaryGrad(u, x, y, dy) => {
                    let (x, y, dy) = (o(e(x)), o(e(y)), o(e(dy)));
                    let d = o(format!("unary_deriv({}u, {x}, {y}, 0.0)", unary_code(*u)));
                    format!("{dy} * {d}")
                }
                FOp::Binary(b, x, y) => {
                    let (x, y) = (o(e(x)), o(e(y)));
                    format!("binary_apply({}u, {x}, {y})", *b as u32)
                }
                FOp::Update { u, args, hyper } => {
                    let k = u.slots();
                    let slot = |j: usize| if j < k { e(&args[2 + j]) } else { "0.0".into() };
                    let norm = if u.clip.is_some() {
                        e(&args[2 + k])
                    } else {
                        "0.0".into()
                    };
                    u.wgsl(
                        &e(&args[0]),
                        &e(&args[1]),
                        [&slot(0), &slot(1)],
                        &norm,
                        &format!("f32(l{hyper}[0])"),
                        &format!("f32(l{hyper}[1])"),
                    )
                }
            };
            let _ = writeln!(s, "    let {p}{t} = {rhs};");
        }
    }

    /// Whether the kernel can run eight elements per invocation through
    /// `vec4<u64>` views (`source_wide`): elementwise only, over a multiple
    /// of 8 elements.
    fn can_be_wide(&self) -> bool {
        self.reduce.is_none()
            && numel(&self.shape) % 8 == 0
            && !self.pre.iter().any(|op| matches!(op, FOp::Update { .. }))
    }

    /// The eight-wide kernel for CPU adapters with 64-bit integers
    /// (shaders/wide.wgsl): entry `main` evaluates elements 8j..8j+7,
    /// reading leaves laid out as the domain (or rows of a multiple of 8)
    /// as one `vec4<u64>` each and writing each output as one. The ops run
    /// in `elem`, once per element, as in `source`'s kernel.
    pub(crate) fn source_wide(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "// Generated by a compiled graph, 8 elements per invocation: {}.\n{ZERO_DECL}",
            self.describe()
        );
        let nl = self.leaves.len();
        let wide: Vec<Option<String>> = (0..nl).map(|k| self.wide_load(k)).collect();
        for (k, w) in wide.iter().enumerate() {
            let ty = if w.is_some() { "vec4<u64>" } else { "T" };
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read> l{k}: array<{ty}>;", k + 1);
        }
        for j in 0..self.outs.len() {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, read_write> o{j}: array<vec4<u64>>;",
                nl + 1 + j
            );
        }
        let fields: Vec<String> = (0..self.outs.len()).map(|j| format!("v{j}: f32")).collect();
        let _ = writeln!(s, "\nstruct Out {{\n    {},\n}}\n", fields.join(",\n    "));
        let args: Vec<String> = std::iter::once("i: u32".to_string())
            .chain((0..nl).filter(|&k| wide[k].is_some()).map(|k| format!("x{k}: f32")))
            .collect();
        let _ = writeln!(s, "fn elem({}) -> Out {{", args.join(", "));
        self.lines(&self.pre, Place::Wide, &mut s);
        let vals: Vec<String> = self.outs.iter().map(|a| self.expr(a, Place::Wide)).collect();
        let _ = writeln!(s, "    return Out({});\n}}", vals.join(", "));
        let _ = writeln!(
            s,
            "\n@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, \
             @builtin(num_workgroups) nwg: vec3<u32>) {{\n{ZERO_SET}\n    let j = linear_index(gid, nwg);"
        );
        let _ = writeln!(
            s,
            "    if (j >= {}u) {{\n        return;\n    }}",
            numel(&self.shape) / 8
        );
        for (k, w) in wide.iter().enumerate() {
            if let Some(w) = w {
                let _ = writeln!(s, "    let w{k} = unpack8({w});");
            }
        }
        const LANES: [&str; 8] = ["lo.x", "lo.y", "lo.z", "lo.w", "hi.x", "hi.y", "hi.z", "hi.w"];
        for (c, lane) in LANES.iter().enumerate() {
            let xs: Vec<String> = std::iter::once(format!("8u * j + {c}u"))
                .chain((0..nl).filter(|&k| wide[k].is_some()).map(|k| format!("w{k}.{lane}")))
                .collect();
            let _ = writeln!(s, "    let e{c} = elem({});", xs.join(", "));
        }
        for j in 0..self.outs.len() {
            let v = |c: usize| format!("e{c}.v{j}");
            let _ = writeln!(
                s,
                "    o{j}[j] = pack8(Eight(vec4<f32>({}, {}, {}, {}), vec4<f32>({}, {}, {}, {})));",
                v(0),
                v(1),
                v(2),
                v(3),
                v(4),
                v(5),
                v(6),
                v(7)
            );
        }
        s.push_str("}\n");
        s
    }

    /// The kernel of form `Thread` or, for a reduction, `Group`.
    pub(crate) fn source(&self, form: Form) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "// Generated by a compiled graph: {}.\n{ZERO_DECL}", self.describe());
        let nl = self.leaves.len();
        for k in 0..nl {
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read> l{k}: array<T>;", k + 1);
        }
        for j in 0..self.outs.len() {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, read_write> o{j}: array<T>;",
                nl + 1 + j
            );
        }
        let head = "@compute @workgroup_size(256)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, \
                    @builtin(num_workgroups) nwg: vec3<u32>) {";
        let Some(r) = &self.reduce else {
            let _ = writeln!(s, "\n{head}\n{ZERO_SET}\n    let i = linear_index(gid, nwg);");
            let _ = writeln!(s, "    if (i >= {}u) {{\n        return;\n    }}", numel(&self.shape));
            self.lines(&self.pre, Place::Pre, &mut s);
            for (j, a) in self.outs.iter().enumerate() {
                let _ = writeln!(s, "    o{j}[i] = T({});", self.expr(a, Place::Pre));
            }
            s.push_str("}\n");
            return s;
        };
        let (_, len, inner) = self.block().unwrap();
        let nr = r.reds.len();
        // pre(i): the values to reduce at domain index i.
        let fields: Vec<String> = (0..nr).map(|j| format!("v{j}: f32")).collect();
        let _ = writeln!(s, "\nstruct Pre {{\n    {},\n}}\n", fields.join(",\n    "));
        let _ = writeln!(s, "fn pre(i: u32) -> Pre {{");
        self.lines(&self.pre, Place::Pre, &mut s);
        let vals: Vec<String> = r.reds.iter().map(|(_, a)| self.expr(a, Place::Pre)).collect();
        let _ = writeln!(s, "    return Pre({});\n}}\n", vals.join(", "));
        // post(o, r...): finish output element o.
        let rs: Vec<String> = (0..nr).map(|j| format!("r{j}: f32")).collect();
        let _ = writeln!(s, "fn post(o: u32, {}) {{", rs.join(", "));
        self.lines(&self.post, Place::Post, &mut s);
        for (j, a) in self.outs.iter().enumerate() {
            let _ = writeln!(s, "    o{j}[o] = T({});", self.expr(a, Place::Post));
        }
        s.push_str("}\n\n");
        let comb = |j: usize, a: &str, b: &str| match r.reds[j].0 {
            ReduceOp::Max => format!("f32_max_nan({a}, {b})"),
            ReduceOp::Min => format!("f32_min_nan({a}, {b})"),
            _ => format!("{a} + {b}"),
        };
        let fin = |j: usize, a: &str| match r.reds[j].0 {
            ReduceOp::Mean => format!("{a} / {}", lit(len as f32)),
            _ => a.to_string(),
        };
        let finals: Vec<String> = (0..nr).map(|j| fin(j, &format!("a{j}"))).collect();
        let out_n = self.out_len();
        if form != Form::Group {
            let _ = writeln!(s, "{head}\n{ZERO_SET}\n    let o = linear_index(gid, nwg);");
            let _ = writeln!(s, "    if (o >= {out_n}u) {{\n        return;\n    }}");
            let _ = writeln!(s, "    let base = (o / {inner}u) * {}u + o % {inner}u;", len * inner);
            let _ = writeln!(s, "    let v = pre(base);");
            for j in 0..nr {
                let _ = writeln!(s, "    var a{j} = v.v{j};");
            }
            let _ = writeln!(s, "    for (var k = 1u; k < {len}u; k++) {{");
            let _ = writeln!(s, "        let v = pre(base + k * {inner}u);");
            for j in 0..nr {
                let _ = writeln!(s, "        a{j} = {};", comb(j, &format!("a{j}"), &format!("v.v{j}")));
            }
            let _ = writeln!(s, "    }}\n    post(o, {});\n}}", finals.join(", "));
            return s;
        }
        // One workgroup per output: strided partial results, then a tree.
        for j in 0..nr {
            let _ = writeln!(s, "var<workgroup> s{j}: array<f32, {WG}>;");
        }
        let _ = writeln!(
            s,
            "\n@compute @workgroup_size({WG})\nfn main(@builtin(workgroup_id) wid: vec3<u32>, \
             @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {{"
        );
        let _ = writeln!(s, "{ZERO_SET}\n    let o = wid.x + wid.y * nwg.x;");
        let _ = writeln!(s, "    if (o >= {out_n}u) {{\n        return;\n    }}");
        let _ = writeln!(s, "    let base = (o / {inner}u) * {}u + o % {inner}u;", len * inner);
        for j in 0..nr {
            // The identity of each reduction (a true infinity, not a sentinel).
            let id = match r.reds[j].0 {
                ReduceOp::Max => lit(f32::NEG_INFINITY),
                ReduceOp::Min => lit(f32::INFINITY),
                _ => "0.0".into(),
            };
            let _ = writeln!(s, "    var a{j} = {id};");
        }
        let _ = writeln!(s, "    for (var k = lid; k < {len}u; k += {WG}u) {{");
        let _ = writeln!(s, "        let v = pre(base + k * {inner}u);");
        for j in 0..nr {
            let _ = writeln!(s, "        a{j} = {};", comb(j, &format!("a{j}"), &format!("v.v{j}")));
        }
        let _ = writeln!(s, "    }}");
        for j in 0..nr {
            let _ = writeln!(s, "    s{j}[lid] = a{j};");
        }
        let _ = writeln!(s, "    workgroupBarrier();");
        let _ = writeln!(
            s,
            "    for (var h = {}u; h > 0u; h >>= 1u) {{\n        if (lid < h) {{",
            WG / 2
        );
        for j in 0..nr {
            let _ = writeln!(
                s,
                "            s{j}[lid] = {};",
                comb(j, &format!("s{j}[lid]"), &format!("s{j}[lid + h]"))
            );
        }
        let _ = writeln!(s, "        }}\n        workgroupBarrier();\n    }}");
        let fin_s: Vec<String> = (0..nr).map(|j| fin(j, &format!("s{j}[0]"))).collect();
        let _ = writeln!(
            s,
            "    if (lid == 0u) {{\n        post(o, {});\n    }}\n}}",
            fin_s.join(", ")
        );
        s
    }

    /// The generated kernel, or with `wide` its eight-wide form (each
    /// built once; identical sources share one while it stays in the cache
    /// of generated kernels).
    fn kernel(&self, form: Form) -> Result<Arc<Kernel>> {
        let cell = &self.kernels[form as usize];
        if let Some(k) = cell.get() {
            return Ok(k.clone());
        }
        let wide = form == Form::Wide;
        let src = if wide { self.source_wide() } else { self.source(form) };
        let sources: &'static [&'static str] = if wide {
            &[
                include_str!("../../shaders/common.wgsl"),
                include_str!("../../shaders/elementwise.wgsl"),
                include_str!("../../shaders/optimizer_rules.wgsl"),
                include_str!("../../shaders/wide.wgsl"),
            ]
        } else {
            &[
                include_str!("../../shaders/common.wgsl"),
                include_str!("../../shaders/elementwise.wgsl"),
                include_str!("../../shaders/optimizer_rules.wgsl"),
            ]
        };
        let k = generated_kernel("fused", src, sources)?;
        let _ = cell.set(k.clone());
        Ok(k)
    }

    /// Runs the kernel on its leaves; returns one tensor per output, with
    /// the given shapes (each of `out_len` elements).
    /// `planned` holds the buffers a memory plan assigned to outputs
    /// (the others come from the pool).
    pub(crate) fn run(
        &self,
        x: &[Tensor],
        shapes: &[Vec<usize>],
        device: &Device,
        planned: Vec<Option<GpuBuf>>,
    ) -> Result<Vec<Tensor>> {
        let n = self.out_len();
        match device {
            Device::Cpu => Ok(self
                .cpu(x)
                .into_iter()
                .zip(shapes)
                .map(|(v, s)| Tensor::from_cpu(CpuData::F32(v), s.clone()))
                .collect()),
            Device::Gpu(g) => {
                let mut planned = planned.into_iter();
                let mut ys: Vec<GpuBuf> = shapes
                    .iter()
                    .map(|_| match planned.next().flatten() {
                        Some(b) => Ok(b),
                        None => g.alloc("fused", (n * DType::F32.size()) as u64),
                    })
                    .collect::<Result<_>>()?;
                let mut bufs: Vec<&GpuBuf> = x.iter().map(|t| t.gpu_buf()).collect();
                bufs.extend(ys.iter());
                // Eight elements per invocation where the adapter wants
                // them and every view starts on a vec4<u64>.
                let form = if self.can_be_wide() && g.elements_per_invocation(n, DType::F32, &bufs) == 8 {
                    Form::Wide
                } else if self.per_workgroup(g.cpu_style()) {
                    Form::Group
                } else {
                    Form::Thread
                };
                let k = self.kernel(form)?;
                let groups = match form {
                    Form::Group => fold(n),
                    Form::Wide => grid(n / 8, WG as u32),
                    Form::Thread => grid(n, WG as u32),
                };
                g.launch(&Launch {
                    kernel: &k,
                    entry: "main",
                    ty: KType::F32,
                    consts: &[],
                    params: ParamBlock::NONE,
                    bufs: &bufs,
                    groups,
                })?;
                for y in &mut ys {
                    g.depend(y, x.iter().map(|t| t.gpu_buf()))?;
                }
                let out: Vec<Tensor> = ys
                    .into_iter()
                    .zip(shapes)
                    .map(|(b, s)| Tensor::from_gpu(b, s.clone(), DType::F32, device))
                    .collect();
                if crate::ops::cross_check_enabled() {
                    crate::tensor::observe::internal_reads(|| self.cross_check(x, &out))?;
                }
                Ok(out)
            }
        }
    }

    /// `WGFLOW_CROSS_CHECK=1`: the GPU's results against the CPU twin's.
    /// Reductions get sqrt(length) times the elementwise tolerance.
    fn cross_check(&self, x: &[Tensor], out: &[Tensor]) -> Result<()> {
        let host: Vec<Tensor> = x.iter().map(|t| t.to_device(&Device::Cpu)).collect::<Result<_>>()?;
        let want = self.cpu(&host);
        let len = self.block().map_or(1, |(_, len, _)| len) as f64;
        let (atol, rtol) = (1e-5 * len.sqrt().max(1.0), 1e-4);
        for (o, w) in out.iter().zip(&want) {
            let got = o.to_f64_vec()?;
            let mut max = 0f64;
            let mut ok = true;
            for (g, &w) in got.iter().zip(w) {
                let w = w as f64;
                if g.is_nan() && w.is_nan() {
                    continue;
                }
                // Infinities must match exactly (inf - inf is NaN).
                if g.is_infinite() || w.is_infinite() {
                    ok &= *g == w;
                    continue;
                }
                let e = (g - w).abs();
                max = max.max(e);
                ok &= e <= atol + rtol * w.abs();
            }
            if !ok {
                return Err(crate::core::error::Error::CrossCheck {
                    op: format!("fused[{}]", self.describe()),
                    shapes: x.iter().map(|t| t.shape().to_vec()).collect(),
                    max_abs_err: max,
                    tolerance: format!("atol {atol:e} + rtol {rtol:e}"),
                });
            }
        }
        Ok(())
    }

    /// The CPU twin: the same ops in f32, evaluated a chunk of the domain
    /// at a time (op by op over the chunk, chunks in parallel); reductions
    /// accumulate in f64; optimizer updates use the reference rule.
    pub(crate) fn cpu(&self, x: &[Tensor]) -> Vec<Vec<f32>> {
        let data: Vec<&[f32]> = x
            .iter()
            .map(|t| match t.cpu_data() {
                CpuData::F32(v) => v.as_slice(),
                _ => unreachable!("fused kernels read f32"),
            })
            .collect();
        let n = numel(&self.shape);
        let chunks = n.div_ceil(CHUNK);
        let tiles = self.tiles(&data);
        let Some(r) = &self.reduce else {
            // Each chunk writes its piece of every output in place, into a
            // buffer of the graph's arena (or new memory on the first replay).
            let mut outs: Vec<Vec<f32>> = self.outs.iter().map(|_| output::<f32>(n)).collect();
            let mut pieces: Vec<Vec<&mut [f32]>> = (0..chunks).map(|_| Vec::new()).collect();
            for o in outs.iter_mut() {
                for (c, piece) in o.chunks_mut(CHUNK).enumerate() {
                    pieces[c].push(piece);
                }
            }
            let part = |(c, dst): (usize, Vec<&mut [f32]>)| {
                let cl = CHUNK.min(n - c * CHUNK);
                // An output that is a pre op's value is written there by
                // the op (the first output of each op), not copied after.
                let mut direct: Vec<Option<&mut [f32]>> = self.pre.iter().map(|_| None).collect();
                let mut copied = Vec::new();
                for (a, d) in self.outs.iter().zip(dst) {
                    match *a {
                        Arg::Pre(t) if direct[t].is_none() && d.len() == cl => direct[t] = Some(d),
                        _ => copied.push((a, d)),
                    }
                }
                with_scratch_unzeroed(self.pre.len() * cl, |pre: &mut [f32]| {
                    let leaves = self.pre_chunk(&data, &tiles, (c * CHUNK, cl), pre, &mut direct);
                    for (a, d) in copied {
                        let src = pick(a, &leaves, pre, &direct, cl);
                        let (head, tail) = d.split_at_mut(src.len().min(d.len()));
                        head.copy_from_slice(&src[..head.len()]);
                        // Never taken (a piece is as long as its chunk's values),
                        // but it keeps every element written whatever they are.
                        tail.fill(f32::NAN);
                    }
                });
            };
            if chunks > 1 {
                pieces.into_par_iter().enumerate().for_each(part);
            } else {
                pieces.into_iter().enumerate().for_each(part);
            }
            return outs;
        };
        let (outer, len, inner) = self.block().unwrap();
        let m = outer * inner;
        let ident = |op: ReduceOp| match op {
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
            _ => 0.0,
        };
        use crate::core::float::{max_nan, min_nan};
        let comb = |op: ReduceOp, a: f64, b: f64| match op {
            ReduceOp::Max => max_nan(a, b),
            ReduceOp::Min => min_nan(a, b),
            _ => a + b,
        };
        // Partial results per group of chunks, then combined.
        let groups = chunks.min(rayon::current_num_threads() * 4).max(1);
        let per = chunks.div_ceil(groups);
        let run_group = |gi: usize| -> Vec<Vec<f64>> {
            let mut acc: Vec<Vec<f64>> = r.reds.iter().map(|(op, _)| vec![ident(*op); m]).collect();
            for c in gi * per..((gi + 1) * per).min(chunks) {
                let (start, cl) = (c * CHUNK, CHUNK.min(n - c * CHUNK));
                with_scratch_unzeroed(self.pre.len() * cl, |pre: &mut [f32]| {
                    let leaves = self.pre_chunk(&data, &tiles, (start, cl), pre, &mut []);
                    for (j, (op, a)) in r.reds.iter().enumerate() {
                        let vals = pick(a, &leaves, pre, &[], cl);
                        let acc = &mut acc[j];
                        // Output index of domain index i: (i / (len inner)) inner
                        // + i % inner. Taken in segments: a run of the inner
                        // axis (consecutive outputs) or, with no inner axis, a
                        // run of the reduced axis (one output), so that the
                        // loops below have no index arithmetic per element.
                        // (q, rem): block and offset in it of domain index
                        // start + i, and c = rem % inner, advanced per
                        // segment without dividing.
                        let block = len * inner;
                        let (mut q, mut rem) = (start / block, start % block);
                        let mut c = rem % inner;
                        let mut i = 0;
                        while i < vals.len() {
                            let seg = if inner == 1 { len - rem } else { inner - c }.min(vals.len() - i);
                            let v = &vals[i..i + seg];
                            if inner == 1 {
                                let a = &mut acc[q];
                                *a = match op {
                                    ReduceOp::Max => v.iter().fold(*a, |a, &v| max_nan(a, v as f64)),
                                    ReduceOp::Min => v.iter().fold(*a, |a, &v| min_nan(a, v as f64)),
                                    _ => v.iter().fold(*a, |a, &v| a + v as f64),
                                };
                            } else {
                                let o = q * inner + c;
                                let a = &mut acc[o..o + seg];
                                match op {
                                    ReduceOp::Max => a.iter_mut().zip(v).for_each(|(a, &v)| *a = max_nan(*a, v as f64)),
                                    ReduceOp::Min => a.iter_mut().zip(v).for_each(|(a, &v)| *a = min_nan(*a, v as f64)),
                                    _ => a.iter_mut().zip(v).for_each(|(a, &v)| *a += v as f64),
                                }
                            }
                            i += seg;
                            rem += seg;
                            if inner > 1 {
                                c += seg;
                                if c == inner {
                                    c = 0;
                                }
                            }
                            if rem == block {
                                (q, rem) = (q + 1, 0);
                            }
                        }
                    }
                });
            }
            acc
        };
        let partial: Vec<Vec<Vec<f64>>> = if groups > 1 {
            (0..groups).into_par_iter().map(run_group).collect()
        } else {
            vec![run_group(0)]
        };
        let mut red: Vec<Vec<f64>> = r.reds.iter().map(|(op, _)| vec![ident(*op); m]).collect();
        for part in partial {
            for (j, (op, _)) in r.reds.iter().enumerate() {
                for (a, b) in red[j].iter_mut().zip(&part[j]) {
                    *a = comb(*op, *a, *b);
                }
            }
        }
        let red: Vec<Vec<f32>> = r
            .reds
            .iter()
            .zip(red)
            .map(|((op, _), v)| {
                v.into_iter()
                    .map(|a| {
                        if *op == ReduceOp::Mean {
                            (a / len as f64) as f32
                        } else {
                            a as f32
                        }
                    })
                    .collect()
            })
            .collect();
        self.post_cpu(&data, &red, m)
    }

    /// Which leaves the domain reads (the epilogue's are laid out
    /// otherwise), and the scalars and repeating rows among them tiled to
    /// a chunk and a row, so that each chunk borrows its piece.
    fn tiles(&self, data: &[&[f32]]) -> Tiles {
        let mut used = vec![false; self.leaves.len()];
        let reds = self.reduce.iter().flat_map(|r| r.reds.iter().map(|(_, a)| a));
        for a in self.pre.iter().flat_map(FOp::args).chain(reds).chain(&self.outs) {
            if let Arg::Leaf(k) = a {
                used[*k] = true;
            }
        }
        let n = numel(&self.shape);
        let rows = data
            .iter()
            .zip(&self.leaves)
            .zip(&used)
            .map(|((v, ls), &u)| {
                let m = v.len();
                let core: Vec<usize> = ls.iter().copied().skip_while(|&d| d == 1).collect();
                // Rows of a chunk or more are copied per chunk instead (a
                // few copies each): a tile would double them in memory.
                (u && m > 0 && m < CHUNK && m != n && self.shape.ends_with(&core)).then(|| {
                    let len = m.saturating_mul(CHUNK.div_ceil(m) + 1);
                    let mut tile = output::<f32>(len);
                    for (t, &e) in tile.iter_mut().zip(v.iter().cycle()) {
                        *t = e;
                    }
                    (tile, m)
                })
            })
            .collect();
        Tiles { used, rows }
    }

    /// Leaf values over domain indices [start, start + n), and the pre ops'
    /// values there: op t's into `direct[t]` where that holds a slice (an
    /// output's piece), else into `pre` at `[t n, (t + 1) n)`.
    fn pre_chunk<'a>(
        &self,
        data: &[&'a [f32]],
        tiles: &'a Tiles,
        (start, n): (usize, usize),
        pre: &mut [f32],
        direct: &mut [Option<&mut [f32]>],
    ) -> Vec<Cow<'a, [f32]>> {
        let leaves: Vec<Cow<[f32]>> = (0..self.leaves.len())
            .map(|k| {
                if tiles.used[k] {
                    self.leaf_chunk(data[k], k, tiles, start, n)
                } else {
                    Cow::Borrowed(&[][..])
                }
            })
            .collect();
        for (t, op) in self.pre.iter().enumerate() {
            // Op t reads leaves and the ops before it, and writes its own piece.
            let (done, rest) = pre.split_at_mut(t * n);
            let (before, from) = direct.split_at_mut(t.min(direct.len()));
            let out = match from.first_mut() {
                Some(Some(d)) => &mut d[..n],
                _ => &mut rest[..n],
            };
            let get = |a: &Arg| pick(a, &leaves, done, before, n);
            match op {
                // The loops take the unary kernels' AVX2 build where the
                // CPU has it, as the eager ops do.
                FOp::Const(c) => out.fill(*c),
                FOp::Unary(u, a) => {
                    let a = get(a);
                    with_unary!(*u, |k| apply3(
                        out,
                        a,
                        a,
                        a,
                        #[inline(always)]
                        |v, _, _| k.apply(v)
                    ))
                }
                FOp::UnaryGrad(u, xa, ya, da) => {
                    let (xs, ys, ds) = (get(xa), get(ya), get(da));
                    with_unary!(*u, |k| apply3(
                        out,
                        xs,
                        ys,
                        ds,
                        #[inline(always)]
                        |x, y, d| d * k.derivative(x, y)
                    ))
                }
                FOp::Binary(b, p, q) => {
                    let (ps, qs) = (get(p), get(q));
                    with_binary!(*b, |k| apply3(
                        out,
                        ps,
                        qs,
                        qs,
                        #[inline(always)]
                        |p, q, _| k.float_op(p, q)
                    ))
                }
                FOp::Update { .. } => unreachable!("updates are post ops"),
            }
        }
        leaves
    }

    /// Leaf k's values at domain indices [start, start + n), broadcast; a
    /// leaf laid out like the domain is read in place.
    fn leaf_chunk<'a>(&self, v: &'a [f32], k: usize, tiles: &'a Tiles, start: usize, n: usize) -> Cow<'a, [f32]> {
        let shape = &self.shape;
        if v.len() == numel(shape) {
            return Cow::Borrowed(&v[start..start + n]);
        }
        if let Some((tile, m)) = &tiles.rows[k] {
            // A scalar or a row repeating: a piece of its tile.
            return Cow::Borrowed(&tile[start % m..][..n]);
        }
        let ls = &self.leaves[k];
        let core: Vec<usize> = ls.iter().copied().skip_while(|&d| d == 1).collect();
        if shape.ends_with(&core) {
            // A long row repeating: whole copies of it.
            let m = v.len();
            let mut out = Vec::with_capacity(n);
            let mut at = start % m;
            while out.len() < n {
                let take = (m - at).min(n - out.len());
                out.extend_from_slice(&v[at..at + take]);
                at = 0;
            }
            return Cow::Owned(out);
        }
        // A counter over the domain's multi-index, moving the leaf offset.
        let bs = broadcast_strides(ls, shape);
        let os = strides(shape);
        let mut idx: Vec<usize> = (0..shape.len()).map(|d| (start / os[d]) % shape[d]).collect();
        let mut off: usize = idx.iter().zip(&bs).map(|(i, b)| i * b).sum();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(v[off]);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                off += bs[d];
                if idx[d] < shape[d] {
                    break;
                }
                off -= bs[d] * shape[d];
                idx[d] = 0;
            }
        }
        Cow::Owned(out)
    }

    /// The epilogue, one output element at a time.
    fn post_cpu(&self, data: &[&[f32]], red: &[Vec<f32>], m: usize) -> Vec<Vec<f32>> {
        let at_post = |k: usize, o: usize| -> f32 {
            let v = data[k];
            if v.len() == 1 { v[0] } else { v[o] }
        };
        let mut outs: Vec<Vec<f32>> = self.outs.iter().map(|_| output::<f32>(m)).collect();
        let mut post = vec![[0f32; 3]; self.post.len()];
        for o in 0..m {
            let get = |a: &Arg, post: &[[f32; 3]]| match *a {
                Arg::Leaf(k) => at_post(k, o),
                Arg::Red(j) => red[j][o],
                Arg::Post(t) => post[t][0],
                Arg::Field(t, f) => post[t][f as usize],
                Arg::Pre(_) => unreachable!("post ops read reduced values"),
            };
            for t in 0..self.post.len() {
                post[t] = match &self.post[t] {
                    FOp::Const(c) => [*c, 0.0, 0.0],
                    FOp::Unary(u, a) => [u.apply(get(a, &post)), 0.0, 0.0],
                    FOp::UnaryGrad(u, xa, ya, da) => {
                        [get(da, &post) * u.derivative(get(xa, &post), get(ya, &post)), 0.0, 0.0]
                    }
                    FOp::Binary(b, p, q) => [b.float_op(get(p, &post), get(q, &post)), 0.0, 0.0],
                    FOp::Update { u, args, hyper } => {
                        let k = u.slots();
                        let f = |j: usize| get(&args[j], &post) as f64;
                        let s = [if k > 0 { f(2) } else { 0.0 }, if k > 1 { f(3) } else { 0.0 }];
                        let norm = if u.clip.is_some() { f(2 + k) } else { 0.0 };
                        let h = [data[*hyper][0] as f64, data[*hyper][1] as f64];
                        let (w, s) = u.step(f(0), f(1), s, norm, h);
                        [w as f32, s[0] as f32, s[1] as f32]
                    }
                };
            }
            for (j, a) in self.outs.iter().enumerate() {
                outs[j][o] = get(a, &post);
            }
        }
        outs
    }
}

/// The values of a leaf or pre operand over a chunk of `n`: pre op t's in
/// `direct[t]` where that holds its output's piece, else at
/// `[t n, (t + 1) n)` of `pre`.
fn pick<'a>(
    a: &Arg,
    leaves: &'a [Cow<[f32]>],
    pre: &'a [f32],
    direct: &'a [Option<&mut [f32]>],
    n: usize,
) -> &'a [f32] {
    match *a {
        Arg::Leaf(k) => &leaves[k],
        Arg::Pre(t) => match direct.get(t) {
            Some(Some(d)) => &d[..n],
            _ => &pre[t * n..(t + 1) * n],
        },
        _ => unreachable!("pre ops read leaves and pre ops"),
    }
}
