//! Gradient read-back in buckets: a replica's step outputs are read back
//! in a few transfers of tens of MB, each started as soon as its tensors
//! are computed (queued), so the host sums the first buckets while the
//! device still runs the rest of the backward pass.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::runtime::Device;
use crate::runtime::wgpu::{GpuDevice, transfer::PendingRead};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Bytes a bucket collects before its read starts (PyTorch DDP's default:
/// large enough that a transfer is worth its submission, small enough that
/// the first starts early in the backward pass).
pub(super) const BUCKET_BYTES: usize = 25 << 20;

/// f32 tensors on their way to the host.
pub(super) enum Reading {
    /// Already on the host (CPU tensors).
    Host(Vec<Vec<f32>>),
    /// Copies submitted on one GPU, the staging buffer being mapped.
    Gpu(Arc<GpuDevice>, PendingRead, Vec<usize>),
}

impl Reading {
    /// Starts reading `ts` (f32): one transfer for all of them when they
    /// live on one GPU.
    pub(super) fn start(ts: &[Tensor]) -> Result<Reading> {
        if let Some(t) = ts.iter().find(|t| t.dtype() != DType::F32) {
            return Err(Error::dtype(
                "all_reduce",
                &[t.dtype()],
                "replica values are reduced as float32; cast them first",
            ));
        }
        for t in ts {
            crate::tensor::observe::check_read(t)?;
        }
        let gpu = match ts.first().map(Tensor::device) {
            Some(Device::Gpu(g)) if ts.iter().all(|t| t.device() == &Device::Gpu(g.clone())) => g.clone(),
            _ => {
                return Ok(Reading::Host(
                    ts.iter().map(|t| t.to_vec::<f32>()).collect::<Result<_>>()?,
                ));
            }
        };
        let bufs: Vec<_> = ts.iter().map(|t| t.gpu_buf()).collect();
        let read = gpu.start_read(&bufs, &[])?;
        Ok(Reading::Gpu(gpu, read, ts.iter().map(Tensor::numel).collect()))
    }

    /// Waits for the values (one vector per tensor).
    pub(super) fn finish(self) -> Result<Vec<Vec<f32>>> {
        match self {
            Reading::Host(v) => Ok(v),
            Reading::Gpu(g, read, numels) => {
                let mut out = g.finish_read_with(read, bytemuck::pod_collect_to_vec::<u8, f32>)?;
                for (v, n) in out.iter_mut().zip(numels) {
                    v.truncate(n);
                }
                Ok(out)
            }
        }
    }
}

/// The read-backs of one replica's step: which outputs each bucket holds.
pub(super) struct Buckets {
    pack: usize,
    open: Vec<(usize, Tensor)>,
    open_bytes: usize,
    sent: Vec<(Vec<usize>, Reading)>,
}

impl Buckets {
    /// No buckets yet; each will hold about `pack` bytes.
    pub(super) fn new(pack: usize) -> Buckets {
        Buckets {
            pack,
            open: Vec::new(),
            open_bytes: 0,
            sent: Vec::new(),
        }
    }

    /// Output `i` is computed: it joins the open bucket, whose read starts
    /// once it holds the pack size.
    pub(super) fn ready(&mut self, i: usize, t: &Tensor) -> Result<()> {
        let t = if t.dtype() == DType::F32 {
            t.clone()
        } else {
            t.cast(DType::F32)?
        };
        self.open_bytes += t.numel() * 4;
        self.open.push((i, t));
        if self.open_bytes >= self.pack {
            self.send()?;
        }
        Ok(())
    }

    /// Starts the open bucket's read.
    pub(super) fn send(&mut self) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let (idx, ts): (Vec<usize>, Vec<Tensor>) = std::mem::take(&mut self.open).into_iter().unzip();
        self.open_bytes = 0;
        self.sent.push((idx, Reading::start(&ts)?));
        Ok(())
    }

    /// Every bucket, the open one started.
    pub(super) fn finish(mut self) -> Result<Vec<(Vec<usize>, Reading)>> {
        self.send()?;
        Ok(self.sent)
    }
}

/// `dst += src` element-wise, in parallel chunks for long vectors.
pub(super) fn add_into(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    if dst.len() <= CHUNK {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += s;
        }
        return;
    }
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    });
}
