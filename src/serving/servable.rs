//! One loaded model version: its SignatureDefs as the file has them (for
//! metadata and input dtypes) and its `Loaded` functions behind a lock,
//! with the batcher in front when batching is on.

use super::batch::Batcher;
use super::config::BatchingParameters;
use super::status::{Code, Status};
use super::tensor::{HostData, HostTensor, dtype_name, show_dims};
use crate::io::saved_model::proto::{SignatureDef, dt};
use crate::io::saved_model::{self, Loaded};
use crate::runtime::Device;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Named tensors, in a request or a response.
pub type Named = Vec<(String, HostTensor)>;

/// The part of a servable the batch threads call into.
pub struct Core {
    /// The model's name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// Every SignatureDef of the `serve` MetaGraphDef, by key.
    pub signatures: BTreeMap<String, SignatureDef>,
    loaded: Mutex<Loaded>,
}

/// A model version ready to serve.
pub struct Servable {
    /// What runs requests.
    pub core: Arc<Core>,
    batcher: Option<Batcher>,
}

impl Servable {
    /// Loads `dir` on `device` and warms each predict signature up (batch
    /// 1, and each allowed batch size) so that no request pays for tracing.
    pub fn load(
        name: &str,
        version: u64,
        dir: &Path,
        device: &Device,
        batching: Option<&BatchingParameters>,
        warmup: bool,
    ) -> Result<Servable, Status> {
        let model = saved_model::read_saved_model(dir).map_err(|e| Status::new(Code::Unknown, e.to_string()))?;
        let meta = saved_model::meta_graph(&model, dir, &[saved_model::SERVE_TAG])
            .map_err(|e| Status::new(Code::Unknown, e.to_string()))?;
        let signatures: BTreeMap<String, SignatureDef> =
            meta.signature_def.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let loaded = saved_model::load_serving(dir, &[saved_model::SERVE_TAG], device)
            .map_err(|e| Status::new(Code::Unknown, e.to_string()))?;
        for (key, e) in loaded.unavailable() {
            log::warn!("model {name} version {version}: signature '{key}' is not served: {e}");
        }
        let core = Arc::new(Core {
            name: name.to_string(),
            version,
            signatures,
            loaded: Mutex::new(loaded),
        });
        let mut sizes = vec![1];
        if let Some(b) = batching {
            sizes.extend(b.allowed_batch_sizes.iter().copied());
        }
        if warmup {
            core.warm_up(&sizes);
        }
        let weak: std::sync::Weak<Core> = Arc::downgrade(&core);
        let target: std::sync::Weak<dyn super::batch::BatchTarget> = weak;
        let batcher = batching.map(|p| Batcher::new(target, p.clone()));
        Ok(Servable { core, batcher })
    }

    /// Runs signature `key`; through the batcher when there is one. Every
    /// check that concerns this request alone is made here, before it can
    /// share a device batch with others (whose errors it must not see).
    pub fn predict(&self, key: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        let sig = self.core.signature(key)?;
        check_input_names(sig, inputs.iter().map(|(n, _)| n))?;
        check_output_filter(sig, filter)?;
        check_input_tensors(key, sig, &inputs)?;
        match &self.batcher {
            Some(b) => b.submit(key, inputs, filter),
            None => self.core.run(key, inputs, filter),
        }
    }
}

/// At most this many names, and about this many bytes of them, are listed
/// in a message.
const LISTED: (usize, usize) = (64, 1024);

/// `names` joined with `,` for a message, cut after [`LISTED`].
fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut out = String::new();
    for (i, n) in names.enumerate() {
        if i >= LISTED.0 || out.len() >= LISTED.1 {
            out.push_str(",...");
            break;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&super::status::clip(n, 256));
    }
    out
}

/// A request's input names against the signature's, before any tensor is
/// decoded (TF Serving's `VerifyRequestInputsSize` and alias check).
pub fn check_input_names<'a>(sig: &SignatureDef, names: impl Iterator<Item = &'a String>) -> Result<(), Status> {
    let want: BTreeSet<&String> = sig.inputs.keys().collect();
    let mut got: BTreeSet<&String> = BTreeSet::new();
    let mut count = 0usize;
    for n in names {
        count += 1;
        if !got.insert(n) {
            return Err(Status::invalid(format!(
                "input '{}' is given twice",
                super::status::clip(n, 256)
            )));
        }
    }
    if count != want.len() {
        return Err(Status::invalid(format!(
            "input size does not match signature: {count}!={} len({{{}}}) != len({{{}}}). Sent extra: {{{}}}. \
             Missing but required: {{{}}}.",
            want.len(),
            join(got.iter().copied()),
            join(want.iter().copied()),
            join(got.difference(&want).copied()),
            join(want.difference(&got).copied()),
        )));
    }
    if let Some(extra) = got.difference(&want).next() {
        return Err(Status::invalid(format!(
            "input tensor alias not found in signature: {}. Inputs expected to be in the set {{{}}}.",
            super::status::clip(extra, 256),
            join(want.iter().copied())
        )));
    }
    Ok(())
}

/// `output_filter` against the signature (TF Serving's messages).
pub fn check_output_filter(sig: &SignatureDef, filter: &[String]) -> Result<(), Status> {
    let mut seen = BTreeSet::new();
    for f in filter {
        if !sig.outputs.contains_key(f) {
            return Err(Status::invalid(format!(
                "output tensor alias not found in signature: {} Outputs expected to be in the set {{{}}}.",
                super::status::clip(f, 256),
                join(sig.outputs.keys().collect::<BTreeSet<_>>().into_iter())
            )));
        }
        if !seen.insert(f) {
            return Err(Status::invalid(format!("duplicate output tensor alias: {f}")));
        }
    }
    Ok(())
}

/// Inputs must be exactly the signature's, each of its dtype and shape,
/// with values wgflow's devices hold (TF Serving's `PreProcessPrediction`
/// and session messages).
pub fn check_inputs(key: &str, sig: &SignatureDef, inputs: &Named) -> Result<(), Status> {
    check_input_names(sig, inputs.iter().map(|(n, _)| n))?;
    check_input_tensors(key, sig, inputs)
}

/// Each input's dtype, shape and values, once the names are known to match.
fn check_input_tensors(key: &str, sig: &SignatureDef, inputs: &Named) -> Result<(), Status> {
    for (n, t) in inputs {
        let info = sig
            .inputs
            .get(n)
            .ok_or_else(|| Status::invalid(format!("input tensor alias not found in signature: {n}")))?;
        // The argument's place among the inputs in name order.
        let i = sig.inputs.keys().filter(|k| *k < n).count();
        if info.dtype != t.dtype {
            return Err(Status::invalid(format!(
                "Expects arg[{i}] to be {} but {} is provided",
                dtype_name(info.dtype),
                dtype_name(t.dtype)
            )));
        }
        if let Some(shape) = info.tensor_shape.as_ref().filter(|s| !s.unknown_rank) {
            let ok = shape.dim.len() == t.shape.len()
                && shape
                    .dim
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, &s)| d.size < 0 || u64::try_from(d.size).ok() == u64::try_from(s).ok());
            if !ok {
                let want: Vec<i64> = shape.dim.iter().map(|d| d.size).collect();
                return Err(Status::invalid(format!(
                    "input '{n}' of signature '{key}' has shape {}, which does not fit the signature's {} \
                     (-1: any size)",
                    show_dims(&t.shape),
                    show_dims(&want)
                )));
            }
        }
        t.check_device_values(n)?;
    }
    Ok(())
}

/// What a batch runs on: [`Core`], or a stand-in in tests.
impl super::batch::BatchTarget for Core {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&self, signature: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        Core::run(self, signature, inputs, filter)
    }
}

impl Core {
    /// Signature `key`, or TF Serving's error.
    pub fn signature(&self, key: &str) -> Result<&SignatureDef, Status> {
        self.signatures
            .get(key)
            .ok_or_else(|| Status::invalid(format!("Serving signature name: \"{key}\" not found in signature def")))
    }

    /// Calls the function and reads the outputs back, filtered. The
    /// request checks ([`check_inputs`], [`check_output_filter`]) are made
    /// before, on each request alone.
    pub fn run(&self, key: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        let sig = self.signature(key)?;
        check_output_filter(sig, filter)?;
        // A poisoned lock means a request panicked inside the runtime; the
        // loaded model is still intact (calls do not mutate it partially).
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let device = loaded.device().clone();
        let mut args = Vec::with_capacity(inputs.len());
        for (n, t) in &inputs {
            args.push((n.as_str(), t.to_device(&device)?));
        }
        let out = loaded.call(key, &args).map_err(Status::from)?;
        drop(loaded);
        let mut res = Vec::new();
        for (n, t) in out {
            if !filter.is_empty() && !filter.contains(&n) {
                continue;
            }
            let want = sig.outputs.get(&n).map(|i| i.dtype);
            res.push((n, HostTensor::from_device(&t, want).map_err(Status::from)?));
        }
        Ok(res)
    }

    /// Calls each predict signature on zeros, at each batch size in `sizes`.
    fn warm_up(&self, sizes: &[usize]) {
        'sig: for (key, sig) in &self.signatures {
            if key.starts_with("__") || sig.inputs.is_empty() {
                continue;
            }
            for &b in sizes {
                let mut inputs = Vec::new();
                for (n, info) in &sig.inputs {
                    let Some(shape) = info.tensor_shape.as_ref().filter(|s| !s.unknown_rank) else {
                        continue 'sig;
                    };
                    let dims: Vec<usize> = shape
                        .dim
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if d.size < 0 {
                                if i == 0 { b } else { 1 }
                            } else {
                                d.size as usize
                            }
                        })
                        .collect();
                    let n_el: usize = dims.iter().product();
                    if n_el > 1 << 24 {
                        continue 'sig;
                    }
                    let data = match info.dtype {
                        dt::FLOAT | dt::HALF | dt::BFLOAT16 => HostData::F32(vec![0.0; n_el]),
                        dt::DOUBLE => HostData::F64(vec![0.0; n_el]),
                        dt::BOOL => HostData::Bool(vec![false; n_el]),
                        dt::INT32 | dt::INT64 => HostData::I64(vec![0; n_el]),
                        _ => continue 'sig,
                    };
                    inputs.push((
                        n.clone(),
                        HostTensor {
                            dtype: info.dtype,
                            shape: dims,
                            data,
                        },
                    ));
                }
                if let Err(e) = self.run(key, inputs, &[]) {
                    log::warn!(
                        "model {} version {}: warm-up of signature '{key}' at batch {b} failed: {}",
                        self.name,
                        self.version,
                        e.message
                    );
                    break;
                }
            }
        }
    }
}
