//! Operations called on tensors in a Keras 3 functional model (`x + 3`,
//! `keras.ops.multiply(x, y)`, `1 - x`): Keras records each as a node of
//! the model, a class of `keras.src.ops.numpy` whose scalar operands sit in
//! the call's arguments, not in its config. [`OpLayer`] is such a node:
//! tensors where the call had tensors, constants where it had numbers.

use super::{Layer, unique_name};
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

/// The operations [`OpLayer`] computes, by their `keras.src.ops.numpy`
/// class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumpyOp {
    /// `Add`: `a + b`.
    Add,
    /// `Subtract`: `a - b`.
    Subtract,
    /// `Multiply`: `a * b`.
    Multiply,
    /// `Divide` / `TrueDivide`: `a / b`.
    Divide,
    /// `Maximum`.
    Maximum,
    /// `Minimum`.
    Minimum,
    /// `Power`: `a ^ b`.
    Power,
    /// `Negative`: `-a`.
    Negative,
    /// `Absolute`: `|a|`.
    Absolute,
    /// `Exp`.
    Exp,
    /// `Log`.
    Log,
    /// `Sqrt`.
    Sqrt,
    /// `Square`.
    Square,
}

impl NumpyOp {
    /// The op of a `keras.src.ops.numpy` class name.
    pub fn from_class(class: &str) -> Option<NumpyOp> {
        Some(match class {
            "Add" => NumpyOp::Add,
            "Subtract" => NumpyOp::Subtract,
            "Multiply" => NumpyOp::Multiply,
            "Divide" | "TrueDivide" => NumpyOp::Divide,
            "Maximum" => NumpyOp::Maximum,
            "Minimum" => NumpyOp::Minimum,
            "Power" => NumpyOp::Power,
            "Negative" => NumpyOp::Negative,
            "Absolute" | "Abs" => NumpyOp::Absolute,
            "Exp" => NumpyOp::Exp,
            "Log" => NumpyOp::Log,
            "Sqrt" => NumpyOp::Sqrt,
            "Square" => NumpyOp::Square,
            _ => return None,
        })
    }
    /// The class name Keras writes.
    pub fn class(self) -> &'static str {
        match self {
            NumpyOp::Add => "Add",
            NumpyOp::Subtract => "Subtract",
            NumpyOp::Multiply => "Multiply",
            NumpyOp::Divide => "Divide",
            NumpyOp::Maximum => "Maximum",
            NumpyOp::Minimum => "Minimum",
            NumpyOp::Power => "Power",
            NumpyOp::Negative => "Negative",
            NumpyOp::Absolute => "Absolute",
            NumpyOp::Exp => "Exp",
            NumpyOp::Log => "Log",
            NumpyOp::Sqrt => "Sqrt",
            NumpyOp::Square => "Square",
        }
    }
    /// How many operands the op takes.
    pub fn arity(self) -> usize {
        match self {
            NumpyOp::Negative | NumpyOp::Absolute | NumpyOp::Exp | NumpyOp::Log | NumpyOp::Sqrt | NumpyOp::Square => 1,
            _ => 2,
        }
    }
    fn snake(self) -> &'static str {
        match self {
            NumpyOp::Add => "add",
            NumpyOp::Subtract => "subtract",
            NumpyOp::Multiply => "multiply",
            NumpyOp::Divide => "divide",
            NumpyOp::Maximum => "maximum",
            NumpyOp::Minimum => "minimum",
            NumpyOp::Power => "power",
            NumpyOp::Negative => "negative",
            NumpyOp::Absolute => "absolute",
            NumpyOp::Exp => "exp",
            NumpyOp::Log => "log",
            NumpyOp::Sqrt => "sqrt",
            NumpyOp::Square => "square",
        }
    }
}

/// One operand of an [`OpLayer`]'s call: the next input tensor, or a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// The next of the tensors the layer is called with.
    Tensor,
    /// A constant, broadcast against the tensors (in their dtype).
    Scalar(f64),
}

/// A `keras.src.ops.numpy` operation as a layer of a functional model: the
/// op and its operands (at least one a tensor).
pub struct OpLayer {
    name: String,
    /// The operation.
    pub op: NumpyOp,
    /// The operands in the call's order.
    pub operands: Vec<Operand>,
}

impl OpLayer {
    /// `op(operands...)`; errors when the count does not fit the op or no
    /// operand is a tensor.
    pub fn new(op: NumpyOp, operands: Vec<Operand>) -> Result<OpLayer> {
        if operands.len() != op.arity() || !operands.contains(&Operand::Tensor) {
            return Err(Error::arg(
                "OpLayer",
                format!(
                    "{} takes {} operands, at least one a tensor; {operands:?} given",
                    op.class(),
                    op.arity()
                ),
            ));
        }
        Ok(OpLayer {
            name: unique_name(op.snake()),
            op,
            operands,
        })
    }
    fn tensors(&self) -> usize {
        self.operands.iter().filter(|o| **o == Operand::Tensor).count()
    }
    fn count_err(&self, given: usize) -> String {
        format!(
            "layer {} ({}) takes {} tensors, {given} given",
            self.name,
            self.op.class(),
            self.tensors()
        )
    }
}

impl Layer for OpLayer {
    fn keras_config(&self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({"name": self.name}))
    }
    fn keras_module(&self) -> (&'static str, Option<&'static str>) {
        ("keras.src.ops.numpy", Some(self.op.class()))
    }
    fn keras_call_args(&self, tensors: Vec<serde_json::Value>) -> Option<Vec<serde_json::Value>> {
        let mut t = tensors.into_iter();
        Some(
            self.operands
                .iter()
                .map(|o| match o {
                    Operand::Tensor => t.next().unwrap_or_default(),
                    Operand::Scalar(v) => serde_json::json!(v),
                })
                .collect(),
        )
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
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        self.output_shape_many(&[s.to_vec()])
    }
    fn output_shape_many(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        if shapes.len() != self.tensors() {
            let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            return Err(Error::shape(self.op.class(), &refs, self.count_err(shapes.len())));
        }
        match shapes {
            [s] => Ok(s.clone()),
            // Examples of one rank, so that the batch axes line up too.
            [a, b] if a.len() == b.len() => crate::core::shape::broadcast(self.op.class(), a, b),
            [a, b] => Err(Error::shape(
                self.op.class(),
                &[a, b],
                format!("layer {} takes examples of one rank", self.name),
            )),
            _ => Err(Error::shape(self.op.class(), &[], self.count_err(shapes.len()))),
        }
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.call_many(std::slice::from_ref(x), training)
    }
    fn call_many(&mut self, xs: &[Tensor], _training: bool) -> Result<Tensor> {
        if xs.len() != self.tensors() {
            let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
            return Err(Error::shape(self.op.class(), &shapes, self.count_err(xs.len())));
        }
        // Keras promotes integer tensors to floats for true division, the
        // transcendental functions, a fractional number or a float tensor.
        let float = xs.iter().find(|x| x.dtype().is_float()).map(|x| x.dtype());
        let fractional = self
            .operands
            .iter()
            .any(|o| matches!(o, Operand::Scalar(v) if v.fract() != 0.0 || !v.is_finite()));
        let promote = float.is_some()
            || fractional
            || matches!(self.op, NumpyOp::Divide | NumpyOp::Sqrt | NumpyOp::Log | NumpyOp::Exp);
        let target = float.unwrap_or(crate::core::dtype::DType::F32);
        let xs: Vec<Tensor> = xs
            .iter()
            .map(|x| {
                if promote && !x.dtype().is_float() {
                    x.cast(target)
                } else {
                    Ok(x.clone())
                }
            })
            .collect::<Result<_>>()?;
        let like = &xs[0];
        let mut next = xs.iter();
        let mut args = Vec::with_capacity(self.operands.len());
        for o in &self.operands {
            args.push(match o {
                Operand::Tensor => next
                    .next()
                    .cloned()
                    .ok_or_else(|| Error::arg("OpLayer", self.count_err(xs.len())))?,
                Operand::Scalar(v) => like.scalar_like(*v)?,
            });
        }
        match (self.op, args.as_slice()) {
            (NumpyOp::Add, [a, b]) => a.add(b),
            (NumpyOp::Subtract, [a, b]) => a.sub(b),
            (NumpyOp::Multiply, [a, b]) => a.mul(b),
            (NumpyOp::Divide, [a, b]) => a.div(b),
            (NumpyOp::Maximum, [a, b]) => a.maximum(b),
            (NumpyOp::Minimum, [a, b]) => a.minimum(b),
            (NumpyOp::Power, [a, b]) => a.pow(b),
            (NumpyOp::Negative, [a]) => a.neg(),
            (NumpyOp::Absolute, [a]) => a.abs(),
            (NumpyOp::Exp, [a]) => a.exp(),
            (NumpyOp::Log, [a]) => a.log(),
            (NumpyOp::Sqrt, [a]) => a.sqrt(),
            (NumpyOp::Square, [a]) => a.square(),
            _ => Err(Error::arg("OpLayer", self.count_err(xs.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    #[test]
    fn operands_take_tensors_and_numbers_in_order() {
        let d = Device::cpu();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 4.0], &[1, 3], &d).unwrap();
        let mut rsub = OpLayer::new(NumpyOp::Subtract, vec![Operand::Scalar(1.0), Operand::Tensor]).unwrap();
        assert_eq!(
            rsub.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            [0.0, -1.0, -3.0]
        );
        let mut div = OpLayer::new(NumpyOp::Divide, vec![Operand::Tensor, Operand::Scalar(2.0)]).unwrap();
        assert_eq!(div.call(&x, false).unwrap().to_vec::<f32>().unwrap(), [0.5, 1.0, 2.0]);
        let mut mul = OpLayer::new(NumpyOp::Multiply, vec![Operand::Tensor, Operand::Tensor]).unwrap();
        assert_eq!(
            mul.call_many(&[x.clone(), x.clone()], false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            [1.0, 4.0, 16.0]
        );
        // Counts that do not fit are errors, not guesses.
        assert!(mul.call(&x, false).is_err());
        assert!(mul.output_shape_many(&[vec![3], vec![2, 3]]).is_err());
        assert!(OpLayer::new(NumpyOp::Add, vec![Operand::Scalar(1.0), Operand::Scalar(2.0)]).is_err());
        assert!(OpLayer::new(NumpyOp::Exp, vec![Operand::Tensor, Operand::Tensor]).is_err());
    }
}

#[cfg(test)]
mod promotion_tests {
    use super::*;
    use crate::core::dtype::DType;
    use crate::runtime::Device;

    #[test]
    fn integer_tensors_become_floats_as_in_keras() {
        let d = Device::cpu();
        let x = Tensor::from_vec(vec![1i32, 2, 255], &[1, 3], &d).unwrap();
        let mut scale = OpLayer::new(NumpyOp::Divide, vec![Operand::Tensor, Operand::Scalar(255.0)]).unwrap();
        let y = scale.call(&x, false).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(y.to_vec::<f32>().unwrap(), [1.0 / 255.0, 2.0 / 255.0, 1.0]);
        let mut half = OpLayer::new(NumpyOp::Multiply, vec![Operand::Tensor, Operand::Scalar(0.5)]).unwrap();
        assert_eq!(
            half.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            [0.5, 1.0, 127.5]
        );
        let mut plus = OpLayer::new(NumpyOp::Add, vec![Operand::Tensor, Operand::Scalar(1.0)]).unwrap();
        assert_eq!(plus.call(&x, false).unwrap().dtype(), DType::I32, "int + int stays int");
    }
}
