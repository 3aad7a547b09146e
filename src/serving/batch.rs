//! Server-side batching (`--enable_batching`): requests for the same
//! signature whose inputs agree beyond axis 0 are concatenated into one
//! device batch of at most `max_batch_size` rows, padded up to the next
//! `allowed_batch_sizes` entry, run once, and split back. The first request
//! of a batch waits at most `batch_timeout_micros` for company. A request
//! that would overfill `max_enqueued_batches` batches is refused with
//! UNAVAILABLE (HTTP 503), as TF Serving's scheduler refuses it.
//!
//! Requests are checked alone before they are queued
//! (`servable::check_inputs`); should a merged batch still fail, its
//! requests are run again one by one, so that no request gets an error (or
//! values) caused by another. A panic in a batch run is caught: its
//! requests get INTERNAL and the thread takes the next batch. A request
//! never waits on a queue that no thread serves.

use super::config::BatchingParameters;
use super::servable::Named;
use super::status::{Code, Status};
use super::tensor::HostTensor;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// What batches run on: a loaded model version (`servable::Core`).
pub trait BatchTarget: Send + Sync {
    /// The model's name (for the metrics).
    fn name(&self) -> &str;
    /// Runs `signature` on `inputs`; outputs keep axis 0 as the batch.
    fn run(&self, signature: &str, inputs: Named, filter: &[String]) -> Result<Named, Status>;
}

/// What may share a batch: the signature, the output filter, and each
/// input's name, dtype and shape beyond axis 0.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    signature: String,
    filter: Vec<String>,
    inputs: Vec<(String, i32, Vec<usize>)>,
}

struct Task {
    id: u64,
    key: Key,
    inputs: Named,
    rows: usize,
    enqueued: Instant,
    reply: SyncSender<Result<Named, Status>>,
}

struct State {
    tasks: VecDeque<Task>,
    rows: usize,
    closed: bool,
    next_id: u64,
}

struct Queue {
    params: BatchingParameters,
    state: Mutex<State>,
    ready: Condvar,
    /// Batch threads running.
    workers: AtomicUsize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts a batch thread out when it ends, however it ends.
struct WorkerGuard(Arc<Queue>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The batcher of one servable; dropping it stops its threads.
pub struct Batcher {
    queue: Arc<Queue>,
    target: Weak<dyn BatchTarget>,
}

/// How often a waiting request looks whether a batch thread is left.
const WAIT_TICK: Duration = Duration::from_millis(200);

impl Batcher {
    /// Starts `num_batch_threads` threads running batches on `target`.
    pub fn new(target: Weak<dyn BatchTarget>, params: BatchingParameters) -> Batcher {
        let queue = Arc::new(Queue {
            params,
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                rows: 0,
                closed: false,
                next_id: 0,
            }),
            ready: Condvar::new(),
            workers: AtomicUsize::new(0),
        });
        for i in 0..queue.params.num_batch_threads.max(1) {
            let q = Arc::clone(&queue);
            let t = target.clone();
            queue.workers.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("wgflow-batch-{i}"))
                .spawn(move || {
                    let guard = WorkerGuard(q);
                    worker(&guard.0, &t);
                });
            if let Err(e) = spawned {
                queue.workers.fetch_sub(1, Ordering::SeqCst);
                log::error!("cannot start a batch thread: {e}");
            }
        }
        Batcher { queue, target }
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
        if rows == 0 || self.queue.workers.load(Ordering::SeqCst) == 0 {
            return self.run_alone(signature, inputs, filter);
        }
        let mut names: Vec<(String, i32, Vec<usize>)> = inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype, t.shape.get(1..).unwrap_or(&[]).to_vec()))
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
        let id = {
            let mut s = self.queue.lock();
            let capacity = p.max_enqueued_batches.saturating_mul(p.max_batch_size);
            if s.rows.saturating_add(rows) > capacity {
                return Err(Status::new(
                    Code::Unavailable,
                    "The batch scheduling queue to which this task was submitted is full",
                ));
            }
            s.rows = s.rows.saturating_add(rows);
            let id = s.next_id;
            s.next_id = s.next_id.wrapping_add(1);
            s.tasks.push_back(Task {
                id,
                key,
                inputs,
                rows,
                enqueued: Instant::now(),
                reply: tx,
            });
            id
        };
        self.queue.ready.notify_all();
        loop {
            match rx.recv_timeout(WAIT_TICK) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Status::new(
                        Code::Aborted,
                        "the batch was dropped while the model unloaded",
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.queue.workers.load(Ordering::SeqCst) > 0 {
                        continue;
                    }
                    // No thread is left to take it: take it back. (A task
                    // already taken is answered by its batch's thread.)
                    let mut s = self.queue.lock();
                    if let Some(i) = s.tasks.iter().position(|t| t.id == id) {
                        if let Some(t) = s.tasks.remove(i) {
                            s.rows = s.rows.saturating_sub(t.rows);
                        }
                        return Err(Status::new(
                            Code::Unavailable,
                            "no batch thread is left to run this request",
                        ));
                    }
                }
            }
        }
    }

    fn run_alone(&self, signature: &str, inputs: Named, filter: &[String]) -> Result<Named, Status> {
        // Runs on the caller's thread, as TF Serving runs calls it cannot batch.
        let target = self
            .target
            .upgrade()
            .ok_or_else(|| Status::new(Code::Aborted, "the model version was unloaded"))?;
        target.run(signature, inputs, filter)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
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
    let mut s = q.lock();
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
                let mut total = 0usize;
                let mut i = 0;
                while i < s.tasks.len() {
                    let t = &s.tasks[i];
                    if t.key == key && total.saturating_add(t.rows) <= p.max_batch_size {
                        total += t.rows;
                        if let Some(t) = s.tasks.remove(i) {
                            batch.push(t);
                        }
                    } else {
                        i += 1;
                    }
                }
                s.rows = s.rows.saturating_sub(total);
                return Some(batch);
            }
            let left = timeout.saturating_sub(waited);
            s = q.ready.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        } else {
            s = q.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn worker(q: &Queue, target: &Weak<dyn BatchTarget>) {
    while let Some(batch) = next_batch(q) {
        let replies: Vec<SyncSender<Result<Named, Status>>> = batch.iter().map(|t| t.reply.clone()).collect();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match target.upgrade() {
            None => {
                for t in batch {
                    let _ = t
                        .reply
                        .send(Err(Status::new(Code::Aborted, "the model version was unloaded")));
                }
            }
            Some(target) => run_batch(q, &*target, batch),
        }));
        if let Err(panic) = ran {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!(
                "a batch of {} requests panicked: {what}; answering them INTERNAL",
                replies.len()
            );
            // Tasks answered before the panic have a full channel: try_send
            // leaves their answer alone.
            for r in replies {
                let _ = r.try_send(Err(Status::new(
                    Code::Internal,
                    "the model call panicked while running this request's batch (see the server log)",
                )));
            }
        }
    }
}

/// The allowed batch size `rows` is padded to.
fn padded_size(q: &Queue, rows: usize) -> usize {
    q.params
        .allowed_batch_sizes
        .iter()
        .copied()
        .find(|&s| s >= rows)
        .unwrap_or(rows)
}

/// Concatenates the tasks' inputs, pads them to `padded` rows, runs them,
/// and splits the outputs back: one `Named` per task.
fn run_merged(target: &dyn BatchTarget, tasks: &[Task], padded: usize) -> Result<Vec<Named>, Status> {
    let Some(first) = tasks.first() else {
        return Ok(Vec::new());
    };
    let key = &first.key;
    let mut inputs = Vec::with_capacity(key.inputs.len());
    for (name, _, _) in &key.inputs {
        let parts: Vec<HostTensor> = tasks
            .iter()
            .filter_map(|t| t.inputs.iter().find(|(n, _)| n == name).map(|(_, x)| x.clone()))
            .collect();
        inputs.push((name.clone(), HostTensor::stack(&parts, true)?.pad_rows(padded)));
    }
    let outputs = target.run(&key.signature, inputs, &key.filter)?;
    if let Some((n, o)) = outputs.iter().find(|(_, o)| o.batch() != Some(padded)) {
        return Err(Status::new(
            Code::FailedPrecondition,
            format!(
                "Batched output tensor '{n}' has shape {}; its 0th dimension must equal the batch size {padded}",
                super::tensor::show_dims(&o.shape)
            ),
        ));
    }
    let mut lo = 0usize;
    let mut parts = Vec::with_capacity(tasks.len());
    for t in tasks {
        let hi = lo.saturating_add(t.rows);
        parts.push(outputs.iter().map(|(n, o)| (n.clone(), o.rows(lo, hi))).collect());
        lo = hi;
    }
    Ok(parts)
}

fn run_batch(q: &Queue, target: &dyn BatchTarget, batch: Vec<Task>) {
    let total: usize = batch.iter().map(|t| t.rows).sum();
    let padded = padded_size(q, total);
    crate::serving::metrics::global().batch_size(target.name(), total, padded);
    match run_merged(target, &batch, padded) {
        Ok(parts) => {
            for (t, part) in batch.iter().zip(parts) {
                let _ = t.reply.send(Ok(part));
            }
        }
        Err(e) if batch.len() == 1 => {
            for t in &batch {
                let _ = t.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            // Which request failed it is not known, and its message may
            // quote what another sent: each request runs again alone and
            // gets its own answer.
            log::debug!(
                "a batch of {} requests failed ({}); running them one by one",
                batch.len(),
                e.code.name()
            );
            for t in &batch {
                let one = std::slice::from_ref(t);
                let r = run_merged(target, one, padded_size(q, t.rows)).and_then(|mut v| {
                    v.pop()
                        .ok_or_else(|| Status::new(Code::Internal, "no result for the request"))
                });
                let _ = t.reply.send(r);
            }
        }
    }
}
