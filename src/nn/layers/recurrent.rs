//! Recurrent layers: `SimpleRNN`, `LSTM` and `GRU` over `[batch, time,
//! features]`, as Keras 3's cells compute them, unrolled over the time
//! steps into ops of [`crate::ops`] (so gradients come from the tape and a
//! traced step or an export holds one copy of the cell per step).
//!
//! The input projection `x @ kernel + bias` of every step is one matmul per
//! gate before the loop; each step then adds `h @ recurrent_kernel`. The
//! first step starts from zero state without reading it (no tensor whose
//! size follows the batch is created, so exports keep the batch unknown).

use super::{Layer, base_config, in_dtype, initializer_config, policy_name, unique_name, weight};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::activations::Activation;
use crate::nn::initializers::Initializer;
use crate::nn::mixed_precision::{Policy, global_policy};
use crate::ops::layout;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// Which cell a [`Recurrent`] layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `keras.layers.SimpleRNN`: `h = act(x W + h U + b)`.
    Simple,
    /// `keras.layers.LSTM`: gates i, f, c, o (Keras' order in the kernels).
    Lstm,
    /// `keras.layers.GRU`: gates z, r, h (Keras' order in the kernels).
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Simple => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
    fn class(self) -> &'static str {
        match self {
            Cell::Simple => "SimpleRNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
    fn base(self) -> &'static str {
        match self {
            Cell::Simple => "simple_rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

/// A recurrent layer ([`SimpleRNN`], [`LSTM`], [`GRU`]): `[batch, time,
/// features]` to the last output `[batch, units]`, or every output
/// `[batch, time, units]` with `return_sequences`. Keras' defaults: `tanh`
/// activation, `sigmoid` recurrent activation, a bias, glorot-uniform
/// kernels, orthogonal recurrent kernels, the LSTM's forget-gate bias
/// starting at 1, the GRU's `reset_after`.
///
/// Not built: masking, dropout and recurrent dropout, `return_state`,
/// `stateful`, bidirectional wrappers.
pub struct Recurrent {
    name: String,
    cell: Cell,
    /// Size of the state and of each output.
    pub units: usize,
    /// The output's activation (`tanh`).
    pub activation: Activation,
    /// The gates' activation (`sigmoid`; SimpleRNN has none).
    pub recurrent_activation: Activation,
    /// Whether the cell adds biases.
    pub use_bias: bool,
    /// Every step's output rather than the last.
    pub return_sequences: bool,
    /// Runs over the time steps last to first (outputs in that order).
    pub go_backwards: bool,
    /// GRU only: the reset gate multiplies `h U + b` (Keras 3's and
    /// cuDNN's form, the default) rather than `h` before the product.
    pub reset_after: bool,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
    /// Whether `build` draws the recurrent kernel orthogonal (Keras'
    /// default) or leaves it zero (a layer whose weights come from a file).
    pub(crate) orthogonal_init: bool,
    kernel: Option<Variable>,
    recurrent_kernel: Option<Variable>,
    bias: Option<Variable>,
}

macro_rules! rnn_classes {
    ($($class:ident => $cell:ident: $doc:literal),*) => {$(
        #[doc = concat!("`keras.layers.", stringify!($class), "`: ", $doc, " `", stringify!($class), "::new(units)` makes the [`Recurrent`] layer.")]
        pub struct $class;
        impl $class {
            #[doc = concat!("`", stringify!($class), "(units)` with Keras' defaults.")]
            #[allow(clippy::new_ret_no_self)]
            pub fn new(units: usize) -> Recurrent {
                Recurrent::new(Cell::$cell, units)
            }
        }
    )*};
}

rnn_classes!(
    SimpleRNN => Simple: "a fully connected recurrence, `h = tanh(x W + h U + b)`.",
    LSTM => Lstm: "long short-term memory.",
    GRU => Gru: "a gated recurrent unit."
);

impl Recurrent {
    /// A layer of `cell` with `units` units and Keras' defaults.
    pub fn new(cell: Cell, units: usize) -> Recurrent {
        Recurrent {
            name: unique_name(cell.base()),
            cell,
            units,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            use_bias: true,
            return_sequences: false,
            go_backwards: false,
            reset_after: true,
            policy: global_policy(),
            orthogonal_init: true,
            kernel: None,
            recurrent_kernel: None,
            bias: None,
        }
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Recurrent {
        self.activation = a;
        self
    }
    /// `recurrent_activation=` (LSTM and GRU).
    pub fn recurrent_activation(mut self, a: Activation) -> Recurrent {
        self.recurrent_activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Recurrent {
        self.use_bias = b;
        self
    }
    /// `return_sequences=`.
    pub fn return_sequences(mut self, on: bool) -> Recurrent {
        self.return_sequences = on;
        self
    }
    /// `go_backwards=`.
    pub fn go_backwards(mut self, on: bool) -> Recurrent {
        self.go_backwards = on;
        self
    }
    /// `reset_after=` (GRU).
    pub fn reset_after(mut self, on: bool) -> Recurrent {
        self.reset_after = on;
        self
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Recurrent {
        self.policy = p;
        self
    }
    /// Which cell the layer runs.
    pub fn cell(&self) -> Cell {
        self.cell
    }

    /// An unbuilt layer of the same options named `name`, running
    /// backwards (Keras' backward copy in a bidirectional layer).
    fn backward_copy(&self, name: String) -> Recurrent {
        Recurrent {
            name,
            cell: self.cell,
            units: self.units,
            activation: self.activation,
            recurrent_activation: self.recurrent_activation,
            use_bias: self.use_bias,
            return_sequences: self.return_sequences,
            go_backwards: true,
            reset_after: self.reset_after,
            policy: self.policy.clone(),
            orthogonal_init: self.orthogonal_init,
            kernel: None,
            recurrent_kernel: None,
            bias: None,
        }
    }

    fn err(&self, shapes: &[&[usize]], msg: impl std::fmt::Display) -> Error {
        Error::shape(self.cell.class(), shapes, format!("layer {}: {msg}", self.name))
    }

    /// The bias's shape: the GRU's `reset_after` keeps an input and a
    /// recurrent bias, `[2, 3 units]`.
    fn bias_shape(&self) -> Vec<usize> {
        let n = self.cell.gates().saturating_mul(self.units);
        if self.cell == Cell::Gru && self.reset_after {
            vec![2, n]
        } else {
            vec![n]
        }
    }

    /// Columns `[g units, (g + 1) units)` of a `[rows, gates units]` matrix.
    fn gate(&self, m: &Tensor, g: usize) -> Result<Tensor> {
        let rows = m.shape()[0];
        m.slice(&[0, g * self.units], &[rows, self.units])
    }

    /// The bias of gate `g`: row `row` of a GRU's `[2, 3 units]` bias.
    fn gate_bias(&self, b: &Tensor, row: usize, g: usize) -> Result<Tensor> {
        let u = self.units;
        if b.rank() == 2 {
            b.slice(&[row, g * u], &[1, u])?.reshape(&[u as isize])
        } else {
            b.slice(&[g * u], &[u])
        }
    }
}

/// Keras' `Orthogonal` initializer for `[rows, cols]`: the Q of a random
/// normal matrix's QR (with R's diagonal positive), transposed when rows <
/// cols, times `gain`.
pub(crate) fn orthogonal(shape: &[usize], gain: f64, seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let Some((&width, lead)) = shape.split_last() else {
        return Err(Error::arg("Orthogonal", "needs a shape of at least two dimensions"));
    };
    if lead.is_empty() {
        return Err(Error::arg("Orthogonal", "needs a shape of at least two dimensions"));
    }
    let rows: usize = lead.iter().product();
    let (n, k) = (rows.max(width), rows.min(width));
    let a = crate::ops::random_normal(&[n, k], 0.0, 1.0, DType::F64, seed, &Device::Cpu)?.to_vec::<f64>()?;
    // Modified Gram-Schmidt over the k columns, each contiguous: the Q
    // with R's diagonal positive, which is what Keras' sign correction of
    // QR gives.
    let mut q: Vec<Vec<f64>> = (0..k).map(|j| (0..n).map(|i| a[i * k + j]).collect()).collect();
    for j in 0..k {
        let (done, rest) = q.split_at_mut(j);
        let c = &mut rest[0];
        for p in done.iter() {
            let dot: f64 = p.iter().zip(c.iter()).map(|(a, b)| a * b).sum();
            for (v, w) in c.iter_mut().zip(p) {
                *v -= dot * w;
            }
        }
        let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
        let norm = if norm > 0.0 { norm } else { 1.0 };
        for v in c.iter_mut() {
            *v /= norm;
        }
    }
    // Q is [n, k] (Q[i][j] = q[j][i]): the result when rows >= width,
    // else its transpose.
    let at = |r: usize, c: usize| if rows >= width { q[c][r] } else { q[r][c] };
    let data: Vec<f32> = (0..rows)
        .flat_map(|r| (0..width).map(move |c| (r, c)))
        .map(|(r, c)| (gain * at(r, c)) as f32)
        .collect();
    Tensor::from_vec(data, shape, device)?.cast(dtype)
}

impl Layer for Recurrent {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        m.insert("return_sequences".into(), self.return_sequences.into());
        m.insert("return_state".into(), false.into());
        m.insert("go_backwards".into(), self.go_backwards.into());
        m.insert("stateful".into(), false.into());
        m.insert("unroll".into(), false.into());
        m.insert("zero_output_for_mask".into(), false.into());
        m.insert("units".into(), self.units.into());
        m.insert("activation".into(), self.activation.name().into());
        if self.cell != Cell::Simple {
            m.insert("recurrent_activation".into(), self.recurrent_activation.name().into());
        }
        m.insert("use_bias".into(), self.use_bias.into());
        m.insert(
            "kernel_initializer".into(),
            initializer_config(&Initializer::GlorotUniform),
        );
        m.insert(
            "recurrent_initializer".into(),
            serde_json::json!({"module": "keras.initializers", "class_name": "Orthogonal",
                               "config": {"seed": null, "gain": 1.0}, "registered_name": null}),
        );
        m.insert("bias_initializer".into(), initializer_config(&Initializer::Zeros));
        if self.cell == Cell::Lstm {
            m.insert("unit_forget_bias".into(), true.into());
        }
        for k in [
            "kernel_regularizer",
            "recurrent_regularizer",
            "bias_regularizer",
            "activity_regularizer",
            "kernel_constraint",
            "recurrent_constraint",
            "bias_constraint",
            "seed",
        ] {
            m.insert(k.into(), serde_json::Value::Null);
        }
        m.insert("dropout".into(), 0.0.into());
        m.insert("recurrent_dropout".into(), 0.0.into());
        if self.cell == Cell::Gru {
            m.insert("reset_after".into(), self.reset_after.into());
        }
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        self.cell.class()
    }
    fn keras_var_groups(&self) -> Vec<(&'static str, usize)> {
        vec![("cell/vars", self.weights().len())]
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        let [_, features] = input_shape else {
            return Err(self.err(&[input_shape], "takes examples [time, features]"));
        };
        if self.units == 0 {
            return Err(Error::arg(
                self.cell.class(),
                format!("layer {}: units must be positive", self.name),
            ));
        }
        if (self.cell != Cell::Simple && self.recurrent_activation == Activation::Softmax)
            || self.activation == Activation::Softmax
        {
            return Err(Error::arg(
                self.cell.class(),
                format!(
                    "layer {}: a softmax activation inside a recurrent cell is not built",
                    self.name
                ),
            ));
        }
        let vt = self.policy.variable_dtype();
        let n = self.cell.gates().checked_mul(self.units).ok_or_else(|| {
            Error::arg(
                self.cell.class(),
                format!("layer {}: {} units do not fit in memory", self.name, self.units),
            )
        })?;
        let k = Initializer::GlorotUniform.init(&[*features, n], vt, device)?;
        self.kernel = Some(Variable::new(k, &format!("{}/kernel", self.name)));
        let seed = crate::nn::initializers::next_seed();
        // Keras draws one orthogonal matrix for the whole recurrent kernel.
        let r = if self.orthogonal_init {
            orthogonal(&[self.units, n], 1.0, seed, vt, device)?
        } else {
            crate::ops::zeros(&[self.units, n], vt, device)?
        };
        self.recurrent_kernel = Some(Variable::new(r, &format!("{}/recurrent_kernel", self.name)));
        if self.use_bias {
            let b = if self.cell == Cell::Lstm {
                // unit_forget_bias: the forget gate starts open.
                let u = self.units;
                let parts = [
                    crate::ops::zeros(&[u], vt, device)?,
                    crate::ops::ones(&[u], vt, device)?,
                    crate::ops::zeros(&[2 * u], vt, device)?,
                ];
                layout::concat(&[&parts[0], &parts[1], &parts[2]], 0)?
            } else {
                crate::ops::zeros(&self.bias_shape(), vt, device)?
            };
            self.bias = Some(Variable::new(b, &format!("{}/bias", self.name)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.kernel.is_some()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        match s {
            [time, _] if self.return_sequences => Ok(vec![*time, self.units]),
            [_, _] => Ok(vec![self.units]),
            _ => Err(self.err(&[s], "takes examples [time, features]")),
        }
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        self.run(x, false)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let mut w = Vec::new();
        if let Some(k) = &self.kernel {
            w.push(("kernel", k.clone()));
        }
        if let Some(r) = &self.recurrent_kernel {
            w.push(("recurrent_kernel", r.clone()));
        }
        if let Some(b) = &self.bias {
            w.push(("bias", b.clone()));
        }
        w
    }
}

impl Recurrent {
    /// The forward pass; with `flip`, every step's outputs are stacked in
    /// time order even when the layer runs backwards (a bidirectional
    /// layer's backward half, which Keras flips back).
    fn run(&mut self, x: &Tensor, flip: bool) -> Result<Tensor> {
        let &[batch, time, features] = x.shape() else {
            return Err(self.err(&[x.shape()], "takes inputs [batch, time, features]"));
        };
        if time == 0 {
            return Err(self.err(&[x.shape()], "needs at least one time step"));
        }
        if !self.built() {
            self.build(&x.shape()[1..], x.device())?;
        }
        let dt = self.policy.compute_dtype();
        let x = self.policy.autocast(x, &self.name)?;
        let k = in_dtype(weight(&self.kernel, &self.name, "kernel")?.value(), dt)?;
        let rk = in_dtype(
            weight(&self.recurrent_kernel, &self.name, "recurrent_kernel")?.value(),
            dt,
        )?;
        if k.shape()[0] != features {
            return Err(self.err(
                &[x.shape(), k.shape()],
                format!("was built for {} features", k.shape()[0]),
            ));
        }
        let b = match &self.bias {
            Some(b) => Some(in_dtype(b.value(), dt)?),
            None => None,
        };
        let u = self.units;
        let gates = self.cell.gates();
        // Each gate's input projection for every step: [batch, time, units].
        let flat = x.reshape(&[-1, features as isize])?;
        let mut xw = Vec::with_capacity(gates);
        for g in 0..gates {
            let mut p = flat.matmul(&self.gate(&k, g)?)?;
            if let Some(b) = &b {
                p = p.add(&self.gate_bias(b, 0, g)?)?;
            }
            xw.push(p.reshape(&[batch as isize, time as isize, u as isize])?);
        }
        let rks: Vec<Tensor> = (0..gates).map(|g| self.gate(&rk, g)).collect::<Result<_>>()?;
        // The GRU's recurrent bias (reset_after).
        let rb: Option<Vec<Tensor>> = match &b {
            Some(b) if b.rank() == 2 => Some((0..gates).map(|g| self.gate_bias(b, 1, g)).collect::<Result<_>>()?),
            _ => None,
        };
        let (ra, act) = (self.recurrent_activation, self.activation);
        let mut h: Option<Tensor> = None;
        let mut c: Option<Tensor> = None;
        let mut outs = Vec::with_capacity(if self.return_sequences { time } else { 1 });
        for step in 0..time {
            let t = if self.go_backwards { time - 1 - step } else { step };
            let at = Tensor::from_vec(vec![t as i32], &[], x.device())?;
            let xt: Vec<Tensor> = xw.iter().map(|p| p.gather(&at, 1)).collect::<Result<_>>()?;
            // x_t's gate plus h @ U_g (nothing at the first step: h = 0).
            let pre = |g: usize, h: &Option<Tensor>| -> Result<Tensor> {
                match h {
                    Some(h) => xt[g].add(&h.matmul(&rks[g])?),
                    None => Ok(xt[g].clone()),
                }
            };
            let next = match self.cell {
                Cell::Simple => act.apply(&pre(0, &h)?)?,
                Cell::Lstm => {
                    let i = ra.apply(&pre(0, &h)?)?;
                    let f = ra.apply(&pre(1, &h)?)?;
                    let g = act.apply(&pre(2, &h)?)?;
                    let o = ra.apply(&pre(3, &h)?)?;
                    let ig = i.mul(&g)?;
                    let cn = match &c {
                        Some(c) => f.mul(c)?.add(&ig)?,
                        None => ig,
                    };
                    let hn = o.mul(&act.apply(&cn)?)?;
                    c = Some(cn);
                    hn
                }
                Cell::Gru => {
                    // h @ U for z and r (and for h when reset_after), plus the
                    // recurrent bias; at the first step only the bias.
                    let inner = |g: usize| -> Result<Option<Tensor>> {
                        let m = match &h {
                            Some(h) => Some(h.matmul(&rks[g])?),
                            None => None,
                        };
                        Ok(match (m, rb.as_ref().map(|r| &r[g])) {
                            (Some(m), Some(r)) => Some(m.add(r)?),
                            (Some(m), None) => Some(m),
                            (None, Some(r)) => Some(r.clone()),
                            (None, None) => None,
                        })
                    };
                    let with = |x: &Tensor, r: Option<Tensor>| -> Result<Tensor> {
                        match r {
                            Some(r) => x.add(&r),
                            None => Ok(x.clone()),
                        }
                    };
                    let z = ra.apply(&with(&xt[0], inner(0)?)?)?;
                    let r = ra.apply(&with(&xt[1], inner(1)?)?)?;
                    let rh = if self.reset_after {
                        match inner(2)? {
                            Some(m) => Some(r.mul(&m)?),
                            None => None,
                        }
                    } else {
                        match &h {
                            Some(h) => Some(r.mul(h)?.matmul(&rks[2])?),
                            None => None,
                        }
                    };
                    let hh = act.apply(&with(&xt[2], rh)?)?;
                    // h = z * h + (1 - z) * hh
                    let keep = z.mul_scalar(-1.0)?.add_scalar(1.0)?.mul(&hh)?;
                    match &h {
                        Some(h) => z.mul(h)?.add(&keep)?,
                        None => keep,
                    }
                }
            };
            if self.return_sequences {
                outs.push(next.clone());
            }
            h = Some(next);
        }
        if self.return_sequences {
            if flip {
                outs.reverse();
            }
            let refs: Vec<&Tensor> = outs.iter().collect();
            return layout::stack(&refs, 1);
        }
        h.ok_or_else(|| self.err(&[x.shape()], "needs at least one time step"))
    }
}

/// How a [`Bidirectional`] layer joins its two directions (Keras'
/// `merge_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMode {
    /// `"concat"`: side by side on the last axis (the default).
    Concat,
    /// `"sum"`.
    Sum,
    /// `"mul"`.
    Mul,
    /// `"ave"`: the mean of the two.
    Ave,
}

impl MergeMode {
    /// Keras' name.
    pub fn name(self) -> &'static str {
        match self {
            MergeMode::Concat => "concat",
            MergeMode::Sum => "sum",
            MergeMode::Mul => "mul",
            MergeMode::Ave => "ave",
        }
    }
    /// The mode Keras names `name`.
    ///
    /// Returns [`Error::InvalidArgument`] naming the valid modes otherwise.
    pub fn from_name(name: &str) -> Result<MergeMode> {
        Ok(match name {
            "concat" => MergeMode::Concat,
            "sum" => MergeMode::Sum,
            "mul" => MergeMode::Mul,
            "ave" => MergeMode::Ave,
            _ => {
                return Err(Error::arg(
                    "Bidirectional",
                    format!("merge_mode {name:?} is not one of concat, sum, mul, ave"),
                ));
            }
        })
    }
}

/// `keras.layers.Bidirectional`: a recurrent layer run forwards and a copy
/// run backwards over the same input, joined by [`MergeMode`]; with
/// `return_sequences`, the backward outputs are put back in time order
/// first, as Keras does. Weights: the forward layer's, then the backward
/// one's (`forward_kernel`, ..., `backward_bias`).
pub struct Bidirectional {
    name: String,
    forward: Recurrent,
    backward: Recurrent,
    merge_mode: MergeMode,
    policy: Policy,
}

impl Bidirectional {
    /// `Bidirectional(layer)`: `layer` runs forwards (named `forward_...`)
    /// and an unbuilt copy backwards (`go_backwards=true`; a `layer` that
    /// runs backwards itself needs a [`Bidirectional::backward_layer`],
    /// else `build` is an error, as in Keras).
    pub fn new(layer: Recurrent) -> Bidirectional {
        let base = layer.name.clone();
        // Keras' copy runs backwards (go_backwards=True), whatever the layer does.
        let backward = layer.backward_copy(format!("backward_{base}"));
        let mut forward = layer;
        forward.name = format!("forward_{base}");
        Bidirectional {
            name: unique_name("bidirectional"),
            forward,
            backward,
            merge_mode: MergeMode::Concat,
            policy: global_policy(),
        }
    }
    /// `merge_mode=`.
    pub fn merge_mode(mut self, m: MergeMode) -> Bidirectional {
        self.merge_mode = m;
        self
    }
    /// `backward_layer=`: the layer to run backwards, of the same class
    /// and `return_sequences`, its `go_backwards` the other way.
    ///
    /// Returns [`Error::InvalidArgument`] for a layer that does not pair.
    pub fn backward_layer(mut self, layer: Recurrent) -> Result<Bidirectional> {
        if layer.cell != self.forward.cell
            || layer.return_sequences != self.forward.return_sequences
            || layer.go_backwards == self.forward.go_backwards
        {
            return Err(Error::arg(
                "Bidirectional",
                format!(
                    "layer {}: the backward layer must be a {} with the same return_sequences and go_backwards the other way",
                    self.name,
                    self.forward.cell.class()
                ),
            ));
        }
        self.backward = layer;
        Ok(self)
    }
    /// `dtype=`: the wrapper's dtype policy (each direction computes in
    /// its own layer's).
    pub fn dtype(mut self, p: Policy) -> Bidirectional {
        self.policy = p;
        self
    }
    /// The layer run forwards.
    pub fn forward(&self) -> &Recurrent {
        &self.forward
    }
    /// The layer run backwards.
    pub fn backward(&self) -> &Recurrent {
        &self.backward
    }
}

fn sub_config(l: &Recurrent) -> Result<serde_json::Value> {
    Ok(
        serde_json::json!({"module": "keras.layers", "class_name": l.kind(), "config": l.keras_config()?,
                          "registered_name": null}),
    )
}

impl Layer for Bidirectional {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        m.insert("merge_mode".into(), self.merge_mode.name().into());
        m.insert("layer".into(), sub_config(&self.forward)?);
        m.insert("backward_layer".into(), sub_config(&self.backward)?);
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Bidirectional"
    }
    fn keras_var_groups(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("forward_layer/cell/vars", self.forward.weights().len()),
            ("backward_layer/cell/vars", self.backward.weights().len()),
        ]
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        if self.forward.go_backwards == self.backward.go_backwards {
            return Err(Error::arg(
                "Bidirectional",
                format!(
                    "layer {}: the forward and backward layers both have go_backwards={}; Keras requires them to differ",
                    self.name, self.forward.go_backwards
                ),
            ));
        }
        if !self.forward.built() {
            self.forward.build(input_shape, device)?;
        }
        if !self.backward.built() {
            self.backward.build(input_shape, device)?;
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.forward.built() && self.backward.built()
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let mut f = self.forward.output_shape(s)?;
        let b = self.backward.output_shape(s)?;
        let same = f == b;
        match (self.merge_mode, f.last_mut(), b.last()) {
            (MergeMode::Concat, Some(a), Some(&c)) => {
                *a = a.checked_add(c).ok_or_else(|| {
                    Error::shape(
                        "Bidirectional",
                        &[s],
                        format!("layer {}: the joined size overflows", self.name),
                    )
                })?
            }
            _ if same => {}
            _ => {
                return Err(Error::shape(
                    "Bidirectional",
                    &[&f, &b],
                    format!("layer {}: the two directions' outputs cannot be merged", self.name),
                ));
            }
        }
        Ok(f)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        if !self.built() {
            if x.rank() < 1 {
                return Err(Error::shape("Bidirectional", &[x.shape()], "needs a batch axis"));
            }
            self.build(&x.shape()[1..], x.device())?;
        }
        // Both directions in the wrapper's compute dtype, as Keras casts them.
        let y = self.policy.autocast(&self.forward.run(x, false)?, &self.name)?;
        let r = self.policy.autocast(&self.backward.run(x, true)?, &self.name)?;
        match self.merge_mode {
            MergeMode::Concat => layout::concat(&[&y, &r], -1),
            MergeMode::Sum => y.add(&r),
            MergeMode::Mul => y.mul(&r),
            MergeMode::Ave => y.add(&r)?.div_scalar(2.0),
        }
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let names = |dir: &str, w: &str| -> &'static str {
            match (dir, w) {
                ("forward", "kernel") => "forward_kernel",
                ("forward", "recurrent_kernel") => "forward_recurrent_kernel",
                ("forward", _) => "forward_bias",
                (_, "kernel") => "backward_kernel",
                (_, "recurrent_kernel") => "backward_recurrent_kernel",
                _ => "backward_bias",
            }
        };
        let mut w: Vec<(&'static str, Variable)> = self
            .forward
            .weights()
            .into_iter()
            .map(|(n, v)| (names("forward", n), v))
            .collect();
        w.extend(
            self.backward
                .weights()
                .into_iter()
                .map(|(n, v)| (names("backward", n), v)),
        );
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_is_orthogonal() {
        for shape in [[5usize, 5], [3, 8], [8, 3]] {
            let q = orthogonal(&shape, 1.0, 7, DType::F32, &Device::Cpu)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let (r, c) = (shape[0], shape[1]);
            // The smaller side's vectors are orthonormal.
            let (n, k, at): (usize, usize, Box<dyn Fn(usize, usize) -> f32>) = if r >= c {
                (r, c, Box::new(|i, j| q[i * c + j]))
            } else {
                (c, r, Box::new(|i, j| q[j * c + i]))
            };
            for a in 0..k {
                for b in 0..k {
                    let dot: f32 = (0..n).map(|i| at(i, a) * at(i, b)).sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "{shape:?}: {a}.{b} = {dot}");
                }
            }
        }
    }

    /// Odd inputs: one step, an empty batch, the wrong feature count, no
    /// steps, a rank other than 3; each a result or a typed error.
    #[test]
    fn odd_inputs() {
        let d = Device::Cpu;
        for cell in [Cell::Simple, Cell::Lstm, Cell::Gru] {
            let mut l = Recurrent::new(cell, 3).return_sequences(true);
            let one = Tensor::from_vec(vec![0.5f32, -1.0], &[1, 1, 2], &d).unwrap();
            assert_eq!(l.call(&one, false).unwrap().shape(), &[1, 1, 3]);
            match l.call(&Tensor::zeros(&[0, 4, 2], DType::F32, &d).unwrap(), false) {
                Ok(y) => assert_eq!(y.shape(), &[0, 4, 3]),
                Err(e) => assert!(matches!(e, Error::Shape { .. } | Error::InvalidArgument { .. }), "{e}"),
            }
            for bad in [vec![2, 4, 5], vec![2, 0, 2], vec![2, 2]] {
                let x = Tensor::zeros(&bad, DType::F32, &d).unwrap();
                let e = l.call(&x, false).unwrap_err();
                assert!(matches!(e, Error::Shape { .. }), "{bad:?}: {e}");
            }
        }
    }

    /// A bidirectional layer's shapes per merge mode, and the pairs it
    /// refuses: another cell or return_sequences as the backward layer,
    /// two layers running the same way.
    #[test]
    fn bidirectional_shapes_and_refusals() {
        let d = Device::Cpu;
        let x = Tensor::from_vec((0..24).map(|v| v as f32 / 24.0).collect(), &[2, 4, 3], &d).unwrap();
        for (mode, last) in [
            (MergeMode::Concat, 6),
            (MergeMode::Sum, 3),
            (MergeMode::Mul, 3),
            (MergeMode::Ave, 3),
        ] {
            let mut b = Bidirectional::new(GRU::new(3).return_sequences(true)).merge_mode(mode);
            assert_eq!(b.output_shape(&[4, 3]).unwrap(), [4, last]);
            assert_eq!(b.call(&x, false).unwrap().shape(), &[2, 4, last]);
            assert_eq!(b.weights().len(), 6);
        }
        let b = Bidirectional::new(LSTM::new(2));
        assert!(matches!(
            b.backward_layer(GRU::new(2).go_backwards(true)),
            Err(Error::InvalidArgument { .. })
        ));
        let b = Bidirectional::new(LSTM::new(2));
        let seq = LSTM::new(2).go_backwards(true).return_sequences(true);
        assert!(matches!(b.backward_layer(seq), Err(Error::InvalidArgument { .. })));
        let mut b = Bidirectional::new(LSTM::new(2).go_backwards(true));
        assert!(matches!(b.call(&x, false), Err(Error::InvalidArgument { .. })));
        assert!(matches!(
            MergeMode::from_name("max"),
            Err(Error::InvalidArgument { .. })
        ));
        let mut huge = Recurrent::new(Cell::Lstm, usize::MAX / 2);
        assert!(huge.build(&[4, 3], &d).is_err());
    }
}
