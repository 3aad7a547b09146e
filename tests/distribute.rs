//! `MirroredStrategy`: two replicas with a per-replica batch B train to the
//! weights one device reaches with batch 2B, replicas stay bit-identical
//! after every step, on two adapters, on an adapter and the CPU device, and
//! on two logical GPUs of one adapter (a child process with
//! `WGFLOW_LOGICAL_DEVICES`).

mod common;
use common::*;
use wgflow::distribute::{MirroredStrategy, ReduceOp};
use wgflow::nn::layers::{Dense, Flatten};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::{Adam, SGD};
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, Tensor, config};

const B: usize = 8;

fn mlp(d: &Device) -> wgflow::Result<Sequential> {
    set_random_seed(21);
    let mut m = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(16).activation(Activation::Relu))
        .add(Dense::new(10));
    m.build(&[6, 6, 1], d)?;
    Ok(m)
}

fn data(n: usize) -> (Tensor, Tensor) {
    let x = uniform(&[n, 6, 6, 1], -1.0, 1.0, 5, DType::F32);
    let y = randint(&[n], 0, 10, 6);
    (x, y)
}

fn args(batch: usize) -> FitArgs {
    FitArgs {
        batch_size: batch,
        epochs: 1,
        shuffle: false,
        verbose: false,
        device: None,
        ..FitArgs::default()
    }
}

fn weights(m: &Sequential) -> Vec<Vec<f32>> {
    m.trainable_variables()
        .iter()
        .map(|v| v.value().to_vec::<f32>().unwrap())
        .collect()
}

/// 20 steps of batch 2B: on `devices` mirrored, and on `devices[0]` alone.
fn compare(devices: &[&str], adam: bool, rows: usize) {
    let strategy = MirroredStrategy::new(devices).unwrap();
    let mut mirrored = strategy.scope(mlp).unwrap();
    let d0 = strategy.devices()[0].clone();
    let mut single = mlp(&d0).unwrap();
    let loss = || SparseCategoricalCrossentropy::new(true);
    if adam {
        mirrored.compile(Adam::new(0.01), loss(), SparseCategoricalAccuracy::new());
        single.compile(Adam::new(0.01), loss(), SparseCategoricalAccuracy::new());
    } else {
        mirrored.compile(SGD::new(0.1), loss(), SparseCategoricalAccuracy::new());
        single.compile(SGD::new(0.1), loss(), SparseCategoricalAccuracy::new());
    }
    let (x, y) = data(rows);
    let global = 2 * B;
    let mut lo = 0;
    let mut step = 0;
    while lo < rows {
        let hi = (lo + global).min(rows);
        let xs = x.slice(&[lo, 0, 0, 0], &[hi - lo, 6, 6, 1]).unwrap();
        let ys = y.slice(&[lo], &[hi - lo]).unwrap();
        let h = mirrored.fit(&xs, &ys, args(global)).unwrap();
        let mut a = args(global);
        a.device = Some(d0.clone());
        let hs = single.fit(&xs, &ys, a).unwrap();
        let (lm, ls) = (h.get("loss").unwrap()[0], hs.get("loss").unwrap()[0]);
        assert!(
            (lm - ls).abs() <= 1e-4 * ls.abs().max(1.0),
            "{devices:?} step {step}: loss {lm} vs {ls}"
        );
        // Replicas bit-identical after every step.
        let w0 = weights(&mirrored.replicas()[0]);
        for (i, r) in mirrored.replicas().iter().enumerate().skip(1) {
            assert_eq!(weights(r), w0, "{devices:?}: replica {i} differs after step {step}");
        }
        lo = hi;
        step += 1;
    }
    let (wm, ws) = (weights(&mirrored.replicas()[0]), weights(&single));
    for (a, b) in wm.iter().zip(&ws) {
        for (p, q) in a.iter().zip(b) {
            assert!(
                (p - q).abs() <= 1e-5 + 1e-4 * q.abs(),
                "{devices:?} adam={adam}: weight {p} vs one device {q}"
            );
        }
    }
    // Predictions split across replicas equal one device's.
    let pm = mirrored.predict(&x, 7).unwrap().to_vec::<f32>().unwrap();
    let ps = single.predict(&x, 7).unwrap().to_vec::<f32>().unwrap();
    for (p, q) in pm.iter().zip(&ps) {
        assert!((p - q).abs() <= 1e-4 + 1e-3 * q.abs(), "{p} vs {q}");
    }
}

fn pairs() -> Vec<Vec<String>> {
    let gpus: Vec<String> = gpus().iter().map(|d| d.to_string()).collect();
    let mut out = Vec::new();
    if gpus.len() >= 2 {
        out.push(vec![gpus[0].clone(), gpus[1].clone()]);
    }
    if let Some(g) = gpus.first() {
        out.push(vec![g.clone(), "cpu".to_string()]);
    }
    out
}

#[test]
fn two_replicas_match_one_device_with_the_global_batch() {
    let pairs = pairs();
    if pairs.is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    for p in pairs {
        let devs: Vec<&str> = p.iter().map(String::as_str).collect();
        for adam in [false, true] {
            // 20 full steps, then a run whose last batch is short (and odd).
            compare(&devs, adam, 20 * 2 * B);
            compare(&devs, adam, 2 * 2 * B + 3);
        }
    }
}

/// Sample weights (zeros among them) and each reduction split across
/// replicas train as one device does with the global batch, the last
/// batch short; a loss left unreduced is a typed error.
#[test]
fn weighted_steps_split_across_replicas_match_one_device() {
    use wgflow::nn::losses::{Loss, Reduction};
    let pairs = pairs();
    if pairs.is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    let rows = 2 * 2 * B + 3;
    let (x, y) = data(rows);
    let mut w = uniform(&[rows], 0.0, 2.0, 9, DType::F32).to_vec::<f32>().unwrap();
    w[1] = 0.0;
    w[2 * B + 1] = 0.0;
    let w = Tensor::from_vec(w, &[rows], &Device::Cpu).unwrap();
    let weighted = |w: &Tensor| FitArgs {
        sample_weight: Some(w.clone()),
        epochs: 2,
        ..args(2 * B)
    };
    for p in pairs {
        let devs: Vec<&str> = p.iter().map(String::as_str).collect();
        for r in [
            Reduction::SumOverBatchSize,
            Reduction::Sum,
            Reduction::MeanWithSampleWeight,
        ] {
            let loss = || SparseCategoricalCrossentropy::new(true).with_reduction(r);
            let strategy = MirroredStrategy::new(&devs).unwrap();
            let mut mirrored = strategy.scope(mlp).unwrap();
            let d0 = strategy.devices()[0].clone();
            let mut single = mlp(&d0).unwrap();
            mirrored.compile(SGD::new(0.05), loss(), ());
            single.compile(SGD::new(0.05), loss(), ());
            mirrored.set_weighted_metrics(SparseCategoricalAccuracy::new()).unwrap();
            single.set_weighted_metrics(SparseCategoricalAccuracy::new()).unwrap();
            let hm = mirrored.fit(&x, &y, weighted(&w)).unwrap();
            let mut a = weighted(&w);
            a.device = Some(d0.clone());
            let hs = single.fit(&x, &y, a).unwrap();
            for k in ["loss", "sparse_categorical_accuracy"] {
                for (lm, ls) in hm.get(k).unwrap().iter().zip(hs.get(k).unwrap()) {
                    assert!(
                        (lm - ls).abs() <= 1e-4 * ls.abs().max(1.0),
                        "{devs:?} {r:?}: {k} {lm} vs {ls}"
                    );
                }
            }
            for (a, b) in weights(&mirrored.replicas()[0]).iter().zip(&weights(&single)) {
                for (p, q) in a.iter().zip(b) {
                    assert!(
                        (p - q).abs() <= 1e-5 + 1e-4 * q.abs(),
                        "{devs:?} {r:?}: weight {p} vs {q}"
                    );
                }
            }
        }
        let strategy = MirroredStrategy::new(&devs).unwrap();
        let mut mirrored = strategy.scope(mlp).unwrap();
        let none = SparseCategoricalCrossentropy::new(true).with_reduction(Reduction::None);
        assert_eq!(none.reduction(), Reduction::None);
        mirrored.compile(SGD::new(0.05), none, ());
        let e = mirrored.fit(&x, &y, weighted(&w)).unwrap_err();
        assert!(e.to_string().contains("reduction"), "{e}");
    }
}

/// Child: the comparison on two logical GPUs of one adapter.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_logical_pair() {
    compare(&["gpu:0", "gpu:1"], true, 6 * 2 * B + 1);
    println!("DONE ok");
}

#[test]
fn two_logical_gpus_of_one_adapter() {
    if gpus().is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    let (ok, out, err) = run_child("child_logical_pair", &[("WGFLOW_LOGICAL_DEVICES", "0:256,256")]);
    assert!(ok && tagged(&out, "DONE").len() == 1, "{out}\n{err}");
}

#[test]
fn bad_strategies_are_typed_errors() {
    let e = MirroredStrategy::new(&["gpu:99"]).unwrap_err();
    assert!(e.to_string().contains("gpu:99"), "{e}");
    let e = MirroredStrategy::new(&["cpu", "cpu"]).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    assert!(MirroredStrategy::new(&[]).is_err());
    assert!(MirroredStrategy::new(&["tpu:0"]).is_err());
    let s = MirroredStrategy::default().unwrap();
    assert!(s.num_replicas_in_sync() >= 1);
    if let Some(g) = gpus().first() {
        let g = g.to_string();
        let s = MirroredStrategy::new(&[&g, "cpu"]).unwrap();
        assert_eq!(s.num_replicas_in_sync(), 2);
        // A build that ignores the device it is given.
        let e = s.scope(|_| mlp(&Device::Cpu)).err().unwrap();
        assert!(e.to_string().contains("not on the replica's device"), "{e}");
        // A build that makes different models.
        let mut k = 0;
        let e = s
            .scope(|d| {
                k += 1;
                let mut m = Sequential::new().add(Flatten::new()).add(Dense::new(3 + k));
                m.build(&[2], d)?;
                Ok(m)
            })
            .err()
            .unwrap();
        assert!(e.to_string().contains("replica 1"), "{e}");
        let mut m = s.scope(mlp).unwrap();
        let (x, y) = data(8);
        // fit before compile, and a global batch smaller than the replicas.
        assert!(matches!(m.fit(&x, &y, args(4)), Err(Error::InvalidArgument { .. })));
        m.compile(
            SGD::new(0.1),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let e = m.fit(&x, &y, args(1)).unwrap_err();
        assert!(e.to_string().contains("smaller than the 2 replicas"), "{e}");
        // A replica swapped for a different model after the scope: a typed
        // error at the all-reduce, not a panic.
        let mut other = Sequential::new().add(Flatten::new()).add(Dense::new(10));
        other.build(&[6, 6, 1], &Device::Cpu).unwrap();
        m.replicas_mut()[1] = other;
        let e = m.fit(&x, &y, args(4)).unwrap_err();
        assert!(e.to_string().contains("replicas disagree"), "{e}");
        // run / reduce / distribute a dataset.
        let per = s
            .run(|i, d| Tensor::from_vec(vec![i as f32 + 1.0; 3], &[3], d))
            .unwrap();
        assert_eq!(
            s.reduce(ReduceOp::Sum, &per).unwrap().to_vec::<f32>().unwrap(),
            vec![3.0; 3]
        );
        assert_eq!(
            s.reduce(ReduceOp::Mean, &per).unwrap().to_vec::<f32>().unwrap(),
            vec![1.5; 3]
        );
        let ds = wgflow::data::Dataset::from_tensor_slices(std::slice::from_ref(&x))
            .unwrap()
            .batch(5, false)
            .unwrap();
        let parts: Vec<Vec<Tensor>> = s
            .experimental_distribute_dataset(&ds)
            .iter()
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(parts[0][0].shape()[0], 3);
        assert_eq!(parts[0][1].shape()[0], 2);
        assert_eq!(parts[0][1].device(), &Device::Cpu);
        assert_eq!(parts[1][0].shape()[0], 2);
        let _ = config::list_logical_devices().unwrap();
    }
}

/// Keras' `steps_per_epoch`: each epoch ends after that many batches, on
/// one device and mirrored.
#[test]
fn steps_per_epoch_ends_each_epoch() {
    let (x, y) = data(5 * 2 * B);
    let mut a = args(2 * B);
    a.steps_per_epoch = Some(2);
    a.epochs = 3;
    let mut single = mlp(&Device::Cpu).unwrap();
    single.compile(
        SGD::new(0.1),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    single.fit(&x, &y, a).unwrap();
    assert_eq!(single.compiled().as_ref().unwrap().optimizer.iterations(), 6);
    if let Some(g) = gpus().first() {
        let g = g.to_string();
        let s = MirroredStrategy::new(&[&g, "cpu"]).unwrap();
        let mut m = s.scope(mlp).unwrap();
        m.compile(
            SGD::new(0.1),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let mut a = args(2 * B);
        a.steps_per_epoch = Some(2);
        a.epochs = 3;
        m.fit(&x, &y, a).unwrap();
        assert_eq!(
            m.replicas_mut()[0].compiled().as_ref().unwrap().optimizer.iterations(),
            6
        );
    }
}

/// Fails `fit` at the end of epoch `at` (a job killed mid-run).
struct Crash {
    at: usize,
}

impl wgflow::nn::callbacks::Callback for Crash {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        _logs: &wgflow::nn::Logs,
        _opt: Option<&wgflow::nn::optimizers::Optimizer>,
        _step: u64,
        _ctx: &mut wgflow::nn::callbacks::TrainContext,
    ) -> wgflow::Result<()> {
        if epoch == self.at {
            return Err(Error::Unimplemented {
                what: "a crash".into(),
                msg: format!("after epoch {epoch}"),
            });
        }
        Ok(())
    }
}

/// `BackupAndRestore`: a run that dies after epoch 2 is resumed by the next
/// `fit` at epoch 3 and ends where an uninterrupted run ends; a finished
/// run deletes its backup. On one device and mirrored.
#[test]
fn backup_and_restore_resumes_after_the_last_finished_epoch() {
    use wgflow::nn::callbacks::BackupAndRestore;
    let (x, y) = data(4 * 2 * B);
    let dir = std::env::temp_dir().join(format!("wgflow-bnr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |epochs: usize,
               callbacks: Vec<Box<dyn wgflow::nn::callbacks::Callback>>,
               m: &mut dyn FnMut(FitArgs) -> wgflow::Result<wgflow::nn::History>| {
        let mut a = args(2 * B);
        a.epochs = epochs;
        a.callbacks = callbacks;
        // A resumed run draws each epoch's shuffle order as an uninterrupted one.
        a.shuffle = true;
        a.seed = 9;
        m(a)
    };
    let mut devices = vec![vec!["cpu".to_string()]];
    if let Some(g) = gpus().first() {
        devices.push(vec![g.to_string(), "cpu".to_string()]);
    }
    for devs in devices {
        let refs: Vec<&str> = devs.iter().map(String::as_str).collect();
        let s = MirroredStrategy::new(&refs).unwrap();
        let compile = |m: &mut wgflow::distribute::Mirrored<Sequential>| {
            m.compile(
                Adam::new(0.01),
                SparseCategoricalCrossentropy::new(true),
                SparseCategoricalAccuracy::new(),
            )
        };
        // Uninterrupted: 4 epochs.
        let mut whole = s.scope(mlp).unwrap();
        compile(&mut whole);
        run(4, vec![], &mut |a| whole.fit(&x, &y, a)).unwrap();
        // Killed after epoch index 1 (two finished), then restarted from scratch.
        let mut first = s.scope(mlp).unwrap();
        compile(&mut first);
        let e = run(
            4,
            vec![Box::new(BackupAndRestore::new(&dir)), Box::new(Crash { at: 1 })],
            &mut |a| first.fit(&x, &y, a),
        )
        .unwrap_err();
        assert!(e.to_string().contains("crash"), "{e}");
        assert!(dir.exists());
        let mut second = s.scope(mlp).unwrap();
        compile(&mut second);
        let h = run(4, vec![Box::new(BackupAndRestore::new(&dir))], &mut |a| {
            second.fit(&x, &y, a)
        })
        .unwrap();
        assert_eq!(h.epochs, vec![2, 3], "{devs:?}: resumed at the third epoch");
        assert!(!dir.exists(), "a finished run deletes its backup");
        let (a, b) = (weights(&whole.replicas()[0]), weights(&second.replicas()[0]));
        for (p, q) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((p - q).abs() <= 1e-5 + 1e-4 * q.abs(), "{devs:?}: {p} vs {q}");
        }
        for r in second.replicas().iter().skip(1) {
            assert_eq!(weights(r), b);
        }
    }
    // A plain model's fit resumes the same way.
    let plain = || {
        let mut m = mlp(&Device::Cpu).unwrap();
        m.compile(
            Adam::new(0.01),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        m
    };
    let mut whole = plain();
    run(4, vec![], &mut |a| whole.fit(&x, &y, a)).unwrap();
    let mut first = plain();
    assert!(
        run(
            4,
            vec![Box::new(BackupAndRestore::new(&dir)), Box::new(Crash { at: 2 })],
            &mut |a| first.fit(&x, &y, a)
        )
        .is_err()
    );
    let mut second = plain();
    let h = run(4, vec![Box::new(BackupAndRestore::new(&dir))], &mut |a| {
        second.fit(&x, &y, a)
    })
    .unwrap();
    assert_eq!(h.epochs, vec![3]);
    for (p, q) in weights(&whole).iter().flatten().zip(weights(&second).iter().flatten()) {
        assert!((p - q).abs() <= 1e-5 + 1e-4 * q.abs(), "{p} vs {q}");
    }
}

/// Gradients travel back in packs: a strategy whose packs hold one
/// gradient each trains to bit-identical weights as one pack, and starts
/// more reads per step.
#[test]
fn packs_of_any_size_train_alike() {
    // In its own process: the device counters are shared with concurrent
    // tests.
    let (ok, out, err) = run_child("child_packs", &[]);
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(
        out.contains("test child_packs ... ok") || out.contains("SKIPPED"),
        "{out}\n{err}"
    );
}

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_packs() {
    let pairs = pairs();
    if pairs.is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    use wgflow::distribute::CommunicationOptions;
    let devs: Vec<&str> = pairs[0].iter().map(String::as_str).collect();
    let (x, y) = data(6 * 2 * B);
    let run = |pack: usize| {
        let strategy = MirroredStrategy::new(&devs)
            .unwrap()
            .with_communication_options(CommunicationOptions { bytes_per_pack: pack });
        let mut m = strategy.scope(mlp).unwrap();
        m.compile(
            Adam::new(0.01),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let d0 = strategy.devices()[0].clone();
        m.fit(&x, &y, args(2 * B)).unwrap(); // traces
        let before = d0.counters().reads;
        let h = m.fit(&x, &y, args(2 * B)).unwrap();
        (
            weights(&m.replicas()[0]),
            h.get("loss").unwrap()[0],
            d0.counters().reads - before,
        )
    };
    let (w_one, l_one, r_one) = run(0);
    let (w_many, l_many, r_many) = run(4);
    assert_eq!(w_many, w_one, "{devs:?}: packs of 4 bytes changed the weights");
    assert_eq!(l_many, l_one);
    // 4 gradients, the loss and the predictions: one read-back each per
    // step instead of one for all, 6 steps. Counted as reads, not
    // submissions: other submissions (the pool waiting for buffers) depend
    // on timing.
    assert_eq!(
        r_many,
        r_one + 6 * 5,
        "{devs:?}: {r_many} read-backs with a pack per output, {r_one} with one pack"
    );
}

/// A replayed graph reports each output as soon as the node computing it
/// is queued, before the rest of the graph: the first matmul's result is
/// ready after one launch, the last one's after all of them.
#[test]
fn outputs_are_ready_as_the_graph_computes_them() {
    let gpus = gpus();
    if gpus.is_empty() {
        println!("SKIPPED: no GPU (WGFLOW_ALLOW_NO_GPU)");
        return;
    }
    for d in gpus {
        let x = randn(&[8, 8], 3, DType::F32).to_device(&d).unwrap();
        let body = |b: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
            let first = b[0].matmul(&b[0])?;
            let mut last = first.clone();
            for _ in 0..4 {
                last = last.matmul(&b[0])?;
            }
            Ok(vec![last, first])
        };
        let mut f = wgflow::function::Traced::new("chain");
        let traced = f.call(std::slice::from_ref(&x), body).unwrap();
        let mut seen: Vec<(usize, u64)> = Vec::new();
        let out = f
            .call_observed(std::slice::from_ref(&x), body, &mut |i, _| {
                seen.push((i, d.counters().dispatches));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 0],
            "{d}: {seen:?}"
        );
        assert!(seen[1].1 >= seen[0].1 + 4, "{d}: {seen:?}");
        for (a, b) in out.iter().zip(&traced) {
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        }
    }
}
