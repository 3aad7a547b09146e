//! The memory pool on a real GPU, each scenario in its own process so that
//! it gets its own device and settings.

mod common;
use common::*;
use wgflow::{DType, Device, Error, Tensor, config, ops};

fn gpu0() -> Device {
    Device::gpu(0).expect("gpu:0")
}

/// Child: the pool serves repeated ops and gets memory back from drops.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_reuse() {
    let d = gpu0();
    let x = ops::random_normal(&[192, 256], 0.0, 1.0, DType::F32, 1, &d).unwrap();
    let w = ops::random_normal(&[256, 64], 0.0, 1.0, DType::F32, 2, &d).unwrap();
    let step = || {
        let h = x.matmul(&w).unwrap().relu().unwrap();
        let s = h.sum(None, false).unwrap();
        s.item().unwrap()
    };
    let first = step();
    let before = d.memory_info();
    let second = step();
    let after = d.memory_info();
    assert_eq!(first, second);
    println!("CREATED {} {}", before.buffers_created, after.buffers_created);
    println!("HITS {} {}", before.pool_hits, after.pool_hits);
    let in_use = d.memory_info().in_use;
    let big = Tensor::zeros(&[1 << 20], DType::F32, &d).unwrap();
    let with = d.memory_info().in_use;
    drop(big);
    println!("INUSE {in_use} {with} {}", d.memory_info().in_use);
    assert!(d.memory_info().peak >= with);
}

#[test]
fn the_same_op_twice_creates_no_buffer_and_drops_return_memory() {
    if gpus().is_empty() {
        return;
    }
    let (ok, out, err) = run_child("child_reuse", &[]);
    assert!(ok, "{out}\n{err}");
    let created: Vec<u64> = tagged(&out, "CREATED")[0]
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(created[0], created[1], "the second run created buffers");
    let hits: Vec<u64> = tagged(&out, "HITS")[0].split(' ').map(|v| v.parse().unwrap()).collect();
    assert!(
        hits[1] >= hits[0] + 3,
        "the second run took its buffers from the pool: {hits:?}"
    );
    let inuse: Vec<u64> = tagged(&out, "INUSE")[0]
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(inuse[1], inuse[0] + (4 << 20));
    assert_eq!(inuse[2], inuse[0], "dropping returns the memory");
}

/// Child: growth on with a 64 MiB limit.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_limit() {
    let d = gpu0();
    let mb = |n: usize| Tensor::zeros(&[n << 18], DType::F32, &d);
    let a = mb(40).unwrap();
    match mb(40) {
        Err(Error::OutOfMemory {
            requested,
            in_use,
            limit,
            ..
        }) => {
            println!("OOM {requested} {in_use} {limit}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("80 MiB fit under a 64 MiB limit"),
    }
    // A smaller request succeeds and the device keeps working.
    let b = mb(8).unwrap();
    assert_eq!(b.add(&b).unwrap().sum(None, false).unwrap().item().unwrap(), 0.0);
    drop(a);
    // The freed 40 MiB are cached; a request of another size releases them.
    let c = mb(48).unwrap();
    println!("AFTER {}", d.memory_info().reserved);
    drop((b, c));
    println!("DONE ok");
}

#[test]
fn over_the_limit_is_out_of_memory_and_smaller_requests_still_succeed() {
    if gpus().is_empty() {
        return;
    }
    let (ok, out, err) = run_child("child_limit", &[("WGFLOW_MEMORY_LIMIT_MB", "64")]);
    assert!(ok, "{out}\n{err}");
    let oom: Vec<u64> = tagged(&out, "OOM")[0].split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(oom[0], 40 << 20);
    assert!(oom[1] >= 40 << 20);
    assert_eq!(oom[2], 64 << 20);
    let reserved: u64 = tagged(&out, "AFTER")[0].parse().unwrap();
    assert!(reserved <= 64 << 20, "the pool holds {reserved} bytes over its limit");
    assert_eq!(tagged(&out, "DONE"), vec!["ok"]);
}

/// Child: growth off reserves the limit up front and sub-allocates.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_no_growth() {
    assert!(!config::memory_growth().unwrap());
    let d = gpu0();
    let info = d.memory_info();
    println!("RESERVED {} {}", info.reserved, info.buffers_created);
    let mb = |n: usize| Tensor::zeros(&[n << 18], DType::F32, &d);
    let a = mb(8).unwrap();
    let b = mb(8).unwrap();
    let c = mb(8).unwrap();
    println!("CREATED {}", d.memory_info().buffers_created);
    assert!(matches!(mb(10), Err(Error::OutOfMemory { .. })));
    drop(b);
    let b = mb(8).unwrap();
    drop((a, b, c));
    // The freed ranges coalesce: one 30 MiB tensor fits again.
    let big = mb(30).unwrap();
    // Sub-allocated tensors compute correctly (offset bindings).
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
    assert_eq!(x.mul(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);
    drop(big);
    // Elementwise kernels on tensors carved at whatever offsets the slab
    // gives (a one-element tensor before each shifts the next), with both
    // kernel families: vector views where the offsets allow, else one
    // element per invocation; the CPU device's values either way.
    let mut shifts = Vec::new();
    for (i, n) in [1usize, 3, 8, 5, 16, 7, 24, 40].into_iter().enumerate() {
        shifts.push(Tensor::zeros(&[1], DType::F32, &d).unwrap());
        let v: Vec<f32> = (0..n).map(|k| (k as f32 - 3.0) * 0.5 + i as f32).collect();
        let f = |x: &Tensor| {
            x.mul(x)?
                .add(x)?
                .sub_scalar(4.0)?
                .relu()?
                .maximum(&x.scalar_like(0.25)?)
        };
        let want = f(&Tensor::from_vec(v.clone(), &[n], &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::from_vec(v, &[n], &d).unwrap();
        for cpu_style in [false, true] {
            wgflow::runtime::wgpu::force_cpu_style_kernels(Some(cpu_style));
            assert_eq!(
                f(&x).unwrap().to_vec::<f32>().unwrap(),
                want.to_vec::<f32>().unwrap(),
                "length {n}, CPU-adapter kernels {cpu_style}"
            );
        }
    }
    println!("DONE ok");
}

#[test]
fn growth_off_reserves_the_limit_up_front() {
    if gpus().is_empty() {
        return;
    }
    let (ok, out, err) = run_child(
        "child_no_growth",
        &[
            ("WGFLOW_FORCE_GPU_ALLOW_GROWTH", "false"),
            ("WGFLOW_MEMORY_LIMIT_MB", "32"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(tagged(&out, "RESERVED"), vec![format!("{} 1", 32u64 << 20)]);
    assert_eq!(
        tagged(&out, "CREATED"),
        vec!["1"],
        "tensors are carved from the one slab"
    );
    assert_eq!(tagged(&out, "DONE"), vec!["ok"]);
}

#[test]
fn tensors_larger_than_a_binding_are_refused_with_a_typed_error() {
    for d in gpus() {
        let max = d.max_tensor_bytes();
        let n = (max / 4 + 1) as usize;
        match Tensor::zeros(&[n], DType::F32, &d) {
            Err(Error::TooLargeForBinding { bytes, limit, .. }) => {
                assert_eq!(limit, max);
                assert!(bytes > max);
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a {} byte tensor was created", n * 4),
        }
        // An op whose output would be too large names the op.
        let one = Tensor::from_vec(vec![1.0f32], &[1], &d).unwrap();
        match one.broadcast_to(&[n]) {
            Err(e @ Error::TooLargeForBinding { op: "broadcast_to", .. }) => {
                assert!(e.to_string().contains("broadcast_to"))
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("too large"),
        }
        // The device still works.
        assert_eq!(one.add(&one).unwrap().item().unwrap(), 2.0);
    }
}

/// The GPU a child tests: `MEMTEST_GPU` (an ordinal), else gpu:0.
fn child_gpu() -> Device {
    let n = std::env::var("MEMTEST_GPU").map_or(0, |v| v.parse().expect("MEMTEST_GPU"));
    Device::gpu(n).expect("the GPU under test")
}

/// The ordinals of every visible GPU.
fn gpu_ordinals() -> Vec<String> {
    gpus()
        .iter()
        .map(|d| d.to_string()["gpu:".len()..].to_string())
        .collect()
}

/// All elements of `t` (f32) equal `v`.
fn all_eq(t: &Tensor, v: f32) -> bool {
    t.to_vec::<f32>().unwrap().iter().all(|&x| x == v)
}

/// Child: memory that queued work still reads is neither destroyed nor
/// handed to an upload before that work, whether the pool has room, makes
/// room, or is out of memory (a 64 MiB limit, growth on or off).
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_queued_reads() {
    let d = child_gpu();
    let mb = |n: usize, v: f64| ops::full(&[n << 18], v, DType::F32, &d);
    // The issue's case: x is freed while the op reading it is queued, then
    // a request that needs x's memory (growth on: past the limit unless the
    // cache is released; growth off: no contiguous 40 MiB).
    let x = mb(16, 3.0).unwrap();
    let y = x.mul_scalar(2.0).unwrap();
    drop(x);
    match mb(40, 1.0) {
        Ok(z) => {
            assert_eq!(z.min(None, false).unwrap().item().unwrap(), 1.0);
            assert!(all_eq(&z, 1.0));
            println!("Z ok");
        }
        Err(Error::OutOfMemory { .. }) => println!("Z oom"),
        Err(e) => panic!("wrong error: {e}"),
    }
    assert!(all_eq(&y, 6.0), "y was not computed from x");
    println!("Y ok");
    drop(y);

    // A real out-of-memory while a freed buffer's reader is queued: the
    // live tensors stay readable and correct, and the device usable.
    let x = mb(16, 3.0).unwrap();
    let y = x.mul_scalar(2.0).unwrap();
    drop(x);
    match mb(60, 1.0) {
        Err(Error::OutOfMemory { requested, limit, .. }) => {
            assert_eq!((requested, limit), (60 << 20, 64 << 20));
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("76 MiB fit under a 64 MiB limit"),
    }
    assert!(all_eq(&y, 6.0), "y after an out-of-memory");
    let w = y.add_scalar(1.0).unwrap();
    assert_eq!(w.max(None, false).unwrap().item().unwrap(), 7.0);
    println!("OOM ok");
    drop((y, w));

    // A freed buffer reused by a later op in the same batch, and by an
    // upload (which the queue writes before the open batch runs).
    let x = mb(8, 3.0).unwrap();
    let y = x.mul_scalar(2.0).unwrap();
    drop(x);
    let r = mb(8, 5.0).unwrap();
    let y2 = y.mul_scalar(0.5).unwrap();
    drop(y);
    let u = Tensor::from_vec(vec![4.0f32; 2 << 20], &[2 << 20], &d).unwrap();
    assert!(all_eq(&y2, 3.0), "y2");
    assert!(all_eq(&r, 5.0), "r");
    assert!(all_eq(&u, 4.0), "u");
    drop((y2, r, u));

    // Many rounds near the limit, each making room from the cache.
    let mut keep = mb(8, 1.0).unwrap();
    for i in 0..6 {
        let size = [20, 24, 28, 32, 40, 48][i];
        let t = keep.add_scalar(1.0).unwrap();
        drop(keep);
        match mb(size, 0.0) {
            Ok(big) => assert_eq!(big.max(None, false).unwrap().item().unwrap(), 0.0),
            Err(Error::OutOfMemory { .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
        }
        keep = t;
    }
    assert!(all_eq(&keep, 7.0), "the chain of adds");
    assert!(d.memory_info().reserved <= 64 << 20);
    println!("DONE ok");
}

#[test]
fn freed_memory_is_not_destroyed_or_reused_before_queued_reads_growth_on() {
    for g in gpu_ordinals() {
        let (ok, out, err) = run_child(
            "child_queued_reads",
            &[("WGFLOW_MEMORY_LIMIT_MB", "64"), ("MEMTEST_GPU", &g)],
        );
        assert!(ok, "gpu:{g}\n{out}\n{err}");
        assert_eq!(tagged(&out, "Z"), vec!["ok"], "gpu:{g}: 16 + 40 MiB fit under 64 MiB");
        assert_eq!(tagged(&out, "DONE"), vec!["ok"], "gpu:{g}");
    }
}

#[test]
fn freed_memory_is_not_reused_before_queued_reads_growth_off() {
    for g in gpu_ordinals() {
        let (ok, out, err) = run_child(
            "child_queued_reads",
            &[
                ("WGFLOW_MEMORY_LIMIT_MB", "64"),
                ("WGFLOW_FORCE_GPU_ALLOW_GROWTH", "false"),
                ("MEMTEST_GPU", &g),
            ],
        );
        assert!(ok, "gpu:{g}\n{out}\n{err}");
        assert_eq!(tagged(&out, "Y"), vec!["ok"], "gpu:{g}");
        assert_eq!(tagged(&out, "OOM"), vec!["ok"], "gpu:{g}");
        assert_eq!(tagged(&out, "DONE"), vec!["ok"], "gpu:{g}");
    }
}

/// `r` is the InvalidArgument of `op` naming `what`.
fn assert_arg_error<T: std::fmt::Debug>(r: wgflow::Result<T>, op: &str, what: &str, ctx: &str) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => {
            let Error::InvalidArgument { op: got, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*got, op, "{ctx}: {e}");
            assert!(e.to_string().contains(what), "{ctx}: {e}");
        }
        other => panic!("{ctx}: expected {op}'s error naming {what:?}, got {other:?}"),
    }
}

#[test]
fn a_kernel_error_belongs_to_the_tensors_that_depend_on_it_on_any_thread() {
    for d in gpus() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
        let bad_idx = Tensor::from_vec(vec![0i32, 7], &[2], &d).unwrap();
        let (bad, derived, good) = std::thread::scope(|s| {
            s.spawn(|| {
                // The GPU finds the bad index later: the op returns a tensor.
                let bad = x.gather(&bad_idx, 0).unwrap();
                let derived = bad.mul_scalar(2.0).unwrap().sum(None, false).unwrap();
                // Work on this thread after the bad launch is not blamed for it.
                let good = x.add_scalar(1.0).unwrap();
                assert_eq!(good.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 4.0], "{d}: thread A");
                (bad, derived, good)
            })
            .join()
            .unwrap()
        });
        std::thread::scope(|s| {
            s.spawn(|| {
                let unrelated = x.mul_scalar(3.0).unwrap();
                assert_eq!(unrelated.to_vec::<f32>().unwrap(), vec![3.0, 6.0, 9.0], "{d}");
                assert_arg_error(
                    bad.to_vec::<f32>(),
                    "gather",
                    "index 7 is out of range [0, 3)",
                    "thread B",
                );
                assert_arg_error(derived.item(), "gather", "index 7", "a value computed from it");
                // Every read of it errors, not just the first.
                assert_arg_error(bad.to_vec::<f32>(), "gather", "index 7", "second read");
                assert_eq!(good.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 4.0], "{d}: thread B");
                assert_eq!(unrelated.sum(None, false).unwrap().item().unwrap(), 18.0);
            });
        });
        // Back on this thread: still the error; other values fine.
        assert_arg_error(bad.to_vec::<f32>(), "gather", "index 7", "main thread");
        let ok = x
            .gather(&Tensor::from_vec(vec![2i32, 0], &[2], &d).unwrap(), 0)
            .unwrap();
        assert_eq!(ok.to_vec::<f32>().unwrap(), vec![3.0, 1.0], "{d}");
    }
}

#[test]
fn a_bad_label_is_reported_on_the_loss_on_another_thread_only() {
    for d in gpus() {
        let logits = Tensor::from_vec(vec![0.5f32, 1.0, -1.0, 2.0], &[2, 2], &d).unwrap();
        let bad = Tensor::from_vec(vec![0i32, 5], &[2], &d).unwrap();
        let good = Tensor::from_vec(vec![1i32, 0], &[2], &d).unwrap();
        let loss = std::thread::spawn({
            let (logits, bad) = (logits.clone(), bad.clone());
            move || {
                ops::softmax::sparse_softmax_cross_entropy_with_logits(&bad, &logits)
                    .unwrap()
                    .mean(None, false)
                    .unwrap()
            }
        })
        .join()
        .unwrap();
        let fine = ops::softmax::sparse_softmax_cross_entropy_with_logits(&good, &logits).unwrap();
        let other = std::thread::spawn(move || fine.to_vec::<f32>()).join().unwrap();
        assert!(other.is_ok(), "{d}: {other:?}");
        let r = std::thread::spawn(move || loss.item()).join().unwrap();
        assert_arg_error(
            r,
            "sparse_softmax_cross_entropy_with_logits",
            "label 5 is out of range [0, 2)",
            "loss",
        );
    }
}

#[test]
fn many_checked_launches_and_recycled_status_records_report_only_their_own_errors() {
    for d in gpus() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
        let idx = |v: i32| Tensor::from_vec(vec![v], &[1], &d).unwrap();
        // A value that depends on 40 checked launches (more than are kept
        // unread), one of them bad.
        let mut acc = ops::zeros(&[1], DType::F32, &d).unwrap();
        let mut before = None;
        for i in 0..40 {
            let k = if i == 25 { -1 } else { i % 3 };
            if i == 25 {
                before = Some(acc.clone());
            }
            acc = acc.add(&x.gather(&idx(k), 0).unwrap()).unwrap();
        }
        assert_arg_error(acc.to_vec::<f32>(), "gather", "index -1", "the sum");
        let before = before.unwrap().to_vec::<f32>().unwrap();
        assert_eq!(before, vec![(0..25).map(|i| (i % 3 + 1) as f32).sum::<f32>()], "{d}");
        drop(acc);
        // Failed records, read or not, are recycled clean.
        for round in 0..4 {
            let bad = x.gather(&idx(9), 0).unwrap();
            if round % 2 == 0 {
                assert!(bad.to_vec::<f32>().is_err());
            }
            drop(bad);
            x.sum(None, false).unwrap().item().unwrap();
            let good = x.gather(&idx(1), 0).unwrap();
            assert_eq!(good.to_vec::<f32>().unwrap(), vec![2.0], "{d}: round {round}");
        }
    }
}

/// Uploads go through the device's staging ring, copied in the command
/// stream: an upload into memory freed by a queued op's input keeps the
/// op's values, sizes of every kind round-trip, and more uploads than the
/// ring holds (nothing read back in between) fall back to wgpu's staging
/// with the right values.
#[test]
fn uploads_keep_values_and_order_through_the_staging_ring() {
    let gpus = gpus();
    if gpus.is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    let values =
        |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 31 + seed * 7) % 1009) as f32 - 500.0).collect() };
    for d in gpus {
        let two = Tensor::scalar(2.0f32, &d).unwrap();
        let mut queued = Vec::new();
        for (k, &n) in [1usize, 3, 17, 1000, 65_537, 300_001, 0, 5, 40_000, 262_144]
            .iter()
            .cycle()
            .take(120)
            .enumerate()
        {
            let t = Tensor::from_vec(values(n, k), &[n], &d).unwrap();
            // Queued, not run: the next upload may land in `t`'s memory.
            queued.push((n, k, t.mul(&two).unwrap()));
        }
        for (n, k, u) in queued {
            let want: Vec<f32> = values(n, k).iter().map(|v| v * 2.0).collect();
            assert_eq!(u.to_vec::<f32>().unwrap(), want, "{d}: upload {k} of {n} values");
        }
        let ints = Tensor::from_vec(vec![7i32, -3, 11], &[3], &d).unwrap();
        assert_eq!(ints.to_vec::<i32>().unwrap(), vec![7, -3, 11]);
        let flags = Tensor::from_vec(vec![true, false, true], &[3], &d).unwrap();
        assert_eq!(flags.to_vec::<bool>().unwrap(), vec![true, false, true]);
        // 24 x 12 MiB: past the ring's 64 MiB with nothing read back.
        let n = 3 << 20;
        let big: Vec<Tensor> = (0..24)
            .map(|k| Tensor::from_vec(values(n, k), &[n], &d).unwrap())
            .collect();
        for (k, t) in big.iter().enumerate().rev() {
            assert_eq!(t.to_vec::<f32>().unwrap(), values(n, k), "{d}: large upload {k}");
        }
    }
}
