//! Checkpoints: round trip, resume with the optimizer's state, every kind of
//! corruption giving a typed error with the variables left as they were,
//! the manager's pruning and index, and readability by a plain safetensors
//! parser.

mod common;
use common::TempDir;
use wgflow::io::checkpoint::{Checkpoint, CheckpointManager, OptimizerState, latest_checkpoint};
use wgflow::nn::layers::Dense;
use wgflow::nn::losses::MeanSquaredError;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, Tensor, ops};

fn dir(name: &str) -> TempDir {
    TempDir::new(&format!("ckpt-{name}"))
}

fn model(seed: u64) -> Sequential {
    set_random_seed(seed);
    let mut m = Sequential::new()
        .add(Dense::new(5).activation(Activation::Tanh))
        .add(Dense::new(2));
    m.build(&[3], &Device::Cpu).unwrap();
    m.compile(Adam::new(0.01), MeanSquaredError, vec![]);
    m
}

fn values(m: &Sequential) -> Vec<Vec<f32>> {
    m.variables()
        .iter()
        .map(|v| v.value().to_vec::<f32>().unwrap())
        .collect()
}

fn train_a_bit(m: &mut Sequential, steps: usize) {
    let x = ops::random_normal(&[8, 3], 0.0, 1.0, DType::F32, 1, &Device::Cpu).unwrap();
    let y = ops::random_normal(&[8, 2], 0.0, 1.0, DType::F32, 2, &Device::Cpu).unwrap();
    for _ in 0..steps {
        m.train_step(&x, &y).unwrap();
    }
}

fn ckpt(m: &Sequential) -> Checkpoint {
    Checkpoint::new().track("model", m.named_variables())
}

#[test]
fn round_trip_and_resume_with_optimizer_state() {
    let d = dir("roundtrip");
    let mut a = model(1);
    train_a_bit(&mut a, 3);
    let path = d.join("a.safetensors");
    let names = ckpt(&a);
    let opt = &a.compiled().as_ref().unwrap().optimizer;
    names.save(&path, 3, Some(opt)).unwrap();
    // A different model of the same structure takes the weights and Adam's state.
    let mut b = model(2);
    assert_ne!(values(&a), values(&b));
    let meta = {
        let names = ckpt(&b);
        let opt = &mut b.compiled().as_mut().unwrap().optimizer;
        names.restore(&path, Some(opt)).unwrap()
    };
    assert_eq!(meta.step, 3);
    assert_eq!(meta.optimizer_iterations, Some(3));
    assert_eq!(values(&a), values(&b));
    assert_eq!(b.compiled().as_ref().unwrap().optimizer.iterations(), 3);
    // Resuming continues exactly where the original goes.
    train_a_bit(&mut a, 2);
    train_a_bit(&mut b, 2);
    assert_eq!(values(&a), values(&b));
}

#[test]
fn files_are_plain_safetensors_with_crcs() {
    let d = dir("format");
    let a = model(3);
    let path = d.join("w.safetensors");
    ckpt(&a).save(&path, 0, None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "model/layers/0/bias",
            "model/layers/0/kernel",
            "model/layers/1/bias",
            "model/layers/1/kernel"
        ]
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["format"], "wgflow-checkpoint-1");
    for n in &names {
        assert!(meta.contains_key(&format!("crc32c/{n}")));
    }
    let k = st.tensor("model/layers/0/kernel").unwrap();
    assert_eq!(k.shape(), &[3, 5]);
}

fn expect_io_error(r: wgflow::Result<wgflow::io::checkpoint::Meta>, want: &str) {
    match r {
        Err(Error::Io { msg, .. }) => assert!(msg.contains(want), "{msg} (wanted {want})"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("restore should fail ({want})"),
    }
}

#[test]
fn corrupt_files_are_typed_errors_and_change_nothing() {
    let d = dir("corrupt");
    let a = model(4);
    let good = d.join("good.safetensors");
    ckpt(&a).save(&good, 1, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let b = model(5);
    let before = values(&b);
    let bad = d.join("bad.safetensors");
    // Truncated.
    std::fs::write(&bad, &bytes[..bytes.len() - 7]).unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "safetensors");
    std::fs::write(&bad, &bytes[..5]).unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "safetensors");
    // One flipped byte in the last tensor's data.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x40;
    std::fs::write(&bad, &flipped).unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "corrupt");
    // A missing tensor: save only some of the variables.
    let partial = Checkpoint::new().track("model", a.named_variables().into_iter().take(3).collect());
    partial.save(&bad, 1, None).unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "missing");
    // A misshapen tensor: another architecture under the same names.
    set_random_seed(6);
    let mut other = Sequential::new().add(Dense::new(4)).add(Dense::new(2));
    other.build(&[3], &Device::Cpu).unwrap();
    Checkpoint::new()
        .track("model", other.named_variables())
        .save(&bad, 1, None)
        .unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "in the file but");
    // A checkpoint of a bigger model.
    let mut bigger = Sequential::new()
        .add(Dense::new(5))
        .add(Dense::new(2))
        .add(Dense::new(1));
    bigger.build(&[3], &Device::Cpu).unwrap();
    Checkpoint::new()
        .track("model", bigger.named_variables())
        .save(&bad, 1, None)
        .unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "another model");
    // Not a checkpoint at all.
    std::fs::write(&bad, b"hello").unwrap();
    expect_io_error(ckpt(&b).restore(&bad, None), "safetensors");
    assert!(ckpt(&b).restore(&d.join("absent.safetensors"), None).is_err());
    assert_eq!(values(&b), before, "a failed restore assigned something");
    // And the good file still restores.
    ckpt(&b).restore(&good, None).unwrap();
    assert_eq!(values(&b), values(&a));
}

#[test]
fn manager_keeps_the_last_n_and_survives_a_crashed_save() {
    let d = dir("manager");
    let mut m = model(7);
    let manager = CheckpointManager::new(ckpt(&m), &d, 2);
    assert_eq!(manager.latest_checkpoint(), None);
    for step in 1..=4 {
        train_a_bit(&mut m, 1);
        let opt = m.compiled().as_ref().map(|c| &c.optimizer as &dyn OptimizerState);
        let p = manager.save(step, opt).unwrap();
        assert!(p.ends_with(format!("ckpt-{step}.safetensors")));
    }
    let kept: Vec<String> = manager
        .checkpoints()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, vec!["ckpt-3.safetensors", "ckpt-4.safetensors"]);
    let index = std::fs::read_to_string(d.join("checkpoint")).unwrap();
    assert!(
        index.starts_with("model_checkpoint_path: \"ckpt-4.safetensors\""),
        "{index}"
    );
    assert_eq!(latest_checkpoint(&d).unwrap(), d.join("ckpt-4.safetensors"));
    // A save that died before its rename leaves only a temporary file.
    std::fs::write(d.join("ckpt-5.safetensors.tmp-999"), b"half a file").unwrap();
    assert_eq!(latest_checkpoint(&d).unwrap(), d.join("ckpt-4.safetensors"));
    let want = values(&m);
    let mut fresh = model(8);
    let names = ckpt(&fresh);
    let meta = names
        .restore(
            &latest_checkpoint(&d).unwrap(),
            fresh
                .compiled()
                .as_mut()
                .map(|c| &mut c.optimizer as &mut dyn OptimizerState),
        )
        .unwrap();
    assert_eq!(meta.step, 4);
    assert_eq!(values(&fresh), want);
}

#[test]
fn restore_onto_a_gpu_model() {
    // Fails without a GPU unless WGFLOW_ALLOW_NO_GPU=1 (then it says it skipped).
    let Some(g) = common::gpus().into_iter().next() else {
        return;
    };
    let d = dir("gpu");
    let a = model(9);
    let path = d.join("w.safetensors");
    ckpt(&a).save(&path, 0, None).unwrap();
    set_random_seed(10);
    let mut b = Sequential::new()
        .add(Dense::new(5).activation(Activation::Tanh))
        .add(Dense::new(2));
    b.build(&[3], &g).unwrap();
    ckpt(&b).restore(&path, None).unwrap();
    for v in b.variables() {
        assert!(v.device().is_gpu());
    }
    let x = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], &[1, 3], &Device::Cpu).unwrap();
    let mut a = a;
    let ya = a.call(&x, false).unwrap().to_vec::<f32>().unwrap();
    let yb = b
        .call(&x.to_device(&g).unwrap(), false)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for (p, q) in ya.iter().zip(&yb) {
        assert!((p - q).abs() < 1e-5);
    }
}

/// Saves racing on one path (threads of one process) never share a
/// temporary file: each succeeds, the file left is one of theirs, whole,
/// and no temporary file stays behind.
#[test]
fn concurrent_saves_to_one_path_all_succeed_and_never_tear_the_file() {
    let d = dir("concurrent");
    let path = d.join("race.safetensors");
    let models: Vec<Sequential> = (0..6).map(|i| model(20 + i)).collect();
    let expected: Vec<Vec<Vec<f32>>> = models.iter().map(values).collect();
    let ckpts: Vec<Checkpoint> = models.iter().map(ckpt).collect();
    std::thread::scope(|s| {
        for c in &ckpts {
            let path = &path;
            s.spawn(move || {
                for step in 0..5 {
                    c.save(path, step, None).unwrap();
                }
            });
        }
    });
    let fresh = model(99);
    ckpt(&fresh).restore(&path, None).unwrap();
    let got = values(&fresh);
    assert!(expected.contains(&got), "the file holds one writer's whole checkpoint");
    let left: Vec<String> = std::fs::read_dir(&*d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// Rewrites the checkpoint at `from` into `to`, tensor by tensor: `edit`
/// drops one (`None`) or changes its dtype; the metadata (CRCs) is kept.
fn rewrite(
    from: &std::path::Path,
    to: &std::path::Path,
    edit: impl Fn(&str, safetensors::Dtype) -> Option<safetensors::Dtype>,
) {
    use safetensors::SafeTensors;
    use safetensors::tensor::TensorView;
    let bytes = std::fs::read(from).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| {
            let dtype = edit(&n, v.dtype())?;
            Some((n, TensorView::new(dtype, v.shape().to_vec(), v.data()).unwrap()))
        })
        .collect();
    std::fs::write(to, safetensors::tensor::serialize(views, meta).unwrap()).unwrap();
}

/// The values of every slot of `m`'s optimizer, variable by variable.
fn slot_values(m: &mut Sequential) -> Vec<Vec<f32>> {
    let vars = m.variables();
    let opt = &m.compiled().as_ref().unwrap().optimizer;
    vars.iter()
        .flat_map(|v| opt.existing_slots(v).unwrap().to_vec())
        .map(|s| s.value().to_vec::<f32>().unwrap())
        .collect()
}

/// Optimizer slots pair with the optimizer's by name: a file with Adam's
/// `v` but not its `m` is an error (not `v` restored as `m`), and so is a
/// slot of another dtype; nothing is assigned.
#[test]
fn optimizer_slots_pair_by_name_and_dtype() {
    let d = dir("slots");
    let mut a = model(7);
    train_a_bit(&mut a, 2);
    let full = d.join("full.safetensors");
    ckpt(&a)
        .save(&full, 2, Some(&a.compiled().as_ref().unwrap().optimizer))
        .unwrap();
    let mut b = model(8);
    train_a_bit(&mut b, 1);
    let before = values(&b);
    let slots_before = slot_values(&mut b);
    let restore = |path: &std::path::Path, b: &mut Sequential| {
        let names = ckpt(b);
        let opt = &mut b.compiled().as_mut().unwrap().optimizer;
        names.restore(path, Some(opt))
    };
    let no_m = d.join("no-m.safetensors");
    rewrite(&full, &no_m, |n, dt| (!n.ends_with("/m")).then_some(dt));
    expect_io_error(restore(&no_m, &mut b), "/m is missing");
    let int_v = d.join("int-v.safetensors");
    rewrite(&full, &int_v, |n, dt| {
        Some(if n.ends_with("/v") { safetensors::Dtype::I32 } else { dt })
    });
    expect_io_error(restore(&int_v, &mut b), "in the file, not float32");
    assert_eq!(values(&b), before, "a failed restore assigned a variable");
    assert_eq!(slot_values(&mut b), slots_before, "a failed restore assigned a slot");
    // Without any slots of a variable: the variables restore, the slots
    // stay (a fresh optimizer state), as before.
    let no_slots = d.join("no-slots.safetensors");
    rewrite(&full, &no_slots, |n, dt| (!n.starts_with("optimizer/")).then_some(dt));
    restore(&no_slots, &mut b).unwrap();
    assert_eq!(values(&b), values(&a));
    // The full file restores every slot.
    restore(&full, &mut b).unwrap();
    train_a_bit(&mut a, 1);
    train_a_bit(&mut b, 1);
    assert_eq!(values(&a), values(&b));
}
