//! A model mirrored over a strategy's replicas: the training step, the
//! broadcasts that keep the replicas equal, and `fit` / `evaluate` /
//! `predict`.

use super::cluster::Cluster;
use super::strategy::CommunicationOptions;
use super::transfer::{BUCKET_BYTES, Buckets, Reading, add_into};
use super::{OP, flat_host, host_sum, read_back_all, rows, split_range, unflat};
use crate::autodiff::{GradientTape, without_recording};
use crate::core::error::{Error, Result};
use crate::function::Traced;
use crate::nn::losses::Reduction;
use crate::nn::model::{Compiled, FitArgs, FitTarget, History, Logs, Model, epoch_batches, fit_loop, update_metrics};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A model mirrored over a [`super::MirroredStrategy`]'s (or a
/// [`super::MultiWorkerMirroredStrategy`]'s) devices.
pub struct Mirrored<M: Model> {
    replicas: Vec<M>,
    devices: Vec<Device>,
    grad_steps: Vec<Traced>,
    run_eagerly: bool,
    cluster: Option<Cluster>,
    /// One example's prediction shape, agreed on at the first step.
    pred_shape: Option<Vec<usize>>,
    /// The last error was returned on every worker alike, so no worker is
    /// left waiting for another.
    agreed_error: bool,
    /// Bytes per read-back bucket.
    pack: usize,
}

/// One replica's step on rows `lo..hi` of the global batch, its outputs
/// `[loss, predictions, gradients...]` on their way back in buckets.
struct Part {
    lo: usize,
    hi: usize,
    pred_shape: Vec<usize>,
    buckets: std::collections::VecDeque<(Vec<usize>, Reading)>,
}

impl<M: Model> Mirrored<M> {
    /// The replicas of a strategy's scope, started from replica 0's values
    /// (worker 0's, with the model's shapes compared on every worker first).
    pub(super) fn start(
        replicas: Vec<M>,
        devices: Vec<Device>,
        cluster: Option<Cluster>,
        options: CommunicationOptions,
    ) -> Result<Mirrored<M>> {
        let n = replicas.len();
        let mut m = Mirrored {
            replicas,
            devices,
            grad_steps: (0..n).map(|_| Traced::new("replica_grad_step")).collect(),
            run_eagerly: false,
            cluster,
            pred_shape: None,
            agreed_error: false,
            pack: match options.bytes_per_pack {
                0 => BUCKET_BYTES,
                n => n,
            },
        };
        m.check_same_model()?;
        m.broadcast(false, true)?;
        Ok(m)
    }

    /// The replicas of this process, in replica order.
    pub fn replicas(&self) -> &[M] {
        &self.replicas
    }

    /// The replicas, mutably (custom loops).
    pub fn replicas_mut(&mut self) -> &mut [M] {
        &mut self.replicas
    }

    /// The replica devices of this process.
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

    /// Keras' `weighted_metrics` (see [`Model::set_weighted_metrics`]).
    ///
    /// Returns [`Error::InvalidArgument`] before `compile`.
    pub fn set_weighted_metrics(&mut self, metrics: impl Into<crate::nn::metrics::Metrics>) -> Result<()> {
        self.replicas[0].set_weighted_metrics(metrics)
    }

    /// Keras' `run_eagerly`: run the replica steps op by op.
    pub fn set_run_eagerly(&mut self, on: bool) {
        self.run_eagerly = on;
    }

    /// The other workers, when there are any.
    fn others(&self) -> Option<&Cluster> {
        self.cluster.as_ref().filter(|c| c.comm.size() > 1)
    }

    /// This process's first replica among all workers' and the job's
    /// replica count.
    fn span(&self) -> (usize, usize) {
        self.cluster
            .as_ref()
            .map_or((0, self.replicas.len()), |c| (c.offset, c.total))
    }

    /// Copies every variable of replica 0 (worker 0's, across workers) to
    /// every other replica (after restoring a checkpoint into replica 0,
    /// for one). Across workers every worker must call it.
    pub fn copy_first_to_all(&mut self) -> Result<()> {
        self.broadcast(false, true)
    }

    /// Copies replica 0's trainable variables (all variables when
    /// `trainable_only` is false) to the other replicas, one flat transfer
    /// per replica; with `across`, worker 0's replica 0 to every replica of
    /// every worker.
    fn broadcast(&mut self, trainable_only: bool, across: bool) -> Result<()> {
        let pick = |m: &M| -> Vec<Variable> {
            if trainable_only {
                m.trainable_variables()
            } else {
                m.variables()
            }
        };
        let cross = if across { self.others().cloned() } else { None };
        let src = pick(&self.replicas[0]);
        if (self.replicas.len() < 2 && cross.is_none()) || src.is_empty() {
            return Ok(());
        }
        let shapes: Vec<Vec<usize>> = src.iter().map(|v| v.shape()).collect();
        let receiving = cross.as_ref().is_some_and(|c| c.comm.rank() != 0);
        let mut flat = if receiving {
            vec![0.0f32; shapes.iter().map(|s| s.iter().product::<usize>()).sum()]
        } else {
            let values: Vec<Tensor> = src.iter().map(|v| v.value()).collect();
            without_recording(|| flat_host(&values))?
        };
        if let Some(c) = &cross {
            c.comm.broadcast_f32(&mut flat)?;
        }
        for i in usize::from(!receiving)..self.replicas.len() {
            let dst = pick(&self.replicas[i]);
            let ts = unflat(&flat, &shapes, &self.devices[i])?;
            for (v, t) in dst.iter().zip(&ts) {
                v.assign(t)?;
            }
        }
        Ok(())
    }

    /// Across workers: every worker's model has worker 0's variable shapes,
    /// or every worker returns the same error naming the first worker and
    /// variable that differ.
    fn check_same_model(&mut self) -> Result<()> {
        let Some(c) = self.others().cloned() else {
            return Ok(());
        };
        let vars = self.replicas[0].named_variables();
        let mine: Vec<Vec<usize>> = vars.iter().map(|(_, v)| v.shape()).collect();
        let mut desc = vec![mine.len() as u64];
        for s in &mine {
            desc.push(s.len() as u64);
            desc.extend(s.iter().map(|&d| d as u64));
        }
        let mut len = [desc.len() as u64];
        c.comm.broadcast_u64(&mut len)?;
        let len = usize::try_from(len[0]).map_err(|_| Error::arg(OP, "a model description past usize"))?;
        let mut theirs = if c.comm.rank() == 0 { desc } else { vec![0; len] };
        c.comm.broadcast_u64(&mut theirs)?;
        let first = parse_shapes(&theirs);
        let differ = (0..mine.len().max(first.len()))
            .find(|&i| mine.get(i) != first.get(i))
            .map_or(u64::MAX, |i| i as u64);
        let codes = c.comm.gather_u64(differ)?;
        let Some((w, &i)) = codes.iter().enumerate().find(|(_, v)| **v != u64::MAX) else {
            return Ok(());
        };
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        let name = vars
            .get(i)
            .map_or_else(|| format!("#{i}"), |(n, _)| format!("#{i} ({n})"));
        let theirs = first
            .get(i)
            .map_or_else(|| "does not exist".to_string(), |s| format!("is {s:?}"));
        let own = if w == c.comm.rank() {
            mine.get(i).map_or_else(
                || ", and this worker has no such variable".to_string(),
                |s| format!(", this worker's is {s:?}"),
            )
        } else {
            String::new()
        };
        Err(Error::arg(
            OP,
            format!(
                "worker {w}'s model differs from worker 0's: on worker 0 variable {name} {theirs}{own} (worker 0 has {} variables, worker {w} disagrees); every worker must build the same model",
                first.len()
            ),
        ))
    }

    /// Averages the non-trainable variables (BatchNormalization's moving
    /// statistics) over every replica (of every worker) into every replica:
    /// what a read sees. Across workers every worker must call it.
    pub fn sync_on_read(&mut self) -> Result<()> {
        let cross = self.others().cloned();
        if self.replicas.len() < 2 && cross.is_none() {
            return Ok(());
        }
        let per: Vec<Vec<Variable>> = self
            .replicas
            .iter()
            .map(|m| {
                // Statistics the replicas keep apart (frozen weights and
                // integer counts stay as they are everywhere).
                m.variables()
                    .into_iter()
                    .filter(|v| !v.trainable() && !v.frozen() && v.dtype().is_float())
                    .collect()
            })
            .collect();
        if per[0].is_empty() {
            return Ok(());
        }
        let shapes: Vec<Vec<usize>> = per[0].iter().map(|v| v.shape()).collect();
        let flats = read_back_all(per.iter().map(|vs| vs.iter().map(|v| v.value()).collect()).collect())?;
        let parts: Vec<&[f32]> = flats.iter().map(Vec::as_slice).collect();
        let mut mean = host_sum(&parts)?;
        if let Some(c) = &cross {
            let mine = std::mem::take(&mut mean);
            mean = vec![0.0; mine.len()];
            c.comm.sum_f32(&mine, &mut mean)?;
        }
        let total = self.span().1 as f32;
        mean.iter_mut().for_each(|v| *v /= total);
        for (i, vs) in per.iter().enumerate() {
            for (v, t) in vs.iter().zip(unflat(&mean, &shapes, &self.devices[i])?) {
                v.assign(&t)?;
            }
        }
        Ok(())
    }

    /// Each local replica's gradient step on its rows of the global batch
    /// of `n`, queued on every device before the first wait; each
    /// replica's gradients start back to the host in buckets as soon as
    /// the step has computed them.
    /// Each replica's step; `loss_scale` multiplies every replica's loss
    /// before its gradient (a LossScaleOptimizer's current scale, 1 without
    /// one), so the summed gradients arrive scaled, as its
    /// `apply_gradients` expects.
    fn local_parts(
        &mut self,
        c: &Compiled,
        x: &Tensor,
        y: &Tensor,
        w: Option<&Tensor>,
        n: usize,
        g: usize,
        loss_scale: f32,
    ) -> Result<Vec<Part>> {
        let (offset, total) = self.span();
        let reduction = c.loss.reduction();
        if reduction == Reduction::None {
            return Err(Error::arg(
                OP,
                format!(
                    "the loss {:?} has reduction \"none\": a distributed step needs a scalar loss",
                    c.loss.name()
                ),
            ));
        }
        // What each replica's loss is multiplied by so that the replicas'
        // losses (and gradients) sum to the global batch's: its share of
        // the examples, or with mean_with_sample_weight of the weights
        // (read back only then).
        let weight_sum =
            |w: &Tensor, lo: usize, hi: usize| -> Result<f64> { Ok(rows(w, lo, hi)?.to_f64_vec()?.iter().sum()) };
        let by_weight = match w {
            Some(w) if reduction == Reduction::MeanWithSampleWeight => Some((w, weight_sum(w, 0, n)?)),
            _ => None,
        };
        let share = |lo: usize, hi: usize| -> Result<f64> {
            Ok(match (reduction, by_weight) {
                (Reduction::Sum, _) => 1.0,
                // divide_no_nan: weights summing to 0 give a loss of 0.
                (_, Some((_, total))) if total == 0.0 => 0.0,
                (_, Some((w, total))) => weight_sum(w, lo, hi)? / total,
                _ => (hi - lo) as f64 / n as f64,
            })
        };
        let mut parts = Vec::new();
        for i in 0..self.replicas.len() {
            let (lo, hi) = split_range(n, total, offset + i);
            if hi == lo {
                continue;
            }
            let vars = self.replicas[i].trainable_variables();
            let numel: usize = vars.iter().map(|v| v.shape().iter().product::<usize>()).sum();
            if numel != g {
                return Err(Error::arg(
                    OP,
                    format!(
                        "replicas disagree: replica {i} has {numel} trainable values, replica 0 {g} (were a replica's variables changed?)"
                    ),
                ));
            }
            let d = &self.devices[i];
            let xi = rows(x, lo, hi)?.to_device(d)?;
            let yi = rows(y, lo, hi)?.to_device(d)?;
            let scale = Tensor::scalar(share(lo, hi)? as f32 * loss_scale, d)?;
            let model = &mut self.replicas[i];
            let loss_fn = &c.loss;
            let mut step = |b: &[Tensor]| -> Result<Vec<Tensor>> {
                let tape = GradientTape::new();
                let pred = model.call(&b[0], true)?;
                let loss = loss_fn.call_weighted(&b[1], &pred, b.get(3))?.mul(&b[2])?;
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
            let mut args = vec![xi, yi, scale];
            if let Some(w) = w {
                args.push(rows(w, lo, hi)?.to_device(d)?);
            }
            // Outputs 2.. are the gradients.
            let mut buckets = Buckets::new(self.pack);
            let mut ready = |k: usize, t: &Tensor| if k >= 2 { buckets.ready(k, t) } else { Ok(()) };
            let mut out = if self.run_eagerly {
                let out = step(&args)?;
                for (k, t) in out.iter().enumerate() {
                    ready(k, t)?;
                }
                out
            } else {
                self.grad_steps[i].call_observed(&args, |b| step(b), &mut ready)?
            };
            if out.len() != vars.len() + 2 {
                return Err(Error::arg(OP, "the step lost its outputs"));
            }
            out.truncate(2);
            let pred = out
                .pop()
                .ok_or_else(|| Error::arg(OP, "the step lost its prediction"))?;
            let loss = out.pop().ok_or_else(|| Error::arg(OP, "the step lost its loss"))?;
            buckets.ready(0, &loss)?;
            buckets.ready(1, &pred)?;
            parts.push(Part {
                lo,
                hi,
                pred_shape: pred.shape().get(1..).unwrap_or(&[]).to_vec(),
                buckets: buckets.finish()?.into(),
            });
        }
        Ok(parts)
    }

    /// One example's prediction shape: worker 0's (its replica 0 always has
    /// rows), sent to every worker at the first step. `None` when worker 0
    /// has none (its step failed).
    fn agree_pred_shape(&mut self, local: &Result<Vec<Part>>) -> Result<Option<Vec<usize>>> {
        if let Some(s) = &self.pred_shape {
            return Ok(Some(s.clone()));
        }
        let mine = local
            .as_ref()
            .ok()
            .and_then(|p| p.first())
            .map(|p| p.pred_shape.clone());
        let shape = match self.others().cloned() {
            None => mine,
            Some(c) => {
                const MAX_RANK: usize = 8;
                let mut msg = [0u64; MAX_RANK + 2];
                if let Some(s) = mine.as_ref().filter(|s| s.len() <= MAX_RANK && c.comm.rank() == 0) {
                    msg[0] = 1;
                    msg[1] = s.len() as u64;
                    for (m, &d) in msg[2..].iter_mut().zip(s) {
                        *m = d as u64;
                    }
                }
                c.comm.broadcast_u64(&mut msg)?;
                if msg[0] != 1 {
                    None
                } else {
                    let rank = usize::try_from(msg[1]).unwrap_or(0).min(MAX_RANK);
                    Some(msg[2..2 + rank].iter().map(|&d| d as usize).collect())
                }
            }
        };
        self.pred_shape.clone_from(&shape);
        Ok(shape)
    }

    /// One global batch: per-replica gradients, the host sum (and the sum
    /// across workers), one update on replica 0, weights copied to the
    /// other local replicas. Returns the global loss (on replica 0's device).
    fn train_batch(&mut self, x: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::arg(OP, "an empty batch"));
        }
        let mut c = self.replicas[0]
            .compiled()
            .take()
            .ok_or_else(|| Error::arg(OP, "compile the mirrored model before fit"))?;
        let result = self.step_with(&mut c, x, y, w, n);
        *self.replicas[0].compiled() = Some(c);
        let loss = result?;
        self.broadcast(true, false)?;
        Ok(loss)
    }

    fn step_with(&mut self, c: &mut Compiled, x: &Tensor, y: &Tensor, w: Option<&Tensor>, n: usize) -> Result<Tensor> {
        let vars0 = self.replicas[0].trainable_variables();
        let shapes: Vec<Vec<usize>> = vars0.iter().map(|v| v.shape()).collect();
        let g: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        // One scale for every replica and worker: each worker's optimizer
        // sees the same summed gradients, so their scales move together.
        let loss_scale = c.optimizer.loss_scale()?.unwrap_or(1.0) as f32;
        let local = self.local_parts(c, x, y, w, n, g, loss_scale);
        let cross = self.others().cloned();
        let Some(pred_shape) = self.agree_pred_shape(&local)? else {
            self.agreed_error = cross.is_some();
            return Err(local
                .err()
                .unwrap_or_else(|| Error::arg(OP, "worker 0's first training step failed (its log says why)")));
        };
        let width: usize = pred_shape.iter().product();
        let preds_len = n
            .checked_mul(width)
            .ok_or_else(|| Error::arg(OP, "the batch's predictions overflow usize"))?;
        // [summed gradients | summed loss | failure flag | predictions]
        let mut buf = vec![0.0f32; g + 2 + preds_len];
        let mut offsets = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for s in &shapes {
            let n = s.iter().product::<usize>();
            offsets.push((at, n));
            at += n;
        }
        let local = local.and_then(|parts| fill(&mut buf, parts, &offsets, width));
        let failed = local.err();
        if failed.is_some() {
            buf.fill(0.0);
            buf[g + 1] = 1.0;
        }
        match &cross {
            None => {
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            Some(cl) => {
                let mut all = vec![0.0f32; buf.len()];
                cl.comm.sum_f32(&buf, &mut all)?;
                buf = all;
                if buf[g + 1] != 0.0 {
                    self.agreed_error = true;
                    return Err(failed.unwrap_or_else(|| {
                        Error::arg(OP, "a training step failed on another worker (its log says why)")
                    }));
                }
            }
        }
        let d0 = &self.devices[0];
        let grads: Vec<Option<Tensor>> = unflat(&buf[..g], &shapes, d0)?.into_iter().map(Some).collect();
        c.optimizer.apply_gradients(&grads, &vars0)?;
        let loss = Tensor::scalar(buf[g] / loss_scale, d0)?;
        let mut pshape = vec![n];
        pshape.extend(&pred_shape);
        let pred = Tensor::from_slice(&buf[g + 2..], &pshape, d0)?;
        let y0 = y.to_device(d0)?;
        without_recording(|| -> Result<()> {
            // Weighted by the batch size, as one model's step does.
            c.loss_tracker.update(&loss.broadcast_to(&[n])?)?;
            let w0 = w.map(|w| w.to_device(d0)).transpose()?;
            update_metrics(&mut c.metrics, &mut c.weighted_metrics, &y0, &pred, w0.as_ref())
        })?;
        Ok(loss)
    }

    /// `model.fit(x, y, ...)` with each global batch of `args.batch_size`
    /// split across the replicas of every worker. Across workers every
    /// worker passes the same data, arguments and seed; worker 0 alone
    /// prints and writes files. An error on one worker that the others
    /// cannot see (a checkpoint that failed to write, a lost device) ends
    /// the whole job with MPI's abort: the others would wait for it forever.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, args: FitArgs) -> Result<History> {
        let total = self.span().1;
        if args.batch_size < total {
            return Err(Error::arg(
                OP,
                format!(
                    "the global batch size {} is smaller than the {total} replicas",
                    args.batch_size
                ),
            ));
        }
        if self.replicas[0].compiled().is_none() {
            return Err(Error::arg(OP, "compile the mirrored model before fit"));
        }
        let (ds, epoch) = epoch_batches(x, y, &args)?;
        let vars = self.replicas[0].named_variables();
        self.agreed_error = false;
        let batch_size = args.batch_size;
        let r = fit_loop(
            &mut Fitting {
                m: self,
                batch_size,
                epoch,
            },
            &ds,
            args,
            vars,
        );
        if let Err(e) = &r {
            self.abort_unless_agreed(e);
        }
        r
    }

    /// Ends the job when `e` happened on this worker alone.
    fn abort_unless_agreed(&self, e: &Error) {
        if let Some(c) = self.others() {
            if !self.agreed_error {
                // One write: mpirun forwards stderr in the pieces it reads,
                // and its own abort notice would land inside a split line.
                let line = format!(
                    "wgflow: worker {}: {e}; ending the job (the other workers would wait for this one forever)\n",
                    c.comm.rank()
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
                c.comm.abort(1);
            }
        }
    }

    /// `model.evaluate(x, y, batch_size)` on replica 0 after averaging the
    /// replicas' non-trainable statistics. Across workers every worker
    /// evaluates all of `x` (and gets the same logs).
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs> {
        self.sync_on_read()?;
        self.replicas[0].evaluate(x, y, batch_size)
    }

    /// `model.evaluate(x, y, batch_size, sample_weight=w)` on replica 0
    /// (see [`Model::evaluate_weighted`]).
    pub fn evaluate_weighted(&mut self, x: &Tensor, y: &Tensor, w: &Tensor, batch_size: usize) -> Result<Logs> {
        self.sync_on_read()?;
        self.replicas[0].evaluate_weighted(x, y, w, batch_size)
    }

    /// `model.predict(x, batch_size)`: each batch split across this
    /// process's replicas, the parts concatenated on replica 0's device.
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

/// Sums the parts' gradients and losses into `buf`'s
/// `[gradients (at `offsets`) | loss]` and puts each part's predictions at
/// its rows, bucket by bucket as their reads finish (every replica's
/// bucket k before any bucket k+1, each element summed in replica order).
fn fill(buf: &mut [f32], mut parts: Vec<Part>, offsets: &[(usize, usize)], width: usize) -> Result<()> {
    let g = offsets.last().map_or(0, |&(at, n)| at + n);
    loop {
        let mut any = false;
        for Part {
            lo,
            hi,
            pred_shape,
            buckets,
        } in parts.iter_mut()
        {
            let Some((outputs, reading)) = buckets.pop_front() else {
                continue;
            };
            any = true;
            for (k, v) in outputs.into_iter().zip(reading.finish()?) {
                let (at, want, add) = match k {
                    0 => (g, 1, true),
                    1 => (g + 2 + *lo * width, (*hi - *lo) * width, false),
                    k => {
                        let &(at, n) = offsets.get(k - 2).ok_or_else(|| {
                            Error::arg(OP, "replicas disagree: a replica returned too many gradients")
                        })?;
                        (at, n, true)
                    }
                };
                if v.len() != want {
                    return Err(Error::shape(
                        "MirroredStrategy.fit",
                        &[pred_shape],
                        format!("a replica's output {k} holds {} values, {want} expected", v.len()),
                    ));
                }
                let dst = &mut buf[at..at + want];
                if add {
                    add_into(dst, &v);
                } else {
                    dst.copy_from_slice(&v);
                }
            }
        }
        if !any {
            return Ok(());
        }
    }
}

/// Parses `[count, (rank, dims...)...]` into shapes (a short or broken
/// description ends the list).
fn parse_shapes(desc: &[u64]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let count = desc.first().copied().unwrap_or(0);
    let mut at = 1;
    for _ in 0..count {
        let Some(&rank) = desc.get(at) else { break };
        let rank = rank as usize;
        let Some(dims) = desc.get(at + 1..at + 1 + rank) else {
            break;
        };
        out.push(dims.iter().map(|&d| d as usize).collect());
        at += 1 + rank;
    }
    out
}

/// A mirrored model inside `fit`.
struct Fitting<'a, M: Model> {
    m: &'a mut Mirrored<M>,
    batch_size: usize,
    /// The shuffle's epoch.
    epoch: Arc<AtomicU64>,
}

impl<M: Model> FitTarget for Fitting<'_, M> {
    fn begin_epoch(&mut self, epoch: usize) {
        self.epoch.store(epoch as u64, Ordering::Relaxed);
    }
    fn compiled(&mut self) -> &mut Option<Compiled> {
        self.m.replicas[0].compiled()
    }
    fn step(&mut self, batch: Vec<Tensor>) -> Result<Tensor> {
        match batch.as_slice() {
            [x, y] => self.m.train_batch(x, y, None),
            [x, y, w] => self.m.train_batch(x, y, Some(w)),
            _ => Err(Error::arg(
                OP,
                format!(
                    "dataset elements need (x, y) or (x, y, sample_weight), got {} tensors",
                    batch.len()
                ),
            )),
        }
    }
    fn validate(&mut self, x: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Result<Logs> {
        match w {
            None => self.m.evaluate(x, y, self.batch_size),
            Some(w) => self.m.evaluate_weighted(x, y, w, self.batch_size),
        }
    }
    fn restored(&mut self, initial_epoch: Option<usize>) -> Result<()> {
        if let Some(c) = self.m.others().cloned() {
            let all = c.comm.gather_u64(initial_epoch.map_or(u64::MAX, |e| e as u64))?;
            if all.iter().any(|&e| e != all[0]) {
                self.m.agreed_error = true;
                let what: Vec<String> = all
                    .iter()
                    .enumerate()
                    .map(|(w, &e)| match e {
                        u64::MAX => format!("worker {w} found no backup"),
                        e => format!("worker {w} resumes at epoch {}", e + 1),
                    })
                    .collect();
                return Err(Error::arg(
                    OP,
                    format!(
                        "the workers disagree on where to resume ({}): BackupAndRestore's backup_dir must be one directory that every worker reads",
                        what.join(", ")
                    ),
                ));
            }
        }
        if initial_epoch.is_some() {
            // A restored replica 0 (worker 0's) is copied to the others.
            self.m.copy_first_to_all()?;
        }
        Ok(())
    }
    fn stop(&mut self, stop: bool) -> Result<bool> {
        match self.m.others() {
            None => Ok(stop),
            Some(c) => {
                let mut v = [u64::from(stop)];
                c.comm.max_u64(&mut v)?;
                Ok(v[0] != 0)
            }
        }
    }
    fn worker(&self) -> usize {
        self.m.cluster.as_ref().map_or(0, |c| c.comm.rank())
    }
}
