//! Layers over sequences: `Embedding`, `Conv1D` and 1-D pooling (the
//! global poolings are [`super::GlobalPooling`]). The 1-D layers run as
//! one-row 2-D kernels.

use super::{
    ConvShape, Layer, base_config, conv_config, conv_forward, initializer_config, kernel_and_bias, padding_name,
    padding_of, policy_name, unique_name, weight,
};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::activations::Activation;
use crate::nn::initializers::Initializer;
use crate::nn::mixed_precision::{Policy, global_policy};
use crate::ops::{conv, layout, pool};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// `keras.layers.Embedding`: row `i` of an `[input_dim, output_dim]` table
/// for each index `i`, `[batch, ...]` to `[batch, ..., output_dim]`.
///
/// Float indices are truncated to int32 first, as Keras casts them; an
/// index outside `[0, input_dim)` is an error on every device (on a GPU,
/// at the next readback). The gradient adds up the rows each batch used.
/// Masking (`mask_zero`) is not built.
pub struct Embedding {
    name: String,
    /// The number of rows: indices run from 0 to `input_dim - 1`.
    pub input_dim: usize,
    /// The length of each row.
    pub output_dim: usize,
    /// Initializer of the table (`RandomUniform(-0.05, 0.05)`, Keras' "uniform").
    pub embeddings_initializer: Initializer,
    /// The dtype policy (the global one when the layer was created): rows
    /// are kept in its variable dtype and returned in its compute dtype.
    pub policy: Policy,
    embeddings: Option<Variable>,
}

impl Embedding {
    /// `Embedding(input_dim, output_dim)` with Keras' defaults.
    pub fn new(input_dim: usize, output_dim: usize) -> Embedding {
        Embedding {
            name: unique_name("embedding"),
            input_dim,
            output_dim,
            embeddings_initializer: Initializer::RandomUniform {
                minval: -0.05,
                maxval: 0.05,
            },
            policy: global_policy(),
            embeddings: None,
        }
    }
    /// `embeddings_initializer=`.
    pub fn embeddings_initializer(mut self, i: Initializer) -> Embedding {
        self.embeddings_initializer = i;
        self
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Embedding {
        self.policy = p;
        self
    }
}

impl Layer for Embedding {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        m.insert("input_dim".into(), self.input_dim.into());
        m.insert("output_dim".into(), self.output_dim.into());
        m.insert(
            "embeddings_initializer".into(),
            initializer_config(&self.embeddings_initializer),
        );
        for k in [
            "embeddings_regularizer",
            "activity_regularizer",
            "embeddings_constraint",
        ] {
            m.insert(k.into(), serde_json::Value::Null);
        }
        m.insert("mask_zero".into(), false.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    fn build(&mut self, _input_shape: &[usize], device: &Device) -> Result<()> {
        if self.input_dim == 0 || self.output_dim == 0 {
            return Err(Error::arg(
                "Embedding",
                format!(
                    "layer {} needs input_dim and output_dim of at least 1, got {} and {}",
                    self.name, self.input_dim, self.output_dim
                ),
            ));
        }
        let t = self.embeddings_initializer.init(
            &[self.input_dim, self.output_dim],
            self.policy.variable_dtype(),
            device,
        )?;
        self.embeddings = Some(Variable::new(t, &format!("{}/embeddings", self.name)));
        Ok(())
    }
    fn built(&self) -> bool {
        self.embeddings.is_some()
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let mut s = input_shape.to_vec();
        s.push(self.output_dim);
        Ok(s)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if x.rank() < 1 {
            return Err(Error::shape(
                "Embedding",
                &[x.shape()],
                format!("layer {} expects indices with a batch axis", self.name),
            ));
        }
        if !self.built() {
            self.build(&x.shape()[1..], x.device())?;
        }
        let table = weight(&self.embeddings, &self.name, "embeddings")?.value();
        let idx = match x.dtype() {
            DType::I32 => x.clone(),
            DType::Bool => {
                return Err(Error::dtype(
                    "Embedding",
                    &[x.dtype()],
                    format!("layer {} takes integer or float indices", self.name),
                ));
            }
            _ => x.cast(DType::I32)?,
        };
        let rows = layout::gather(&table, &idx, 0)?;
        let dt = self.policy.compute_dtype();
        if rows.dtype() == dt { Ok(rows) } else { rows.cast(dt) }
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.embeddings.iter().map(|v| ("embeddings", v.clone())).collect()
    }
}

/// Padding of a 1-D convolution: Keras' "valid", "same" or "causal" (zeros
/// before the sequence only, so step t sees steps up to t).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding1D {
    /// No padding.
    Valid,
    /// Output length `ceil(steps / stride)`.
    Same,
    /// `(kernel_size - 1) * dilation_rate` zeros before the sequence.
    Causal,
}

impl Padding1D {
    fn of(name: &str) -> Result<Padding1D> {
        match name {
            "valid" => Ok(Padding1D::Valid),
            "same" => Ok(Padding1D::Same),
            "causal" => Ok(Padding1D::Causal),
            _ => Err(Error::arg(
                "padding",
                format!("{name:?} is not \"valid\", \"same\" or \"causal\""),
            )),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Padding1D::Valid => "valid",
            Padding1D::Same => "same",
            Padding1D::Causal => "causal",
        }
    }
}

/// `[batch, steps, channels]` as the one-row image `[batch, 1, steps,
/// channels]` the 2-D kernels take, and back: how the 1-D layers run.
fn as_image(x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    x.reshape(&[-1, 1, s[1] as isize, s[2] as isize])
}

fn from_image(y: &Tensor) -> Result<Tensor> {
    let s = y.shape();
    y.reshape(&[-1, s[2] as isize, s[3] as isize])
}

fn expect_sequences(kind: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 3 {
        return Err(Error::shape(kind, &[x.shape()], "expects [batch, steps, channels]"));
    }
    Ok(())
}

/// `keras.layers.Conv1D` over `[batch, steps, channels]` (channels last):
/// the kernel is `[kernel_size, channels, filters]`; it runs as a
/// one-row 2-D convolution, so its gradients and exports are those of
/// `Conv2D`.
pub struct Conv1D {
    name: String,
    /// Output channels.
    pub filters: usize,
    /// Taps of the kernel.
    pub kernel_size: usize,
    /// Step between windows (1).
    pub strides: usize,
    /// "valid" (default), "same" or "causal".
    pub padding: Padding1D,
    /// Spacing of the taps (1).
    pub dilation_rate: usize,
    /// Applied to the output (`Linear` by default).
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

impl Conv1D {
    /// `Conv1D(filters, kernel_size)` with Keras' defaults.
    pub fn new(filters: usize, kernel_size: usize) -> Conv1D {
        Conv1D {
            name: unique_name("conv1d"),
            filters,
            kernel_size,
            strides: 1,
            padding: Padding1D::Valid,
            dilation_rate: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            policy: global_policy(),
            kernel: None,
            bias: None,
        }
    }
    /// `strides=`.
    pub fn strides(mut self, s: usize) -> Conv1D {
        self.strides = s;
        self
    }
    /// `padding=`: "valid", "same" or "causal".
    ///
    /// Returns [`Error::InvalidArgument`] for another name.
    pub fn padding(mut self, p: &str) -> Result<Conv1D> {
        self.padding = Padding1D::of(p)?;
        Ok(self)
    }
    /// `dilation_rate=`.
    pub fn dilation_rate(mut self, d: usize) -> Conv1D {
        self.dilation_rate = d;
        self
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Conv1D {
        self.activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Conv1D {
        self.use_bias = b;
        self
    }
    /// `kernel_initializer=`.
    pub fn kernel_initializer(mut self, i: Initializer) -> Conv1D {
        self.kernel_initializer = i;
        self
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Conv1D {
        self.policy = p;
        self
    }

    /// The 2-D form of the options, and the zeros to put before the
    /// sequence (causal padding).
    fn plan(&self) -> (conv::Conv2d, usize) {
        let (padding, before) = match self.padding {
            Padding1D::Valid => (conv::Padding::Valid, 0),
            Padding1D::Same => (conv::Padding::Same, 0),
            Padding1D::Causal => (
                conv::Padding::Valid,
                self.kernel_size.saturating_sub(1).saturating_mul(self.dilation_rate),
            ),
        };
        let a = conv::Conv2d {
            strides: [1, self.strides],
            padding,
            dilations: [1, self.dilation_rate],
            groups: 1,
        };
        (a, before)
    }
}

impl Layer for Conv1D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let shape = ConvShape {
            filters: self.filters,
            kernel_size: serde_json::json!([self.kernel_size]),
            strides: serde_json::json!([self.strides]),
            padding: self.padding.name(),
            dilation_rate: serde_json::json!([self.dilation_rate]),
            groups: 1,
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
        "Conv1D"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        let [_, c] = input_shape else {
            return Err(Error::shape(
                "Conv1D",
                &[input_shape],
                "expects examples [steps, channels]",
            ));
        };
        if self.kernel_size == 0 || self.strides == 0 || self.dilation_rate == 0 {
            return Err(Error::arg(
                "Conv1D",
                format!(
                    "layer {}: kernel_size, strides and dilation_rate must be at least 1",
                    self.name
                ),
            ));
        }
        let vt = self.policy.variable_dtype();
        let k = self
            .kernel_initializer
            .init(&[self.kernel_size, *c, self.filters], vt, device)?;
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
        let [steps, _] = s else {
            return Err(Error::shape("Conv1D", &[s], "expects examples [steps, channels]"));
        };
        let (a, before) = self.plan();
        let (_, w) = a.dims("Conv1D", 1, steps.saturating_add(before), 1, self.kernel_size)?;
        Ok(vec![w.out, self.filters])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        expect_sequences("Conv1D", x)?;
        if !self.built() {
            self.build(&x.shape()[1..], x.device())?;
        }
        let (a, before) = self.plan();
        let (k, f) = (self.kernel_size as isize, self.filters as isize);
        let kernel = ("kernel", &self.kernel);
        conv_forward(
            x,
            &self.policy,
            &self.name,
            kernel,
            &self.bias,
            self.activation,
            |x, w| {
                let x = if before > 0 {
                    layout::pad(x, &[(0, 0), (before, 0), (0, 0)])?
                } else {
                    x.clone()
                };
                let c = w.shape().get(1).copied().unwrap_or(0) as isize;
                let w = w.reshape(&[1, k, c, f])?;
                let y = conv::conv2d(&as_image(&x)?, &w, a.strides, a.padding, a.dilations)?;
                from_image(&y)
            },
        )
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        kernel_and_bias(("kernel", &self.kernel), &self.bias)
    }
}

/// `keras.layers.MaxPooling1D` (`MAX = true`) and `AveragePooling1D` over
/// `[batch, steps, channels]` (strides default to the pool size): one-row
/// 2-D pooling.
pub struct Pooling1D<const MAX: bool> {
    name: String,
    /// Steps per window (2).
    pub pool_size: usize,
    /// Step between windows (the pool size).
    pub strides: usize,
    /// "valid" (default) or "same".
    pub padding: conv::Padding,
}

/// `keras.layers.MaxPooling1D`.
pub type MaxPooling1D = Pooling1D<true>;
/// `keras.layers.AveragePooling1D`: padding is left out of each mean.
pub type AveragePooling1D = Pooling1D<false>;

impl<const MAX: bool> Pooling1D<MAX> {
    /// `MaxPooling1D(pool_size)` / `AveragePooling1D(pool_size)`.
    pub fn new(pool_size: usize) -> Self {
        Pooling1D {
            name: unique_name(if MAX { "max_pooling1d" } else { "average_pooling1d" }),
            pool_size,
            strides: pool_size,
            padding: conv::Padding::Valid,
        }
    }
    /// `strides=`.
    pub fn strides(mut self, s: usize) -> Self {
        self.strides = s;
        self
    }
    /// `padding=`: "valid" or "same".
    ///
    /// Returns [`Error::InvalidArgument`] for another name.
    pub fn padding(mut self, p: &str) -> Result<Self> {
        self.padding = padding_of(p)?;
        Ok(self)
    }
    fn kind_name() -> &'static str {
        if MAX { "MaxPooling1D" } else { "AveragePooling1D" }
    }
}

impl<const MAX: bool> Layer for Pooling1D<MAX> {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("pool_size".into(), serde_json::json!([self.pool_size]));
        m.insert("padding".into(), padding_name(self.padding, &self.name)?.into());
        m.insert("strides".into(), serde_json::json!([self.strides]));
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
        Self::kind_name()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let [steps, c] = s else {
            return Err(Error::shape(self.kind(), &[s], "expects examples [steps, channels]"));
        };
        let a = conv::Conv2d {
            strides: [1, self.strides],
            padding: self.padding,
            dilations: [1, 1],
            groups: 1,
        };
        let (_, w) = a.dims(self.kind(), 1, *steps, 1, self.pool_size)?;
        Ok(vec![w.out, *c])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        expect_sequences(self.kind(), x)?;
        let (k, s) = ([1, self.pool_size], [1, self.strides]);
        let y = if MAX {
            pool::max_pool2d(&as_image(x)?, k, s, self.padding)?
        } else {
            pool::avg_pool2d(&as_image(x)?, k, s, self.padding)?
        };
        from_image(&y)
    }
}
