//! The collectives on MPI (the `mpi` crate, rsmpi): what clusters run, so
//! wgflow has no networking of its own. Buffers are host memory; every call
//! is serialized by a lock, so any thread may make one.

use super::cluster::Collective;
use crate::core::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::traits::*;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// MPI counts are C ints: larger buffers go in pieces of this many elements.
const CHUNK: usize = 1 << 28;

/// MPI, initialized once per process; dropping the last handle finalizes it.
pub(crate) struct Mpi {
    universe: Universe,
    lock: Mutex<()>,
    rank: usize,
    size: usize,
    local_rank: usize,
}

static LIVE: Mutex<Weak<Mpi>> = Mutex::new(Weak::new());

/// The process's MPI: initialized on the first call, shared while a handle
/// lives.
pub(crate) fn connect() -> Result<Arc<Mpi>> {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = live.upgrade() {
        return Ok(m);
    }
    if mpi::environment::is_finalized() {
        return Err(Error::arg(
            "MultiWorkerMirroredStrategy",
            "MPI was finalized when the last strategy of this process was dropped, and MPI cannot start twice: keep one strategy for the whole program",
        ));
    }
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized).ok_or_else(|| {
        Error::arg(
            "MultiWorkerMirroredStrategy",
            "MPI was initialized outside wgflow: let MultiWorkerMirroredStrategy initialize it",
        )
    })?;
    let world = universe.world();
    let rank = usize::try_from(world.rank()).unwrap_or(0);
    let size = usize::try_from(world.size()).unwrap_or(1);
    // The processes that share this host's memory: their order is the local rank.
    let local_rank = usize::try_from(world.split_shared(world.rank()).rank()).unwrap_or(0);
    let m = Arc::new(Mpi {
        universe,
        lock: Mutex::new(()),
        rank,
        size,
        local_rank,
    });
    *live = Arc::downgrade(&m);
    Ok(m)
}

impl Mpi {
    fn serial<T>(&self, f: impl FnOnce(&mpi::topology::SimpleCommunicator) -> T) -> T {
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        f(&self.universe.world())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        if send.len() != recv.len() {
            return Err(Error::arg(
                "all_reduce",
                format!("{} values to send, room for {}", send.len(), recv.len()),
            ));
        }
        self.serial(|w| {
            for (s, r) in send.chunks(CHUNK).zip(recv.chunks_mut(CHUNK)) {
                w.all_reduce_into(s, r, SystemOperation::sum());
            }
        });
        Ok(())
    }
    fn max_u64(&self, buf: &mut [u64]) -> Result<()> {
        self.serial(|w| {
            for part in buf.chunks_mut(CHUNK) {
                let send = part.to_vec();
                w.all_reduce_into(&send[..], part, SystemOperation::max());
            }
        });
        Ok(())
    }
    fn gather_u64(&self, v: u64) -> Result<Vec<u64>> {
        let mut out = vec![0u64; self.size];
        self.serial(|w| w.all_gather_into(&v, &mut out[..]));
        Ok(out)
    }
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.serial(|w| {
            for part in buf.chunks_mut(CHUNK) {
                w.process_at_rank(0).broadcast_into(part);
            }
        });
        Ok(())
    }
    fn broadcast_u64(&self, buf: &mut [u64]) -> Result<()> {
        self.serial(|w| {
            for part in buf.chunks_mut(CHUNK) {
                w.process_at_rank(0).broadcast_into(part);
            }
        });
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.universe.world().abort(code)
    }
}
