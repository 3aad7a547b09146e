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
