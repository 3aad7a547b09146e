//! 2-D convolution, NHWC activations with HWIO filters, and its two
//! gradients (kernel: shaders/conv.wgsl over the GEMM core): the [`Conv2d`]
//! and [`Padding`] attributes and TensorFlow's output-size arithmetic.
//!
//! Groups follow TensorFlow: they are implied by `C / filter_in_channels`;
//! a depthwise convolution is the case groups == C. Padding is `Same`
//! (output `ceil(in / stride)`, the odd pixel of padding at the bottom and
//! right, as TensorFlow), `Valid` (no padding) or explicit per side.
//!
//! Part of [`crate::core::op`]; the public functions (`conv2d`,
//! `depthwise_conv2d`, the backprops) and the gradient rules are in
//! `ops::conv`. Pooling ([`super::pool`]) shares [`Padding`] and
//! [`out_dim`].

use super::Op;
use crate::core::error::{Error, Result};

/// Spatial padding of a convolution or pooling, as TensorFlow's `padding`
/// argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `"SAME"`: output size `ceil(in / stride)`, zero padding split evenly
    /// with any odd pixel at the bottom / right.
    Same,
    /// `"VALID"`: no padding; only windows that fit entirely.
    Valid,
    /// Explicit zero padding per side, in pixels (TensorFlow's list form).
    Explicit {
        /// Rows above.
        top: usize,
        /// Rows below.
        bottom: usize,
        /// Columns on the left.
        left: usize,
        /// Columns on the right.
        right: usize,
    },
}

/// The attributes of a convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// (height, width) step of the window; positive.
    pub strides: [usize; 2],
    /// How the input is padded.
    pub padding: Padding,
    /// (height, width) spacing between filter taps (atrous convolution);
    /// 1 for a dense filter.
    pub dilations: [usize; 2],
    /// Channel groups: input channels = filter in-channels × groups, and
    /// out-channels divide by it. 1 for an ordinary convolution.
    pub groups: usize,
}

/// Output size and padding of one spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim {
    /// Output size.
    pub out: usize,
    /// Padding before the first input pixel (top or left).
    pub pad_before: usize,
}

/// TensorFlow's SAME padding of one spatial dimension: the output size
/// and the total padding (`total / 2` goes before, the rest after). Sizes
/// come checked (`stride` and `k` at least 1).
pub(crate) fn same_padding(input: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let eff = k.saturating_sub(1) * dilation + 1;
    let out = input.div_ceil(stride.max(1));
    let total = ((out.max(1) - 1) * stride + eff).saturating_sub(input);
    (out, total)
}

/// TensorFlow's output size and leading padding for one spatial dimension:
/// an input of `input` pixels, a window of `k` taps, `stride`, `dilation`,
/// explicit `(before, after)` padding or `same`. With `same`, `pad` is
/// ignored. [`Error::InvalidArgument`] when the dilated window is larger
/// than the padded input.
pub fn out_dim(
    op: &'static str,
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: Option<(usize, usize)>,
    same: bool,
) -> Result<Dim> {
    let eff = (k - 1) * dilation + 1;
    if same {
        let (out, total) = same_padding(input, k, stride, dilation);
        return Ok(Dim {
            out,
            pad_before: total / 2,
        });
    }
    let (b, a) = pad.unwrap_or((0, 0));
    let span = input + b + a;
    if span < eff {
        return Err(Error::arg(
            op,
            format!(
                "the window ({eff} with dilation) is larger than the padded input ({span}): the output would be empty"
            ),
        ));
    }
    Ok(Dim {
        out: (span - eff) / stride + 1,
        pad_before: b,
    })
}

impl Conv2d {
    /// (height, width) output dims for an input of `[h, w]` and a `[kh, kw]`
    /// window; `op` names the caller in errors.
    pub fn dims(&self, op: &'static str, h: usize, w: usize, kh: usize, kw: usize) -> Result<(Dim, Dim)> {
        let (ph, pw) = match self.padding {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => (Some((top, bottom)), Some((left, right))),
            _ => (None, None),
        };
        let same = self.padding == Padding::Same;
        Ok((
            out_dim(op, h, kh, self.strides[0], self.dilations[0], ph, same)?,
            out_dim(op, w, kw, self.strides[1], self.dilations[1], pw, same)?,
        ))
    }

    pub(crate) fn check(&self, op: &'static str) -> Result<()> {
        if self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err(Error::arg(
                op,
                format!(
                    "strides {:?} and dilations {:?} must be positive",
                    self.strides, self.dilations
                ),
            ));
        }
        if self.groups == 0 {
            return Err(Error::arg(op, "groups must be positive"));
        }
        Ok(())
    }
}

/// Every size of one convolution problem.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) cg: usize,
    pub(crate) og: usize,
    pub(crate) g: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) pt: usize,
    pub(crate) pl: usize,
}

pub(crate) fn geom(op: &'static str, a: &Conv2d, x: &[usize], f: &[usize]) -> Result<Geom> {
    let (hd, wd) = a.dims(op, x[1], x[2], f[0], f[1])?;
    Ok(Geom {
        n: x[0],
        h: x[1],
        w: x[2],
        c: x[3],
        oh: hd.out,
        ow: wd.out,
        o: f[3],
        kh: f[0],
        kw: f[1],
        cg: f[2],
        og: f[3] / a.groups,
        g: a.groups,
        sh: a.strides[0],
        sw: a.strides[1],
        dh: a.dilations[0],
        dw: a.dilations[1],
        pt: hd.pad_before,
        pl: wd.pad_before,
    })
}

/// Checks x [n,h,w,c] against f [kh,kw,c/groups,o]; returns the geometry.
pub(crate) fn check_pair(op: &'static str, a: &Conv2d, x: &[usize], f: &[usize]) -> Result<Geom> {
    a.check(op)?;
    if x.len() != 4 || f.len() != 4 {
        return Err(Error::shape(
            op,
            &[x, f],
            "needs input [batch, height, width, channels] and filter [height, width, in, out]",
        ));
    }
    if f[2] == 0 || x[3] != f[2] * a.groups || f[3] % a.groups != 0 {
        return Err(Error::shape(
            op,
            &[x, f],
            format!(
                "input channels {} must equal filter in-channels {} times groups {}, and out-channels {} divide by the groups",
                x[3], f[2], a.groups, f[3]
            ),
        ));
    }
    if f[0] == 0 || f[1] == 0 {
        return Err(Error::shape(op, &[x, f], "the filter window is empty"));
    }
    geom(op, a, x, f)
}

/// The geometry of a convolution op whose operands have shapes `x`.
pub(crate) fn geom_of(op: &Op, x: &[&[usize]]) -> Result<Geom> {
    let name = op.name();
    match op {
        Op::Conv2d(a) => geom(name, a, x[0], x[1]),
        Op::Conv2dInt8(a, fs) => geom(name, a, x[0], fs),
        Op::Conv2dInputGrad(a, xs) => geom(name, a, xs, x[1]),
        Op::Conv2dFilterGrad(a, fs) => geom(name, a, x[0], fs),
        _ => unreachable!(),
    }
}
