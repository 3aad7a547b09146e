//! Element types (`tf.dtypes`). GPU storage: f32, i32 and masks as 32-bit
//! words, f16 and bf16 as 16-bit halves; f64 exists only on the CPU
//! reference (it is what finite-difference gradient checks run in).
//!
//! Part of [`crate::core`]. Every [`crate::Tensor`] has one [`DType`]; the
//! [`Element`] trait maps Rust scalars onto them for
//! [`Tensor::from_vec`](crate::Tensor::from_vec) and
//! [`Tensor::to_vec`](crate::Tensor::to_vec). Ops never promote: operands of
//! a binary op must share a dtype, and `ops::layout::cast` converts.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor, as `tf.DType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// `tf.float32`: the default for activations and weights on every device.
    F32,
    /// `tf.float16`: stored as halves; computed in f16 where the adapter has
    /// `SHADER_F16`, otherwise in f32 and rounded.
    F16,
    /// `tf.float64`: CPU device only (WGSL has no f64).
    F64,
    /// `tf.bfloat16`: stored as 16-bit brain floats (f32's exponent, 8 bits
    /// of significand) on every device; computed in f32 and rounded to
    /// nearest even, as TensorFlow's CPU kernels do (WGSL has no bf16).
    BF16,
    /// `tf.int32`: indices, labels and integer arithmetic (wrapping).
    I32,
    /// Boolean mask; comparisons produce it, `where_` consumes it.
    Bool,
}

impl DType {
    /// TensorFlow's name: `"float32"`, `"float16"`, `"float64"`,
    /// `"bfloat16"`, `"int32"`, `"bool"` (also what `Display` prints).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::F64 => "float64",
            DType::BF16 => "bfloat16",
            DType::I32 => "int32",
            DType::Bool => "bool",
        }
    }
    /// Whether this is F32, F16, F64 or BF16: the dtypes that carry
    /// gradients and that math ops such as `exp` accept.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64 | DType::BF16)
    }
    /// Whether this is a 16-bit float (F16 or BF16): kept as halves, and
    /// computed in f32 where the device has no arithmetic for it.
    pub fn is_half(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }
    /// Bytes per element in device storage.
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
            DType::F32 | DType::I32 | DType::Bool => 4,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust types a tensor can be built from and read back into.
///
/// Implemented for `f32`, `half::f16`, `half::bf16`, `f64`, `i32` and `bool`.
pub trait Element: Copy + Send + Sync + 'static + fmt::Debug {
    /// The dtype of a tensor holding this type.
    const DTYPE: DType;
    /// Widens to f64 (exact for every implementor; `true` is 1.0).
    fn to_f64(self) -> f64;
    /// Narrows from f64: floats round to nearest, `i32` truncates toward
    /// zero (saturating), `bool` is `v != 0`.
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:expr, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}
element!(f32, DType::F32, |x: f32| x as f64, |v: f64| v as f32);
element!(f64, DType::F64, |x: f64| x, |v: f64| v);
// 16-bit floats round through f32, as TensorFlow converts (Eigen's
// half(double) and bfloat16(double); half's from_f64 may round otherwise).
element!(f16, DType::F16, |x: f16| x.to_f64(), |v: f64| f16::from_f32(v as f32));
element!(bf16, DType::BF16, |x: bf16| x.to_f64(), |v: f64| bf16::from_f32(
    v as f32
));
element!(i32, DType::I32, |x: i32| x as f64, |v: f64| v as i32);
element!(bool, DType::Bool, |x: bool| x as u8 as f64, |v: f64| v != 0.0);
