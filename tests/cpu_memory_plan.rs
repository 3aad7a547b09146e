//! The CPU device's memory plan: once a traced training step has replayed
//! a few times, a replay takes nothing of 4 KiB or more from the allocator;
//! every result and scratch buffer comes from the graph's arena or the
//! threads' scratch. Counted by this test binary's own global allocator;
//! the binary has this one test so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use wgflow::function::Traced;
use wgflow::nn::layers::{Conv2D, Dense, Flatten, Layer, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, ops};

/// Allocations at least this large are counted: every activation,
/// gradient and optimizer slot here is larger, and so are the fused
/// kernels' per-chunk temporaries. Below it: shapes, handles, the small
/// results of reductions.
/// Not counted at any size: the `gemm` crate's packing buffers, which it
/// allocates inside each call and takes from no caller.
const BIG: usize = 4 << 10;

struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static BIG_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BIG_BYTES: AtomicU64 = AtomicU64::new(0);
/// The sizes of the first few big allocations, for the failure message.
static SIZES: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];

fn count(size: usize) {
    if size >= BIG && ON.load(Ordering::Relaxed) && !wgflow::runtime::cpu::in_gemm_crate() {
        let k = BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        BIG_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        if let Some(s) = SIZES.get(k) {
            s.store(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            count(new);
        }
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn cnn() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(Conv2D::new(8, [3, 3]).activation(Activation::Relu)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(Conv2D::new(16, [3, 3]).activation(Activation::Relu)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(Flatten::new()),
        Box::new(Dense::new(10)),
    ]
}

fn mlp() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(Flatten::new()),
        Box::new(Dense::new(256).activation(Activation::Relu)),
        Box::new(Dense::new(10)),
    ]
}

/// The CNN and the MLP of the training bench, traced on the CPU device: the
/// fourth to sixth replays allocate no block of 4 KiB or more, the graph
/// reports its plan, and the loss is what the same steps give eagerly.
#[test]
fn traced_cpu_steps_allocate_no_tensors() {
    let d = Device::Cpu;
    let models: [(&str, fn() -> Vec<Box<dyn Layer>>, usize); 2] = [("cnn", cnn, 32), ("mlp", mlp, 128)];
    for (name, layers, batch) in models {
        let model = || {
            set_random_seed(3);
            let mut m = Sequential::from_layers(layers());
            m.build(&[28, 28, 1], &d).unwrap();
            m.compile(
                Adam::new(1e-3),
                SparseCategoricalCrossentropy::new(true),
                SparseCategoricalAccuracy::new(),
            );
            m
        };
        let x = ops::random_uniform(&[batch, 28, 28, 1], 0.0, 1.0, DType::F32, 5, &d).unwrap();
        let labels: Vec<i32> = (0..batch as i32).map(|i| (i * 7) % 10).collect();
        let y = Tensor::from_vec(labels, &[batch], &d).unwrap();
        let args = [x.clone(), y.clone()];

        let mut eager = model();
        let want: Vec<f32> = (0..6)
            .map(|_| eager.train_step(&x, &y).unwrap().item().unwrap() as f32)
            .collect();

        let mut m = model();
        let mut graph = Traced::new("train_step");
        let mut got = Vec::new();
        for step in 0..6 {
            if step == 3 {
                BIG_ALLOCS.store(0, Ordering::SeqCst);
                BIG_BYTES.store(0, Ordering::SeqCst);
                ON.store(true, Ordering::SeqCst);
            }
            let out = graph.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?])).unwrap();
            got.push(out[0].item().unwrap() as f32);
        }
        ON.store(false, Ordering::SeqCst);
        let sizes: Vec<usize> = SIZES
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&s| s > 0)
            .collect();
        assert_eq!(
            BIG_ALLOCS.load(Ordering::SeqCst),
            0,
            "{name}: replays 4 to 6 allocated {} bytes in blocks of at least {BIG}: {sizes:?}",
            BIG_BYTES.load(Ordering::SeqCst)
        );
        let plan = graph
            .graph(&args)
            .unwrap()
            .memory_plan()
            .expect("a CPU graph reports its plan");
        assert!(plan.values > 0 && plan.buffers > 0, "{name}: {plan:?}");
        assert!(plan.unshared_bytes > 0, "{name}: {plan:?}");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{name}: step {k}: traced {g}, eager {w}"
            );
        }
    }
}
