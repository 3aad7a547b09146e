//! Training a model of several outputs (Keras' `compile(loss=[...],
//! loss_weights=[...], metrics=[[...], [...]])`): each output has its
//! loss, weight and metrics; the step minimizes the weighted sum and
//! reports it as "loss", each output's own loss as `<output>_loss` and its
//! metrics as `<output>_<metric>`, as Keras names them.

use super::losses::Loss;
use super::metrics::{Mean, Metric};
use super::model::{Compiled, Logs, Model, not_compiled, scalar_loss};
use crate::autodiff::{GradientTape, without_recording};
use crate::core::error::{Error, Result};
use crate::data::Dataset;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// One output of a model compiled with [`Model::compile_outputs`].
pub struct Head {
    /// The output's name in the logs (its layer's name, as Keras).
    pub name: String,
    /// Its loss; `None` for the first output, whose loss is
    /// [`Compiled::loss`].
    pub(crate) loss: Option<Box<dyn Loss>>,
    /// Keras' `loss_weights` entry (1 by default).
    pub weight: f64,
    /// Its metrics, reported as `<name>_<metric>`.
    pub metrics: Vec<Box<dyn Metric>>,
    pub(crate) tracker: Mean,
}

impl Head {
    pub(crate) fn new(name: String, loss: Option<Box<dyn Loss>>, weight: f64, metrics: Vec<Box<dyn Metric>>) -> Head {
        let tracker = Mean::new(&format!("{name}_loss"));
        Head {
            name,
            loss,
            weight,
            metrics,
            tracker,
        }
    }
}

/// The losses of each output of `c` (the first is `c.loss`).
fn loss_of<'a>(c: &'a Compiled, k: usize) -> Result<&'a dyn Loss> {
    match c.heads.get(k).and_then(|h| h.loss.as_deref()) {
        Some(l) => Ok(l),
        None if k == 0 => Ok(c.loss.as_ref()),
        None => Err(Error::arg("fit", format!("output {k} has no loss"))),
    }
}

/// The weighted sum of the outputs' losses (reported, minimized) and each
/// output's reported loss.
fn total_loss(
    c: &Compiled,
    ys: &[Tensor],
    preds: &[Tensor],
    w: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
    let outputs = c.heads.len().max(1);
    if ys.len() != outputs || preds.len() != outputs {
        return Err(Error::arg(
            "fit",
            format!(
                "the model gives {} outputs and is compiled for {outputs}; {} targets given",
                preds.len(),
                ys.len()
            ),
        ));
    }
    let mut parts = Vec::with_capacity(outputs);
    let mut total: Option<(Tensor, Tensor)> = None;
    for (k, (y, p)) in ys.iter().zip(preds).enumerate() {
        let (l, o) = scalar_loss(loss_of(c, k)?.call_weighted(y, p, w)?)?;
        let weight = c.heads.get(k).map_or(1.0, |h| h.weight);
        let (lw, ow) = (l.mul_scalar(weight)?, o.mul_scalar(weight)?);
        total = Some(match total {
            None => (lw, ow),
            Some((a, b)) => (a.add(&lw)?, b.add(&ow)?),
        });
        parts.push(l);
    }
    let (l, o) = total.ok_or_else(|| Error::arg("fit", "a model without outputs"))?;
    Ok((l, o, parts))
}

/// Each output's loss and metrics updated with one batch of `n` examples
/// (weights `w`).
fn track(
    c: &mut Compiled,
    ys: &[Tensor],
    preds: &[Tensor],
    parts: &[Tensor],
    n: usize,
    w: Option<&Tensor>,
) -> Result<()> {
    if c.heads.is_empty() {
        return super::model::update_metrics(&mut c.metrics, &mut c.weighted_metrics, &ys[0], &preds[0], w);
    }
    for (((h, y), p), l) in c.heads.iter_mut().zip(ys).zip(preds).zip(parts) {
        h.tracker.update(&l.broadcast_to(&[n])?)?;
        for m in h.metrics.iter_mut() {
            m.update_state(y, p)?;
        }
    }
    Ok(())
}

/// Starts the outputs' losses and metrics over.
pub(crate) fn reset(c: &mut Compiled) {
    for h in c.heads.iter_mut() {
        h.tracker.reset_state();
        for m in h.metrics.iter_mut() {
            m.reset_state();
        }
    }
}

/// The outputs' logs: every `<output>_loss`, then every `<output>_<metric>`;
/// for one output, its metrics under their own names (as Keras logs a
/// model of one output compiled with lists).
pub(crate) fn logs(c: &Compiled) -> Result<Logs> {
    if let [h] = c.heads.as_slice() {
        return h
            .metrics
            .iter()
            .map(|m| Ok((m.name().to_string(), m.result()?)))
            .collect();
    }
    let mut logs = Vec::new();
    for h in &c.heads {
        logs.push((format!("{}_loss", h.name), h.tracker.result()?));
    }
    for h in &c.heads {
        for m in &h.metrics {
            logs.push((format!("{}_{}", h.name, m.name()), m.result()?));
        }
    }
    Ok(logs)
}

/// The training step of a model of several inputs or outputs: one forward
/// pass, the weighted sum of the losses, one optimizer update.
pub(crate) fn train_step<M: Model>(m: &mut M, xs: &[Tensor], ys: &[Tensor], w: Option<&Tensor>) -> Result<Tensor> {
    let mut c = m.compiled().take().ok_or_else(not_compiled)?;
    let r = (|| {
        let tape = GradientTape::new();
        let preds = m.call_many(xs, true)?;
        let (loss, objective, parts) = total_loss(&c, ys, &preds, w)?;
        let scaled = c.optimizer.scale_loss(&objective)?;
        let vars = m.trainable_variables();
        let refs: Vec<&Variable> = vars.iter().collect();
        let grads = tape.gradient(&scaled, &refs)?;
        drop(tape);
        c.optimizer.apply_gradients(&grads, &vars)?;
        without_recording(|| -> Result<()> {
            let n = xs.first().and_then(|x| x.shape().first()).copied().unwrap_or(1);
            c.loss_tracker.update(&loss.broadcast_to(&[n])?)?;
            track(&mut c, ys, &preds, &parts, n, w)
        })?;
        Ok(loss)
    })();
    *m.compiled() = Some(c);
    r
}

/// [`Model::evaluate_many`]: the weighted loss, each output's loss and
/// metrics, in inference mode on `device`.
pub(crate) fn evaluate<M: Model>(
    m: &mut M,
    xs: &[Tensor],
    ys: &[Tensor],
    w: Option<&Tensor>,
    batch_size: usize,
    device: &Device,
) -> Result<Logs> {
    let eager = m.run_eagerly();
    let (ni, no) = (xs.len(), ys.len());
    let mut data = xs.to_vec();
    data.extend(ys.iter().cloned());
    data.extend(w.cloned());
    let mut c = m.compiled().take().ok_or_else(not_compiled)?;
    let r = (|| {
        c.test_loss.reset_state();
        reset(&mut c);
        super::model::reset_metrics(&mut c.metrics, &mut c.weighted_metrics);
        let mut traced = std::mem::replace(&mut c.test_many_function, crate::function::Traced::new("test_step"));
        let ds = Dataset::from_tensor_slices(&data)?.batch(batch_size, false)?;
        let run = (|| -> Result<()> {
            for b in ds.iter()? {
                let args = b?.iter().map(|t| t.to_device(device)).collect::<Result<Vec<_>>>()?;
                let mut step = |a: &[Tensor]| -> Result<Vec<Tensor>> {
                    without_recording(|| {
                        let (bx, rest) = a.split_at(ni);
                        let (by, bw) = rest.split_at(no.min(rest.len()));
                        let preds = m.call_many(bx, false)?;
                        let (l, _, parts) = total_loss(&c, by, &preds, bw.first())?;
                        let n = bx.first().and_then(|x| x.shape().first()).copied().unwrap_or(1);
                        c.test_loss.update(&l.broadcast_to(&[n])?)?;
                        track(&mut c, by, &preds, &parts, n, bw.first())?;
                        Ok(Vec::new())
                    })
                };
                if eager {
                    step(&args)?;
                } else {
                    traced.call(&args, step)?;
                }
            }
            Ok(())
        })();
        c.test_many_function = traced;
        run?;
        let mut logs = vec![("loss".to_string(), c.test_loss.result()?)];
        logs.extend(logs_of_metrics(&c)?);
        Ok(logs)
    })();
    *m.compiled() = Some(c);
    r
}

/// The metrics of a model of one output (no heads), or the heads' logs.
fn logs_of_metrics(c: &Compiled) -> Result<Logs> {
    if c.heads.is_empty() {
        return super::model::metric_logs(&c.metrics, &c.weighted_metrics);
    }
    logs(c)
}
