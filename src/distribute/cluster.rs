//! The workers of a multi-worker job and the collectives they run together,
//! with the job's shape as the environment describes it (an MPI launcher's
//! variables, `TF_CONFIG`).

use crate::core::error::{Error, Result};
use std::sync::Arc;

/// Collective operations over every worker of the job, each called by every
/// worker in the same order (MPI's rule). Worker 0 is the root of the
/// broadcasts.
pub(crate) trait Collective: Send + Sync {
    /// This worker's index.
    fn rank(&self) -> usize;
    /// The number of workers.
    fn size(&self) -> usize;
    /// This worker's index among the workers of its host.
    fn local_rank(&self) -> usize;
    /// Sums `send` element-wise over the workers into `recv` (of the same
    /// length); every worker ends with the same bits.
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// The element-wise maximum over the workers, in place.
    fn max_u64(&self, buf: &mut [u64]) -> Result<()>;
    /// Every worker's `v`, in worker order.
    fn gather_u64(&self, v: u64) -> Result<Vec<u64>>;
    /// Worker 0's `buf` into every worker's (the lengths must agree).
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Worker 0's `buf` into every worker's (the lengths must agree).
    fn broadcast_u64(&self, buf: &mut [u64]) -> Result<()>;
    /// Ends every worker's process with `code` (what a worker does when it
    /// cannot go on alone: the others would wait for it forever).
    fn abort(&self, code: i32) -> !;
}

/// This process's place in a job: the collectives and the global indices
/// of its replicas.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub comm: Arc<dyn Collective>,
    /// The global index of this worker's first replica.
    pub offset: usize,
    /// Replicas over every worker.
    pub total: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("worker", &self.comm.rank())
            .field("workers", &self.comm.size())
            .field("offset", &self.offset)
            .field("total", &self.total)
            .finish()
    }
}

impl Cluster {
    /// Joins `comm` with `local` replicas: every worker learns every other's
    /// replica count.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub fn new(comm: Arc<dyn Collective>, local: usize) -> Result<Cluster> {
        let counts = comm.gather_u64(local as u64)?;
        let rank = comm.rank();
        let as_usize = |v: u64| usize::try_from(v).map_err(|_| Error::arg(OP, "a replica count past usize"));
        let mut offset = 0usize;
        let mut total = 0usize;
        for (w, &c) in counts.iter().enumerate() {
            let c = as_usize(c)?;
            if w < rank {
                offset += c;
            }
            total = total
                .checked_add(c)
                .ok_or_else(|| Error::arg(OP, "a replica count past usize"))?;
        }
        Ok(Cluster { comm, offset, total })
    }
}

const OP: &str = "MultiWorkerMirroredStrategy";

/// The number of processes of the MPI job this process was launched in
/// (OpenMPI's `mpirun`, MPICH's or Intel MPI's Hydra, PMIx, Slurm's
/// `srun`), from the launcher's environment; `None` outside one.
pub(crate) fn launched_size() -> Option<usize> {
    const VARS: &[&str] = &[
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MV2_COMM_WORLD_SIZE",
        "SLURM_STEP_NUM_TASKS",
    ];
    VARS.iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| s.trim().parse::<usize>().ok()))
        .or_else(|| std::env::var_os("PMIX_RANK").map(|_| 1))
}

/// `TF_CONFIG`'s worker addresses (`{"cluster": {"worker": [...]}}`), when
/// it is set; an unreadable one is an error naming what is wrong.
pub(crate) fn tf_config_workers() -> Result<Option<Vec<String>>> {
    let Ok(text) = std::env::var("TF_CONFIG") else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let bad = |msg: String| Error::arg(OP, format!("TF_CONFIG: {msg}"));
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(cluster) = v.get("cluster") else {
        return Ok(None);
    };
    let mut hosts = Vec::new();
    for key in ["chief", "worker"] {
        match cluster.get(key) {
            None => {}
            Some(serde_json::Value::Array(list)) => {
                for w in list {
                    let s = w
                        .as_str()
                        .ok_or_else(|| bad(format!("cluster.{key} holds {w}, not a \"host:port\" string")))?;
                    hosts.push(s.to_string());
                }
            }
            Some(other) => return Err(bad(format!("cluster.{key} is {other}, not a list"))),
        }
    }
    Ok(Some(hosts))
}

/// The `mpirun` line that launches this program on `hosts` (TF_CONFIG's
/// "host:port" entries), one process per host.
pub(crate) fn mpirun_command(hosts: &[String]) -> String {
    let mut per_host: Vec<(String, usize)> = Vec::new();
    for h in hosts {
        let name = match h.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
            _ => h.as_str(),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']').to_string();
        match per_host.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => per_host.push((name, 1)),
        }
    }
    let list: Vec<String> = per_host.iter().map(|(n, k)| format!("{n}:{k}")).collect();
    let argv: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    format!("mpirun -np {} -H {} {}", hosts.len(), list.join(","), argv.join(" "))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpirun_groups_hosts_and_drops_ports() {
        let hosts = vec!["h1:2222".to_string(), "h2:2222".into(), "h1:2223".into()];
        let c = mpirun_command(&hosts);
        assert!(c.starts_with("mpirun -np 3 -H h1:2,h2:1 "), "{c}");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("--x=1"), "--x=1");
    }
}
