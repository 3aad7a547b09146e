//! The models served and their versions: numbered folders under each base
//! path, polled; a new version is loaded before the one it replaces is
//! unloaded, a failed load is reported in the version's status while the
//! old version keeps serving, and a folder still being copied in (its files
//! changing between polls) is tried again.

use super::config::{BatchingParameters, ModelConfig};
use super::servable::Servable;
use super::status::{Code, Status};
use crate::runtime::Device;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// A version's state, as `ModelVersionStatus.State` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Found, not yet loading.
    Start,
    /// Loading.
    Loading,
    /// Serving.
    Available,
    /// Being unloaded.
    Unloading,
    /// Unloaded, or failed to load.
    End,
}

impl State {
    /// The enum name.
    pub fn name(self) -> &'static str {
        match self {
            State::Start => "START",
            State::Loading => "LOADING",
            State::Available => "AVAILABLE",
            State::Unloading => "UNLOADING",
            State::End => "END",
        }
    }

    /// The enum number.
    pub fn number(self) -> i32 {
        match self {
            State::Start => 10,
            State::Loading => 20,
            State::Available => 30,
            State::Unloading => 40,
            State::End => 50,
        }
    }
}

/// One version's slot.
struct Slot {
    state: State,
    status: Status,
    servable: Option<Arc<Servable>>,
    /// The folder's files when a load failed: retried once they change.
    failed_at: Option<u64>,
}

struct Model {
    config: ModelConfig,
    versions: BTreeMap<u64, Slot>,
}

/// A version's reported status.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// The version.
    pub version: u64,
    /// Its state.
    pub state: State,
    /// OK, or why it failed.
    pub status: Status,
}

/// Which version a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The newest available.
    Latest,
    /// This one (as a request gives it: negative versions find nothing).
    Version(i64),
    /// The one a label names.
    Label(String),
}

/// Every model and version.
pub struct Manager {
    models: RwLock<BTreeMap<String, Model>>,
    device: Device,
    batching: Option<BatchingParameters>,
    warmup: bool,
}

impl Manager {
    /// A manager of `models` (nothing loaded until the first poll).
    pub fn new(
        models: Vec<ModelConfig>,
        device: Device,
        batching: Option<BatchingParameters>,
        warmup: bool,
    ) -> Manager {
        let models = models
            .into_iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Model {
                        config: c,
                        versions: BTreeMap::new(),
                    },
                )
            })
            .collect();
        Manager {
            models: RwLock::new(models),
            device,
            batching,
            warmup,
        }
    }

    /// Takes a re-read model config: new models are added (loaded on the
    /// next poll), changed ones take their new policy and labels, and
    /// models no longer listed are unloaded.
    pub fn reconfigure(&self, list: Vec<ModelConfig>) {
        let mut models = self.write();
        models.retain(|name, _| {
            let keep = list.iter().any(|c| &c.name == name);
            if !keep {
                log::info!("model {name} is no longer configured; unloading it");
            }
            keep
        });
        for c in list {
            match models.get_mut(&c.name) {
                Some(m) => m.config = c,
                None => {
                    log::info!("model {} added from the config", c.name);
                    models.insert(
                        c.name.clone(),
                        Model {
                            config: c,
                            versions: BTreeMap::new(),
                        },
                    );
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Model>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Model>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` is a configured model.
    pub fn knows(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The servable a request names, or TF Serving's NOT_FOUND.
    pub fn resolve(&self, name: &str, want: &Want) -> Result<Arc<Servable>, Status> {
        let models = self.read();
        let m = models.get(name).ok_or_else(|| {
            Status::not_found(match want {
                Want::Latest => format!("Servable not found for request: Latest({name})"),
                Want::Version(v) => format!("Servable not found for request: Specific({name}, {v})"),
                Want::Label(l) => format!("Servable not found for request: Specific({name}, label: {l})"),
            })
        })?;
        let version = match want {
            Want::Latest => m
                .versions
                .iter()
                .rev()
                .find(|(_, s)| s.state == State::Available)
                .map(|(v, _)| *v)
                .ok_or_else(|| Status::not_found(format!("Servable not found for request: Latest({name})")))?,
            Want::Version(v) => u64::try_from(*v)
                .map_err(|_| Status::not_found(format!("Servable not found for request: Specific({name}, {v})")))?,
            Want::Label(l) => *m
                .config
                .labels
                .get(l)
                .ok_or_else(|| Status::invalid(format!("Unrecognized servable version label: {l}")))?,
        };
        m.versions
            .get(&version)
            .filter(|s| s.state == State::Available)
            .and_then(|s| s.servable.clone())
            .ok_or_else(|| Status::not_found(format!("Servable not found for request: Specific({name}, {version})")))
    }

    /// `GetModelStatus` (TF Serving's `GetModelStatusWithModelSpec`): one
    /// version when the request gives a version, else every version known,
    /// newest first (a label is not looked at there).
    pub fn status(&self, name: &str, want: &Want) -> Result<Vec<VersionStatus>, Status> {
        let models = self.read();
        let m = models.get(name);
        let report = |v: &u64, s: &Slot| VersionStatus {
            version: *v,
            state: s.state,
            status: s.status.clone(),
        };
        if let Want::Version(v) = want {
            return u64::try_from(*v)
                .ok()
                .and_then(|u| m.and_then(|m| m.versions.get_key_value(&u)))
                .map(|(u, s)| vec![report(u, s)])
                .ok_or_else(|| Status::not_found(format!("Could not find version {v} of model {name}")));
        }
        let all: Vec<VersionStatus> = m
            .map(|m| m.versions.iter().rev().map(|(v, s)| report(v, s)).collect())
            .unwrap_or_default();
        if all.is_empty() {
            return Err(Status::not_found(format!(
                "Could not find any versions of model {name}"
            )));
        }
        Ok(all)
    }

    /// One pass over every model's base path.
    pub fn poll(&self) {
        let configs: Vec<ModelConfig> = self.read().values().map(|m| m.config.clone()).collect();
        for c in configs {
            self.poll_model(&c);
        }
    }

    fn set(&self, name: &str, version: u64, f: impl FnOnce(&mut Slot)) {
        let mut models = self.write();
        if let Some(m) = models.get_mut(name) {
            let slot = m.versions.entry(version).or_insert_with(|| Slot {
                state: State::Start,
                status: Status::new(Code::Ok, ""),
                servable: None,
                failed_at: None,
            });
            f(slot);
        }
    }

    fn poll_model(&self, c: &ModelConfig) {
        let on_disk = match versions_on_disk(&c.base_path) {
            Ok(v) => v,
            Err(e) => {
                // Keep serving what is loaded: the folder may come back.
                log::warn!("model {}: {e}; the versions loaded keep serving", c.name);
                return;
            }
        };
        if on_disk.is_empty() {
            log::warn!(
                "model {}: no versions found under base path {}",
                c.name,
                c.base_path.display()
            );
            return;
        }
        let wanted = c.policy.choose(&on_disk.iter().map(|(v, _)| *v).collect::<Vec<_>>());
        for &v in &wanted {
            let Some(dir) = on_disk.iter().find(|(x, _)| *x == v).map(|(_, d)| d.clone()) else {
                continue;
            };
            let fp = fingerprint(&dir);
            let skip = {
                let models = self.read();
                models
                    .get(&c.name)
                    .and_then(|m| m.versions.get(&v))
                    .is_some_and(|s| s.state == State::Available || (s.failed_at.is_some() && s.failed_at == Some(fp)))
            };
            if skip {
                continue;
            }
            self.set(&c.name, v, |s| {
                s.state = State::Loading;
                s.status = Status::new(Code::Ok, "");
            });
            log::info!(
                "Loading servable: {{name: {} version: {v}}} from {}",
                c.name,
                dir.display()
            );
            let t0 = Instant::now();
            let batching = self.batching.as_ref();
            let device = &self.device;
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Servable::load(&c.name, v, &dir, device, batching, self.warmup)
            }))
            .unwrap_or_else(|_| Err(Status::new(Code::Internal, "loading panicked")));
            // The files may have changed while loading (a copy in progress).
            let fp_after = fingerprint(&dir);
            match loaded {
                Ok(s) => {
                    let us = t0.elapsed().as_micros() as u64;
                    super::metrics::global().load(&c.name, v, us);
                    log::info!(
                        "Successfully loaded servable version {{name: {} version: {v}}} on {} ({}) in {:.1} s",
                        c.name,
                        self.device,
                        self.device.name(),
                        us as f64 / 1e6
                    );
                    let s = Arc::new(s);
                    self.set(&c.name, v, |slot| {
                        slot.state = State::Available;
                        slot.status = Status::new(Code::Ok, "");
                        slot.servable = Some(s);
                        slot.failed_at = None;
                    });
                }
                Err(e) => {
                    log::error!(
                        "Loading servable: {{name: {} version: {v}}} failed: {}",
                        c.name,
                        e.message
                    );
                    self.set(&c.name, v, |slot| {
                        slot.state = State::End;
                        slot.status = Status::new(
                            if e.code == Code::Ok { Code::Unknown } else { e.code },
                            e.message.clone(),
                        );
                        slot.servable = None;
                        // Files that changed during the load: try again next poll.
                        slot.failed_at = (fp_after == fp).then_some(fp);
                    });
                }
            }
        }
        // Unload what is no longer wanted, once something wanted serves
        // (TF Serving's availability-preserving policy).
        let mut models = self.write();
        let Some(m) = models.get_mut(&c.name) else { return };
        let serving_wanted = wanted
            .iter()
            .any(|v| m.versions.get(v).is_some_and(|s| s.state == State::Available));
        if !serving_wanted {
            return;
        }
        for (v, slot) in m.versions.iter_mut() {
            if !wanted.contains(v) && slot.state == State::Available {
                log::info!("Unloading servable version {{name: {} version: {v}}}", c.name);
                slot.state = State::End;
                slot.status = Status::new(Code::Ok, "");
                // In-flight requests hold their own Arc; it drops after them.
                slot.servable = None;
            }
        }
    }
}

/// Numbered subfolders of `base`.
fn versions_on_disk(base: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let rd = std::fs::read_dir(base).map_err(|e| format!("cannot read base path {}: {e}", base.display()))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(v) = s.parse::<u64>() else { continue };
        if e.path().is_dir() {
            out.push((v, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A hash of the folder's file names, sizes and modification times.
fn fingerprint(dir: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            seen += 1;
            if seen > 100_000 {
                return h.finish();
            }
            e.file_name().hash(&mut h);
            if let Ok(md) = e.metadata() {
                md.len().hash(&mut h);
                if let Ok(t) = md.modified() {
                    t.hash(&mut h);
                }
                if md.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    h.finish()
}
