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
//! A model may take several inputs and give several outputs
//! ([`Functional::build_multi`]); such a model runs with
//! [`crate::nn::Model::call_many`] and [`crate::nn::Model::predict_many`].

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
    /// The input nodes, in the order they were made, and their names.
    inputs: Vec<(usize, String)>,
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
            inputs: Vec::new(),
        }
    }

    /// `name=`: the model's name.
    pub fn named(mut self, name: &str) -> Functional {
        self.name = name.to_string();
        self
    }

    /// `keras.Input(shape)`: an input of the model, examples of `shape`
    /// (batch excluded), named `input_layer`, `input_layer_1`, ... in the
    /// order the inputs are made, which is the order the model takes them.
    pub fn input(&mut self, shape: &[usize]) -> Result<KerasTensor> {
        let name = match self.inputs.len() {
            0 => "input_layer".to_string(),
            n => format!("input_layer_{n}"),
        };
        self.input_named(shape, &name)
    }

    /// `keras.Input(shape, name=name)`: [`Functional::input`] with a name
    /// (the model's signature names its inputs so).
    ///
    /// Returns [`Error::InvalidArgument`] for an empty name or one already
    /// given to an input.
    pub fn input_named(&mut self, shape: &[usize], name: &str) -> Result<KerasTensor> {
        if name.is_empty() || self.inputs.iter().any(|(_, n)| n == name) {
            return Err(Error::arg(OP, format!("input name {name:?} is empty or already used")));
        }
        self.nodes.push(Node {
            layer: None,
            inputs: Vec::new(),
            shape: shape.to_vec(),
            training: None,
        });
        let node = self.nodes.len() - 1;
        self.inputs.push((node, name.to_string()));
        Ok(KerasTensor {
            node,
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
        self.apply_node(layer, inputs, None)
    }

    /// [`Functional::apply`] with the call's own `training=` (Keras'
    /// `base(x, training=False)`), which Keras files keep. As in Keras 3,
    /// `fit`, `evaluate` and `predict` run every call in their own mode
    /// (keras-team/keras#20285): to keep a base's batch normalization on
    /// its moving statistics while the rest trains, freeze the base
    /// ([`crate::nn::Layer::set_trainable`]).
    ///
    /// Errors as [`Functional::apply`].
    pub fn apply_training(&mut self, layer: LayerId, inputs: &[KerasTensor], training: bool) -> Result<KerasTensor> {
        self.apply_node(layer, inputs, Some(training))
    }

    fn apply_node(&mut self, layer: LayerId, inputs: &[KerasTensor], training: Option<bool>) -> Result<KerasTensor> {
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
            training,
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

    /// `keras.Model(inputs, outputs)`: the model from every `Input` made
    /// (in the order they were made; [`Functional::build_multi`] lists
    /// them) to `output`. Layers and calls that do not lead to `output`
    /// are left out, as Keras does; `model.layers()` is in Keras' order (by
    /// depth from the input, then by first use from the output), the order
    /// of the weights in Keras files.
    ///
    /// Returns [`Error::InvalidArgument`] when the graph has no input, or
    /// two of its layers share a name (names identify layers in files).
    pub fn build(self, output: KerasTensor) -> Result<Sequential> {
        let inputs: Vec<KerasTensor> = self
            .inputs
            .iter()
            .map(|&(node, _)| KerasTensor {
                node,
                owner: self.owner,
            })
            .collect();
        self.build_multi(&inputs, &[output])
    }

    /// `keras.Model(inputs=[...], outputs=[...])`: the model from `inputs`
    /// (each made by [`Functional::input`], in the order the model takes
    /// them) to `outputs`, as [`Functional::build`].
    ///
    /// Returns [`Error::InvalidArgument`] for no inputs or outputs, an
    /// input listed twice or that is not an `Input`, an output that does
    /// not follow from the inputs, or two layers of one name.
    pub fn build_multi(self, inputs: &[KerasTensor], outputs: &[KerasTensor]) -> Result<Sequential> {
        for t in inputs.iter().chain(outputs) {
            self.shape(*t)?;
        }
        let mut named = Vec::with_capacity(inputs.len());
        for t in inputs {
            let name = self
                .inputs
                .iter()
                .find(|(n, _)| *n == t.node)
                .map(|(_, name)| name.clone())
                .ok_or_else(|| Error::arg(OP, "a model input is not an Input of the graph"))?;
            if named.iter().any(|(n, _)| *n == t.node) {
                return Err(Error::arg(OP, format!("input {name:?} is listed twice")));
            }
            named.push((t.node, name));
        }
        let name = if self.name.is_empty() {
            unique_name("functional")
        } else {
            self.name
        };
        let outs: Vec<usize> = outputs.iter().map(|t| t.node).collect();
        Ok(assemble(&name, self.layers, self.nodes, &named, &outs)?.0)
    }
}

/// The functional model of `layers` and their calls `nodes`, from the
/// input nodes `inputs` (with their names, in the model's order) to the
/// nodes `outputs`: layers put in Keras' order, calls that do not lead to
/// an output left out. Also gives, for each layer of the model, its index
/// in `layers`.
///
/// Returns [`Error::InvalidArgument`] when the graph has no input or no
/// output, an output needs an input that is not listed, or two of its
/// layers share a name (names identify layers in files).
pub(crate) fn assemble(
    name: &str,
    layers: Vec<Box<dyn Layer>>,
    all: Vec<Node>,
    inputs: &[(usize, String)],
    outputs: &[usize],
) -> Result<(Sequential, Vec<usize>)> {
    if inputs.is_empty()
        || inputs
            .iter()
            .any(|(i, _)| all.get(*i).is_none_or(|n| n.layer.is_some()))
    {
        return Err(Error::arg(OP, "the graph has no input: call Functional::input first"));
    }
    if outputs.is_empty() || outputs.iter().any(|&o| o >= all.len()) {
        return Err(Error::arg(OP, "the model has no output in the graph"));
    }
    let (mut keep, order) = keras_order(&all, outputs);
    for (i, n) in all.iter().enumerate() {
        if keep[i] && n.layer.is_none() && !inputs.iter().any(|(j, _)| *j == i) {
            return Err(Error::arg(
                OP,
                "an output depends on an Input that is not among the model's inputs",
            ));
        }
    }
    for (i, _) in inputs {
        keep[*i] = true;
    }
    let mut names = std::collections::HashSet::new();
    for (_, n) in inputs {
        if !names.insert(n.clone()) {
            return Err(Error::arg(OP, format!("two inputs are named {n:?}")));
        }
    }
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
            training: n.training,
        });
    }
    let mut slots: Vec<Option<Box<dyn Layer>>> = layers.into_iter().map(Some).collect();
    let mut kept = Vec::with_capacity(order.len());
    for &old in &order {
        kept.push(slots.get_mut(old).and_then(Option::take).ok_or_else(|| missing(old))?);
    }
    for l in &kept {
        if !names.insert(l.name().to_string()) {
            return Err(Error::arg(
                OP,
                format!(
                    "the name {:?} is used by two layers of the model: names must be unique",
                    l.name()
                ),
            ));
        }
    }
    // An input no output needs is kept (Keras keeps it too): the model
    // still takes it.
    let topo = Topology {
        inputs: inputs.iter().map(|(i, _)| node_at[*i]).collect(),
        input_names: inputs.iter().map(|(_, n)| n.clone()).collect(),
        outputs: outputs.iter().map(|&o| node_at[o]).collect(),
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
pub(crate) fn keras_order(nodes: &[Node], outputs: &[usize]) -> (Vec<bool>, Vec<usize>) {
    let n = nodes.len();
    let mut finished = vec![false; n];
    let mut post = Vec::new();
    let mut first_seen: Vec<(Option<usize>, usize)> = Vec::new();
    // An explicit stack: (node, next input to visit); the outputs walked
    // in order, as Keras' `_build_map` does.
    let mut stack: Vec<(usize, usize)> = outputs.iter().rev().map(|&o| (o, 0)).collect();
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
        assert!(matches!(f.call(Dense::new(2), &[x, x]), Err(Error::Shape { .. })));
        let z = f.call(Dense::new(5), &[x]).unwrap();
        assert!(matches!(f.call(Add::new(), &[x, z]), Err(Error::Shape { .. })));
        assert!(matches!(f.call(Concatenate::new(0), &[x, z]), Err(Error::Shape { .. })));
        let id = f.layer(Dense::new(2));
        assert!(matches!(g.apply(id, &[y]), Err(Error::InvalidArgument { .. })));
    }

    /// Several inputs and outputs: the model takes its inputs in the order
    /// `build_multi` lists them and checks each; what cannot be a model is
    /// an error.
    #[test]
    fn several_inputs_and_outputs() {
        use crate::nn::model::Model;
        use crate::runtime::Device;
        let d = Device::Cpu;
        let t = |v: Vec<f32>, s: &[usize]| crate::tensor::Tensor::from_vec(v, s, &d).unwrap();
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        let b = f.input_named(&[3], "b").unwrap();
        assert!(matches!(f.input_named(&[3], "b"), Err(Error::InvalidArgument { .. })));
        let c = f.call(Concatenate::new(-1), &[a, b]).unwrap();
        let sum = f.call(Add::new(), &[b, b]).unwrap();
        let mut m = f.build_multi(&[b, a], &[c, sum, c]).unwrap();
        assert_eq!(m.input_names(), ["b", "input_layer"]);
        let ys = m
            .call_many(&[t(vec![1.0, 2.0, 3.0], &[1, 3]), t(vec![4.0, 5.0], &[1, 2])], false)
            .unwrap();
        assert_eq!(ys.len(), 3);
        assert_eq!(ys[0].to_vec::<f32>().unwrap(), [4.0, 5.0, 1.0, 2.0, 3.0]);
        assert_eq!(ys[1].to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0]);
        assert_eq!(ys[2].to_vec::<f32>().unwrap(), ys[0].to_vec::<f32>().unwrap());
        // An output listed twice is named twice, numbered as tf.keras did.
        let names = m.output_names();
        assert_eq!(names[0].clone() + "_1", names[2], "{names:?}");
        assert_ne!(names[0], names[1]);
        // Swapped inputs, a missing one, one tensor through `call`.
        let swapped = [t(vec![4.0, 5.0], &[1, 2]), t(vec![1.0, 2.0, 3.0], &[1, 3])];
        assert!(matches!(m.call_many(&swapped, false), Err(Error::Shape { .. })));
        assert!(matches!(
            m.call_many(&swapped[..1], false),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(m.call(&swapped[0], false), Err(Error::InvalidArgument { .. })));
        assert!(m.summary().contains("b (InputLayer)"), "{}", m.summary());
        // A layer added after the outputs has no one output to take.
        m.push(Dense::new(1));
        assert!(matches!(
            m.call_many(&swapped, false),
            Err(Error::InvalidArgument { .. })
        ));

        // An output that needs an input the model does not list; an input
        // listed twice; a layer output given as an input.
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        let b = f.input(&[2]).unwrap();
        let s = f.call(Add::new(), &[a, b]).unwrap();
        assert!(matches!(f.build_multi(&[a], &[s]), Err(Error::InvalidArgument { .. })));
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        let h = f.call(Dense::new(2), &[a]).unwrap();
        assert!(matches!(
            f.build_multi(&[a, a], &[h]),
            Err(Error::InvalidArgument { .. })
        ));
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        let h = f.call(Dense::new(2), &[a]).unwrap();
        assert!(matches!(f.build_multi(&[h], &[h]), Err(Error::InvalidArgument { .. })));
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        assert!(matches!(f.build_multi(&[a], &[]), Err(Error::InvalidArgument { .. })));
        // An input no output needs stays an input of the model.
        let mut f = Functional::new();
        let a = f.input(&[2]).unwrap();
        let unused = f.input(&[4]).unwrap();
        let h = f.call(Dense::new(1), &[a]).unwrap();
        let mut m = f.build_multi(&[a, unused], &[h]).unwrap();
        let ys = m
            .call_many(&[t(vec![1.0, 2.0], &[1, 2]), t(vec![0.0; 4], &[1, 4])], false)
            .unwrap();
        assert_eq!(ys[0].shape(), &[1, 1]);
    }
}
