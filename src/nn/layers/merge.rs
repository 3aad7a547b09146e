//! Merge layers (`keras.layers.Add`, `Concatenate`, ...): layers of several
//! inputs, for functional models ([`crate::nn::Functional`]). They have no
//! weights; each casts its float inputs to its policy's compute dtype, as
//! Keras' autocasting does, and takes inputs of one rank whose dimensions
//! match or are 1 (broadcast), batch included.

use super::{Layer, base_config, policy_name, unique_name};
use crate::core::error::{Error, Result};
use crate::nn::mixed_precision::{Policy, global_policy};
use crate::ops::layout;
use crate::tensor::Tensor;

/// What a merge layer computes from its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOp {
    /// `keras.layers.Add`: the sum.
    Add,
    /// `keras.layers.Subtract`: the first minus the second (two inputs).
    Subtract,
    /// `keras.layers.Multiply`: the product.
    Multiply,
    /// `keras.layers.Average`: the sum over the count.
    Average,
    /// `keras.layers.Maximum`: elementwise maximum.
    Maximum,
    /// `keras.layers.Minimum`: elementwise minimum.
    Minimum,
    /// `keras.layers.Concatenate(axis)`: joined along `axis` (batch
    /// included in the count, `-1` the last).
    Concatenate(isize),
}

impl MergeOp {
    fn class(self) -> &'static str {
        match self {
            MergeOp::Add => "Add",
            MergeOp::Subtract => "Subtract",
            MergeOp::Multiply => "Multiply",
            MergeOp::Average => "Average",
            MergeOp::Maximum => "Maximum",
            MergeOp::Minimum => "Minimum",
            MergeOp::Concatenate(_) => "Concatenate",
        }
    }
    fn base(self) -> &'static str {
        match self {
            MergeOp::Add => "add",
            MergeOp::Subtract => "subtract",
            MergeOp::Multiply => "multiply",
            MergeOp::Average => "average",
            MergeOp::Maximum => "maximum",
            MergeOp::Minimum => "minimum",
            MergeOp::Concatenate(_) => "concatenate",
        }
    }
}

/// A merge layer: [`MergeOp`] over two or more inputs (one for the
/// elementwise ones, as Keras allows), called through
/// [`Layer::call_many`]. A single tensor passed to [`Layer::call`] is an
/// error, as Keras' "a merge layer should be called on a list of inputs".
pub struct Merge {
    name: String,
    op: MergeOp,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
}

impl Merge {
    /// A merge layer of `op`, named after it (`add`, `concatenate_1`, ...).
    pub fn new(op: MergeOp) -> Merge {
        Merge {
            name: unique_name(op.base()),
            op,
            policy: global_policy(),
        }
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Merge {
        self.policy = p;
        self
    }
    /// What the layer computes.
    pub fn op(&self) -> MergeOp {
        self.op
    }

    fn err(&self, shapes: &[Vec<usize>], msg: impl std::fmt::Display) -> Error {
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        Error::shape(
            "Merge",
            &refs,
            format!("layer {} ({}): {msg}", self.name, self.op.class()),
        )
    }

    /// The axis of a concatenation among `rank` dimensions (batch included).
    fn axis(&self, axis: isize, shapes: &[Vec<usize>], rank: usize) -> Result<usize> {
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if a < 1 || a >= rank as isize {
            return Err(self.err(
                shapes,
                format!(
                    "axis {axis} is not a feature axis of inputs of rank {rank} (the batch axis 0 cannot be joined)"
                ),
            ));
        }
        Ok(a as usize)
    }

    /// The output shape for inputs of `shapes`, batch dimension included
    /// (what both `output_shape_many` and `call_many` check).
    fn merged_shape(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        let Some(first) = shapes.first() else {
            return Err(self.err(shapes, "needs at least one input"));
        };
        if self.op == MergeOp::Subtract && shapes.len() != 2 {
            return Err(self.err(shapes, format!("takes exactly two inputs, {} given", shapes.len())));
        }
        if shapes.iter().any(|s| s.len() != first.len()) {
            return Err(self.err(shapes, "takes inputs of one rank"));
        }
        let mut out = first.clone();
        if let MergeOp::Concatenate(axis) = self.op {
            let a = self.axis(axis, shapes, first.len())?;
            out[a] = 0;
            for s in shapes {
                for (i, (&o, &d)) in first.iter().zip(s).enumerate() {
                    if i != a && o != d {
                        return Err(self.err(
                            shapes,
                            format!("inputs must match on every axis but the concatenation axis {a}"),
                        ));
                    }
                }
                out[a] = out[a]
                    .checked_add(s[a])
                    .ok_or_else(|| self.err(shapes, "the joined axis overflows"))?;
            }
            return Ok(out);
        }
        for s in &shapes[1..] {
            for (o, &d) in out.iter_mut().zip(s) {
                if *o == 1 {
                    *o = d;
                } else if d != 1 && d != *o {
                    return Err(self.err(shapes, "inputs must have the same shape (or dimensions of 1)"));
                }
            }
        }
        Ok(out)
    }
}

macro_rules! merge_classes {
    ($($class:ident => $op:ident: $doc:literal),*) => {$(
        #[doc = concat!("`keras.layers.", stringify!($class), "`: ", $doc, " `", stringify!($class), "::new()` makes the [`Merge`] layer.")]
        pub struct $class;
        impl $class {
            #[doc = concat!("`", stringify!($class), "()`.")]
            #[allow(clippy::new_ret_no_self)]
            pub fn new() -> Merge {
                Merge::new(MergeOp::$op)
            }
        }
    )*};
}

merge_classes!(
    Add => Add: "the sum of the inputs.",
    Subtract => Subtract: "the first input minus the second.",
    Multiply => Multiply: "the product of the inputs.",
    Average => Average: "the mean of the inputs.",
    Maximum => Maximum: "the elementwise maximum of the inputs.",
    Minimum => Minimum: "the elementwise minimum of the inputs."
);

/// `keras.layers.Concatenate`: the inputs joined along an axis.
/// `Concatenate::new(axis)` makes the [`Merge`] layer.
pub struct Concatenate;
impl Concatenate {
    /// `Concatenate(axis)`; Keras' default is `-1`, the last axis (the
    /// batch axis counts: `1` is the first feature axis).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(axis: isize) -> Merge {
        Merge::new(MergeOp::Concatenate(axis))
    }
}

impl Layer for Merge {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, &policy_name(&self.policy));
        if let MergeOp::Concatenate(axis) = self.op {
            m.insert("axis".into(), axis.into());
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
        self.op.class()
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        Err(self.err(&[input_shape.to_vec()], "is a merge layer: it takes a list of inputs"))
    }
    fn takes_list(&self) -> bool {
        true
    }
    fn output_shape_many(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        // Per-example shapes: put a batch of 1 in front to share the rule.
        let full: Vec<Vec<usize>> = shapes.iter().map(|s| [&[1][..], s].concat()).collect();
        Ok(self.merged_shape(&full)?[1..].to_vec())
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        Err(self.err(
            &[x.shape().to_vec()],
            "is a merge layer: it takes a list of inputs (call_many, or a functional model)",
        ))
    }
    fn call_many(&mut self, xs: &[Tensor], _training: bool) -> Result<Tensor> {
        let shapes: Vec<Vec<usize>> = xs.iter().map(|x| x.shape().to_vec()).collect();
        self.merged_shape(&shapes)?;
        // The batch does not broadcast, as Keras' merge layers check.
        if shapes.iter().any(|s| s.first() != shapes[0].first()) {
            return Err(self.err(&shapes, "inputs must have the same batch size"));
        }
        let xs: Vec<Tensor> = xs
            .iter()
            .map(|x| self.policy.autocast(x, &self.name))
            .collect::<Result<_>>()?;
        if let MergeOp::Concatenate(axis) = self.op {
            let refs: Vec<&Tensor> = xs.iter().collect();
            return layout::concat(&refs, self.axis(axis, &shapes, shapes[0].len())? as isize);
        }
        let (first, rest) = xs
            .split_first()
            .ok_or_else(|| self.err(&shapes, "needs at least one input"))?;
        let mut out = first.clone();
        for x in rest {
            out = match self.op {
                MergeOp::Add | MergeOp::Average => out.add(x)?,
                MergeOp::Subtract => out.sub(x)?,
                MergeOp::Multiply => out.mul(x)?,
                MergeOp::Maximum => out.maximum(x)?,
                MergeOp::Minimum => out.minimum(x)?,
                MergeOp::Concatenate(_) => out,
            };
        }
        if self.op == MergeOp::Average {
            out = out.div_scalar(xs.len() as f64)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    /// Each op's values (with a broadcast dimension of 1 and NaN), and
    /// every shape it refuses: a typed error naming the layer.
    #[test]
    fn values_and_refusals() {
        let a = t(&[1.0, -2.0, f32::NAN, 4.0], &[2, 2]);
        let b = t(&[3.0, 0.5], &[2, 1]);
        let cases: [(Merge, Vec<f32>); 6] = [
            (Add::new(), vec![4.0, 1.0, f32::NAN, 4.5]),
            (Subtract::new(), vec![-2.0, -5.0, f32::NAN, 3.5]),
            (Multiply::new(), vec![3.0, -6.0, f32::NAN, 2.0]),
            (Average::new(), vec![2.0, 0.5, f32::NAN, 2.25]),
            (Maximum::new(), vec![3.0, 3.0, f32::NAN, 4.0]),
            (Minimum::new(), vec![1.0, -2.0, f32::NAN, 0.5]),
        ];
        for (mut m, want) in cases {
            let got = m
                .call_many(&[a.clone(), b.clone()], false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g == w || (g.is_nan() && w.is_nan()),
                    "{}: {got:?} against {want:?}",
                    m.kind()
                );
            }
        }
        let mut c = Concatenate::new(-1);
        let got = c.call_many(&[a.clone(), b.clone()], false).unwrap();
        assert_eq!(got.shape(), &[2, 3]);
        assert_eq!(c.output_shape_many(&[vec![2], vec![1]]).unwrap(), [3]);
        let shape_err = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
        // One tensor rather than a list; a batch that differs; ranks that
        // differ; dimensions that do not broadcast; Subtract of three; the
        // batch axis or an axis past the rank for Concatenate; no inputs.
        assert!(shape_err(Add::new().call(&a, false)));
        assert!(shape_err(
            Add::new().call_many(&[a.clone(), t(&[1.0, 2.0], &[1, 2])], false)
        ));
        assert!(shape_err(
            Add::new().call_many(&[a.clone(), t(&[1.0, 2.0], &[2])], false)
        ));
        assert!(shape_err(
            Add::new().call_many(&[a.clone(), t(&[1.0; 6], &[2, 3])], false)
        ));
        assert!(shape_err(
            Subtract::new().call_many(&[a.clone(), a.clone(), a.clone()], false)
        ));
        assert!(shape_err(Concatenate::new(0).call_many(&[a.clone(), a.clone()], false)));
        assert!(shape_err(Concatenate::new(2).call_many(&[a.clone(), a.clone()], false)));
        assert!(shape_err(
            Concatenate::new(-1).call_many(&[a.clone(), t(&[1.0; 3], &[3, 1])], false)
        ));
        assert!(shape_err(Add::new().call_many(&[], false)));
        let e = Maximum::new().output_shape(&[2]).unwrap_err();
        assert!(e.to_string().contains("Maximum"), "{e}");
    }
}
