//! A traced inference function lowered to TFLite's op set, still in f32:
//! weights are host constants in TFLite's layouts (conv filters OHWI,
//! depthwise filters 1HWC, fully-connected weights [out, in]), bias adds,
//! per-channel scales (inference batch normalization) and activations are
//! folded into the convolution or matmul before them, and any subgraph of
//! constants is evaluated once. [`Net::eval`] runs it with wgflow's own
//! ops on the CPU device: the converter calibrates int8 ranges with it,
//! and tests check the lowering against the function.

use super::write::Act;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::core::op::binary::BinaryOp;
use crate::core::op::conv::{Conv2d, Padding};
use crate::core::op::pool::Pool2d;
use crate::core::op::reduce::ReduceOp;
use crate::core::op::unary::UnaryOp;
use crate::function::{ConcreteFunction, Dim, Feed};
use crate::runtime::Device;
use crate::tensor::Tensor;

pub(crate) const OP: &str = "tflite.convert";

pub(crate) fn unsupported(op: &str, why: &str) -> Error {
    Error::Unimplemented {
        what: format!("TensorFlow Lite conversion of op '{op}'"),
        msg: why.to_string(),
    }
}

/// A host constant.
#[derive(Clone, Debug)]
pub(crate) struct Arr {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub dtype: DType,
}

impl Arr {
    fn of(t: &Tensor) -> Result<Arr> {
        Ok(Arr {
            shape: t.shape().to_vec(),
            data: t.to_f64_vec()?.into_iter().map(|v| v as f32).collect(),
            dtype: t.dtype(),
        })
    }

    fn tensor(&self) -> Result<Tensor> {
        let t = Tensor::from_slice(&self.data, &self.shape, &Device::cpu())?;
        if self.dtype == DType::F32 {
            Ok(t)
        } else {
            crate::ops::apply(Op::Cast(self.dtype), &[&t])
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub name: String,
    /// `None`: unknown when traced (the batch).
    pub shape: Vec<Option<usize>>,
    pub konst: Option<Arr>,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// inputs: x, filter (OHWI), bias.
    Conv {
        same: bool,
        stride: [usize; 2],
        dil: [usize; 2],
    },
    /// inputs: x, filter (1HWC), bias.
    Depthwise {
        same: bool,
        stride: [usize; 2],
        dil: [usize; 2],
        mult: usize,
    },
    /// inputs: x, weights [out, in], bias.
    Fc,
    /// A transposed convolution (TRANSPOSE_CONV): inputs x, filter
    /// (OHWI: output channels first), bias; `out` is the output's
    /// [height, width, channels] (its batch is the input's).
    TransposeConv {
        same: bool,
        stride: [usize; 2],
        out: [usize; 3],
    },
    Pool {
        max: bool,
        same: bool,
        stride: [usize; 2],
        size: [usize; 2],
    },
    /// -1 where the size follows the batch.
    Reshape(Vec<i64>),
    Softmax {
        log: bool,
    },
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep: bool,
    },
    Binary(BinaryOp),
    Unary(UnaryOp),
    /// Zeros (before, after) each dimension.
    Pad(Vec<(usize, usize)>),
    /// Every input joined along the axis.
    Concat(usize),
    /// inputs: params, int32 indices.
    Gather(usize),
    /// Float to int32, truncating (an Embedding's float ids).
    CastI32,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub inputs: Vec<usize>,
    pub act: Act,
    pub out: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Net {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<usize>,
    pub input_names: Vec<String>,
    pub outputs: Vec<usize>,
    pub output_names: Vec<String>,
}

fn act_of(u: UnaryOp) -> Option<Act> {
    match u {
        UnaryOp::Relu => Some(Act::Relu),
        UnaryOp::Relu6 => Some(Act::Relu6),
        // TFLite's kernels clamp for the relus only; a fused TANH would be ignored.
        _ => None,
    }
}

fn same(p: Padding, op: &str) -> Result<bool> {
    match p {
        Padding::Same => Ok(true),
        Padding::Valid => Ok(false),
        Padding::Explicit { .. } => Err(unsupported(
            op,
            "explicit padding has no TFLite form; pad with 'same' or 'valid'",
        )),
    }
}

fn permute(a: &Arr, perm: &[usize]) -> Result<Arr> {
    let t = crate::ops::apply(Op::Permute(perm.to_vec()), &[&a.tensor()?])?;
    Arr::of(&t)
}

impl Net {
    /// Lowers `f`'s graph.
    pub(crate) fn lower(f: &ConcreteFunction) -> Result<Net> {
        let def = f.def();
        let mut net = Net {
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            input_names: Vec::new(),
            outputs: Vec::new(),
            output_names: f.output_names().to_vec(),
        };
        let mut map: Vec<Option<usize>> = vec![None; def.values.len()];
        let mut uses = vec![0usize; def.values.len()];
        for n in &def.nodes {
            for &v in &n.inputs {
                if let Some(u) = uses.get_mut(v) {
                    *u += 1;
                }
            }
        }
        for &v in &def.outputs {
            if let Some(u) = uses.get_mut(v) {
                *u += 1;
            }
        }
        let mut args = vec![None; f.inputs().len()];
        for (v, feed) in &def.feeds {
            let shape = def.values.get(*v).map(|d| d.shape.clone()).unwrap_or_default();
            let value = match feed {
                Feed::Arg(i) => {
                    let spec = f
                        .inputs()
                        .get(*i)
                        .ok_or_else(|| Error::arg(OP, format!("argument {i} has no input spec")))?;
                    if spec.dtype != DType::F32 {
                        return Err(unsupported(
                            "input",
                            &format!("input {i} is {}; wgflow writes f32 inputs", spec.dtype),
                        ));
                    }
                    let name = spec.name.clone().unwrap_or_else(|| format!("input_{i}"));
                    Value {
                        name,
                        shape: spec.shape.clone(),
                        konst: None,
                    }
                }
                Feed::Variable(i) => {
                    let var = f
                        .variables()
                        .get(*i)
                        .ok_or_else(|| Error::arg(OP, "an unbound variable"))?;
                    Value {
                        name: var.name().to_string(),
                        shape,
                        konst: Some(Arr::of(&var.value())?),
                    }
                }
                Feed::Capture(i) => {
                    let t = f
                        .captures()
                        .get(*i)
                        .ok_or_else(|| Error::arg(OP, "an unbound capture"))?;
                    Value {
                        name: "const".into(),
                        shape,
                        konst: Some(Arr::of(t)?),
                    }
                }
                Feed::Host(_) => {
                    return Err(unsupported(
                        "host input",
                        "values the host recomputes per call (an optimizer's step) have no TFLite form; convert an inference function",
                    ));
                }
            };
            let id = net.push(value);
            if let Feed::Arg(i) = feed
                && let Some(slot) = args.get_mut(*i)
            {
                *slot = Some(id);
            }
            if let Some(m) = map.get_mut(*v) {
                *m = Some(id);
            }
        }
        for (i, a) in args.iter().enumerate() {
            let id = a.ok_or_else(|| unsupported("input", &format!("input {i} is never read")))?;
            net.input_names.push(net.values[id].name.clone());
            net.inputs.push(id);
        }
        for node in &def.nodes {
            let x: Vec<usize> = node
                .inputs
                .iter()
                .map(|&v| {
                    map.get(v)
                        .copied()
                        .flatten()
                        .ok_or_else(|| Error::arg(OP, "malformed graph: a value used before it is computed"))
                })
                .collect::<Result<_>>()?;
            let Some(&o) = node.outputs.first() else { continue };
            let out_def = def
                .values
                .get(o)
                .ok_or_else(|| Error::arg(OP, "malformed graph: an output out of range"))?;
            let name = format!("{}_{}", node.op.name(), net.values.len());
            // Constant subgraphs (batch normalization's rsqrt(var + eps)) run once, here.
            let foldable = if x.is_empty() {
                matches!(node.op, Op::Fill { .. }) && node.dims.is_none()
            } else {
                !matches!(node.op, Op::Random(_))
            };
            if foldable && x.iter().all(|&v| net.values[v].konst.is_some()) {
                let ts: Vec<Tensor> = x
                    .iter()
                    .map(|&v| {
                        net.values[v]
                            .konst
                            .as_ref()
                            .map(Arr::tensor)
                            .unwrap_or_else(|| Err(Error::arg(OP, "not a constant")))
                    })
                    .collect::<Result<_>>()?;
                let refs: Vec<&Tensor> = ts.iter().collect();
                let t = match &node.op {
                    Op::Fill { shape, value, dtype } => {
                        let n: usize = shape.iter().product();
                        Arr {
                            shape: shape.clone(),
                            data: vec![*value as f32; n],
                            dtype: *dtype,
                        }
                        .tensor()?
                    }
                    // Weights a mixed policy casts to 16 bits stay f32,
                    // as the activations do (see the casts below).
                    Op::Cast(DType::F16 | DType::BF16) if ts.len() == 1 && ts[0].dtype() == DType::F32 => ts[0].clone(),
                    op => crate::ops::apply(op.clone(), &refs)?,
                };
                let id = net.push(Value {
                    name,
                    shape: t.shape().iter().map(|&d| Some(d)).collect(),
                    konst: Some(Arr::of(&t)?),
                });
                map[o] = Some(id);
                continue;
            }
            if x.is_empty() {
                return Err(unsupported(
                    node.op.name(),
                    "an op without inputs whose shape follows the batch",
                ));
            }
            if let Op::Unary(u @ (UnaryOp::Silu | UnaryOp::Selu | UnaryOp::Softplus)) = node.op {
                map[o] = Some(net.spell_out(u, x[0], &name, &out_def.shape));
                continue;
            }
            let single = uses.get(node.inputs.first().copied().unwrap_or(usize::MAX)).copied() == Some(1);
            let out = match &node.op {
                // A reduction over no axes changes nothing (TFLite's empty
                // axes would reduce every axis).
                Op::StopGradient => Some(x[0]),
                Op::Reduce { axes, .. } if axes.is_empty() => Some(x[0]),
                Op::Cast(to @ (DType::F32 | DType::F16 | DType::BF16)) => {
                    // A mixed-precision policy's casts between f32 and 16-bit
                    // floats: the TFLite model computes in f32 throughout
                    // (its float16 mode is the converter's, for weights).
                    let from = node.inputs.first().and_then(|&v| def.values.get(v)).map(|d| d.dtype);
                    let half = |d: DType| matches!(d, DType::F32 | DType::F16 | DType::BF16);
                    if from.is_some_and(half) && half(*to) {
                        Some(x[0])
                    } else {
                        None
                    }
                }
                Op::Binary(b) if matches!(b, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul) => {
                    net.fold_binary(*b, &x, &node.inputs, &uses)?
                }
                Op::Unary(u) if single => {
                    let prev = net.producer(x[0]);
                    match (act_of(*u), prev) {
                        (Some(a), Some(p)) if net.nodes[p].act == Act::None && net.can_fuse_act(p) => {
                            net.nodes[p].act = a;
                            Some(x[0])
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(id) = out {
                map[o] = Some(id);
                continue;
            }
            let id = net.push(Value {
                name,
                shape: out_def.shape.clone(),
                konst: None,
            });
            let kind = net.kind(node, &x, id)?;
            let inputs = match &kind {
                Kind::Conv { .. } | Kind::Depthwise { .. } | Kind::Fc | Kind::TransposeConv { .. } => {
                    net.weights(&kind, node, &x)?
                }
                _ => x.clone(),
            };
            net.nodes.push(Node {
                kind,
                inputs,
                act: Act::None,
                out: id,
            });
            map[o] = Some(id);
        }
        for &v in &def.outputs {
            let id = map
                .get(v)
                .copied()
                .flatten()
                .ok_or_else(|| Error::arg(OP, "an output is never computed"))?;
            if net.values[id].konst.is_some() || net.inputs.contains(&id) {
                return Err(unsupported(
                    "output",
                    "an output that is a constant or an input has no TFLite operator",
                ));
            }
            net.outputs.push(id);
        }
        Ok(net)
    }

    /// An activation TFLite has no operator for, written with its ops as
    /// TensorFlow's converter does: silu = x * sigmoid(x); selu =
    /// s a elu(x) + s (1 - a) relu(x); softplus = relu(x) + log(1 +
    /// exp(-|x|)), which never overflows. Returns the result's value.
    fn spell_out(&mut self, u: UnaryOp, x: usize, name: &str, shape: &[Option<usize>]) -> usize {
        let step = |net: &mut Net, kind: Kind, inputs: Vec<usize>| {
            let out = net.push(Value {
                name: format!("{name}/{}", net.nodes.len()),
                shape: shape.to_vec(),
                konst: None,
            });
            net.nodes.push(Node {
                kind,
                inputs,
                act: Act::None,
                out,
            });
            out
        };
        let scalar = |net: &mut Net, v: f64| {
            net.push(Value {
                name: format!("{name}/const_{}", net.values.len()),
                shape: Vec::new(),
                konst: Some(Arr {
                    shape: Vec::new(),
                    data: vec![v as f32],
                    dtype: DType::F32,
                }),
            })
        };
        let (mul, add) = (Kind::Binary(BinaryOp::Mul), Kind::Binary(BinaryOp::Add));
        match u {
            UnaryOp::Selu => {
                let (a, s) = (1.6732632423543772, 1.0507009873554805);
                let e = step(self, Kind::Unary(UnaryOp::Elu), vec![x]);
                let c = scalar(self, s * a);
                let e = step(self, mul.clone(), vec![e, c]);
                let r = step(self, Kind::Unary(UnaryOp::Relu), vec![x]);
                let c = scalar(self, s * (1.0 - a));
                let r = step(self, mul, vec![r, c]);
                step(self, add, vec![e, r])
            }
            UnaryOp::Softplus => {
                let t = step(self, Kind::Unary(UnaryOp::Abs), vec![x]);
                let t = step(self, Kind::Unary(UnaryOp::Neg), vec![t]);
                let t = step(self, Kind::Unary(UnaryOp::Exp), vec![t]);
                let one = scalar(self, 1.0);
                let t = step(self, add.clone(), vec![t, one]);
                let t = step(self, Kind::Unary(UnaryOp::Log), vec![t]);
                let r = step(self, Kind::Unary(UnaryOp::Relu), vec![x]);
                step(self, add, vec![r, t])
            }
            _ => {
                let s = step(self, Kind::Unary(UnaryOp::Sigmoid), vec![x]);
                step(self, mul, vec![x, s])
            }
        }
    }

    fn push(&mut self, v: Value) -> usize {
        self.values.push(v);
        self.values.len() - 1
    }

    fn producer(&self, v: usize) -> Option<usize> {
        self.nodes.iter().rposition(|n| n.out == v)
    }

    fn can_fuse_act(&self, p: usize) -> bool {
        matches!(
            self.nodes[p].kind,
            Kind::Conv { .. }
                | Kind::Depthwise { .. }
                | Kind::Fc
                | Kind::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul)
        )
    }

    /// `x + c`, `x - c`, `x * c` with a per-channel constant `c` right
    /// after a convolution or matmul: folded into its weights and bias.
    fn fold_binary(&mut self, b: BinaryOp, x: &[usize], def_in: &[usize], uses: &[usize]) -> Result<Option<usize>> {
        let (v, c, k) = match (x, def_in) {
            ([a, c], [da, _]) if self.values[*c].konst.is_some() && self.values[*a].konst.is_none() => (*a, *c, *da),
            ([c, a], [_, da])
                if b != BinaryOp::Sub && self.values[*c].konst.is_some() && self.values[*a].konst.is_none() =>
            {
                (*a, *c, *da)
            }
            _ => return Ok(None),
        };
        if uses.get(k).copied() != Some(1) {
            return Ok(None);
        }
        let Some(p) = self.producer(v) else { return Ok(None) };
        let node = &self.nodes[p];
        if node.act != Act::None
            || !matches!(
                node.kind,
                Kind::Conv { .. } | Kind::Depthwise { .. } | Kind::Fc | Kind::TransposeConv { .. }
            )
        {
            return Ok(None);
        }
        let Some(cv) = self.values[c].konst.clone() else {
            return Ok(None);
        };
        let channels = self.values[node.inputs[1]].konst.as_ref().map(|w| match node.kind {
            Kind::Depthwise { .. } => w.shape.last().copied().unwrap_or(0),
            _ => w.shape.first().copied().unwrap_or(0),
        });
        let Some(channels) = channels else { return Ok(None) };
        let per_channel =
            cv.data.len() == channels && cv.shape.iter().rev().skip(1).all(|&d| d == 1) || cv.data.len() == 1;
        if !per_channel || cv.shape.len() > self.values[v].shape.len() || cv.dtype != DType::F32 {
            return Ok(None);
        }
        let at = |i: usize| if cv.data.len() == 1 { cv.data[0] } else { cv.data[i] };
        let (w_id, b_id) = (node.inputs[1], node.inputs[2]);
        let depthwise = matches!(node.kind, Kind::Depthwise { .. });
        let bias = self.values[b_id]
            .konst
            .as_mut()
            .ok_or_else(|| Error::arg(OP, "a bias that is not a constant"))?;
        for (i, bv) in bias.data.iter_mut().enumerate() {
            match b {
                BinaryOp::Add => *bv += at(i),
                BinaryOp::Sub => *bv -= at(i),
                _ => *bv *= at(i),
            }
        }
        if b == BinaryOp::Mul {
            let w = self.values[w_id]
                .konst
                .as_mut()
                .ok_or_else(|| Error::arg(OP, "weights that are not a constant"))?;
            let inner = w.data.len() / channels.max(1);
            for (j, wv) in w.data.iter_mut().enumerate() {
                let ch = if depthwise { j % channels } else { j / inner.max(1) };
                *wv *= at(ch);
            }
        }
        Ok(Some(v))
    }

    fn kind(&self, node: &crate::function::NodeDef, x: &[usize], out: usize) -> Result<Kind> {
        let rank = self.values[x[0]].shape.len();
        let name = node.op.name();
        Ok(match &node.op {
            Op::Conv2d(c) => {
                let w = self
                    .values
                    .get(x[1])
                    .and_then(|v| v.konst.as_ref())
                    .ok_or_else(|| unsupported(name, "a filter that is not a constant"))?;
                let cin = self.values[x[0]].shape.get(3).copied().flatten().unwrap_or(0);
                let s = same(c.padding, name)?;
                if c.groups == 1 {
                    Kind::Conv {
                        same: s,
                        stride: c.strides,
                        dil: c.dilations,
                    }
                } else if c.groups == cin && w.shape.get(2) == Some(&1) {
                    let cout = w.shape.get(3).copied().unwrap_or(0);
                    Kind::Depthwise {
                        same: s,
                        stride: c.strides,
                        dil: c.dilations,
                        mult: cout / cin.max(1),
                    }
                } else {
                    return Err(unsupported(
                        name,
                        &format!(
                            "{} groups: TFLite has ordinary and depthwise convolutions only",
                            c.groups
                        ),
                    ));
                }
            }
            Op::Conv2dInputGrad(c, xs) => {
                if self.values[x[1]].konst.is_none() {
                    return Err(unsupported(name, "a filter that is not a constant"));
                }
                if c.groups != 1 || c.dilations != [1, 1] {
                    return Err(unsupported(
                        name,
                        &format!(
                            "{} groups, dilations {:?}: TFLite's TRANSPOSE_CONV takes one group and no dilation",
                            c.groups, c.dilations
                        ),
                    ));
                }
                let &[_, h, w, ch] = xs.as_slice() else {
                    return Err(unsupported(
                        name,
                        "an output that is not [batch, height, width, channels]",
                    ));
                };
                Kind::TransposeConv {
                    same: same(c.padding, name)?,
                    stride: c.strides,
                    out: [h, w, ch],
                }
            }
            Op::MatMul { ta: false, tb } => {
                let w = self.values.get(x[1]).and_then(|v| v.konst.as_ref());
                if rank != 2 || w.is_none_or(|w| w.shape.len() != 2) {
                    return Err(unsupported(
                        name,
                        "only x @ W with a 2-D input and constant 2-D weights (a Dense layer) is converted",
                    ));
                }
                let _ = tb;
                Kind::Fc
            }
            Op::Pool(p) => Kind::Pool {
                max: p.max,
                same: same(p.padding, name)?,
                stride: p.strides,
                size: p.ksize,
            },
            Op::Reshape(shape) => {
                let dims: Vec<i64> = match node.dims.as_deref() {
                    Some(d) => d
                        .iter()
                        .map(|d| if let Dim::Known(n) = d { *n as i64 } else { -1 })
                        .collect(),
                    None => shape.iter().map(|&d| d as i64).collect(),
                };
                if dims.iter().filter(|&&d| d < 0).count() > 1 {
                    return Err(unsupported(
                        name,
                        "a reshape with more than one size that follows the input",
                    ));
                }
                Kind::Reshape(dims)
            }
            Op::Softmax { axis, log } if *axis + 1 == rank => Kind::Softmax { log: *log },
            Op::Reduce {
                op: r @ (ReduceOp::Mean | ReduceOp::Sum | ReduceOp::Max),
                axes,
                keepdims,
            } => {
                if axes.is_empty() {
                    return Err(Error::arg(OP, "a reduction over no axes reached the lowering"));
                }
                let axes = axes.clone();
                Kind::Reduce {
                    op: *r,
                    axes,
                    keep: *keepdims,
                }
            }
            Op::Gather { axis } => {
                if self.values[x[0]].konst.as_ref().is_some_and(|a| a.dtype != DType::F32) {
                    return Err(unsupported(name, "a non-f32 table"));
                }
                Kind::Gather(*axis)
            }
            Op::Cast(DType::I32) => Kind::CastI32,
            Op::Concat { axis } => {
                if x.iter()
                    .any(|&v| self.values[v].konst.as_ref().is_some_and(|a| a.dtype != DType::F32))
                {
                    return Err(unsupported(name, "a non-f32 operand"));
                }
                Kind::Concat(*axis)
            }
            Op::Binary(
                b @ (BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Maximum
                | BinaryOp::Minimum
                | BinaryOp::SquaredDifference),
            ) => {
                if x.iter()
                    .any(|&v| self.values[v].konst.as_ref().is_some_and(|a| a.dtype != DType::F32))
                {
                    return Err(unsupported(name, "a non-f32 operand"));
                }
                Kind::Binary(*b)
            }
            Op::Pad { before, shape } => {
                let amounts =
                    crate::function::pad_amounts(before, shape, &self.values[x[0]].shape, node.dims.as_deref())
                        .ok_or_else(|| unsupported(name, "a pad of an unknown size"))?;
                Kind::Pad(amounts)
            }
            Op::Unary(
                u @ (UnaryOp::Relu
                | UnaryOp::Relu6
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Exp
                | UnaryOp::Elu
                | UnaryOp::Gelu
                | UnaryOp::GeluTanh
                | UnaryOp::LeakyRelu(_)
                | UnaryOp::Abs
                | UnaryOp::Neg
                | UnaryOp::Log
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Square
                | UnaryOp::Sin
                | UnaryOp::Cos
                | UnaryOp::Floor
                | UnaryOp::Ceil),
            ) => Kind::Unary(*u),
            _ => {
                let _ = out;
                return Err(unsupported(
                    name,
                    "wgflow writes CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, pooling, RESHAPE, SOFTMAX, MEAN, SUM, REDUCE_MAX, PAD, ADD, SUB, MUL, SQUARED_DIFFERENCE, the activations relu, relu6, tanh, sigmoid, elu, selu, gelu, leaky_relu, silu and softplus, and EXP, LOG, ABS, NEG, SQRT, RSQRT, SQUARE, SIN, COS, FLOOR and CEIL",
                ));
            }
        })
    }

    /// The inputs of a convolution or matmul: x, its weights in TFLite's
    /// layout, a zero bias (a following bias add folds into it).
    fn weights(&mut self, kind: &Kind, node: &crate::function::NodeDef, x: &[usize]) -> Result<Vec<usize>> {
        let w = self.values[x[1]]
            .konst
            .clone()
            .ok_or_else(|| unsupported(node.op.name(), "weights that are not a constant"))?;
        let (w, channels) = match (kind, &node.op) {
            (Kind::Conv { .. }, _) => (permute(&w, &[3, 0, 1, 2])?, w.shape[3]),
            (Kind::Depthwise { .. }, _) => (permute(&w, &[2, 0, 1, 3])?, w.shape[3]),
            // [kh, kw, out, in] -> [out, kh, kw, in]
            (Kind::TransposeConv { .. }, _) => (permute(&w, &[2, 0, 1, 3])?, w.shape[2]),
            (_, Op::MatMul { tb: true, .. }) => (w.clone(), w.shape[0]),
            _ => (permute(&w, &[1, 0])?, w.shape[1]),
        };
        let wname = format!("{}/weights", self.values[x[1]].name);
        let shape = w.shape.iter().map(|&d| Some(d)).collect();
        let wid = self.push(Value {
            name: wname,
            shape,
            konst: Some(w),
        });
        let bias = Arr {
            shape: vec![channels],
            data: vec![0.0; channels],
            dtype: DType::F32,
        };
        let bid = self.push(Value {
            name: format!("{}/bias", self.values[x[1]].name),
            shape: vec![Some(channels)],
            konst: Some(bias),
        });
        Ok(vec![x[0], wid, bid])
    }

    /// Runs the net in f32 on the CPU device; returns every value (`None`
    /// for constants).
    pub(crate) fn eval(&self, inputs: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
        let cpu = Device::cpu();
        let mut vals: Vec<Option<Tensor>> = vec![None; self.values.len()];
        if inputs.len() != self.inputs.len() {
            return Err(Error::arg(
                OP,
                format!("the model takes {} inputs, got {}", self.inputs.len(), inputs.len()),
            ));
        }
        for (&id, t) in self.inputs.iter().zip(inputs) {
            vals[id] = Some(t.to_device(&cpu)?);
        }
        let get = |vals: &[Option<Tensor>], v: usize| -> Result<Tensor> {
            if let Some(t) = &vals[v] {
                return Ok(t.clone());
            }
            self.values[v]
                .konst
                .as_ref()
                .map(Arr::tensor)
                .unwrap_or_else(|| Err(Error::arg(OP, "a value used before it is computed")))
        };
        for n in &self.nodes {
            let x = get(&vals, n.inputs[0])?;
            let apply = crate::ops::apply;
            let mut y = match &n.kind {
                Kind::Conv { same, stride, dil } | Kind::Depthwise { same, stride, dil, .. } => {
                    let w = get(&vals, n.inputs[1])?;
                    let dw = matches!(n.kind, Kind::Depthwise { .. });
                    let w = apply(Op::Permute(if dw { vec![1, 2, 0, 3] } else { vec![1, 2, 3, 0] }), &[&w])?;
                    let groups = if dw { x.shape().get(3).copied().unwrap_or(1) } else { 1 };
                    let padding = if *same { Padding::Same } else { Padding::Valid };
                    let y = apply(
                        Op::Conv2d(Conv2d {
                            strides: *stride,
                            padding,
                            dilations: *dil,
                            groups,
                        }),
                        &[&x, &w],
                    )?;
                    apply(Op::Binary(BinaryOp::Add), &[&y, &get(&vals, n.inputs[2])?])?
                }
                Kind::TransposeConv { same, stride, out } => {
                    let w = apply(Op::Permute(vec![1, 2, 0, 3]), &[&get(&vals, n.inputs[1])?])?;
                    let padding = if *same { Padding::Same } else { Padding::Valid };
                    let c = Conv2d {
                        strides: *stride,
                        padding,
                        dilations: [1, 1],
                        groups: 1,
                    };
                    let full = vec![x.shape().first().copied().unwrap_or(0), out[0], out[1], out[2]];
                    let y = apply(Op::Conv2dInputGrad(c, full), &[&x, &w])?;
                    apply(Op::Binary(BinaryOp::Add), &[&y, &get(&vals, n.inputs[2])?])?
                }
                Kind::Fc => {
                    let y = apply(Op::MatMul { ta: false, tb: true }, &[&x, &get(&vals, n.inputs[1])?])?;
                    apply(Op::Binary(BinaryOp::Add), &[&y, &get(&vals, n.inputs[2])?])?
                }
                Kind::Pool {
                    max,
                    same,
                    stride,
                    size,
                } => {
                    let padding = if *same { Padding::Same } else { Padding::Valid };
                    apply(
                        Op::Pool(Pool2d {
                            max: *max,
                            ksize: *size,
                            strides: *stride,
                            padding,
                        }),
                        &[&x],
                    )?
                }
                Kind::Reshape(dims) => {
                    let known: usize = dims.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
                    let shape = dims
                        .iter()
                        .map(|&d| if d < 0 { x.numel() / known.max(1) } else { d as usize })
                        .collect();
                    apply(Op::Reshape(shape), &[&x])?
                }
                Kind::Softmax { log } => apply(
                    Op::Softmax {
                        axis: x.rank().saturating_sub(1),
                        log: *log,
                    },
                    &[&x],
                )?,
                Kind::Reduce { op, axes, keep } => {
                    let op = *op;
                    apply(
                        Op::Reduce {
                            op,
                            axes: axes.clone(),
                            keepdims: *keep,
                        },
                        &[&x],
                    )?
                }
                Kind::Binary(b) => apply(Op::Binary(*b), &[&x, &get(&vals, n.inputs[1])?])?,
                Kind::Gather(axis) => apply(Op::Gather { axis: *axis }, &[&x, &get(&vals, n.inputs[1])?])?,
                Kind::CastI32 => apply(Op::Cast(DType::I32), &[&x])?,
                Kind::Concat(axis) => {
                    let xs: Vec<Tensor> = n.inputs.iter().map(|&v| get(&vals, v)).collect::<Result<_>>()?;
                    let refs: Vec<&Tensor> = xs.iter().collect();
                    apply(Op::Concat { axis: *axis }, &refs)?
                }
                Kind::Unary(u) => apply(Op::Unary(*u), &[&x])?,
                Kind::Pad(amounts) => {
                    let before = amounts.iter().map(|a| a.0).collect();
                    let shape = x.shape().iter().zip(amounts).map(|(&d, a)| d + a.0 + a.1).collect();
                    apply(Op::Pad { before, shape }, &[&x])?
                }
            };
            let act = match n.act {
                Act::None => None,
                Act::Relu => Some(UnaryOp::Relu),
                Act::Relu6 => Some(UnaryOp::Relu6),
            };
            if let Some(a) = act {
                y = apply(Op::Unary(a), &[&y])?;
            }
            vals[n.out] = Some(y);
        }
        Ok(vals)
    }
}
