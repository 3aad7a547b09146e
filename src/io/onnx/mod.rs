//! ONNX export: a traced inference function (a Keras model's serving
//! signature, or any [`ConcreteFunction`]) as an ONNX model that ONNX
//! Runtime and `onnx.checker` accept, opset 13 to 17 (IR 7 for 13-14, IR
//! 8 for 15-17).
//!
//! Each op of the function's [`GraphDef`] becomes ONNX nodes: matmuls
//! `Gemm` (2-D) or `MatMul`, convolutions and pooling `Conv` / `MaxPool` /
//! `AveragePool` between `Transpose`s from the graph's NHWC to ONNX's NCHW
//! and back (the HWIO kernel transposed to OIHW, Keras' `same` padding as
//! `SAME_UPPER`), a spatial mean `GlobalAveragePool`, inference-mode batch
//! normalization (`(x - mean) * rsqrt(var + eps) * gamma + beta` on
//! variables) one `BatchNormalization` with its epsilon, activations their
//! ONNX ops or short compositions (`Gelu` through `Erf`). Variables are
//! frozen into initializers; unknown dimensions of the inputs (the batch)
//! stay symbolic, and shapes that follow them are computed with `Shape`.
//! Ops with no inference meaning (gradients, optimizer updates, random
//! draws) are a typed error naming the op.
//!
//! ```no_run
//! # fn main() -> wgflow::Result<()> {
//! # let mut model = wgflow::nn::Sequential::new();
//! wgflow::onnx::export(&mut model, "model.onnx", 17)?;
//! # Ok(()) }
//! ```

mod fuse;
mod proto;

use self::proto::{
    AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeTensor, ValueInfoProto, attr, elem,
};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::core::op::binary::{BinaryOp, CmpOp};
use crate::core::op::conv::Padding;
use crate::core::op::reduce::ReduceOp;
use crate::core::op::unary::UnaryOp;
use crate::function::{ConcreteFunction, Dim, Feed, GraphDef, NodeDef};
use crate::io::saved_model::Exportable;
use crate::io::saved_model::export::tensor_bytes;
use crate::tensor::Tensor;
use prost::Message;
use std::path::Path;

const OP: &str = "onnx.export";

/// `onnx.export`-style: writes `obj`'s serving signature (a Keras model's
/// inference pass) to `path` as an ONNX model of `opset` (13 to 17).
pub fn export(obj: &mut (impl Exportable + ?Sized), path: impl AsRef<Path>, opset: i64) -> Result<()> {
    let sigs = obj.signatures()?;
    let (_, f) = sigs
        .into_iter()
        .next()
        .ok_or_else(|| Error::arg(OP, "the object has no signature to export"))?;
    export_function(&f, path, opset)
}

/// Writes a traced function to `path` as an ONNX model of `opset`.
pub fn export_function(f: &ConcreteFunction, path: impl AsRef<Path>, opset: i64) -> Result<()> {
    let bytes = to_bytes(f, opset)?;
    crate::io::write_atomic(path.as_ref(), &bytes)
}

/// The ONNX model of `f` as protobuf bytes.
pub fn to_bytes(f: &ConcreteFunction, opset: i64) -> Result<Vec<u8>> {
    Ok(model(f, opset)?.encode_to_vec())
}

fn ir_version(opset: i64) -> Result<i64> {
    match opset {
        13 | 14 => Ok(7),
        15..=17 => Ok(8),
        _ => Err(Error::arg(OP, format!("opset {opset}: wgflow writes opsets 13 to 17"))),
    }
}

fn unsupported(op: &str, why: &str) -> Error {
    Error::Unimplemented {
        what: format!("ONNX export of op '{op}'"),
        msg: why.to_string(),
    }
}

fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => elem::FLOAT,
        DType::F16 => elem::FLOAT16,
        DType::F64 => elem::DOUBLE,
        DType::BF16 => elem::BFLOAT16,
        DType::I32 => elem::INT32,
        DType::Bool => elem::BOOL,
    }
}

fn value_info(name: &str, shape: &[Option<usize>], dtype: DType) -> ValueInfoProto {
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(match d {
                Some(n) => DimValue::DimValue(*n as i64),
                None if i == 0 => DimValue::DimParam("batch".into()),
                None => DimValue::DimParam(format!("{name}_dim{i}")),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor {
                elem_type: elem_type(dtype),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn ai(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attr::INT,
        ..Default::default()
    }
}

fn aints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: attr::INTS,
        ..Default::default()
    }
}

fn af(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: attr::FLOAT,
        ..Default::default()
    }
}

fn astr(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: s.as_bytes().to_vec(),
        r#type: attr::STRING,
        ..Default::default()
    }
}

fn as_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// The graph being written: nodes, initializers, fresh names.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    count: usize,
}

impl Builder {
    fn fresh(&mut self, base: &str) -> String {
        self.count += 1;
        format!("{base}_{}", self.count)
    }

    /// One node with one output; returns the output's name.
    fn node(&mut self, op: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    fn init(&mut self, base: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> String {
        let name = self.fresh(base);
        self.inits.push(TensorProto {
            dims: as_i64(dims),
            data_type,
            name: name.clone(),
            raw_data,
        });
        name
    }

    fn tensor(&mut self, base: &str, t: &Tensor) -> Result<String> {
        Ok(self.init(base, t.shape(), elem_type(t.dtype()), tensor_bytes(t)?))
    }

    fn i64s(&mut self, base: &str, v: &[i64]) -> String {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init(base, &[v.len()], elem::INT64, raw)
    }

    /// A scalar of `dtype` (a float type: the value rounds to it).
    fn scalar(&mut self, v: f64, dtype: DType) -> String {
        let raw = match dtype {
            DType::F16 => half::f16::from_f32(v as f32).to_le_bytes().to_vec(),
            DType::BF16 => half::bf16::from_f32(v as f32).to_le_bytes().to_vec(),
            DType::F64 => v.to_le_bytes().to_vec(),
            DType::I32 => (v as i32).to_le_bytes().to_vec(),
            DType::Bool => vec![u8::from(v != 0.0)],
            DType::F32 => (v as f32).to_le_bytes().to_vec(),
        };
        self.init("const", &[], elem_type(dtype), raw)
    }

    fn transpose(&mut self, x: String, perm: &[i64]) -> String {
        self.node("Transpose", vec![x], vec![aints("perm", perm)])
    }
}

/// The ONNX model of `f`.
fn model(f: &ConcreteFunction, opset: i64) -> Result<ModelProto> {
    let ir = ir_version(opset)?;
    let def = f.def();
    // ONNX's Conv, Gemm, pooling and most other ops of opsets 13 to 17 do
    // not take bfloat16: such a file would fail onnx.checker.
    if def.values.iter().any(|v| v.dtype == DType::BF16) {
        return Err(Error::Unimplemented {
            what: "ONNX export of a function computing in bfloat16".into(),
            msg: "the operators of opsets 13 to 17 do not take bfloat16; export the model under the float32 or mixed_float16 policy".into(),
        });
    }
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
    };
    let mut vals: Vec<Option<String>> = vec![None; def.values.len()];
    let mut inputs = Vec::new();
    let mut arg_names = Vec::new();
    for (i, spec) in f.inputs().iter().enumerate() {
        let name = spec.name.clone().unwrap_or_else(|| format!("input_{i}"));
        inputs.push(value_info(&name, &spec.shape, spec.dtype));
        arg_names.push(name);
    }
    for (v, feed) in &def.feeds {
        let name = match feed {
            Feed::Arg(i) => arg_names
                .get(*i)
                .cloned()
                .ok_or_else(|| Error::arg(OP, format!("argument {i} has no input spec")))?,
            Feed::Variable(i) => {
                let var = f
                    .variables()
                    .get(*i)
                    .ok_or_else(|| Error::arg(OP, "an unbound variable"))?;
                let base: String = var
                    .name()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                b.tensor(&base, &var.value())?
            }
            Feed::Capture(i) => {
                let t = f
                    .captures()
                    .get(*i)
                    .ok_or_else(|| Error::arg(OP, "an unbound capture"))?;
                b.tensor("const", t)?
            }
            Feed::Host(_) => {
                return Err(unsupported(
                    "host input",
                    "values the host recomputes per call (an optimizer's step) have no ONNX form; export an inference function",
                ));
            }
        };
        if let Some(slot) = vals.get_mut(*v) {
            *slot = Some(name);
        }
    }
    let norms = fuse::batch_norms(def);
    let mut skip = vec![false; def.nodes.len()];
    let mut fused_at: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for (k, bn) in norms.iter().enumerate() {
        for &n in &bn.nodes {
            skip[n] = true;
        }
        fused_at.insert(bn.last, k);
    }
    for (i, node) in def.nodes.iter().enumerate() {
        if let Some(&k) = fused_at.get(&i) {
            let out = batch_norm(&mut b, &norms[k], &vals, def)?;
            if let Some(&o) = node.outputs.first() {
                vals[o] = Some(out);
            }
            continue;
        }
        if skip[i] {
            continue;
        }
        let x: Vec<String> = node
            .inputs
            .iter()
            .map(|&v| {
                vals.get(v)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| Error::arg(OP, "malformed graph: a value used before it is computed"))
            })
            .collect::<Result<_>>()?;
        let out = convert(&mut b, node, &x, def, &arg_names)?;
        if let Some(&o) = node.outputs.first() {
            vals[o] = Some(out);
        }
    }
    let mut outputs = Vec::new();
    for ((&v, name), spec) in def.outputs.iter().zip(f.output_names()).zip(f.outputs()) {
        let src = vals
            .get(v)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::arg(OP, "an output is never computed"))?;
        b.nodes.push(NodeProto {
            input: vec![src],
            output: vec![name.clone()],
            name: format!("{name}_identity"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        outputs.push(value_info(name, &spec.shape, spec.dtype));
    }
    Ok(ModelProto {
        ir_version: ir,
        producer_name: "wgflow".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: 1,
        graph: Some(GraphProto {
            node: b.nodes,
            name: f.name().to_string(),
            initializer: b.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        ..Default::default()
    })
}

/// One ONNX `BatchNormalization` (between NHWC/NCHW transposes for
/// images) for a matched batch normalization.
fn batch_norm(b: &mut Builder, bn: &fuse::BatchNorm, vals: &[Option<String>], def: &GraphDef) -> Result<String> {
    let name = |v: usize| {
        vals.get(v)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::arg(OP, "malformed graph: a value used before it is computed"))
    };
    let c = def.values[bn.mean].shape.first().copied().flatten().unwrap_or(0);
    let filled = |b: &mut Builder, v: f32| {
        let raw = std::iter::repeat_n(v.to_le_bytes(), c).flatten().collect();
        b.init("bn_const", &[c], elem::FLOAT, raw)
    };
    let scale = match bn.gamma {
        Some(g) => name(g)?,
        None => filled(b, 1.0),
    };
    let bias = match bn.beta {
        Some(v) => name(v)?,
        None => filled(b, 0.0),
    };
    let image = def.values[bn.x].shape.len() == 4;
    let mut x = name(bn.x)?;
    if image {
        x = b.transpose(x, &TO_NCHW);
    }
    let y = b.node(
        "BatchNormalization",
        vec![x, scale, bias, name(bn.mean)?, name(bn.var)?],
        vec![af("epsilon", bn.eps as f32)],
    );
    Ok(if image { b.transpose(y, &TO_NHWC) } else { y })
}

/// A shape attribute as an int64 tensor: a constant, or, where entries
/// follow an argument's dimension, `Shape(arg)` entries concatenated with
/// the constants.
fn shape_input(b: &mut Builder, known: &[usize], dims: Option<&[Dim]>, args: &[String]) -> Result<String> {
    let Some(dims) = dims else {
        return Ok(b.i64s("shape", &as_i64(known)));
    };
    if dims.iter().all(|d| !matches!(d, Dim::Arg { .. })) {
        let v: Vec<i64> = dims
            .iter()
            .map(|d| match d {
                Dim::Known(n) => *n as i64,
                _ => -1,
            })
            .collect();
        return Ok(b.i64s("shape", &v));
    }
    let mut parts = Vec::new();
    for d in dims {
        parts.push(match d {
            Dim::Known(n) => b.i64s("dim", &[*n as i64]),
            Dim::Infer => b.i64s("dim", &[-1]),
            Dim::Arg { arg, axis } => {
                let a = args
                    .get(*arg)
                    .cloned()
                    .ok_or_else(|| Error::arg(OP, format!("a shape follows argument {arg}, which is not there")))?;
                let s = b.node("Shape", vec![a], vec![]);
                let i = b.i64s("axis", &[*axis as i64]);
                b.node("Gather", vec![s, i], vec![ai("axis", 0)])
            }
        });
    }
    Ok(b.node("Concat", parts, vec![ai("axis", 0)]))
}

fn pads(p: Padding, out: &mut Vec<AttributeProto>) {
    match p {
        Padding::Same => out.push(astr("auto_pad", "SAME_UPPER")),
        Padding::Valid => out.push(astr("auto_pad", "VALID")),
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => out.push(aints("pads", &as_i64(&[top, left, bottom, right]))),
    }
}

const TO_NCHW: [i64; 4] = [0, 3, 1, 2];
const TO_NHWC: [i64; 4] = [0, 2, 3, 1];

/// The ONNX nodes of one wgflow op; returns the name of its output.
fn convert(b: &mut Builder, node: &NodeDef, x: &[String], def: &GraphDef, args: &[String]) -> Result<String> {
    let op = &node.op;
    let in_dtype = node.inputs.first().map(|&v| def.values[v].dtype).unwrap_or(DType::F32);
    let ranks: Vec<usize> = node.inputs.iter().map(|&v| def.values[v].shape.len()).collect();
    let first = || x.first().cloned().unwrap_or_default();
    let dims = node.dims.as_deref();
    Ok(match op {
        Op::Unary(u) => unary(b, *u, first(), in_dtype),
        Op::Binary(bo) => {
            let name = match bo {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
                BinaryOp::Maximum => "Max",
                BinaryOp::Minimum => "Min",
                BinaryOp::LogicalAnd => "And",
                BinaryOp::LogicalOr => "Or",
                BinaryOp::LogicalXor => "Xor",
                BinaryOp::SquaredDifference => {
                    let d = b.node("Sub", x.to_vec(), vec![]);
                    return Ok(b.node("Mul", vec![d.clone(), d], vec![]));
                }
            };
            b.node(name, x.to_vec(), vec![])
        }
        Op::Compare(c) => {
            let name = match c {
                CmpOp::Equal | CmpOp::NotEqual => "Equal",
                CmpOp::Less => "Less",
                CmpOp::LessEqual => "LessOrEqual",
                CmpOp::Greater => "Greater",
                CmpOp::GreaterEqual => "GreaterOrEqual",
            };
            let out = b.node(name, x.to_vec(), vec![]);
            if *c == CmpOp::NotEqual {
                b.node("Not", vec![out], vec![])
            } else {
                out
            }
        }
        Op::Where => b.node("Where", x.to_vec(), vec![]),
        Op::Cast(to) => b.node("Cast", vec![first()], vec![ai("to", elem_type(*to) as i64)]),
        Op::StopGradient => b.node("Identity", vec![first()], vec![]),
        Op::Reshape(shape) => {
            let s = shape_input(b, shape, dims, args)?;
            b.node("Reshape", vec![first(), s], vec![])
        }
        Op::BroadcastTo(shape) => {
            let s = shape_input(b, shape, dims, args)?;
            b.node("Expand", vec![first(), s], vec![])
        }
        Op::Permute(p) => b.transpose(first(), &as_i64(p)),
        Op::Slice { begin, size } => {
            let mut ends = Vec::with_capacity(size.len());
            for (i, (&bg, &sz)) in begin.iter().zip(size).enumerate() {
                // An extent that follows an argument takes the whole axis.
                let symbolic = dims.and_then(|d| d.get(i)).is_some_and(|d| !matches!(d, Dim::Known(_)));
                ends.push(if symbolic { i64::MAX } else { (bg + sz) as i64 });
            }
            let starts = b.i64s("starts", &as_i64(begin));
            let ends = b.i64s("ends", &ends);
            let axes: Vec<i64> = (0..begin.len() as i64).collect();
            let axes = b.i64s("axes", &axes);
            b.node("Slice", vec![first(), starts, ends, axes], vec![])
        }
        Op::Concat { axis } => b.node("Concat", x.to_vec(), vec![ai("axis", *axis as i64)]),
        Op::Gather { axis } => b.node("Gather", x.to_vec(), vec![ai("axis", *axis as i64)]),
        Op::OneHot { depth, on, off, dtype } => {
            let d = b.i64s("depth", &[*depth as i64]);
            let values = match dtype {
                DType::F32 => {
                    let raw = [*off as f32, *on as f32].iter().flat_map(|v| v.to_le_bytes()).collect();
                    b.init("values", &[2], elem::FLOAT, raw)
                }
                DType::I32 => {
                    let raw = [*off as i32, *on as i32].iter().flat_map(|v| v.to_le_bytes()).collect();
                    b.init("values", &[2], elem::INT32, raw)
                }
                d => return Err(unsupported("one_hot", &format!("one_hot of {d} values"))),
            };
            b.node("OneHot", vec![first(), d, values], vec![ai("axis", -1)])
        }
        Op::Pad { before, shape } => {
            let input = node.inputs.first().map_or(&[][..], |&v| def.values[v].shape.as_slice());
            let amounts = crate::function::pad_amounts(before, shape, input, dims)
                .ok_or_else(|| unsupported("pad", "a pad of an unknown size"))?;
            let p: Vec<i64> = amounts
                .iter()
                .map(|a| a.0 as i64)
                .chain(amounts.iter().map(|a| a.1 as i64))
                .collect();
            let p = b.i64s("pads", &p);
            b.node("Pad", vec![first(), p], vec![])
        }
        Op::MatMul { ta, tb } => {
            if ranks.iter().all(|&r| r == 2) {
                b.node(
                    "Gemm",
                    x.to_vec(),
                    vec![ai("transA", i64::from(*ta)), ai("transB", i64::from(*tb))],
                )
            } else {
                let mut ins = x.to_vec();
                for (k, t) in [*ta, *tb].into_iter().enumerate() {
                    let r = ranks.get(k).copied().unwrap_or(2);
                    if t && r >= 2 {
                        let mut perm: Vec<i64> = (0..r as i64).collect();
                        perm.swap(r - 2, r - 1);
                        ins[k] = b.transpose(ins[k].clone(), &perm);
                    }
                }
                b.node("MatMul", ins, vec![])
            }
        }
        Op::Conv2d(c) => {
            let xi = b.transpose(first(), &TO_NCHW);
            // HWIO -> OIHW
            let w = b.transpose(x.get(1).cloned().unwrap_or_default(), &[3, 2, 0, 1]);
            let mut at = vec![
                aints("strides", &as_i64(&c.strides)),
                aints("dilations", &as_i64(&c.dilations)),
                ai("group", c.groups as i64),
            ];
            // ONNX Runtime refuses auto_pad SAME with dilations, so a
            // convolution's SAME padding is written out, split as
            // TensorFlow splits it (the spatial sizes are known).
            // Height and width: NHWC input's dims 1 and 2, HWIO filter's 0 and 1.
            let spatial = |v: usize, at: usize| -> Option<Vec<usize>> {
                let sh = &def.values.get(*node.inputs.get(v)?)?.shape;
                Some(vec![(*sh.get(at)?)?, (*sh.get(at + 1)?)?])
            };
            match (c.padding, spatial(0, 1), spatial(1, 0)) {
                (Padding::Same, Some(hw), Some(k)) => {
                    let mut p = [0usize; 4];
                    for d in 0..2 {
                        let (_, total) = crate::core::op::conv::same_padding(hw[d], k[d], c.strides[d], c.dilations[d]);
                        p[d] = total / 2;
                        p[d + 2] = total - total / 2;
                    }
                    at.push(aints("pads", &as_i64(&p)));
                }
                (Padding::Same, ..) if c.dilations != [1, 1] => {
                    return Err(Error::Unimplemented {
                        what: format!(
                            "ONNX export of {} with SAME padding, dilations {:?} and unknown spatial sizes",
                            op.name(),
                            c.dilations
                        ),
                        msg: "ONNX Runtime takes no auto_pad with dilations".into(),
                    });
                }
                _ => pads(c.padding, &mut at),
            }
            let y = b.node("Conv", vec![xi, w], at);
            b.transpose(y, &TO_NHWC)
        }
        // A transposed convolution (Keras' Conv2DTranspose): ONNX's
        // ConvTranspose indexes as TensorFlow's input gradient does, and its
        // weight [C, M / group, kh, kw] is the forward filter transposed as
        // a Conv's. The forward padding and the rows the forward
        // convolution left unread become `pads` and `output_padding`.
        Op::Conv2dInputGrad(c, xs) => {
            let shape = |v: usize, at: usize| -> Option<[usize; 2]> {
                let sh = &def.values.get(*node.inputs.get(v)?)?.shape;
                Some([(*sh.get(at)?)?, (*sh.get(at + 1)?)?])
            };
            let (Some(oh), Some(k), Some(&h), Some(&w)) = (shape(0, 1), shape(1, 0), xs.get(1), xs.get(2)) else {
                return Err(unsupported(op.name(), "unknown spatial sizes"));
            };
            let out = [h, w];
            let mut p = [0usize; 4];
            let mut extra = [0usize; 2];
            for d in 0..2 {
                let keff = k[d].saturating_sub(1).saturating_mul(c.dilations[d]).saturating_add(1);
                let (before, after) = match c.padding {
                    Padding::Same => {
                        let (_, total) =
                            crate::core::op::conv::same_padding(out[d], k[d], c.strides[d], c.dilations[d]);
                        (total / 2, total - total / 2)
                    }
                    Padding::Valid => (0, 0),
                    Padding::Explicit {
                        top,
                        bottom,
                        left,
                        right,
                    } => {
                        if d == 0 {
                            (top, bottom)
                        } else {
                            (left, right)
                        }
                    }
                };
                // The shapes were checked when the op ran: the padded
                // input covers every window.
                let span = oh[d]
                    .saturating_sub(1)
                    .saturating_mul(c.strides[d])
                    .saturating_add(keff);
                extra[d] = out[d].saturating_add(before).saturating_add(after).saturating_sub(span);
                p[d] = before;
                p[d + 2] = after;
            }
            let xi = b.transpose(first(), &TO_NCHW);
            let wt = b.transpose(x.get(1).cloned().unwrap_or_default(), &[3, 2, 0, 1]);
            let at = vec![
                aints("strides", &as_i64(&c.strides)),
                aints("dilations", &as_i64(&c.dilations)),
                aints("kernel_shape", &as_i64(&k)),
                ai("group", c.groups as i64),
                aints("pads", &as_i64(&p)),
                aints("output_padding", &as_i64(&extra)),
            ];
            let y = b.node("ConvTranspose", vec![xi, wt], at);
            b.transpose(y, &TO_NHWC)
        }
        Op::Pool(p) => {
            let xi = b.transpose(first(), &TO_NCHW);
            let mut at = vec![
                aints("kernel_shape", &as_i64(&p.ksize)),
                aints("strides", &as_i64(&p.strides)),
            ];
            pads(p.padding, &mut at);
            let y = b.node(if p.max { "MaxPool" } else { "AveragePool" }, vec![xi], at);
            b.transpose(y, &TO_NHWC)
        }
        // No axes: nothing is reduced (wgflow's and TF's meaning; ONNX's
        // empty axes would reduce them all).
        Op::Reduce { axes, .. } if axes.is_empty() => b.node("Identity", vec![first()], vec![]),
        Op::Reduce { op: r, axes, keepdims } => {
            let rank = ranks.first().copied().unwrap_or(0);
            let axes: Vec<usize> = axes.clone();
            if *r == ReduceOp::Mean && rank == 4 && axes == [1, 2] {
                // Keras' GlobalAveragePooling2D.
                let xi = b.transpose(first(), &TO_NCHW);
                let y = b.node("GlobalAveragePool", vec![xi], vec![]);
                return Ok(if *keepdims {
                    b.transpose(y, &TO_NHWC)
                } else {
                    b.node("Flatten", vec![y], vec![ai("axis", 1)])
                });
            }
            let name = match r {
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Max => "ReduceMax",
                ReduceOp::Min => "ReduceMin",
                ReduceOp::Prod => "ReduceProd",
                #[allow(unreachable_patterns)]
                _ => return Err(unsupported(op.name(), "no ONNX reduction")),
            };
            let keep = ai("keepdims", i64::from(*keepdims));
            if *r == ReduceOp::Sum {
                // ReduceSum takes its axes as an input from opset 13 on.
                let a = b.i64s("axes", &as_i64(&axes));
                b.node(name, vec![first(), a], vec![keep])
            } else {
                b.node(name, vec![first()], vec![aints("axes", &as_i64(&axes)), keep])
            }
        }
        Op::ArgReduce { max, axis } => {
            let i = b.node(
                if *max { "ArgMax" } else { "ArgMin" },
                vec![first()],
                vec![ai("axis", *axis as i64), ai("keepdims", 0)],
            );
            b.node("Cast", vec![i], vec![ai("to", elem::INT32 as i64)])
        }
        Op::Softmax { axis, log } => b.node(
            if *log { "LogSoftmax" } else { "Softmax" },
            vec![first()],
            vec![ai("axis", *axis as i64)],
        ),
        Op::Fill { shape, value, dtype } => {
            let s = shape_input(b, shape, dims, args)?;
            let raw = match dtype {
                DType::F32 => (*value as f32).to_le_bytes().to_vec(),
                DType::F16 => half::f16::from_f32(*value as f32).to_le_bytes().to_vec(),
                DType::BF16 => half::bf16::from_f32(*value as f32).to_le_bytes().to_vec(),
                DType::F64 => value.to_le_bytes().to_vec(),
                DType::I32 => (*value as i32).to_le_bytes().to_vec(),
                DType::Bool => vec![u8::from(*value != 0.0)],
            };
            let t = TensorProto {
                dims: vec![1],
                data_type: elem_type(*dtype),
                raw_data: raw,
                ..Default::default()
            };
            let value = AttributeProto {
                name: "value".into(),
                t: Some(t),
                r#type: attr::TENSOR,
                ..Default::default()
            };
            b.node("ConstantOfShape", vec![s], vec![value])
        }
        _ => {
            return Err(unsupported(
                op.name(),
                "it has no inference form (gradients, optimizer updates and random draws are not exported)",
            ));
        }
    })
}

/// An elementwise op: its ONNX op, or a short composition.
fn unary(b: &mut Builder, u: UnaryOp, x: String, t: DType) -> String {
    match u {
        UnaryOp::Neg => b.node("Neg", vec![x], vec![]),
        UnaryOp::Abs => b.node("Abs", vec![x], vec![]),
        UnaryOp::Sign => b.node("Sign", vec![x], vec![]),
        UnaryOp::Exp => b.node("Exp", vec![x], vec![]),
        UnaryOp::Log => b.node("Log", vec![x], vec![]),
        UnaryOp::Sqrt => b.node("Sqrt", vec![x], vec![]),
        UnaryOp::Reciprocal => b.node("Reciprocal", vec![x], vec![]),
        UnaryOp::Sin => b.node("Sin", vec![x], vec![]),
        UnaryOp::Cos => b.node("Cos", vec![x], vec![]),
        UnaryOp::Tanh => b.node("Tanh", vec![x], vec![]),
        UnaryOp::Sigmoid => b.node("Sigmoid", vec![x], vec![]),
        UnaryOp::Relu => b.node("Relu", vec![x], vec![]),
        UnaryOp::Selu => b.node("Selu", vec![x], vec![]),
        UnaryOp::Softplus => b.node("Softplus", vec![x], vec![]),
        UnaryOp::Softsign => b.node("Softsign", vec![x], vec![]),
        UnaryOp::Floor => b.node("Floor", vec![x], vec![]),
        UnaryOp::Ceil => b.node("Ceil", vec![x], vec![]),
        UnaryOp::Round => b.node("Round", vec![x], vec![]),
        UnaryOp::Erf => b.node("Erf", vec![x], vec![]),
        UnaryOp::Elu => b.node("Elu", vec![x], vec![af("alpha", 1.0)]),
        UnaryOp::LeakyRelu(a) => b.node("LeakyRelu", vec![x], vec![af("alpha", a)]),
        UnaryOp::Relu6 => {
            let lo = b.scalar(0.0, t);
            let hi = b.scalar(6.0, t);
            b.node("Clip", vec![x, lo, hi], vec![])
        }
        UnaryOp::Rsqrt => {
            let s = b.node("Sqrt", vec![x], vec![]);
            b.node("Reciprocal", vec![s], vec![])
        }
        UnaryOp::Square => b.node("Mul", vec![x.clone(), x], vec![]),
        UnaryOp::Expm1 => {
            let e = b.node("Exp", vec![x], vec![]);
            let one = b.scalar(1.0, t);
            b.node("Sub", vec![e, one], vec![])
        }
        UnaryOp::Log1p => {
            let one = b.scalar(1.0, t);
            let s = b.node("Add", vec![x, one], vec![]);
            b.node("Log", vec![s], vec![])
        }
        UnaryOp::Silu => {
            let s = b.node("Sigmoid", vec![x.clone()], vec![]);
            b.node("Mul", vec![x, s], vec![])
        }
        UnaryOp::Gelu => {
            // x/2 (1 + erf(x / sqrt 2))
            let r = b.scalar(std::f64::consts::FRAC_1_SQRT_2, t);
            let xs = b.node("Mul", vec![x.clone(), r], vec![]);
            let e = b.node("Erf", vec![xs], vec![]);
            let one = b.scalar(1.0, t);
            let s = b.node("Add", vec![e, one], vec![]);
            let half = b.scalar(0.5, t);
            let h = b.node("Mul", vec![x, half], vec![]);
            b.node("Mul", vec![h, s], vec![])
        }
        UnaryOp::GeluTanh => {
            // x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let x2 = b.node("Mul", vec![x.clone(), x.clone()], vec![]);
            let x3 = b.node("Mul", vec![x2, x.clone()], vec![]);
            let c = b.scalar(0.044715, t);
            let cx3 = b.node("Mul", vec![x3, c], vec![]);
            let inner = b.node("Add", vec![x.clone(), cx3], vec![]);
            let k = b.scalar((2.0 / std::f64::consts::PI).sqrt(), t);
            let ki = b.node("Mul", vec![inner, k], vec![]);
            let th = b.node("Tanh", vec![ki], vec![]);
            let one = b.scalar(1.0, t);
            let s = b.node("Add", vec![th, one], vec![]);
            let half = b.scalar(0.5, t);
            let h = b.node("Mul", vec![x, half], vec![]);
            b.node("Mul", vec![h, s], vec![])
        }
    }
}
