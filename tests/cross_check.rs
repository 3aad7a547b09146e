//! `WGFLOW_CROSS_CHECK=1` runs every GPU op on the CPU reference as well;
//! a small network's forward and backward ops, and a traced training step's
//! fused kernels, pass it on every adapter.

mod common;
use common::*;
use wgflow::ops::{self, conv, pool, softmax};
use wgflow::{DType, Padding, Tensor, config};

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_network() {
    for d in config::list_logical_devices()
        .unwrap()
        .into_iter()
        .filter(|d| d.is_gpu())
    {
        let x = ops::random_normal(&[4, 8, 8, 3], 0.0, 1.0, DType::F32, 1, &d).unwrap();
        let f = ops::random_normal(&[3, 3, 3, 5], 0.0, 0.3, DType::F32, 2, &d).unwrap();
        let y = conv::conv2d(&x, &f, [1, 1], Padding::Same, [1, 1])
            .unwrap()
            .relu()
            .unwrap();
        let p = pool::max_pool2d(&y, [2, 2], [2, 2], Padding::Valid).unwrap();
        let flat = p.reshape(&[4, -1]).unwrap();
        let w = ops::random_normal(&[80, 10], 0.0, 0.1, DType::F32, 3, &d).unwrap();
        let logits = flat.matmul(&w).unwrap();
        let labels = Tensor::from_vec(vec![1, 3, 5, 7], &[4], &d).unwrap();
        let loss = softmax::sparse_softmax_cross_entropy_with_logits(&labels, &logits).unwrap();
        let g = softmax::sparse_softmax_cross_entropy_grad(&labels, &logits).unwrap();
        let gw = flat.matmul_t(&g, true, false).unwrap();
        let l = loss.mean(None, false).unwrap().item().unwrap();
        assert!(l.is_finite());
        assert_eq!(gw.shape(), &[80, 10]);
        // A traced step: its fused kernels (forward chain, sibling
        // reductions, an SGD update in the epilogue) are cross-checked too.
        let v = wgflow::Variable::new(ops::zeros(&[10], DType::F32, &d).unwrap(), "bias");
        let mut step = wgflow::function(|a: &[Tensor]| {
            let tape = wgflow::GradientTape::new();
            let z = a[0].add(&v.value())?.tanh()?;
            let loss = z.square()?.mean(None, false)?;
            let g = tape.gradient(&loss, &[&v])?;
            v.assign(&v.value().sub(&g[0].clone().unwrap().mul_scalar(0.1)?)?)?;
            Ok(vec![loss, z.max(Some(&[0]), false)?])
        });
        for _ in 0..3 {
            step.call(std::slice::from_ref(&logits)).unwrap();
        }
        let stats = step.graph(std::slice::from_ref(&logits)).unwrap().stats();
        assert!(stats.fused_kernels >= 1, "{stats:?}");
        println!("CHECKED {d} {l:.4}");
    }
}

#[test]
fn cross_checked_network_passes_on_every_adapter() {
    let n = gpus().len();
    if n == 0 {
        return;
    }
    let (ok, out, err) = run_child("child_network", &[("WGFLOW_CROSS_CHECK", "1")]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(tagged(&out, "CHECKED").len(), n);
}
