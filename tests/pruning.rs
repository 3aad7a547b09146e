//! Magnitude pruning (`nn::pruning`, tfmot's API): the schedules' values,
//! masks updated only on pruning steps and holding k = max(round(n(1-s)), 1)
//! weights, eager and traced `fit`, the callback being required,
//! `strip_pruning`, summaries, and typed errors for bad schedules.

mod common;
use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use wgflow::data::synthetic;
use wgflow::nn::callbacks::{Callback, TrainContext};
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::pruning::{
    ConstantSparsity, PolynomialDecay, PruningSummaries, Schedule, UpdatePruningStep, prune_low_magnitude,
    strip_pruning,
};
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{Device, Error, Tensor, Variable};

#[test]
fn polynomial_decay_gives_tfmots_values() {
    let s: Schedule = PolynomialDecay::new(0.0, 0.5, 2000, 4000).into();
    assert_eq!(s.prune_at(1900), None);
    let want = [
        (2000, 0.0),
        (2100, 0.0713125),
        (2500, 0.2890625),
        (3000, 0.4375),
        (3500, 0.4921875),
        (3900, 0.4999375),
        (4000, 0.5),
    ];
    for (step, sparsity) in want {
        let got = s.prune_at(step).unwrap_or_else(|| panic!("step {step} prunes"));
        assert!(
            (got - sparsity as f32).abs() <= 1e-7,
            "step {step}: {got}, want {sparsity}"
        );
    }
    for step in [1999, 2050, 2101, 4001, 4100, 5000] {
        assert_eq!(s.prune_at(step), None, "step {step}");
    }
    let c: Schedule = ConstantSparsity::new(0.8, 10).into();
    assert_eq!(c.prune_at(9), None);
    assert_eq!(c.prune_at(10), Some(0.8));
    assert_eq!(c.prune_at(110), Some(0.8));
    assert_eq!(c.prune_at(111), None);
}

#[test]
fn bad_schedules_and_layers_are_typed_errors() {
    let bad: Vec<Schedule> = vec![
        PolynomialDecay::new(0.0, 1.0, 0, 10).into(),
        PolynomialDecay::new(-0.1, 0.5, 0, 10).into(),
        PolynomialDecay::new(0.0, 0.5, 20, 10).into(),
        PolynomialDecay {
            frequency: 0,
            ..PolynomialDecay::new(0.0, 0.5, 0, 10)
        }
        .into(),
        ConstantSparsity::new(1.5, 0).into(),
        ConstantSparsity::new(f64::NAN, 0).into(),
    ];
    for s in bad {
        let e = prune_low_magnitude(Dense::new(4), s.clone())
            .err()
            .unwrap_or_else(|| panic!("{s:?} accepted"));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    }
    let flat: Box<dyn wgflow::nn::Layer> = Box::new(Flatten::new());
    let e = prune_low_magnitude(flat, ConstantSparsity::new(0.5, 0)).err().unwrap();
    assert!(e.to_string().contains("only Dense and Conv2D"), "{e}");
}

fn data() -> (Tensor, Tensor) {
    synthetic::digits(512, 3).unwrap()
}

fn cnn(d: &Device, s: impl Into<Schedule>) -> Sequential {
    set_random_seed(5);
    let mut m = Sequential::new()
        .add(Conv2D::new(8, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).unwrap();
    let mut m = prune_low_magnitude(m, s).unwrap();
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    m
}

fn kernels(m: &Sequential) -> Vec<Variable> {
    m.named_variables()
        .into_iter()
        .filter(|(n, _)| n.ends_with("kernel"))
        .map(|(_, v)| v)
        .collect()
}

fn zero_fraction(v: &Variable) -> f64 {
    let w = v.value().to_f64_vec().unwrap();
    w.iter().filter(|&&x| x == 0.0).count() as f64 / w.len() as f64
}

/// Records each kernel's zero fraction after every batch.
struct Recorder(Vec<Variable>, Arc<Mutex<Vec<Vec<f64>>>>);

impl Callback for Recorder {
    fn on_train_batch_end(&mut self, _step: u64, _loss: &Tensor, _ctx: &mut TrainContext) -> wgflow::Result<()> {
        self.1.lock().unwrap().push(self.0.iter().map(zero_fraction).collect());
        Ok(())
    }
}

fn fit(m: &mut Sequential, epochs: usize, callbacks: Vec<Box<dyn Callback>>) -> wgflow::Result<()> {
    let (x, y) = data();
    m.fit(
        &x,
        &y,
        FitArgs {
            batch_size: 64,
            epochs,
            callbacks,
            verbose: false,
            ..FitArgs::default()
        },
    )?;
    Ok(())
}

#[test]
fn masks_follow_the_schedule_eager_and_traced() {
    let d = Device::Cpu;
    for eager in [true, false] {
        // 8 steps per epoch, 16 in all: pruning steps 2, 5, 8.
        let schedule = PolynomialDecay {
            frequency: 3,
            ..PolynomialDecay::new(0.1, 0.6, 2, 8)
        };
        let s: Schedule = schedule.clone().into();
        let mut m = cnn(&d, schedule);
        m.set_run_eagerly(eager).unwrap();
        let ks = kernels(&m);
        let log = Arc::new(Mutex::new(Vec::new()));
        let cbs: Vec<Box<dyn Callback>> = vec![
            Box::new(UpdatePruningStep::new()),
            Box::new(Recorder(ks.clone(), log.clone())),
        ];
        fit(&mut m, 2, cbs).unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 16);
        for (step, fractions) in log.iter().enumerate() {
            let last = (0..=step as i64).rev().find_map(|t| s.prune_at(t));
            for (k, (&got, v)) in fractions.iter().zip(&ks).enumerate() {
                let n = v.numel() as f64;
                match last {
                    None => assert!(
                        got < 0.05,
                        "eager {eager} step {step} kernel {k}: {got} zeros before pruning"
                    ),
                    Some(sp) => {
                        let keep = (n * (1.0 - f64::from(sp))).round().max(1.0);
                        let want = (n - keep) / n;
                        assert!(
                            got >= want - 1e-9 && got <= want + 1.0 / n + 1e-9,
                            "eager {eager} step {step} kernel {k}: {got}, want {want}"
                        );
                    }
                }
            }
        }
        let stripped = strip_pruning(m).unwrap();
        assert!(stripped.layers().iter().all(|l| l.kind() != "PruneLowMagnitude"));
        for v in kernels(&stripped) {
            let n = v.numel() as f64;
            let want = (n - (n * 0.4).round()) / n;
            assert!(
                (zero_fraction(&v) - want).abs() <= 1.0 / n,
                "{}: {}",
                v.name(),
                zero_fraction(&v)
            );
        }
    }
}

#[test]
fn training_without_update_pruning_step_is_an_error() {
    let d = Device::Cpu;
    for eager in [true, false] {
        let mut m = cnn(&d, ConstantSparsity::new(0.5, 0));
        m.set_run_eagerly(eager).unwrap();
        let e = fit(&mut m, 1, vec![]).unwrap_err();
        assert!(e.to_string().contains("UpdatePruningStep"), "{e}");
    }
    // The callback on a model without pruned layers.
    set_random_seed(1);
    let mut plain = Sequential::new().add(Flatten::new()).add(Dense::new(10));
    plain.build(&[28, 28, 1], &d).unwrap();
    plain.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let e = fit(&mut plain, 1, vec![Box::new(UpdatePruningStep::new())]).unwrap_err();
    assert!(e.to_string().contains("no pruned layers"), "{e}");
}

fn gzip_len(bytes: &[u8]) -> usize {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap().len()
}

#[test]
fn stripped_sparse_models_export_and_compress() {
    let d = Device::Cpu;
    let tmp = TempDir::new("pruning-export");
    let mut sizes = Vec::new();
    for sparsity in [0.0, 0.8] {
        let mut m = cnn(
            &d,
            ConstantSparsity {
                frequency: 1,
                ..ConstantSparsity::new(sparsity, 0)
            },
        );
        let logs = tmp.join(format!("logs{sparsity}"));
        fit(
            &mut m,
            1,
            vec![
                Box::new(UpdatePruningStep::new()),
                Box::new(PruningSummaries::new(&logs)),
            ],
        )
        .unwrap();
        let event = std::fs::read_dir(&logs).unwrap().next().unwrap().unwrap().path();
        let bytes = std::fs::read(event).unwrap();
        assert!(bytes.windows(8).any(|w| w == b"sparsity") && bytes.windows(9).any(|w| w == b"threshold"));
        let mut m = strip_pruning(m).unwrap();
        let dir = tmp.join(format!("sm{sparsity}"));
        m.export(&dir).unwrap();
        let data = std::fs::read_dir(dir.join("variables"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("data"))
            .unwrap();
        sizes.push(gzip_len(&std::fs::read(data).unwrap()));
        // The stripped model predicts with its zeros, as exported.
        let (x, _) = data_batch();
        let loaded = wgflow::saved_model::load_with(&dir, &["serve"], &d);
        assert!(loaded.is_ok());
        m.call(&x, false).unwrap();
    }
    assert!(
        sizes[0] as f64 / sizes[1] as f64 >= 2.5,
        "gzip: dense {} vs 80% sparse {}",
        sizes[0],
        sizes[1]
    );
}

fn data_batch() -> (Tensor, Tensor) {
    synthetic::digits(8, 9).unwrap()
}
