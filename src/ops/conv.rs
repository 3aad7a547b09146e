//! 2-D convolution, NHWC activations with HWIO filters, and its two
//! gradients (kernel: shaders/conv.wgsl over the GEMM core):
//! `tf.nn.conv2d`, `tf.nn.depthwise_conv2d` and the two backprops.
//!
//! Groups follow TensorFlow: they are implied by `C / filter_in_channels`;
//! a depthwise convolution is the case groups == C. Padding is `Same`,
//! `Valid` or explicit per side ([`Padding`]). Operands are float of one
//! dtype; mismatched channels or ranks are [`Error::Shape`], non-positive
//! strides or dilations and windows larger than the padded input
//! [`Error::InvalidArgument`].
//!
//! The attributes and output-size arithmetic are in
//! [`crate::core::op::conv`] (re-exported here); Keras' `Conv2D` layer in
//! `nn` builds on these.

pub use crate::core::op::conv::*;

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::numel;
use crate::tensor::Tensor;

/// f32 sums of k products: rounding grows like sqrt(k) per partial sum of
/// size ~sqrt(k), so up to ~k ulps of the operands' scale in a long sum.
pub(crate) fn tolerance(op: &Op, x: &[&Tensor]) -> Tol {
    let k = match op {
        Op::Conv2d(_) => numel(&x[1].shape()[..3]),
        Op::Conv2dInt8(_, fs) => numel(&fs[..3.min(fs.len())]),
        Op::Conv2dInputGrad(_, _) => x[1].shape()[0] * x[1].shape()[1] * x[1].shape()[3],
        _ => numel(&x[1].shape()[..3]),
    };
    Tol::new(2e-6 * (k as f64).sqrt().max(1.0) + 2e-7 * k as f64, 1e-5)
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    if let Op::Conv2dInt8(a, fs) = op {
        if x[0].dtype() != DType::F32 || fs.len() != 4 {
            return Err(Error::shape(
                name,
                &[x[0].shape(), fs],
                "needs an f32 input and a filter shape [KH, KW, CG, O]",
            ));
        }
        let g = check_pair(name, a, x[0].shape(), fs)?;
        super::layout::check_int8(name, x[1], x[2], Some(fs[3]), numel(&fs[..3]))?;
        return Ok((vec![g.n, g.oh, g.ow, g.o], DType::F32));
    }
    if x[0].dtype() != x[1].dtype() || !x[0].dtype().is_float() {
        return Err(Error::dtype(
            name,
            &[x[0].dtype(), x[1].dtype()],
            "needs float operands of one dtype",
        ));
    }
    let dt = x[0].dtype();
    match op {
        Op::Conv2d(a) => {
            let g = check_pair(name, a, x[0].shape(), x[1].shape())?;
            Ok((vec![g.n, g.oh, g.ow, g.o], dt))
        }
        Op::Conv2dInputGrad(a, xs) => {
            let g = check_pair(name, a, xs, x[1].shape())?;
            let want = [g.n, g.oh, g.ow, g.o];
            if x[0].shape() != want {
                return Err(Error::shape(
                    name,
                    &[x[0].shape(), x[1].shape(), xs],
                    format!("the output gradient must have shape {want:?}"),
                ));
            }
            Ok((xs.clone(), dt))
        }
        Op::Conv2dFilterGrad(a, fs) => {
            let g = check_pair(name, a, x[0].shape(), fs)?;
            let want = [g.n, g.oh, g.ow, g.o];
            if x[1].shape() != want {
                return Err(Error::shape(
                    name,
                    &[x[0].shape(), x[1].shape(), fs],
                    format!("the output gradient must have shape {want:?}"),
                ));
            }
            Ok((fs.clone(), dt))
        }
        _ => unreachable!(),
    }
}

/// Gradient rules. The two backprop ops are linear in each operand, so their
/// own gradients are convolutions again.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor, need: &[bool]) -> Result<Vec<Option<Tensor>>> {
    // Input `i`'s gradient, computed only where it is wanted.
    let wants = |i: usize| need.get(i).copied().unwrap_or(true);
    let run = |i: usize, o: Op, a: &Tensor, b: &Tensor| {
        if wants(i) { exec(o, &[a, b]).map(Some) } else { Ok(None) }
    };
    Ok(match op {
        Op::Conv2d(a) => vec![
            run(0, Op::Conv2dInputGrad(a.clone(), x[0].shape().to_vec()), dy, x[1])?,
            run(1, Op::Conv2dFilterGrad(a.clone(), x[1].shape().to_vec()), x[0], dy)?,
        ],
        // The int8 weights are constants: only the input gets a gradient.
        Op::Conv2dInt8(_, _) if !wants(0) => vec![None, None, None],
        Op::Conv2dInt8(a, fs) => {
            let w = super::layout::dequantize_int8(x[1], x[2], numel(&fs[..3]))?;
            let f = exec(Op::Reshape(vec![fs[3], fs[0], fs[1], fs[2]]), &[&w])?.transpose(&[1, 2, 3, 0])?;
            vec![
                run(0, Op::Conv2dInputGrad(a.clone(), x[0].shape().to_vec()), dy, &f)?,
                None,
                None,
            ]
        }
        // z = dx(g, f): <dz, z> = <conv(dz, f), g> = <df(dz, g), f>
        Op::Conv2dInputGrad(a, _) => vec![
            run(0, Op::Conv2d(a.clone()), dy, x[1])?,
            run(1, Op::Conv2dFilterGrad(a.clone(), x[1].shape().to_vec()), dy, x[0])?,
        ],
        // z = df(x, g): <dz, z> = <dx(g, dz), x> = <conv(x, dz), g>
        Op::Conv2dFilterGrad(a, _) => vec![
            run(0, Op::Conv2dInputGrad(a.clone(), x[0].shape().to_vec()), x[1], dy)?,
            run(1, Op::Conv2d(a.clone()), x[0], dy)?,
        ],
        _ => unreachable!(),
    })
}

// ---- public API ----------------------------------------------------------

fn groups_of(op: &'static str, x: &[usize], f: &[usize]) -> Result<usize> {
    if x.len() != 4 || f.len() != 4 || f[2] == 0 || x[3] % f[2] != 0 {
        return Err(Error::shape(
            op,
            &[x, f],
            "input channels must be a multiple of the filter's in-channels",
        ));
    }
    Ok(x[3] / f[2])
}

/// `tf.nn.conv2d(input, filters, strides, padding, dilations)`, NHWC / HWIO.
/// Grouped when the input has a multiple of the filter's in-channels.
pub fn conv2d(
    x: &Tensor,
    filters: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d", x.shape(), filters.shape())?;
    exec(
        Op::Conv2d(Conv2d {
            strides,
            padding,
            dilations,
            groups,
        }),
        &[x, filters],
    )
}

/// `tf.nn.depthwise_conv2d`: filter [kh, kw, channels, multiplier]; output
/// channel c * multiplier + m.
pub fn depthwise_conv2d(
    x: &Tensor,
    filter: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let f = filter.shape();
    if f.len() != 4 || x.rank() != 4 || f[2] != x.shape()[3] {
        return Err(Error::shape(
            "depthwise_conv2d",
            &[x.shape(), f],
            "needs input [n,h,w,c] and filter [kh,kw,c,multiplier]",
        ));
    }
    let fr = filter.reshape(&[f[0] as isize, f[1] as isize, 1, (f[2] * f[3]) as isize])?;
    exec(
        Op::Conv2d(Conv2d {
            strides,
            padding,
            dilations,
            groups: f[2],
        }),
        &[x, &fr],
    )
}

/// `tf.nn.conv2d_backprop_input`: d loss / d input of shape `input_shape`.
pub fn conv2d_backprop_input(
    input_shape: &[usize],
    filters: &Tensor,
    dy: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d_backprop_input", input_shape, filters.shape())?;
    exec(
        Op::Conv2dInputGrad(
            Conv2d {
                strides,
                padding,
                dilations,
                groups,
            },
            input_shape.to_vec(),
        ),
        &[dy, filters],
    )
}

/// `tf.nn.conv2d_backprop_filter`: d loss / d filter of shape `filter_shape`.
pub fn conv2d_backprop_filter(
    x: &Tensor,
    filter_shape: &[usize],
    dy: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d_backprop_filter", x.shape(), filter_shape)?;
    exec(
        Op::Conv2dFilterGrad(
            Conv2d {
                strides,
                padding,
                dilations,
                groups,
            },
            filter_shape.to_vec(),
        ),
        &[x, dy],
    )
}
