//! Data movement and dtype conversion: cast, reshape, transpose, broadcast_to,
//! slice, concat, gather, one_hot (kernels: shaders/layout.wgsl, shaders/cast.wgsl).
//!
//! Results are always contiguous: transpose, slice and broadcast copy, as
//! TensorFlow's kernels do; reshape shares storage.

use super::{Op, exec};
use crate::device::cpu::CpuData;
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid, status_slot};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::map_data;
use crate::shape::{self, collapse, numel, strides};
use crate::tensor::Tensor;

pub static LAYOUT: Kernel = Kernel {
    name: "layout",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/layout.wgsl"),
    ],
    types: &[KType::U32, KType::F16],
};

pub static CAST: Kernel = Kernel {
    name: "cast",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/cast.wgsl"),
    ],
    types: &[KType::U32],
};

/// Layout kernels move f32, i32 and bool as 32-bit words, f16 as halves.
pub(crate) fn wtype(dtype: DType) -> KType {
    if dtype == DType::F16 { KType::F16 } else { KType::U32 }
}

/// Kernels index at most 8 dimensions after merging contiguous ones.
const MAX_RANK: usize = 8;

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let a = x[0];
    let sh = a.shape();
    match op {
        Op::Cast(to) => Ok((sh.to_vec(), *to)),
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
                if begin[d] + size[d] > sh[d] {
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

/// Copies `src` viewed with `strides` from `off` into a new contiguous vector.
fn gather_strided<T: Copy>(src: &[T], shape: &[usize], strides: &[usize], off: usize) -> Vec<T> {
    shape::StridedIter::new(shape, strides, off).map(|i| src[i]).collect()
}

/// (strides over the output shape, offset) for reading `x` as this op's output.
fn view(op: &Op, sh: &[usize], out: &[usize]) -> (Vec<usize>, usize) {
    let st = strides(sh);
    match op {
        Op::Permute(p) => (p.iter().map(|&d| st[d]).collect(), 0),
        Op::BroadcastTo(to) => (shape::broadcast_strides(sh, to), 0),
        Op::Slice { begin, .. } => (st.clone(), begin.iter().zip(&st).map(|(b, s)| b * s).sum()),
        _ => (strides(out), 0),
    }
}

pub(crate) fn cpu(op: &Op, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<CpuData> {
    let a = x[0];
    match op {
        Op::Cast(to) => Ok(a.cpu_data().cast(*to)),
        Op::Permute(_) | Op::BroadcastTo(_) | Op::Slice { .. } => {
            let (st, off) = view(op, a.shape(), out);
            Ok(map_data!(a.cpu_data(), v => gather_strided(v, out, &st, off)))
        }
        Op::Concat { axis } => {
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let mut parts: Vec<CpuData> = Vec::new();
            for o in 0..outer {
                for t in x {
                    let w = t.shape()[*axis] * inner;
                    parts.push(map_data!(t.cpu_data(), v => v[o * w..(o + 1) * w].to_vec()));
                }
            }
            let mut acc = CpuData::zeros(dtype, 0);
            for p in parts {
                acc = match (acc, p) {
                    (CpuData::F32(mut a), CpuData::F32(b)) => {
                        a.extend(b);
                        CpuData::F32(a)
                    }
                    (CpuData::F16(mut a), CpuData::F16(b)) => {
                        a.extend(b);
                        CpuData::F16(a)
                    }
                    (CpuData::F64(mut a), CpuData::F64(b)) => {
                        a.extend(b);
                        CpuData::F64(a)
                    }
                    (CpuData::I32(mut a), CpuData::I32(b)) => {
                        a.extend(b);
                        CpuData::I32(a)
                    }
                    (CpuData::Bool(mut a), CpuData::Bool(b)) => {
                        a.extend(b);
                        CpuData::Bool(a)
                    }
                    _ => unreachable!("dtypes checked in infer"),
                };
            }
            Ok(acc)
        }
        Op::Gather { axis } => {
            let sh = a.shape();
            let d = sh[*axis];
            let outer: usize = sh[..*axis].iter().product();
            let inner: usize = sh[axis + 1..].iter().product();
            let CpuData::I32(idx) = x[1].cpu_data() else {
                unreachable!()
            };
            if let Some(&bad) = idx.iter().find(|&&k| k < 0 || k as usize >= d) {
                return Err(index_error(bad, d as u32));
            }
            Ok(map_data!(a.cpu_data(), v => {
                let mut o = Vec::with_capacity(outer * idx.len() * inner);
                for r in 0..outer {
                    for &k in idx {
                        let base = (r * d + k as usize) * inner;
                        o.extend_from_slice(&v[base..base + inner]);
                    }
                }
                o
            }))
        }
        Op::OneHot { depth, on, off, .. } => {
            let CpuData::I32(idx) = a.cpu_data() else {
                unreachable!()
            };
            let mut v = Vec::with_capacity(idx.len() * depth);
            for &k in idx {
                for j in 0..*depth {
                    v.push(if k >= 0 && k as usize == j { *on } else { *off });
                }
            }
            Ok(CpuData::from_f64(dtype, &v))
        }
        Op::Pad { before, shape } => {
            let mut v = vec![0.0; numel(shape)];
            let st = strides(shape);
            let off: usize = before.iter().zip(&st).map(|(b, s)| b * s).sum();
            let src = a.cpu_data().to_f64();
            for (k, i) in shape::StridedIter::new(a.shape(), &st, off).enumerate() {
                v[i] = src[k];
            }
            Ok(CpuData::from_f64(dtype, &v))
        }
        Op::GatherGrad { axis, dim } => {
            let CpuData::I32(idx) = a.cpu_data() else {
                unreachable!()
            };
            let dy = x[1].cpu_data().to_f64();
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let j = idx.len();
            let mut v = vec![0.0; numel(out)];
            for o in 0..outer {
                for (jj, &k) in idx.iter().enumerate() {
                    if k >= 0 && (k as usize) < *dim {
                        for b in 0..inner {
                            v[(o * dim + k as usize) * inner + b] += dy[(o * j + jj) * inner + b];
                        }
                    }
                }
            }
            Ok(CpuData::from_f64(dtype, &v))
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
        _ => unreachable!(),
    })
}

/// The error a bad gather index gives on either device.
pub(crate) fn index_error(value: i32, limit: u32) -> Error {
    Error::arg("gather", format!("index {value} is out of range [0, {limit})"))
}

/// Strided copy on the GPU: dst[dst_off + c·dst_st] = src[src_off + c·src_st]
/// for every coordinate c of `shape`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy(
    g: &GpuDevice,
    src: &GpuBuf,
    dst: &GpuBuf,
    dtype: DType,
    shape: &[usize],
    src_st: &[usize],
    src_off: usize,
    dst_st: &[usize],
    dst_off: usize,
) -> Result<()> {
    let n = numel(shape);
    if n == 0 {
        return Ok(());
    }
    let (sh, st) = collapse(shape, &[src_st.to_vec(), dst_st.to_vec()]);
    if sh.len() > MAX_RANK {
        return Err(Error::shape(
            "copy",
            &[shape],
            format!("GPU kernels index at most {MAX_RANK} non-contiguous dimensions"),
        ));
    }
    let mut params = vec![n as u32, sh.len() as u32, src_off as u32, dst_off as u32];
    for v in [&sh, &st[0], &st[1]] {
        let mut w = [0u32; MAX_RANK];
        for (i, &d) in v.iter().enumerate() {
            w[i] = d as u32;
        }
        params.extend_from_slice(&w);
    }
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "copy",
        ty: wtype(dtype),
        consts: &[],
        params: &params,
        bufs: &[src, dst],
        groups: grid(n, 256),
    })
}

fn fill_bits(v: f64, dtype: DType) -> u32 {
    match dtype {
        DType::I32 => v as i32 as u32,
        DType::Bool => (v != 0.0) as u32,
        _ => (v as f32).to_bits(),
    }
}

fn cast_code(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::I32 => 2,
        DType::Bool => 3,
        DType::F64 => unreachable!("float64 never reaches a GPU kernel"),
    }
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let a = x[0];
    let n = numel(out);
    if let Op::Pad { before, shape } = op {
        let z = crate::ops::creation::fill_gpu(g, n, 0.0, dtype)?;
        let st = strides(shape);
        let off: usize = before.iter().zip(&st).map(|(b, s)| b * s).sum();
        copy(g, a.gpu_buf(), &z, dtype, a.shape(), &strides(a.shape()), 0, &st, off)?;
        return Ok(z);
    }
    let dst = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    match op {
        Op::Cast(to) => {
            g.launch(&Launch {
                kernel: &CAST,
                entry: "main",
                ty: KType::U32,
                consts: &[],
                params: &[n as u32, cast_code(a.dtype()), cast_code(*to), 0],
                bufs: &[a.gpu_buf(), &dst],
                groups: grid(n.div_ceil(2), 256),
            })?;
        }
        Op::Permute(_) | Op::BroadcastTo(_) | Op::Slice { .. } => {
            let (st, off) = view(op, a.shape(), out);
            copy(g, a.gpu_buf(), &dst, dtype, out, &st, off, &strides(out), 0)?;
        }
        Op::Concat { axis } => {
            let ost = strides(out);
            let mut at = 0;
            for t in x {
                let s = t.shape();
                copy(g, t.gpu_buf(), &dst, dtype, s, &strides(s), 0, &ost, at * ost[*axis])?;
                at += s[*axis];
            }
        }
        Op::Gather { axis } => {
            let sh = a.shape();
            let inner: usize = sh[axis + 1..].iter().product();
            let params = [
                n as u32,
                sh[*axis] as u32,
                x[1].numel() as u32,
                inner as u32,
                status_slot(),
                0,
                0,
                0,
            ];
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "gather",
                ty: wtype(dtype),
                consts: &[],
                params: &params,
                bufs: &[a.gpu_buf(), &dst, x[1].gpu_buf(), g.status()],
                groups: grid(n, 256),
            })?;
        }
        Op::GatherGrad { axis, dim } => {
            let inner: usize = out[axis + 1..].iter().product();
            let outer: usize = out[..*axis].iter().product();
            let params = [
                outer as u32,
                a.numel() as u32,
                inner as u32,
                n as u32,
                0,
                *dim as u32,
                0,
                0,
            ];
            g.launch(&Launch {
                kernel: &super::reduce::REDUCE,
                entry: "gather_grad",
                ty: super::ktype(dtype),
                consts: &[],
                params: &params,
                bufs: &[x[1].gpu_buf(), &dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        Op::OneHot { depth, on, off, .. } => {
            let params = [n as u32, *depth as u32, fill_bits(*on, dtype), fill_bits(*off, dtype)];
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "one_hot",
                ty: wtype(dtype),
                consts: &[],
                params: &params,
                bufs: &[&dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        _ => unreachable!(),
    }
    Ok(dst)
}

// ---- public API ----------------------------------------------------------

/// `tf.cast`.
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

/// `tf.gather(params, indices, axis)`; indices are int32.
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
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        cast(self, dtype)
    }
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        reshape(self, shape)
    }
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
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        broadcast_to(self, shape)
    }
    pub fn slice(&self, begin: &[usize], size: &[usize]) -> Result<Tensor> {
        slice(self, begin, size)
    }
    pub fn gather(&self, indices: &Tensor, axis: isize) -> Result<Tensor> {
        gather(self, indices, axis)
    }
    /// PyTorch's name for `gather` along `axis`.
    pub fn index_select(&self, axis: isize, indices: &Tensor) -> Result<Tensor> {
        gather(self, indices, axis)
    }
    pub fn expand_dims(&self, axis: isize) -> Result<Tensor> {
        expand_dims(self, axis)
    }
    pub fn squeeze(&self, axes: Option<&[isize]>) -> Result<Tensor> {
        squeeze(self, axes)
    }
    pub fn flatten(&self) -> Result<Tensor> {
        reshape(self, &[-1])
    }
}
