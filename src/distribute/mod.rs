//! `tf.distribute.MirroredStrategy` for wgflow: synchronous data parallelism
//! over several devices of one process (GPUs, logical GPUs of one adapter,
//! the CPU device), with results equal to one device.
//!
//! `strategy.scope(|device| build)` builds one replica of the model per
//! device, each holding its own copy of every variable, and starts them
//! from replica 0's values. [`Mirrored::fit`] splits each global batch
//! across the replicas (a short last batch too), runs each replica's traced
//! gradient step on its device, sums the gradients on the host (one flat
//! read-back per replica, a parallel sum, one upload), applies the update
//! once on replica 0 and copies the new weights to the others in one flat
//! transfer each, so the replicas stay bit-identical even on devices whose
//! arithmetic differs. Each replica's loss is its examples' share of the
//! global batch mean (Keras' SUM of per-replica losses scaled by the global
//! batch), so the summed gradient is the one-device gradient of the whole
//! batch. BatchNormalization statistics (non-trainable variables) stay per
//! replica and are averaged when read ([`Mirrored::evaluate`],
//! [`Mirrored::predict`], [`Mirrored::sync_on_read`]). Metrics are updated
//! once per step on replica 0 with every replica's predictions gathered.
//!
//! Custom loops use [`MirroredStrategy::run`] (one closure call per replica,
//! on its device) and [`MirroredStrategy::reduce`].

use crate::autodiff::{GradientTape, without_recording};
use crate::core::error::{Error, Result};
use crate::data::Dataset;
use crate::function::Traced;
use crate::nn::model::{FitArgs, History, Logs, Model, fit_loop};
use crate::runtime::Device;
use crate::runtime::config;
use crate::tensor::{Tensor, Variable};

const OP: &str = "MirroredStrategy";

/// How [`MirroredStrategy::reduce`] combines per-replica values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The mean over replicas.
    Mean,
}

/// `tf.distribute.MirroredStrategy`: one replica per device.
#[derive(Clone, Debug)]
pub struct MirroredStrategy {
    devices: Vec<Device>,
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
        Ok(MirroredStrategy { devices: out })
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
        Ok(MirroredStrategy { devices })
    }

    /// The replica devices, in replica order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// `strategy.num_replicas_in_sync`.
    pub fn num_replicas_in_sync(&self) -> usize {
        self.devices.len()
    }

    /// `with strategy.scope(): model = build()`: calls `build` once per
    /// replica device and starts every replica from replica 0's variable
    /// values. Replicas whose variables differ in names or shapes from
    /// replica 0's are an error naming the first difference.
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
        let n = replicas.len();
        let mut m = Mirrored {
            replicas,
            devices: self.devices.clone(),
            grad_steps: (0..n).map(|_| Traced::new("replica_grad_step")).collect(),
            run_eagerly: false,
        };
        m.broadcast(false)?;
        Ok(m)
    }

    /// `strategy.run(fn)`: calls `f(replica, device)` for each replica in
    /// turn and returns the per-replica results.
    pub fn run<T>(&self, mut f: impl FnMut(usize, &Device) -> Result<T>) -> Result<Vec<T>> {
        self.devices.iter().enumerate().map(|(i, d)| f(i, d)).collect()
    }

    /// `strategy.reduce(op, per_replica)`: the values summed (or averaged)
    /// on the first replica's device.
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
        let summed = all_reduce_sum(per_replica, &self.devices[0])?;
        match op {
            ReduceOp::Sum => Ok(summed),
            ReduceOp::Mean => summed.mul_scalar(1.0 / per_replica.len() as f64),
        }
    }

    /// `strategy.experimental_distribute_dataset(ds)`: each element's
    /// tensors split along the first axis into one part per replica (as
    /// even as the batch allows), each moved to its replica's device. A
    /// batch with fewer rows than replicas is an error.
    pub fn experimental_distribute_dataset(&self, ds: &Dataset) -> Dataset {
        let devices = self.devices.clone();
        ds.clone().map(move |e| {
            let mut out = Vec::with_capacity(e.len() * devices.len());
            for (i, d) in devices.iter().enumerate() {
                for t in &e {
                    let n = t.shape().first().copied().unwrap_or(0);
                    if n < devices.len() {
                        return Err(Error::arg(
                            OP,
                            format!("a batch of {n} rows cannot be split across {} replicas", devices.len()),
                        ));
                    }
                    let (lo, hi) = split_range(n, devices.len(), i);
                    out.push(rows(t, lo, hi)?.to_device(d)?);
                }
            }
            Ok(out)
        })
    }
}

/// Replica `i`'s rows of `n` split `parts` ways (the first `n % parts` get one more).
fn split_range(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let base = n / parts;
    let extra = n % parts;
    let lo = i * base + i.min(extra);
    let hi = lo + base + usize::from(i < extra);
    (lo, hi)
}

fn rows(t: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
    let mut begin = vec![0; t.rank()];
    let mut size = t.shape().to_vec();
    if let (Some(b), Some(s)) = (begin.first_mut(), size.first_mut()) {
        *b = lo;
        *s = hi - lo;
    }
    t.slice(&begin, &size)
}

/// One flat f32 vector of `ts` (each read back once, as one buffer).
fn flat_host(ts: &[Tensor]) -> Result<Vec<f32>> {
    match ts {
        [] => return Ok(Vec::new()),
        [t] => return t.to_vec::<f32>(),
        _ => {}
    }
    let parts: Vec<Tensor> = ts.iter().map(|t| t.reshape(&[-1])).collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    crate::ops::layout::concat(&refs, 0)?.to_vec::<f32>()
}

/// Reads each replica's tensors back as one flat vector, all replicas at
/// once (each device waits for its own queue, so the waits overlap).
fn read_back_all(per_replica: Vec<Vec<Tensor>>) -> Result<Vec<Vec<f32>>> {
    if per_replica.len() < 2 {
        return per_replica.iter().map(|ts| flat_host(ts)).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = per_replica.iter().map(|ts| s.spawn(move || flat_host(ts))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::arg(OP, "a read-back thread panicked")))
            })
            .collect()
    })
}

/// Splits a flat host vector back into tensors shaped like `like`, on `device`.
fn unflat(flat: &[f32], like: &[Vec<usize>], device: &Device) -> Result<Vec<Tensor>> {
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
    let sum = host_sum(&hosts)?;
    Tensor::from_vec(sum, &shape, to)
}

/// The element-wise sum of equal-length vectors, in parallel chunks.
fn host_sum(parts: &[Vec<f32>]) -> Result<Vec<f32>> {
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

/// A model mirrored over a [`MirroredStrategy`]'s devices.
pub struct Mirrored<M: Model> {
    replicas: Vec<M>,
    devices: Vec<Device>,
    grad_steps: Vec<Traced>,
    run_eagerly: bool,
}

impl<M: Model> Mirrored<M> {
    /// The replicas, in replica order.
    pub fn replicas(&self) -> &[M] {
        &self.replicas
    }

    /// The replicas, mutably (custom loops).
    pub fn replicas_mut(&mut self) -> &mut [M] {
        &mut self.replicas
    }

    /// The replica devices.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// `model.compile(...)`: the optimizer, loss and metrics (kept by
    /// replica 0, which applies every update).
    pub fn compile(
        &mut self,
        optimizer: impl Into<crate::nn::optimizers::Optimizer>,
        loss: impl crate::nn::losses::Loss + 'static,
        metrics: impl Into<crate::nn::metrics::Metrics>,
    ) {
        self.replicas[0].compile(optimizer, loss, metrics);
        for g in &mut self.grad_steps {
            *g = Traced::new("replica_grad_step");
        }
    }

    /// Keras' `run_eagerly`: run the replica steps op by op.
    pub fn set_run_eagerly(&mut self, on: bool) {
        self.run_eagerly = on;
    }

    /// Copies every variable of replica 0 to the other replicas (after
    /// restoring a checkpoint into replica 0, for one).
    pub fn copy_first_to_all(&mut self) -> Result<()> {
        self.broadcast(false)
    }

    /// Copies replica 0's trainable variables (all variables when
    /// `trainable_only` is false) to every other replica, one flat transfer
    /// per replica.
    fn broadcast(&mut self, trainable_only: bool) -> Result<()> {
        let pick = |m: &M| -> Vec<Variable> {
            if trainable_only {
                m.trainable_variables()
            } else {
                m.variables()
            }
        };
        let src = pick(&self.replicas[0]);
        if self.replicas.len() < 2 || src.is_empty() {
            return Ok(());
        }
        let values: Vec<Tensor> = src.iter().map(|v| v.value()).collect();
        let shapes: Vec<Vec<usize>> = values.iter().map(|t| t.shape().to_vec()).collect();
        let flat = without_recording(|| flat_host(&values))?;
        for i in 1..self.replicas.len() {
            let dst = pick(&self.replicas[i]);
            let ts = unflat(&flat, &shapes, &self.devices[i])?;
            for (v, t) in dst.iter().zip(&ts) {
                v.assign(t)?;
            }
        }
        Ok(())
    }

    /// Averages the non-trainable variables (BatchNormalization's moving
    /// statistics) over the replicas into every replica: what a read sees.
    pub fn sync_on_read(&mut self) -> Result<()> {
        let n = self.replicas.len();
        if n < 2 {
            return Ok(());
        }
        let per: Vec<Vec<Variable>> = self
            .replicas
            .iter()
            .map(|m| m.variables().into_iter().filter(|v| !v.trainable()).collect())
            .collect();
        for j in 0..per[0].len() {
            let vals: Vec<Tensor> = per.iter().map(|vs| vs[j].value()).collect();
            let shape = vals[0].shape().to_vec();
            let mut mean = host_sum(&read_back_all(vals.into_iter().map(|v| vec![v]).collect())?)?;
            mean.iter_mut().for_each(|v| *v /= n as f32);
            for (i, vs) in per.iter().enumerate() {
                vs[j].assign(&Tensor::from_slice(&mean, &shape, &self.devices[i])?)?;
            }
        }
        Ok(())
    }

    /// One global batch: per-replica gradients, host sum, one update on
    /// replica 0, weights copied out. Returns the global loss (on replica 0's device).
    fn train_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        let r = self.replicas.len();
        if n == 0 {
            return Err(Error::arg(OP, "an empty batch"));
        }
        let mut c = self.replicas[0]
            .compiled()
            .take()
            .ok_or_else(|| Error::arg(OP, "compile the mirrored model before fit"))?;
        let result = (|| -> Result<Tensor> {
            let mut losses = Vec::new();
            let mut preds = Vec::new();
            let mut per_grads: Vec<Vec<Tensor>> = Vec::new();
            let vars0 = self.replicas[0].trainable_variables();
            let shapes: Vec<Vec<usize>> = vars0.iter().map(|v| v.shape()).collect();
            for i in 0..r {
                let (lo, hi) = split_range(n, r, i);
                if hi == lo {
                    continue;
                }
                let d = &self.devices[i];
                let xi = rows(x, lo, hi)?.to_device(d)?;
                let yi = rows(y, lo, hi)?.to_device(d)?;
                let scale = Tensor::scalar((hi - lo) as f32 / n as f32, d)?;
                let model = &mut self.replicas[i];
                let loss_fn = &c.loss;
                let mut step = |b: &[Tensor]| -> Result<Vec<Tensor>> {
                    let tape = GradientTape::new();
                    let pred = model.call(&b[0], true)?;
                    let loss = loss_fn.call(&b[1], &pred)?.mul(&b[2])?;
                    let vars = model.trainable_variables();
                    let refs: Vec<&Variable> = vars.iter().collect();
                    let grads = tape.gradient(&loss, &refs)?;
                    drop(tape);
                    let mut out = vec![loss, pred];
                    for (g, v) in grads.into_iter().zip(&vars) {
                        out.push(match g {
                            Some(g) => g,
                            None => crate::ops::zeros(&v.shape(), v.dtype(), &v.device())?,
                        });
                    }
                    Ok(out)
                };
                let args = [xi, yi, scale];
                let mut out = if self.run_eagerly {
                    step(&args)?
                } else {
                    self.grad_steps[i].call(&args, |b| step(b))?
                };
                let grads = out.split_off(2);
                preds.push(out[1].clone());
                losses.push(out[0].clone());
                per_grads.push(grads);
            }
            // Every replica's step is queued before the first read-back.
            let flats = read_back_all(per_grads)?;
            let sum = host_sum(&flats)?;
            let preds: Vec<Tensor> = preds
                .iter()
                .map(|p| p.to_device(&self.devices[0]))
                .collect::<Result<_>>()?;
            let grads: Vec<Option<Tensor>> = unflat(&sum, &shapes, &self.devices[0])?.into_iter().map(Some).collect();
            c.optimizer.apply_gradients(&grads, &vars0)?;
            let loss = all_reduce_sum(&losses, &self.devices[0])?;
            let pred_refs: Vec<&Tensor> = preds.iter().collect();
            let pred = crate::ops::layout::concat(&pred_refs, 0)?;
            let y0 = y.to_device(&self.devices[0])?;
            without_recording(|| -> Result<()> {
                c.loss_tracker.update(&loss)?;
                for m in c.metrics.iter_mut() {
                    m.update_state(&y0, &pred)?;
                }
                Ok(())
            })?;
            Ok(loss)
        })();
        *self.replicas[0].compiled() = Some(c);
        let loss = result?;
        self.broadcast(true)?;
        Ok(loss)
    }

    /// `model.fit(x, y, ...)` with each global batch of `args.batch_size`
    /// split across the replicas.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, args: FitArgs) -> Result<History> {
        if args.batch_size < self.replicas.len() {
            return Err(Error::arg(
                OP,
                format!(
                    "the global batch size {} is smaller than the {} replicas",
                    args.batch_size,
                    self.replicas.len()
                ),
            ));
        }
        if self.replicas[0].compiled().is_none() {
            return Err(Error::arg(OP, "compile the mirrored model before fit"));
        }
        let n = x.shape().first().copied().unwrap_or(0);
        let mut ds = Dataset::from_tensor_slices(&[x.clone(), y.clone()])?;
        if args.shuffle {
            ds = ds.shuffle(n.max(1), args.seed);
        }
        let ds = ds.batch(args.batch_size, false)?;
        let vars = self.replicas[0].named_variables();
        let batch_size = args.batch_size;
        fit_loop(
            self,
            &ds,
            args,
            vars,
            |m: &mut Self| m.replicas[0].compiled(),
            |m: &mut Self, batch: Vec<Tensor>| match batch.as_slice() {
                [x, y] => m.train_batch(x, y),
                _ => Err(Error::arg(
                    OP,
                    format!("dataset elements need (x, y), got {} tensors", batch.len()),
                )),
            },
            |m: &mut Self, vx: &Tensor, vy: &Tensor| m.evaluate(vx, vy, batch_size),
            // A restored replica 0 is copied to the others.
            |m: &mut Self| m.copy_first_to_all(),
        )
    }

    /// `model.evaluate(x, y, batch_size)` on replica 0 after averaging the
    /// replicas' non-trainable statistics.
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs> {
        self.sync_on_read()?;
        self.replicas[0].evaluate(x, y, batch_size)
    }

    /// `model.predict(x, batch_size)`: each batch split across the
    /// replicas, the parts concatenated on replica 0's device.
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        self.sync_on_read()?;
        let n = x.shape().first().copied().unwrap_or(0);
        let r = self.replicas.len();
        let mut parts = Vec::new();
        let mut lo = 0;
        while lo < n {
            let hi = (lo + batch_size.max(1)).min(n);
            let b = rows(x, lo, hi)?;
            for i in 0..r {
                let (a, z) = split_range(hi - lo, r, i);
                if a == z {
                    continue;
                }
                let xi = rows(&b, a, z)?.to_device(&self.devices[i])?;
                let yi = without_recording(|| self.replicas[i].call(&xi, false))?;
                parts.push(yi.to_device(&self.devices[0])?);
            }
            lo = hi;
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        crate::ops::layout::concat(&refs, 0)
    }
}
