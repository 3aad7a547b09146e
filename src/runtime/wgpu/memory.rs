//! The per-GPU memory pool, modelled on TensorFlow's allocator.
//!
//! * Growth on (default): buffers are created on demand, rounded up to a size
//!   class (four classes per power of two, so at most 25% slack), and freed
//!   buffers wait in per-class free lists for the next request of that class.
//! * Growth off: the memory limit is reserved up front as a few large slabs and
//!   tensors are sub-allocated from them (first fit, coalescing free ranges),
//!   bound with offsets aligned to the adapter's storage offset alignment.
//!
//! Past the limit, or when wgpu reports a real out-of-memory, the pending
//! work is submitted and waited for (`settle`), the cached buffers that no
//! queued command can still read are destroyed and the request retried once;
//! then the caller gets `Error::OutOfMemory` and the pool and every live
//! tensor are still usable.
//!
//! Ordering: a freed buffer may go to the next kernel output at once (WebGPU
//! runs the dispatches of a pass, and the submissions of a queue, in order),
//! but a host upload is written before the open batch runs (see
//! `alloc_upload`), and a buffer is destroyed only once every batch that
//! named it has finished: `Buffer::destroy` while a command that reads it is
//! unsubmitted makes the whole submission fail.

use crate::core::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Counters reported by `Device::memory_info()`, in bytes unless named otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Bytes held by live tensors (rounded to their size class or alignment).
    pub in_use: u64,
    /// Highest `in_use` seen since the device was created or `reset_peak`.
    pub peak: u64,
    /// Bytes of GPU buffers the pool holds: in use plus cached (or the slabs).
    pub reserved: u64,
    /// The limit the pool enforces (`u64::MAX` when none is set).
    pub limit: u64,
    /// wgpu buffers created so far.
    pub buffers_created: u64,
    /// Requests served from the pool without creating a buffer.
    pub pool_hits: u64,
}

/// Default reservation when growth is off and no limit is set: wgpu cannot
/// report how much memory an adapter has, so we cannot "take it all" as TF does.
pub const DEFAULT_RESERVATION: u64 = 1 << 30;
/// Smallest allocation; keeps size classes few and bindings aligned.
const MIN_CLASS: u64 = 256;
/// Uploads up to this size never wait for the open batch (see `alloc_upload`).
const SMALL_UPLOAD: u64 = 64 << 10;

pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    let top = 63 - (bytes - 1).leading_zeros() as u64; // floor(log2(bytes-1))
    let step = 1u64 << top.saturating_sub(2);
    bytes.div_ceil(step) * step
}

/// Creates raw wgpu buffers; the pool calls it, tests can fake it.
pub(crate) trait BufferSource: Send + Sync {
    /// Ok(None) means the driver reported out-of-memory.
    fn create(&self, bytes: u64) -> Result<Option<wgpu::Buffer>>;
}

/// A piece of GPU memory owned by one tensor; dropping it returns it to the pool.
pub struct GpuBuf {
    pub(crate) buffer: Arc<wgpu::Buffer>,
    pub(crate) offset: u64,
    /// Bytes the tensor asked for, rounded up to 4 (copy alignment).
    pub(crate) size: u64,
    kind: Kind,
    pool: Option<Arc<Mutex<Pool>>>,
    /// The status records of the launches whose bad values make these
    /// values wrong: this op's own (a gather's index check) and those its
    /// inputs carried, less the ones known clean. A readback reports them.
    pub(crate) status: Vec<Arc<StatusRecord>>,
}

enum Kind {
    /// A whole buffer of a size class (growth on).
    Class(u64),
    /// A range inside slab `n` (growth off).
    Slab { slab: usize, len: u64 },
    /// Not from the pool: the shared buffer zero-size tensors bind, the status buffer.
    Fixed,
}

impl GpuBuf {
    pub(crate) fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            // vec4 views of a buffer need 16 bytes; every allocation has them.
            size: std::num::NonZeroU64::new(self.size.max(16)),
        }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The first `size` bytes of this allocation, as a handle that does not
    /// own them (dropping it frees nothing): a compiled graph's memory plan
    /// hands these out while it keeps the allocation.
    pub(crate) fn view(&self, size: u64) -> GpuBuf {
        self.range(0, size)
    }

    /// Bytes `from .. from + size` of this allocation, as a handle that does
    /// not own them (see [`GpuBuf::view`]).
    pub(crate) fn range(&self, from: u64, size: u64) -> GpuBuf {
        debug_assert!(from.saturating_add(size) <= self.size);
        GpuBuf {
            buffer: self.buffer.clone(),
            offset: self.offset + from,
            size,
            kind: Kind::Fixed,
            pool: None,
            status: Vec::new(),
        }
    }

    /// Wraps a buffer the pool does not own.
    pub(crate) fn fixed(buffer: Arc<wgpu::Buffer>, size: u64) -> GpuBuf {
        GpuBuf {
            buffer,
            offset: 0,
            size,
            kind: Kind::Fixed,
            pool: None,
            status: Vec::new(),
        }
    }

    /// Makes these values depend on status record `r` (unless it is known
    /// clean, already here, or a second failure: one is enough to report).
    pub(crate) fn depend_on(&mut self, r: &Arc<StatusRecord>) {
        let state = r.state();
        if state == Status::Clean || self.status.iter().any(|s| Arc::ptr_eq(s, r)) {
            return;
        }
        if matches!(state, Status::Failed(_)) && self.status.iter().any(|s| matches!(s.state(), Status::Failed(_))) {
            return;
        }
        self.status.push(r.clone());
    }

    /// Drops the records known clean, and failures past the first.
    pub(crate) fn prune_status(&mut self) {
        let mut failed = false;
        self.status.retain(|r| match r.state() {
            Status::Clean => false,
            Status::Failed(_) => !std::mem::replace(&mut failed, true),
            Status::Pending => true,
        });
    }

    /// How many of the records have not been read back yet.
    pub(crate) fn pending_status(&self) -> usize {
        self.status.iter().filter(|r| r.state() == Status::Pending).count()
    }
}

/// Records per status chunk (16 bytes each).
pub(crate) const STATUS_RECORDS: u32 = 1024;

/// What a status record says once read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not read back since its launch.
    Pending,
    /// Its launch found no bad value.
    Clean,
    /// [code, value, limit, 0] as the kernel reported it (see status.wgsl).
    Failed([u32; 4]),
}

/// Four status words owned by one launch that can find a bad value (a
/// gather's index, a cross-entropy's label): the kernel reports into them,
/// the launch's output (and everything computed from it) carries the
/// record, and a readback of any of those reads it, on any thread. Records
/// are recycled through the pool: one freed in the open batch waits for
/// that batch to be submitted, and a reused one is zeroed first.
pub(crate) struct StatusRecord {
    /// The whole chunk, to bind (the kernel indexes it with `index`).
    pub(crate) buf: GpuBuf,
    pub(crate) index: u32,
    chunk: usize,
    state: Mutex<Status>,
    pool: Arc<Mutex<Pool>>,
}

impl StatusRecord {
    pub(crate) fn state(&self) -> Status {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the state read back (the first read wins; the words never change after).
    pub(crate) fn resolve(&self, words: [u32; 4]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s == Status::Pending {
            *s = if words[0] == 0 {
                Status::Clean
            } else {
                Status::Failed(words)
            };
        }
    }

    /// Byte offset of the record in its chunk.
    pub(crate) fn offset(&self) -> u64 {
        self.index as u64 * 16
    }

    /// A new record (`true`: it must be zeroed before its launch).
    pub(crate) fn new(pool: &Arc<Mutex<Pool>>) -> Result<(Arc<StatusRecord>, bool)> {
        let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
        let open = p.batch;
        let (chunk, index, zero) = if let Some(i) = p.status_free.iter().rposition(|e| e.2 < open) {
            let (chunk, index, _, clean) = p.status_free.swap_remove(i);
            (chunk, index, !clean)
        } else if p.status_next < STATUS_RECORDS && !p.status_chunks.is_empty() {
            p.status_next += 1;
            (p.status_chunks.len() - 1, p.status_next - 1, false)
        } else {
            let bytes = STATUS_RECORDS as u64 * 16;
            let buffer = p.source.create(bytes)?.ok_or_else(|| p.oom(bytes))?;
            p.status_chunks.push(Arc::new(buffer));
            p.status_next = 1;
            (p.status_chunks.len() - 1, 0, false)
        };
        let buffer = p.status_chunks[chunk].clone();
        drop(p);
        let rec = StatusRecord {
            buf: GpuBuf::fixed(buffer, STATUS_RECORDS as u64 * 16),
            index,
            chunk,
            state: Mutex::new(Status::Pending),
            pool: pool.clone(),
        };
        Ok((Arc::new(rec), zero))
    }
}

impl Drop for StatusRecord {
    fn drop(&mut self) {
        let clean = self.state() == Status::Clean;
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let batch = p.batch;
        p.status_free.push((self.chunk, self.index, batch, clean));
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
            p.release(&self.buffer, &self.kind, self.offset);
        }
    }
}

struct Slab {
    buffer: Arc<wgpu::Buffer>,
    /// offset -> length of free ranges
    free: BTreeMap<u64, u64>,
}

pub(crate) struct Pool {
    device: String,
    growth: bool,
    limit: u64,
    align: u64,
    source: Arc<dyn BufferSource>,
    free: HashMap<u64, Vec<(Arc<wgpu::Buffer>, u64)>>,
    slabs: Vec<Slab>,
    info: MemoryInfo,
    /// Batch counter of the device's stream, to tag freed memory.
    pub(crate) batch: u64,
    /// Last batch in which any slab range was freed (growth off).
    slab_freed: Option<u64>,
    /// Bumped whenever buffers are destroyed (bind groups naming them go stale).
    pub(crate) generation: u64,
    /// Buffers of status records (see `StatusRecord`).
    status_chunks: Vec<Arc<wgpu::Buffer>>,
    /// Records handed out of the last chunk.
    status_next: u32,
    /// Free records: (chunk, index, batch freed in, known zero).
    status_free: Vec<(usize, u32, u64, bool)>,
}

/// Why the pool could not serve a request at once.
enum Full {
    /// The limit: cached buffers may make room.
    Limit,
    /// The driver reported out-of-memory.
    Driver,
}

/// Result of an allocation: the buffer and the batch in which its memory was
/// last freed (`None` when fresh).
pub(crate) struct Alloc {
    pub buf: GpuBuf,
    pub freed_in: Option<u64>,
}

impl Pool {
    pub(crate) fn new(
        device: String,
        growth: bool,
        limit: Option<u64>,
        align: u64,
        max_buffer: u64,
        source: Arc<dyn BufferSource>,
    ) -> Result<Self> {
        let mut pool = Pool {
            device,
            growth,
            limit: limit.unwrap_or(if growth { u64::MAX } else { DEFAULT_RESERVATION }),
            align: align.max(4),
            source,
            free: HashMap::new(),
            slabs: Vec::new(),
            info: MemoryInfo::default(),
            batch: 0,
            slab_freed: None,
            generation: 0,
            status_chunks: Vec::new(),
            status_next: 0,
            status_free: Vec::new(),
        };
        pool.info.limit = pool.limit;
        if !growth {
            let mut left = pool.limit;
            while left > 0 {
                let size = left.min(max_buffer) / 4 * 4;
                if size == 0 {
                    break;
                }
                let buffer = pool.source.create(size)?.ok_or_else(|| Error::OutOfMemory {
                    device: pool.device.clone(),
                    requested: size,
                    in_use: 0,
                    limit: pool.limit,
                })?;
                pool.info.buffers_created += 1;
                pool.info.reserved += size;
                pool.slabs.push(Slab {
                    buffer: Arc::new(buffer),
                    free: BTreeMap::from([(0, size)]),
                });
                left -= size;
            }
        }
        Ok(pool)
    }

    pub(crate) fn info(&self) -> MemoryInfo {
        self.info
    }

    pub(crate) fn reset_peak(&mut self) {
        self.info.peak = self.info.in_use;
    }

    fn oom(&self, requested: u64) -> Error {
        Error::OutOfMemory {
            device: self.device.clone(),
            requested,
            in_use: self.info.in_use,
            limit: self.limit,
        }
    }

    fn used(&mut self, bytes: u64) {
        self.info.in_use += bytes;
        self.info.peak = self.info.peak.max(self.info.in_use);
    }

    /// Destroys the cached buffers (growth on) freed in batches below
    /// `done`, all of whose work has finished; returns the bytes released.
    /// Buffers freed later stay cached: a queued command may still read them.
    pub(crate) fn release_cached(&mut self, done: u64) -> u64 {
        let mut bytes = 0;
        let mut destroyed = false;
        for (class, list) in self.free.iter_mut() {
            list.retain(|(b, freed)| {
                if *freed < done {
                    bytes += *class;
                    b.destroy();
                    destroyed = true;
                    false
                } else {
                    true
                }
            });
        }
        self.free.retain(|_, l| !l.is_empty());
        if destroyed {
            // Bind groups are cached by buffer address: forget the ones naming these.
            self.generation += 1;
        }
        self.info.reserved -= bytes;
        bytes
    }

    /// Memory of `bytes`, with no queued GPU work to wait for (a pool used
    /// on its own, as the unit tests do).
    #[cfg(test)]
    pub(crate) fn alloc(this: &Arc<Mutex<Pool>>, bytes: u64, empty: &Arc<wgpu::Buffer>) -> Result<Alloc> {
        Pool::alloc_with(this, bytes, empty, false, &|| Ok(u64::MAX))
    }

    /// Memory for a host upload. Uploads are written before the open batch
    /// runs, so memory freed in that batch would force a submit first; small
    /// uploads (a learning rate, a step count) take memory freed earlier, or
    /// new memory, instead.
    #[cfg(test)]
    pub(crate) fn alloc_upload(this: &Arc<Mutex<Pool>>, bytes: u64, empty: &Arc<wgpu::Buffer>) -> Result<Alloc> {
        Pool::alloc_with(this, bytes, empty, true, &|| Ok(u64::MAX))
    }

    /// Memory of `bytes` (for a host upload when `upload`; see
    /// `alloc_upload`). When the pool has no room, `settle` is called, with
    /// the pool unlocked: it submits the open batch, waits for the GPU to
    /// finish everything submitted, and returns the batch number below which
    /// all work is done; the cached buffers freed before it are destroyed
    /// and the request retried once.
    pub(crate) fn alloc_with(
        this: &Arc<Mutex<Pool>>,
        bytes: u64,
        empty: &Arc<wgpu::Buffer>,
        upload: bool,
        settle: &dyn Fn() -> Result<u64>,
    ) -> Result<Alloc> {
        let size = bytes.div_ceil(4) * 4;
        if size == 0 {
            return Ok(Alloc {
                buf: GpuBuf::fixed(empty.clone(), 0),
                freed_in: None,
            });
        }
        let mut settled = false;
        loop {
            let mut p = this.lock().unwrap_or_else(|e| e.into_inner());
            let small = upload && p.growth && size_class(size) <= SMALL_UPLOAD;
            let settled_alloc = if small { p.alloc_settled(size)? } else { None };
            let got = match settled_alloc {
                Some(a) => Ok(a),
                None if p.growth => p.alloc_class(size)?,
                None => Ok(p.alloc_slab(size)?),
            };
            let full = match got {
                Ok((buffer, offset, kind, freed_in)) => {
                    return Ok(Alloc {
                        buf: GpuBuf {
                            buffer,
                            offset,
                            size,
                            kind,
                            pool: Some(this.clone()),
                            status: Vec::new(),
                        },
                        freed_in,
                    });
                }
                Err(full) => full,
            };
            // Past the limit with too little cached to make room: no use waiting.
            let hopeless = matches!(full, Full::Limit) && p.info.in_use.saturating_add(size_class(size)) > p.limit;
            if settled || hopeless {
                return Err(p.oom(size));
            }
            drop(p);
            let done = settle()?;
            this.lock().unwrap_or_else(|e| e.into_inner()).release_cached(done);
            settled = true;
        }
    }

    /// A buffer of `size`'s class not freed in the open batch: from the free
    /// list, or new while under the limit; `None` otherwise.
    #[allow(clippy::type_complexity)]
    fn alloc_settled(&mut self, size: u64) -> Result<Option<(Arc<wgpu::Buffer>, u64, Kind, Option<u64>)>> {
        let class = size_class(size);
        let open = self.batch;
        if let Some(list) = self.free.get_mut(&class) {
            if let Some(i) = list.iter().rposition(|&(_, freed)| freed != open) {
                let (b, freed) = list.swap_remove(i);
                self.info.pool_hits += 1;
                self.used(class);
                return Ok(Some((b, 0, Kind::Class(class), Some(freed))));
            }
        }
        if self.info.reserved.saturating_add(class) > self.limit {
            return Ok(None);
        }
        let Some(buffer) = self.source.create(class)? else {
            return Ok(None);
        };
        self.info.buffers_created += 1;
        self.info.reserved += class;
        self.used(class);
        Ok(Some((Arc::new(buffer), 0, Kind::Class(class), None)))
    }

    /// A buffer of `size`'s class from the free list, or a new one; `Full`
    /// when the limit or the driver refuses (nothing is released here).
    #[allow(clippy::type_complexity)]
    fn alloc_class(
        &mut self,
        size: u64,
    ) -> Result<std::result::Result<(Arc<wgpu::Buffer>, u64, Kind, Option<u64>), Full>> {
        let class = size_class(size);
        if let Some((b, freed)) = self.free.get_mut(&class).and_then(|l| l.pop()) {
            self.info.pool_hits += 1;
            self.used(class);
            return Ok(Ok((b, 0, Kind::Class(class), Some(freed))));
        }
        if self.info.reserved.saturating_add(class) > self.limit {
            return Ok(Err(Full::Limit));
        }
        // A real out-of-memory from the driver: the caller settles, releases the cache, retries once.
        let Some(buffer) = self.source.create(class)? else {
            return Ok(Err(Full::Driver));
        };
        self.info.buffers_created += 1;
        self.info.reserved += class;
        self.used(class);
        Ok(Ok((Arc::new(buffer), 0, Kind::Class(class), None)))
    }

    fn alloc_slab(&mut self, size: u64) -> Result<(Arc<wgpu::Buffer>, u64, Kind, Option<u64>)> {
        let len = size.div_ceil(self.align) * self.align;
        for (i, slab) in self.slabs.iter_mut().enumerate() {
            let hit = slab.free.iter().find(|&(_, &l)| l >= len).map(|(&o, &l)| (o, l));
            if let Some((off, flen)) = hit {
                slab.free.remove(&off);
                if flen > len {
                    slab.free.insert(off + len, flen - len);
                }
                let buffer = slab.buffer.clone();
                self.info.pool_hits += 1;
                self.used(len);
                // Ranges are not tagged one by one: any slab free in the open batch counts.
                return Ok((buffer, off, Kind::Slab { slab: i, len }, self.slab_freed));
            }
        }
        Err(self.oom(size))
    }

    fn release(&mut self, buffer: &Arc<wgpu::Buffer>, kind: &Kind, offset: u64) {
        match *kind {
            Kind::Class(class) => {
                self.info.in_use -= class;
                let batch = self.batch;
                self.free.entry(class).or_default().push((buffer.clone(), batch));
            }
            Kind::Slab { slab, len } => {
                self.info.in_use -= len;
                self.slab_freed = Some(self.batch);
                let free = &mut self.slabs[slab].free;
                let mut off = offset;
                let mut l = len;
                if let Some((&po, &pl)) = free.range(..off).next_back() {
                    if po + pl == off {
                        free.remove(&po);
                        off = po;
                        l += pl;
                    }
                }
                if let Some(&nl) = free.get(&(offset + len)) {
                    free.remove(&(offset + len));
                    l += nl;
                }
                free.insert(off, l);
            }
            Kind::Fixed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Creates real buffers, but reports out-of-memory `fail` times first.
    struct Flaky {
        device: wgpu::Device,
        fail: AtomicUsize,
    }

    impl BufferSource for Flaky {
        fn create(&self, bytes: u64) -> Result<Option<wgpu::Buffer>> {
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Ok(None);
            }
            Ok(Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })))
        }
    }

    fn device() -> Option<wgpu::Device> {
        let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        let Some(a) = adapters.first() else {
            assert_eq!(
                std::env::var("WGFLOW_ALLOW_NO_GPU").as_deref(),
                Ok("1"),
                "no GPU adapter; set WGFLOW_ALLOW_NO_GPU=1 to skip"
            );
            eprintln!("SKIPPED: no GPU adapter (WGFLOW_ALLOW_NO_GPU=1)");
            return None;
        };
        Some(
            pollster::block_on(a.request_device(&wgpu::DeviceDescriptor::default()))
                .unwrap()
                .0,
        )
    }

    #[test]
    fn small_uploads_skip_memory_freed_in_the_open_batch() {
        let Some(dev) = device() else { return };
        let src = Arc::new(Flaky {
            device: dev.clone(),
            fail: AtomicUsize::new(0),
        });
        let pool = Arc::new(Mutex::new(
            Pool::new("test".into(), true, None, 256, 1 << 30, src).unwrap(),
        ));
        let empty = Arc::new(dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        // Freed in the open batch: an upload takes new memory, a kernel output reuses it.
        drop(Pool::alloc(&pool, 8, &empty).unwrap().buf);
        let up = Pool::alloc_upload(&pool, 8, &empty).unwrap();
        assert_eq!((up.freed_in, pool.lock().unwrap().info().buffers_created), (None, 2));
        let out = Pool::alloc(&pool, 8, &empty).unwrap();
        assert_eq!(out.freed_in, Some(0));
        drop((up, out));
        // After the batch is submitted, uploads reuse what was freed before.
        pool.lock().unwrap().batch += 1;
        let up = Pool::alloc_upload(&pool, 8, &empty).unwrap();
        assert_eq!((up.freed_in, pool.lock().unwrap().info().buffers_created), (Some(0), 2));
        // Large uploads never take new memory for this: they use the plain path.
        drop(Pool::alloc(&pool, 1 << 20, &empty).unwrap().buf);
        let big = Pool::alloc_upload(&pool, 1 << 20, &empty).unwrap();
        assert_eq!(big.freed_in, Some(1));
    }

    #[test]
    fn driver_oom_releases_the_cache_and_retries_once() {
        let Some(dev) = device() else { return };
        let src = Arc::new(Flaky {
            device: dev.clone(),
            fail: AtomicUsize::new(0),
        });
        let pool = Arc::new(Mutex::new(
            Pool::new("test".into(), true, None, 256, 1 << 30, src.clone()).unwrap(),
        ));
        let empty = Arc::new(dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        let a = Pool::alloc(&pool, 4096, &empty).unwrap().buf;
        drop(a);
        assert_eq!(
            pool.lock().unwrap().info().reserved,
            4096,
            "the freed buffer stays cached"
        );
        // One failure: the cache is released and the retry succeeds.
        src.fail.store(1, Ordering::SeqCst);
        let b = Pool::alloc(&pool, 8192, &empty).unwrap().buf;
        let info = pool.lock().unwrap().info();
        assert_eq!(info.reserved, 8192, "the cached 4096 bytes were released");
        assert_eq!(info.in_use, 8192);
        // Two failures: a typed error, and the pool still works afterwards.
        src.fail.store(2, Ordering::SeqCst);
        match Pool::alloc(&pool, 1 << 20, &empty) {
            Err(Error::OutOfMemory { requested, in_use, .. }) => {
                assert_eq!(requested, 1 << 20);
                assert_eq!(in_use, 8192);
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("should fail"),
        }
        drop(b);
        assert!(Pool::alloc(&pool, 1 << 20, &empty).is_ok());
    }

    #[test]
    fn making_room_destroys_only_buffers_whose_work_is_done() {
        let Some(dev) = device() else { return };
        let src = Arc::new(Flaky {
            device: dev.clone(),
            fail: AtomicUsize::new(0),
        });
        let pool = Arc::new(Mutex::new(
            Pool::new("test".into(), true, Some(8192), 256, 1 << 30, src).unwrap(),
        ));
        let empty = Arc::new(dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        let settles = AtomicUsize::new(0);
        // Freed in batch 0, which (says the settle) has not finished: kept, so out of memory.
        drop(Pool::alloc(&pool, 4096, &empty).unwrap().buf);
        let not_done = || {
            settles.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        };
        let r = Pool::alloc_with(&pool, 8192, &empty, false, &not_done);
        assert!(matches!(r, Err(Error::OutOfMemory { .. })));
        assert_eq!(settles.load(Ordering::SeqCst), 1, "settled once, then gave up");
        assert_eq!(
            pool.lock().unwrap().info().reserved,
            4096,
            "the buffer was not destroyed"
        );
        // Batch 0 done: the buffer is destroyed and the request served.
        let done = || {
            settles.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        };
        let b = Pool::alloc_with(&pool, 8192, &empty, false, &done).unwrap();
        assert_eq!(settles.load(Ordering::SeqCst), 2);
        assert_eq!(pool.lock().unwrap().info().reserved, 8192);
        // Past the limit by live tensors alone: no settle, a typed error at once.
        let r = Pool::alloc_with(&pool, 256, &empty, false, &done);
        assert!(matches!(r, Err(Error::OutOfMemory { .. })));
        assert_eq!(settles.load(Ordering::SeqCst), 2);
        drop(b);
    }

    #[test]
    fn classes_bound_slack() {
        for b in [
            1u64,
            255,
            256,
            257,
            1000,
            1024,
            1025,
            4097,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(b);
            assert!(c >= b, "{b} -> {c}");
            assert!(c <= MIN_CLASS.max(b + b / 4 + 1), "{b} -> {c} wastes too much");
        }
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
    }
}
