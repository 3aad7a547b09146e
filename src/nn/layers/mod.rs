//! Keras layers (`keras.layers`). A layer creates its weights on the first
//! call (or `build`), from the shape of one example (the batch dimension
//! excluded), on the device of its input. Images are NHWC and convolution
//! kernels HWIO, TF's `channels_last` defaults.
//!
//! Layers are stacked by [`crate::nn::model::Sequential`] or called from a
//! custom [`crate::nn::model::Model`]; weights start from
//! [`crate::nn::initializers`] and pass through
//! [`crate::nn::activations`]. Their forward passes are ops of
//! [`crate::ops`] (e.g. [`crate::ops::conv::conv2d`]), so gradients come from
//! [`crate::autodiff`] without a per-layer backward pass. Weight names
//! ("dense/kernel") are Keras-style; checkpoints ([`crate::io::checkpoint`])
//! use the model's structural paths instead.

use super::activations::Activation;
use super::initializers::{Initializer, next_seed};
use super::mixed_precision::{Policy, global_policy};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::conv::Padding;
use crate::ops::{self, conv, pool};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use std::collections::HashMap;
use std::sync::Mutex;

mod augment;
mod merge;
mod norm;
mod op;
mod recurrent;
mod sequence;
mod spatial;
mod transpose;
pub use augment::{FlipMode, Geometric, RandomBrightness, RandomContrast, RandomFlip, RandomGeometric};
pub use merge::{Add, Average, Concatenate, Maximum, Merge, MergeOp, Minimum, Multiply, Subtract};
pub use norm::{GroupNormalization, LayerNormalization, LayerScale, Normalization, RMSNormalization};
pub use op::{OpLayer, Operand, TensorOp, Unary};
pub use recurrent::{Bidirectional, Cell, GRU, LSTM, MergeMode, Recurrent, SimpleRNN};
pub use sequence::{AveragePooling1D, Conv1D, Embedding, MaxPooling1D, Padding1D, Pooling1D};
pub use spatial::{CenterCrop, Cropping2D, Resizing, UpSampling2D};
pub use transpose::Conv2DTranspose;

/// Keras-style unique names: "dense", "dense_1", ... Counted per base name
/// for the whole process, as Keras' global name scope.
pub fn unique_name(base: &str) -> String {
    static_counts(|counts| {
        let n = counts.entry(base.to_string()).or_insert(0);
        let name = if *n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        name
    })
}

/// The process-wide name counters of [`unique_name`].
fn static_counts<T>(f: impl FnOnce(&mut HashMap<String, usize>) -> T) -> T {
    static COUNTS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    let mut g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Marks `name` (a layer name read from a file: `dense_7`) as taken, so
/// that [`unique_name`] does not give it again in this process.
pub(crate) fn reserve_name(name: &str) {
    let (base, next) = match name.rsplit_once('_') {
        Some((b, d)) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => match d.parse::<usize>() {
            Ok(n) => (b, n.saturating_add(1)),
            Err(_) => return,
        },
        _ => (name, 1),
    };
    static_counts(|counts| {
        let n = counts.entry(base.to_string()).or_insert(0);
        *n = (*n).max(next);
    });
}

/// `keras.layers.Layer`: a callable with lazily created weights. Implement
/// it to write a custom layer; `Send` so a model can move between threads.
pub trait Layer: Send {
    /// The unique instance name ("dense_1"), the prefix of its weights' names.
    fn name(&self) -> &str;
    /// Renames the layer; before `build`, its weights take the new name
    /// (how a Keras file's layers keep theirs). A layer that does not
    /// implement it (a custom one) keeps its name.
    fn set_name(&mut self, _name: &str) {}
    /// The Keras class name, for `summary()`.
    fn kind(&self) -> &'static str;
    /// Creates the weights for examples of `input_shape` (batch excluded);
    /// a layer without weights has nothing to build.
    ///
    /// Returns [`Error::Shape`] when the layer cannot take such examples.
    fn build(&mut self, _input_shape: &[usize], _device: &Device) -> Result<()> {
        Ok(())
    }
    /// Whether the weights exist (always true for a layer without weights).
    fn built(&self) -> bool {
        true
    }
    /// Output shape of one example for an example of `input_shape`.
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>>;
    /// The forward pass on a batch `x` (batch first), building the layer
    /// from it first if needed. `training` is Keras' `training=` argument:
    /// it switches dropout on and batch normalization to batch statistics.
    ///
    /// Returns [`Error::Shape`] when `x` does not fit the layer (or no
    /// longer fits the shape it was built for).
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor>;
    /// The forward pass on a list of inputs, as a functional model calls a
    /// layer: merge layers ([`Merge`]) take several, every other layer
    /// exactly one (its [`Layer::call`]).
    ///
    /// Returns [`Error::Shape`] for a count of inputs the layer cannot take.
    fn call_many(&mut self, xs: &[Tensor], training: bool) -> Result<Tensor> {
        match xs {
            [x] => self.call(x, training),
            _ => Err(Error::shape(
                "Layer",
                &xs.iter().map(|x| x.shape()).collect::<Vec<_>>(),
                format!(
                    "layer {} ({}) takes one input, {} given",
                    self.name(),
                    self.kind(),
                    xs.len()
                ),
            )),
        }
    }
    /// Whether the layer takes a list of inputs (a merge layer), which
    /// Keras files write as a list even when it holds one tensor.
    fn takes_list(&self) -> bool {
        false
    }
    /// [`Layer::output_shape`] for a list of inputs (see [`Layer::call_many`]).
    fn output_shape_many(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        match shapes {
            [s] => self.output_shape(s),
            _ => Err(Error::shape(
                "Layer",
                &shapes.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                format!(
                    "layer {} ({}) takes one input, {} given",
                    self.name(),
                    self.kind(),
                    shapes.len()
                ),
            )),
        }
    }
    /// Where a `.keras` file keeps the layer's weights inside its group, in
    /// the order of [`Layer::weights`]: (path, count) runs, `[("vars",
    /// n)]` for most layers, `cell/vars` for a recurrent layer (Keras saves
    /// its cell), one run per direction for a bidirectional one.
    fn keras_var_groups(&self) -> Vec<(&'static str, usize)> {
        vec![("vars", self.weights().len())]
    }
    /// Weights with their short names ("kernel", "bias", "moving_mean", ...).
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        Vec::new()
    }
    /// Weights with paths unique within the layer: the short names, or
    /// for a layer made of layers ([`crate::nn::ModelLayer`]) each inner
    /// layer's name and short name (`conv2d/kernel`).
    fn weight_paths(&self) -> Vec<(String, Variable)> {
        self.weights().into_iter().map(|(n, v)| (n.to_string(), v)).collect()
    }
    /// Keras' `layer.trainable`: false once [`Layer::set_trainable`] froze
    /// its weights.
    fn trainable(&self) -> bool {
        !self.weights().iter().any(|(_, v)| v.frozen())
    }
    /// Keras' `layer.trainable = False` (or `True`): freezes every weight
    /// of the built layer, so no gradient reaches them and no optimizer
    /// moves them (and a frozen `BatchNormalization` normalizes with its
    /// moving statistics, in training too, as in Keras). Compile the model
    /// again afterwards, as Keras asks.
    ///
    /// Returns [`Error::InvalidArgument`] for a layer not built yet (its
    /// weights do not exist).
    fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        if !self.built() {
            return Err(Error::arg(
                "Layer.trainable",
                format!("layer {} is not built: build it before freezing it", self.name()),
            ));
        }
        for (_, v) in self.weights() {
            v.set_frozen(!trainable);
        }
        Ok(())
    }
    /// The layer as `Any`, for the layers that other modules look into
    /// (a model used as a layer, [`crate::nn::ModelLayer`]); `None` for
    /// the others.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Keras' `layer.get_config()` (the options, not the weights), for Keras
    /// model files; the class name is [`Layer::kind`]. Layers Keras has no
    /// class for (custom ones) are an `Unimplemented` error.
    fn keras_config(&self) -> Result<serde_json::Value> {
        Err(Error::Unimplemented {
            what: format!("layer {} ({}) in a Keras file", self.name(), self.kind()),
            msg: "the layer has no Keras config".into(),
        })
    }
    /// The Keras module and registered name its config entry names (for
    /// classes outside `keras.layers`, such as `keras.src.ops.numpy`'s).
    fn keras_module(&self) -> (&'static str, Option<&'static str>) {
        ("keras.layers", None)
    }
    /// A call's positional arguments in a Keras config, given its input
    /// tensors' references; `None`: one argument, the tensor (or the list,
    /// for a layer that [takes a list](Layer::takes_list)).
    fn keras_call_args(&self, _tensors: Vec<serde_json::Value>) -> Option<Vec<serde_json::Value>> {
        None
    }
    /// For a wrapper layer ([`crate::nn::pruning::PruneLowMagnitude`]): the
    /// layer it wraps, taken out (what `strip_pruning` puts in its place);
    /// `None` for every other layer.
    fn take_wrapped(&mut self) -> Option<Box<dyn Layer>> {
        None
    }
}

/// The config entries every Keras layer has.
fn base_config(name: &str, dtype: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), name.into());
    m.insert("trainable".into(), true.into());
    m.insert(
        "dtype".into(),
        serde_json::json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": null}),
    );
    m
}

fn padding_name(p: Padding, layer: &str) -> Result<&'static str> {
    match p {
        Padding::Same => Ok("same"),
        Padding::Valid => Ok("valid"),
        Padding::Explicit { .. } => Err(Error::Unimplemented {
            what: format!("explicit padding of layer {layer} in a Keras file"),
            msg: "Keras layers take \"same\" or \"valid\"".into(),
        }),
    }
}

fn initializer_config(i: &Initializer) -> serde_json::Value {
    let (class, config) = match i {
        Initializer::GlorotUniform => ("GlorotUniform", serde_json::json!({"seed": null})),
        Initializer::HeNormal => ("HeNormal", serde_json::json!({"seed": null})),
        Initializer::Zeros => ("Zeros", serde_json::json!({})),
        Initializer::Ones => ("Ones", serde_json::json!({})),
        Initializer::Constant(v) => ("Constant", serde_json::json!({"value": v})),
        Initializer::RandomNormal { mean, stddev } => (
            "RandomNormal",
            serde_json::json!({"mean": mean, "stddev": stddev, "seed": null}),
        ),
        Initializer::RandomUniform { minval, maxval } => (
            "RandomUniform",
            serde_json::json!({"minval": minval, "maxval": maxval, "seed": null}),
        ),
    };
    serde_json::json!({"module": "keras.initializers", "class_name": class, "config": config, "registered_name": null})
}

/// The config entries of a layer with a kernel and a bias (Dense, Conv2D).
fn kernel_config(
    m: &mut serde_json::Map<String, serde_json::Value>,
    activation: Activation,
    use_bias: bool,
    kernel: &Initializer,
    bias: &Initializer,
) {
    m.insert("activation".into(), activation.name().into());
    m.insert("use_bias".into(), use_bias.into());
    m.insert("kernel_initializer".into(), initializer_config(kernel));
    m.insert("bias_initializer".into(), initializer_config(bias));
    for k in [
        "kernel_regularizer",
        "bias_regularizer",
        "kernel_constraint",
        "bias_constraint",
    ] {
        m.insert(k.into(), serde_json::Value::Null);
    }
}

/// The shape options of a convolution's Keras config (lists of one or two).
struct ConvShape {
    filters: usize,
    kernel_size: serde_json::Value,
    strides: serde_json::Value,
    padding: &'static str,
    dilation_rate: serde_json::Value,
    groups: usize,
}

/// The Keras config of a convolution layer (Conv1D, Conv2D).
fn conv_config(
    name: &str,
    policy: &Policy,
    shape: ConvShape,
    activation: Activation,
    use_bias: bool,
    (kernel, bias): (&Initializer, &Initializer),
) -> serde_json::Value {
    let mut m = base_config(name, &policy_name(policy));
    m.insert("filters".into(), shape.filters.into());
    m.insert("kernel_size".into(), shape.kernel_size);
    m.insert("strides".into(), shape.strides);
    m.insert("padding".into(), shape.padding.into());
    m.insert("data_format".into(), "channels_last".into());
    m.insert("dilation_rate".into(), shape.dilation_rate);
    m.insert("groups".into(), shape.groups.into());
    kernel_config(&mut m, activation, use_bias, kernel, bias);
    m.insert("activity_regularizer".into(), serde_json::Value::Null);
    m.into()
}

fn policy_name(p: &Policy) -> String {
    p.name().to_string()
}

/// Builds the layer from its first input if needed, checking the rank.
fn ensure_built(layer: &mut dyn Layer, x: &Tensor, min_rank: usize) -> Result<()> {
    if x.rank() < min_rank {
        return Err(Error::shape(
            "Layer",
            &[x.shape()],
            format!(
                "layer {} ({}) expects inputs of rank >= {min_rank} (batch first)",
                layer.name(),
                layer.kind()
            ),
        ));
    }
    if !layer.built() {
        layer.build(&x.shape()[1..], x.device())?;
    }
    Ok(())
}

/// [`ensure_built`] for a layer over images: inputs must be
/// `[batch, height, width, channels]`.
fn ensure_built_nhwc(layer: &mut dyn Layer, x: &Tensor) -> Result<()> {
    if x.rank() != 4 {
        return Err(Error::shape(
            layer.kind(),
            &[x.shape()],
            format!("layer {} expects inputs [batch, height, width, channels]", layer.name()),
        ));
    }
    ensure_built(layer, x, 4)
}

/// `t` in `dt` (cast when it differs; the cast's gradient goes back in
/// `t`'s dtype).
fn in_dtype(t: Tensor, dt: DType) -> Result<Tensor> {
    if t.dtype() == dt { Ok(t) } else { t.cast(dt) }
}

fn param_count(w: &[(&'static str, Variable)]) -> usize {
    w.iter().map(|(_, v)| v.numel()).sum()
}

/// A weight that `build` creates, or the error of a layer used unbuilt.
fn weight<'a>(w: &'a Option<Variable>, layer: &str, name: &str) -> Result<&'a Variable> {
    w.as_ref()
        .ok_or_else(|| Error::arg("Layer", format!("layer {layer} has no {name}: it was not built")))
}

/// `layer.count_params()`: the number of scalars in all of the layer's
/// weights, trainable or not (0 before it is built).
pub fn count_params(layer: &dyn Layer) -> usize {
    param_count(&layer.weights())
}

// ---- Dense ---------------------------------------------------------------

/// `keras.layers.Dense`: `activation(x @ kernel + bias)` over the last axis.
///
/// Inputs `[batch, ..., in]` give `[batch, ..., units]`; the kernel is
/// `[in, units]`. Options set after the layer is built have no effect on
/// its weights.
pub struct Dense {
    name: String,
    /// Output features.
    pub units: usize,
    /// Applied to the output (`Linear`, Keras' `None`, by default).
    pub activation: Activation,
    /// Whether a bias is added (true).
    pub use_bias: bool,
    /// Initializer of the kernel (`GlorotUniform`).
    pub kernel_initializer: Initializer,
    /// Initializer of the bias (`Zeros`).
    pub bias_initializer: Initializer,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl Dense {
    /// `Dense(units)` with Keras' defaults.
    pub fn new(units: usize) -> Dense {
        Dense {
            name: unique_name("dense"),
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            policy: global_policy(),
            kernel: None,
            bias: None,
        }
    }
    /// `dtype=`: the layer's dtype policy (`Policy::float32()` keeps a
    /// layer in f32 under a mixed global policy).
    pub fn dtype(mut self, p: Policy) -> Dense {
        self.policy = p;
        self
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Dense {
        self.activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Dense {
        self.use_bias = b;
        self
    }
    /// `kernel_initializer=`.
    pub fn kernel_initializer(mut self, i: Initializer) -> Dense {
        self.kernel_initializer = i;
        self
    }
    /// The kernel `[in, units]`, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.kernel.as_ref()
    }
    /// The bias `[units]`, once built with `use_bias`.
    pub fn bias(&self) -> Option<&Variable> {
        self.bias.as_ref()
    }
}

impl Layer for Dense {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        m.insert("units".into(), self.units.into());
        kernel_config(
            &mut m,
            self.activation,
            self.use_bias,
            &self.kernel_initializer,
            &self.bias_initializer,
        );
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Dense"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        let Some(&inp) = input_shape.last() else {
            return Err(Error::shape(
                "Dense",
                &[input_shape],
                "needs inputs with a feature axis: [batch, ..., features]",
            ));
        };
        let vt = self.policy.variable_dtype();
        let k = self.kernel_initializer.init(&[inp, self.units], vt, device)?;
        self.kernel = Some(Variable::new(k, &format!("{}/kernel", self.name)));
        if self.use_bias {
            let b = self.bias_initializer.init(&[self.units], vt, device)?;
            self.bias = Some(Variable::new(b, &format!("{}/bias", self.name)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.kernel.is_some()
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let mut s = input_shape.to_vec();
        match s.last_mut() {
            Some(l) => *l = self.units,
            None => return Err(Error::shape("Dense", &[input_shape], "needs a feature axis")),
        }
        Ok(s)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        let dt = self.policy.compute_dtype();
        let x = &self.policy.autocast(x, &self.name)?;
        let k = in_dtype(weight(&self.kernel, &self.name, "kernel")?.value(), dt)?;
        let inp = k.shape()[0];
        if x.shape()[x.rank() - 1] != inp {
            return Err(Error::shape(
                "Dense",
                &[x.shape(), k.shape()],
                format!("layer {} was built for {inp} input features", self.name),
            ));
        }
        let lead: Vec<isize> = x.shape()[..x.rank() - 1].iter().map(|&d| d as isize).collect();
        let flat = if x.rank() == 2 {
            x.clone()
        } else {
            x.reshape(&[-1, inp as isize])?
        };
        let mut y = flat.matmul(&k)?;
        if let Some(b) = &self.bias {
            y = y.add(&in_dtype(b.value(), dt)?)?;
        }
        if x.rank() != 2 {
            let mut s = lead;
            s.push(self.units as isize);
            y = y.reshape(&s)?;
        }
        self.activation.apply(&y)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        kernel_and_bias(("kernel", &self.kernel), &self.bias)
    }
}

// ---- Conv2D --------------------------------------------------------------

fn padding_of(name: &str) -> Result<Padding> {
    match name {
        "same" => Ok(Padding::Same),
        "valid" => Ok(Padding::Valid),
        _ => Err(Error::arg("padding", format!("{name:?} is not \"same\" or \"valid\""))),
    }
}

/// `keras.layers.Conv2D` over NHWC inputs (padding "valid" by default, as Keras).
///
/// Inputs `[batch, height, width, channels]` give `[batch, out_height,
/// out_width, filters]`; the kernel is HWIO, `[kh, kw, channels / groups,
/// filters]`. Options set after the layer is built have no effect on its
/// weights.
pub struct Conv2D {
    name: String,
    /// Output channels.
    pub filters: usize,
    /// Window `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step of the window `[height, width]` (`[1, 1]`).
    pub strides: [usize; 2],
    /// `Valid` (no padding, the default) or `Same` (output size `ceil(in / stride)`).
    pub padding: Padding,
    /// Spacing of the kernel taps `[height, width]` (`[1, 1]`).
    pub dilation_rate: [usize; 2],
    /// Channel groups (1); channels and filters must both divide by it.
    pub groups: usize,
    /// Applied to the output (`Linear`, Keras' `None`, by default).
    pub activation: Activation,
    /// Whether a bias `[filters]` is added (true).
    pub use_bias: bool,
    /// Initializer of the kernel (`GlorotUniform`).
    pub kernel_initializer: Initializer,
    /// Initializer of the bias (`Zeros`).
    pub bias_initializer: Initializer,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl Conv2D {
    /// `Conv2D(filters, kernel_size)` with Keras' defaults.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Conv2D {
        Conv2D {
            name: unique_name("conv2d"),
            filters,
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            dilation_rate: [1, 1],
            groups: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            policy: global_policy(),
            kernel: None,
            bias: None,
        }
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Conv2D {
        self.policy = p;
        self
    }
    /// `strides=`.
    pub fn strides(mut self, s: [usize; 2]) -> Conv2D {
        self.strides = s;
        self
    }
    /// `padding=`: "same" or "valid".
    ///
    /// Returns [`Error::InvalidArgument`] for any other string.
    pub fn padding(mut self, p: &str) -> Result<Conv2D> {
        self.padding = padding_of(p)?;
        Ok(self)
    }
    /// `dilation_rate=`.
    pub fn dilation_rate(mut self, d: [usize; 2]) -> Conv2D {
        self.dilation_rate = d;
        self
    }
    /// `groups=`: grouped convolution; `groups == channels` is depthwise.
    pub fn groups(mut self, g: usize) -> Conv2D {
        self.groups = g;
        self
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Conv2D {
        self.activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Conv2D {
        self.use_bias = b;
        self
    }
    /// `kernel_initializer=`.
    pub fn kernel_initializer(mut self, i: Initializer) -> Conv2D {
        self.kernel_initializer = i;
        self
    }
}

impl Layer for Conv2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let shape = ConvShape {
            filters: self.filters,
            kernel_size: serde_json::json!(self.kernel_size),
            strides: serde_json::json!(self.strides),
            padding: padding_name(self.padding, &self.name)?,
            dilation_rate: serde_json::json!(self.dilation_rate),
            groups: self.groups,
        };
        let inits = (&self.kernel_initializer, &self.bias_initializer);
        Ok(conv_config(
            &self.name,
            &self.policy,
            shape,
            self.activation,
            self.use_bias,
            inits,
        ))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Conv2D"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        if input_shape.len() != 3 {
            return Err(Error::shape(
                "Conv2D",
                &[input_shape],
                "expects examples [height, width, channels]",
            ));
        }
        let c = input_shape[2];
        if self.groups == 0 || c % self.groups != 0 || self.filters % self.groups != 0 {
            return Err(Error::shape(
                "Conv2D",
                &[input_shape],
                format!(
                    "{c} channels and {} filters must both divide into {} groups",
                    self.filters, self.groups
                ),
            ));
        }
        let ks = [self.kernel_size[0], self.kernel_size[1], c / self.groups, self.filters];
        let vt = self.policy.variable_dtype();
        let k = self.kernel_initializer.init(&ks, vt, device)?;
        self.kernel = Some(Variable::new(k, &format!("{}/kernel", self.name)));
        if self.use_bias {
            let b = self.bias_initializer.init(&[self.filters], vt, device)?;
            self.bias = Some(Variable::new(b, &format!("{}/bias", self.name)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.kernel.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        if s.len() != 3 {
            return Err(Error::shape(
                "Conv2D",
                &[s],
                "expects examples [height, width, channels]",
            ));
        }
        let a = conv::Conv2d {
            strides: self.strides,
            padding: self.padding,
            dilations: self.dilation_rate,
            groups: self.groups,
        };
        let (h, w) = a.dims("Conv2D", s[0], s[1], self.kernel_size[0], self.kernel_size[1])?;
        Ok(vec![h.out, w.out, self.filters])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built_nhwc(self, x)?;
        let (s, p, d) = (self.strides, self.padding, self.dilation_rate);
        let kernel = ("kernel", &self.kernel);
        conv_forward(
            x,
            &self.policy,
            &self.name,
            kernel,
            &self.bias,
            self.activation,
            |x, k| conv::conv2d(x, k, s, p, d),
        )
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        kernel_and_bias(("kernel", &self.kernel), &self.bias)
    }
}

/// `keras.layers.DepthwiseConv2D`: each input channel convolved with its own
/// `depth_multiplier` filters (output channel `c * multiplier + m`).
///
/// Weights: `depthwise_kernel` `[kh, kw, channels, depth_multiplier]` (as
/// Keras keeps it) and `bias` `[channels * depth_multiplier]`.
pub struct DepthwiseConv2D {
    name: String,
    /// Window `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step of the window `[height, width]` (`[1, 1]`).
    pub strides: [usize; 2],
    /// `Valid` (the default) or `Same`.
    pub padding: Padding,
    /// Filters per input channel (1).
    pub depth_multiplier: usize,
    /// Spacing of the kernel taps `[height, width]` (`[1, 1]`).
    pub dilation_rate: [usize; 2],
    /// Applied to the output (`Linear` by default).
    pub activation: Activation,
    /// Whether a bias is added (true).
    pub use_bias: bool,
    /// Initializer of the kernel (`GlorotUniform`).
    pub depthwise_initializer: Initializer,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl DepthwiseConv2D {
    /// `DepthwiseConv2D(kernel_size)` with Keras' defaults.
    pub fn new(kernel_size: [usize; 2]) -> DepthwiseConv2D {
        DepthwiseConv2D {
            name: unique_name("depthwise_conv2d"),
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            depth_multiplier: 1,
            dilation_rate: [1, 1],
            activation: Activation::Linear,
            use_bias: true,
            depthwise_initializer: Initializer::GlorotUniform,
            policy: global_policy(),
            kernel: None,
            bias: None,
        }
    }
    /// `strides=`.
    pub fn strides(mut self, s: [usize; 2]) -> Self {
        self.strides = s;
        self
    }
    /// `padding=`: "same" or "valid".
    ///
    /// Returns [`Error::InvalidArgument`] for any other string.
    pub fn padding(mut self, p: &str) -> Result<Self> {
        self.padding = padding_of(p)?;
        Ok(self)
    }
    /// `depth_multiplier=`.
    pub fn depth_multiplier(mut self, m: usize) -> Self {
        self.depth_multiplier = m;
        self
    }
    /// `dilation_rate=`.
    pub fn dilation_rate(mut self, d: [usize; 2]) -> Self {
        self.dilation_rate = d;
        self
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Self {
        self.use_bias = b;
        self
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    fn geometry(&self, channels: usize) -> conv::Conv2d {
        conv::Conv2d {
            strides: self.strides,
            padding: self.padding,
            dilations: self.dilation_rate,
            groups: channels,
        }
    }
}

impl Layer for DepthwiseConv2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        m.insert("kernel_size".into(), serde_json::json!(self.kernel_size));
        m.insert("strides".into(), serde_json::json!(self.strides));
        m.insert("padding".into(), padding_name(self.padding, &self.name)?.into());
        m.insert("depth_multiplier".into(), self.depth_multiplier.into());
        m.insert("data_format".into(), "channels_last".into());
        m.insert("dilation_rate".into(), serde_json::json!(self.dilation_rate));
        kernel_config(
            &mut m,
            self.activation,
            self.use_bias,
            &self.depthwise_initializer,
            &Initializer::Zeros,
        );
        // Keras names the kernel's options after the depthwise kernel.
        for k in ["initializer", "regularizer", "constraint"] {
            if let Some(v) = m.remove(&format!("kernel_{k}")) {
                m.insert(format!("depthwise_{k}"), v);
            }
        }
        m.insert("activity_regularizer".into(), serde_json::Value::Null);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "DepthwiseConv2D"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        if input_shape.len() != 3 || self.depth_multiplier == 0 {
            return Err(Error::shape(
                "DepthwiseConv2D",
                &[input_shape],
                format!(
                    "expects examples [height, width, channels] and a depth_multiplier of 1 or more (got {})",
                    self.depth_multiplier
                ),
            ));
        }
        let c = input_shape[2];
        let out = c
            .checked_mul(self.depth_multiplier)
            .ok_or_else(|| Error::shape("DepthwiseConv2D", &[input_shape], "too many output channels"))?;
        let ks = [self.kernel_size[0], self.kernel_size[1], c, self.depth_multiplier];
        let vt = self.policy.variable_dtype();
        let k = self.depthwise_initializer.init(&ks, vt, device)?;
        self.kernel = Some(Variable::new(k, &format!("{}/depthwise_kernel", self.name)));
        if self.use_bias {
            let b = Initializer::Zeros.init(&[out], vt, device)?;
            self.bias = Some(Variable::new(b, &format!("{}/bias", self.name)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.kernel.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        if s.len() != 3 {
            return Err(Error::shape(
                "DepthwiseConv2D",
                &[s],
                "expects examples [height, width, channels]",
            ));
        }
        let (h, w) =
            self.geometry(s[2])
                .dims("DepthwiseConv2D", s[0], s[1], self.kernel_size[0], self.kernel_size[1])?;
        let out = s[2]
            .checked_mul(self.depth_multiplier)
            .ok_or_else(|| Error::shape("DepthwiseConv2D", &[s], "too many output channels"))?;
        Ok(vec![h.out, w.out, out])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built_nhwc(self, x)?;
        let (s, p, d) = (self.strides, self.padding, self.dilation_rate);
        let kernel = ("depthwise_kernel", &self.kernel);
        conv_forward(
            x,
            &self.policy,
            &self.name,
            kernel,
            &self.bias,
            self.activation,
            |x, k| conv::depthwise_conv2d(x, k, s, p, d),
        )
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        kernel_and_bias(("depthwise_kernel", &self.kernel), &self.bias)
    }
}

/// `keras.layers.SeparableConv2D`: a [`DepthwiseConv2D`] (its strides,
/// padding, dilation and `depth_multiplier`) followed by a 1x1 convolution
/// to `filters` channels, then the bias and the activation, as
/// `tf.nn.separable_conv2d`.
///
/// Weights: `depthwise_kernel` `[kh, kw, channels, depth_multiplier]`,
/// `pointwise_kernel` `[1, 1, channels * depth_multiplier, filters]` and
/// `bias` `[filters]`.
pub struct SeparableConv2D {
    depthwise: DepthwiseConv2D,
    /// Output channels.
    pub filters: usize,
    /// Applied to the output (`Linear` by default).
    pub activation: Activation,
    /// Whether a bias is added (true).
    pub use_bias: bool,
    pointwise: Option<Variable>,
    bias: Option<Variable>,
}

impl SeparableConv2D {
    /// `SeparableConv2D(filters, kernel_size)` with Keras' defaults.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> SeparableConv2D {
        SeparableConv2D::around(filters, DepthwiseConv2D::new(kernel_size))
    }
    /// The layer whose depthwise step is `depthwise` (its geometry and
    /// policy; its bias and activation are dropped for the layer's own).
    pub(crate) fn around(filters: usize, mut depthwise: DepthwiseConv2D) -> SeparableConv2D {
        depthwise.name = unique_name("separable_conv2d");
        depthwise.use_bias = false;
        depthwise.activation = Activation::Linear;
        SeparableConv2D {
            depthwise,
            filters,
            activation: Activation::Linear,
            use_bias: true,
            pointwise: None,
            bias: None,
        }
    }
    /// `strides=` (of the depthwise step).
    pub fn strides(self, s: [usize; 2]) -> Self {
        SeparableConv2D {
            depthwise: self.depthwise.strides(s),
            ..self
        }
    }
    /// `padding=`: "same" or "valid".
    ///
    /// Returns [`Error::InvalidArgument`] for any other string.
    pub fn padding(self, p: &str) -> Result<Self> {
        Ok(SeparableConv2D {
            depthwise: self.depthwise.padding(p)?,
            ..self
        })
    }
    /// `depth_multiplier=`.
    pub fn depth_multiplier(self, m: usize) -> Self {
        SeparableConv2D {
            depthwise: self.depthwise.depth_multiplier(m),
            ..self
        }
    }
    /// `dilation_rate=`.
    pub fn dilation_rate(self, d: [usize; 2]) -> Self {
        SeparableConv2D {
            depthwise: self.depthwise.dilation_rate(d),
            ..self
        }
    }
    /// `activation=`.
    pub fn activation(self, activation: Activation) -> Self {
        SeparableConv2D { activation, ..self }
    }
    /// `use_bias=`.
    pub fn use_bias(self, use_bias: bool) -> Self {
        SeparableConv2D { use_bias, ..self }
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(self, p: Policy) -> Self {
        SeparableConv2D {
            depthwise: self.depthwise.dtype(p),
            ..self
        }
    }
}

impl Layer for SeparableConv2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = match self.depthwise.keras_config()? {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        m.insert("filters".into(), self.filters.into());
        m.insert("activation".into(), self.activation.name().into());
        m.insert("use_bias".into(), self.use_bias.into());
        m.insert(
            "pointwise_initializer".into(),
            initializer_config(&Initializer::GlorotUniform),
        );
        m.insert("pointwise_regularizer".into(), serde_json::Value::Null);
        m.insert("pointwise_constraint".into(), serde_json::Value::Null);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.depthwise.name
    }
    fn set_name(&mut self, name: &str) {
        self.depthwise.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "SeparableConv2D"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        self.depthwise.build(input_shape, device)?;
        let mid = self.depthwise.output_shape(input_shape)?[2];
        let vt = self.depthwise.policy.variable_dtype();
        let name = &self.depthwise.name;
        let k = Initializer::GlorotUniform.init(&[1, 1, mid, self.filters], vt, device)?;
        self.pointwise = Some(Variable::new(k, &format!("{name}/pointwise_kernel")));
        if self.use_bias {
            let b = Initializer::Zeros.init(&[self.filters], vt, device)?;
            self.bias = Some(Variable::new(b, &format!("{name}/bias")));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.depthwise.built() && self.pointwise.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let mut out = self.depthwise.output_shape(s)?;
        out[2] = self.filters;
        Ok(out)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        ensure_built_nhwc(self, x)?;
        let SeparableConv2D {
            depthwise,
            pointwise,
            bias,
            activation,
            ..
        } = self;
        let (policy, name) = (depthwise.policy.clone(), depthwise.name.clone());
        conv_forward(
            x,
            &policy,
            &name,
            ("pointwise_kernel", pointwise),
            bias,
            *activation,
            |x, k| conv::conv2d(&depthwise.call(x, training)?, k, [1, 1], Padding::Valid, [1, 1]),
        )
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let mut w = self.depthwise.weights();
        w.extend(kernel_and_bias(("pointwise_kernel", &self.pointwise), &self.bias));
        w
    }
}

/// A convolution layer's forward pass: `x` cast to the policy's compute
/// dtype, `conv` with the kernel in it, the bias, the activation.
fn conv_forward(
    x: &Tensor,
    policy: &Policy,
    name: &str,
    (kernel_name, kernel): (&'static str, &Option<Variable>),
    bias: &Option<Variable>,
    activation: Activation,
    conv: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dt = policy.compute_dtype();
    let x = &policy.autocast(x, name)?;
    let k = in_dtype(weight(kernel, name, kernel_name)?.value(), dt)?;
    let mut y = conv(x, &k)?;
    if let Some(b) = bias {
        y = y.add(&in_dtype(b.value(), dt)?)?;
    }
    activation.apply(&y)
}

/// A kernel and an optional bias, as [`Layer::weights`] lists them.
fn kernel_and_bias(
    (kernel_name, kernel): (&'static str, &Option<Variable>),
    bias: &Option<Variable>,
) -> Vec<(&'static str, Variable)> {
    let mut w = Vec::new();
    if let Some(k) = kernel {
        w.push((kernel_name, k.clone()));
    }
    if let Some(b) = bias {
        w.push(("bias", b.clone()));
    }
    w
}

// ---- pooling ---------------------------------------------------------------

/// `keras.layers.MaxPooling2D` (`MAX = true`) and `AveragePooling2D`
/// (strides default to the pool size); use the aliases [`MaxPooling2D`] and
/// [`AveragePooling2D`].
pub struct Pooling2D<const MAX: bool> {
    name: String,
    max: bool,
    /// Window `[height, width]`.
    pub pool_size: [usize; 2],
    /// Step of the window (`pool_size` by default, as Keras' `strides=None`).
    pub strides: [usize; 2],
    /// `Valid` (the default) or `Same`.
    pub padding: Padding,
}

/// `keras.layers.MaxPooling2D`.
pub type MaxPooling2D = Pooling2D<true>;
/// `keras.layers.AveragePooling2D`.
pub type AveragePooling2D = Pooling2D<false>;

impl<const MAX: bool> Pooling2D<MAX> {
    /// `MaxPooling2D(pool_size)` / `AveragePooling2D(pool_size)`: strides equal
    /// to the window, valid padding. Keras' default `pool_size` is `[2, 2]`.
    pub fn new(pool_size: [usize; 2]) -> Self {
        Pooling2D {
            name: unique_name(if MAX { "max_pooling2d" } else { "average_pooling2d" }),
            max: MAX,
            pool_size,
            strides: pool_size,
            padding: Padding::Valid,
        }
    }
    /// `strides=`.
    pub fn strides(mut self, s: [usize; 2]) -> Self {
        self.strides = s;
        self
    }
    /// `padding=`: `"valid"` or `"same"`.
    ///
    /// Returns [`Error::InvalidArgument`] for any other string.
    pub fn padding(mut self, p: &str) -> Result<Self> {
        self.padding = padding_of(p)?;
        Ok(self)
    }
    fn pool(&self) -> pool::Pool2d {
        pool::Pool2d {
            max: self.max,
            ksize: self.pool_size,
            strides: self.strides,
            padding: self.padding,
        }
    }
}

impl<const MAX: bool> Layer for Pooling2D<MAX> {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("pool_size".into(), serde_json::json!(self.pool_size));
        m.insert("padding".into(), padding_name(self.padding, &self.name)?.into());
        m.insert("strides".into(), serde_json::json!(self.strides));
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        if self.max { "MaxPooling2D" } else { "AveragePooling2D" }
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        if s.len() != 3 {
            return Err(Error::shape(
                self.kind(),
                &[s],
                "expects examples [height, width, channels]",
            ));
        }
        let a = conv::Conv2d {
            strides: self.strides,
            padding: self.padding,
            dilations: [1, 1],
            groups: 1,
        };
        let (h, w) = a.dims(self.pool().name(), s[0], s[1], self.pool_size[0], self.pool_size[1])?;
        Ok(vec![h.out, w.out, s[2]])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ops::apply(ops::Op::Pool(self.pool()), &[x]).map_err(|e| match e {
            Error::Shape { op, shapes, msg } => Error::Shape {
                op,
                shapes,
                msg: format!("{msg} (layer {})", self.name),
            },
            e => e,
        })
    }
}

/// Keras' global poolings: the mean (or maximum) over the `D` spatial
/// axes, `[batch, steps, features]` (D = 1) or `[batch, height, width,
/// channels]` (D = 2) to `[batch, channels]` (Keras' `keepdims=False`,
/// channels last, no mask).
pub struct GlobalPooling<const MAX: bool, const D: usize> {
    name: String,
    /// Keras' `keepdims`: the pooled axes stay, of size 1.
    pub keepdims: bool,
}

/// `keras.layers.GlobalAveragePooling2D` and `GlobalMaxPooling2D`.
pub type GlobalPooling2D<const MAX: bool> = GlobalPooling<MAX, 2>;
/// `keras.layers.GlobalAveragePooling2D`: mean over height and width.
pub type GlobalAveragePooling2D = GlobalPooling<false, 2>;
/// `keras.layers.GlobalMaxPooling2D`: maximum over height and width.
pub type GlobalMaxPooling2D = GlobalPooling<true, 2>;
/// `keras.layers.GlobalAveragePooling1D` and `GlobalMaxPooling1D`.
pub type GlobalPooling1D<const MAX: bool> = GlobalPooling<MAX, 1>;
/// `keras.layers.GlobalAveragePooling1D`: mean over the steps.
pub type GlobalAveragePooling1D = GlobalPooling<false, 1>;
/// `keras.layers.GlobalMaxPooling1D`: maximum over the steps.
pub type GlobalMaxPooling1D = GlobalPooling<true, 1>;

impl<const MAX: bool, const D: usize> GlobalPooling<MAX, D> {
    /// `GlobalAveragePooling2D()`, `GlobalMaxPooling1D()`, ...
    pub fn new() -> Self {
        let base = if MAX {
            "global_max_pooling"
        } else {
            "global_average_pooling"
        };
        GlobalPooling {
            name: unique_name(&format!("{base}{D}d")),
            keepdims: false,
        }
    }
    /// `keepdims=True`: outputs `[batch, 1, 1, channels]` (2D) or
    /// `[batch, 1, channels]` (1D).
    pub fn keepdims(mut self, keepdims: bool) -> Self {
        self.keepdims = keepdims;
        self
    }
    /// What one example holds, for errors.
    fn example() -> &'static str {
        if D == 1 {
            "[steps, features]"
        } else {
            "[height, width, channels]"
        }
    }
}

impl<const MAX: bool, const D: usize> Default for GlobalPooling<MAX, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const MAX: bool, const D: usize> Layer for GlobalPooling<MAX, D> {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("data_format".into(), "channels_last".into());
        m.insert("keepdims".into(), self.keepdims.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        match (MAX, D) {
            (false, 1) => "GlobalAveragePooling1D",
            (true, 1) => "GlobalMaxPooling1D",
            (false, _) => "GlobalAveragePooling2D",
            (true, _) => "GlobalMaxPooling2D",
        }
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        match s {
            [.., c] if s.len() == D + 1 && self.keepdims => Ok([vec![1; D], vec![*c]].concat()),
            [.., c] if s.len() == D + 1 => Ok(vec![*c]),
            _ => Err(Error::shape(
                self.kind(),
                &[s],
                format!("expects examples {}", Self::example()),
            )),
        }
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if x.rank() != D + 2 {
            return Err(Error::shape(
                self.kind(),
                &[x.shape()],
                format!("expects [batch, {}", &Self::example()[1..]),
            ));
        }
        let axes: Vec<isize> = (1..=D as isize).collect();
        if MAX {
            x.max(Some(&axes), self.keepdims)
        } else {
            x.mean(Some(&axes), self.keepdims)
        }
    }
}

/// `keras.layers.LeakyReLU`: `x` above 0, `negative_slope * x` below.
pub struct LeakyReLU {
    name: String,
    /// The slope below 0 (Keras' default 0.3).
    pub negative_slope: f64,
}

impl LeakyReLU {
    /// `LeakyReLU(negative_slope)`.
    pub fn new(negative_slope: f64) -> LeakyReLU {
        LeakyReLU {
            name: unique_name("leaky_re_lu"),
            negative_slope,
        }
    }
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU::new(0.3)
    }
}

impl Layer for LeakyReLU {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("negative_slope".into(), self.negative_slope.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "LeakyReLU"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if self.negative_slope.is_nan() || self.negative_slope < 0.0 {
            return Err(Error::arg(
                "LeakyReLU",
                format!("negative_slope must be 0 or more, got {}", self.negative_slope),
            ));
        }
        x.leaky_relu(self.negative_slope as f32)
    }
}

/// `keras.layers.Reshape`: each example to `target_shape` (one entry may be
/// -1, inferred), the batch axis kept.
pub struct Reshape {
    name: String,
    /// The shape of one example; at most one -1.
    pub target_shape: Vec<isize>,
}

impl Reshape {
    /// `Reshape(target_shape)`.
    pub fn new(target_shape: &[isize]) -> Reshape {
        Reshape {
            name: unique_name("reshape"),
            target_shape: target_shape.to_vec(),
        }
    }
}

impl Layer for Reshape {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("target_shape".into(), serde_json::json!(self.target_shape));
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Reshape"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let n = s
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::shape("Reshape", &[s], "the example has more values than fit in memory"))?;
        let bad = || {
            Error::shape(
                "Reshape",
                &[s],
                format!("examples of {n} values cannot take the shape {:?}", self.target_shape),
            )
        };
        let holes = self.target_shape.iter().filter(|&&d| d == -1).count();
        if holes > 1 || self.target_shape.iter().any(|&d| d < -1) {
            return Err(bad());
        }
        let known = self
            .target_shape
            .iter()
            .filter(|&&d| d >= 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
            .ok_or_else(bad)?;
        let out: Vec<usize> = if holes == 1 {
            if known == 0 || n % known != 0 {
                return Err(bad());
            }
            self.target_shape
                .iter()
                .map(|&d| if d < 0 { n / known } else { d as usize })
                .collect()
        } else {
            self.target_shape.iter().map(|&d| d as usize).collect()
        };
        if out.iter().product::<usize>() != n {
            return Err(bad());
        }
        Ok(out)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let Some((&batch, example)) = x.shape().split_first() else {
            return Err(Error::shape("Reshape", &[x.shape()], "needs a batch axis"));
        };
        let mut shape = vec![batch as isize];
        shape.extend(self.output_shape(example)?.iter().map(|&d| d as isize));
        x.reshape(&shape)
    }
}

/// `keras.layers.ZeroPadding2D`: zero rows above and below, zero columns
/// left and right of each example `[height, width, channels]`.
pub struct ZeroPadding2D {
    name: String,
    /// `[[top, bottom], [left, right]]`.
    pub padding: [[usize; 2]; 2],
}

impl ZeroPadding2D {
    /// `ZeroPadding2D(padding=((top, bottom), (left, right)))`.
    pub fn new(padding: [[usize; 2]; 2]) -> ZeroPadding2D {
        ZeroPadding2D {
            name: unique_name("zero_padding2d"),
            padding,
        }
    }
}

impl Layer for ZeroPadding2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("padding".into(), serde_json::json!(self.padding));
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "ZeroPadding2D"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let [[t, b], [l, r]] = self.padding;
        match s {
            &[h, w, c] => h
                .checked_add(t)
                .and_then(|h| h.checked_add(b))
                .zip(w.checked_add(l).and_then(|w| w.checked_add(r)))
                .map(|(h, w)| vec![h, w, c])
                .ok_or_else(|| Error::shape("ZeroPadding2D", &[s], "the padded size overflows")),
            _ => Err(Error::shape(
                "ZeroPadding2D",
                &[s],
                "expects examples [height, width, channels]",
            )),
        }
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if x.rank() != 4 {
            return Err(Error::shape(
                "ZeroPadding2D",
                &[x.shape()],
                "expects [batch, height, width, channels]",
            ));
        }
        let [[t, b], [l, r]] = self.padding;
        ops::layout::pad(x, &[(0, 0), (t, b), (l, r), (0, 0)])
    }
}

/// `keras.layers.Rescaling`: `x * scale + offset`, in the input's dtype
/// (integer inputs become f32, as Keras casts them to its compute dtype).
pub struct Rescaling {
    name: String,
    /// The factor.
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
}

impl Rescaling {
    /// `Rescaling(scale, offset)` (Keras' default offset is 0).
    pub fn new(scale: f64, offset: f64) -> Rescaling {
        Rescaling {
            name: unique_name("rescaling"),
            scale,
            offset,
        }
    }
}

impl Layer for Rescaling {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("scale".into(), self.scale.into());
        m.insert("offset".into(), self.offset.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Rescaling"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let x = if x.dtype().is_float() {
            x.clone()
        } else {
            x.cast(DType::F32)?
        };
        let y = x.mul_scalar(self.scale)?;
        if self.offset == 0.0 {
            Ok(y)
        } else {
            y.add_scalar(self.offset)
        }
    }
}

/// `keras.layers.Flatten`: `[batch, ...]` to `[batch, features]` in
/// row-major (NHWC) order, so a following `Dense` sees TF's feature order.
pub struct Flatten {
    name: String,
}

impl Flatten {
    /// `Flatten()`.
    pub fn new() -> Self {
        Flatten {
            name: unique_name("flatten"),
        }
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Flatten {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(vec![s.iter().product()])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if x.rank() < 1 {
            return Err(Error::shape("Flatten", &[x.shape()], "needs a batch axis"));
        }
        x.reshape(&[x.shape()[0] as isize, x.shape()[1..].iter().product::<usize>() as isize])
    }
}

/// `keras.layers.Dropout`: zeroes a fraction `rate` of the inputs in
/// training and scales the rest by 1 / (1 - rate); identity in inference.
///
/// The mask is drawn with the thread's seed sequence
/// ([`crate::nn::set_random_seed`]).
pub struct Dropout {
    name: String,
    /// Fraction of the inputs to drop, in `[0, 1)`.
    pub rate: f64,
    /// Keras' `noise_shape`: the shape of the keep mask, batch first, each
    /// entry the input's size (`None`) or 1 (one draw shared along that
    /// axis, as EfficientNet drops whole examples).
    pub noise_shape: Option<Vec<Option<usize>>>,
}

impl Dropout {
    /// `Dropout(rate)`. A rate outside `[0, 1)` is reported by `build` and
    /// every call, as [`Error::InvalidArgument`].
    pub fn new(rate: f64) -> Dropout {
        Dropout {
            name: unique_name("dropout"),
            rate,
            noise_shape: None,
        }
    }
    /// `Dropout(rate, noise_shape=...)`; checked against each input.
    pub fn noise_shape(mut self, shape: Vec<Option<usize>>) -> Dropout {
        self.noise_shape = Some(shape);
        self
    }
    /// The keep mask's shape for an input of `shape`.
    fn mask_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let Some(ns) = &self.noise_shape else {
            return Ok(shape.to_vec());
        };
        let bad = || {
            Error::shape(
                "Dropout",
                &[shape],
                format!("layer {}: noise_shape {ns:?} does not fit the input", self.name),
            )
        };
        if ns.len() != shape.len() {
            return Err(bad());
        }
        ns.iter()
            .zip(shape)
            .map(|(n, &d)| match *n {
                None => Ok(d),
                Some(n) if n == d || n == 1 => Ok(n),
                Some(_) => Err(bad()),
            })
            .collect()
    }
}

impl Layer for Dropout {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("rate".into(), self.rate.into());
        m.insert("seed".into(), serde_json::Value::Null);
        m.insert("noise_shape".into(), serde_json::json!(self.noise_shape));
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn build(&mut self, _s: &[usize], _d: &Device) -> Result<()> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::arg("Dropout", format!("rate {} must be in [0, 1)", self.rate)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        true
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.build(&[], x.device())?;
        let mask = self.mask_shape(x.shape())?;
        if !training || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let u = ops::random_uniform(&mask, 0.0, 1.0, x.dtype(), next_seed(), x.device())?;
        let keep = u.greater_equal(&u.scalar_like(self.rate)?)?.cast(x.dtype())?;
        x.mul(&keep)?.div_scalar(1.0 - self.rate)
    }
}

/// `keras.layers.BatchNormalization` over the last axis: batch statistics in
/// training (updating the moving averages), moving statistics in inference.
///
/// Weights, all `[channels]`: `gamma` and `beta` (trainable), `moving_mean`
/// and `moving_variance` (not trainable, updated by training calls).
pub struct BatchNormalization {
    name: String,
    /// Weight of the old value in the moving averages (0.99).
    pub momentum: f64,
    /// Added to the variance before the square root (1e-3).
    pub epsilon: f64,
    /// Whether the learned offset `beta` is added (true); set before building.
    pub center: bool,
    /// Whether the learned scale `gamma` multiplies (true); set before building.
    pub scale: bool,
    gamma: Option<Variable>,
    beta: Option<Variable>,
    moving_mean: Option<Variable>,
    moving_variance: Option<Variable>,
}

impl BatchNormalization {
    /// `BatchNormalization()` with Keras' defaults (`axis=-1`).
    pub fn new() -> Self {
        BatchNormalization {
            name: unique_name("batch_normalization"),
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            gamma: None,
            beta: None,
            moving_mean: None,
            moving_variance: None,
        }
    }
    /// `momentum=`.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// `epsilon=`.
    pub fn epsilon(mut self, e: f64) -> Self {
        self.epsilon = e;
        self
    }
    /// The moving mean `[channels]` used in inference, once built.
    pub fn moving_mean(&self) -> Option<&Variable> {
        self.moving_mean.as_ref()
    }
    /// The moving (biased) variance `[channels]` used in inference, once built.
    pub fn moving_variance(&self) -> Option<&Variable> {
        self.moving_variance.as_ref()
    }
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for BatchNormalization {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("axis".into(), (-1).into());
        m.insert("momentum".into(), self.momentum.into());
        m.insert("epsilon".into(), self.epsilon.into());
        m.insert("center".into(), self.center.into());
        m.insert("scale".into(), self.scale.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "BatchNormalization"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        let Some(&c) = s.last() else {
            return Err(Error::shape("BatchNormalization", &[s], "needs a channel axis"));
        };
        let n = &self.name;
        let var = |init: Initializer, w: &str, trainable: bool| -> Result<Variable> {
            Ok(Variable::with_trainable(
                init.init(&[c], DType::F32, device)?,
                &format!("{n}/{w}"),
                trainable,
            ))
        };
        if self.scale {
            self.gamma = Some(var(Initializer::Ones, "gamma", true)?);
        }
        if self.center {
            self.beta = Some(var(Initializer::Zeros, "beta", true)?);
        }
        self.moving_mean = Some(var(Initializer::Zeros, "moving_mean", false)?);
        self.moving_variance = Some(var(Initializer::Ones, "moving_variance", false)?);
        Ok(())
    }
    fn built(&self) -> bool {
        self.moving_mean.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        // A frozen layer normalizes with its moving statistics (Keras 3).
        let training = training && self.trainable();
        // f16 inputs are normalized in f32 (as Keras does) and returned as f16.
        let input_dtype = x.dtype();
        let x = &in_dtype(x.clone(), DType::F32)?;
        let c = weight(&self.moving_mean, &self.name, "moving_mean")?.numel();
        if x.shape()[x.rank() - 1] != c {
            return Err(Error::shape(
                "BatchNormalization",
                &[x.shape()],
                format!("layer {} was built for {c} channels", self.name),
            ));
        }
        let axes: Vec<isize> = (0..x.rank() as isize - 1).collect();
        let (mean, var) = if training {
            let mean = x.mean(Some(&axes), false)?;
            let var = x.sub(&mean)?.square()?.mean(Some(&axes), false)?;
            // Moving averages are state, not part of the computation being differentiated.
            crate::autodiff::without_recording(|| -> Result<()> {
                let m = self.momentum;
                for (mv, batch) in [
                    (weight(&self.moving_mean, &self.name, "moving_mean")?, &mean),
                    (weight(&self.moving_variance, &self.name, "moving_variance")?, &var),
                ] {
                    let next = mv.value().mul_scalar(m)?.add(&batch.mul_scalar(1.0 - m)?)?;
                    mv.assign(&crate::autodiff::stop_gradient(&next))?;
                }
                Ok(())
            })?;
            (mean, var)
        } else {
            (
                weight(&self.moving_mean, &self.name, "moving_mean")?.value(),
                weight(&self.moving_variance, &self.name, "moving_variance")?.value(),
            )
        };
        let mut y = x.sub(&mean)?.mul(&var.add_scalar(self.epsilon)?.rsqrt()?)?;
        if let Some(g) = &self.gamma {
            y = y.mul(&g.value())?;
        }
        if let Some(b) = &self.beta {
            y = y.add(&b.value())?;
        }
        in_dtype(y, input_dtype)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let mut w = Vec::new();
        for (n, v) in [
            ("gamma", &self.gamma),
            ("beta", &self.beta),
            ("moving_mean", &self.moving_mean),
            ("moving_variance", &self.moving_variance),
        ] {
            if let Some(v) = v {
                w.push((n, v.clone()));
            }
        }
        w
    }
}

/// `keras.layers.Activation`: an activation as a layer of its own (named
/// `ActivationLayer` because [`Activation`] is the function).
pub struct ActivationLayer {
    name: String,
    /// The function applied elementwise.
    pub activation: Activation,
}

impl ActivationLayer {
    /// A layer applying `a` elementwise.
    pub fn new(a: Activation) -> ActivationLayer {
        ActivationLayer {
            name: unique_name("activation"),
            activation: a,
        }
    }
}

impl Layer for ActivationLayer {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("activation".into(), self.activation.name().into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Activation"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        self.activation.apply(x)
    }
}

#[cfg(test)]
mod name_tests {
    /// A name read from a file is not given again.
    #[test]
    fn reserved_names_are_skipped() {
        super::reserve_name("wgflow_test_layer_5");
        assert_eq!(super::unique_name("wgflow_test_layer"), "wgflow_test_layer_6");
        super::reserve_name("wgflow_test_other");
        assert_eq!(super::unique_name("wgflow_test_other"), "wgflow_test_other_1");
        super::reserve_name("wgflow_test_big_99999999999999999999999");
        assert_eq!(super::unique_name("wgflow_test_big"), "wgflow_test_big");
    }
}
