//! Host <-> device transfers through staging buffers the device keeps:
//! uploads write into a mapped buffer of a small ring and copy from it in
//! the command stream (no buffer created per upload, and the copy is
//! ordered with the batch's commands); reads copy one or several buffers
//! into one pooled staging buffer, and can be started now and finished
//! later, so the host works while the device runs what was queued after.

use super::memory::{GpuBuf, Status, StatusRecord, size_class};
use super::{GpuDevice, Stream, status_error};
use crate::core::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

/// Uploads larger than this go through wgpu's own staging (`write_buffer`):
/// the ring keeps only buffers worth keeping.
const STAGE_MAX: u64 = 16 << 20;
/// Uploads smaller than this also use `write_buffer`: wgpu's own path is
/// faster for them (benches/distribute.rs measures both).
const STAGE_MIN: u64 = 128 << 10;
/// Bytes the upload ring may hold in all (host-visible memory outside the
/// pool and its limit, so kept small).
const RING_BYTES: u64 = 64 << 20;
/// Ring chunk size: small uploads of one batch share a chunk.
const CHUNK: u64 = 1 << 20;

/// Off only in benchmarks (`force_upload_ring`).
pub(super) static RING_ON: AtomicBool = AtomicBool::new(true);

/// One upload chunk: mapped for writing while `ready`, filled from `used`
/// on by the open batch's uploads, unmapped at the batch's submission and
/// mapped again once the GPU has copied out of it.
pub(super) struct Stage {
    buf: wgpu::Buffer,
    used: u64,
    ready: Arc<AtomicBool>,
}

impl Stage {
    fn size(&self) -> u64 {
        self.buf.size()
    }
}

/// Values on their way to the host: the copies are submitted, the staging
/// buffer is being mapped.
pub(crate) struct PendingRead {
    staging: Option<wgpu::Buffer>,
    /// (offset, bytes) of each buffer read, in the staging buffer.
    spans: Vec<(u64, u64)>,
    /// Status records read along, at `status_at`.
    pending: Vec<Arc<StatusRecord>>,
    status_at: u64,
    total: u64,
    /// Every record the values depend on (a failed one is the error).
    status: Vec<Arc<StatusRecord>>,
    index: Option<wgpu::SubmissionIndex>,
    mapped: Option<Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
}

impl GpuDevice {
    /// Writes `bytes` (a multiple of 4) into `dst` through the ring, copied
    /// in the command stream; `false` when the ring has no room (the caller
    /// falls back to `write_buffer`).
    pub(super) fn upload_staged(&self, dst: &GpuBuf, bytes: &[u8]) -> Result<bool> {
        let n = bytes.len() as u64;
        if !(STAGE_MIN..=STAGE_MAX).contains(&n) || n % 4 != 0 || !RING_ON.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        // Mapped ranges start 8-aligned.
        let fits = |c: &Stage| c.used.div_ceil(8) * 8 + n <= c.size();
        if !s.staged.last().is_some_and(fits) {
            let Some(stage) = self.take_stage(n.max(CHUNK)) else {
                return Ok(false);
            };
            s.staged.push(stage);
        }
        let Some(chunk) = s.staged.last_mut() else {
            return Ok(false);
        };
        let at = chunk.used.div_ceil(8) * 8;
        match chunk.buf.slice(at..at + n).get_mapped_range_mut() {
            Ok(mut view) => view.copy_from_slice(bytes),
            // Not mapped after all (a lost device): wgpu's staging instead.
            Err(_) => return Ok(false),
        }
        chunk.used = at + n;
        let chunk = chunk.buf.clone();
        s.pass = None;
        let enc = s.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        enc.copy_buffer_to_buffer(&chunk, at, &dst.buffer, dst.offset, n);
        Ok(true)
    }

    /// A mapped chunk of at least `n` bytes, taken out of the ring: a free
    /// one, a new one while the ring has room, or one freed by a
    /// non-blocking poll.
    fn take_stage(&self, n: u64) -> Option<Stage> {
        for attempt in 0..2 {
            let mut ring = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
            let best = ring
                .iter()
                .enumerate()
                .filter(|(_, s)| s.size() >= n && s.ready.load(Ordering::Acquire))
                .min_by_key(|(_, s)| s.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut stage = ring.swap_remove(i);
                stage.used = 0;
                return Some(stage);
            }
            let size = size_class(n);
            let held: u64 = ring.iter().map(Stage::size).sum();
            if held + size <= RING_BYTES {
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgflow upload"),
                    size,
                    usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: true,
                });
                return Some(Stage {
                    buf,
                    used: 0,
                    ready: Arc::new(AtomicBool::new(true)),
                });
            }
            // Full: chunks of earlier batches may be mapped back by now.
            drop(ring);
            if attempt == 0 {
                let _ = self.device.poll(wgpu::PollType::Poll);
            }
        }
        None
    }

    /// Before a submission: the chunks its copies read must be unmapped.
    pub(super) fn unmap_stages(s: &mut Stream) {
        for stage in &s.staged {
            stage.buf.unmap();
        }
    }

    /// After a submission: maps the chunks it copied from for writing again
    /// and returns them to the ring.
    pub(super) fn recycle_stages(&self, s: &mut Stream) {
        if s.staged.is_empty() {
            return;
        }
        let mut ring = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        for stage in s.staged.drain(..) {
            stage.ready.store(false, Ordering::Release);
            let ready = stage.ready.clone();
            stage.buf.slice(..).map_async(wgpu::MapMode::Write, move |r| {
                if r.is_ok() {
                    ready.store(true, Ordering::Release);
                }
            });
            ring.push(stage);
        }
    }

    /// Queues copies of `bufs` (and of the unread records in `status` and
    /// theirs) into one staging buffer and submits them; `finish_read`
    /// waits for that submission alone.
    pub(crate) fn start_read(&self, bufs: &[&GpuBuf], status: &[Arc<StatusRecord>]) -> Result<PendingRead> {
        self.check_alive()?;
        self.flush_deferred()?;
        // The values' own records decide whether the read fails; `status`
        // is only read along (their records stay for the reads of theirs).
        let mut own: Vec<Arc<StatusRecord>> = Vec::new();
        for b in bufs {
            for r in &b.status {
                if !own.iter().any(|a| Arc::ptr_eq(a, r)) {
                    own.push(r.clone());
                }
            }
        }
        let mut all = own.clone();
        for r in status {
            if !all.iter().any(|a| Arc::ptr_eq(a, r)) {
                all.push(r.clone());
            }
        }
        let pending: Vec<Arc<StatusRecord>> = all.iter().filter(|r| r.state() == Status::Pending).cloned().collect();
        let mut spans = Vec::with_capacity(bufs.len());
        let mut at = 0u64;
        for b in bufs {
            spans.push((at, b.size));
            at += b.size.div_ceil(4) * 4;
        }
        // The status words ride along after the data (8-aligned for mapping).
        let status_at = at.div_ceil(8) * 8;
        let total = status_at + 16 * pending.len() as u64;
        let mut read = PendingRead {
            staging: None,
            spans,
            pending,
            status_at,
            total,
            status: own,
            index: None,
            mapped: None,
        };
        if total == 0 {
            return Ok(read);
        }
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staging = {
            let mut pool = self.staging.lock().unwrap_or_else(|p| p.into_inner());
            match pool.iter().position(|b| b.size() >= total) {
                Some(i) => pool.swap_remove(i),
                None => self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgflow readback"),
                    size: size_class(total),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            }
        };
        {
            let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            s.pass = None;
            let enc = s.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            for (b, &(off, size)) in bufs.iter().zip(&read.spans) {
                if size > 0 {
                    enc.copy_buffer_to_buffer(&b.buffer, b.offset, &staging, off, size);
                }
            }
            for (k, r) in read.pending.iter().enumerate() {
                enc.copy_buffer_to_buffer(&r.buf.buffer, r.offset(), &staging, status_at + 16 * k as u64, 16);
            }
            self.flush_locked(&mut s)?;
            read.index = s.last.clone();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..total).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        read.staging = Some(staging);
        read.mapped = Some(rx);
        Ok(read)
    }

    /// Waits for a read's submission (not for work queued after it) and
    /// returns each buffer's bytes; a failed status record it carries is
    /// the error.
    pub(crate) fn finish_read(&self, read: PendingRead) -> Result<Vec<Vec<u8>>> {
        self.finish_read_with(read, <[u8]>::to_vec)
    }

    /// [`GpuDevice::finish_read`], each buffer's bytes passed to `take`
    /// straight from the mapped staging buffer.
    pub(crate) fn finish_read_with<T>(&self, read: PendingRead, take: impl Fn(&[u8]) -> T) -> Result<Vec<T>> {
        let PendingRead {
            staging,
            spans,
            pending,
            status_at,
            total,
            status,
            index,
            mapped,
        } = read;
        let gpu_err = |msg: String| Error::Gpu {
            device: self.label.clone(),
            msg,
        };
        let (Some(staging), Some(rx)) = (staging, mapped) else {
            return Ok(spans.iter().map(|_| take(&[])).collect());
        };
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: index,
                timeout: None,
            })
            .map_err(|e| gpu_err(e.to_string()))?;
        let mapped = match rx.try_recv() {
            Ok(r) => r,
            // The callback runs on a later poll on some platforms.
            Err(TryRecvError::Empty) => {
                self.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| gpu_err(e.to_string()))?;
                rx.recv().map_err(|_| gpu_err("readback callback never ran".into()))?
            }
            Err(TryRecvError::Disconnected) => return Err(gpu_err("readback callback never ran".into())),
        };
        self.check_alive()?;
        mapped.map_err(|e| gpu_err(format!("readback failed: {e}")))?;
        let out = {
            let view = staging
                .slice(..total)
                .get_mapped_range()
                .map_err(|e| gpu_err(format!("readback mapping failed: {e}")))?;
            for (k, r) in pending.iter().enumerate() {
                let from = (status_at + 16 * k as u64) as usize;
                r.resolve(bytemuck::pod_read_unaligned(&view[from..from + 16]));
            }
            spans
                .iter()
                .map(|&(off, size)| take(&view[off as usize..(off + size) as usize]))
                .collect()
        };
        staging.unmap();
        let mut pool = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(staging);
        }
        drop(pool);
        self.take_error()?;
        for r in &status {
            if let Status::Failed(words) = r.state() {
                return Err(status_error(words));
            }
        }
        Ok(out)
    }
}
