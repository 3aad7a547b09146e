//! A function's compute precision changed after tracing (TF-TRT's
//! `precision_mode='FP16'`): every f32 value the graph computes becomes
//! f16, its f32 inputs, variables and constants are cast to f16 where they
//! enter, and its outputs are cast back to f32, so callers see the same
//! signature. Matmuls and convolutions of f16 operands accumulate in f32;
//! on an adapter without `SHADER_F16` the f16 kernels compute in f32 and
//! round to f16.

use super::def::{Feed, GraphDef, NodeDef, ValueDef};
use super::symbolic::ConcreteFunction;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;

impl ConcreteFunction {
    /// The function computing in `dtype` (`F16`, or `F32` for itself);
    /// inputs and outputs keep their dtypes. Functions that assign
    /// variables (training steps) are refused.
    pub fn with_compute_dtype(&self, dtype: DType) -> Result<ConcreteFunction> {
        let def = match dtype {
            DType::F32 => self.def().clone(),
            DType::F16 => to_half(self.def(), self.name())?,
            d => {
                return Err(Error::arg(
                    "with_compute_dtype",
                    format!("{d}: a function computes in f16 or f32"),
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

fn to_half(src: &GraphDef, name: &str) -> Result<GraphDef> {
    if !src.assigns.is_empty() {
        return Err(Error::arg(
            "with_compute_dtype",
            format!("{name} assigns variables: only inference functions change precision"),
        ));
    }
    let mut def = src.clone();
    let fed: Vec<usize> = def.feeds.iter().map(|(v, _)| *v).collect();
    for (i, v) in def.values.iter_mut().enumerate() {
        if v.dtype == DType::F32 && !fed.contains(&i) {
            v.dtype = DType::F16;
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
            dtype: DType::F16,
        });
        nodes.push(cast_node(*v, h, DType::F16));
        remap[*v] = h;
    }
    for n in &src.nodes {
        let mut n = n.clone();
        for i in n.inputs.iter_mut() {
            *i = remap.get(*i).copied().unwrap_or(*i);
        }
        let out_half = n.outputs.first().and_then(|&o| def.values.get(o)).map(|v| v.dtype) == Some(DType::F16);
        match &mut n.op {
            Op::Cast(d) | Op::Fill { dtype: d, .. } | Op::OneHot { dtype: d, .. } if *d == DType::F32 && out_half => {
                *d = DType::F16;
            }
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
        if val.dtype == DType::F16 && src.values.get(o).is_none_or(|v| v.dtype == DType::F32) {
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
