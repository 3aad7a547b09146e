//! A function's compute precision changed after tracing (TF-TRT's
//! `precision_mode='FP16'`): every f32 value the graph computes becomes
//! f16 (or bf16), its f32 inputs, variables and constants are cast to it
//! where they enter, and its outputs are cast back to f32, so callers see
//! the same signature. Matmuls and convolutions of f16 operands accumulate
//! in f32; on an adapter without `SHADER_F16` the f16 kernels compute in
//! f32 and round to f16, and bf16 ops compute in f32 and round on every
//! device.

use super::def::{Feed, GraphDef, NodeDef, ValueDef};
use super::symbolic::ConcreteFunction;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;

impl ConcreteFunction {
    /// The function computing in `dtype` (`F16`, `BF16`, or `F32` for itself);
    /// inputs and outputs keep their dtypes. Functions that assign
    /// variables (training steps) are refused.
    pub fn with_compute_dtype(&self, dtype: DType) -> Result<ConcreteFunction> {
        let def = match dtype {
            DType::F32 => self.def().clone(),
            DType::F16 | DType::BF16 => to_half(self.def(), self.name(), dtype)?,
            d => {
                return Err(Error::arg(
                    "with_compute_dtype",
                    format!("{d}: a function computes in f16, bf16 or f32"),
                ));
            }
        };
        ConcreteFunction::from_def(
            self.name(),
            def,
            self.inputs().to_vec(),
            self.output_names().to_vec(),
            self.variables().to_vec(),
            self.captures().to_vec(),
            self.device(),
        )
    }
}

fn cast_node(from: usize, to: usize, dtype: DType) -> NodeDef {
    NodeDef {
        op: Op::Cast(dtype),
        inputs: vec![from],
        outputs: vec![to],
        device: String::new(),
        dims: None,
    }
}

/// `src` computing in `half` (F16 or BF16) where it computed in f32.
fn to_half(src: &GraphDef, name: &str, half: DType) -> Result<GraphDef> {
    if !src.assigns.is_empty() {
        return Err(Error::arg(
            "with_compute_dtype",
            format!("{name} assigns variables: only inference functions change precision"),
        ));
    }
    // The int8 kernels take and give f32 whatever the graph around them.
    if let Some(n) = src
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::MatMulInt8 | Op::Conv2dInt8(..) | Op::DequantizeInt8 { .. }))
    {
        return Err(Error::arg(
            "with_compute_dtype",
            format!(
                "{name} has int8 weights ({}): convert the f32 function to {half} instead",
                n.op.name()
            ),
        ));
    }
    let mut def = src.clone();
    let fed: Vec<usize> = def.feeds.iter().map(|(v, _)| *v).collect();
    for (i, v) in def.values.iter_mut().enumerate() {
        if v.dtype == DType::F32 && !fed.contains(&i) {
            v.dtype = half;
        }
    }
    // Every f32 feed enters through a cast.
    let mut remap: Vec<usize> = (0..def.values.len()).collect();
    let mut nodes = Vec::with_capacity(def.nodes.len() + fed.len() + def.outputs.len());
    for (v, feed) in &src.feeds {
        let Some(val) = src.values.get(*v) else { continue };
        if val.dtype != DType::F32 || matches!(feed, Feed::Host(_)) {
            continue;
        }
        let h = def.values.len();
        def.values.push(ValueDef {
            shape: val.shape.clone(),
            dtype: half,
        });
        nodes.push(cast_node(*v, h, half));
        remap[*v] = h;
    }
    for n in &src.nodes {
        let mut n = n.clone();
        for i in n.inputs.iter_mut() {
            *i = remap.get(*i).copied().unwrap_or(*i);
        }
        let out_half = n.outputs.first().and_then(|&o| def.values.get(o)).map(|v| v.dtype) == Some(half);
        match &mut n.op {
            Op::Cast(d) | Op::Fill { dtype: d, .. } | Op::OneHot { dtype: d, .. } if *d == DType::F32 && out_half => {
                *d = half;
            }
            Op::Random(r) if r.dtype == DType::F32 && out_half => r.dtype = half,
            _ => {}
        }
        nodes.push(n);
    }
    let mut outputs = Vec::with_capacity(def.outputs.len());
    for &o in &src.outputs {
        let o = remap.get(o).copied().unwrap_or(o);
        let Some(val) = def.values.get(o).cloned() else {
            return Err(Error::arg(
                "with_compute_dtype",
                format!("{name}: an output out of range"),
            ));
        };
        if val.dtype == half && src.values.get(o).is_none_or(|v| v.dtype == DType::F32) {
            let f = def.values.len();
            def.values.push(ValueDef {
                shape: val.shape.clone(),
                dtype: DType::F32,
            });
            nodes.push(cast_node(o, f, DType::F32));
            outputs.push(f);
        } else {
            outputs.push(o);
        }
    }
    def.nodes = nodes;
    def.outputs = outputs;
    Ok(def)
}

impl ConcreteFunction {
    /// The function with the weights of its matmuls and convolutions of at
    /// least `min_elements` values stored as int8 (symmetric per output
    /// channel, scale max|w|/127, packed four to an i32 word) and
    /// dequantized where they are read (`Op::DequantizeInt8`): the
    /// weights' memory drops about 4x. Weights read by anything else stay
    /// f32. Compiling the function fuses each dequantization into the
    /// matmul or convolution reading it (`Op::MatMulInt8`,
    /// `Op::Conv2dInt8`), so the f32 weights never exist on the device.
    pub fn with_int8_weights(&self, min_elements: usize) -> Result<ConcreteFunction> {
        let src = self.def();
        if !src.assigns.is_empty() {
            return Err(Error::arg(
                "with_int8_weights",
                format!(
                    "{} assigns variables: only inference functions are quantized",
                    self.name()
                ),
            ));
        }
        let mut uses = vec![0usize; src.values.len()];
        for n in &src.nodes {
            for &v in &n.inputs {
                if let Some(u) = uses.get_mut(v) {
                    *u += 1;
                }
            }
        }
        for &v in &src.outputs {
            if let Some(u) = uses.get_mut(v) {
                *u += 1;
            }
        }
        let var_of = |v: usize| {
            src.feeds.iter().find_map(|(fv, f)| match f {
                Feed::Variable(i) if *fv == v => Some(*i),
                _ => None,
            })
        };
        let mut def = src.clone();
        let mut variables = self.variables().to_vec();
        let mut removed = vec![false; variables.len()];
        let mut pre = Vec::new();
        for (k, n) in src.nodes.iter().enumerate() {
            let conv = matches!(n.op, Op::Conv2d(_));
            let tb = match n.op {
                Op::MatMul { ta: false, tb } => tb,
                Op::Conv2d(_) => false,
                _ => continue,
            };
            let Some(&w) = n.inputs.get(1) else { continue };
            let Some(vi) = var_of(w) else { continue };
            let shape = src.values[w].shape.clone();
            let dims: Option<Vec<usize>> = shape.iter().copied().collect();
            let Some(dims) = dims else { continue };
            let numel: usize = dims.iter().product();
            let rank_ok = if conv { dims.len() == 4 } else { dims.len() == 2 };
            if !rank_ok
                || numel < min_elements.max(1)
                || uses[w] != 1
                || removed[vi]
                || src.values[w].dtype != DType::F32
            {
                continue;
            }
            let var = &variables[vi];
            // Rows are output channels: [N, K] for matmuls, [O, H*W*I] for HWIO filters.
            let t = var.value();
            let rows_t = if conv {
                t.transpose(&[3, 0, 1, 2])?
            } else if tb {
                t
            } else {
                t.transpose(&[1, 0])?
            };
            let (rows, cols) = (rows_t.shape()[0], numel / rows_t.shape()[0].max(1));
            let data = rows_t.to_f64_vec()?;
            let mut q = Vec::with_capacity(data.len());
            let mut scales = Vec::with_capacity(rows);
            for r in data.chunks(cols.max(1)) {
                let max = r.iter().fold(0.0f64, |m, &x| m.max(x.abs()));
                let s = if max > 0.0 && max.is_finite() { max / 127.0 } else { 1.0 };
                scales.push(s as f32);
                q.extend(r.iter().map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8));
            }
            let device = var.device();
            let packed = crate::ops::layout::pack_int8(&q, rows, cols)?;
            let packed = crate::tensor::Tensor::from_vec(packed, &[rows, cols.div_ceil(4)], &device)?;
            let scales = crate::tensor::Tensor::from_vec(scales, &[rows], &device)?;
            let base = var.name().to_string();
            removed[vi] = true;
            let mut feed = |t: crate::tensor::Tensor, name: String, def: &mut GraphDef| -> usize {
                let value = ValueDef {
                    shape: t.shape().iter().map(|&d| Some(d)).collect(),
                    dtype: t.dtype(),
                };
                let v = def.values.len();
                def.values.push(value.clone());
                def.feeds.push((v, Feed::Variable(def.variables.len())));
                def.variables.push(super::def::VariableDef {
                    name: name.clone(),
                    value,
                    trainable: false,
                });
                variables.push(crate::tensor::Variable::with_trainable(t, &name, false));
                v
            };
            let pv = feed(packed, format!("{base}/int8"), &mut def);
            let sv = feed(scales, format!("{base}/scale"), &mut def);
            let node = |op: Op, inputs: Vec<usize>, out: usize| NodeDef {
                op,
                inputs,
                outputs: vec![out],
                device: n.device.clone(),
                dims: None,
            };
            let fresh = |shape: Vec<usize>, def: &mut GraphDef| -> usize {
                def.values.push(ValueDef {
                    shape: shape.into_iter().map(Some).collect(),
                    dtype: DType::F32,
                });
                def.values.len() - 1
            };
            if conv {
                let d = fresh(vec![rows, cols], &mut def);
                pre.push(node(Op::DequantizeInt8 { cols }, vec![pv, sv], d));
                let o = [dims[3], dims[0], dims[1], dims[2]];
                let r = fresh(o.to_vec(), &mut def);
                pre.push(node(Op::Reshape(o.to_vec()), vec![d], r));
                pre.push(node(Op::Permute(vec![1, 2, 3, 0]), vec![r], w));
            } else {
                def.values[w].shape = vec![Some(rows), Some(cols)];
                pre.push(node(Op::DequantizeInt8 { cols }, vec![pv, sv], w));
                if let Op::MatMul { tb, .. } = &mut def.nodes[k].op {
                    *tb = true;
                }
            }
        }
        if pre.is_empty() {
            return ConcreteFunction::from_def(
                self.name(),
                def,
                self.inputs().to_vec(),
                self.output_names().to_vec(),
                variables,
                self.captures().to_vec(),
                self.device(),
            );
        }
        // Drop the f32 variables that were replaced, renumbering the feeds.
        let mut index = vec![None; def.variables.len()];
        let mut kept_defs = Vec::new();
        let mut kept_vars = Vec::new();
        for (i, (vd, v)) in def.variables.iter().zip(&variables).enumerate() {
            if removed.get(i).copied().unwrap_or(false) {
                continue;
            }
            index[i] = Some(kept_defs.len());
            kept_defs.push(vd.clone());
            kept_vars.push(v.clone());
        }
        def.feeds
            .retain(|(_, f)| !matches!(f, Feed::Variable(i) if removed.get(*i).copied().unwrap_or(false)));
        for (_, f) in def.feeds.iter_mut() {
            if let Feed::Variable(i) = f {
                *i = index[*i].unwrap_or(*i);
            }
        }
        def.variables = kept_defs;
        pre.append(&mut def.nodes);
        def.nodes = pre;
        ConcreteFunction::from_def(
            self.name(),
            def,
            self.inputs().to_vec(),
            self.output_names().to_vec(),
            kept_vars,
            self.captures().to_vec(),
            self.device(),
        )
    }
}
