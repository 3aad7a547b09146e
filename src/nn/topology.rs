//! The graph of a functional model: which layer each call runs and what
//! it takes. [`crate::nn::Functional`] makes one, Keras files carry one,
//! [`crate::nn::Sequential`] runs it.

use super::layers::Layer;
use crate::core::error::{Error, Result};
use crate::runtime::Device;
use crate::tensor::Tensor;

const OP: &str = "Functional";

/// One call of a layer in a graph (Keras' `Node`): `layer` is an index
/// into the model's layers, `None` for the input.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub layer: Option<usize>,
    pub inputs: Vec<usize>,
    /// The output's shape per example.
    pub shape: Vec<usize>,
    /// The call's own `training=` (Keras' `base(x, training=False)`), kept
    /// for Keras files. As in Keras 3, the mode the model runs in (fit
    /// trains, evaluate and predict infer) overrides it, so the graph does
    /// not read it.
    pub training: Option<bool>,
}

/// A functional model's graph: nodes in the order they were made (each
/// after its inputs), the input nodes (layer `None`) in the order the
/// model takes them, with their Keras names, and the output nodes in the
/// order it gives them.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    pub nodes: Vec<Node>,
    pub inputs: Vec<usize>,
    pub input_names: Vec<String>,
    pub outputs: Vec<usize>,
}

impl Topology {
    /// The first input's shape per example.
    pub fn input_shape(&self) -> &[usize] {
        self.inputs
            .first()
            .and_then(|&i| self.nodes.get(i))
            .map(|n| n.shape.as_slice())
            .unwrap_or(&[])
    }

    /// Every input's shape per example, in order.
    pub fn input_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs
            .iter()
            .map(|&i| self.nodes.get(i).map(|n| n.shape.clone()).unwrap_or_default())
            .collect()
    }

    /// For each node, the last node that reads it (an output: past the end).
    fn last_use(&self) -> Vec<usize> {
        let mut last = vec![0; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &j in &n.inputs {
                if let Some(l) = last.get_mut(j) {
                    *l = i;
                }
            }
        }
        for &o in &self.outputs {
            if let Some(l) = last.get_mut(o) {
                *l = usize::MAX;
            }
        }
        last
    }

    /// Runs the graph on `xs` (one tensor per input) through `layers`,
    /// each value freed after its last reader; the outputs in order.
    ///
    /// Returns [`Error::InvalidArgument`] for a count of tensors other
    /// than the inputs'.
    pub fn call(&self, layers: &mut [Box<dyn Layer>], xs: &[Tensor], training: bool) -> Result<Vec<Tensor>> {
        if xs.len() != self.inputs.len() {
            return Err(Error::arg(
                OP,
                format!(
                    "the model takes {} inputs ({}), {} given",
                    self.inputs.len(),
                    self.input_names.join(", "),
                    xs.len()
                ),
            ));
        }
        let last = self.last_use();
        let mut vals: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            let v = match n.layer {
                None => {
                    let k = self.inputs.iter().position(|&j| j == i).ok_or_else(|| missing(i))?;
                    let (x, shape) = (&xs[k], &n.shape);
                    if x.rank() != shape.len() + 1 || x.shape()[1..] != shape[..] {
                        return Err(Error::shape(
                            OP,
                            &[x.shape(), shape],
                            format!(
                                "input {} takes [batch, {}]",
                                self.input_names.get(k).map_or("?", String::as_str),
                                shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    x.clone()
                }
                Some(l) => {
                    let xs: Vec<Tensor> = n
                        .inputs
                        .iter()
                        .map(|&j| vals[j].clone().ok_or_else(|| missing(j)))
                        .collect::<Result<_>>()?;
                    let layer = layers.get_mut(l).ok_or_else(|| missing(i))?;
                    layer.call_many(&xs, training)?
                }
            };
            vals[i] = Some(v);
            for &j in &n.inputs {
                if last[j] == i {
                    vals[j] = None;
                }
            }
        }
        // An output listed twice is the same tensor twice.
        self.outputs
            .iter()
            .map(|&o| vals.get(o).and_then(Option::clone).ok_or_else(|| missing(o)))
            .collect()
    }

    /// Builds every layer from the shape of its first call.
    pub fn build(&self, layers: &mut [Box<dyn Layer>], device: &Device) -> Result<()> {
        for n in &self.nodes {
            let Some(l) = n.layer else { continue };
            let layer = layers.get_mut(l).ok_or_else(|| missing(l))?;
            if layer.built() {
                continue;
            }
            if let [j] = n.inputs[..] {
                let shape = self.nodes.get(j).ok_or_else(|| missing(j))?.shape.clone();
                layer.build(&shape, device)?;
            }
        }
        Ok(())
    }

    /// Works out each node's shape again from the input's (after layers
    /// were appended or replaced).
    pub fn refresh_shapes(&mut self, layers: &[Box<dyn Layer>]) -> Result<()> {
        for i in 0..self.nodes.len() {
            let Some(l) = self.nodes[i].layer else { continue };
            let shapes: Vec<Vec<usize>> = self.nodes[i]
                .inputs
                .iter()
                .map(|&j| self.nodes.get(j).map(|n| n.shape.clone()).ok_or_else(|| missing(j)))
                .collect::<Result<_>>()?;
            self.nodes[i].shape = layers.get(l).ok_or_else(|| missing(l))?.output_shape_many(&shapes)?;
        }
        Ok(())
    }

    /// Appends a call of `layer` on the output (`Sequential::add` on a
    /// functional model of one output).
    ///
    /// Returns [`Error::InvalidArgument`] for a model of several outputs.
    pub fn push(&mut self, layer: usize, shape: Vec<usize>) -> Result<()> {
        let &[out] = self.outputs.as_slice() else {
            return Err(Error::arg(
                OP,
                format!(
                    "a layer added to a model of {} outputs has no one output to take",
                    self.outputs.len()
                ),
            ));
        };
        self.nodes.push(Node {
            layer: Some(layer),
            inputs: vec![out],
            shape,
            training: None,
        });
        self.outputs = vec![self.nodes.len() - 1];
        Ok(())
    }

    /// The nodes of `layer`, in the order they were made (Keras' node
    /// indices of that layer).
    pub fn nodes_of(&self, layer: usize) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.layer == Some(layer))
    }

    /// Keras' reference to the output of node `i`: the layer's name (or
    /// its InputLayer's) and the node's index among that layer's nodes.
    pub fn history<'a>(&'a self, i: usize, names: &'a [String]) -> Result<(&'a str, usize)> {
        let n = self.nodes.get(i).ok_or_else(|| missing(i))?;
        match n.layer {
            None => {
                let k = self.inputs.iter().position(|&j| j == i).ok_or_else(|| missing(i))?;
                Ok((self.input_names.get(k).ok_or_else(|| missing(i))?.as_str(), 0))
            }
            Some(l) => {
                let k = self.nodes[..i].iter().filter(|m| m.layer == Some(l)).count();
                Ok((names.get(l).ok_or_else(|| missing(l))?.as_str(), k))
            }
        }
    }
}

pub(crate) fn missing(i: usize) -> Error {
    Error::arg(
        OP,
        format!("the graph refers to node or layer {i}, which does not exist"),
    )
}
