//! Layers over sequences of tokens: `Embedding` (the 1-D global poolings
//! are [`super::GlobalPooling`]).

use super::{Layer, base_config, initializer_config, policy_name, unique_name, weight};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::initializers::Initializer;
use crate::nn::mixed_precision::{Policy, global_policy};
use crate::ops::layout;
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
