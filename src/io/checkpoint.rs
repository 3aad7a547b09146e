//! Checkpoints: named variables (and an optimizer's step count and slots)
//! in a safetensors file, with JSON metadata holding the format, the step
//! and a CRC32C of every tensor. Saving writes a temporary file and renames
//! it; restoring checks everything (every name present and expected, shapes,
//! dtypes, CRCs) before it assigns anything, so a bad file leaves the
//! variables as they were.
//!
//! Names are structural paths ("model/layers/0/kernel"), not Keras layer
//! names, so a model built again in another process restores by position;
//! optimizer slots are "optimizer/`<variable path>`/`<slot>`".
//!
//! [`CheckpointManager`] numbers and prunes the files of one directory the
//! way `tf.train.CheckpointManager` does; `nn::callbacks::ModelCheckpoint`
//! uses it from `fit`, and `nn::optimizers::Optimizer` implements
//! [`OptimizerState`]. TensorBoard files are in [`crate::io::summary`].

use super::{io_err, write_atomic};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::runtime::cpu::CpuData;
use crate::tensor::{Tensor, Variable};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const FORMAT: &str = "wgflow-checkpoint-1";

/// A tensor of a file being restored: dtype, shape, bytes.
type Found = (DType, Vec<usize>, Vec<u8>);

/// A set of named variables to save and restore together (`tf.train.Checkpoint`).
#[derive(Clone, Default)]
pub struct Checkpoint {
    vars: Vec<(String, Variable)>,
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::Bool => Dtype::BOOL,
    }
}

fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t.to_data()? {
        CpuData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        d => d.to_bytes(),
    })
}

fn from_bytes(dtype: DType, shape: &[usize], b: &[u8]) -> CpuData {
    let n: usize = shape.iter().product();
    match dtype {
        DType::Bool => CpuData::Bool(b.iter().map(|&x| x != 0).collect()),
        _ => CpuData::from_bytes(dtype, n, b),
    }
}

/// What a checkpoint file holds besides the tensors, as
/// [`Checkpoint::restore`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// The `step` passed to [`Checkpoint::save`] (0 in a file without one).
    pub step: u64,
    /// The optimizer's step count, `None` when saved without an optimizer.
    pub optimizer_iterations: Option<u64>,
    /// A `LossScaleOptimizer`'s scale and finite steps since it changed.
    pub loss_scale: Option<(f64, u64)>,
}

impl Checkpoint {
    /// An empty checkpoint; add variables with [`Checkpoint::track`].
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// Tracks `vars` (path, variable) under `prefix`: "model" with
    /// `Model::named_variables` gives "model/layers/0/kernel", ... The
    /// variables are shared, not copied: a restore assigns the caller's
    /// variables.
    pub fn track(mut self, prefix: &str, vars: Vec<(String, Variable)>) -> Checkpoint {
        for (n, v) in vars {
            self.vars.push((format!("{prefix}/{n}"), v));
        }
        self
    }

    /// The tracked names, in tracking order: the tensor names a saved file
    /// holds besides optimizer slots.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// `checkpoint.write(path)`: writes the variables (and, with `optimizer`,
    /// its iterations and the slots it has created) to `path`, creating the
    /// parent directory; `step` is stored in the metadata.
    ///
    /// Returns [`Error::Io`] when the file cannot be written; the previous
    /// file at `path`, if any, is then left intact.
    pub fn save(&self, path: &Path, step: u64, optimizer: Option<&dyn OptimizerState>) -> Result<()> {
        let mut items: Vec<(String, Tensor)> = self.vars.iter().map(|(n, v)| (n.clone(), v.peek())).collect();
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("step".into(), step.to_string());
        if let Some(opt) = optimizer {
            meta.insert("optimizer_iterations".into(), opt.iterations().to_string());
            if let Some((scale, good)) = opt.loss_scale_state()? {
                meta.insert("optimizer_loss_scale".into(), scale.to_string());
                meta.insert("optimizer_loss_scale_steps".into(), good.to_string());
            }
            for (n, v) in &self.vars {
                if let Some(slots) = opt.existing_slots(v) {
                    for (s, name) in slots.iter().zip(opt.slot_names()) {
                        items.push((format!("optimizer/{n}/{name}"), s.peek()));
                    }
                }
            }
        }
        let mut data: Vec<(String, Vec<u8>, Vec<usize>, DType)> = Vec::new();
        for (n, t) in &items {
            let b = host_bytes(t)?;
            meta.insert(format!("crc32c/{n}"), format!("{:08x}", crc32c::crc32c(&b)));
            data.push((n.clone(), b, t.shape().to_vec(), t.dtype()));
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, b, s, d)| {
                Ok((
                    n.clone(),
                    TensorView::new(st_dtype(*d), s.clone(), b).map_err(|e| io_err(path, e))?,
                ))
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::tensor::serialize(views, Some(meta)).map_err(|e| io_err(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_atomic(path, &bytes)
    }

    /// `checkpoint.read(path)`: reads and checks `path`, then assigns every
    /// variable (and, with `optimizer`, its slots and iterations) on the
    /// variables' own devices. Slots absent from the file are left as they
    /// are.
    ///
    /// Returns [`Error::Io`] for an unreadable or non-wgflow file, a CRC
    /// mismatch, a missing or extra variable, or a dtype or shape that
    /// differs from the model's. On any error nothing is assigned.
    pub fn restore(&self, path: &Path, mut optimizer: Option<&mut dyn OptimizerState>) -> Result<Meta> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::format(path, msg);
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("corrupt safetensors data: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "not a wgflow checkpoint (format {:?})",
                meta.get("format")
            )));
        }
        let num = |k: &str| -> Result<Option<u64>> {
            meta.get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("metadata {k}={v:?} is not a number")))
                })
                .transpose()
        };
        let loss_scale = match meta.get("optimizer_loss_scale") {
            None => None,
            Some(v) => {
                let scale = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| bad(format!("metadata optimizer_loss_scale={v:?} is not a positive number")))?;
                Some((scale, num("optimizer_loss_scale_steps")?.unwrap_or(0)))
            }
        };
        let info = Meta {
            step: num("step")?.unwrap_or(0),
            optimizer_iterations: num("optimizer_iterations")?,
            loss_scale,
        };
        // Check every tensor of the file against its CRC first.
        let mut found: BTreeMap<String, Found> = BTreeMap::new();
        for (name, view) in st.tensors() {
            let want = meta
                .get(&format!("crc32c/{name}"))
                .ok_or_else(|| bad(format!("tensor {name} has no CRC")))?;
            let got = format!("{:08x}", crc32c::crc32c(view.data()));
            if &got != want {
                return Err(bad(format!("tensor {name} is corrupt (CRC32C {got}, expected {want})")));
            }
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::F64 => DType::F64,
                Dtype::BF16 => DType::BF16,
                Dtype::I32 => DType::I32,
                Dtype::BOOL => DType::Bool,
                d => return Err(bad(format!("tensor {name} has unsupported dtype {d:?}"))),
            };
            found.insert(name, (dtype, view.shape().to_vec(), view.data().to_vec()));
        }
        // Then that it holds exactly what this checkpoint tracks.
        let mut plan: Vec<(&Variable, Tensor)> = Vec::new();
        for (n, v) in &self.vars {
            let Some((dt, shape, data)) = found.get(n) else {
                return Err(bad(format!(
                    "variable {n} is missing: the checkpoint is from another model"
                )));
            };
            if *dt != v.dtype() || *shape != v.shape() {
                return Err(bad(format!(
                    "variable {n} is {dt} {shape:?} in the file but {} {:?} in the model",
                    v.dtype(),
                    v.shape()
                )));
            }
            plan.push((v, Tensor::from_data(from_bytes(*dt, shape, data), shape, &v.device())?));
        }
        let known: Vec<&String> = self.vars.iter().map(|(n, _)| n).collect();
        if let Some(extra) = found
            .keys()
            .find(|k| !k.starts_with("optimizer/") && !known.contains(k))
        {
            return Err(bad(format!(
                "the file has variable {extra} that this model lacks: the checkpoint is from another model"
            )));
        }
        // Slots pair with the optimizer's by name: all of a variable's
        // slots, or none of them (a fresh optimizer state), each of the
        // variable's shape and dtype.
        let mut slot_plan: Vec<(Variable, Vec<Tensor>)> = Vec::new();
        if let Some(opt) = optimizer.as_deref() {
            let names = opt.slot_names();
            let used = &names[..opt.slot_count().min(names.len())];
            for (n, v) in &self.vars {
                let stored: Vec<Option<&Found>> =
                    used.iter().map(|s| found.get(&format!("optimizer/{n}/{s}"))).collect();
                if stored.iter().all(Option::is_none) {
                    continue;
                }
                let mut ts = Vec::with_capacity(used.len());
                for (s, entry) in used.iter().zip(stored) {
                    let Some((dt, shape, data)) = entry else {
                        let have: Vec<&str> = used
                            .iter()
                            .filter(|s| found.contains_key(&format!("optimizer/{n}/{s}")))
                            .copied()
                            .collect();
                        return Err(bad(format!(
                            "optimizer slot {n}/{s} is missing while the file has {n}'s slots [{}]: the optimizer \
                             needs all of [{}] or none",
                            have.join(", "),
                            used.join(", ")
                        )));
                    };
                    if *shape != v.shape() || *dt != v.dtype() {
                        return Err(bad(format!(
                            "optimizer slot {n}/{s} is {dt} {shape:?} in the file, not {} {:?} as its variable",
                            v.dtype(),
                            v.shape()
                        )));
                    }
                    ts.push(Tensor::from_data(from_bytes(*dt, shape, data), shape, &v.device())?);
                }
                slot_plan.push((v.clone(), ts));
            }
        }
        // The optimizer's slots (made where it has none yet), checked
        // against the plan before anything is assigned.
        let mut slot_assigns: Vec<(Variable, Tensor)> = Vec::new();
        if let Some(opt) = optimizer.as_deref_mut() {
            for (v, ts) in slot_plan {
                let slots = opt.slots_of(&v)?;
                if slots.len() != ts.len() {
                    return Err(bad(format!(
                        "the optimizer has {} slots for {}, not the {} of its slot_count",
                        slots.len(),
                        v.name(),
                        ts.len()
                    )));
                }
                slot_assigns.extend(slots.into_iter().zip(ts));
            }
        }
        // Everything checked: assign.
        for (v, t) in plan {
            v.assign(&t)?;
        }
        for (s, t) in slot_assigns {
            s.assign(&t)?;
        }
        if let Some(opt) = optimizer {
            if let Some(it) = info.optimizer_iterations {
                opt.set_iterations(it);
            }
            if let Some((scale, good)) = info.loss_scale {
                opt.set_loss_scale_state(scale, good)?;
            }
        }
        Ok(info)
    }
}

/// What a checkpoint saves of an optimizer beside the variables: its step
/// count and its slots (`nn::optimizers::Optimizer` implements it).
pub trait OptimizerState {
    /// Steps taken so far.
    fn iterations(&self) -> u64;
    /// Sets the step count (a restore).
    fn set_iterations(&mut self, n: u64);
    /// Slot names, in the order `slots_of` returns them.
    fn slot_names(&self) -> &'static [&'static str];
    /// How many slots each variable has: the first `slot_count` of
    /// `slot_names` (SGD without momentum has none).
    fn slot_count(&self) -> usize {
        self.slot_names().len()
    }
    /// Existing slots of `var`, if the optimizer has stepped it.
    fn existing_slots(&self, var: &Variable) -> Option<&[Variable]>;
    /// The slots of `var` (created zero if missing).
    fn slots_of(&mut self, var: &Variable) -> Result<Vec<Variable>>;
    /// Dynamic loss scaling's state, the scale and the finite steps since it
    /// last changed (`None` without loss scaling).
    fn loss_scale_state(&self) -> Result<Option<(f64, u64)>> {
        Ok(None)
    }
    /// Restores [`OptimizerState::loss_scale_state`].
    fn set_loss_scale_state(&mut self, _scale: f64, _good_steps: u64) -> Result<()> {
        Ok(())
    }
}

/// `tf.train.CheckpointManager`: keeps the last `max_to_keep` checkpoints
/// `ckpt-N.safetensors` (N counting up from 1) in a directory, with
/// TensorFlow's `checkpoint` index file naming the latest.
pub struct CheckpointManager {
    /// Where the checkpoints and the index file are written.
    pub directory: PathBuf,
    /// How many files `save` keeps; older ones are deleted (at least 1).
    pub max_to_keep: usize,
    checkpoint: Checkpoint,
}

impl CheckpointManager {
    /// `tf.train.CheckpointManager(checkpoint, directory, max_to_keep)`;
    /// `max_to_keep` 0 is taken as 1 (TF's `None`, keep all, has no
    /// equivalent). Touches no file until the first `save`.
    pub fn new(checkpoint: Checkpoint, directory: impl AsRef<Path>, max_to_keep: usize) -> CheckpointManager {
        CheckpointManager {
            directory: directory.as_ref().to_path_buf(),
            max_to_keep: max_to_keep.max(1),
            checkpoint,
        }
    }

    /// The checkpoint this manager saves and restores.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Every checkpoint in the directory, oldest first.
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        list(&self.directory).into_iter().map(|(_, p)| p).collect()
    }

    /// `manager.latest_checkpoint`: see [`latest_checkpoint`].
    pub fn latest_checkpoint(&self) -> Option<PathBuf> {
        latest_checkpoint(&self.directory)
    }

    /// `manager.save()`: saves the next numbered checkpoint (the number
    /// counts files, independent of `step`), prunes the oldest beyond
    /// `max_to_keep` and rewrites the index; returns the new file's path.
    ///
    /// Returns [`Error::Io`] if a file cannot be written or deleted.
    pub fn save(&self, step: u64, optimizer: Option<&dyn OptimizerState>) -> Result<PathBuf> {
        let n = list(&self.directory).last().map_or(1, |(n, _)| n + 1);
        let path = self.directory.join(format!("ckpt-{n}.safetensors"));
        self.checkpoint.save(&path, step, optimizer)?;
        let all = list(&self.directory);
        let keep = &all[all.len().saturating_sub(self.max_to_keep)..];
        for (_, p) in &all[..all.len() - keep.len()] {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
        let mut index = format!("model_checkpoint_path: \"ckpt-{n}.safetensors\"\n");
        for (k, _) in keep {
            index += &format!("all_model_checkpoint_paths: \"ckpt-{k}.safetensors\"\n");
        }
        write_atomic(&self.directory.join("checkpoint"), index.as_bytes())?;
        Ok(path)
    }

    /// `checkpoint.restore(manager.latest_checkpoint)`: restores the latest
    /// checkpoint if there is one and returns its metadata; `Ok(None)` for a
    /// fresh directory, so training starts from scratch.
    ///
    /// Errors are those of [`Checkpoint::restore`].
    pub fn restore_latest(&self, optimizer: Option<&mut dyn OptimizerState>) -> Result<Option<Meta>> {
        match self.latest_checkpoint() {
            Some(p) => self.checkpoint.restore(&p, optimizer).map(Some),
            None => Ok(None),
        }
    }
}

fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// `tf.train.latest_checkpoint(dir)`: the file the index names, or else the
/// highest-numbered checkpoint present.
pub fn latest_checkpoint(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    if let Ok(index) = std::fs::read_to_string(dir.join("checkpoint")) {
        let named = index.lines().find_map(|l| {
            l.strip_prefix("model_checkpoint_path: \"")?
                .strip_suffix('"')
                .map(String::from)
        });
        if let Some(p) = named.map(|n| dir.join(n)).filter(|p| p.exists()) {
            return Some(p);
        }
    }
    list(dir).pop().map(|(_, p)| p)
}
