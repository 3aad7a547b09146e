//! Activation functions by Keras name, as in `keras.activations`.
//!
//! [`Activation`] is what a layer's `activation` argument takes (see
//! [`crate::nn::layers::Dense`] and [`crate::nn::layers::Conv2D`]); each
//! variant is one elementwise op from [`crate::ops`], so its gradient comes
//! from the op's rule in [`crate::autodiff`]. Losses that take logits
//! ([`crate::nn::losses`]) expect the model's last layer to stay `Linear`.

use crate::core::error::{Error, Result};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// An activation function, as named by `keras.activations` (the `activation`
/// argument of Keras layers). The default, `Linear`, is Keras' `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// `linear`: the identity; no op is recorded.
    #[default]
    Linear,
    /// `relu`: `max(x, 0)`.
    Relu,
    /// `relu6`: `min(max(x, 0), 6)`.
    Relu6,
    /// `sigmoid`: `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh`: hyperbolic tangent.
    Tanh,
    /// `softmax` over the last axis.
    Softmax,
    /// `gelu` with Keras' default `approximate=False` (the erf form).
    Gelu,
    /// `elu` with `alpha=1.0`.
    Elu,
    /// `selu`: scaled ELU with the self-normalizing constants.
    Selu,
    /// `softplus`: `log(1 + exp(x))`.
    Softplus,
    /// `swish` (also `silu`): `x * sigmoid(x)`.
    Swish,
    /// `hard_sigmoid`: `relu6(x + 3) / 6`, as Keras computes it.
    HardSigmoid,
    /// `hard_silu` (also `hard_swish`): `x * hard_sigmoid(x)`.
    HardSilu,
    /// `mish`: `x * tanh(softplus(x))`.
    Mish,
    /// `softsign`: `x / (1 + |x|)`.
    Softsign,
    /// `exponential`: `exp(x)`.
    Exponential,
    /// `leaky_relu` with Keras' activation default `negative_slope=0.2`.
    LeakyRelu,
    /// `log_softmax` over the last axis.
    LogSoftmax,
}

/// Keras' `relu6(x + 3) / 6`, composed of ops that every export format has.
fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    x.add_scalar(3.0)?.relu6()?.div_scalar(6.0)
}

impl Activation {
    /// Looks up a Keras activation name ("relu", "softmax", ...); `""` is
    /// `linear` and `"silu"` is `swish`, as in `keras.activations.get`.
    ///
    /// Returns [`Error::InvalidArgument`] naming the known activations for
    /// any other name.
    pub fn from_name(name: &str) -> Result<Activation> {
        Ok(match name {
            "linear" | "" => Activation::Linear,
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "gelu" => Activation::Gelu,
            "elu" => Activation::Elu,
            "selu" => Activation::Selu,
            "softplus" => Activation::Softplus,
            "swish" | "silu" => Activation::Swish,
            "hard_sigmoid" => Activation::HardSigmoid,
            "hard_silu" | "hard_swish" => Activation::HardSilu,
            "mish" => Activation::Mish,
            "softsign" => Activation::Softsign,
            "exponential" => Activation::Exponential,
            "leaky_relu" => Activation::LeakyRelu,
            "log_softmax" => Activation::LogSoftmax,
            _ => {
                return Err(Error::arg(
                    "Activation",
                    format!(
                        "unknown activation {name:?}; known: linear relu relu6 sigmoid tanh softmax gelu elu selu softplus swish hard_sigmoid hard_silu mish softsign exponential leaky_relu log_softmax"
                    ),
                ));
            }
        })
    }

    /// The Keras name, as written in a model's config; the inverse of
    /// [`Activation::from_name`].
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Gelu => "gelu",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::Softplus => "softplus",
            Activation::Swish => "swish",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::HardSilu => "hard_silu",
            Activation::Mish => "mish",
            Activation::Softsign => "softsign",
            Activation::Exponential => "exponential",
            Activation::LeakyRelu => "leaky_relu",
            Activation::LogSoftmax => "log_softmax",
        }
    }

    /// Applies the activation elementwise (softmax: over the last axis);
    /// `Linear` returns `x` itself without recording an op.
    ///
    /// Errors are those of the underlying op (e.g. a non-float dtype).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.relu6(),
            // Keras keeps the scores of these two on their output, so that
            // a cross-entropy loss computes from them exactly.
            Activation::Sigmoid => Ok(x.sigmoid()?.with_logits(x)),
            Activation::Tanh => x.tanh(),
            Activation::Softmax => Ok(softmax::softmax(x, -1)?.with_logits(x)),
            Activation::Gelu => x.gelu(),
            Activation::Elu => x.elu(),
            Activation::Selu => x.selu(),
            Activation::Softplus => x.softplus(),
            Activation::Swish => x.silu(),
            Activation::HardSigmoid => hard_sigmoid(x),
            Activation::HardSilu => x.mul(&hard_sigmoid(x)?),
            Activation::Mish => x.mul(&x.softplus()?.tanh()?),
            Activation::Softsign => x.softsign(),
            Activation::Exponential => x.exp(),
            Activation::LeakyRelu => x.leaky_relu(0.2),
            Activation::LogSoftmax => x.log_softmax(-1),
        }
    }
}
