//! TensorFlow Lite conversion (`tf.lite.TFLiteConverter`): a traced
//! inference function (a SavedModel's `serving_default`, a Keras model's
//! serving signature) as a `.tflite` FlatBuffer that `tf.lite.Interpreter`
//! and LiteRT run.
//!
//! The function is first lowered to TFLite's op set in f32 (see `net`):
//! `CONV_2D`, `DEPTHWISE_CONV_2D`, `FULLY_CONNECTED` with their bias,
//! folded per-channel scales (inference batch normalization) and fused
//! activation, pooling, `RESHAPE`, `SOFTMAX`, `MEAN`, elementwise ops. Then
//! [`Converter::optimizations`] and [`TargetSpec::supported_types`] pick
//! how it is written, following TFLite's quantization spec:
//!
//! | converter settings | weights | activations |
//! |---|---|---|
//! | none | f32 | f32 |
//! | `[Optimize::Default]` (dynamic range) | int8 for conv / matmul weights of 1,024 elements or more, symmetric per output channel, scale max\|w\|/127 | f32 |
//! | `Default` + `supported_types = [F16]` | f16, `DEQUANTIZE`d at load | f32 |
//! | `Default` + `representative_dataset` (full integer) | int8 per output channel; int32 bias with scale s_in·s_w | int8 per tensor, asymmetric, ranges from the data; f32 in and out through `QUANTIZE` / `DEQUANTIZE` |
//!
//! ```no_run
//! # fn main() -> wgflow::Result<()> {
//! use wgflow::lite::{Converter, Optimize};
//! let mut c = Converter::from_saved_model("export/1")?;
//! c.optimizations = vec![Optimize::Default];
//! let bytes = c.convert()?;
//! std::fs::write("model.tflite", bytes).unwrap();
//! # Ok(()) }
//! ```

mod net;
mod quant;
mod write;

use self::net::{Kind, Net, OP, unsupported};
use self::quant::Ranges;
use self::write::{Act, FModel, FOp, FTensor, Opts, Quant, TType, code};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::binary::BinaryOp;
use crate::core::op::reduce::ReduceOp;
use crate::core::op::unary::UnaryOp;
use crate::function::ConcreteFunction;
use crate::io::saved_model::{self, Exportable, Loaded};
use crate::runtime::Device;
use crate::tensor::Tensor;
use std::path::Path;

/// `tf.lite.Optimize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimize {
    /// `tf.lite.Optimize.DEFAULT`: quantize (dynamic range; float16 with
    /// `supported_types = [F16]`; full integer with a representative
    /// dataset).
    Default,
}

/// `tf.lite.OpsSet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsSet {
    /// `TFLITE_BUILTINS`.
    TfliteBuiltins,
    /// `TFLITE_BUILTINS_INT8`: every op int8 (needs a representative dataset).
    TfliteBuiltinsInt8,
}

/// `converter.target_spec`.
#[derive(Clone, Debug, Default)]
pub struct TargetSpec {
    /// `supported_types`: `[DType::F16]` writes float16 weights.
    pub supported_types: Vec<DType>,
    /// `supported_ops`.
    pub supported_ops: Vec<OpsSet>,
}

enum Source {
    Loaded(Box<Loaded>),
    Function(Box<ConcreteFunction>),
}

/// `tf.lite.TFLiteConverter`.
pub struct Converter {
    source: Source,
    /// `converter.optimizations`.
    pub optimizations: Vec<Optimize>,
    /// `converter.target_spec`.
    pub target_spec: TargetSpec,
    /// `converter.representative_dataset`: samples, each a list with one
    /// tensor per input (a batch of one or more examples).
    pub representative_dataset: Option<Vec<Vec<Tensor>>>,
}

/// `tf.lite.TFLiteConverter`'s name.
pub type TFLiteConverter = Converter;

/// How the model is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Float,
    Dynamic,
    Float16,
    Int8,
}

impl Converter {
    fn new(source: Source) -> Converter {
        Converter {
            source,
            optimizations: Vec::new(),
            target_spec: TargetSpec::default(),
            representative_dataset: None,
        }
    }

    /// `TFLiteConverter.from_saved_model(dir)`: its `serving_default`
    /// signature, loaded on the CPU device.
    pub fn from_saved_model(dir: impl AsRef<Path>) -> Result<Converter> {
        let loaded = saved_model::load_with(dir, &[saved_model::SERVE_TAG], &Device::cpu())?;
        Ok(Converter::new(Source::Loaded(Box::new(loaded))))
    }

    /// `TFLiteConverter.from_keras_model(model)`: its serving signature.
    pub fn from_keras_model(model: &mut (impl Exportable + ?Sized)) -> Result<Converter> {
        let (_, f) = model
            .signatures()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::arg(OP, "the model has no signature to convert"))?;
        Ok(Converter::from_concrete_function(f))
    }

    /// `TFLiteConverter.from_concrete_functions([f])`.
    pub fn from_concrete_function(f: ConcreteFunction) -> Converter {
        Converter::new(Source::Function(Box::new(f)))
    }

    fn mode(&self) -> Result<Mode> {
        let int8_only = self.target_spec.supported_ops.contains(&OpsSet::TfliteBuiltinsInt8);
        let rep = self.representative_dataset.is_some();
        if int8_only && !rep {
            return Err(Error::arg(
                OP,
                "supported_ops = [TFLITE_BUILTINS_INT8] needs a representative_dataset to calibrate the activations",
            ));
        }
        if let Some(t) = self
            .target_spec
            .supported_types
            .iter()
            .find(|t| !matches!(t, DType::F16 | DType::F32))
        {
            return Err(Error::arg(
                OP,
                format!("supported_types: {t} is not a TFLite weight type wgflow writes (f16, f32)"),
            ));
        }
        if self.optimizations.is_empty() {
            return Ok(if int8_only { Mode::Int8 } else { Mode::Float });
        }
        Ok(if rep || int8_only {
            Mode::Int8
        } else if self.target_spec.supported_types.contains(&DType::F16) {
            Mode::Float16
        } else {
            Mode::Dynamic
        })
    }

    fn function(&mut self) -> Result<&ConcreteFunction> {
        match &mut self.source {
            Source::Loaded(l) => Ok(&*l.signature(saved_model::DEFAULT_SIGNATURE)?),
            Source::Function(f) => Ok(&**f),
        }
    }

    /// `converter.convert()`: the `.tflite` bytes.
    pub fn convert(&mut self) -> Result<Vec<u8>> {
        let mode = self.mode()?;
        let net = Net::lower(self.function()?)?;
        let ranges = match (&self.representative_dataset, mode) {
            (Some(data), Mode::Int8) => Some(Ranges::calibrate(&net, data)?),
            _ => None,
        };
        fits_i32(&net)?;
        let model = build(&net, mode, ranges.as_ref())?;
        write::to_bytes(&model)
    }

    /// Converts and writes the file whole (a temporary file, renamed).
    pub fn convert_to(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.convert()?;
        crate::io::write_atomic(path.as_ref(), &bytes)
    }
}

/// The FlatBuffer model being assembled.
struct Builder<'a> {
    net: &'a Net,
    mode: Mode,
    ranges: Option<&'a Ranges>,
    m: FModel,
    /// A value's tensor, once written (its f32 form for constants; its
    /// int8 form for activations in `Int8` mode).
    tensor: Vec<Option<i32>>,
}

/// TFLite stores sizes, strides and shapes as int32: larger ones are an
/// error here, so the casts below are exact.
fn fits_i32(net: &Net) -> Result<()> {
    let big = |d: usize| i32::try_from(d).is_err();
    let too_big = |what: &str, name: &str| {
        Err(unsupported(
            "size",
            &format!("{what} of '{name}' does not fit TFLite's int32 sizes"),
        ))
    };
    for v in &net.values {
        if v.shape.iter().flatten().any(|&d| big(d)) {
            return too_big("a dimension", &v.name);
        }
    }
    for n in &net.nodes {
        let name = &net.values[n.out].name;
        let attrs: Vec<usize> = match &n.kind {
            Kind::Conv { stride, dil, .. } => [stride.as_slice(), dil].concat(),
            Kind::Depthwise { stride, dil, mult, .. } => [stride.as_slice(), dil, &[*mult]].concat(),
            Kind::Pool { stride, size, .. } => [stride.as_slice(), size].concat(),
            Kind::TransposeConv { stride, out, .. } => [stride.as_slice(), out].concat(),
            Kind::Reshape(d) => d.iter().map(|&x| x.unsigned_abs() as usize).collect(),
            _ => Vec::new(),
        };
        if attrs.into_iter().any(big) {
            return too_big("a stride, window or shape", name);
        }
    }
    Ok(())
}

fn dims(shape: &[Option<usize>]) -> (Vec<i32>, Option<Vec<i32>>) {
    let s = shape.iter().map(|d| d.unwrap_or(1) as i32).collect();
    let sig = shape
        .iter()
        .any(Option::is_none)
        .then(|| shape.iter().map(|d| d.map_or(-1, |n| n as i32)).collect());
    (s, sig)
}

impl Builder<'_> {
    fn buffer(&mut self, data: Vec<u8>) -> u32 {
        self.m.buffers.push(data);
        (self.m.buffers.len() - 1) as u32
    }

    fn add_tensor(&mut self, name: &str, ty: TType, shape: &[Option<usize>], buffer: u32, quant: Option<Quant>) -> i32 {
        let (shape, signature) = dims(shape);
        self.m.tensors.push(FTensor {
            name: name.to_string(),
            ty,
            shape,
            signature,
            buffer,
            quant,
        });
        (self.m.tensors.len() - 1) as i32
    }

    fn op(&mut self, code: i32, version: i32, inputs: Vec<i32>, outputs: Vec<i32>, opts: Opts) {
        self.m.ops.push(FOp {
            code,
            version,
            inputs,
            outputs,
            opts,
        });
    }

    fn const_i32(&mut self, name: &str, v: &[i64]) -> i32 {
        let data = v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
        let b = self.buffer(data);
        self.add_tensor(name, TType::I32, &[Some(v.len())], b, None)
    }

    /// A transposed convolution's output shape `[batch, out...]` as an int32
    /// tensor: a constant where the batch of value `v` (tensor `x`) is
    /// known, else `shape(x) * [1, 0, 0, 0] + [0, out...]`, so the batch
    /// follows the input as TensorFlow's converter has it.
    fn output_shape(&mut self, v: usize, x: i32, out: [usize; 3], name: &str) -> i32 {
        let rest = out.map(|d| d as i64);
        if let Some(Some(n)) = self.net.values[v].shape.first() {
            return self.const_i32(&format!("{name}/output_shape"), &[*n as i64, rest[0], rest[1], rest[2]]);
        }
        let four = [Some(4)];
        let shape = self.add_tensor(&format!("{name}/input_shape"), TType::I32, &four, 0, None);
        self.op(code::SHAPE, 1, vec![x], vec![shape], Opts::Shape);
        let keep = self.const_i32(&format!("{name}/batch_mask"), &[1, 0, 0, 0]);
        let batch = self.add_tensor(&format!("{name}/batch"), TType::I32, &four, 0, None);
        self.op(code::MUL, 1, vec![shape, keep], vec![batch], Opts::Mul(Act::None));
        let sizes = self.const_i32(&format!("{name}/sizes"), &[0, rest[0], rest[1], rest[2]]);
        let full = self.add_tensor(&format!("{name}/output_shape"), TType::I32, &four, 0, None);
        self.op(code::ADD, 1, vec![batch, sizes], vec![full], Opts::Add(Act::None));
        full
    }

    /// An int32 constant `[rows, v.len() / rows]`.
    fn const_i32_matrix(&mut self, name: &str, v: &[i64], rows: usize) -> i32 {
        let data = v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
        let b = self.buffer(data);
        self.add_tensor(name, TType::I32, &[Some(rows), Some(v.len() / rows.max(1))], b, None)
    }

    /// A float constant as f32 (or f16 + DEQUANTIZE in `Float16` mode).
    fn const_f32(&mut self, v: usize) -> Result<i32> {
        if let Some(t) = self.tensor[v] {
            return Ok(t);
        }
        let val = &self.net.values[v];
        let a = val.konst.as_ref().ok_or_else(|| Error::arg(OP, "not a constant"))?;
        let shape: Vec<Option<usize>> = a.shape.iter().map(|&d| Some(d)).collect();
        let name = val.name.clone();
        let t = if a.dtype == DType::I32 {
            let b = self.buffer(a.data.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect());
            self.add_tensor(&name, TType::I32, &shape, b, None)
        } else if self.mode == Mode::Float16 {
            let b = self.buffer(
                a.data
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            );
            let h = self.add_tensor(&name, TType::F16, &shape, b, None);
            let out = self.add_tensor(&format!("{name}/dequantize"), TType::F32, &shape, 0, None);
            self.op(code::DEQUANTIZE, 3, vec![h], vec![out], Opts::Dequantize);
            out
        } else {
            let b = self.buffer(a.data.iter().flat_map(|&x| x.to_le_bytes()).collect());
            self.add_tensor(&name, TType::F32, &shape, b, None)
        };
        self.tensor[v] = Some(t);
        Ok(t)
    }

    /// Weights as int8, symmetric per channel along `dim`.
    fn const_i8(&mut self, v: usize, dim: usize) -> Result<(i32, Vec<f32>)> {
        let val = &self.net.values[v];
        let a = val.konst.as_ref().ok_or_else(|| Error::arg(OP, "not a constant"))?;
        let (q, scales) = quant::per_channel(&a.data, &a.shape, dim);
        let shape: Vec<Option<usize>> = a.shape.iter().map(|&d| Some(d)).collect();
        let name = val.name.clone();
        let b = self.buffer(q.iter().map(|&x| x as u8).collect());
        let quant = Quant {
            zero: vec![0; scales.len()],
            scale: scales.clone(),
            dim: dim as i32,
        };
        Ok((self.add_tensor(&name, TType::I8, &shape, b, Some(quant)), scales))
    }

    /// An activation's tensor (int8 with its range in `Int8` mode).
    fn activation(&mut self, v: usize, q: Option<Quant>) -> i32 {
        if let Some(t) = self.tensor[v] {
            return t;
        }
        let val = &self.net.values[v];
        let ty = if q.is_some() { TType::I8 } else { TType::F32 };
        let t = self.add_tensor(&val.name.clone(), ty, &val.shape.clone(), 0, q);
        self.tensor[v] = Some(t);
        t
    }

    /// The int32 tensor of value `v` (a cast's output).
    fn int_tensor(&mut self, v: usize) -> i32 {
        if let Some(t) = self.tensor[v] {
            return t;
        }
        let val = &self.net.values[v];
        let t = self.add_tensor(&val.name.clone(), TType::I32, &val.shape.clone(), 0, None);
        self.tensor[v] = Some(t);
        t
    }

    /// The int8 parameters of `v` (`Int8` mode).
    fn qparams(&self, v: usize) -> Result<Quant> {
        let r = self
            .ranges
            .ok_or_else(|| Error::arg(OP, "int8 conversion without calibration ranges"))?;
        let (lo, hi) = r
            .get(v)
            .ok_or_else(|| Error::arg(OP, format!("no calibrated range for '{}'", self.net.values[v].name)))?;
        let (scale, zero) = quant::affine(lo, hi);
        Ok(Quant {
            scale: vec![scale],
            zero: vec![zero],
            dim: 0,
        })
    }

    /// An operand: an activation, or a constant (int8 per tensor in `Int8` mode).
    fn operand(&mut self, v: usize) -> Result<i32> {
        let val = &self.net.values[v];
        match (&val.konst, self.mode) {
            (None, _) => self.tensor[v].ok_or_else(|| Error::arg(OP, "a value used before it is computed")),
            (Some(a), Mode::Int8) if a.dtype == DType::F32 => {
                if let Some(t) = self.tensor[v] {
                    return Ok(t);
                }
                let lo = a.data.iter().copied().fold(0.0f32, f32::min);
                let hi = a.data.iter().copied().fold(0.0f32, f32::max);
                let (scale, zero) = quant::affine(lo, hi);
                let data = a.data.iter().map(|&x| quant::quantize(x, scale, zero) as u8).collect();
                let shape: Vec<Option<usize>> = a.shape.iter().map(|&d| Some(d)).collect();
                let b = self.buffer(data);
                let name = val.name.clone();
                let t = self.add_tensor(
                    &name,
                    TType::I8,
                    &shape,
                    b,
                    Some(Quant {
                        scale: vec![scale],
                        zero: vec![zero],
                        dim: 0,
                    }),
                );
                self.tensor[v] = Some(t);
                Ok(t)
            }
            (Some(_), _) => self.const_f32(v),
        }
    }
}

/// int8 output parameters TFLite's kernels require.
fn fixed_output(kind: &Kind) -> Option<Quant> {
    let q = |scale: f32, zero: i64| {
        Some(Quant {
            scale: vec![scale],
            zero: vec![zero],
            dim: 0,
        })
    };
    match kind {
        Kind::Softmax { log: false } | Kind::Unary(UnaryOp::Sigmoid) => q(1.0 / 256.0, -128),
        Kind::Softmax { log: true } => q(16.0 / 256.0, 127),
        Kind::Unary(UnaryOp::Tanh) => q(1.0 / 128.0, 0),
        _ => None,
    }
}

fn build(net: &Net, mode: Mode, ranges: Option<&Ranges>) -> Result<FModel> {
    let mut b = Builder {
        net,
        mode,
        ranges,
        m: FModel {
            tensors: Vec::new(),
            buffers: vec![Vec::new()],
            ops: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            signature_inputs: Vec::new(),
            signature_outputs: Vec::new(),
        },
        tensor: vec![None; net.values.len()],
    };
    let int8 = mode == Mode::Int8;
    for (&v, name) in net.inputs.iter().zip(&net.input_names) {
        let val = &net.values[v];
        let t = b.add_tensor(
            &format!("serving_default_{name}:0"),
            TType::F32,
            &val.shape.clone(),
            0,
            None,
        );
        b.m.inputs.push(t);
        b.m.signature_inputs.push((name.clone(), t));
        if int8 {
            let q = b.qparams(v)?;
            let qt = b.activation(v, Some(q));
            b.op(code::QUANTIZE, 1, vec![t], vec![qt], Opts::Quantize);
        } else {
            b.tensor[v] = Some(t);
        }
    }
    // Pooling, reshapes, pads and maxima keep their input's int8
    // parameters, as TFLite's kernels require.
    let mut same_as_input: Vec<Option<usize>> = vec![None; net.values.len()];
    for n in &net.nodes {
        if matches!(
            n.kind,
            Kind::Pool { .. } | Kind::Reshape(_) | Kind::Pad(_) | Kind::Reduce { op: ReduceOp::Max, .. }
        ) {
            same_as_input[n.out] = Some(n.inputs[0]);
        }
    }
    for n in &net.nodes {
        let x = b.operand(n.inputs[0])?;
        let out_q = if int8 {
            Some(match (fixed_output(&n.kind), same_as_input[n.out]) {
                (Some(q), _) => q,
                (None, Some(src)) => b.qparams_of_tensor(src)?,
                (None, None) => b.qparams(n.out)?,
            })
        } else {
            None
        };
        let in_scale = b.tensor_scale(x);
        if int8 && matches!(n.kind, Kind::Gather(_) | Kind::CastI32) {
            return Err(unsupported(
                if matches!(n.kind, Kind::CastI32) {
                    "cast"
                } else {
                    "gather"
                },
                &format!("wgflow writes it in float only ('{}')", net.values[n.out].name),
            ));
        }
        let y = if matches!(n.kind, Kind::CastI32) {
            b.int_tensor(n.out)
        } else {
            b.activation(n.out, out_q)
        };
        let act = n.act;
        match &n.kind {
            Kind::Conv { .. } | Kind::Depthwise { .. } | Kind::Fc | Kind::TransposeConv { .. } => {
                let depthwise = matches!(n.kind, Kind::Depthwise { .. });
                let transpose = matches!(n.kind, Kind::TransposeConv { .. });
                let dim = if depthwise { 3 } else { 0 };
                let numel = net.values[n.inputs[1]].konst.as_ref().map_or(0, |a| a.data.len());
                let (w, b_t, hybrid) = match mode {
                    Mode::Int8 => {
                        let (w, scales) = b.const_i8(n.inputs[1], dim)?;
                        let s_in = in_scale.unwrap_or(1.0);
                        let bias = net.values[n.inputs[2]]
                            .konst
                            .as_ref()
                            .ok_or_else(|| Error::arg(OP, "a bias that is not a constant"))?;
                        let data: Vec<u8> = bias
                            .data
                            .iter()
                            .zip(&scales)
                            .flat_map(|(&bv, &s)| quant::bias(bv, s_in * s).to_le_bytes())
                            .collect();
                        let bscales: Vec<f32> = scales.iter().map(|&s| s_in * s).collect();
                        let buf = b.buffer(data);
                        let name = net.values[n.inputs[2]].name.clone();
                        let quant = Quant {
                            zero: vec![0; bscales.len()],
                            scale: bscales,
                            dim: 0,
                        };
                        let bt = b.add_tensor(&name, TType::I32, &[Some(bias.data.len())], buf, Some(quant));
                        (w, bt, false)
                    }
                    // TRANSPOSE_CONV's hybrid form is not written: its
                    // weights stay f32.
                    Mode::Dynamic if numel >= 1024 && !transpose => {
                        let (w, _) = b.const_i8(n.inputs[1], dim)?;
                        (w, b.const_f32(n.inputs[2])?, true)
                    }
                    _ => (b.const_f32(n.inputs[1])?, b.const_f32(n.inputs[2])?, false),
                };
                if let Kind::TransposeConv { same, stride, out } = &n.kind {
                    if act != Act::None {
                        return Err(Error::arg(OP, "an activation fused into a transposed convolution"));
                    }
                    let shape = b.output_shape(n.inputs[0], x, *out, &net.values[n.out].name);
                    let opts = Opts::TransposeConv {
                        same: *same,
                        stride: *stride,
                    };
                    // Version 3: the bias input.
                    b.op(code::TRANSPOSE_CONV, 3, vec![shape, w, x, b_t], vec![y], opts);
                    continue;
                }
                let (code, version, opts) = match (&n.kind, mode, hybrid) {
                    (Kind::Conv { same, stride, dil }, _, h) => {
                        let v = if h {
                            5
                        } else if int8 {
                            3
                        } else {
                            1
                        };
                        (
                            code::CONV_2D,
                            v,
                            Opts::Conv {
                                same: *same,
                                stride: *stride,
                                dil: *dil,
                                act,
                            },
                        )
                    }
                    (
                        Kind::Depthwise {
                            same,
                            stride,
                            dil,
                            mult,
                        },
                        _,
                        h,
                    ) => {
                        let v = if h {
                            6
                        } else if int8 {
                            3
                        } else if dil != &[1, 1] {
                            2
                        } else {
                            1
                        };
                        (
                            code::DEPTHWISE_CONV_2D,
                            v,
                            Opts::Depthwise {
                                same: *same,
                                stride: *stride,
                                dil: *dil,
                                mult: *mult,
                                act,
                            },
                        )
                    }
                    (_, _, h) => {
                        let v = if h {
                            12
                        } else if int8 {
                            4
                        } else {
                            1
                        };
                        (code::FULLY_CONNECTED, v, Opts::Fc { act, asymmetric: h })
                    }
                };
                b.op(code, version, vec![x, w, b_t], vec![y], opts);
            }
            Kind::Pool {
                max,
                same,
                stride,
                size,
            } => {
                let c = if *max { code::MAX_POOL_2D } else { code::AVERAGE_POOL_2D };
                b.op(
                    c,
                    if int8 { 2 } else { 1 },
                    vec![x],
                    vec![y],
                    Opts::Pool {
                        same: *same,
                        stride: *stride,
                        size: *size,
                    },
                );
            }
            Kind::Reshape(d) => {
                let s = b.const_i32(&format!("{}/shape", net.values[n.out].name), d);
                b.op(code::RESHAPE, 1, vec![x, s], vec![y], Opts::None);
            }
            Kind::Softmax { log } => {
                let (c, o) = if *log {
                    (code::LOG_SOFTMAX, Opts::None)
                } else {
                    (code::SOFTMAX, Opts::Softmax)
                };
                // TFLite registers ELU at version 1 only (its kernel takes
                // int8 there too).
                let version = if int8 && c != code::ELU { 2 } else { 1 };
                b.op(c, version, vec![x], vec![y], o);
            }
            Kind::Reduce { op, axes, keep } => {
                let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                let a = b.const_i32(&format!("{}/axes", net.values[n.out].name), &ax);
                let c = match op {
                    ReduceOp::Mean => code::MEAN,
                    ReduceOp::Max => code::REDUCE_MAX,
                    ReduceOp::Sum => code::SUM,
                    other => return Err(unsupported(other.name(), "no TFLite reduction written")),
                };
                b.op(
                    c,
                    if int8 { 2 } else { 1 },
                    vec![x, a],
                    vec![y],
                    Opts::Reducer { keep: *keep },
                );
            }
            Kind::Binary(op) => {
                let z = b.operand(n.inputs[1])?;
                let (c, o) = match op {
                    BinaryOp::Add => (code::ADD, Opts::Add(act)),
                    BinaryOp::Sub => (code::SUB, Opts::Sub(act)),
                    BinaryOp::Mul => (code::MUL, Opts::Mul(act)),
                    BinaryOp::SquaredDifference if !int8 && act == Act::None => (code::SQUARED_DIFFERENCE, Opts::None),
                    BinaryOp::Div if !int8 => (code::DIV, Opts::Div(act)),
                    BinaryOp::Maximum if !int8 && act == Act::None => (code::MAXIMUM, Opts::MaxMin),
                    BinaryOp::Minimum if !int8 && act == Act::None => (code::MINIMUM, Opts::MaxMin),
                    other => {
                        return Err(unsupported(
                            other.name(),
                            &format!("wgflow writes it in float only ('{}')", net.values[n.out].name),
                        ));
                    }
                };
                b.op(c, if int8 { 2 } else { 1 }, vec![x, z], vec![y], o);
            }
            Kind::Gather(axis) => {
                let idx = b.operand(n.inputs[1])?;
                let axis = i32::try_from(*axis).map_err(|_| unsupported("gather", "an axis past i32"))?;
                b.op(code::GATHER, 1, vec![x, idx], vec![y], Opts::Gather { axis });
            }
            Kind::CastI32 => b.op(code::CAST, 1, vec![x], vec![y], Opts::None),
            Kind::Concat(axis) => {
                if int8 {
                    // TFLite's int8 kernel needs every input on the output's
                    // scale, which calibration does not give.
                    return Err(unsupported(
                        "concat",
                        &format!("wgflow writes it in float only ('{}')", net.values[n.out].name),
                    ));
                }
                let mut xs = vec![x];
                for &v in &n.inputs[1..] {
                    xs.push(b.operand(v)?);
                }
                let axis = i32::try_from(*axis).map_err(|_| unsupported("concat", "an axis past i32"))?;
                b.op(code::CONCATENATION, 1, xs, vec![y], Opts::Concat { axis, act });
            }
            Kind::Pad(amounts) => {
                let p: Vec<i64> = amounts.iter().flat_map(|&(b, a)| [b as i64, a as i64]).collect();
                let pt = b.const_i32_matrix(&format!("{}/paddings", net.values[n.out].name), &p, amounts.len());
                b.op(code::PAD, if int8 { 2 } else { 1 }, vec![x, pt], vec![y], Opts::None);
            }
            Kind::Unary(u) => {
                let (c, o) = match u {
                    UnaryOp::Relu => (code::RELU, Opts::None),
                    UnaryOp::Relu6 => (code::RELU6, Opts::None),
                    UnaryOp::Tanh => (code::TANH, Opts::None),
                    UnaryOp::Sigmoid => (code::LOGISTIC, Opts::None),
                    UnaryOp::Elu => (code::ELU, Opts::None),
                    UnaryOp::Gelu => (code::GELU, Opts::Gelu(false)),
                    UnaryOp::GeluTanh => (code::GELU, Opts::Gelu(true)),
                    UnaryOp::LeakyRelu(a) => (code::LEAKY_RELU, Opts::LeakyRelu(*a)),
                    _ if int8 => {
                        return Err(unsupported(
                            u.name(),
                            &format!(
                                "wgflow writes it in float only ('{}'); convert without a representative dataset",
                                net.values[n.out].name
                            ),
                        ));
                    }
                    UnaryOp::Exp => (code::EXP, Opts::None),
                    UnaryOp::Abs => (code::ABS, Opts::None),
                    UnaryOp::Neg => (code::NEG, Opts::None),
                    UnaryOp::Log => (code::LOG, Opts::None),
                    UnaryOp::Sqrt => (code::SQRT, Opts::None),
                    UnaryOp::Rsqrt => (code::RSQRT, Opts::None),
                    UnaryOp::Square => (code::SQUARE, Opts::None),
                    UnaryOp::Sin => (code::SIN, Opts::None),
                    UnaryOp::Cos => (code::COS, Opts::None),
                    UnaryOp::Floor => (code::FLOOR, Opts::None),
                    UnaryOp::Ceil => (code::CEIL, Opts::None),
                    other => return Err(unsupported(other.name(), "no TFLite operator")),
                };
                // TFLite registers ELU at version 1 only (its kernel takes
                // int8 there too).
                let version = if int8 && c != code::ELU { 2 } else { 1 };
                b.op(c, version, vec![x], vec![y], o);
            }
        }
        if act != Act::None
            && !matches!(
                n.kind,
                Kind::Conv { .. } | Kind::Depthwise { .. } | Kind::Fc | Kind::Binary(_)
            )
        {
            return Err(Error::arg(OP, "an activation fused into an op that cannot carry one"));
        }
    }
    for (&v, name) in net.outputs.iter().zip(&net.output_names) {
        let t = b.tensor[v].ok_or_else(|| Error::arg(OP, "an output is never computed"))?;
        let t = if int8 {
            let shape = net.values[v].shape.clone();
            let f = b.add_tensor(&format!("{name}:0"), TType::F32, &shape, 0, None);
            b.op(code::DEQUANTIZE, 2, vec![t], vec![f], Opts::Dequantize);
            f
        } else {
            t
        };
        b.m.outputs.push(t);
        b.m.signature_outputs.push((name.clone(), t));
    }
    Ok(b.m)
}

impl Builder<'_> {
    fn tensor_scale(&self, t: i32) -> Option<f32> {
        self.m.tensors.get(t as usize)?.quant.as_ref()?.scale.first().copied()
    }

    /// The parameters already given to `v`'s tensor.
    fn qparams_of_tensor(&self, v: usize) -> Result<Quant> {
        self.tensor[v]
            .and_then(|t| self.m.tensors.get(t as usize))
            .and_then(|t| t.quant.clone())
            .ok_or_else(|| Error::arg(OP, "an int8 input without parameters"))
    }
}

/// A representative dataset from an array of samples (`X.npy`, samples
/// along axis 0, of the model's one input): batches of up to `batch`
/// samples, values as f32.
pub fn representative_from_npy(array: &crate::io::npy::NpyArray, batch: usize) -> Result<Vec<Vec<Tensor>>> {
    use crate::io::npy::NpyData;
    let data: Vec<f32> = match &array.data {
        NpyData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        NpyData::F32(v) => v.clone(),
        NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        NpyData::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        NpyData::I16(v) => v.iter().map(|&x| f32::from(x)).collect(),
        NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        NpyData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        NpyData::U16(v) => v.iter().map(|&x| f32::from(x)).collect(),
        NpyData::U32(v) => v.iter().map(|&x| x as f32).collect(),
        NpyData::U64(v) => v.iter().map(|&x| x as f32).collect(),
        NpyData::Bool(_) => return Err(Error::arg(OP, "a representative dataset of booleans")),
    };
    let Some((&n, rest)) = array.shape.split_first() else {
        return Err(Error::arg(
            OP,
            "a representative dataset needs samples along axis 0, not a scalar",
        ));
    };
    if n == 0 {
        return Err(Error::arg(OP, "the representative dataset is empty"));
    }
    let per: usize = rest.iter().product();
    let batch = batch.max(1);
    let cpu = Device::cpu();
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let k = batch.min(n - start);
        let mut shape = vec![k];
        shape.extend_from_slice(rest);
        let slice = data
            .get(start * per..(start + k) * per)
            .ok_or_else(|| Error::arg(OP, "a truncated array"))?;
        out.push(vec![Tensor::from_slice(slice, &shape, &cpu)?]);
    }
    Ok(out)
}
