//! The serializable graph: what a trace recorded, as plain data.
//!
//! A [`GraphDef`] holds ops with their attributes, the shape (dimensions
//! may be unknown) and dtype of every value, and where the values that no
//! op computes come from at each call: the function's arguments, variables
//! (referred to by name), tensors captured while tracing, and host inputs
//! (values the host supplies per call, such as an optimizer's learning rate
//! and step count). It holds no device handle, no buffer and no closure, so
//! it can be stored, compared and sent between threads; SavedModel export
//! writes it.
//!
//! The executable side, [`super::Graph`], is built from a `GraphDef` and its
//! [`Bindings`] (the variables, captured tensors and host functions, and
//! the device of every value), then compiled: dead ops dropped, kernels
//! fused, memory planned. The same `GraphDef` can be compiled again.

use super::graph::HostFn;
use crate::core::dtype::DType;
use crate::core::op::Op;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// Shape and dtype of one value; `None` is a dimension unknown until a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueDef {
    /// Dimensions, `None` where unknown.
    pub shape: Vec<Option<usize>>,
    /// Element type.
    pub dtype: DType,
}

impl ValueDef {
    /// A value of fully known shape.
    pub fn known(shape: &[usize], dtype: DType) -> ValueDef {
        ValueDef {
            shape: shape.iter().map(|&d| Some(d)).collect(),
            dtype,
        }
    }

    /// The shape, when every dimension is known.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.shape.iter().copied().collect()
    }
}

/// One op of the graph: it reads `inputs` and defines `outputs` (value indices).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeDef {
    /// The op and its attributes.
    pub op: Op,
    /// Values it reads.
    pub inputs: Vec<usize>,
    /// Values it defines.
    pub outputs: Vec<usize>,
    /// Where it ran when traced (`cpu`, `gpu:0`, ...), as TensorFlow's `NodeDef.device`.
    pub device: String,
    /// The op's shape attribute (reshape's target, broadcast_to's and fill's
    /// shape, slice's size, pad's output shape) where it depends on a
    /// dimension unknown until a call; `None` where `op` holds it fully.
    pub dims: Option<Vec<Dim>>,
}

/// One entry of a shape attribute in a graph that serves several shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// The same at every call.
    Known(usize),
    /// What the element count leaves (reshape's `-1`).
    Infer,
    /// The size of dimension `axis` of argument `arg` at the call
    /// (TensorFlow's `tf.shape(x)[axis]`).
    Arg {
        /// The argument.
        arg: usize,
        /// Its dimension.
        axis: usize,
    },
}

/// The (before, after) amounts of a pad whose output is `shape` (`dims`
/// where it follows the call) and whose input is `input`, per dimension:
/// known sizes, or a dimension that follows an argument and is not padded.
/// `None` where they cannot be known when exporting.
pub(crate) fn pad_amounts(
    before: &[usize],
    shape: &[usize],
    input: &[Option<usize>],
    dims: Option<&[Dim]>,
) -> Option<Vec<(usize, usize)>> {
    if input.len() != before.len() || shape.len() != before.len() {
        return None;
    }
    (0..before.len())
        .map(|d| match dims.and_then(|ds| ds.get(d)) {
            Some(Dim::Arg { .. }) => (before[d] == 0).then_some((0, 0)),
            Some(Dim::Infer) => None,
            _ => {
                let after = shape[d].checked_sub(before[d])?.checked_sub(input[d]?)?;
                Some((before[d], after))
            }
        })
        .collect()
}

/// Where a value that no op computes comes from at each call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The i-th argument of the call.
    Arg(usize),
    /// The value of variable `i` of [`GraphDef::variables`] when the call starts.
    Variable(usize),
    /// The i-th tensor captured while tracing (a constant of this graph).
    Capture(usize),
    /// The i-th host input, recomputed by the host at every call.
    Host(usize),
}

/// A variable the graph reads or assigns, referred to by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableDef {
    /// The variable's name.
    pub name: String,
    /// Its shape and dtype.
    pub value: ValueDef,
    /// Whether gradients are taken for it.
    pub trainable: bool,
}

/// A traced graph as plain data (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphDef {
    /// Every value, by index.
    pub values: Vec<ValueDef>,
    /// The ops, in an order where each input is defined before it is read.
    pub nodes: Vec<NodeDef>,
    /// The values fed from outside the graph at each call.
    pub feeds: Vec<(usize, Feed)>,
    /// The variables read or assigned.
    pub variables: Vec<VariableDef>,
    /// Shapes and dtypes of the captured tensors ([`Feed::Capture`]).
    pub captures: Vec<ValueDef>,
    /// Shapes and dtypes of the host inputs ([`Feed::Host`]).
    pub host_inputs: Vec<ValueDef>,
    /// (variable, value): assignments made when a call ends.
    pub assigns: Vec<(usize, usize)>,
    /// The values a call returns.
    pub outputs: Vec<usize>,
}

impl GraphDef {
    /// The feeds that are arguments, in argument order: the graph's inputs.
    pub fn arguments(&self) -> Vec<usize> {
        let mut args: Vec<(usize, usize)> = self
            .feeds
            .iter()
            .filter_map(|(v, f)| match f {
                Feed::Arg(i) => Some((*i, *v)),
                _ => None,
            })
            .collect();
        args.sort();
        args.into_iter().map(|(_, v)| v).collect()
    }
}

/// What a [`GraphDef`] refers to in this process: the executable's side.
pub(crate) struct Bindings {
    /// `GraphDef::variables`' variables, by index.
    pub variables: Vec<Variable>,
    /// The captured tensors, by index.
    pub captures: Vec<Tensor>,
    /// The host inputs' functions, by index (taken by the executable).
    pub hosts: Vec<Option<HostFn>>,
    /// The device of every value.
    pub devices: Vec<Device>,
}
