//! Max and average pooling 2-D over NHWC, and their gradients
//! (kernel: shaders/pool.wgsl): `tf.nn.max_pool2d` and `tf.nn.avg_pool2d`.
//!
//! Inputs are float `[batch, height, width, channels]`; output sizes follow
//! [`Padding`] as for convolutions. Average pooling divides by the number of
//! input pixels in each window (padding excluded, as TensorFlow). The second
//! derivative of max pooling is not implemented.
//!
//! The attributes are in [`crate::core::op::pool`] (re-exported here).

pub use crate::core::op::pool::*;

use super::conv::Padding;
use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) const TOL: Tol = Tol::new(1e-6, 1e-5);

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let a = x[0];
    if !a.dtype().is_float() {
        return Err(Error::dtype(name, &[a.dtype()], "needs a float tensor"));
    }
    match op {
        Op::Pool(p) => {
            let [oh, ow, ..] = p.geom(a.shape())?;
            Ok((vec![a.shape()[0], oh, ow, a.shape()[3]], a.dtype()))
        }
        Op::PoolGrad(p) => {
            let [oh, ow, ..] = p.geom(a.shape())?;
            let want = [a.shape()[0], oh, ow, a.shape()[3]];
            if x[1].shape() != want || x[1].dtype() != a.dtype() {
                return Err(Error::shape(
                    name,
                    &[a.shape(), x[1].shape()],
                    format!("the output gradient must be {want:?} of {}", a.dtype()),
                ));
            }
            Ok((a.shape().to_vec(), a.dtype()))
        }
        _ => unreachable!(),
    }
}

/// Gradient rules: a pooling's gradient is its `PoolGrad`; an average
/// pool's gradient is linear in dy, so its own gradient is the pool again.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Pool(p) => Ok(vec![Some(exec(Op::PoolGrad(p.clone()), &[x[0], dy])?)]),
        Op::PoolGrad(p) if !p.max => Ok(vec![None, Some(exec(Op::Pool(p.clone()), &[dy])?)]),
        _ => Err(Error::arg(
            op.name(),
            "the second derivative of max pooling is not implemented",
        )),
    }
}

/// `tf.nn.max_pool2d(input, ksize, strides, padding)`.
pub fn max_pool2d(x: &Tensor, ksize: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    exec(
        Op::Pool(Pool2d {
            max: true,
            ksize,
            strides,
            padding,
        }),
        &[x],
    )
}

/// `tf.nn.avg_pool2d(input, ksize, strides, padding)`.
pub fn avg_pool2d(x: &Tensor, ksize: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    exec(
        Op::Pool(Pool2d {
            max: false,
            ksize,
            strides,
            padding,
        }),
        &[x],
    )
}

/// Gradient of a pooling with respect to its input `x`, given `dy`.
pub fn pool2d_grad(x: &Tensor, dy: &Tensor, pool: &Pool2d) -> Result<Tensor> {
    exec(Op::PoolGrad(pool.clone()), &[x, dy])
}
