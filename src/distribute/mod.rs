//! `tf.distribute` for wgflow: synchronous data parallelism with results
//! equal to one device, over several devices of one process
//! ([`MirroredStrategy`]: GPUs, logical GPUs of one adapter, the CPU device)
//! and over several processes launched by MPI
//! ([`MultiWorkerMirroredStrategy`], cargo feature `mpi`).
//!
//! `strategy.scope(|device| build)` builds one replica of the model per
//! local device, each holding its own copy of every variable, and starts
//! them all from replica 0's values (worker 0's, across workers: the shapes
//! are compared first, on every worker). [`Mirrored::fit`] splits each
//! global batch across the replicas of every worker (a short last batch
//! too), runs each replica's traced gradient step on its device, reads each
//! replica's gradients, loss and predictions back as one flat buffer, sums
//! them on the host in parallel (then across workers with one MPI
//! all-reduce), applies the update once per worker on its replica 0 and
//! copies the new weights to the worker's other replicas in one flat
//! transfer each, so the replicas stay bit-identical even on devices whose
//! arithmetic differs. Each replica's loss is its examples' share of the
//! global batch mean (Keras' SUM of per-replica losses scaled by the global
//! batch), so the summed gradient is the one-device gradient of the whole
//! batch. BatchNormalization statistics (non-trainable variables) stay per
//! replica and are averaged when read ([`Mirrored::evaluate`],
//! [`Mirrored::predict`], [`Mirrored::sync_on_read`]). Metrics see the whole
//! global batch's predictions, so every worker logs the same values.
//!
//! Custom loops use [`MirroredStrategy::run`] (one closure call per replica,
//! on its device), [`MirroredStrategy::reduce`] and
//! [`MirroredStrategy::experimental_distribute_dataset`].

mod cluster;
mod mirrored;
#[cfg(feature = "mpi")]
mod mpi;
mod multi_worker;
mod strategy;
mod transfer;

pub use mirrored::Mirrored;
pub use multi_worker::MultiWorkerMirroredStrategy;
pub use strategy::{CommunicationOptions, MirroredStrategy};

use crate::core::error::{Error, Result};
use crate::runtime::Device;
use crate::tensor::Tensor;

const OP: &str = "MirroredStrategy";

/// How [`MirroredStrategy::reduce`] combines per-replica values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The mean over replicas.
    Mean,
}

/// Replica `i`'s rows of `n` split `parts` ways (the first `n % parts` get one more).
fn split_range(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let base = n / parts;
    let extra = n % parts;
    let lo = i * base + i.min(extra);
    let hi = lo + base + usize::from(i < extra);
    (lo, hi)
}

/// The rows `lo..hi` of `t` (its first axis).
fn rows(t: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
    let mut begin = vec![0; t.rank()];
    let mut size = t.shape().to_vec();
    if let (Some(b), Some(s)) = (begin.first_mut(), size.first_mut()) {
        *b = lo;
        *s = hi - lo;
    }
    t.slice(&begin, &size)
}

/// Reads each replica's tensors back as one flat vector: every replica's
/// copies are submitted before the first wait (one transfer per replica,
/// straight from the tensors' buffers), so the devices' waits overlap.
fn read_back_all(per_replica: Vec<Vec<Tensor>>) -> Result<Vec<Vec<f32>>> {
    let reads: Vec<transfer::Reading> = per_replica
        .iter()
        .map(|ts| transfer::Reading::start(ts))
        .collect::<Result<_>>()?;
    reads
        .into_iter()
        .map(|r| {
            let mut v = r.finish()?;
            Ok(if v.len() == 1 {
                v.pop().unwrap_or_default()
            } else {
                v.concat()
            })
        })
        .collect()
}

/// One flat f32 vector of `ts` (read back in one transfer).
fn flat_host(ts: &[Tensor]) -> Result<Vec<f32>> {
    Ok(read_back_all(vec![ts.to_vec()])?.pop().unwrap_or_default())
}

/// Splits a flat host vector back into tensors shaped like `like`, on `device`.
fn unflat(flat: &[f32], like: &[Vec<usize>], device: &Device) -> Result<Vec<Tensor>> {
    let total: usize = like.iter().map(|s| s.iter().product::<usize>()).sum();
    if total != flat.len() {
        return Err(Error::arg(
            OP,
            format!("{} values for variables of {total} values", flat.len()),
        ));
    }
    let mut out = Vec::with_capacity(like.len());
    let mut at = 0;
    for shape in like {
        let n: usize = shape.iter().product();
        out.push(Tensor::from_slice(&flat[at..at + n], shape, device)?);
        at += n;
    }
    Ok(out)
}

/// Sums same-shaped tensors living on different devices; the result is on
/// `to`. Each is read back once; the host sum runs in parallel.
pub fn all_reduce_sum(per_replica: &[Tensor], to: &Device) -> Result<Tensor> {
    let (shape, sum) = host_all_reduce(per_replica)?;
    Tensor::from_vec(sum, &shape, to)
}

/// The shape and host sum of same-shaped tensors on different devices.
fn host_all_reduce(per_replica: &[Tensor]) -> Result<(Vec<usize>, Vec<f32>)> {
    let first = per_replica
        .first()
        .ok_or_else(|| Error::arg(OP, "all-reduce of no tensors"))?;
    let shape = first.shape().to_vec();
    if let Some(t) = per_replica.iter().find(|t| t.shape() != shape.as_slice()) {
        return Err(Error::shape(
            "all_reduce",
            &[&shape, t.shape()],
            "every replica's value must have the same shape",
        ));
    }
    let hosts = read_back_all(per_replica.iter().map(|t| vec![t.clone()]).collect())?;
    let parts: Vec<&[f32]> = hosts.iter().map(Vec::as_slice).collect();
    Ok((shape, host_sum(&parts)?))
}

/// The element-wise sum of equal-length vectors, in parallel chunks.
fn host_sum(parts: &[&[f32]]) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let n = parts.first().map_or(0, |p| p.len());
    if let Some(p) = parts.iter().find(|p| p.len() != n) {
        return Err(Error::arg(
            OP,
            format!(
                "replicas disagree: {} values against {n} (were a replica's variables changed?)",
                p.len()
            ),
        ));
    }
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let lo = c << 16;
        let hi = lo + chunk.len();
        for p in parts {
            for (o, v) in chunk.iter_mut().zip(&p[lo..hi]) {
                *o += v;
            }
        }
    });
    Ok(out)
}
