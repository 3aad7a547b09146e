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
}

/// A functional model's graph: nodes in the order they were made (each
/// after its inputs; node 0 the input) and the output node.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    pub nodes: Vec<Node>,
    pub output: usize,
}

impl Topology {
    /// The input's shape per example.
    pub fn input_shape(&self) -> &[usize] {
        self.nodes.first().map(|n| n.shape.as_slice()).unwrap_or(&[])
    }

    /// For each node, the last node that reads it (the output: past the end).
    fn last_use(&self) -> Vec<usize> {
        let mut last = vec![0; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &j in &n.inputs {
                last[j] = i;
            }
        }
        if let Some(l) = last.get_mut(self.output) {
            *l = usize::MAX;
        }
        last
    }

    /// Runs the graph on `x` through `layers`, each value freed after its
    /// last reader.
    pub fn call(&self, layers: &mut [Box<dyn Layer>], x: &Tensor, training: bool) -> Result<Tensor> {
        let last = self.last_use();
        let mut vals: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            let v = match n.layer {
                None => x.clone(),
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
        vals.get_mut(self.output)
            .and_then(Option::take)
            .ok_or_else(|| missing(self.output))
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
    /// functional model).
    pub fn push(&mut self, layer: usize, shape: Vec<usize>) {
        self.nodes.push(Node {
            layer: Some(layer),
            inputs: vec![self.output],
            shape,
        });
        self.output = self.nodes.len() - 1;
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
    /// `input`'s) and the node's index among that layer's nodes.
    pub fn history<'a>(&self, i: usize, names: &'a [String], input: &'a str) -> Result<(&'a str, usize)> {
        let n = self.nodes.get(i).ok_or_else(|| missing(i))?;
        match n.layer {
            None => Ok((input, 0)),
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
