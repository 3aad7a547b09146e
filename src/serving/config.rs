//! The server's configuration files, in TF Serving's text formats:
//! `ModelServerConfig` (`model_config_list { config { ... } }`),
//! `BatchingParameters` and `MonitoringConfig`. An unknown field is an error
//! naming it and the line, never silently ignored.

use super::textproto::{self, Field, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which versions of a model are served (`ServableVersionPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `num_versions` newest (default 1).
    Latest(u32),
    /// Every version found.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk.
    pub fn choose(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut v = on_disk.to_vec();
        v.sort_unstable();
        v.dedup();
        match self {
            VersionPolicy::Latest(n) => {
                let keep = (*n as usize).max(1).min(v.len());
                v.split_off(v.len() - keep)
            }
            VersionPolicy::All => v,
            VersionPolicy::Specific(want) => v.into_iter().filter(|x| want.contains(x)).collect(),
        }
    }
}

/// One model of `model_config_list` (`ModelConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The name clients use.
    pub name: String,
    /// The folder holding numbered version folders.
    pub base_path: PathBuf,
    /// Which versions to serve.
    pub policy: VersionPolicy,
    /// `version_labels`: label -> version.
    pub labels: BTreeMap<String, u64>,
}

/// `BatchingParameters`, with TF Serving's defaults for the fields not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingParameters {
    /// Most rows in one device batch.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for more.
    pub batch_timeout_micros: u64,
    /// Batches that may wait; past them a request is refused with 503.
    pub max_enqueued_batches: usize,
    /// Threads running batches.
    pub num_batch_threads: usize,
    /// Sizes a batch is padded up to (the last must be `max_batch_size`).
    pub allowed_batch_sizes: Vec<usize>,
    /// Pad variable-length inputs (accepted; inputs must match beyond the batch).
    pub pad_variable_length_inputs: bool,
}

impl Default for BatchingParameters {
    fn default() -> Self {
        BatchingParameters {
            max_batch_size: 1000,
            batch_timeout_micros: 0,
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: false,
        }
    }
}

/// `MonitoringConfig { prometheus_config { enable path } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringConfig {
    /// Whether `/monitoring/prometheus/metrics` (or `path`) is served.
    pub prometheus_enable: bool,
    /// The path of the Prometheus text.
    pub prometheus_path: String,
}

/// TF Serving's default Prometheus path.
pub const DEFAULT_PROMETHEUS_PATH: &str = "/monitoring/prometheus/metrics";

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            prometheus_enable: false,
            prometheus_path: DEFAULT_PROMETHEUS_PATH.into(),
        }
    }
}

fn read(path: &Path) -> Result<(String, Vec<Field>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fields = textproto::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path.display().to_string(), fields))
}

fn scalar<'a>(file: &str, f: &'a Field) -> Result<&'a str, String> {
    match &f.value {
        Value::Scalar { text, .. } => Ok(text),
        Value::Msg(_) => Err(format!(
            "{file}: line {}: '{}' takes a value, not a message",
            f.line, f.name
        )),
    }
}

fn msg<'a>(file: &str, f: &'a Field) -> Result<&'a [Field], String> {
    match &f.value {
        Value::Msg(m) => Ok(m),
        Value::Scalar { .. } => Err(format!(
            "{file}: line {}: '{}' takes a message {{ ... }}",
            f.line, f.name
        )),
    }
}

fn number<T: std::str::FromStr>(file: &str, f: &Field) -> Result<T, String> {
    let s = scalar(file, f)?;
    s.parse().map_err(|_| {
        format!(
            "{file}: line {}: '{}' must be a non-negative integer, got '{s}'",
            f.line, f.name
        )
    })
}

fn unknown(file: &str, f: &Field, known: &[&str]) -> String {
    format!(
        "{file}: line {}: unknown field '{}' (known here: {})",
        f.line,
        f.name,
        known.join(", ")
    )
}

/// Reads `--model_config_file`.
pub fn read_model_config(path: &Path) -> Result<Vec<ModelConfig>, String> {
    let (file, top) = read(path)?;
    let mut out: Vec<ModelConfig> = Vec::new();
    for f in &top {
        match f.name.as_str() {
            "model_config_list" => {
                for c in msg(&file, f)? {
                    if c.name != "config" {
                        return Err(unknown(&file, c, &["config"]));
                    }
                    let m = model(&file, msg(&file, c)?, c.line)?;
                    if out.iter().any(|o| o.name == m.name) {
                        return Err(format!(
                            "{file}: line {}: model '{}' is configured twice",
                            c.line, m.name
                        ));
                    }
                    out.push(m);
                }
            }
            "custom_model_config" => {
                return Err(format!("{file}: line {}: custom_model_config is not supported", f.line));
            }
            _ => return Err(unknown(&file, f, &["model_config_list"])),
        }
    }
    Ok(out)
}

fn model(file: &str, fields: &[Field], line: usize) -> Result<ModelConfig, String> {
    const KNOWN: &[&str] = &[
        "name",
        "base_path",
        "model_platform",
        "model_type",
        "model_version_policy",
        "version_labels",
        "logging_config",
    ];
    let mut name = None;
    let mut base = None;
    let mut policy = VersionPolicy::default();
    let mut labels = BTreeMap::new();
    for f in fields {
        match f.name.as_str() {
            "name" => name = Some(scalar(file, f)?.to_string()),
            "base_path" => base = Some(PathBuf::from(scalar(file, f)?)),
            "model_platform" => {
                let p = scalar(file, f)?;
                if p != "tensorflow" {
                    return Err(format!(
                        "{file}: line {}: model_platform '{p}' is not served; the one platform is 'tensorflow'",
                        f.line
                    ));
                }
            }
            "model_type" | "logging_config" => {}
            "model_version_policy" => {
                let p = msg(file, f)?;
                let [kind] = p else {
                    return Err(format!(
                        "{file}: line {}: model_version_policy takes one of latest, all, specific",
                        f.line
                    ));
                };
                policy = match kind.name.as_str() {
                    "latest" => {
                        let mut n = 1;
                        for g in msg(file, kind)? {
                            match g.name.as_str() {
                                "num_versions" => n = number(file, g)?,
                                _ => return Err(unknown(file, g, &["num_versions"])),
                            }
                        }
                        VersionPolicy::Latest(n)
                    }
                    "all" => {
                        if let Some(g) = msg(file, kind)?.first() {
                            return Err(unknown(file, g, &[]));
                        }
                        VersionPolicy::All
                    }
                    "specific" => {
                        let mut v = Vec::new();
                        for g in msg(file, kind)? {
                            match g.name.as_str() {
                                "versions" => v.push(number(file, g)?),
                                _ => return Err(unknown(file, g, &["versions"])),
                            }
                        }
                        if v.is_empty() {
                            return Err(format!("{file}: line {}: specific {{}} lists no versions", kind.line));
                        }
                        VersionPolicy::Specific(v)
                    }
                    _ => return Err(unknown(file, kind, &["latest", "all", "specific"])),
                };
            }
            "version_labels" => {
                let mut key = None;
                let mut value = None;
                for g in msg(file, f)? {
                    match g.name.as_str() {
                        "key" => key = Some(scalar(file, g)?.to_string()),
                        "value" => value = Some(number::<u64>(file, g)?),
                        _ => return Err(unknown(file, g, &["key", "value"])),
                    }
                }
                match (key, value) {
                    (Some(k), Some(v)) => {
                        labels.insert(k, v);
                    }
                    _ => {
                        return Err(format!(
                            "{file}: line {}: version_labels needs a key and a value",
                            f.line
                        ));
                    }
                }
            }
            _ => return Err(unknown(file, f, KNOWN)),
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{file}: line {line}: a config without a name"))?;
    let base_path = base
        .filter(|b| !b.as_os_str().is_empty())
        .ok_or_else(|| format!("{file}: line {line}: model '{name}' has no base_path"))?;
    Ok(ModelConfig {
        name,
        base_path,
        policy,
        labels,
    })
}

/// Reads `--batching_parameters_file`.
pub fn read_batching(path: &Path) -> Result<BatchingParameters, String> {
    let (file, top) = read(path)?;
    let mut p = BatchingParameters::default();
    const KNOWN: &[&str] = &[
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
        "thread_pool_name",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
    ];
    // Wrapper types (`max_batch_size { value: 128 }`) or plain values.
    let wrapped = |f: &Field| -> Result<u64, String> {
        match &f.value {
            Value::Msg(m) => match m.as_slice() {
                [v] if v.name == "value" => number(&file, v),
                _ => Err(format!("{file}: line {}: '{}' takes {{ value: N }}", f.line, f.name)),
            },
            Value::Scalar { .. } => number(&file, f),
        }
    };
    let positive = |f: &Field, v: u64| -> Result<usize, String> {
        if v == 0 {
            return Err(format!("{file}: line {}: '{}' must be positive", f.line, f.name));
        }
        usize::try_from(v).map_err(|_| format!("{file}: line {}: '{}' is too large", f.line, f.name))
    };
    for f in &top {
        match f.name.as_str() {
            "max_batch_size" => p.max_batch_size = positive(f, wrapped(f)?)?,
            "batch_timeout_micros" => p.batch_timeout_micros = wrapped(f)?,
            "max_enqueued_batches" => p.max_enqueued_batches = positive(f, wrapped(f)?)?,
            "num_batch_threads" => p.num_batch_threads = positive(f, wrapped(f)?)?.min(256),
            "allowed_batch_sizes" => {
                let v = number::<u64>(&file, f)?;
                p.allowed_batch_sizes.push(positive(f, v)?);
            }
            "pad_variable_length_inputs" => {
                p.pad_variable_length_inputs = match scalar(&file, f)? {
                    "true" | "True" | "t" | "1" => true,
                    "false" | "False" | "f" | "0" => false,
                    s => return Err(format!("{file}: line {}: '{s}' is not a bool", f.line)),
                }
            }
            "thread_pool_name" | "enable_large_batch_splitting" | "max_execution_batch_size" => {}
            _ => return Err(unknown(&file, f, KNOWN)),
        }
    }
    check_allowed(&p).map_err(|e| format!("{file}: {e}"))?;
    Ok(p)
}

/// TF Serving's rule: increasing, the last one `max_batch_size`.
fn check_allowed(p: &BatchingParameters) -> Result<(), String> {
    let a = &p.allowed_batch_sizes;
    if a.is_empty() {
        return Ok(());
    }
    if a.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "allowed_batch_sizes entries must be monotonically increasing, got {a:?}"
        ));
    }
    if a.last() != Some(&p.max_batch_size) {
        return Err(format!(
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was {} and max_batch_size is {}",
            a.last().copied().unwrap_or(0),
            p.max_batch_size
        ));
    }
    Ok(())
}

/// Reads `--monitoring_config_file`.
pub fn read_monitoring(path: &Path) -> Result<MonitoringConfig, String> {
    let (file, top) = read(path)?;
    let mut m = MonitoringConfig::default();
    for f in &top {
        match f.name.as_str() {
            "prometheus_config" => {
                for g in msg(&file, f)? {
                    match g.name.as_str() {
                        "enable" => m.prometheus_enable = scalar(&file, g)? == "true",
                        "path" => {
                            let p = scalar(&file, g)?;
                            if !p.is_empty() {
                                if !p.starts_with('/') {
                                    return Err(format!(
                                        "{file}: line {}: the Prometheus path must start with '/', got '{p}'",
                                        g.line
                                    ));
                                }
                                m.prometheus_path = p.to_string();
                            }
                        }
                        _ => return Err(unknown(&file, g, &["enable", "path"])),
                    }
                }
            }
            _ => return Err(unknown(&file, f, &["prometheus_config"])),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(VersionPolicy::Latest(1).choose(&[3, 1, 2]), vec![3]);
        assert_eq!(VersionPolicy::Latest(2).choose(&[3, 1, 2]), vec![2, 3]);
        assert_eq!(VersionPolicy::Latest(5).choose(&[1]), vec![1]);
        assert_eq!(VersionPolicy::Latest(1).choose(&[]), Vec::<u64>::new());
        assert_eq!(VersionPolicy::All.choose(&[2, 1]), vec![1, 2]);
        assert_eq!(VersionPolicy::Specific(vec![1, 7]).choose(&[1, 2]), vec![1]);
    }

    #[test]
    fn files() {
        let dir = std::env::temp_dir().join(format!("wgflow-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("models.config");
        std::fs::write(
            &m,
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'tensorflow'\n model_version_policy { all {} } version_labels { key: 'canary' value: 2 } } }",
        )
        .unwrap();
        let c = read_model_config(&m).unwrap();
        assert_eq!(c[0].policy, VersionPolicy::All);
        assert_eq!(c[0].labels["canary"], 2);
        std::fs::write(&m, "model_config_list { config { name: 'a' base_pth: '/x' } }").unwrap();
        assert!(read_model_config(&m).unwrap_err().contains("unknown field 'base_pth'"));
        let b = dir.join("batching.config");
        std::fs::write(&b, "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n").unwrap();
        let p = read_batching(&b).unwrap();
        assert_eq!(
            (p.max_batch_size, p.batch_timeout_micros, p.allowed_batch_sizes.clone()),
            (8, 500, vec![4, 8])
        );
        std::fs::write(&b, "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n").unwrap();
        assert!(read_batching(&b).unwrap_err().contains("must match max_batch_size"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
