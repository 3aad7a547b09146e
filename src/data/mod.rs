//! `tf.data` for wgflow: a [`Dataset`] is a recipe for an iterator of
//! elements (tuples of tensors), so it can be iterated once per epoch.
//! Transformations chain as in TensorFlow: `from_tensor_slices`, `shuffle`,
//! `batch`, `map`, `repeat`, `take`, `prefetch`. Elements usually live on the
//! CPU; `map` may move them to a device (on the prefetch thread, the copy
//! overlaps with the work of the training step).
//!
//! Sources beside in-memory tensors: [`csv`], [`mnist`] and the generated
//! [`synthetic`] digits. `nn::model::Model::fit_dataset` consumes a
//! dataset of `(x, y)` batches; files of variables rather than examples are
//! `io`'s business.

pub mod csv;
pub mod mnist;
pub mod synthetic;

use crate::core::error::{Error, Result};
use crate::ops::layout;
use crate::tensor::Tensor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One element: a tuple of tensors, such as (features, label).
pub type Element = Vec<Tensor>;
/// The iterator [`Dataset::iter`] returns; an `Err` item ends an epoch with
/// that error (a failed `map`, a batch of mismatched elements).
pub type ElementIter = Box<dyn Iterator<Item = Result<Element>> + Send>;
type Source = Arc<dyn Fn() -> Result<ElementIter> + Send + Sync>;

/// `tf.data.Dataset`: a re-iterable, lazily evaluated sequence of
/// [`Element`]s. Cloning is cheap and shares the source; each
/// [`Dataset::iter`] starts a new pass.
#[derive(Clone)]
pub struct Dataset {
    make: Source,
    /// Number of elements when known (`cardinality`).
    len: Option<usize>,
}

impl Dataset {
    fn new(len: Option<usize>, make: impl Fn() -> Result<ElementIter> + Send + Sync + 'static) -> Dataset {
        Dataset {
            make: Arc::new(make),
            len,
        }
    }

    /// `Dataset.from_tensor_slices((x, y))`: element i is row i of each tensor.
    /// The tensors must agree in their first dimension.
    pub fn from_tensor_slices(tensors: &[Tensor]) -> Result<Dataset> {
        let Some(first) = tensors.first() else {
            return Err(Error::arg("from_tensor_slices", "needs at least one tensor"));
        };
        if tensors.iter().any(|t| t.rank() == 0) {
            return Err(Error::arg("from_tensor_slices", "scalars have no rows to slice"));
        }
        let n = first.shape()[0];
        if let Some(t) = tensors.iter().find(|t| t.shape()[0] != n) {
            return Err(Error::shape(
                "from_tensor_slices",
                &[first.shape(), t.shape()],
                format!("the tensors have different lengths ({n} and {})", t.shape()[0]),
            ));
        }
        // Slicing happens on the host, whatever device the tensors are on.
        let host: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.to_device(&crate::runtime::Device::Cpu))
            .collect::<Result<_>>()?;
        let host = Arc::new(host);
        Ok(Dataset::new(Some(n), move || {
            let host = host.clone();
            Ok(Box::new((0..n).map(move |i| host.iter().map(|t| row(t, i)).collect())))
        }))
    }

    /// A dataset of the given elements.
    pub fn from_elements(elements: Vec<Element>) -> Dataset {
        let e = Arc::new(elements);
        Dataset::new(Some(e.len()), move || {
            let e = e.clone();
            Ok(Box::new((0..e.len()).map(move |i| Ok(e[i].clone()))))
        })
    }

    /// Number of elements, when it is known without iterating.
    pub fn cardinality(&self) -> Option<usize> {
        self.len
    }

    /// A fresh iterator over the elements.
    pub fn iter(&self) -> Result<ElementIter> {
        (self.make)()
    }

    /// `Dataset.shuffle(buffer_size, seed)`: samples uniformly from a buffer
    /// of `buffer_size` elements (a buffer as large as the dataset gives a
    /// full shuffle); each iteration (epoch) uses a new order derived from
    /// `seed`, as TF's `reshuffle_each_iteration=True`.
    pub fn shuffle(self, buffer_size: usize, seed: u64) -> Dataset {
        self.shuffle_counted(buffer_size, seed, Arc::new(AtomicU64::new(0)), true)
    }

    /// `shuffle` whose order for an iteration is the one of iteration
    /// `epoch` (set by the caller before each iteration), so that a run
    /// resumed at epoch e draws the orders an uninterrupted run draws.
    pub(crate) fn shuffle_for_epoch(self, buffer_size: usize, seed: u64, epoch: Arc<AtomicU64>) -> Dataset {
        self.shuffle_counted(buffer_size, seed, epoch, false)
    }

    fn shuffle_counted(self, buffer_size: usize, seed: u64, epoch: Arc<AtomicU64>, count: bool) -> Dataset {
        let up = self.make.clone();
        Dataset::new(self.len, move || {
            let e = if count {
                epoch.fetch_add(1, Ordering::Relaxed)
            } else {
                epoch.load(Ordering::Relaxed)
            };
            let mut rng = Rng::new(seed ^ e.wrapping_mul(0xA076_1D64_78BD_642F));
            let mut inner = up()?;
            let mut buf: Vec<Result<Element>> = Vec::with_capacity(buffer_size.max(1));
            Ok(Box::new(std::iter::from_fn(move || {
                while buf.len() < buffer_size.max(1) {
                    match inner.next() {
                        Some(x) => buf.push(x),
                        None => break,
                    }
                }
                if buf.is_empty() {
                    return None;
                }
                let i = rng.below(buf.len());
                Some(buf.swap_remove(i))
            })))
        })
    }

    /// `Dataset.batch(n, drop_remainder)`: stacks `n` consecutive elements
    /// along a new first axis; the last, smaller batch is kept unless
    /// `drop_remainder`.
    ///
    /// Returns [`Error::InvalidArgument`] for `n == 0`; elements whose
    /// components differ in count or shape fail when the batch is produced.
    pub fn batch(self, n: usize, drop_remainder: bool) -> Result<Dataset> {
        if n == 0 {
            return Err(Error::arg("batch", "batch size must be positive"));
        }
        let up = self.make.clone();
        let len = self.len.map(|l| if drop_remainder { l / n } else { l.div_ceil(n) });
        Ok(Dataset::new(len, move || {
            let mut inner = up()?;
            Ok(Box::new(std::iter::from_fn(move || {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    match inner.next() {
                        Some(Ok(x)) => items.push(x),
                        Some(Err(e)) => return Some(Err(e)),
                        None => break,
                    }
                }
                if items.is_empty() || (drop_remainder && items.len() < n) {
                    return None;
                }
                Some(stack_elements(&items))
            })))
        }))
    }

    /// `Dataset.map(f)`: applies `f` to every element, lazily, on the thread
    /// that iterates (the prefetch thread after [`Dataset::prefetch`]).
    pub fn map(self, f: impl Fn(Element) -> Result<Element> + Send + Sync + 'static) -> Dataset {
        let f = Arc::new(f);
        let up = self.make.clone();
        Dataset::new(self.len, move || {
            let f = f.clone();
            Ok(Box::new(up()?.map(move |x| x.and_then(|x| f(x)))))
        })
    }

    /// `Dataset.repeat(count)`: `count` passes, or forever with `None`
    /// (TF's `count=-1`); repeating an empty dataset stays empty.
    pub fn repeat(self, count: Option<usize>) -> Dataset {
        let up = self.make.clone();
        let len = match (self.len, count) {
            (Some(l), Some(c)) => Some(l * c),
            (Some(0), None) => Some(0),
            _ => None,
        };
        Dataset::new(len, move || {
            let up = up.clone();
            let mut done = 0usize;
            let mut cur: Option<ElementIter> = None;
            let mut produced = false;
            Ok(Box::new(std::iter::from_fn(move || {
                loop {
                    if cur.is_none() {
                        // A round that produced nothing means the dataset is
                        // empty: repeating it forever is still empty.
                        if count.is_some_and(|c| done >= c) || (done > 0 && !produced) {
                            return None;
                        }
                        done += 1;
                        produced = false;
                        match up() {
                            Ok(it) => cur = Some(it),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    match cur.as_mut().unwrap().next() {
                        Some(x) => {
                            produced = true;
                            return Some(x);
                        }
                        None => cur = None,
                    }
                }
            })))
        })
    }

    /// `Dataset.take(n)`: the first `n` elements (fewer if the dataset is shorter).
    pub fn take(self, n: usize) -> Dataset {
        let up = self.make.clone();
        Dataset::new(self.len.map(|l| l.min(n)), move || Ok(Box::new(up()?.take(n))))
    }

    /// `Dataset.prefetch(n)`: produces up to `n` elements ahead on a
    /// background thread, so the upstream work overlaps the consumer's.
    /// Each iteration starts its own thread; an error fails the iteration if
    /// the thread cannot start.
    pub fn prefetch(self, n: usize) -> Dataset {
        let up = self.make.clone();
        Dataset::new(self.len, move || {
            let mut inner = up()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Element>>(n.max(1));
            std::thread::Builder::new()
                .name("wgflow-prefetch".into())
                .spawn(move || {
                    for x in inner.by_ref() {
                        let stop = x.is_err();
                        // The consumer stopped listening: stop producing.
                        if tx.send(x).is_err() || stop {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::arg("prefetch", format!("cannot start the prefetch thread: {e}")))?;
            Ok(Box::new(rx.into_iter()))
        })
    }
}

/// Row `i` of a host tensor, one rank lower.
fn row(t: &Tensor, i: usize) -> Result<Tensor> {
    let mut begin = vec![0; t.rank()];
    begin[0] = i;
    let mut size = t.shape().to_vec();
    size[0] = 1;
    let s = t.slice(&begin, &size)?;
    s.reshape(&t.shape()[1..].iter().map(|&d| d as isize).collect::<Vec<_>>())
}

fn stack_elements(items: &[Element]) -> Result<Element> {
    let k = items[0].len();
    if let Some(bad) = items.iter().find(|e| e.len() != k) {
        return Err(Error::arg(
            "batch",
            format!("elements have {} and {} components", k, bad.len()),
        ));
    }
    (0..k)
        .map(|j| {
            let parts: Vec<&Tensor> = items.iter().map(|e| &e[j]).collect();
            layout::stack(&parts, 0)
        })
        .collect()
}

/// A small seeded generator (xorshift64*), for shuffling and the synthetic
/// set: fast and reproducible across platforms, not for cryptography.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; the low bit of the state is forced on, so
    /// every seed (0 included) avoids xorshift's stuck all-zero state.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
