//! Server-side batching (`--enable_batching`): requests for the same
//! signature whose inputs agree beyond axis 0 are concatenated into one
//! device batch of at most `max_batch_size` rows, padded up to the next
//! `allowed_batch_sizes` entry, run once, and split back. The first request
//! of a batch waits at most `batch_timeout_micros` for company. A request
//! that would overfill `max_enqueued_batches` batches is refused with
//! UNAVAILABLE (HTTP 503), as TF Serving's scheduler refuses it.

use super::config::BatchingParameters;
use super::servable::{Core, Named};
use super::status::{Code, Status};
use super::tensor::HostTensor;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// What may share a batch: the signature, the output filter, and each
/// input's name, dtype and shape beyond axis 0.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    signature: String,
    filter: Vec<String>,
    inputs: Vec<(String, i32, Vec<usize>)>,
}

struct Task {
    key: Key,
    inputs: Named,
    rows: usize,
    enqueued: Instant,
    reply: std::sync::mpsc::SyncSender<Result<Named, Status>>,
}

struct State {
    tasks: VecDeque<Task>,
    rows: usize,
    closed: bool,
}

struct Queue {
    params: BatchingParameters,
    state: Mutex<State>,
    ready: Condvar,
}

/// The batcher of one servable; dropping it stops its threads.
pub struct Batcher {
    queue: Arc<Queue>,
    core: Weak<Core>,
}

impl Batcher {
    /// Starts `num_batch_threads` threads running batches on `core`.
    pub fn new(core: Weak<Core>, params: BatchingParameters) -> Batcher {
        let queue = Arc::new(Queue {
            params,
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                rows: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..queue.params.num_batch_threads.max(1) {
            let q = Arc::clone(&queue);
            let c = core.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wgflow-batch-{i}"))
                .spawn(move || worker(&q, &c));
            if let Err(e) = spawned {
                log::error!("cannot start a batch thread: {e}");
            }
        }
        Batcher { queue, core }
    }

    /// Queues a request and waits for its rows of the batch's result.
    pub fn submit(&self, signature: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        let rows = inputs.first().and_then(|(_, t)| t.batch());
        let uniform = rows.is_some() && inputs.iter().all(|(_, t)| t.batch() == rows);
        let (Some(rows), true) = (rows, uniform) else {
            // Inputs without a common batch axis cannot be merged.
            return self.run_alone(signature, inputs, filter);
        };
        let p = &self.queue.params;
        if rows > p.max_batch_size {
            return Err(Status::invalid(format!(
                "Task size {rows} is larger than maximum input batch size {}",
                p.max_batch_size
            )));
        }
        if rows == 0 {
            return self.run_alone(signature, inputs, filter);
        }
        let mut names: Vec<(String, i32, Vec<usize>)> = inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype, t.shape[1..].to_vec()))
            .collect();
        names.sort();
        let mut filter = filter.to_vec();
        filter.sort();
        let key = Key {
            signature: signature.to_string(),
            filter,
            inputs: names,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut s = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
            let capacity = p.max_enqueued_batches.saturating_mul(p.max_batch_size);
            if s.rows.saturating_add(rows) > capacity {
                return Err(Status::new(
                    Code::Unavailable,
                    "The batch scheduling queue to which this task was submitted is full",
                ));
            }
            s.rows += rows;
            s.tasks.push_back(Task {
                key,
                inputs,
                rows,
                enqueued: Instant::now(),
                reply: tx,
            });
        }
        self.queue.ready.notify_all();
        rx.recv().unwrap_or_else(|_| {
            Err(Status::new(
                Code::Aborted,
                "the batch was dropped while the model unloaded",
            ))
        })
    }

    fn run_alone(&self, signature: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        // Runs on the caller's thread, as TF Serving runs calls it cannot batch.
        let core = self
            .core
            .upgrade()
            .ok_or_else(|| Status::new(Code::Aborted, "the model version was unloaded"))?;
        core.run(signature, inputs, filter)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let mut s = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
        s.closed = true;
        drop(s);
        self.queue.ready.notify_all();
    }
}

/// Takes the next batch: the oldest task and the tasks of its key behind
/// it, once they fill `max_batch_size` or the oldest has waited long enough.
fn next_batch(q: &Queue) -> Option<Vec<Task>> {
    let p = &q.params;
    let timeout = Duration::from_micros(p.batch_timeout_micros);
    let mut s = q.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if s.closed && s.tasks.is_empty() {
            return None;
        }
        if let Some(first) = s.tasks.front() {
            let key = first.key.clone();
            let waited = first.enqueued.elapsed();
            let rows: usize = s.tasks.iter().filter(|t| t.key == key).map(|t| t.rows).sum();
            if rows >= p.max_batch_size || waited >= timeout || s.closed {
                let mut batch = Vec::new();
                let mut total = 0;
                let mut i = 0;
                while i < s.tasks.len() {
                    let t = &s.tasks[i];
                    if t.key == key && total + t.rows <= p.max_batch_size {
                        total += t.rows;
                        if let Some(t) = s.tasks.remove(i) {
                            batch.push(t);
                        }
                    } else {
                        i += 1;
                    }
                }
                s.rows -= total;
                return Some(batch);
            }
            let left = timeout.saturating_sub(waited);
            s = q.ready.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        } else {
            s = q.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn worker(q: &Queue, core: &Weak<Core>) {
    while let Some(batch) = next_batch(q) {
        let Some(core) = core.upgrade() else {
            for t in batch {
                let _ = t
                    .reply
                    .send(Err(Status::new(Code::Aborted, "the model version was unloaded")));
            }
            continue;
        };
        run_batch(q, &core, batch);
    }
}

fn run_batch(q: &Queue, core: &Core, batch: Vec<Task>) {
    let Some(first) = batch.first() else { return };
    let key = first.key.clone();
    let total: usize = batch.iter().map(|t| t.rows).sum();
    let padded = q
        .params
        .allowed_batch_sizes
        .iter()
        .copied()
        .find(|&s| s >= total)
        .unwrap_or(total);
    let result = (|| -> Result<Named, Status> {
        let mut inputs = Vec::new();
        for (name, _, _) in &key.inputs {
            let parts: Vec<HostTensor> = batch
                .iter()
                .filter_map(|t| t.inputs.iter().find(|(n, _)| n == name).map(|(_, x)| x.clone()))
                .collect();
            inputs.push((name.clone(), HostTensor::stack(&parts, true)?.pad_rows(padded)));
        }
        core.run(&key.signature, inputs, &key.filter)
    })();
    crate::serving::metrics::global().batch_size(&core.name, total, padded);
    match result {
        Err(e) => {
            for t in batch {
                let _ = t.reply.send(Err(e.clone()));
            }
        }
        Ok(outputs) => {
            if let Some((n, o)) = outputs.iter().find(|(_, o)| o.batch() != Some(padded)) {
                let e = Status::new(
                    Code::FailedPrecondition,
                    format!(
                        "Batched output tensor '{n}' has shape {:?}; its 0th dimension must equal the batch size {padded}",
                        o.shape
                    ),
                );
                for t in batch {
                    let _ = t.reply.send(Err(e.clone()));
                }
                return;
            }
            let mut lo = 0;
            for t in batch {
                let part = outputs
                    .iter()
                    .map(|(n, o)| (n.clone(), o.rows(lo, lo + t.rows)))
                    .collect();
                lo += t.rows;
                let _ = t.reply.send(Ok(part));
            }
        }
    }
}
