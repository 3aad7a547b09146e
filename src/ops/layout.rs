//! Data movement and dtype conversion: cast, reshape, transpose, broadcast_to,
//! slice, concat, stack, gather, one_hot, expand_dims, squeeze and
//! stop_gradient (kernels: shaders/layout.wgsl, shaders/cast.wgsl), as
//! functions named after TensorFlow's and as [`Tensor`] methods.
//!
//! Results are always contiguous: transpose, slice and broadcast copy, as
//! TensorFlow's kernels do; reshape, expand_dims, squeeze and stop_gradient
//! share storage. Gradients move back the other way (slice's is a pad,
//! gather's a scatter-add); indices and casts to non-float get none.
//!
//! The strided views shared with the kernels are in
//! [`crate::core::op::layout`].

use super::{Op, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::{self, numel};
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let a = x[0];
    let sh = a.shape();
    match op {
        Op::Cast(to) => Ok((sh.to_vec(), *to)),
        Op::StopGradient => Ok((sh.to_vec(), a.dtype())),
        Op::Reshape(s) => {
            if numel(s) != a.numel() {
                return Err(Error::shape(
                    name,
                    &[sh, s],
                    format!("cannot reshape {} elements into {s:?}", a.numel()),
                ));
            }
            Ok((s.clone(), a.dtype()))
        }
        Op::Permute(p) => {
            let mut seen = vec![false; sh.len()];
            if p.len() != sh.len()
                || p.iter()
                    .any(|&d| d >= sh.len() || std::mem::replace(&mut seen[d], true))
            {
                return Err(Error::arg(
                    name,
                    format!("{p:?} is not a permutation of the {} axes of {sh:?}", sh.len()),
                ));
            }
            Ok((p.iter().map(|&d| sh[d]).collect(), a.dtype()))
        }
        Op::BroadcastTo(to) => {
            let b = shape::broadcast(name, sh, to)?;
            if &b != to {
                return Err(Error::shape(
                    name,
                    &[sh, to],
                    "the target shape must be the broadcast result",
                ));
            }
            Ok((to.clone(), a.dtype()))
        }
        Op::Slice { begin, size } => {
            if begin.len() != sh.len() || size.len() != sh.len() {
                return Err(Error::arg(
                    name,
                    format!(
                        "begin {begin:?} and size {size:?} need {} entries for shape {sh:?}",
                        sh.len()
                    ),
                ));
            }
            for d in 0..sh.len() {
                if begin[d].checked_add(size[d]).is_none_or(|end| end > sh[d]) {
                    return Err(Error::arg(
                        name,
                        format!("begin {begin:?} + size {size:?} runs past shape {sh:?} in dimension {d}"),
                    ));
                }
            }
            Ok((size.clone(), a.dtype()))
        }
        Op::Concat { axis } => {
            let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
            let mut out = sh.to_vec();
            if *axis >= sh.len() {
                return Err(Error::arg(
                    name,
                    format!("axis {axis} out of range for rank {}", sh.len()),
                ));
            }
            out[*axis] = 0;
            for t in x {
                if t.dtype() != a.dtype() {
                    return Err(Error::dtype(
                        name,
                        &x.iter().map(|t| t.dtype()).collect::<Vec<_>>(),
                        "all inputs need one dtype",
                    ));
                }
                let s = t.shape();
                if s.len() != sh.len() || (0..s.len()).any(|d| d != *axis && s[d] != sh[d]) {
                    return Err(Error::shape(
                        name,
                        &shapes,
                        format!("shapes must match except in axis {axis}"),
                    ));
                }
                out[*axis] += s[*axis];
            }
            Ok((out, a.dtype()))
        }
        Op::Gather { axis } => {
            let idx = x[1];
            if idx.dtype() != DType::I32 {
                return Err(Error::dtype(name, &[a.dtype(), idx.dtype()], "indices must be int32"));
            }
            if *axis >= sh.len() {
                return Err(Error::arg(
                    name,
                    format!("axis {axis} out of range for rank {}", sh.len()),
                ));
            }
            let mut out = sh[..*axis].to_vec();
            out.extend_from_slice(idx.shape());
            out.extend_from_slice(&sh[axis + 1..]);
            Ok((out, a.dtype()))
        }
        Op::Pad { before, shape } => {
            if before.len() != sh.len()
                || shape.len() != sh.len()
                || (0..sh.len()).any(|d| before[d] + sh[d] > shape[d])
            {
                return Err(Error::shape(
                    name,
                    &[sh, shape],
                    format!("cannot place it at {before:?} inside {shape:?}"),
                ));
            }
            Ok((shape.clone(), a.dtype()))
        }
        Op::GatherGrad { axis, dim } => {
            let dy = x[1];
            let k = a.rank();
            if a.dtype() != DType::I32 || !dy.dtype().is_float() || dy.rank() < axis + k {
                return Err(Error::shape(
                    name,
                    &[a.shape(), dy.shape()],
                    "needs int32 indices and a float gradient",
                ));
            }
            let mut out = dy.shape()[..*axis].to_vec();
            out.push(*dim);
            out.extend_from_slice(&dy.shape()[axis + k..]);
            Ok((out, dy.dtype()))
        }
        Op::DequantizeInt8 { cols } => {
            let rows = check_int8(name, a, x[1], None, *cols)?;
            Ok((vec![rows, *cols], DType::F32))
        }
        Op::OneHot { depth, dtype, .. } => {
            if a.dtype() != DType::I32 {
                return Err(Error::dtype(name, &[a.dtype()], "indices must be int32"));
            }
            let mut out = sh.to_vec();
            out.push(*depth);
            Ok((out, *dtype))
        }
        _ => unreachable!(),
    }
}

/// Gradient rules: data movement moves gradients back the other way.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let a = x[0];
    let dims = |s: &[usize]| s.iter().map(|&d| d as isize).collect::<Vec<_>>();
    Ok(match op {
        Op::Cast(_) => {
            if a.dtype().is_float() && dy.dtype().is_float() {
                vec![Some(cast(dy, a.dtype())?)]
            } else {
                vec![None]
            }
        }
        Op::Reshape(_) => vec![Some(reshape(dy, &dims(a.shape()))?)],
        Op::StopGradient => vec![None],
        Op::Permute(p) => {
            let mut inv = vec![0; p.len()];
            for (i, &d) in p.iter().enumerate() {
                inv[d] = i;
            }
            vec![Some(transpose(dy, &inv)?)]
        }
        Op::BroadcastTo(_) => vec![Some(super::sum_to(dy, a.shape())?)],
        Op::Slice { begin, .. } => vec![Some(exec(
            Op::Pad {
                before: begin.clone(),
                shape: a.shape().to_vec(),
            },
            &[dy],
        )?)],
        Op::Pad { before, .. } => vec![Some(slice(dy, before, a.shape())?)],
        Op::Concat { axis } => {
            let mut at = 0;
            let mut gs = Vec::new();
            for t in x {
                let mut begin = vec![0; dy.rank()];
                begin[*axis] = at;
                gs.push(Some(slice(dy, &begin, t.shape())?));
                at += t.shape()[*axis];
            }
            gs
        }
        Op::Gather { axis } => {
            if !a.dtype().is_float() {
                return Ok(vec![None, None]);
            }
            let g = exec(
                Op::GatherGrad {
                    axis: *axis,
                    dim: a.shape()[*axis],
                },
                &[x[1], dy],
            )?;
            vec![Some(g), None]
        }
        Op::GatherGrad { axis, .. } => vec![None, Some(gather(dy, a, *axis as isize)?)],
        Op::OneHot { .. } => vec![None],
        Op::DequantizeInt8 { .. } => vec![None, None],
        _ => unreachable!(),
    })
}

/// Checks int8 weights as [`Op::DequantizeInt8`] and the fused int8 ops
/// read them: int32 words `[rows, ceil(cols / 4)]` and f32 scales
/// `[rows]`, with `rows` as given; returns the rows.
pub(crate) fn check_int8(
    name: &'static str,
    packed: &Tensor,
    scales: &Tensor,
    rows: Option<usize>,
    cols: usize,
) -> Result<usize> {
    let sh = packed.shape();
    let r = sh.first().copied().unwrap_or(0);
    let ok = packed.dtype() == DType::I32
        && scales.dtype() == DType::F32
        && sh.len() == 2
        && sh[1] == cols.div_ceil(4)
        && scales.shape() == [r]
        && rows.is_none_or(|want| want == r);
    if !ok {
        let rows = rows.map_or("rows".to_string(), |r| r.to_string());
        return Err(Error::shape(
            name,
            &[sh, scales.shape()],
            format!("needs int32 words [{rows}, ceil({cols} / 4)] and f32 scales [{rows}]"),
        ));
    }
    Ok(r)
}

// ---- public API ----------------------------------------------------------

/// Symmetric int8 weights per row, `w[r, j] = q[r, j] * scales[r]`, from
/// `packed` (`[rows, ceil(cols / 4)]` i32, four int8 per word, low byte
/// first; see [`pack_int8`]) and `scales` (`[rows]` f32).
pub fn dequantize_int8(packed: &Tensor, scales: &Tensor, cols: usize) -> Result<Tensor> {
    exec(Op::DequantizeInt8 { cols }, &[packed, scales])
}

/// Packs int8 values `q` (`rows * cols`, row-major) four to an i32 word,
/// low byte first, each row padded with zeros to whole words.
/// `q` must hold `rows * cols` values.
pub fn pack_int8(q: &[i8], rows: usize, cols: usize) -> Result<Vec<i32>> {
    let words = cols.div_ceil(4);
    let (n, total) = rows
        .checked_mul(cols)
        .zip(rows.checked_mul(words))
        .ok_or_else(|| Error::shape("pack_int8", &[&[rows, cols]], "the size overflows usize"))?;
    if q.len() != n {
        return Err(Error::shape(
            "pack_int8",
            &[&[q.len()], &[rows, cols]],
            format!("{} values for {rows} rows of {cols}", q.len()),
        ));
    }
    let mut out = vec![0i32; total];
    for (i, &v) in q.iter().enumerate() {
        let (r, j) = (i / cols.max(1), i % cols.max(1));
        let w = &mut out[r * words + j / 4];
        *w |= i32::from(v as u8) << (8 * (j % 4));
    }
    Ok(out)
}

/// `tf.cast`. Floats to int32 truncate toward zero; NaN, infinities and
/// values beyond int32's range give `i32::MIN` on every device, as
/// TensorFlow's x86 kernel does (C leaves these undefined). Floats to bool: nonzero
/// is true, NaN included. Floats to float16 round to nearest even, past
/// its range to infinity.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    exec(Op::Cast(dtype), &[x])
}

/// `tf.reshape`; one entry may be -1 and is inferred.
pub fn reshape(x: &Tensor, shape: &[isize]) -> Result<Tensor> {
    let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    let holes = shape.iter().filter(|&&d| d < 0).count();
    let bad = || {
        Error::arg(
            "reshape",
            format!("cannot reshape {:?} ({} elements) into {shape:?}", x.shape(), x.numel()),
        )
    };
    if holes > 1 || shape.iter().any(|&d| d < -1) {
        return Err(bad());
    }
    let s: Vec<usize> = shape
        .iter()
        .map(|&d| {
            if d >= 0 {
                Ok(d as usize)
            } else if known == 0 || x.numel() % known != 0 {
                Err(bad())
            } else {
                Ok(x.numel() / known)
            }
        })
        .collect::<Result<_>>()?;
    exec(Op::Reshape(s), &[x])
}

/// `tf.transpose(x, perm)`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    exec(Op::Permute(perm.to_vec()), &[x])
}

/// `tf.broadcast_to`.
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    exec(Op::BroadcastTo(shape.to_vec()), &[x])
}

/// `tf.pad(x, paddings)` with zeros: `(before, after)` per dimension.
pub fn pad(x: &Tensor, paddings: &[(usize, usize)]) -> Result<Tensor> {
    let shape = x
        .shape()
        .iter()
        .zip(paddings)
        .map(|(&d, &(b, a))| d.checked_add(b)?.checked_add(a))
        .collect::<Option<Vec<usize>>>()
        .filter(|s| paddings.len() == x.rank() && s.len() == x.rank())
        .ok_or_else(|| {
            Error::shape(
                "pad",
                &[x.shape()],
                format!("paddings {paddings:?} do not fit a rank-{} tensor", x.rank()),
            )
        })?;
    exec(
        Op::Pad {
            before: paddings.iter().map(|p| p.0).collect(),
            shape,
        },
        &[x],
    )
}

/// `tf.slice(x, begin, size)`.
pub fn slice(x: &Tensor, begin: &[usize], size: &[usize]) -> Result<Tensor> {
    exec(
        Op::Slice {
            begin: begin.to_vec(),
            size: size.to_vec(),
        },
        &[x],
    )
}

/// `tf.concat(values, axis)`.
pub fn concat(xs: &[&Tensor], axis: isize) -> Result<Tensor> {
    if xs.is_empty() {
        return Err(Error::arg("concat", "needs at least one tensor"));
    }
    let axis = shape::axis("concat", axis, xs[0].rank())?;
    exec(Op::Concat { axis }, xs)
}

/// `tf.stack(values, axis)`.
pub fn stack(xs: &[&Tensor], axis: isize) -> Result<Tensor> {
    if xs.is_empty() {
        return Err(Error::arg("stack", "needs at least one tensor"));
    }
    let r = xs[0].rank() as isize;
    let ax = if axis < 0 { axis + r + 1 } else { axis };
    if ax < 0 || ax > r {
        return Err(Error::arg(
            "stack",
            format!("axis {axis} out of range for rank {r} inputs"),
        ));
    }
    let e: Vec<Tensor> = xs.iter().map(|t| expand_dims(t, ax)).collect::<Result<_>>()?;
    concat(&e.iter().collect::<Vec<_>>(), ax)
}

/// `tf.gather(params, indices, axis)`; indices are int32, and the output is
/// `params.shape[..axis] + indices.shape + params.shape[axis + 1..]`. An
/// index outside `[0, dim)` is [`Error::InvalidArgument`] on every device
/// (on a GPU, reported by the next readback).
pub fn gather(x: &Tensor, indices: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("gather", axis, x.rank())?;
    exec(Op::Gather { axis }, &[x, indices])
}

/// `tf.one_hot(indices, depth, on_value, off_value, dtype=...)`.
pub fn one_hot(indices: &Tensor, depth: usize, on: f64, off: f64, dtype: DType) -> Result<Tensor> {
    exec(Op::OneHot { depth, on, off, dtype }, &[indices])
}

/// `tf.expand_dims`.
pub fn expand_dims(x: &Tensor, axis: isize) -> Result<Tensor> {
    let r = x.rank() as isize;
    let ax = if axis < 0 { axis + r + 1 } else { axis };
    if ax < 0 || ax > r {
        return Err(Error::arg(
            "expand_dims",
            format!("axis {axis} out of range for rank {r}"),
        ));
    }
    let mut s: Vec<usize> = x.shape().to_vec();
    s.insert(ax as usize, 1);
    exec(Op::Reshape(s), &[x])
}

/// `tf.squeeze`: drops the given size-1 axes, or all of them.
pub fn squeeze(x: &Tensor, axes: Option<&[isize]>) -> Result<Tensor> {
    let ax = shape::axes("squeeze", axes, x.rank())?;
    let sh = x.shape();
    if let Some(&d) = ax.iter().find(|&&d| axes.is_some() && sh[d] != 1) {
        return Err(Error::shape("squeeze", &[sh], format!("dimension {d} is not 1")));
    }
    let s: Vec<usize> = (0..sh.len())
        .filter(|d| !(ax.contains(d) && sh[*d] == 1))
        .map(|d| sh[d])
        .collect();
    exec(Op::Reshape(s), &[x])
}

impl Tensor {
    /// [`cast`] to `dtype` (this tensor itself when it already has it).
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        cast(self, dtype)
    }
    /// [`reshape`]; one entry may be -1. Shares storage.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        reshape(self, shape)
    }
    /// [`transpose`] by `perm`: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&self, perm: &[usize]) -> Result<Tensor> {
        transpose(self, perm)
    }
    /// Swaps the last two axes (matrix transpose of a batch).
    pub fn t(&self) -> Result<Tensor> {
        let r = self.rank();
        if r < 2 {
            return Err(Error::shape("t", &[self.shape()], "needs rank >= 2"));
        }
        let mut p: Vec<usize> = (0..r).collect();
        p.swap(r - 2, r - 1);
        transpose(self, &p)
    }
    /// [`broadcast_to`] `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        broadcast_to(self, shape)
    }
    /// [`slice()`]: the block of extents `size` starting at `begin`.
    pub fn slice(&self, begin: &[usize], size: &[usize]) -> Result<Tensor> {
        slice(self, begin, size)
    }
    /// [`gather`] rows along `axis` by int32 `indices`.
    pub fn gather(&self, indices: &Tensor, axis: isize) -> Result<Tensor> {
        gather(self, indices, axis)
    }
    /// PyTorch's name for `gather` along `axis`.
    pub fn index_select(&self, axis: isize, indices: &Tensor) -> Result<Tensor> {
        gather(self, indices, axis)
    }
    /// [`expand_dims`]: a size-1 axis inserted at `axis`.
    pub fn expand_dims(&self, axis: isize) -> Result<Tensor> {
        expand_dims(self, axis)
    }
    /// [`squeeze`]: the given size-1 axes removed, or all of them.
    pub fn squeeze(&self, axes: Option<&[isize]>) -> Result<Tensor> {
        squeeze(self, axes)
    }
    /// The values as one axis (`tf.reshape(x, [-1])`); shares storage.
    pub fn flatten(&self) -> Result<Tensor> {
        reshape(self, &[-1])
    }
}

/// `tf.stop_gradient`: the same values (sharing storage), through which no
/// gradient flows. A trace records it as an op, so the graph keeps the value.
pub fn stop_gradient(x: &Tensor) -> Tensor {
    // An alias cannot fail: no shape rule, kernel or transfer is involved.
    let out = x.detached();
    crate::tensor::observe::op(&Op::StopGradient, &[x], std::slice::from_ref(&out));
    out
}
