//! A wgflow graph as TensorFlow's: each [`Op`] becomes the TensorFlow ops
//! that compute the same thing, in a TF1-style `MetaGraphDef` that
//! TensorFlow 2 (`tf.saved_model.load`), TF Serving and `saved_model_cli`
//! all load: placeholders for the signature's inputs (`-1` for unknown
//! dimensions), resource variables (`VarHandleOp` + `ReadVariableOp`) with
//! their `VariableDef`s in the `variables` collections, and the V2 saver
//! subgraph (`save/RestoreV2` → `AssignVariableOp`, `save/restore_all`)
//! that loaders run to fill the variables from the tensor bundle. Shape
//! attributes that follow an input's size become `Shape` → `StridedSlice`
//! → `Pack`, as TensorFlow traces `tf.shape(x)[0]`; reshape's inferred
//! entry becomes `-1`.

use super::bundle::BundleTensor;
use super::proto::{
    self, AttrValue, BytesList, CollectionDef, GraphDef, ListValue, MetaGraphDef, MetaInfoDef, NodeDef, SaverDef,
    SignatureDef, TensorInfo, TensorProto, TensorShapeProto, VersionDef, attr_value::Value, dt,
};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::{BinaryOp, CmpOp, Op, Padding, ReduceOp, UnaryOp};
use crate::function::{ConcreteFunction, Dim, Feed};
use crate::runtime::cpu::CpuData;
use crate::tensor::{Tensor, Variable};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// TensorFlow's `DataType` for a wgflow dtype.
pub(crate) fn tf_dtype(d: DType) -> i32 {
    match d {
        DType::F32 => dt::FLOAT,
        DType::F16 => dt::HALF,
        DType::F64 => dt::DOUBLE,
        DType::BF16 => dt::BFLOAT16,
        DType::I32 => dt::INT32,
        DType::Bool => dt::BOOL,
    }
}

/// The little-endian bytes of `t`'s elements (as TensorFlow stores them).
pub(crate) fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t.to_data()? {
        CpuData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        CpuData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    })
}

fn unimplemented(what: String, msg: impl Into<String>) -> Error {
    Error::Unimplemented { what, msg: msg.into() }
}

fn a(v: Value) -> AttrValue {
    AttrValue { value: Some(v) }
}
fn a_type(d: i32) -> AttrValue {
    a(Value::Type(d))
}
fn a_t(d: DType) -> AttrValue {
    a_type(tf_dtype(d))
}
fn a_i(i: i64) -> AttrValue {
    a(Value::I(i))
}
fn a_b(b: bool) -> AttrValue {
    a(Value::B(b))
}
fn a_s(s: &str) -> AttrValue {
    a(Value::S(s.as_bytes().to_vec()))
}
fn a_ints(v: &[i64]) -> AttrValue {
    a(Value::List(ListValue {
        i: v.to_vec(),
        ..ListValue::default()
    }))
}
fn a_types(v: &[i32]) -> AttrValue {
    a(Value::List(ListValue {
        r#type: v.to_vec(),
        ..ListValue::default()
    }))
}
fn a_shape(dims: &[Option<usize>]) -> AttrValue {
    a(Value::Shape(TensorShapeProto::from_dims(dims)))
}

/// A TensorFlow name for `s`: `[A-Za-z0-9.][A-Za-z0-9_./-]*`.
fn node_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_./-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '.') {
        out.insert(0, 'v');
    }
    out
}

/// Builds a GraphDef with unique node names.
#[derive(Default)]
pub(crate) struct Builder {
    nodes: Vec<NodeDef>,
    names: HashSet<String>,
}

impl Builder {
    fn unique(&mut self, base: &str) -> String {
        let base = node_name(base);
        let mut name = base.clone();
        let mut i = 0;
        while self.names.contains(&name) {
            i += 1;
            name = format!("{base}_{i}");
        }
        self.names.insert(name.clone());
        name
    }

    /// Adds a node; returns its name (its first output's tensor name is `name:0`).
    fn add(&mut self, base: &str, op: &str, inputs: Vec<String>, attrs: Vec<(&str, AttrValue)>) -> String {
        let name = self.unique(base);
        self.nodes.push(NodeDef {
            name: name.clone(),
            op: op.to_string(),
            input: inputs,
            device: String::new(),
            attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        name
    }

    fn constant(&mut self, base: &str, t: TensorProto) -> String {
        let dtype = t.dtype;
        self.add(
            base,
            "Const",
            vec![],
            vec![("dtype", a_type(dtype)), ("value", a(Value::Tensor(t)))],
        )
    }

    fn const_i32(&mut self, base: &str, v: &[i32], shape: &[usize]) -> String {
        let t = TensorProto {
            dtype: dt::INT32,
            tensor_shape: Some(TensorShapeProto::from_dims(
                &shape.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )),
            tensor_content: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..TensorProto::default()
        };
        self.constant(base, t)
    }

    fn const_vec(&mut self, base: &str, v: &[usize]) -> Result<String> {
        let v = v
            .iter()
            .map(|&x| i32::try_from(x).map_err(|_| unimplemented(format!("dimension {x}"), "past int32")))
            .collect::<Result<Vec<i32>>>()?;
        Ok(self.const_i32(base, &v, &[v.len()]))
    }

    fn const_scalar(&mut self, base: &str, value: f64, dtype: DType) -> String {
        let content = match dtype {
            DType::F32 => (value as f32).to_le_bytes().to_vec(),
            DType::F16 => half::f16::from_f32(value as f32).to_le_bytes().to_vec(),
            DType::BF16 => half::bf16::from_f32(value as f32).to_le_bytes().to_vec(),
            DType::F64 => value.to_le_bytes().to_vec(),
            DType::I32 => (value as i32).to_le_bytes().to_vec(),
            DType::Bool => vec![(value != 0.0) as u8],
        };
        self.constant(
            base,
            TensorProto {
                dtype: tf_dtype(dtype),
                tensor_shape: Some(TensorShapeProto::default()),
                tensor_content: content,
                ..TensorProto::default()
            },
        )
    }

    fn const_tensor(&mut self, base: &str, t: &Tensor) -> Result<String> {
        let proto = TensorProto {
            dtype: tf_dtype(t.dtype()),
            tensor_shape: Some(TensorShapeProto::from_dims(
                &t.shape().iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )),
            tensor_content: tensor_bytes(t)?,
            ..TensorProto::default()
        };
        Ok(self.constant(base, proto))
    }

    fn const_strings(&mut self, base: &str, v: &[String]) -> String {
        let t = TensorProto {
            dtype: dt::STRING,
            tensor_shape: Some(TensorShapeProto::from_dims(&[Some(v.len())])),
            string_val: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..TensorProto::default()
        };
        self.constant(base, t)
    }
}

/// One signature of the export: its key and function.
pub(crate) struct Signature<'a> {
    pub key: String,
    pub function: &'a ConcreteFunction,
}

/// The exported variables: node name per variable id, in first-use order.
struct Vars {
    by_id: HashMap<u64, String>,
    list: Vec<(String, Variable)>,
}

/// The `MetaGraphDef` of `sigs` and the tensors of its variable bundle
/// (empty when `freeze` writes the variables as constants).
pub(crate) fn meta_graph(
    sigs: &[Signature<'_>],
    names: &[(String, Variable)],
    freeze: bool,
) -> Result<(MetaGraphDef, Vec<(String, BundleTensor)>)> {
    let mut b = Builder::default();
    let preferred: HashMap<u64, &str> = names.iter().map(|(n, v)| (v.id(), n.as_str())).collect();
    let mut vars = Vars {
        by_id: HashMap::new(),
        list: Vec::new(),
    };
    if !freeze {
        for s in sigs {
            for v in s.function.variables() {
                if vars.by_id.contains_key(&v.id()) {
                    continue;
                }
                let base = preferred.get(&v.id()).copied().unwrap_or(v.name());
                let name = b.unique(base);
                vars.by_id.insert(v.id(), name.clone());
                vars.list.push((name, v.clone()));
            }
        }
        for (name, v) in &vars.list {
            variable_nodes(&mut b, name, v)?;
        }
    }
    let mut signature_def = HashMap::new();
    for s in sigs {
        signature_def.insert(s.key.clone(), signature(&mut b, s, &vars, freeze)?);
    }
    let mut collection_def = HashMap::new();
    let mut saver_def = None;
    let mut bundle = Vec::new();
    if !vars.list.is_empty() {
        saver_def = Some(saver(&mut b, &vars.list));
        let defs = |trainable_only: bool| CollectionDef {
            bytes_list: Some(BytesList {
                value: vars
                    .list
                    .iter()
                    .filter(|(_, v)| !trainable_only || v.trainable())
                    .map(|(n, v)| {
                        proto::VariableDef {
                            variable_name: format!("{n}:0"),
                            initializer_name: format!("{n}/Assign"),
                            snapshot_name: format!("{n}/Read/ReadVariableOp:0"),
                            is_resource: true,
                            initial_value_name: format!("{n}/Initializer/zeros:0"),
                            trainable: v.trainable(),
                        }
                        .encode_to_vec()
                    })
                    .collect(),
            }),
            ..CollectionDef::default()
        };
        collection_def.insert("variables".to_string(), defs(false));
        collection_def.insert("trainable_variables".to_string(), defs(true));
        for (n, v) in &vars.list {
            let t = v.value();
            bundle.push((
                n.clone(),
                BundleTensor {
                    dtype: tf_dtype(t.dtype()),
                    shape: t.shape().to_vec(),
                    data: tensor_bytes(&t)?,
                },
            ));
        }
    }
    let meta = MetaGraphDef {
        meta_info_def: Some(MetaInfoDef {
            meta_graph_version: String::new(),
            tags: vec!["serve".to_string()],
            tensorflow_version: "2.21.0".to_string(),
            tensorflow_git_version: format!("wgflow-{}", env!("CARGO_PKG_VERSION")),
            stripped_default_attrs: true,
        }),
        graph_def: Some(GraphDef {
            node: b.nodes,
            library: None,
            versions: Some(VersionDef {
                producer: 2474,
                min_consumer: 12,
                bad_consumers: vec![],
            }),
        }),
        saver_def,
        collection_def,
        signature_def,
        object_graph_def: None,
    };
    Ok((meta, bundle))
}

/// A resource variable as TF1's `tf.compat.v1.get_variable(use_resource=True)`
/// writes it: handle, zero initializer and its assignment, and a snapshot read.
fn variable_nodes(b: &mut Builder, name: &str, v: &Variable) -> Result<()> {
    let shape: Vec<Option<usize>> = v.shape().iter().map(|&d| Some(d)).collect();
    let dtype = v.dtype();
    b.nodes.push(NodeDef {
        name: name.to_string(),
        op: "VarHandleOp".into(),
        input: vec![],
        device: String::new(),
        attr: [
            ("dtype", a_t(dtype)),
            ("shape", a_shape(&shape)),
            ("container", a_s("")),
            ("shared_name", a_s(name)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    });
    let dims = b.const_vec(&format!("{name}/Initializer/zeros/shape_as_tensor"), &v.shape())?;
    let zero = b.const_scalar(&format!("{name}/Initializer/zeros/Const"), 0.0, dtype);
    let init = format!("{name}/Initializer/zeros");
    b.names.insert(init.clone());
    b.nodes.push(NodeDef {
        name: init.clone(),
        op: "Fill".into(),
        input: vec![dims, zero],
        device: String::new(),
        attr: [("T", a_t(dtype)), ("index_type", a_type(dt::INT32))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    });
    for (node, op, inputs, attrs) in [
        (
            format!("{name}/Assign"),
            "AssignVariableOp",
            vec![name.to_string(), init],
            vec![("dtype", a_t(dtype))],
        ),
        (
            format!("{name}/Read/ReadVariableOp"),
            "ReadVariableOp",
            vec![name.to_string()],
            vec![("dtype", a_t(dtype))],
        ),
    ] {
        b.names.insert(node.clone());
        b.nodes.push(NodeDef {
            name: node,
            op: op.into(),
            input: inputs,
            device: String::new(),
            attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }
    Ok(())
}

/// The V2 saver subgraph (unsharded): `save/Const` is the checkpoint prefix
/// a loader feeds, `save/restore_all` the op it runs.
fn saver(b: &mut Builder, vars: &[(String, Variable)]) -> SaverDef {
    let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    let dtypes: Vec<i32> = vars.iter().map(|(_, v)| tf_dtype(v.dtype())).collect();
    let string = |b: &mut Builder, base: &str, s: &str| {
        b.constant(
            base,
            TensorProto {
                dtype: dt::STRING,
                tensor_shape: Some(TensorShapeProto::default()),
                string_val: vec![s.as_bytes().to_vec()],
                ..TensorProto::default()
            },
        )
    };
    let default = string(b, "save/filename/input", "model");
    let prefix = b.add(
        "save/Const",
        "PlaceholderWithDefault",
        vec![default],
        vec![("dtype", a_type(dt::STRING)), ("shape", a_shape(&[]))],
    );
    let empty = vec![String::new(); names.len()];
    let save_names = b.const_strings("save/SaveV2/tensor_names", &names);
    let save_slices = b.const_strings("save/SaveV2/shape_and_slices", &empty);
    let mut inputs = vec![prefix.clone(), save_names, save_slices];
    inputs.extend(names.iter().map(|n| format!("{n}/Read/ReadVariableOp")));
    let save = b.add("save/SaveV2", "SaveV2", inputs, vec![("dtypes", a_types(&dtypes))]);
    let saved = b.add(
        "save/control_dependency",
        "Identity",
        vec![prefix.clone(), format!("^{save}")],
        vec![("T", a_type(dt::STRING))],
    );
    let restore_names = b.const_strings("save/RestoreV2/tensor_names", &names);
    let restore_slices = b.const_strings("save/RestoreV2/shape_and_slices", &empty);
    let restore = b.add(
        "save/RestoreV2",
        "RestoreV2",
        vec![prefix.clone(), restore_names, restore_slices],
        vec![("dtypes", a_types(&dtypes))],
    );
    let mut assigns = Vec::new();
    for (i, (n, v)) in vars.iter().enumerate() {
        let id = b.add(
            "save/Identity",
            "Identity",
            vec![format!("{restore}:{i}")],
            vec![("T", a_t(v.dtype()))],
        );
        let assign = b.add(
            "save/AssignVariableOp",
            "AssignVariableOp",
            vec![n.clone(), id],
            vec![("dtype", a_t(v.dtype()))],
        );
        assigns.push(format!("^{assign}"));
    }
    let all = b.add("save/restore_all", "NoOp", assigns, vec![]);
    SaverDef {
        filename_tensor_name: format!("{prefix}:0"),
        save_tensor_name: format!("{saved}:0"),
        restore_op_name: all,
        max_to_keep: 5,
        sharded: false,
        keep_checkpoint_every_n_hours: 10000.0,
        version: 2,
    }
}

/// The nodes of one signature's function and its `SignatureDef`.
fn signature(b: &mut Builder, s: &Signature<'_>, vars: &Vars, freeze: bool) -> Result<SignatureDef> {
    let f = s.function;
    let def = f.def();
    let key = &s.key;
    let mut vals: Vec<Option<String>> = vec![None; def.values.len()];
    let mut args: Vec<(String, DType)> = Vec::new();
    let mut inputs = HashMap::new();
    for (i, spec) in f.inputs().iter().enumerate() {
        let input = spec.name.clone().unwrap_or_else(|| format!("input_{i}"));
        let ph = b.add(
            &format!("{key}_{input}"),
            "Placeholder",
            vec![],
            vec![("dtype", a_t(spec.dtype)), ("shape", a_shape(&spec.shape))],
        );
        inputs.insert(
            input,
            TensorInfo {
                name: format!("{ph}:0"),
                dtype: tf_dtype(spec.dtype),
                tensor_shape: Some(TensorShapeProto::from_dims(&spec.shape)),
            },
        );
        args.push((ph, spec.dtype));
    }
    for (v, feed) in &def.feeds {
        let name = match feed {
            Feed::Arg(i) => args
                .get(*i)
                .map(|(a, _)| format!("{a}:0"))
                .ok_or_else(|| Error::arg("saved_model.save", format!("{key}: argument {i} has no input spec")))?,
            Feed::Variable(i) => {
                let var = f
                    .variables()
                    .get(*i)
                    .ok_or_else(|| Error::arg("saved_model.save", "an unbound variable"))?;
                if freeze {
                    b.const_tensor(&format!("{key}/{}", var.name()), &var.value())? + ":0"
                } else {
                    let handle = vars
                        .by_id
                        .get(&var.id())
                        .ok_or_else(|| Error::arg("saved_model.save", "an unlisted variable"))?;
                    b.add(
                        &format!("{key}/{handle}/ReadVariableOp"),
                        "ReadVariableOp",
                        vec![handle.clone()],
                        vec![("dtype", a_t(var.dtype()))],
                    ) + ":0"
                }
            }
            Feed::Capture(i) => {
                let t = f
                    .captures()
                    .get(*i)
                    .ok_or_else(|| Error::arg("saved_model.save", "an unbound capture"))?;
                b.const_tensor(&format!("{key}/Const"), t)? + ":0"
            }
            Feed::Host(_) => {
                return Err(unimplemented(
                    "a host input".into(),
                    format!(
                        "{key}: values the host recomputes per call (an optimizer's step) have no SavedModel form; export an inference function"
                    ),
                ));
            }
        };
        if let Some(slot) = vals.get_mut(*v) {
            *slot = Some(name);
        }
    }
    for node in &def.nodes {
        let ins: Vec<String> = node
            .inputs
            .iter()
            .map(|&v| {
                vals.get(v)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| Error::arg("saved_model.save", "malformed graph"))
            })
            .collect::<Result<_>>()?;
        let ranks: Vec<usize> = node.inputs.iter().map(|&v| def.values[v].shape.len()).collect();
        let out_dtype = node.outputs.first().map(|&o| def.values[o].dtype);
        let in_dtype = node.inputs.first().map(|&v| def.values[v].dtype);
        let out = convert(
            b,
            key,
            &node.op,
            node.dims.as_deref(),
            &ins,
            &ranks,
            in_dtype,
            out_dtype,
            &args,
            def,
            node,
        )?;
        if let Some(&o) = node.outputs.first() {
            vals[o] = Some(out);
        }
    }
    let mut outputs = HashMap::new();
    for ((&v, name), spec) in def.outputs.iter().zip(f.output_names()).zip(f.outputs()) {
        let src = vals
            .get(v)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::arg("saved_model.save", "an output is never computed"))?;
        let id = b.add(
            &format!("{key}/{name}"),
            "Identity",
            vec![src],
            vec![("T", a_t(spec.dtype))],
        );
        outputs.insert(
            name.clone(),
            TensorInfo {
                name: format!("{id}:0"),
                dtype: tf_dtype(spec.dtype),
                tensor_shape: Some(TensorShapeProto::from_dims(&spec.shape)),
            },
        );
    }
    Ok(SignatureDef {
        inputs,
        outputs,
        method_name: "tensorflow/serving/predict".to_string(),
    })
}

/// A shape attribute as an int32 tensor: a constant, or `Pack` of constants
/// and `tf.shape(arg)[axis]` where it follows an argument.
fn shape_tensor(
    b: &mut Builder,
    base: &str,
    known: &[usize],
    dims: Option<&[Dim]>,
    args: &[(String, DType)],
) -> Result<String> {
    let Some(dims) = dims else {
        return b.const_vec(&format!("{base}/shape"), known);
    };
    let int = |x: usize| i32::try_from(x).map_err(|_| unimplemented(format!("dimension {x}"), "past int32"));
    if dims.iter().all(|d| !matches!(d, Dim::Arg { .. })) {
        let v = dims
            .iter()
            .map(|d| match d {
                Dim::Known(n) => int(*n),
                _ => Ok(-1),
            })
            .collect::<Result<Vec<i32>>>()?;
        return Ok(b.const_i32(&format!("{base}/shape"), &v, &[v.len()]));
    }
    let mut parts = Vec::new();
    for d in dims {
        parts.push(match *d {
            Dim::Known(n) => b.const_i32(&format!("{base}/shape/dim"), &[int(n)?], &[]),
            Dim::Infer => b.const_i32(&format!("{base}/shape/dim"), &[-1], &[]),
            Dim::Arg { arg, axis } => {
                let (x, t) = args
                    .get(arg)
                    .ok_or_else(|| Error::arg("saved_model.save", "a shape follows a missing argument"))?;
                let shape = b.add(
                    &format!("{base}/Shape"),
                    "Shape",
                    vec![x.clone()],
                    vec![("T", a_t(*t)), ("out_type", a_type(dt::INT32))],
                );
                let ax = int(axis)?;
                let begin = b.const_i32(&format!("{base}/strided_slice/stack"), &[ax], &[1]);
                let end = b.const_i32(&format!("{base}/strided_slice/stack_1"), &[ax + 1], &[1]);
                let step = b.const_i32(&format!("{base}/strided_slice/stack_2"), &[1], &[1]);
                b.add(
                    &format!("{base}/strided_slice"),
                    "StridedSlice",
                    vec![shape, begin, end, step],
                    vec![
                        ("T", a_type(dt::INT32)),
                        ("Index", a_type(dt::INT32)),
                        ("shrink_axis_mask", a_i(1)),
                    ],
                )
            }
        });
    }
    let n = parts.len() as i64;
    Ok(b.add(
        &format!("{base}/shape"),
        "Pack",
        parts,
        vec![("N", a_i(n)), ("T", a_type(dt::INT32)), ("axis", a_i(0))],
    ))
}

fn unary_name(u: UnaryOp) -> Option<&'static str> {
    Some(match u {
        UnaryOp::Neg => "Neg",
        UnaryOp::Abs => "Abs",
        UnaryOp::Sign => "Sign",
        UnaryOp::Exp => "Exp",
        UnaryOp::Expm1 => "Expm1",
        UnaryOp::Log => "Log",
        UnaryOp::Log1p => "Log1p",
        UnaryOp::Sqrt => "Sqrt",
        UnaryOp::Rsqrt => "Rsqrt",
        UnaryOp::Square => "Square",
        UnaryOp::Reciprocal => "Reciprocal",
        UnaryOp::Sin => "Sin",
        UnaryOp::Cos => "Cos",
        UnaryOp::Tanh => "Tanh",
        UnaryOp::Sigmoid => "Sigmoid",
        UnaryOp::Relu => "Relu",
        UnaryOp::Relu6 => "Relu6",
        UnaryOp::Elu => "Elu",
        UnaryOp::Selu => "Selu",
        UnaryOp::Softplus => "Softplus",
        UnaryOp::Softsign => "Softsign",
        UnaryOp::Floor => "Floor",
        UnaryOp::Ceil => "Ceil",
        UnaryOp::Round => "Round",
        UnaryOp::Erf => "Erf",
        _ => return None,
    })
}

fn tf_padding(p: Padding) -> (&'static str, Vec<i64>) {
    match p {
        Padding::Same => ("SAME", vec![]),
        Padding::Valid => ("VALID", vec![]),
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => (
            "EXPLICIT",
            vec![0, 0, top as i64, bottom as i64, left as i64, right as i64, 0, 0],
        ),
    }
}

/// The TensorFlow nodes of one wgflow op; returns the tensor name of its
/// (first) output.
#[allow(clippy::too_many_arguments)]
fn convert(
    b: &mut Builder,
    key: &str,
    op: &Op,
    dims: Option<&[Dim]>,
    x: &[String],
    ranks: &[usize],
    in_dtype: Option<DType>,
    out_dtype: Option<DType>,
    args: &[(String, DType)],
    def: &crate::function::GraphDef,
    node: &crate::function::NodeDef,
) -> Result<String> {
    let t = in_dtype.or(out_dtype).unwrap_or(DType::F32);
    let tt = ("T", a_t(t));
    let base = format!("{key}/{}", op.name());
    let first = |i: usize| x.get(i).cloned().unwrap_or_default();
    let simple = |b: &mut Builder, tf: &str, inputs: Vec<String>, attrs: Vec<(&str, AttrValue)>| -> String {
        b.add(&base, tf, inputs, attrs) + ":0"
    };
    let none = || {
        unimplemented(
            format!("op '{}'", op.name()),
            format!("{key}: it has no TensorFlow form in wgflow's exporter (training-only ops are not exported)"),
        )
    };
    Ok(match op {
        Op::Unary(u) => {
            if let Some(tf) = unary_name(*u) {
                simple(b, tf, vec![first(0)], vec![tt])
            } else {
                match u {
                    UnaryOp::LeakyRelu(alpha) => {
                        simple(b, "LeakyRelu", vec![first(0)], vec![tt, ("alpha", a(Value::F(*alpha)))])
                    }
                    UnaryOp::Silu => {
                        let s = b.add(&base, "Sigmoid", vec![first(0)], vec![tt.clone()]);
                        simple(b, "Mul", vec![first(0), s], vec![tt])
                    }
                    UnaryOp::Gelu => {
                        // 0.5 x (1 + erf(x / sqrt 2)), as tf.nn.gelu.
                        let c = b.const_scalar(&base, std::f64::consts::FRAC_1_SQRT_2, t);
                        let s = b.add(&base, "Mul", vec![first(0), c], vec![tt.clone()]);
                        let e = b.add(&base, "Erf", vec![s], vec![tt.clone()]);
                        let one = b.const_scalar(&base, 1.0, t);
                        let p = b.add(&base, "AddV2", vec![e, one], vec![tt.clone()]);
                        let h = b.const_scalar(&base, 0.5, t);
                        let xh = b.add(&base, "Mul", vec![first(0), h], vec![tt.clone()]);
                        simple(b, "Mul", vec![xh, p], vec![tt])
                    }
                    UnaryOp::GeluTanh => {
                        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
                        let cube = b.const_scalar(&base, 3.0, t);
                        let x3 = b.add(&base, "Pow", vec![first(0), cube], vec![tt.clone()]);
                        let k = b.const_scalar(&base, 0.044715, t);
                        let kx3 = b.add(&base, "Mul", vec![x3, k], vec![tt.clone()]);
                        let inner = b.add(&base, "AddV2", vec![first(0), kx3], vec![tt.clone()]);
                        let c = b.const_scalar(&base, (2.0 / std::f64::consts::PI).sqrt(), t);
                        let sc = b.add(&base, "Mul", vec![inner, c], vec![tt.clone()]);
                        let th = b.add(&base, "Tanh", vec![sc], vec![tt.clone()]);
                        let one = b.const_scalar(&base, 1.0, t);
                        let p = b.add(&base, "AddV2", vec![th, one], vec![tt.clone()]);
                        let h = b.const_scalar(&base, 0.5, t);
                        let xh = b.add(&base, "Mul", vec![first(0), h], vec![tt.clone()]);
                        simple(b, "Mul", vec![xh, p], vec![tt])
                    }
                    _ => return Err(none()),
                }
            }
        }
        Op::Binary(bo) => {
            let tf = match bo {
                BinaryOp::Add => "AddV2",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div if t == DType::I32 => "TruncateDiv",
                BinaryOp::Div => "RealDiv",
                BinaryOp::Pow => "Pow",
                BinaryOp::Maximum => "Maximum",
                BinaryOp::Minimum => "Minimum",
                BinaryOp::SquaredDifference => "SquaredDifference",
                BinaryOp::LogicalAnd => return Ok(simple(b, "LogicalAnd", x.to_vec(), vec![])),
                BinaryOp::LogicalOr => return Ok(simple(b, "LogicalOr", x.to_vec(), vec![])),
                BinaryOp::LogicalXor => "NotEqual",
                #[allow(unreachable_patterns)]
                _ => return Err(none()),
            };
            simple(b, tf, x.to_vec(), vec![tt])
        }
        Op::Compare(c) => {
            let tf = match c {
                CmpOp::Equal => "Equal",
                CmpOp::NotEqual => "NotEqual",
                CmpOp::Less => "Less",
                CmpOp::LessEqual => "LessEqual",
                CmpOp::Greater => "Greater",
                CmpOp::GreaterEqual => "GreaterEqual",
                #[allow(unreachable_patterns)]
                _ => return Err(none()),
            };
            simple(b, tf, x.to_vec(), vec![tt])
        }
        Op::Where => {
            let d = x.get(1).and(node.inputs.get(1)).map_or(t, |&v| def.values[v].dtype);
            simple(b, "SelectV2", x.to_vec(), vec![("T", a_t(d))])
        }
        Op::Cast(to) => simple(
            b,
            "Cast",
            vec![first(0)],
            vec![("SrcT", a_t(t)), ("DstT", a_t(*to)), ("Truncate", a_b(false))],
        ),
        Op::StopGradient => simple(b, "StopGradient", vec![first(0)], vec![tt]),
        Op::Reshape(s) => {
            let shape = shape_tensor(b, &base, s, dims, args)?;
            simple(
                b,
                "Reshape",
                vec![first(0), shape],
                vec![tt, ("Tshape", a_type(dt::INT32))],
            )
        }
        Op::BroadcastTo(s) => {
            let shape = shape_tensor(b, &base, s, dims, args)?;
            simple(
                b,
                "BroadcastTo",
                vec![first(0), shape],
                vec![tt, ("Tidx", a_type(dt::INT32))],
            )
        }
        Op::Permute(p) => {
            let perm = b.const_vec(&format!("{base}/perm"), p)?;
            simple(
                b,
                "Transpose",
                vec![first(0), perm],
                vec![tt, ("Tperm", a_type(dt::INT32))],
            )
        }
        Op::Slice { begin, size } => {
            let bg = b.const_vec(&format!("{base}/begin"), begin)?;
            let sz = shape_tensor(b, &base, size, dims, args)?;
            simple(
                b,
                "Slice",
                vec![first(0), bg, sz],
                vec![tt, ("Index", a_type(dt::INT32))],
            )
        }
        Op::Concat { axis } => {
            let ax_scalar = b.const_i32(&format!("{base}/axis"), &[*axis as i32], &[]);
            let mut inputs = x.to_vec();
            inputs.push(ax_scalar);
            simple(
                b,
                "ConcatV2",
                inputs,
                vec![tt, ("N", a_i(x.len() as i64)), ("Tidx", a_type(dt::INT32))],
            )
        }
        Op::Gather { axis } => {
            let ax = b.const_i32(&format!("{base}/axis"), &[*axis as i32], &[]);
            simple(
                b,
                "GatherV2",
                vec![first(0), first(1), ax],
                vec![
                    ("Tparams", a_t(t)),
                    ("Tindices", a_type(dt::INT32)),
                    ("Taxis", a_type(dt::INT32)),
                    ("batch_dims", a_i(0)),
                ],
            )
        }
        // wgflow's own op: a SavedModel with int8 weights loads in wgflow only.
        Op::DequantizeInt8 { cols } => simple(b, "WgflowDequantizeInt8", x.to_vec(), vec![("cols", a_i(*cols as i64))]),
        Op::OneHot { depth, on, off, dtype } => {
            let d = b.const_i32(&format!("{base}/depth"), &[*depth as i32], &[]);
            let on = b.const_scalar(&format!("{base}/on_value"), *on, *dtype);
            let off = b.const_scalar(&format!("{base}/off_value"), *off, *dtype);
            simple(
                b,
                "OneHot",
                vec![first(0), d, on, off],
                vec![("T", a_t(*dtype)), ("TI", a_type(dt::INT32)), ("axis", a_i(-1))],
            )
        }
        Op::MatMul { ta, tb } => {
            if ranks.iter().all(|&r| r == 2) {
                simple(
                    b,
                    "MatMul",
                    x.to_vec(),
                    vec![tt, ("transpose_a", a_b(*ta)), ("transpose_b", a_b(*tb))],
                )
            } else {
                simple(
                    b,
                    "BatchMatMulV2",
                    x.to_vec(),
                    vec![tt, ("adj_x", a_b(*ta)), ("adj_y", a_b(*tb))],
                )
            }
        }
        Op::Conv2d(c) => {
            let (pad, explicit) = tf_padding(c.padding);
            let mut attrs = vec![
                tt.clone(),
                ("strides", a_ints(&[1, c.strides[0] as i64, c.strides[1] as i64, 1])),
                (
                    "dilations",
                    a_ints(&[1, c.dilations[0] as i64, c.dilations[1] as i64, 1]),
                ),
                ("padding", a_s(pad)),
                ("data_format", a_s("NHWC")),
            ];
            if !explicit.is_empty() {
                attrs.push(("explicit_paddings", a_ints(&explicit)));
            }
            if c.groups == 1 {
                return Ok(simple(b, "Conv2D", x.to_vec(), attrs));
            }
            // A depthwise convolution (one input channel per group) is
            // TensorFlow's DepthwiseConv2dNative, its filter [kh, kw, c, m]
            // (TF's CPU kernel takes no dilation: those go the grouped way).
            let filter = node
                .inputs
                .get(1)
                .and_then(|&v| def.values.get(v))
                .map(|d| d.shape.as_slice());
            if let Some(&[Some(kh), Some(kw), Some(1), Some(out)]) = filter
                && c.dilations == [1, 1]
                && out % c.groups == 0
            {
                let dims = [kh, kw, c.groups, out / c.groups];
                let shape = b.const_vec(&format!("{base}/depthwise_filter_shape"), &dims)?;
                let w = b.add(
                    &format!("{base}/depthwise_filter"),
                    "Reshape",
                    vec![first(1), shape],
                    vec![tt.clone(), ("Tshape", a_type(dt::INT32))],
                );
                return Ok(simple(b, "DepthwiseConv2dNative", vec![first(0), w], attrs));
            }
            // Groups (depthwise included) as TensorFlow's graph spells
            // them everywhere: the input's channels and the filter's
            // outputs split into `groups` parts, one Conv2D per part
            // (TensorFlow's CPU kernel of a grouped Conv2D needs XLA), the
            // results concatenated. Group i's outputs are channels
            // [i og, (i + 1) og), as wgflow's.
            let g = c.groups as i64;
            let axis = b.const_i32(&format!("{base}/split_dim"), &[3], &[]);
            let split = |b: &mut Builder, what: &str, v: String| {
                b.add(
                    &format!("{base}/split_{what}"),
                    "Split",
                    vec![axis.clone(), v],
                    vec![tt.clone(), ("num_split", a_i(g))],
                )
            };
            let xs = split(b, "input", first(0));
            let ws = split(b, "filter", first(1));
            let mut parts: Vec<String> = (0..g)
                .map(|i| {
                    b.add(
                        &format!("{base}/group_{i}"),
                        "Conv2D",
                        vec![format!("{xs}:{i}"), format!("{ws}:{i}")],
                        attrs.clone(),
                    )
                })
                .collect();
            parts.push(b.const_i32(&format!("{base}/concat_axis"), &[3], &[]));
            simple(
                b,
                "ConcatV2",
                parts,
                vec![tt, ("N", a_i(g)), ("Tidx", a_type(dt::INT32))],
            )
        }
        // A transposed convolution (Keras' Conv2DTranspose), as
        // `tf.nn.conv2d_transpose` writes it: the input's sizes first, then
        // the filter, then the output gradient.
        Op::Conv2dInputGrad(c, xs) => {
            if c.groups != 1 {
                return Err(unimplemented(
                    "a grouped conv2d_backprop_input".into(),
                    format!("{key}: TensorFlow's Conv2DBackpropInput takes one group"),
                ));
            }
            let (pad, explicit) = tf_padding(c.padding);
            let sizes = shape_tensor(b, &base, xs, dims, args)?;
            let mut attrs = vec![
                tt,
                ("strides", a_ints(&[1, c.strides[0] as i64, c.strides[1] as i64, 1])),
                (
                    "dilations",
                    a_ints(&[1, c.dilations[0] as i64, c.dilations[1] as i64, 1]),
                ),
                ("padding", a_s(pad)),
                ("data_format", a_s("NHWC")),
            ];
            if !explicit.is_empty() {
                attrs.push(("explicit_paddings", a_ints(&explicit)));
            }
            simple(b, "Conv2DBackpropInput", vec![sizes, first(1), first(0)], attrs)
        }
        Op::Pool(p) => {
            let (pad, explicit) = tf_padding(p.padding);
            if !explicit.is_empty() {
                return Err(unimplemented(
                    "explicit pooling padding".into(),
                    format!("{key}: TensorFlow's MaxPool and AvgPool take SAME or VALID"),
                ));
            }
            simple(
                b,
                if p.max { "MaxPool" } else { "AvgPool" },
                vec![first(0)],
                vec![
                    tt,
                    ("ksize", a_ints(&[1, p.ksize[0] as i64, p.ksize[1] as i64, 1])),
                    ("strides", a_ints(&[1, p.strides[0] as i64, p.strides[1] as i64, 1])),
                    ("padding", a_s(pad)),
                    ("data_format", a_s("NHWC")),
                ],
            )
        }
        Op::Reduce { op: r, axes, keepdims } => {
            let tf = match r {
                ReduceOp::Sum => "Sum",
                ReduceOp::Mean => "Mean",
                ReduceOp::Max => "Max",
                ReduceOp::Min => "Min",
                ReduceOp::Prod => "Prod",
                #[allow(unreachable_patterns)]
                _ => return Err(none()),
            };
            let ax = b.const_vec(&format!("{base}/reduction_indices"), axes)?;
            simple(
                b,
                tf,
                vec![first(0), ax],
                vec![tt, ("Tidx", a_type(dt::INT32)), ("keep_dims", a_b(*keepdims))],
            )
        }
        Op::ArgReduce { max, axis } => {
            let ax = b.const_i32(&format!("{base}/dimension"), &[*axis as i32], &[]);
            simple(
                b,
                if *max { "ArgMax" } else { "ArgMin" },
                vec![first(0), ax],
                vec![tt, ("Tidx", a_type(dt::INT32)), ("output_type", a_type(dt::INT32))],
            )
        }
        Op::Softmax { axis, log } => {
            let tf = if *log { "LogSoftmax" } else { "Softmax" };
            let rank = ranks.first().copied().unwrap_or(1);
            if *axis + 1 == rank {
                simple(b, tf, vec![first(0)], vec![tt])
            } else {
                // TensorFlow's kernels work on the last axis: swap it there and back.
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(*axis, rank - 1);
                let p = b.const_vec(&format!("{base}/perm"), &perm)?;
                let tr = b.add(
                    &base,
                    "Transpose",
                    vec![first(0), p.clone()],
                    vec![tt.clone(), ("Tperm", a_type(dt::INT32))],
                );
                let s = b.add(&base, tf, vec![tr], vec![tt.clone()]);
                simple(b, "Transpose", vec![s, p], vec![tt, ("Tperm", a_type(dt::INT32))])
            }
        }
        Op::SparseXent => simple(
            b,
            "SparseSoftmaxCrossEntropyWithLogits",
            x.to_vec(),
            vec![tt, ("Tlabels", a_type(dt::INT32))],
        ),
        Op::Fill { shape, value, dtype } => {
            let s = shape_tensor(b, &base, shape, dims, args)?;
            let v = b.const_scalar(&format!("{base}/value"), *value, *dtype);
            simple(
                b,
                "Fill",
                vec![s, v],
                vec![("T", a_t(*dtype)), ("index_type", a_type(dt::INT32))],
            )
        }
        Op::Pad { before, shape } => {
            let input = node.inputs.first().map_or(&[][..], |&v| def.values[v].shape.as_slice());
            let amounts = crate::function::pad_amounts(before, shape, input, dims).ok_or_else(|| {
                unimplemented(
                    "a pad of unknown size".into(),
                    format!("{key}: pad needs known amounts to export"),
                )
            })?;
            let pads: Vec<i32> = amounts.iter().flat_map(|&(b, a)| [b as i32, a as i32]).collect();
            let p = b.const_i32(&format!("{base}/paddings"), &pads, &[amounts.len(), 2]);
            simple(b, "Pad", vec![first(0), p], vec![tt, ("Tpaddings", a_type(dt::INT32))])
        }
        _ => return Err(none()),
    })
}
