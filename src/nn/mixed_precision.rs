//! Keras mixed precision (`keras.mixed_precision`): a dtype policy says in
//! which dtype a layer computes and in which it keeps its variables.
//!
//! Under `"mixed_float16"` layers created afterwards compute in f16 (their
//! float inputs and weights are cast on the way in, so gradients flow back
//! to f32 variables), keep f32 variables, and a model's final output is
//! cast back to f32, so the loss is computed in f32. BatchNormalization
//! normalizes in f32, as Keras does. `Model::compile` wraps the optimizer in
//! a [`crate::nn::optimizers::LossScaleOptimizer`] under that policy (Keras'
//! `auto_scale_loss`). f16 runs on every adapter: where the adapter lacks
//! `SHADER_F16` the kernels compute in f32 and round to f16.
//!
//! `"mixed_bfloat16"` does the same in bf16, without loss scaling (bf16 has
//! f32's range, so gradients do not underflow; Keras does not scale either).
//! bf16 values are stored as halves and every op computes in f32 and rounds
//! its result to bf16 (WGSL has no bf16 type): it halves the memory of
//! activations, not their arithmetic.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::RwLock;

/// `keras.mixed_precision.Policy`: a compute dtype and a variable dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: &'static str,
    compute: DType,
    variable: DType,
}

impl Policy {
    /// `Policy(name)`: `"float32"`, `"float16"`, `"mixed_float16"`,
    /// `"bfloat16"` or `"mixed_bfloat16"`.
    ///
    /// Returns [`Error::InvalidArgument`] for any other name, listing these.
    pub fn new(name: &str) -> Result<Policy> {
        match name {
            "float32" => Ok(Policy::float32()),
            "float16" => Ok(Policy {
                name: "float16",
                compute: DType::F16,
                variable: DType::F16,
            }),
            "mixed_float16" => Ok(Policy::mixed_float16()),
            "bfloat16" => Ok(Policy {
                name: "bfloat16",
                compute: DType::BF16,
                variable: DType::BF16,
            }),
            "mixed_bfloat16" => Ok(Policy::mixed_bfloat16()),
            _ => Err(Error::arg(
                "mixed_precision.Policy",
                format!(
                    "unknown policy {name:?}: use \"float32\", \"float16\", \"mixed_float16\", \
                     \"bfloat16\" or \"mixed_bfloat16\""
                ),
            )),
        }
    }

    /// `"float32"`, the default: everything in f32.
    pub fn float32() -> Policy {
        Policy {
            name: "float32",
            compute: DType::F32,
            variable: DType::F32,
        }
    }

    /// `"mixed_float16"`: compute in f16, variables in f32.
    pub fn mixed_float16() -> Policy {
        Policy {
            name: "mixed_float16",
            compute: DType::F16,
            variable: DType::F32,
        }
    }

    /// `"mixed_bfloat16"`: compute in bf16, variables in f32.
    pub fn mixed_bfloat16() -> Policy {
        Policy {
            name: "mixed_bfloat16",
            compute: DType::BF16,
            variable: DType::F32,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The dtype layers compute in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The dtype layers keep their variables in.
    pub fn variable_dtype(&self) -> DType {
        self.variable
    }

    /// `x` in the compute dtype when it is a float tensor of another float
    /// dtype; `layer` names the layer in the error for a non-float input
    /// under a float16 policy.
    pub(crate) fn autocast(&self, x: &Tensor, layer: &str) -> Result<Tensor> {
        if x.dtype() == self.compute {
            return Ok(x.clone());
        }
        if !x.dtype().is_float() {
            if self.compute == DType::F32 {
                return Ok(x.clone());
            }
            return Err(Error::dtype(
                "mixed_precision",
                &[x.dtype()],
                format!(
                    "layer {layer} computes in {} under policy {}: it takes float inputs (cast integer inputs to float32 first)",
                    self.compute, self.name
                ),
            ));
        }
        x.cast(self.compute)
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::float32()
    }
}

static GLOBAL: RwLock<Option<Policy>> = RwLock::new(None);

/// `keras.mixed_precision.set_global_policy(name)`: the policy of the layers
/// created from now on.
///
/// Returns [`Error::InvalidArgument`] for an unknown policy name.
pub fn set_global_policy(name: &str) -> Result<()> {
    let p = Policy::new(name)?;
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
    Ok(())
}

/// `keras.mixed_precision.global_policy()` (`"float32"` unless set).
pub fn global_policy() -> Policy {
    GLOBAL
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}
