//! `tf.distribute.MirroredStrategy`: one replica per local device, and the
//! parts [`super::MultiWorkerMirroredStrategy`] shares with it.

use super::cluster::Cluster;
use super::mirrored::Mirrored;
use super::{OP, ReduceOp, host_all_reduce, rows, split_range};
use crate::core::error::{Error, Result};
use crate::data::Dataset;
use crate::nn::model::Model;
use crate::runtime::Device;
use crate::runtime::config;
use crate::tensor::{Tensor, Variable};

/// `tf.distribute.MirroredStrategy`: one replica per device.
#[derive(Clone, Debug)]
pub struct MirroredStrategy {
    devices: Vec<Device>,
    /// The other workers, for a multi-worker strategy.
    pub(super) cluster: Option<Cluster>,
    options: CommunicationOptions,
}

/// `tf.distribute.experimental.CommunicationOptions`: how the gradient
/// all-reduce moves data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommunicationOptions {
    /// Each replica's gradients travel to the host in packs of about this
    /// many bytes, each started as soon as the backward pass has computed
    /// its gradients; 0 picks 25 MiB.
    pub bytes_per_pack: usize,
}

impl MirroredStrategy {
    /// Replicas on these devices (`"gpu:0"`, `"gpu:1"`, `"cpu"`): each must
    /// exist and appear once.
    pub fn new(devices: &[&str]) -> Result<MirroredStrategy> {
        if devices.is_empty() {
            return Err(Error::arg(OP, "no devices given"));
        }
        let mut out: Vec<Device> = Vec::new();
        for d in devices {
            let dev = config::device(d)?;
            if out.contains(&dev) {
                return Err(Error::arg(OP, format!("device {dev} is listed twice")));
            }
            out.push(dev);
        }
        Ok(MirroredStrategy {
            devices: out,
            cluster: None,
            options: CommunicationOptions::default(),
        })
    }

    /// Every visible GPU, else the CPU device (`MirroredStrategy()`).
    #[allow(clippy::should_implement_trait)]
    pub fn default() -> Result<MirroredStrategy> {
        let mut devices: Vec<Device> = config::list_logical_devices()?
            .into_iter()
            .filter(|d| d.is_gpu())
            .collect();
        if devices.is_empty() {
            devices.push(Device::Cpu);
        }
        Ok(MirroredStrategy {
            devices,
            cluster: None,
            options: CommunicationOptions::default(),
        })
    }

    /// The replica devices of this process, in replica order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The strategy with these communication options (models built in its
    /// scope use them).
    pub fn with_communication_options(mut self, options: CommunicationOptions) -> MirroredStrategy {
        self.options = options;
        self
    }

    /// The communication options.
    pub fn communication_options(&self) -> CommunicationOptions {
        self.options
    }

    /// `strategy.num_replicas_in_sync`: the replicas of every worker.
    pub fn num_replicas_in_sync(&self) -> usize {
        self.cluster.as_ref().map_or(self.devices.len(), |c| c.total)
    }

    /// This process's first replica among all workers' and the replica
    /// count of the job.
    fn span(&self) -> (usize, usize) {
        self.cluster
            .as_ref()
            .map_or((0, self.devices.len()), |c| (c.offset, c.total))
    }

    /// `with strategy.scope(): model = build()`: calls `build` once per
    /// replica device and starts every replica from replica 0's variable
    /// values (worker 0's replica 0's, across workers). Replicas whose
    /// variables differ in names or shapes from replica 0's are an error
    /// naming the first difference; across workers the error is reported
    /// on every worker.
    pub fn scope<M: Model>(&self, mut build: impl FnMut(&Device) -> Result<M>) -> Result<Mirrored<M>> {
        let mut replicas = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            replicas.push(build(d)?);
        }
        let first: Vec<(String, Variable)> = replicas[0].named_variables();
        for (i, r) in replicas.iter().enumerate() {
            if let Some((n, v)) = r
                .named_variables()
                .into_iter()
                .find(|(_, v)| v.device() != self.devices[i])
            {
                return Err(Error::arg(
                    OP,
                    format!(
                        "replica {i}'s variable {n} is on {}, not on the replica's device {}: build on the device given",
                        v.device(),
                        self.devices[i]
                    ),
                ));
            }
        }
        for (i, r) in replicas.iter().enumerate().skip(1) {
            let vars = r.named_variables();
            if vars.len() != first.len() {
                return Err(Error::arg(
                    OP,
                    format!(
                        "replica {i} has {} variables, replica 0 has {}: build must make the same model",
                        vars.len(),
                        first.len()
                    ),
                ));
            }
            for ((n0, v0), (n, v)) in first.iter().zip(&vars) {
                if v0.shape() != v.shape() || v0.dtype() != v.dtype() {
                    return Err(Error::arg(
                        OP,
                        format!(
                            "replica {i}'s variable {n} is {} {:?}, replica 0's {n0} is {} {:?}",
                            v.dtype(),
                            v.shape(),
                            v0.dtype(),
                            v0.shape()
                        ),
                    ));
                }
            }
        }
        Mirrored::start(replicas, self.devices.clone(), self.cluster.clone(), self.options)
    }

    /// `strategy.run(fn)`: calls `f(replica, device)` for each replica of
    /// this process in turn and returns the per-replica results.
    pub fn run<T>(&self, mut f: impl FnMut(usize, &Device) -> Result<T>) -> Result<Vec<T>> {
        self.devices.iter().enumerate().map(|(i, d)| f(i, d)).collect()
    }

    /// `strategy.reduce(op, per_replica)`: this process's per-replica values
    /// summed (or averaged over [`MirroredStrategy::num_replicas_in_sync`])
    /// over every replica of every worker, on the first replica's device.
    pub fn reduce(&self, op: ReduceOp, per_replica: &[Tensor]) -> Result<Tensor> {
        if per_replica.len() != self.devices.len() {
            return Err(Error::arg(
                OP,
                format!(
                    "reduce: {} values for {} replicas",
                    per_replica.len(),
                    self.devices.len()
                ),
            ));
        }
        let (shape, mut sum) = host_all_reduce(per_replica)?;
        if let Some(c) = &self.cluster {
            let mine = std::mem::take(&mut sum);
            sum = vec![0.0; mine.len()];
            c.comm.sum_f32(&mine, &mut sum)?;
        }
        let summed = Tensor::from_vec(sum, &shape, &self.devices[0])?;
        match op {
            ReduceOp::Sum => Ok(summed),
            ReduceOp::Mean => summed.mul_scalar(1.0 / self.num_replicas_in_sync() as f64),
        }
    }

    /// `strategy.experimental_distribute_dataset(ds)`: each element's
    /// tensors split along the first axis into one part per replica of the
    /// job (as even as the batch allows); this process gets its replicas'
    /// parts, each moved to its replica's device, in replica order. A batch
    /// with fewer rows than replicas is an error.
    pub fn experimental_distribute_dataset(&self, ds: &Dataset) -> Dataset {
        let devices = self.devices.clone();
        let (offset, total) = self.span();
        ds.clone().map(move |e| {
            let mut out = Vec::with_capacity(e.len() * devices.len());
            for (i, d) in devices.iter().enumerate() {
                for t in &e {
                    let n = t.shape().first().copied().unwrap_or(0);
                    if n < total {
                        return Err(Error::arg(
                            OP,
                            format!("a batch of {n} rows cannot be split across {total} replicas"),
                        ));
                    }
                    let (lo, hi) = split_range(n, total, offset + i);
                    out.push(rows(t, lo, hi)?.to_device(d)?);
                }
            }
            Ok(out)
        })
    }
}
