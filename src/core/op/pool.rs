//! Max and average pooling 2-D over NHWC, and their gradients
//! (kernel: shaders/pool.wgsl): the [`Pool2d`] attributes and their window
//! geometry.
//!
//! Part of [`crate::core::op`]; output sizes follow [`super::conv::out_dim`]
//! (TensorFlow's), and the public functions are in `ops::pool`.

use super::conv::{Padding, out_dim};
use crate::core::error::{Error, Result};

/// The attributes of a 2-D pooling over NHWC input.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2d {
    /// Max pooling; `false` for average pooling, whose average counts only
    /// the input pixels in the window (padding excluded, as TensorFlow).
    pub max: bool,
    /// (height, width) of the window; positive.
    pub ksize: [usize; 2],
    /// (height, width) step of the window; positive.
    pub strides: [usize; 2],
    /// How the input is padded; explicit padding must be smaller than the
    /// window.
    pub padding: Padding,
}

impl Pool2d {
    /// `"max_pool2d"` or `"avg_pool2d"`.
    pub fn name(&self) -> &'static str {
        if self.max { "max_pool2d" } else { "avg_pool2d" }
    }
    /// `"max_pool2d_grad"` or `"avg_pool2d_grad"`.
    pub fn grad_name(&self) -> &'static str {
        if self.max { "max_pool2d_grad" } else { "avg_pool2d_grad" }
    }

    /// [oh, ow, pad_top, pad_left] for an input [n, h, w, c].
    pub(crate) fn geom(&self, x: &[usize]) -> Result<[usize; 4]> {
        let op = self.name();
        if x.len() != 4 {
            return Err(Error::shape(op, &[x], "needs input [batch, height, width, channels]"));
        }
        if self.ksize.contains(&0) || self.strides.contains(&0) {
            return Err(Error::arg(
                op,
                format!("ksize {:?} and strides {:?} must be positive", self.ksize, self.strides),
            ));
        }
        let (ph, pw) = match self.padding {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => {
                if top.max(bottom) >= self.ksize[0] || left.max(right) >= self.ksize[1] {
                    return Err(Error::arg(
                        op,
                        format!(
                            "padding {:?} must be smaller than the window {:?}",
                            self.padding, self.ksize
                        ),
                    ));
                }
                (Some((top, bottom)), Some((left, right)))
            }
            _ => (None, None),
        };
        let same = self.padding == Padding::Same;
        let h = out_dim(op, x[1], self.ksize[0], self.strides[0], 1, ph, same)?;
        let w = out_dim(op, x[2], self.ksize[1], self.strides[1], 1, pw, same)?;
        // Explicit padding can give windows over an empty input: nothing to pool.
        if (x[1] == 0 || x[2] == 0) && h.out * w.out > 0 {
            return Err(Error::shape(
                op,
                &[x],
                format!(
                    "an input of height or width 0 has no pixel for the {}x{} output windows of padding {:?}",
                    h.out, w.out, self.padding
                ),
            ));
        }
        Ok([h.out, w.out, h.pad_before, w.pad_before])
    }

    /// Whether no two windows overlap (each stride at least its window), so
    /// that each input position has at most one window: max pooling's
    /// gradient can then be written window by window.
    pub(crate) fn disjoint(&self) -> bool {
        (0..2).all(|d| self.strides[d] >= self.ksize[d])
    }

    /// Whether the windows tile an input [n, h, w, c] with `geom`
    /// ([`Pool2d::geom`]) exactly: each input position in exactly one
    /// window, so a gradient written window by window writes every element.
    pub(crate) fn tiles(&self, x: &[usize], geom: [usize; 4]) -> bool {
        let [oh, ow, pt, pl] = geom;
        // Windows step by their size from -pad (greater than -size), so
        // they cover [0, h) once reaching h.
        let covers = |d: usize, o: usize, pad: usize| {
            self.strides[d] == self.ksize[d] && o.saturating_mul(self.strides[d]) >= x[d + 1].saturating_add(pad)
        };
        x.len() == 4 && covers(0, oh, pt) && covers(1, ow, pl)
    }
}
