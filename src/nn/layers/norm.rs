//! Normalizations over the features of each example: `LayerNormalization`,
//! `GroupNormalization` and `RMSNormalization` (batch normalization is in
//! the parent module). Each computes in at least f32, as Keras does, and
//! returns the input's dtype.

use super::{Layer, base_config, ensure_built, in_dtype, initializer_config, unique_name};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::initializers::Initializer;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// `x` in f32 (f64 stays f64): the dtype the statistics are taken in.
fn wide(x: &Tensor) -> Result<Tensor> {
    let dt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    in_dtype(x.clone(), dt)
}

/// A `[features]` weight named `<layer>/<w>`.
fn feature_weight(layer: &str, w: &str, init: Initializer, c: usize, device: &Device) -> Result<Variable> {
    Ok(Variable::new(
        init.init(&[c], DType::F32, device)?,
        &format!("{layer}/{w}"),
    ))
}

/// The optional `gamma` (scale) and `beta` (center), one per feature, of
/// layer and group normalization.
#[derive(Default)]
struct Affine {
    gamma: Option<Variable>,
    beta: Option<Variable>,
}

impl Affine {
    fn build(layer: &str, c: usize, scale: bool, center: bool, device: &Device) -> Result<Affine> {
        let make = |on: bool, w: &str, init: Initializer| -> Result<Option<Variable>> {
            if on {
                Ok(Some(feature_weight(layer, w, init, c, device)?))
            } else {
                Ok(None)
            }
        };
        Ok(Affine {
            gamma: make(scale, "gamma", Initializer::Ones)?,
            beta: make(center, "beta", Initializer::Zeros)?,
        })
    }
    fn built(&self, scale: bool, center: bool) -> bool {
        (self.gamma.is_some() || !scale) && (self.beta.is_some() || !center)
    }
    /// `x * inv + shift` with gamma folded into `inv = rsqrt(var + eps)`
    /// and beta into the shift `-mean * inv + beta`, as Keras computes it;
    /// `shape` lays the weights out against `x`.
    fn apply(&self, x: &Tensor, mean: &Tensor, var: &Tensor, epsilon: f64, shape: &[isize]) -> Result<Tensor> {
        let w = |v: &Variable| -> Result<Tensor> { in_dtype(v.value(), x.dtype())?.reshape(shape) };
        let mut inv = var.add_scalar(epsilon)?.rsqrt()?;
        if let Some(g) = &self.gamma {
            inv = inv.mul(&w(g)?)?;
        }
        let mut shift = mean.neg()?.mul(&inv)?;
        if let Some(b) = &self.beta {
            shift = shift.add(&w(b)?)?;
        }
        x.mul(&inv)?.add(&shift)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let named = [("gamma", &self.gamma), ("beta", &self.beta)];
        named
            .into_iter()
            .filter_map(|(n, v)| v.clone().map(|v| (n, v)))
            .collect()
    }
    /// The Keras config entries of `center`, `scale` and their weights.
    fn config(m: &mut serde_json::Map<String, serde_json::Value>, center: bool, scale: bool) {
        m.insert("center".into(), center.into());
        m.insert("scale".into(), scale.into());
        m.insert("beta_initializer".into(), initializer_config(&Initializer::Zeros));
        m.insert("gamma_initializer".into(), initializer_config(&Initializer::Ones));
        for k in [
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
        ] {
            m.insert(k.into(), serde_json::Value::Null);
        }
    }
}

/// `keras.layers.LayerNormalization` over the last axis: each example's
/// features to mean 0 and variance 1 (`epsilon` 1e-3 added to the
/// variance), then scaled by `gamma` and shifted by `beta`, as Keras
/// computes it (in f32 for 16-bit inputs, the result in the input's dtype).
///
/// Weights, both `[features]` and trainable: `gamma` (with `scale`) and
/// `beta` (with `center`).
pub struct LayerNormalization {
    name: String,
    /// Added to the variance (1e-3).
    pub epsilon: f64,
    /// Whether `beta` is added (true).
    pub center: bool,
    /// Whether `gamma` multiplies (true).
    pub scale: bool,
    affine: Affine,
}

impl LayerNormalization {
    /// `LayerNormalization()` with Keras' defaults.
    pub fn new() -> LayerNormalization {
        LayerNormalization {
            name: unique_name("layer_normalization"),
            epsilon: 1e-3,
            center: true,
            scale: true,
            affine: Affine::default(),
        }
    }
    /// `epsilon=`.
    pub fn epsilon(self, epsilon: f64) -> Self {
        LayerNormalization { epsilon, ..self }
    }
}

impl Default for LayerNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for LayerNormalization {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("axis".into(), serde_json::json!([-1]));
        m.insert("epsilon".into(), self.epsilon.into());
        m.insert("rms_scaling".into(), false.into());
        Affine::config(&mut m, self.center, self.scale);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "LayerNormalization"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        let Some(&c) = s.last() else {
            return Err(Error::shape("LayerNormalization", &[s], "needs a feature axis"));
        };
        self.affine = Affine::build(&self.name, c, self.scale, self.center, device)?;
        Ok(())
    }
    fn built(&self) -> bool {
        self.affine.built(self.scale, self.center)
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        let xf = wide(x)?;
        let mean = xf.mean(Some(&[-1]), true)?;
        let var = xf.squared_difference(&mean)?.mean(Some(&[-1]), true)?;
        let y = self.affine.apply(&xf, &mean, &var, self.epsilon, &[-1])?;
        in_dtype(y, x.dtype())
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.affine.weights()
    }
}

/// `keras.layers.GroupNormalization` over the last axis: the features are
/// split into `groups` groups, and each example is normalized over every
/// other axis within each group; then `gamma` and `beta` per feature.
pub struct GroupNormalization {
    name: String,
    /// The number of groups (32); the features must divide into them.
    pub groups: usize,
    /// Added to the variance (1e-3).
    pub epsilon: f64,
    /// Whether `beta` is added (true).
    pub center: bool,
    /// Whether `gamma` multiplies (true).
    pub scale: bool,
    affine: Affine,
}

impl GroupNormalization {
    /// `GroupNormalization(groups)` with Keras' defaults.
    pub fn new(groups: usize) -> GroupNormalization {
        GroupNormalization {
            name: unique_name("group_normalization"),
            groups,
            epsilon: 1e-3,
            center: true,
            scale: true,
            affine: Affine::default(),
        }
    }
    /// `epsilon=`.
    pub fn epsilon(mut self, e: f64) -> GroupNormalization {
        self.epsilon = e;
        self
    }
    fn check(&self, s: &[usize], c: usize) -> Result<()> {
        if self.groups == 0 || c % self.groups != 0 {
            return Err(Error::shape(
                "GroupNormalization",
                &[s],
                format!(
                    "layer {}: {c} features do not divide into {} groups",
                    self.name, self.groups
                ),
            ));
        }
        Ok(())
    }
}

impl Layer for GroupNormalization {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("groups".into(), self.groups.into());
        m.insert("axis".into(), (-1).into());
        m.insert("epsilon".into(), self.epsilon.into());
        Affine::config(&mut m, self.center, self.scale);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "GroupNormalization"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        let Some(&c) = s.last() else {
            return Err(Error::shape("GroupNormalization", &[s], "needs a feature axis"));
        };
        self.check(s, c)?;
        self.affine = Affine::build(&self.name, c, self.scale, self.center, device)?;
        Ok(())
    }
    fn built(&self) -> bool {
        self.affine.built(self.scale, self.center)
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        let (r, c) = (x.rank(), x.shape()[x.rank() - 1]);
        self.check(x.shape(), c)?;
        let g = self.groups;
        // [b, ..., c] as [b, ..., groups, c / groups]; statistics over every
        // axis but the batch and the group.
        let mut grouped: Vec<isize> = x.shape()[..r - 1].iter().map(|&d| d as isize).collect();
        grouped[0] = -1;
        grouped.extend([g as isize, (c / g) as isize]);
        let xf = wide(x)?.reshape(&grouped)?;
        let axes: Vec<isize> = (1..=r as isize).filter(|&a| a != r as isize - 1).collect();
        let mean = xf.mean(Some(&axes), true)?;
        let var = xf.squared_difference(&mean)?.mean(Some(&axes), true)?;
        let y = self
            .affine
            .apply(&xf, &mean, &var, self.epsilon, &[g as isize, (c / g) as isize])?;
        let back: Vec<isize> = std::iter::once(-1)
            .chain(x.shape()[1..].iter().map(|&d| d as isize))
            .collect();
        in_dtype(y.reshape(&back)?, x.dtype())
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.affine.weights()
    }
}

/// `keras.layers.RMSNormalization` over the last axis:
/// `x / sqrt(mean(x^2) + epsilon) * scale`, `scale` one weight per feature.
pub struct RMSNormalization {
    name: String,
    /// Added to the mean square (1e-6).
    pub epsilon: f64,
    scale: Option<Variable>,
}

impl RMSNormalization {
    /// `RMSNormalization()` with Keras' defaults.
    pub fn new() -> RMSNormalization {
        RMSNormalization {
            name: unique_name("rms_normalization"),
            epsilon: 1e-6,
            scale: None,
        }
    }
    /// `epsilon=`.
    pub fn epsilon(mut self, e: f64) -> RMSNormalization {
        self.epsilon = e;
        self
    }
}

impl Default for RMSNormalization {
    fn default() -> Self {
        RMSNormalization::new()
    }
}

impl Layer for RMSNormalization {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("axis".into(), (-1).into());
        m.insert("epsilon".into(), self.epsilon.into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "RMSNormalization"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        let Some(&c) = s.last() else {
            return Err(Error::shape("RMSNormalization", &[s], "needs a feature axis"));
        };
        self.scale = Some(feature_weight(&self.name, "scale", Initializer::Ones, c, device)?);
        Ok(())
    }
    fn built(&self) -> bool {
        self.scale.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        let xf = wide(x)?;
        let rrms = xf
            .square()?
            .mean(Some(&[-1]), true)?
            .add_scalar(self.epsilon)?
            .rsqrt()?;
        let mut y = xf.mul(&rrms)?;
        if let Some(s) = &self.scale {
            y = y.mul(&in_dtype(s.value(), xf.dtype())?)?;
        }
        in_dtype(y, x.dtype())
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.scale.iter().map(|s| ("scale", s.clone())).collect()
    }
}
