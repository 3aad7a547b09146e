//! Keras callbacks (`keras.callbacks`): [`TensorBoard`], [`ModelCheckpoint`],
//! [`EarlyStopping`], [`BackupAndRestore`], and the [`Callback`] trait for
//! your own.
//!
//! [`crate::nn::model::Model::fit`] calls them with the epoch's logs (the
//! loss and [`crate::nn::metrics`], "val_" ones included). They write through
//! [`crate::io::summary`] and [`crate::io::checkpoint`].

use super::model::Logs;
use super::optimizers::Optimizer;
use crate::core::error::{Error, Result};
use crate::io::checkpoint::{Checkpoint, CheckpointManager};
use crate::io::summary::{SummaryWriter, create_file_writer};
use crate::tensor::{Tensor, Variable};
use std::path::PathBuf;

/// Shared state of one `fit` run.
#[derive(Default)]
pub struct TrainContext {
    /// Set by a callback to end training after this epoch.
    pub stop_training: bool,
    /// Set by a callback that restored a run ([`BackupAndRestore`]): the
    /// epoch `fit` starts at (when later than its `initial_epoch`).
    pub initial_epoch: Option<usize>,
    /// This worker's index in a multi-worker job (0 otherwise). Worker 0,
    /// the chief, alone writes files: checkpoints, backups and summaries.
    pub worker: usize,
}

impl TrainContext {
    /// Whether this is the worker that writes files (`task_id == 0`).
    pub fn is_chief(&self) -> bool {
        self.worker == 0
    }
}

/// `keras.callbacks.Callback`: hooks `fit` calls. Every hook defaults to
/// doing nothing; an error from a hook ends `fit` with that error.
pub trait Callback {
    /// Before the first epoch, with the model's named variables (what a
    /// callback that saves or restores weights needs to keep).
    fn on_train_begin(&mut self, _vars: Vec<(String, Variable)>, _ctx: &mut TrainContext) -> Result<()> {
        Ok(())
    }
    /// Right after `on_train_begin`, with the compiled optimizer: where a
    /// callback restores a previous run's state (and may set
    /// `ctx.initial_epoch`).
    fn on_restore(&mut self, _optimizer: Option<&mut Optimizer>, _ctx: &mut TrainContext) -> Result<()> {
        Ok(())
    }
    /// Before each step, with the global step it runs (the optimizer's
    /// iterations before it).
    fn on_train_batch_begin(&mut self, _step: u64, _ctx: &mut TrainContext) -> Result<()> {
        Ok(())
    }
    /// After each step; `loss` is still on the device (reading it syncs).
    fn on_train_batch_end(&mut self, _step: u64, _loss: &Tensor, _ctx: &mut TrainContext) -> Result<()> {
        Ok(())
    }
    /// After each epoch's validation, with its 0-based index, its logs, the
    /// compiled optimizer and the global step. Set `ctx.stop_training` to
    /// end training after this epoch.
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _optimizer: Option<&Optimizer>,
        _step: u64,
        _ctx: &mut TrainContext,
    ) -> Result<()> {
        Ok(())
    }
    /// After the last epoch, including one ended by `stop_training`.
    fn on_train_end(&mut self, _ctx: &mut TrainContext) -> Result<()> {
        Ok(())
    }
}

/// `keras.callbacks.TensorBoard(log_dir)`: epoch metrics as scalars
/// ("epoch_loss", ...) in `log_dir/train` and `log_dir/validation`, and
/// weight histograms every `histogram_freq` epochs (0: never).
pub struct TensorBoard {
    /// Root of the event files; the writers are created at train begin.
    pub log_dir: PathBuf,
    /// Epochs between weight histograms (0, Keras' default: none).
    pub histogram_freq: usize,
    train: Option<SummaryWriter>,
    val: Option<SummaryWriter>,
    vars: Vec<(String, Variable)>,
}

impl TensorBoard {
    /// `TensorBoard(log_dir)`, without histograms.
    pub fn new(log_dir: impl Into<PathBuf>) -> TensorBoard {
        TensorBoard {
            log_dir: log_dir.into(),
            histogram_freq: 0,
            train: None,
            val: None,
            vars: Vec::new(),
        }
    }
    /// Writes a histogram of every weight every `n` epochs (from the first).
    pub fn histogram_freq(mut self, n: usize) -> Self {
        self.histogram_freq = n;
        self
    }
}

impl Callback for TensorBoard {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, ctx: &mut TrainContext) -> Result<()> {
        if !ctx.is_chief() {
            return Ok(());
        }
        self.train = Some(create_file_writer(self.log_dir.join("train"))?);
        self.val = Some(create_file_writer(self.log_dir.join("validation"))?);
        self.vars = vars;
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _o: Option<&Optimizer>,
        _s: u64,
        ctx: &mut TrainContext,
    ) -> Result<()> {
        if !ctx.is_chief() {
            return Ok(());
        }
        let e = epoch as i64;
        let (Some(train), Some(val)) = (self.train.as_mut(), self.val.as_mut()) else {
            return Err(Error::arg(
                "TensorBoard",
                "on_epoch_end before on_train_begin: no writers are open",
            ));
        };
        for (k, v) in logs {
            match k.strip_prefix("val_") {
                Some(k) => val.scalar(&format!("epoch_{k}"), *v, e)?,
                None => train.scalar(&format!("epoch_{k}"), *v, e)?,
            }
        }
        if self.histogram_freq > 0 && epoch % self.histogram_freq == 0 {
            for (n, v) in &self.vars {
                train.histogram(n, &v.peek(), e, 30)?;
            }
        }
        train.flush()?;
        val.flush()
    }
}

/// `keras.callbacks.ModelCheckpoint`: saves the model's weights and the
/// optimizer's state at the end of every epoch (or, with `save_best_only`,
/// when `monitor` improves), keeping the last `max_to_keep`.
///
/// Files are `ckpt-N.safetensors` managed by a [`CheckpointManager`], with
/// the variables tracked under "model"; to resume, build a manager over
/// `Checkpoint::new().track("model", model.named_variables())` and call
/// [`CheckpointManager::restore_latest`] with the optimizer.
pub struct ModelCheckpoint {
    /// Where the checkpoints and their index file go.
    pub directory: PathBuf,
    /// How many checkpoints are kept (5); older files are deleted, as by
    /// `tf.train.CheckpointManager(max_to_keep=5)`.
    pub max_to_keep: usize,
    /// The logged metric `save_best_only` compares ("val_loss"); lower is
    /// better unless its name contains "acc" or "auc" (Keras' `mode="auto"`).
    pub monitor: String,
    /// Save only when `monitor` improves (false: every epoch).
    pub save_best_only: bool,
    best: Option<f64>,
    manager: Option<CheckpointManager>,
}

impl ModelCheckpoint {
    /// `ModelCheckpoint(directory)`: saves every epoch, keeping 5.
    pub fn new(directory: impl Into<PathBuf>) -> ModelCheckpoint {
        ModelCheckpoint {
            directory: directory.into(),
            max_to_keep: 5,
            monitor: "val_loss".into(),
            save_best_only: false,
            best: None,
            manager: None,
        }
    }
    /// Keeps the last `n` checkpoints (at least 1).
    pub fn max_to_keep(mut self, n: usize) -> Self {
        self.max_to_keep = n;
        self
    }
    /// `save_best_only=True, monitor=monitor`: saves only epochs that improve
    /// `monitor` (the first always does). `fit` fails with
    /// [`Error::InvalidArgument`] if the metric is not in the logs (a "val_"
    /// metric needs `validation_data`).
    pub fn save_best_only(mut self, monitor: &str) -> Self {
        self.save_best_only = true;
        self.monitor = monitor.into();
        self
    }
}

fn lower_is_better(monitor: &str) -> bool {
    !(monitor.contains("acc") || monitor.contains("auc"))
}

fn metric(logs: &Logs, name: &str) -> Result<f64> {
    logs.iter().find(|(k, _)| k == name).map(|(_, v)| *v).ok_or_else(|| {
        Error::arg(
            "callback",
            format!(
                "monitored metric {name:?} is not in the logs ({})",
                logs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, _ctx: &mut TrainContext) -> Result<()> {
        let ckpt = Checkpoint::new().track("model", vars);
        self.manager = Some(CheckpointManager::new(ckpt, &self.directory, self.max_to_keep));
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        _e: usize,
        logs: &Logs,
        opt: Option<&Optimizer>,
        step: u64,
        ctx: &mut TrainContext,
    ) -> Result<()> {
        if !ctx.is_chief() {
            return Ok(());
        }
        if self.save_best_only {
            let v = metric(logs, &self.monitor)?;
            let better = match self.best {
                None => true,
                Some(b) => {
                    if lower_is_better(&self.monitor) {
                        v < b
                    } else {
                        v > b
                    }
                }
            };
            if !better {
                return Ok(());
            }
            self.best = Some(v);
        }
        let Some(manager) = self.manager.as_ref() else {
            return Err(Error::arg(
                "ModelCheckpoint",
                "on_epoch_end before on_train_begin: no directory is open",
            ));
        };
        manager.save(step, opt.map(|o| o as &dyn crate::io::checkpoint::OptimizerState))?;
        Ok(())
    }
}

/// `keras.callbacks.BackupAndRestore(backup_dir)`: saves the weights, the
/// optimizer state and the epoch at the end of every epoch; a `fit` that
/// starts while a backup exists (the previous run was interrupted) restores
/// it and resumes at the epoch after the last finished one. A run that
/// completes deletes its backup, as Keras does.
pub struct BackupAndRestore {
    /// Where the backup lives.
    pub backup_dir: PathBuf,
    /// Keep the backup after training ends (Keras' `delete_checkpoint=False`).
    pub keep: bool,
    manager: Option<CheckpointManager>,
}

impl BackupAndRestore {
    /// `BackupAndRestore(backup_dir)`.
    pub fn new(backup_dir: impl Into<PathBuf>) -> BackupAndRestore {
        BackupAndRestore {
            backup_dir: backup_dir.into(),
            keep: false,
            manager: None,
        }
    }
}

impl Callback for BackupAndRestore {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, _ctx: &mut TrainContext) -> Result<()> {
        let ckpt = Checkpoint::new().track("model", vars);
        self.manager = Some(CheckpointManager::new(ckpt, &self.backup_dir, 1));
        Ok(())
    }

    fn on_restore(&mut self, optimizer: Option<&mut Optimizer>, ctx: &mut TrainContext) -> Result<()> {
        let Some(m) = self.manager.as_ref() else {
            return Ok(());
        };
        let opt = optimizer.map(|o| o as &mut dyn crate::io::checkpoint::OptimizerState);
        if let Some(meta) = m.restore_latest(opt)? {
            // The backup's step is the number of finished epochs.
            let epoch = usize::try_from(meta.step).map_err(|_| Error::arg("BackupAndRestore", "a corrupt epoch"))?;
            log::info!(
                "BackupAndRestore: resuming from {} at epoch {}",
                self.backup_dir.display(),
                epoch + 1
            );
            ctx.initial_epoch = Some(epoch);
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        _logs: &Logs,
        opt: Option<&Optimizer>,
        _step: u64,
        ctx: &mut TrainContext,
    ) -> Result<()> {
        if !ctx.is_chief() {
            return Ok(());
        }
        let Some(m) = self.manager.as_ref() else {
            return Err(Error::arg("BackupAndRestore", "on_epoch_end before on_train_begin"));
        };
        m.save(
            epoch as u64 + 1,
            opt.map(|o| o as &dyn crate::io::checkpoint::OptimizerState),
        )?;
        Ok(())
    }

    fn on_train_end(&mut self, ctx: &mut TrainContext) -> Result<()> {
        if ctx.is_chief() && !self.keep && self.backup_dir.exists() {
            std::fs::remove_dir_all(&self.backup_dir).map_err(|e| Error::io(&self.backup_dir, e))?;
        }
        Ok(())
    }
}

/// `keras.callbacks.EarlyStopping(monitor, min_delta, patience, restore_best_weights)`:
/// stops `fit` once `monitor` has not improved for `patience` epochs.
pub struct EarlyStopping {
    /// The logged metric to watch; lower is better unless its name contains
    /// "acc" or "auc" (Keras' `mode="auto"`).
    pub monitor: String,
    /// The least change that counts as an improvement (0).
    pub min_delta: f64,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// On stopping, assign the weights of the best epoch back (false).
    pub restore_best_weights: bool,
    best: Option<f64>,
    wait: usize,
    best_weights: Vec<Tensor>,
    vars: Vec<Variable>,
    /// The epoch at which training stopped, if it did.
    pub stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    /// `EarlyStopping(monitor=monitor, patience=patience)`; Keras' defaults
    /// are "val_loss" and 0. `fit` fails with [`Error::InvalidArgument`] if
    /// `monitor` is not in the logs.
    pub fn new(monitor: &str, patience: usize) -> EarlyStopping {
        EarlyStopping {
            monitor: monitor.into(),
            min_delta: 0.0,
            patience,
            restore_best_weights: false,
            best: None,
            wait: 0,
            best_weights: Vec::new(),
            vars: Vec::new(),
            stopped_epoch: None,
        }
    }
    /// `min_delta`: smaller improvements count as none.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d;
        self
    }
    /// `restore_best_weights`: when stopping, restore the best epoch's
    /// weights instead of keeping the last ones.
    pub fn restore_best_weights(mut self, on: bool) -> Self {
        self.restore_best_weights = on;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, _ctx: &mut TrainContext) -> Result<()> {
        self.vars = vars.into_iter().map(|(_, v)| v).collect();
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _o: Option<&Optimizer>,
        _s: u64,
        ctx: &mut TrainContext,
    ) -> Result<()> {
        let v = metric(logs, &self.monitor)?;
        let improved = match self.best {
            None => true,
            Some(b) => {
                if lower_is_better(&self.monitor) {
                    v < b - self.min_delta
                } else {
                    v > b + self.min_delta
                }
            }
        };
        if improved {
            self.best = Some(v);
            self.wait = 0;
            if self.restore_best_weights {
                // Tensors are immutable: holding them is the snapshot.
                self.best_weights = self.vars.iter().map(|v| v.peek()).collect();
            }
            return Ok(());
        }
        self.wait += 1;
        if self.wait >= self.patience {
            ctx.stop_training = true;
            self.stopped_epoch = Some(epoch);
            if self.restore_best_weights && !self.best_weights.is_empty() {
                for (var, t) in self.vars.iter().zip(&self.best_weights) {
                    var.assign(t)?;
                }
            }
        }
        Ok(())
    }
}
