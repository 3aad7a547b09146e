//! The TensorFlow Lite FlatBuffer of a lowered model, field by field from
//! TensorFlow's `schema.fbs` (file identifier `TFL3`, schema version 3).
//! Tables are written through `flatbuffers`' raw builder: a field's slot is
//! `4 + 2 * id`, its id the one `schema.fbs` gives it.

use crate::core::error::{Error, Result};
use flatbuffers::{FlatBufferBuilder, TableFinishedWIPOffset, WIPOffset};

/// `schema.fbs`' `TensorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TType {
    F32 = 0,
    F16 = 1,
    I32 = 2,
    I8 = 9,
}

/// `ActivationFunctionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    None = 0,
    Relu = 1,
    Relu6 = 3,
}

/// Per-tensor or per-axis affine quantization: `real = scale * (q - zero)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Quant {
    pub scale: Vec<f32>,
    pub zero: Vec<i64>,
    pub dim: i32,
}

pub(crate) struct FTensor {
    pub name: String,
    pub ty: TType,
    /// Unknown dimensions are 1 here and -1 in `signature`.
    pub shape: Vec<i32>,
    pub signature: Option<Vec<i32>>,
    pub buffer: u32,
    pub quant: Option<Quant>,
}

/// An operator's builtin options (`BuiltinOptions` union).
#[derive(Clone, Debug)]
pub(crate) enum Opts {
    None,
    Conv {
        same: bool,
        stride: [usize; 2],
        dil: [usize; 2],
        act: Act,
    },
    Depthwise {
        same: bool,
        stride: [usize; 2],
        dil: [usize; 2],
        mult: usize,
        act: Act,
    },
    Fc {
        act: Act,
        asymmetric: bool,
    },
    Pool {
        same: bool,
        stride: [usize; 2],
        size: [usize; 2],
    },
    Softmax,
    Reducer {
        keep: bool,
    },
    Add(Act),
    Sub(Act),
    Mul(Act),
    Div(Act),
    /// MAXIMUM and MINIMUM (an options table without fields).
    MaxMin,
    Concat {
        axis: i32,
        act: Act,
    },
    Gather {
        axis: i32,
    },
    LeakyRelu(f32),
    /// GELU's `approximate` (the tanh form).
    Gelu(bool),
    Dequantize,
    Quantize,
    TransposeConv {
        same: bool,
        stride: [usize; 2],
    },
    Shape,
}

pub(crate) struct FOp {
    /// `BuiltinOperator`.
    pub code: i32,
    pub version: i32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub opts: Opts,
}

/// A one-subgraph model with its `serving_default` signature.
pub(crate) struct FModel {
    pub tensors: Vec<FTensor>,
    /// Buffer 0 is the empty buffer every activation points to.
    pub buffers: Vec<Vec<u8>>,
    pub ops: Vec<FOp>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub signature_inputs: Vec<(String, i32)>,
    pub signature_outputs: Vec<(String, i32)>,
}

type Table = WIPOffset<TableFinishedWIPOffset>;

const fn slot(id: u16) -> u16 {
    4 + 2 * id
}

/// A TFLite op code and the (code, version) it is written under.
pub(crate) mod code {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const MAX_POOL_2D: i32 = 17;
    pub const MUL: i32 = 18;
    pub const RELU: i32 = 19;
    pub const RELU6: i32 = 21;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const TANH: i32 = 28;
    pub const MEAN: i32 = 40;
    pub const SUB: i32 = 41;
    pub const EXP: i32 = 47;
    pub const LOG_SOFTMAX: i32 = 50;
    pub const SUM: i32 = 74;
    pub const QUANTIZE: i32 = 114;
    pub const LEAKY_RELU: i32 = 98;
    pub const ELU: i32 = 111;
    pub const GELU: i32 = 150;
    pub const FLOOR: i32 = 8;
    pub const NEG: i32 = 59;
    pub const SIN: i32 = 66;
    pub const LOG: i32 = 73;
    pub const SQRT: i32 = 75;
    pub const RSQRT: i32 = 76;
    pub const SQUARE: i32 = 92;
    pub const ABS: i32 = 101;
    pub const CEIL: i32 = 104;
    pub const COS: i32 = 108;
    pub const REDUCE_MAX: i32 = 82;
    pub const SQUARED_DIFFERENCE: i32 = 99;
    pub const PAD: i32 = 34;
    pub const CONCATENATION: i32 = 2;
    pub const GATHER: i32 = 36;
    pub const CAST: i32 = 53;
    pub const DIV: i32 = 42;
    pub const MAXIMUM: i32 = 55;
    pub const MINIMUM: i32 = 57;
    pub const TRANSPOSE_CONV: i32 = 67;
    pub const SHAPE: i32 = 77;
}

fn options(b: &mut FlatBufferBuilder, o: &Opts) -> Option<(u8, Table)> {
    let pad = |same: bool| if same { 0i8 } else { 1i8 };
    if matches!(o, Opts::None) {
        return None;
    }
    let t = b.start_table();
    let ty = match *o {
        Opts::None => 0,
        Opts::Conv { same, stride, dil, act } => {
            b.push_slot_always::<i8>(slot(0), pad(same));
            b.push_slot_always::<i32>(slot(1), stride[1] as i32);
            b.push_slot_always::<i32>(slot(2), stride[0] as i32);
            b.push_slot_always::<i8>(slot(3), act as i8);
            b.push_slot_always::<i32>(slot(4), dil[1] as i32);
            b.push_slot_always::<i32>(slot(5), dil[0] as i32);
            1
        }
        Opts::Depthwise {
            same,
            stride,
            dil,
            mult,
            act,
        } => {
            b.push_slot_always::<i8>(slot(0), pad(same));
            b.push_slot_always::<i32>(slot(1), stride[1] as i32);
            b.push_slot_always::<i32>(slot(2), stride[0] as i32);
            b.push_slot_always::<i32>(slot(3), mult as i32);
            b.push_slot_always::<i8>(slot(4), act as i8);
            b.push_slot_always::<i32>(slot(5), dil[1] as i32);
            b.push_slot_always::<i32>(slot(6), dil[0] as i32);
            2
        }
        Opts::Pool { same, stride, size } => {
            b.push_slot_always::<i8>(slot(0), pad(same));
            b.push_slot_always::<i32>(slot(1), stride[1] as i32);
            b.push_slot_always::<i32>(slot(2), stride[0] as i32);
            b.push_slot_always::<i32>(slot(3), size[1] as i32);
            b.push_slot_always::<i32>(slot(4), size[0] as i32);
            5
        }
        Opts::Fc { act, asymmetric } => {
            b.push_slot_always::<i8>(slot(0), act as i8);
            b.push_slot::<bool>(slot(3), asymmetric, false);
            8
        }
        Opts::Softmax => {
            b.push_slot_always::<f32>(slot(0), 1.0);
            9
        }
        Opts::Add(act) => {
            b.push_slot_always::<i8>(slot(0), act as i8);
            11
        }
        Opts::Mul(act) => {
            b.push_slot_always::<i8>(slot(0), act as i8);
            21
        }
        Opts::Reducer { keep } => {
            b.push_slot_always::<bool>(slot(0), keep);
            27
        }
        Opts::Sub(act) => {
            b.push_slot_always::<i8>(slot(0), act as i8);
            28
        }
        Opts::Div(act) => {
            b.push_slot_always::<i8>(slot(0), act as i8);
            29
        }
        Opts::MaxMin => 39,
        Opts::Gather { axis } => {
            b.push_slot_always::<i32>(slot(0), axis);
            23
        }
        Opts::Concat { axis, act } => {
            b.push_slot_always::<i32>(slot(0), axis);
            b.push_slot_always::<i8>(slot(1), act as i8);
            10
        }
        Opts::LeakyRelu(alpha) => {
            b.push_slot_always::<f32>(slot(0), alpha);
            75
        }
        Opts::Gelu(approximate) => {
            b.push_slot_always::<bool>(slot(0), approximate);
            116
        }
        Opts::TransposeConv { same, stride } => {
            b.push_slot_always::<i8>(slot(0), pad(same));
            b.push_slot_always::<i32>(slot(1), stride[1] as i32);
            b.push_slot_always::<i32>(slot(2), stride[0] as i32);
            49
        }
        Opts::Shape => {
            // out_type: INT32
            b.push_slot_always::<i8>(slot(0), TType::I32 as i8);
            55
        }
        Opts::Dequantize => 38,
        Opts::Quantize => 89,
    };
    Some((ty, b.end_table(t)))
}

/// Room left under FlatBuffers' 2 GiB for everything but the weights.
const TABLES_MARGIN: usize = 64 << 20;

/// The `.tflite` bytes of `m`.
pub(crate) fn to_bytes(m: &FModel) -> Result<Vec<u8>> {
    let data: usize = m.buffers.iter().map(Vec::len).sum();
    if data > (i32::MAX as usize).saturating_sub(TABLES_MARGIN) {
        return Err(Error::Unimplemented {
            what: format!("a TensorFlow Lite file with {data} bytes of weights"),
            msg: "a FlatBuffer holds under 2 GiB; wgflow does not write TFLite's external buffers".into(),
        });
    }
    let mut b = FlatBufferBuilder::with_capacity(data + 4096);

    // Operator codes, one per (op, version).
    let mut codes: Vec<(i32, i32)> = Vec::new();
    let mut op_index = Vec::with_capacity(m.ops.len());
    for op in &m.ops {
        let key = (op.code, op.version);
        let i = codes.iter().position(|&c| c == key).unwrap_or_else(|| {
            codes.push(key);
            codes.len() - 1
        });
        op_index.push(i as u32);
    }
    let code_tables: Vec<Table> = codes
        .iter()
        .map(|&(code, version)| {
            let t = b.start_table();
            b.push_slot_always::<i8>(slot(0), code.min(127) as i8);
            b.push_slot_always::<i32>(slot(2), version);
            b.push_slot_always::<i32>(slot(3), code);
            b.end_table(t)
        })
        .collect();
    let codes_vec = b.create_vector(&code_tables);

    let buffer_tables: Vec<Table> = m
        .buffers
        .iter()
        .map(|data| {
            let d = (!data.is_empty()).then(|| b.create_vector(data));
            let t = b.start_table();
            if let Some(d) = d {
                b.push_slot_always(slot(0), d);
            }
            b.end_table(t)
        })
        .collect();
    let buffers_vec = b.create_vector(&buffer_tables);

    let tensor_tables: Vec<Table> = m
        .tensors
        .iter()
        .map(|t| {
            let shape = b.create_vector(&t.shape);
            let name = b.create_string(&t.name);
            let sig = t.signature.as_ref().map(|s| b.create_vector(s));
            let quant = t.quant.as_ref().map(|q| {
                let scale = b.create_vector(&q.scale);
                let zero = b.create_vector(&q.zero);
                let qt = b.start_table();
                b.push_slot_always(slot(2), scale);
                b.push_slot_always(slot(3), zero);
                b.push_slot::<i32>(slot(6), q.dim, 0);
                b.end_table(qt)
            });
            let tt = b.start_table();
            b.push_slot_always(slot(0), shape);
            b.push_slot::<i8>(slot(1), t.ty as i8, 0);
            b.push_slot_always::<u32>(slot(2), t.buffer);
            b.push_slot_always(slot(3), name);
            if let Some(q) = quant {
                b.push_slot_always(slot(4), q);
            }
            if let Some(s) = sig {
                b.push_slot_always(slot(7), s);
            }
            b.end_table(tt)
        })
        .collect();
    let tensors_vec = b.create_vector(&tensor_tables);

    let op_tables: Vec<Table> = m
        .ops
        .iter()
        .zip(&op_index)
        .map(|(op, &index)| {
            let inputs = b.create_vector(&op.inputs);
            let outputs = b.create_vector(&op.outputs);
            let opts = options(&mut b, &op.opts);
            let t = b.start_table();
            b.push_slot::<u32>(slot(0), index, 0);
            b.push_slot_always(slot(1), inputs);
            b.push_slot_always(slot(2), outputs);
            if let Some((ty, o)) = opts {
                b.push_slot_always::<u8>(slot(3), ty);
                b.push_slot_always(slot(4), o);
            }
            b.end_table(t)
        })
        .collect();
    let ops_vec = b.create_vector(&op_tables);
    let inputs = b.create_vector(&m.inputs);
    let outputs = b.create_vector(&m.outputs);
    let name = b.create_string("main");
    let sg = b.start_table();
    b.push_slot_always(slot(0), tensors_vec);
    b.push_slot_always(slot(1), inputs);
    b.push_slot_always(slot(2), outputs);
    b.push_slot_always(slot(3), ops_vec);
    b.push_slot_always(slot(4), name);
    let subgraph = b.end_table(sg);
    let subgraphs = b.create_vector(&[subgraph]);

    let sig_in = tensor_maps(&mut b, &m.signature_inputs);
    let sig_out = tensor_maps(&mut b, &m.signature_outputs);
    let key = b.create_string("serving_default");
    let st = b.start_table();
    b.push_slot_always(slot(0), sig_in);
    b.push_slot_always(slot(1), sig_out);
    b.push_slot_always(slot(2), key);
    b.push_slot_always::<u32>(slot(4), 0);
    let sig = b.end_table(st);
    let sigs = b.create_vector(&[sig]);

    let description = b.create_string(concat!("wgflow ", env!("CARGO_PKG_VERSION")));
    let mt = b.start_table();
    b.push_slot_always::<u32>(slot(0), 3);
    b.push_slot_always(slot(1), codes_vec);
    b.push_slot_always(slot(2), subgraphs);
    b.push_slot_always(slot(3), description);
    b.push_slot_always(slot(4), buffers_vec);
    b.push_slot_always(slot(7), sigs);
    let model = b.end_table(mt);
    b.finish(model, Some("TFL3"));
    Ok(b.finished_data().to_vec())
}

fn tensor_maps<'f>(
    b: &mut FlatBufferBuilder<'f>,
    list: &[(String, i32)],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<TableFinishedWIPOffset>>> {
    let tables: Vec<Table> = list
        .iter()
        .map(|(n, i)| {
            let n = b.create_string(n);
            let t = b.start_table();
            b.push_slot_always(slot(0), n);
            b.push_slot_always::<u32>(slot(1), *i as u32);
            b.end_table(t)
        })
        .collect();
    b.create_vector(&tables)
}
