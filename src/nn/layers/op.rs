//! Operations called on tensors in a Keras 3 functional model (`x + 3`,
//! `keras.ops.multiply(x, y)`, `1 - x`, `keras.ops.relu(x)`): Keras records
//! each as a node of the model, a class of `keras.src.ops.numpy` or
//! `keras.src.ops.nn` whose scalar operands sit in the call's arguments,
//! not in its config. [`OpLayer`] is such a node:
//! tensors where the call had tensors, constants where it had numbers.

use super::{Layer, unique_name};
use crate::core::error::{Error, Result};
use crate::nn::activations::Activation;
use crate::tensor::Tensor;

/// The operations [`OpLayer`] computes, by their Keras class
/// (`keras.src.ops.numpy` or `keras.src.ops.nn`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TensorOp {
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
    /// A function of one tensor (`Exp`, `Relu`, `Softmax`, ...).
    Unary(Unary),
}

/// The functions of one tensor [`TensorOp::Unary`] covers, with the
/// parameters Keras keeps in their configs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `Negative`.
    Negative,
    /// `Absolute`.
    Absolute,
    /// `Exp`.
    Exp,
    /// `Log`.
    Log,
    /// `Sqrt`.
    Sqrt,
    /// `Square`.
    Square,
    /// `Tanh`.
    Tanh,
    /// `Sign`.
    Sign,
    /// `Floor`.
    Floor,
    /// `Ceil`.
    Ceil,
    /// `Reciprocal`.
    Reciprocal,
    /// `Sin`.
    Sin,
    /// `Cos`.
    Cos,
    /// `Log1p`.
    Log1p,
    /// `Expm1`.
    Expm1,
    /// `Relu` (`keras.src.ops.nn`, as the rest below).
    Relu,
    /// `Relu6`.
    Relu6,
    /// `Sigmoid`.
    Sigmoid,
    /// `Softplus`.
    Softplus,
    /// `Softsign`.
    Softsign,
    /// `Silu`.
    Silu,
    /// `HardSigmoid`.
    HardSigmoid,
    /// `HardSilu`.
    HardSilu,
    /// `Selu`.
    Selu,
    /// `Elu` with `alpha=1.0`.
    Elu,
    /// `LeakyRelu(negative_slope)`.
    LeakyRelu(f64),
    /// `Gelu(approximate)`.
    Gelu(bool),
    /// `Softmax(axis=-1)`.
    Softmax,
    /// `LogSoftmax(axis=-1)`.
    LogSoftmax,
}

const NUMPY: &str = "keras.src.ops.numpy";
const NN: &str = "keras.src.ops.nn";

impl TensorOp {
    /// The op of a Keras operation: its module, class and config (whose
    /// parameters must be ones wgflow computes).
    pub fn from_keras(module: &str, class: &str, config: &serde_json::Value) -> std::result::Result<TensorOp, String> {
        use Unary as U;
        let numpy = module.is_empty() || module == NUMPY;
        let nn = module.is_empty() || module == NN;
        let param = |k: &str| config.get(k).filter(|v| !v.is_null());
        let known: &[&str] = match class {
            "Softmax" | "LogSoftmax" => &["axis"],
            "Elu" => &["alpha"],
            "LeakyRelu" => &["negative_slope"],
            "Gelu" => &["approximate"],
            _ => &[],
        };
        if let Some((k, v)) = config.as_object().and_then(|o| {
            o.iter()
                .find(|(k, v)| k.as_str() != "name" && !v.is_null() && !known.contains(&k.as_str()))
        }) {
            return Err(format!("operation {class} has {k}={v}, which wgflow does not take"));
        }
        let op = match class {
            "Add" if numpy => TensorOp::Add,
            "Subtract" if numpy => TensorOp::Subtract,
            "Multiply" if numpy => TensorOp::Multiply,
            "Divide" | "TrueDivide" if numpy => TensorOp::Divide,
            "Maximum" if numpy => TensorOp::Maximum,
            "Minimum" if numpy => TensorOp::Minimum,
            "Power" if numpy => TensorOp::Power,
            _ => TensorOp::Unary(match class {
                "Negative" if numpy => U::Negative,
                "Absolute" | "Abs" if numpy => U::Absolute,
                "Exp" if numpy => U::Exp,
                "Log" if numpy => U::Log,
                "Sqrt" if numpy => U::Sqrt,
                "Square" if numpy => U::Square,
                "Tanh" if numpy => U::Tanh,
                "Sign" if numpy => U::Sign,
                "Floor" if numpy => U::Floor,
                "Ceil" if numpy => U::Ceil,
                "Reciprocal" if numpy => U::Reciprocal,
                "Sin" if numpy => U::Sin,
                "Cos" if numpy => U::Cos,
                "Log1p" if numpy => U::Log1p,
                "Expm1" if numpy => U::Expm1,
                "Relu" if nn => U::Relu,
                "Relu6" if nn => U::Relu6,
                "Sigmoid" if nn => U::Sigmoid,
                "Softplus" if nn => U::Softplus,
                "Softsign" if nn => U::Softsign,
                "Silu" if nn => U::Silu,
                "HardSigmoid" if nn => U::HardSigmoid,
                "HardSilu" if nn => U::HardSilu,
                "Selu" if nn => U::Selu,
                "Elu" if nn => match param("alpha").map(|a| a.as_f64()) {
                    None | Some(Some(1.0)) => U::Elu,
                    Some(a) => return Err(format!("operation Elu with alpha={a:?}: wgflow's elu has alpha 1")),
                },
                "LeakyRelu" if nn => match param("negative_slope").map(|a| a.as_f64()) {
                    None => U::LeakyRelu(0.2),
                    Some(Some(s)) if s.is_finite() => U::LeakyRelu(s),
                    Some(s) => return Err(format!("operation LeakyRelu with negative_slope={s:?}")),
                },
                "Gelu" if nn => match param("approximate").map(|a| a.as_bool()) {
                    None => U::Gelu(true),
                    Some(Some(b)) => U::Gelu(b),
                    Some(a) => return Err(format!("operation Gelu with approximate={a:?}")),
                },
                "Softmax" | "LogSoftmax" if nn => match param("axis").map(|a| a.as_i64()) {
                    None | Some(Some(-1)) if class == "Softmax" => U::Softmax,
                    None | Some(Some(-1)) => U::LogSoftmax,
                    Some(a) => return Err(format!("operation {class} over axis {a:?}: wgflow takes the last (-1)")),
                },
                _ => return Err(format!("{module}.{class} has no wgflow layer")),
            }),
        };
        Ok(op)
    }
    /// The class name Keras writes.
    pub fn class(self) -> &'static str {
        use Unary as U;
        match self {
            TensorOp::Add => "Add",
            TensorOp::Subtract => "Subtract",
            TensorOp::Multiply => "Multiply",
            TensorOp::Divide => "Divide",
            TensorOp::Maximum => "Maximum",
            TensorOp::Minimum => "Minimum",
            TensorOp::Power => "Power",
            TensorOp::Unary(u) => match u {
                U::Negative => "Negative",
                U::Absolute => "Absolute",
                U::Exp => "Exp",
                U::Log => "Log",
                U::Sqrt => "Sqrt",
                U::Square => "Square",
                U::Tanh => "Tanh",
                U::Sign => "Sign",
                U::Floor => "Floor",
                U::Ceil => "Ceil",
                U::Reciprocal => "Reciprocal",
                U::Sin => "Sin",
                U::Cos => "Cos",
                U::Log1p => "Log1p",
                U::Expm1 => "Expm1",
                U::Relu => "Relu",
                U::Relu6 => "Relu6",
                U::Sigmoid => "Sigmoid",
                U::Softplus => "Softplus",
                U::Softsign => "Softsign",
                U::Silu => "Silu",
                U::HardSigmoid => "HardSigmoid",
                U::HardSilu => "HardSilu",
                U::Selu => "Selu",
                U::Elu => "Elu",
                U::LeakyRelu(_) => "LeakyRelu",
                U::Gelu(_) => "Gelu",
                U::Softmax => "Softmax",
                U::LogSoftmax => "LogSoftmax",
            },
        }
    }
    /// The Keras module of the class.
    pub fn module(self) -> &'static str {
        use Unary as U;
        match self {
            TensorOp::Unary(
                U::Relu
                | U::Relu6
                | U::Sigmoid
                | U::Softplus
                | U::Softsign
                | U::Silu
                | U::HardSigmoid
                | U::HardSilu
                | U::Selu
                | U::Elu
                | U::LeakyRelu(_)
                | U::Gelu(_)
                | U::Softmax
                | U::LogSoftmax,
            ) => NN,
            _ => NUMPY,
        }
    }
    /// The parameters Keras keeps in the operation's config.
    fn params(self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        match self {
            TensorOp::Unary(Unary::Softmax | Unary::LogSoftmax) => {
                m.insert("axis".into(), (-1).into());
            }
            TensorOp::Unary(Unary::Elu) => {
                m.insert("alpha".into(), 1.0.into());
            }
            TensorOp::Unary(Unary::LeakyRelu(s)) => {
                m.insert("negative_slope".into(), s.into());
            }
            TensorOp::Unary(Unary::Gelu(a)) => {
                m.insert("approximate".into(), a.into());
            }
            _ => {}
        }
        m
    }
    /// How many operands the op takes.
    pub fn arity(self) -> usize {
        match self {
            TensorOp::Unary(_) => 1,
            _ => 2,
        }
    }
    /// Whether integer tensors become floats (true division and every
    /// function but the exact ones).
    fn promotes(self) -> bool {
        use Unary as U;
        match self {
            TensorOp::Divide => true,
            TensorOp::Unary(u) => !matches!(
                u,
                U::Negative | U::Absolute | U::Square | U::Sign | U::Floor | U::Ceil | U::Relu | U::Relu6
            ),
            _ => false,
        }
    }
    fn snake(self) -> String {
        let c = self.class();
        let mut out = String::new();
        for (i, ch) in c.chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.extend(ch.to_lowercase());
        }
        out
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

/// A Keras operation (`keras.src.ops.numpy` or `.nn`) as a layer of a
/// functional model: the op and its operands (at least one a tensor).
pub struct OpLayer {
    name: String,
    /// The operation.
    pub op: TensorOp,
    /// The operands in the call's order.
    pub operands: Vec<Operand>,
}

impl OpLayer {
    /// `op(operands...)`; errors when the count does not fit the op or no
    /// operand is a tensor.
    pub fn new(op: TensorOp, operands: Vec<Operand>) -> Result<OpLayer> {
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
            name: unique_name(&op.snake()),
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
        let mut m = self.op.params();
        m.insert("name".into(), self.name.clone().into());
        Ok(m.into())
    }
    fn keras_module(&self) -> (&'static str, Option<&'static str>) {
        (self.op.module(), Some(self.op.class()))
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
        let promote = float.is_some() || fractional || self.op.promotes();
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
            (TensorOp::Add, [a, b]) => a.add(b),
            (TensorOp::Subtract, [a, b]) => a.sub(b),
            (TensorOp::Multiply, [a, b]) => a.mul(b),
            (TensorOp::Divide, [a, b]) => a.div(b),
            (TensorOp::Maximum, [a, b]) => a.maximum(b),
            (TensorOp::Minimum, [a, b]) => a.minimum(b),
            (TensorOp::Power, [a, b]) => a.pow(b),
            (TensorOp::Unary(u), [a]) => {
                use Unary as U;
                match u {
                    U::Negative => a.neg(),
                    U::Absolute => a.abs(),
                    U::Exp => a.exp(),
                    U::Log => a.log(),
                    U::Sqrt => a.sqrt(),
                    U::Square => a.square(),
                    U::Tanh => a.tanh(),
                    U::Sign => a.sign(),
                    U::Floor => a.floor(),
                    U::Ceil => a.ceil(),
                    U::Reciprocal => a.reciprocal(),
                    U::Sin => a.sin(),
                    U::Cos => a.cos(),
                    U::Log1p => a.log1p(),
                    U::Expm1 => a.expm1(),
                    U::Relu => a.relu(),
                    U::Relu6 => a.relu6(),
                    U::Sigmoid => a.sigmoid(),
                    U::Softplus => a.softplus(),
                    U::Softsign => a.softsign(),
                    U::Silu => a.silu(),
                    U::HardSigmoid => Activation::HardSigmoid.apply(a),
                    U::HardSilu => Activation::HardSilu.apply(a),
                    U::Selu => a.selu(),
                    U::Elu => a.elu(),
                    U::LeakyRelu(s) => a.leaky_relu(s as f32),
                    U::Gelu(true) => a.gelu_tanh(),
                    U::Gelu(false) => a.gelu(),
                    U::Softmax => Activation::Softmax.apply(a),
                    U::LogSoftmax => a.log_softmax(-1),
                }
            }
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
        let mut rsub = OpLayer::new(TensorOp::Subtract, vec![Operand::Scalar(1.0), Operand::Tensor]).unwrap();
        assert_eq!(
            rsub.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            [0.0, -1.0, -3.0]
        );
        let mut div = OpLayer::new(TensorOp::Divide, vec![Operand::Tensor, Operand::Scalar(2.0)]).unwrap();
        assert_eq!(div.call(&x, false).unwrap().to_vec::<f32>().unwrap(), [0.5, 1.0, 2.0]);
        let mut mul = OpLayer::new(TensorOp::Multiply, vec![Operand::Tensor, Operand::Tensor]).unwrap();
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
        assert!(OpLayer::new(TensorOp::Add, vec![Operand::Scalar(1.0), Operand::Scalar(2.0)]).is_err());
        assert!(OpLayer::new(TensorOp::Unary(Unary::Exp), vec![Operand::Tensor, Operand::Tensor]).is_err());
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
        let mut scale = OpLayer::new(TensorOp::Divide, vec![Operand::Tensor, Operand::Scalar(255.0)]).unwrap();
        let y = scale.call(&x, false).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(y.to_vec::<f32>().unwrap(), [1.0 / 255.0, 2.0 / 255.0, 1.0]);
        let mut half = OpLayer::new(TensorOp::Multiply, vec![Operand::Tensor, Operand::Scalar(0.5)]).unwrap();
        assert_eq!(
            half.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            [0.5, 1.0, 127.5]
        );
        let mut plus = OpLayer::new(TensorOp::Add, vec![Operand::Tensor, Operand::Scalar(1.0)]).unwrap();
        assert_eq!(plus.call(&x, false).unwrap().dtype(), DType::I32, "int + int stays int");
    }
}
