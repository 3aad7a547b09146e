//! Normalizations over the features of each example: `LayerNormalization`,
//! `GroupNormalization` and `RMSNormalization` (batch normalization is in
//! the parent module); the preprocessing `Normalization` with fixed
//! statistics, and `LayerScale`, ConvNeXt's learned scale per feature. Each computes in at least f32, as Keras does, and
//! returns the input's dtype.

use super::{Layer, base_config, ensure_built, in_dtype, initializer_config, unique_name, weight};
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

/// `keras.layers.Normalization`: `(x - mean) / max(sqrt(variance), 1e-7)`
/// with statistics per position of the kept axes (the last by default),
/// fixed in the config or taken from data by [`Normalization::adapt`];
/// with `invert`, `mean + x * max(sqrt(variance), 1e-7)`.
///
/// Without fixed statistics the weights are `mean`, `variance` and
/// `count` (not trainable), as Keras saves them.
pub struct Normalization {
    name: String,
    /// Kept axes of the input, batch axis 0 (Keras' `axis`; `[-1]` by
    /// default, empty for one mean and variance over everything).
    pub axis: Vec<isize>,
    /// Whether the layer undoes the normalization.
    pub invert: bool,
    /// Statistics from the config (row-major over the kept axes, or one
    /// value for all).
    fixed: Option<(Vec<f32>, Vec<f32>)>,
    /// The statistics: variables, or constants made from `fixed`.
    mean: Option<Variable>,
    variance: Option<Variable>,
    count: Option<Variable>,
    /// The example shape the layer was built for.
    shape: Option<Vec<usize>>,
}

/// Keras' `backend.epsilon()`, the floor of the standard deviation.
const NORM_EPSILON: f64 = 1e-7;

impl Normalization {
    /// `Normalization(axis=-1)`: statistics come from [`Normalization::adapt`].
    pub fn new() -> Normalization {
        Normalization {
            name: unique_name("normalization"),
            axis: vec![-1],
            invert: false,
            fixed: None,
            mean: None,
            variance: None,
            count: None,
            shape: None,
        }
    }
    /// `axis=`: the kept axes, counted with the batch as axis 0.
    pub fn axis(mut self, axis: &[isize]) -> Self {
        self.axis = axis.to_vec();
        self
    }
    /// `mean=`, `variance=`: fixed statistics, one value per position of
    /// the kept axes (row-major), or one value for all.
    pub fn with_stats(mut self, mean: Vec<f32>, variance: Vec<f32>) -> Self {
        self.fixed = Some((mean, variance));
        self
    }
    /// `invert=True`.
    pub fn invert(mut self, invert: bool) -> Self {
        self.invert = invert;
        self
    }
    fn shape_err(&self, s: &[usize], msg: impl std::fmt::Display) -> Error {
        Error::shape("Normalization", &[s], format!("layer {}: {msg}", self.name))
    }
    /// The kept example axes (batch excluded) for examples of shape `s`.
    fn kept(&self, s: &[usize]) -> Result<Vec<usize>> {
        let full = s.len() as isize + 1;
        let mut kept = Vec::new();
        for &a in &self.axis {
            let k = if a < 0 { a + full } else { a };
            if k <= 0 || k >= full {
                return Err(self.shape_err(
                    s,
                    format!("axis {a} is not an axis of the examples (the batch is axis 0)"),
                ));
            }
            let k = (k - 1) as usize;
            if !kept.contains(&k) {
                kept.push(k);
            }
        }
        kept.sort_unstable();
        Ok(kept)
    }
    /// How many statistics the kept axes of examples `s` hold.
    fn stats_len(&self, s: &[usize], kept: &[usize]) -> Result<usize> {
        kept.iter()
            .try_fold(1usize, |n, &k| n.checked_mul(s[k]))
            .ok_or_else(|| self.shape_err(s, "the kept axes hold more statistics than fit in memory"))
    }
    /// `[1, ...]`: the kept axes' sizes, 1 elsewhere.
    fn broadcast_shape(&self, s: &[usize]) -> Result<Vec<isize>> {
        let mut b = vec![1isize; s.len() + 1];
        for k in self.kept(s)? {
            b[k + 1] = s[k] as isize;
        }
        Ok(b)
    }
    /// Keras' `adapt(data)`: the mean and (biased) variance of `data`
    /// (`[samples, ...]`) over every axis but the kept ones; builds the
    /// layer for `data`'s examples first if needed.
    pub fn adapt(&mut self, data: &Tensor) -> Result<()> {
        if self.fixed.is_some() {
            return Err(Error::arg(
                "Normalization",
                format!(
                    "layer {} has fixed statistics; adapt takes a layer without them",
                    self.name
                ),
            ));
        }
        if data.rank() < 2 || data.shape()[0] == 0 {
            return Err(self.shape_err(data.shape(), "adapt needs [samples, ...] with at least one sample"));
        }
        ensure_built(self, data, 2)?;
        let s = &data.shape()[1..];
        if self.shape.as_deref() != Some(s) {
            return Err(self.shape_err(s, format!("the layer was built for examples {:?}", self.shape)));
        }
        let kept = self.kept(s)?;
        let x = wide(data)?;
        let reduce: Vec<isize> = (0..=s.len())
            .filter(|&a| a == 0 || !kept.contains(&(a - 1)))
            .map(|a| a as isize)
            .collect();
        let mean = x.mean(Some(&reduce), true)?;
        let var = x.sub(&mean)?.square()?.mean(Some(&reduce), false)?;
        let n = self.stats_len(s, &kept)?;
        let kept_shape: Vec<isize> = kept.iter().map(|&k| s[k] as isize).collect();
        let flat = |t: &Tensor| -> Result<Tensor> { t.reshape(&kept_shape)?.cast(DType::F32) };
        weight(&self.mean, &self.name, "mean")?.assign(&flat(&mean)?)?;
        weight(&self.variance, &self.name, "variance")?.assign(&flat(&var)?)?;
        let samples = data.numel() / n.max(1);
        let c = Tensor::full(&[], samples as f64, DType::I32, data.device())?;
        weight(&self.count, &self.name, "count")?.assign(&c)
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Normalization {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("axis".into(), serde_json::json!(self.axis));
        m.insert("invert".into(), self.invert.into());
        let (mean, var) = match &self.fixed {
            Some((m, v)) => (serde_json::json!(m), serde_json::json!(v)),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        m.insert("mean".into(), mean);
        m.insert("variance".into(), var);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Normalization"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        let kept = self.kept(s)?;
        let n = self.stats_len(s, &kept)?;
        let kept_shape: Vec<usize> = kept.iter().map(|&k| s[k]).collect();
        let var = |t: Tensor, w: &str| Variable::with_trainable(t, &format!("{}/{w}", self.name), false);
        // One value for all is filled on the device, not spelled out here.
        let stat = |x: &[f32], what: &str| -> Result<Tensor> {
            match x {
                [one] => Tensor::full(&kept_shape, f64::from(*one), DType::F32, device),
                x if x.len() == n => Tensor::from_vec(x.to_vec(), &kept_shape, device),
                x => Err(self.shape_err(
                    s,
                    format!("{what} has {} values; the kept axes {:?} hold {n}", x.len(), self.axis),
                )),
            }
        };
        match &self.fixed {
            Some((m, v)) => {
                let (m, v) = (var(stat(m, "mean")?, "mean"), var(stat(v, "variance")?, "variance"));
                self.mean = Some(m);
                self.variance = Some(v);
            }
            None => {
                let (m, v) = (stat(&[0.0], "mean")?, stat(&[1.0], "variance")?);
                self.mean = Some(var(m, "mean"));
                self.variance = Some(var(v, "variance"));
                self.count = Some(var(Tensor::full(&[], 0.0, DType::I32, device)?, "count"));
            }
        }
        self.shape = Some(s.to_vec());
        Ok(())
    }
    fn built(&self) -> bool {
        self.shape.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        self.kept(s)?;
        Ok(s.to_vec())
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        if self.fixed.is_some() {
            return Vec::new();
        }
        [
            ("mean", &self.mean),
            ("variance", &self.variance),
            ("count", &self.count),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.clone().map(|v| (n, v)))
        .collect()
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 1)?;
        let s = &x.shape()[1..];
        if self.shape.as_deref() != Some(s) {
            return Err(self.shape_err(s, format!("the layer was built for examples {:?}", self.shape)));
        }
        let x = if x.dtype().is_float() {
            x.clone()
        } else {
            x.cast(DType::F32)?
        };
        let b = self.broadcast_shape(s)?;
        let stat = |v: &Option<Variable>, w: &str| -> Result<Tensor> {
            in_dtype(weight(v, &self.name, w)?.value(), x.dtype())?.reshape(&b)
        };
        let (mean, var) = (stat(&self.mean, "mean")?, stat(&self.variance, "variance")?);
        let std = var.sqrt()?.maximum(&var.scalar_like(NORM_EPSILON)?)?;
        if self.invert {
            mean.add(&x.mul(&std)?)
        } else {
            x.sub(&mean)?.div(&std)
        }
    }
}

/// `keras.applications.convnext.LayerScale`: `x * gamma`, one trainable
/// `gamma` per feature of the last axis, initialized to `init_values`.
pub struct LayerScale {
    name: String,
    /// `gamma`'s initial value.
    pub init_values: f64,
    /// The features of the last axis.
    pub projection_dim: usize,
    gamma: Option<Variable>,
}

impl LayerScale {
    /// `LayerScale(init_values, projection_dim)`.
    pub fn new(init_values: f64, projection_dim: usize) -> LayerScale {
        LayerScale {
            name: unique_name("layer_scale"),
            init_values,
            projection_dim,
            gamma: None,
        }
    }
}

impl Layer for LayerScale {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("init_values".into(), self.init_values.into());
        m.insert("projection_dim".into(), self.projection_dim.into());
        Ok(m.into())
    }
    fn keras_module(&self) -> (&'static str, Option<&'static str>) {
        ("keras.src.applications.convnext", Some("LayerScale"))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "LayerScale"
    }
    fn build(&mut self, s: &[usize], device: &Device) -> Result<()> {
        self.output_shape(s)?;
        self.gamma = Some(feature_weight(
            &self.name,
            "gamma",
            Initializer::Constant(self.init_values),
            self.projection_dim,
            device,
        )?);
        Ok(())
    }
    fn built(&self) -> bool {
        self.gamma.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        match s.last() {
            Some(&c) if c == self.projection_dim => Ok(s.to_vec()),
            _ => Err(Error::shape(
                "LayerScale",
                &[s],
                format!(
                    "layer {}: the last axis must be projection_dim {}",
                    self.name, self.projection_dim
                ),
            )),
        }
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.gamma.clone().map(|g| ("gamma", g)).into_iter().collect()
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built(self, x, 2)?;
        self.output_shape(&x.shape()[1..])?;
        x.mul(&in_dtype(weight(&self.gamma, &self.name, "gamma")?.value(), x.dtype())?)
    }
}

#[cfg(test)]
mod preprocessing_tests {
    use super::*;

    #[test]
    fn normalization_adapts_inverts_and_refuses_bad_statistics() {
        let d = Device::cpu();
        let data = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 30.0], &[2, 2], &d).unwrap();
        let mut n = Normalization::new();
        n.adapt(&data).unwrap();
        let y = n.call(&data, false).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, [-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(n.weights().len(), 3);
        let mut inv = Normalization::new()
            .with_stats(vec![2.0, 20.0], vec![1.0, 100.0])
            .invert(true);
        let back = inv
            .call(&Tensor::from_vec(vec![-1.0f32, -1.0], &[1, 2], &d).unwrap(), false)
            .unwrap();
        assert_eq!(back.to_vec::<f32>().unwrap(), [1.0, 10.0]);
        assert!(inv.weights().is_empty(), "fixed statistics are not weights");
        // A zero variance divides by Keras' epsilon, not by zero.
        let mut flat = Normalization::new().with_stats(vec![0.0], vec![0.0]);
        let y = flat
            .call(&Tensor::from_vec(vec![1e-7f32], &[1, 1], &d).unwrap(), false)
            .unwrap();
        assert!((y.to_vec::<f32>().unwrap()[0] - 1.0).abs() < 1e-6);
        let mut wrong = Normalization::new().with_stats(vec![0.0; 3], vec![1.0; 3]);
        assert!(matches!(wrong.call(&data, false), Err(Error::Shape { .. })));
        let mut batch_axis = Normalization::new().axis(&[0]);
        assert!(matches!(batch_axis.call(&data, false), Err(Error::Shape { .. })));
        assert!(inv.adapt(&data).is_err(), "fixed statistics do not adapt");
    }
}
