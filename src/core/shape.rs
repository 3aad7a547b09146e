//! Shape arithmetic shared by every op: element counts, row-major strides,
//! NumPy broadcasting, axis normalization.
//!
//! Part of [`crate::core`]. Shapes are plain `&[usize]`, row-major, with
//! `[]` for a scalar. The shape rules of `ops` and the kernels of
//! `runtime` both use these helpers, so an axis or a broadcast means
//! the same thing at every layer. Errors name the op passed in as `op`.

use crate::core::error::{Error, Result};

/// Number of elements: the product of the dimensions (1 for a scalar, 0 if
/// any dimension is 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The element count of `shape`, or a shape error for `op` when it does not
/// fit in `usize` (nor, at `elem_bytes` each, its size in bytes).
pub fn checked_numel(op: &'static str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    match n {
        Some(n)
            if n.checked_mul(elem_bytes.max(1))
                .is_some_and(|b| b <= isize::MAX as usize) =>
        {
            Ok(n)
        }
        _ => Err(Error::shape(
            op,
            &[shape],
            format!("{shape:?} has more elements than fit in memory ({elem_bytes} bytes each)"),
        )),
    }
}

/// Row-major strides in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The shape `a` and `b` broadcast to under NumPy's rules (trailing
/// dimensions aligned, 1 stretches). [`Error::Shape`] when two dimensions
/// differ and neither is 1.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            _ if da == db => da,
            (1, d) | (d, 1) => d,
            _ => {
                return Err(Error::shape(
                    op,
                    &[a, b],
                    format!("dimension {i} of the broadcast result: {da} vs {db}"),
                ));
            }
        };
    }
    Ok(out)
}

/// Strides (in elements) for reading `shape` as if broadcast to `out`:
/// broadcast dimensions get stride 0.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                s[i - lead]
            }
        })
        .collect()
}

/// Normalizes an axis of a rank-`rank` tensor: negative axes count from the
/// end, as in Python. [`Error::InvalidArgument`] outside `[-rank, rank)`.
pub fn axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    if axis < -r || axis >= r {
        return Err(Error::arg(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        ));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Normalized, sorted axes; `None` means every axis. A repeated axis, an
/// axis out of range, or any axis of a scalar is [`Error::InvalidArgument`].
pub fn axes(op: &'static str, axes: Option<&[isize]>, rank: usize) -> Result<Vec<usize>> {
    let mut v = match axes {
        None => (0..rank).collect(),
        Some(a) => {
            let mut v = Vec::with_capacity(a.len());
            for &x in a {
                if rank == 0 {
                    return Err(Error::arg(op, format!("axis {x} given for a scalar")));
                }
                v.push(axis(op, x, rank)?);
            }
            v
        }
    };
    v.sort_unstable();
    let n = v.len();
    v.dedup();
    if v.len() != n {
        return Err(Error::arg(op, format!("repeated axis in {axes:?}")));
    }
    Ok(v)
}

/// Merges adjacent dimensions that are contiguous in every operand's strides,
/// so kernels index as few dimensions as possible. `strides[k]` are operand
/// k's strides over `shape`. Returns the merged shape and strides.
pub fn collapse(shape: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut sh: Vec<usize> = Vec::new();
    let mut st: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let mergeable = !sh.is_empty()
            && strides
                .iter()
                .enumerate()
                .all(|(k, s)| st[k].last().copied() == Some(s[d] * shape[d]));
        if mergeable {
            *sh.last_mut().unwrap() *= shape[d];
            for (k, s) in strides.iter().enumerate() {
                *st[k].last_mut().unwrap() = s[d];
            }
        } else {
            sh.push(shape[d]);
            for (k, s) in strides.iter().enumerate() {
                st[k].push(s[d]);
            }
        }
    }
    (sh, st)
}

/// Offsets of every element of `shape` (row-major order) in a buffer read
/// with `strides` from `start`. Zero strides repeat elements (broadcasting).
pub struct StridedIter<'a> {
    shape: &'a [usize],
    strides: &'a [usize],
    idx: Vec<usize>,
    pos: usize,
    left: usize,
}

impl<'a> StridedIter<'a> {
    /// Iterates `shape`'s elements with `strides` (one per dimension, in
    /// elements) from offset `start`.
    pub fn new(shape: &'a [usize], strides: &'a [usize], start: usize) -> Self {
        StridedIter {
            shape,
            strides,
            idx: vec![0; shape.len()],
            pos: start,
            left: numel(shape),
        }
    }
}

impl Iterator for StridedIter<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let here = self.pos;
        for d in (0..self.shape.len()).rev() {
            self.idx[d] += 1;
            self.pos += self.strides[d];
            if self.idx[d] < self.shape[d] {
                break;
            }
            self.pos -= self.strides[d] * self.shape[d];
            self.idx[d] = 0;
        }
        Some(here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast("t", &[], &[5]).unwrap(), vec![5]);
        assert_eq!(broadcast("t", &[0, 3], &[1, 3]).unwrap(), vec![0, 3]);
        assert!(broadcast("t", &[2, 3], &[3, 2]).is_err());
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
    }

    #[test]
    fn axes_normalize() {
        assert_eq!(axis("t", -1, 3).unwrap(), 2);
        assert!(axis("t", 3, 3).is_err());
        assert!(axis("t", -4, 3).is_err());
        assert_eq!(axes("t", Some(&[-1, 0]), 3).unwrap(), vec![0, 2]);
        assert!(axes("t", Some(&[1, -2]), 3).is_err());
    }

    #[test]
    fn strided_iteration() {
        let v: Vec<usize> = StridedIter::new(&[2, 3], &[1, 2], 0).collect();
        assert_eq!(v, vec![0, 2, 4, 1, 3, 5]);
        let v: Vec<usize> = StridedIter::new(&[2, 2], &[0, 1], 5).collect();
        assert_eq!(v, vec![5, 6, 5, 6]);
        assert_eq!(StridedIter::new(&[3, 0], &[0, 1], 0).count(), 0);
        assert_eq!(StridedIter::new(&[], &[], 4).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn collapsing() {
        // contiguous [2,3,4] collapses to one dimension
        let (sh, st) = collapse(&[2, 3, 4], &[strides(&[2, 3, 4])]);
        assert_eq!(sh, vec![24]);
        assert_eq!(st[0], vec![1]);
        // broadcast middle dimension stays separate
        let (sh, st) = collapse(&[2, 3, 4], &[vec![12, 4, 1], vec![4, 0, 1]]);
        assert_eq!(sh, vec![2, 3, 4]);
        assert_eq!(st[1], vec![4, 0, 1]);
    }
}
