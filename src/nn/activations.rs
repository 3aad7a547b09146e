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
            _ => {
                return Err(Error::arg(
                    "Activation",
                    format!(
                        "unknown activation {name:?}; known: linear relu relu6 sigmoid tanh softmax gelu elu selu softplus swish"
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
        }
    }
}
