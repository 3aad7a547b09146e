//! `tf.distribute.MultiWorkerMirroredStrategy` on MPI: one process per
//! worker, launched by `mpirun` or `srun`, each with its own replicas.

use super::ReduceOp;
use super::cluster::{launched_size, mpirun_command, tf_config_workers};
use super::mirrored::Mirrored;
use super::strategy::{CommunicationOptions, MirroredStrategy};
use crate::core::error::{Error, Result};
use crate::data::Dataset;
use crate::nn::model::Model;
use crate::runtime::Device;
use crate::tensor::Tensor;

const OP: &str = "MultiWorkerMirroredStrategy";

/// `tf.distribute.MultiWorkerMirroredStrategy`: synchronous training over
/// the processes of an MPI job, each with one replica per local device.
///
/// Rank, size and local rank come from MPI (`mpirun -np 2 ...`, or `srun`);
/// the cluster is MPI's, so `TF_CONFIG` is not read for addresses, but a
/// `TF_CONFIG` listing several workers in a process that MPI did not launch
/// is an error that prints the equivalent `mpirun` command. A process run
/// without a launcher is a job of one worker.
///
/// Everything else is [`MirroredStrategy`]'s, over every worker's replicas:
/// [`MultiWorkerMirroredStrategy::scope`] starts every replica from worker
/// 0's weights (after checking that every worker built the same shapes),
/// [`Mirrored::fit`] gives each worker its share of every global batch (the
/// data is sharded by rows of each batch, so every worker must see the same
/// dataset in the same order: the same seed), sums the gradients on each
/// worker and then across workers with one MPI all-reduce of a host buffer,
/// and only worker 0 prints and writes checkpoints, backups and
/// TensorBoard logs. A worker that dies ends the job (MPI's launcher
/// kills the others); an error on one worker alone ends it with MPI's
/// abort, never a hang.
///
/// Needs the cargo feature `mpi` (and an MPI library with its headers and
/// libclang to build; Debian: `openmpi-bin libopenmpi-dev libclang-dev`).
#[derive(Clone, Debug)]
pub struct MultiWorkerMirroredStrategy {
    inner: MirroredStrategy,
}

impl MultiWorkerMirroredStrategy {
    /// This worker's replicas on `devices` (as [`MirroredStrategy::new`]).
    pub fn new(devices: &[&str]) -> Result<MultiWorkerMirroredStrategy> {
        check_launch()?;
        join(MirroredStrategy::new(devices)?)
    }

    /// Every visible GPU of this worker's host, else its CPU device (as
    /// `MultiWorkerMirroredStrategy()`).
    #[allow(clippy::should_implement_trait)]
    pub fn default() -> Result<MultiWorkerMirroredStrategy> {
        check_launch()?;
        join(MirroredStrategy::default()?)
    }

    fn cluster(&self) -> Option<&super::cluster::Cluster> {
        self.inner.cluster.as_ref()
    }

    /// This worker's index (`cluster_resolver.task_id`; MPI's rank).
    pub fn worker(&self) -> usize {
        self.cluster().map_or(0, |c| c.comm.rank())
    }

    /// The number of workers (MPI's size).
    pub fn num_workers(&self) -> usize {
        self.cluster().map_or(1, |c| c.comm.size())
    }

    /// This worker's index among the workers of its host: which GPU a
    /// worker with one device per process should take.
    pub fn local_rank(&self) -> usize {
        self.cluster().map_or(0, |c| c.comm.local_rank())
    }

    /// Whether this is worker 0, which alone writes files.
    pub fn is_chief(&self) -> bool {
        self.worker() == 0
    }

    /// This worker's replica devices.
    pub fn devices(&self) -> &[Device] {
        self.inner.devices()
    }

    /// `MultiWorkerMirroredStrategy(communication_options=...)`.
    pub fn with_communication_options(mut self, options: CommunicationOptions) -> MultiWorkerMirroredStrategy {
        self.inner = self.inner.with_communication_options(options);
        self
    }

    /// `num_replicas_in_sync`: the replicas of every worker.
    pub fn num_replicas_in_sync(&self) -> usize {
        self.inner.num_replicas_in_sync()
    }

    /// As [`MirroredStrategy::scope`], then worker 0's weights broadcast to
    /// every worker. Every worker calls it; a worker whose model's shapes
    /// differ from worker 0's makes it fail on every worker, naming the
    /// worker and the variable.
    pub fn scope<M: Model>(&self, build: impl FnMut(&Device) -> Result<M>) -> Result<Mirrored<M>> {
        self.inner.scope(build)
    }

    /// `strategy.run(fn)` on this worker's replicas.
    pub fn run<T>(&self, f: impl FnMut(usize, &Device) -> Result<T>) -> Result<Vec<T>> {
        self.inner.run(f)
    }

    /// `strategy.reduce(op, per_replica)` over every worker's replicas (every
    /// worker calls it, and gets the result).
    pub fn reduce(&self, op: ReduceOp, per_replica: &[Tensor]) -> Result<Tensor> {
        self.inner.reduce(op, per_replica)
    }

    /// Sums `send` over every worker into `recv` (host buffers of equal
    /// length; every worker calls it and gets the same bits): the MPI
    /// all-reduce the training step runs on its gradients.
    pub fn all_reduce_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        match self.cluster() {
            Some(c) => c.comm.sum_f32(send, recv),
            None => {
                if send.len() != recv.len() {
                    return Err(Error::arg(
                        OP,
                        format!("all_reduce_sum: {} values to send, room for {}", send.len(), recv.len()),
                    ));
                }
                recv.copy_from_slice(send);
                Ok(())
            }
        }
    }

    /// This worker's replicas' shares of each global batch of `ds` (which
    /// every worker reads alike).
    pub fn experimental_distribute_dataset(&self, ds: &Dataset) -> Dataset {
        self.inner.experimental_distribute_dataset(ds)
    }
}

/// `TF_CONFIG` naming several workers asks for a multi-worker job; wgflow's
/// runs on MPI, so outside an MPI launch it says how to start one.
fn check_launch() -> Result<()> {
    if let Some(hosts) = tf_config_workers()? {
        if hosts.len() > 1 && launched_size().is_none() {
            return Err(Error::arg(
                OP,
                format!(
                    "TF_CONFIG lists {} workers, but this process was not launched by MPI: wgflow's multi-worker training runs on MPI, which starts every worker; run instead (with TF_CONFIG unset):\n  {}",
                    hosts.len(),
                    mpirun_command(&hosts)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(feature = "mpi")]
fn join(mut inner: MirroredStrategy) -> Result<MultiWorkerMirroredStrategy> {
    let comm: std::sync::Arc<dyn super::cluster::Collective> = super::mpi::connect()?;
    let cluster = super::cluster::Cluster::new(comm, inner.devices().len())?;
    inner.cluster = Some(cluster);
    Ok(MultiWorkerMirroredStrategy { inner })
}

#[cfg(not(feature = "mpi"))]
fn join(_inner: MirroredStrategy) -> Result<MultiWorkerMirroredStrategy> {
    Err(Error::Unimplemented {
        what: OP.into(),
        msg: "wgflow was built without its `mpi` cargo feature: build with `--features mpi` (needs an MPI library and libclang; Debian: openmpi-bin libopenmpi-dev libclang-dev) and launch with mpirun or srun".into(),
    })
}
