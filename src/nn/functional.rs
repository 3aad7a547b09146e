//! Functional models (Keras' `keras.Model(inputs, outputs)`): layers called
//! on symbolic tensors, with branches, merges ([`crate::nn::layers::Merge`])
//! and shared layers. [`Functional`] records the calls; `build` gives a
//! [`Sequential`] that runs the graph (Keras 3's `Sequential` is itself a
//! functional model), so `compile`, `fit`, `save`, `export` and the
//! converters take it like any other model.
//!
//! ```
//! use wgflow::nn::layers::{Add, Dense};
//! use wgflow::nn::{Activation, Functional, Model};
//! let mut f = Functional::new();
//! let x = f.input(&[8])?;
//! let h = f.call(Dense::new(8).activation(Activation::Relu), &[x])?;
//! let r = f.call(Add::new(), &[x, h])?; // a residual connection
//! let y = f.call(Dense::new(2), &[r])?;
//! let mut model = f.build(y)?;
//! let out = model.call(&wgflow::Tensor::zeros(&[4, 8], wgflow::DType::F32, &wgflow::Device::Cpu)?, false)?;
//! assert_eq!(out.shape(), &[4, 2]);
//! # Ok::<(), wgflow::Error>(())
//! ```
//!
//! One input and one output: a model of several is an `Unimplemented`
//! error, as [`crate::nn::Model::call`] takes one tensor.

use super::layers::{Layer, unique_name};
use super::model::Sequential;
use super::topology::{Node, Topology, missing};
use crate::core::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

const OP: &str = "Functional";

/// A symbolic tensor of a [`Functional`] graph (Keras' `KerasTensor`):
/// what a call returns and the next call takes. Its shape per example is
/// [`Functional::shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KerasTensor {
    node: usize,
    owner: u64,
}

/// A layer added to a [`Functional`] graph, to call once or several times
/// (a shared layer: one set of weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerId {
    index: usize,
    owner: u64,
}

/// Keras' functional API: `Input`, layers called on its tensors, then
/// `keras.Model(inputs, outputs)` ([`Functional::build`]).
pub struct Functional {
    name: String,
    owner: u64,
    layers: Vec<Box<dyn Layer>>,
    nodes: Vec<Node>,
}

impl Default for Functional {
    fn default() -> Self {
        Self::new()
    }
}

impl Functional {
    /// An empty graph; the model it builds is named `functional`,
    /// `functional_1`, ... as in Keras.
    pub fn new() -> Functional {
        static OWNERS: AtomicU64 = AtomicU64::new(1);
        Functional {
            name: String::new(),
            owner: OWNERS.fetch_add(1, Ordering::Relaxed),
            layers: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// `name=`: the model's name.
    pub fn named(mut self, name: &str) -> Functional {
        self.name = name.to_string();
        self
    }

    /// `keras.Input(shape)`: the model's input, examples of `shape` (batch
    /// excluded).
    ///
    /// Returns [`Error::Unimplemented`] for a second input.
    pub fn input(&mut self, shape: &[usize]) -> Result<KerasTensor> {
        if !self.nodes.is_empty() {
            return Err(Error::Unimplemented {
                what: "a functional model with several inputs".into(),
                msg: "wgflow's models take one input tensor".into(),
            });
        }
        self.nodes.push(Node {
            layer: None,
            inputs: Vec::new(),
            shape: shape.to_vec(),
        });
        Ok(KerasTensor {
            node: 0,
            owner: self.owner,
        })
    }

    /// Adds `layer` to the graph without calling it; call it (once, or
    /// again to share its weights) with [`Functional::apply`].
    pub fn layer(&mut self, layer: impl Layer + 'static) -> LayerId {
        self.add_boxed(Box::new(layer))
    }

    /// [`Functional::layer`] for a boxed layer.
    pub fn add_boxed(&mut self, layer: Box<dyn Layer>) -> LayerId {
        self.layers.push(layer);
        LayerId {
            index: self.layers.len() - 1,
            owner: self.owner,
        }
    }

    /// Calls a layer of the graph on `inputs` (one, or a list for a merge
    /// layer): `y = layer(x)`.
    ///
    /// Returns [`Error::Shape`] when the layer cannot take inputs of those
    /// shapes, [`Error::InvalidArgument`] for a tensor or layer of another
    /// graph.
    pub fn apply(&mut self, layer: LayerId, inputs: &[KerasTensor]) -> Result<KerasTensor> {
        if layer.owner != self.owner || layer.index >= self.layers.len() {
            return Err(Error::arg(OP, "the layer was added to another Functional graph"));
        }
        let mut shapes = Vec::with_capacity(inputs.len());
        for t in inputs {
            shapes.push(self.shape(*t)?.to_vec());
        }
        let shape = self.layers[layer.index].output_shape_many(&shapes)?;
        self.nodes.push(Node {
            layer: Some(layer.index),
            inputs: inputs.iter().map(|t| t.node).collect(),
            shape,
        });
        Ok(KerasTensor {
            node: self.nodes.len() - 1,
            owner: self.owner,
        })
    }

    /// Adds `layer` and calls it on `inputs`: `y = Dense(8)(x)`.
    pub fn call(&mut self, layer: impl Layer + 'static, inputs: &[KerasTensor]) -> Result<KerasTensor> {
        let id = self.layer(layer);
        self.apply(id, inputs)
    }

    /// The shape of `t` per example (batch excluded).
    ///
    /// Returns [`Error::InvalidArgument`] for a tensor of another graph.
    pub fn shape(&self, t: KerasTensor) -> Result<&[usize]> {
        if t.owner != self.owner {
            return Err(Error::arg(OP, "the tensor belongs to another Functional graph"));
        }
        self.nodes
            .get(t.node)
            .map(|n| n.shape.as_slice())
            .ok_or_else(|| missing(t.node))
    }

    /// `keras.Model(inputs, outputs)`: the model from the input to
    /// `output`. Layers and calls that do not lead to `output` are left
    /// out, as Keras does; `model.layers()` is in Keras' order (by depth
    /// from the input, then by first use from the output), the order of
    /// the weights in Keras files.
    ///
    /// Returns [`Error::InvalidArgument`] when the graph has no input, or
    /// two of its layers share a name (names identify layers in files).
    pub fn build(self, output: KerasTensor) -> Result<Sequential> {
        self.shape(output)?;
        let name = if self.name.is_empty() {
            unique_name("functional")
        } else {
            self.name
        };
        Ok(assemble(&name, self.layers, self.nodes, output.node)?.0)
    }
}

/// The functional model of `layers` and their calls `nodes` (node 0 the
/// input), from the input to node `output`: layers put in Keras' order,
/// calls that do not lead to the output left out. Also gives, for each
/// layer of the model, its index in `layers`.
///
/// Returns [`Error::InvalidArgument`] when the graph has no input, or two
/// of its layers share a name (names identify layers in files).
pub(crate) fn assemble(
    name: &str,
    layers: Vec<Box<dyn Layer>>,
    all: Vec<Node>,
    output: usize,
) -> Result<(Sequential, Vec<usize>)> {
    if all.first().is_none_or(|n| n.layer.is_some()) || output >= all.len() {
        return Err(Error::arg(OP, "the graph has no input: call Functional::input first"));
    }
    let (keep, order) = keras_order(&all, output);
    // New indices: kept nodes in the order they were made, layers in
    // Keras' order.
    let mut node_at = vec![usize::MAX; all.len()];
    let mut nodes = Vec::new();
    let mut layer_at = vec![usize::MAX; layers.len()];
    for (new, &old) in order.iter().enumerate() {
        if let Some(slot) = layer_at.get_mut(old) {
            *slot = new;
        }
    }
    for (i, n) in all.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        node_at[i] = nodes.len();
        nodes.push(Node {
            layer: n.layer.map(|l| layer_at.get(l).copied().unwrap_or(usize::MAX)),
            inputs: n
                .inputs
                .iter()
                .map(|&j| node_at.get(j).copied().unwrap_or(usize::MAX))
                .collect(),
            shape: n.shape.clone(),
        });
    }
    let mut slots: Vec<Option<Box<dyn Layer>>> = layers.into_iter().map(Some).collect();
    let mut kept = Vec::with_capacity(order.len());
    for &old in &order {
        kept.push(slots.get_mut(old).and_then(Option::take).ok_or_else(|| missing(old))?);
    }
    let mut names = std::collections::HashSet::new();
    for l in &kept {
        if !names.insert(l.name().to_string()) || l.name() == "input_layer" {
            return Err(Error::arg(
                OP,
                format!(
                    "the name {:?} is used by two layers of the model: names must be unique",
                    l.name()
                ),
            ));
        }
    }
    let topo = Topology {
        output: node_at[output],
        nodes,
    };
    Ok((Sequential::from_topology(name, kept, topo), order))
}

/// Which nodes lead to `output`, and the order of the layers among them as
/// Keras' `map_graph` gives it: by depth from the output (deepest, nearest
/// the input, first), ties by the order a depth-first walk from the output
/// first meets each layer. Keras numbers a file's weight groups in this
/// order, so a model written here loads in Keras with each weight in
/// place.
pub(crate) fn keras_order(nodes: &[Node], output: usize) -> (Vec<bool>, Vec<usize>) {
    let n = nodes.len();
    let mut finished = vec![false; n];
    let mut post = Vec::new();
    let mut first_seen: Vec<(Option<usize>, usize)> = Vec::new();
    // An explicit stack: (node, next input to visit).
    let mut stack = vec![(output, 0usize)];
    while let Some(top) = stack.len().checked_sub(1) {
        let (i, next) = stack[top];
        if next == 0 {
            if finished[i] {
                stack.pop();
                continue;
            }
            let op = nodes[i].layer;
            if !first_seen.iter().any(|(o, _)| *o == op) {
                first_seen.push((op, first_seen.len()));
            }
        }
        if let Some(&j) = nodes[i].inputs.get(next) {
            stack[top].1 += 1;
            if !finished[j] {
                stack.push((j, 0));
            }
        } else {
            finished[i] = true;
            post.push(i);
            stack.pop();
        }
    }
    let mut node_depth: Vec<Option<usize>> = vec![None; n];
    let mut op_depth: Vec<(Option<usize>, usize)> = Vec::new();
    for &i in post.iter().rev() {
        let op = nodes[i].layer;
        let prev = op_depth.iter().find(|(o, _)| *o == op).map(|(_, d)| *d);
        let depth = node_depth[i].unwrap_or(0).max(prev.unwrap_or(0));
        match op_depth.iter_mut().find(|(o, _)| *o == op) {
            Some(e) => e.1 = depth,
            None => op_depth.push((op, depth)),
        }
        node_depth[i] = Some(depth);
        for &j in &nodes[i].inputs {
            node_depth[j] = Some(node_depth[j].unwrap_or(0).max(depth + 1));
        }
    }
    let index_of = |op: Option<usize>| {
        first_seen
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(usize::MAX, |(_, k)| *k)
    };
    let mut layers: Vec<(usize, usize, usize)> = op_depth
        .iter()
        .filter_map(|&(op, d)| op.map(|l| (d, index_of(op), l)))
        .collect();
    layers.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    (finished, layers.into_iter().map(|(_, _, l)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::layers::{Add, Concatenate, Dense};

    #[test]
    fn order_follows_keras_map_graph() {
        // The graph of tests/python/keras_files.py's "graph" model's core:
        // dense -> shared(dense_1) twice, add(dense, a, b), concat(add, in).
        let mut f = Functional::new();
        let x = f.input(&[6]).unwrap();
        let h = f.call(Dense::new(8), &[x]).unwrap();
        let shared = f.layer(Dense::new(8));
        let a = f.apply(shared, &[h]).unwrap();
        let b = f.apply(shared, &[a]).unwrap();
        let unused = f.call(Dense::new(3), &[h]).unwrap();
        let s = f.call(Add::new(), &[h, a, b]).unwrap();
        let c = f.call(Concatenate::new(-1), &[s, x]).unwrap();
        let y = f.call(Dense::new(3), &[c]).unwrap();
        assert_eq!(f.shape(c).unwrap(), &[14]);
        assert_eq!(f.shape(unused).unwrap(), &[3]);
        let m = f.build(y).unwrap();
        let kinds: Vec<&str> = m.layers().iter().map(|l| l.kind()).collect();
        // Keras: input_layer, dense, dense_1 (shared), add, concatenate, dense_2.
        assert_eq!(kinds, ["Dense", "Dense", "Add", "Concatenate", "Dense"]);
        let t = m.topology().unwrap();
        assert_eq!(t.nodes.len(), 7, "the unused Dense's node is dropped");
        assert_eq!(t.nodes_of(1).count(), 2, "the shared layer has two nodes");
    }

    #[test]
    fn graphs_check_their_tensors() {
        let mut f = Functional::new();
        let mut g = Functional::new();
        let x = f.input(&[4]).unwrap();
        let y = g.input(&[4]).unwrap();
        assert!(matches!(
            f.call(Dense::new(2), &[y]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(f.input(&[3]), Err(Error::Unimplemented { .. })));
        assert!(matches!(f.call(Dense::new(2), &[x, x]), Err(Error::Shape { .. })));
        let z = f.call(Dense::new(5), &[x]).unwrap();
        assert!(matches!(f.call(Add::new(), &[x, z]), Err(Error::Shape { .. })));
        assert!(matches!(f.call(Concatenate::new(0), &[x, z]), Err(Error::Shape { .. })));
        let id = f.layer(Dense::new(2));
        assert!(matches!(g.apply(id, &[y]), Err(Error::InvalidArgument { .. })));
    }
}
