//! Keras mixed precision: the `mixed_float16` and `mixed_bfloat16` policies
//! (layers compute in f16 or bf16, keep f32 variables, the model's output is
//! f32) and `LossScaleOptimizer` (dynamic loss scaling that skips non-finite
//! steps), eager and traced, on every adapter and the CPU device.

mod common;
use common::*;
use wgflow::nn::layers::{BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::mixed_precision::{Policy, global_policy, set_global_policy};
use wgflow::nn::optimizers::{
    Adam, CosineDecay, ExponentialDecay, LearningRate, LearningRateSchedule, LossScaleOptimizer, Optimizer, SGD,
};
use wgflow::nn::{Activation, FitArgs, Layer, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, GradientTape, Tensor, Variable};

fn devices() -> Vec<Device> {
    let mut d = gpus();
    d.push(Device::Cpu);
    d
}

fn cnn(d: &Device, p: &Policy) -> Sequential {
    set_random_seed(4);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu).dtype(p.clone()))
        .add(BatchNormalization::new())
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).dtype(p.clone()));
    m.build(&[8, 8, 1], d).unwrap();
    m
}

fn values(m: &Sequential) -> Vec<Vec<f32>> {
    m.variables()
        .iter()
        .map(|v| v.value().to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn policies_by_name() {
    let p = Policy::new("mixed_float16").unwrap();
    assert_eq!((p.compute_dtype(), p.variable_dtype()), (DType::F16, DType::F32));
    assert_eq!(p, Policy::mixed_float16());
    assert_eq!(Policy::new("float32").unwrap().compute_dtype(), DType::F32);
    assert_eq!(Policy::new("float16").unwrap().variable_dtype(), DType::F16);
    let e = Policy::new("mixed_bfloat17").unwrap_err();
    assert!(e.to_string().contains("mixed_float16"), "{e}");
    assert!(set_global_policy("nope").is_err());
    assert!(e.to_string().contains("mixed_bfloat16"), "{e}");
    let p = Policy::new("mixed_bfloat16").unwrap();
    assert_eq!((p.compute_dtype(), p.variable_dtype()), (DType::BF16, DType::F32));
    assert_eq!((p.name(), p), ("mixed_bfloat16", Policy::mixed_bfloat16()));
    let p = Policy::new("bfloat16").unwrap();
    assert_eq!((p.compute_dtype(), p.variable_dtype()), (DType::BF16, DType::BF16));
    assert_eq!(global_policy(), Policy::float32());
}

/// Layers compute in f16 with f32 variables; the model's output is f32 and
/// within f16 rounding of the same model in f32; gradients reach the f32
/// variables.
#[test]
fn mixed_layers_compute_in_f16_and_keep_f32_variables() {
    for d in devices() {
        let mut mixed = cnn(&d, &Policy::mixed_float16());
        let mut full = cnn(&d, &Policy::float32());
        for v in mixed.variables() {
            assert_eq!(v.dtype(), DType::F32, "{d}: {}", v.name());
        }
        assert_eq!(values(&mixed), values(&full), "same seed, same weights");
        let x = uniform(&[3, 8, 8, 1], -1.0, 1.0, 1, DType::F32).to_device(&d).unwrap();
        let h = mixed.layers_mut()[0].call(&x, false).unwrap();
        assert_eq!(h.dtype(), DType::F16, "{d}: Conv2D computes in f16");
        let y = mixed.call(&x, false).unwrap();
        assert_eq!(y.dtype(), DType::F32, "{d}: the model's output is f32");
        let (a, b) = (
            y.to_vec::<f32>().unwrap(),
            full.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
        );
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 2e-2 + 2e-2 * q.abs(), "{d}: {p} vs {q}");
        }
        let tape = GradientTape::new();
        let loss = mixed
            .call(&x, true)
            .unwrap()
            .square()
            .unwrap()
            .mean(None, false)
            .unwrap();
        let vars = mixed.trainable_variables();
        let refs: Vec<&Variable> = vars.iter().collect();
        let grads = tape.gradient(&loss, &refs).unwrap();
        for (g, v) in grads.iter().zip(&vars) {
            let g = g
                .as_ref()
                .unwrap_or_else(|| panic!("{d}: no gradient for {}", v.name()));
            assert_eq!(g.dtype(), DType::F32, "{d}: {}", v.name());
            assert!(g.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

/// `mixed_bfloat16` as `mixed_float16`: layers compute in bf16 with f32
/// variables, the output is f32 and within bf16 rounding of f32, and the
/// gradients reach the f32 variables; a bf16 policy's layer takes f16
/// inputs too (cast on the way in).
#[test]
fn mixed_bfloat16_layers() {
    for d in devices() {
        let mut mixed = cnn(&d, &Policy::mixed_bfloat16());
        let mut full = cnn(&d, &Policy::float32());
        assert_eq!(values(&mixed), values(&full), "same seed, same weights");
        let x = uniform(&[3, 8, 8, 1], -1.0, 1.0, 1, DType::F32).to_device(&d).unwrap();
        let h = mixed.layers_mut()[0].call(&x, false).unwrap();
        assert_eq!(h.dtype(), DType::BF16, "{d}: Conv2D computes in bf16");
        let y = mixed.call(&x, false).unwrap();
        assert_eq!(y.dtype(), DType::F32, "{d}: the model's output is f32");
        let (a, b) = (
            y.to_vec::<f32>().unwrap(),
            full.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
        );
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 3e-2 * scale, "{d}: {p} vs {q}");
        }
        let grads = |m: &mut Sequential| {
            let tape = GradientTape::new();
            let loss = m.call(&x, true).unwrap().square().unwrap().mean(None, false).unwrap();
            let vars = m.trainable_variables();
            let refs: Vec<&Variable> = vars.iter().collect();
            tape.gradient(&loss, &refs).unwrap()
        };
        for (g, w) in grads(&mut mixed).iter().zip(grads(&mut full)) {
            let (g, w) = (g.as_ref().unwrap(), w.unwrap());
            assert_eq!(g.dtype(), DType::F32, "{d}");
            let (g, w) = (g.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (p, q) in g.iter().zip(&w) {
                assert!((p - q).abs() <= 6e-2 * scale + 1e-6, "{d}: gradient {p} vs {q}");
            }
        }
        let mut l = Dense::new(3).dtype(Policy::mixed_bfloat16());
        let h = uniform(&[2, 4], -1.0, 1.0, 2, DType::F16).to_device(&d).unwrap();
        assert_eq!(l.call(&h, false).unwrap().dtype(), DType::BF16, "{d}");
    }
}

/// A per-layer float32 policy keeps that layer in f32; integer inputs to a
/// float16 layer are a typed error naming the layer.
#[test]
fn per_layer_policies_and_bad_inputs() {
    let d = Device::Cpu;
    let mut l = Dense::new(3).dtype(Policy::float32());
    let x = uniform(&[2, 4], -1.0, 1.0, 2, DType::F16);
    assert_eq!(l.call(&x, false).unwrap().dtype(), DType::F32);
    let mut l = Dense::new(3).dtype(Policy::mixed_float16());
    let ints = randint(&[2, 4], 0, 5, 3).to_device(&d).unwrap();
    let e = l.call(&ints, false).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    assert!(
        e.to_string().contains(l.name()) && e.to_string().contains("mixed_float16"),
        "{e}"
    );
}

/// SGD inside a LossScaleOptimizer takes the step plain SGD takes (the
/// scale is divided out), then a non-finite gradient leaves the variable and
/// the slots alone and halves the scale; after `dynamic_growth_steps` finite
/// steps the scale doubles. Eager, on every device.
#[test]
fn loss_scaling_unscales_skips_and_grows() {
    for d in devices() {
        let w = Variable::new(Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3], &d).unwrap(), "w");
        let w_plain = Variable::new(w.value(), "w_plain");
        let mut opt: Optimizer = LossScaleOptimizer::new(SGD::new(0.1).momentum(0.9))
            .dynamic_growth_steps(2)
            .into();
        let mut plain: Optimizer = SGD::new(0.1).momentum(0.9).into();
        assert_eq!(opt.loss_scale().unwrap(), Some(32768.0));
        let step = |opt: &mut Optimizer, w: &Variable, scaled: bool| {
            let tape = GradientTape::new();
            let loss = w.value().square().unwrap().sum(None, false).unwrap();
            let l = if scaled {
                opt.scale_loss(&loss).unwrap()
            } else {
                loss.clone()
            };
            if scaled {
                let k = l.to_vec::<f32>().unwrap()[0] / loss.to_vec::<f32>().unwrap()[0];
                assert_eq!(k, opt.loss_scale().unwrap().unwrap() as f32);
            }
            let g = tape.gradient(&l, &[w]).unwrap();
            opt.apply_gradients(&g, std::slice::from_ref(w)).unwrap();
        };
        step(&mut opt, &w, true);
        step(&mut plain, &w_plain, false);
        let (a, b) = (
            w.value().to_vec::<f32>().unwrap(),
            w_plain.value().to_vec::<f32>().unwrap(),
        );
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-6, "{d}: {p} vs {q}");
        }
        // A second finite step: two in a row double the scale.
        step(&mut opt, &w, true);
        assert_eq!(opt.loss_scale().unwrap(), Some(65536.0), "{d}");
        // An infinite gradient: skipped, scale halved, momentum untouched.
        let before = w.value().to_vec::<f32>().unwrap();
        let slot = opt.slots_of(&w).unwrap()[0].value().to_vec::<f32>().unwrap();
        let inf = Tensor::from_vec(vec![f32::INFINITY, 1.0, f32::NAN], &[3], &d).unwrap();
        opt.apply_gradients(&[Some(inf)], std::slice::from_ref(&w)).unwrap();
        assert_eq!(
            w.value().to_vec::<f32>().unwrap(),
            before,
            "{d}: a non-finite step changed the variable"
        );
        assert_eq!(
            opt.slots_of(&w).unwrap()[0].value().to_vec::<f32>().unwrap(),
            slot,
            "{d}"
        );
        assert_eq!(opt.loss_scale().unwrap(), Some(32768.0), "{d}");
        // The count restarts: one finite step does not double it.
        step(&mut opt, &w, true);
        assert_eq!(opt.loss_scale().unwrap(), Some(32768.0), "{d}");
        assert!(w.value().to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
}

/// As in Keras, a skipped step is no step: `iterations` leaves it out, and
/// so does Adam's bias correction, so Adam under loss scaling with an
/// overflow between finite steps ends where plain Adam ends after the
/// finite steps alone. Eager and traced, on every device.
#[test]
fn skipped_steps_do_not_count() {
    for d in devices() {
        for traced in [false, true] {
            let on = |v: Vec<f32>| Tensor::from_vec(v, &[3], &d).unwrap();
            let w = Variable::new(on(vec![1.0, -2.0, 3.0]), "w");
            let w_plain = Variable::new(w.value(), "w_plain");
            let mut opt: Optimizer = LossScaleOptimizer::new(Adam::new(0.1)).into();
            let mut plain: Optimizer = Adam::new(0.1).into();
            let g = [0.5f32, -1.0, 2.0];
            let mut f = wgflow::function::Traced::new("step");
            let mut step = |opt: &mut Optimizer, w: &Variable, g: Tensor| {
                if traced {
                    f.call(&[g], |a| {
                        opt.apply_gradients(&[Some(a[0].clone())], std::slice::from_ref(w))?;
                        Ok(vec![])
                    })
                    .unwrap();
                } else {
                    opt.apply_gradients(&[Some(g)], std::slice::from_ref(w)).unwrap();
                }
            };
            // Gradients that change between steps (so that the bias
            // correction shows), scaled (the scale is a power of two: exact).
            let grads = [1.0f32, -0.5, 2.0];
            let scaled = |opt: &Optimizer, c: Option<f32>| {
                let k = opt.loss_scale().unwrap().unwrap() as f32;
                on(g.iter().map(|v| c.map_or(f32::INFINITY, |c| v * (c * k))).collect())
            };
            for c in [Some(grads[0]), None, Some(grads[1]), Some(grads[2])] {
                let x = scaled(&opt, c);
                step(&mut opt, &w, x);
            }
            let mut f = wgflow::function::Traced::new("plain");
            for c in grads {
                let x = on(g.iter().map(|v| v * c).collect());
                if traced {
                    f.call(&[x], |a| {
                        plain.apply_gradients(&[Some(a[0].clone())], std::slice::from_ref(&w_plain))?;
                        Ok(vec![])
                    })
                    .unwrap();
                } else {
                    plain
                        .apply_gradients(&[Some(x)], std::slice::from_ref(&w_plain))
                        .unwrap();
                }
            }
            assert_eq!(opt.loss_scale().unwrap(), Some(16384.0), "{d}");
            assert_eq!((opt.iterations(), plain.iterations()), (3, 3), "{d} traced={traced}");
            let (a, b) = (
                w.value().to_vec::<f32>().unwrap(),
                w_plain.value().to_vec::<f32>().unwrap(),
            );
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-5, "{d} traced={traced}: {a:?} vs {b:?}");
            }
            // A restore sets the count of steps taken.
            opt.set_iterations(10);
            assert_eq!(opt.iterations(), 10);
        }
    }
}

/// Keras 3's own LossScaleOptimizer (tests/python/loss_scale.py) and
/// wgflow's take the same steps: Adam with `dynamic_growth_steps=2` over
/// scaled gradients that change from step to step (so Adam's bias
/// correction, and the count of steps it sees, shows in the variable), one
/// of them non-finite; after each, the same scale, `iterations` and
/// variable. With a constant rate and with ExponentialDecay and CosineDecay
/// schedules (a skipped step does not advance them either), eager and
/// traced, on every device.
#[test]
fn loss_scaling_steps_as_keras_does() {
    let Some(python) = python() else { return };
    let out = py(&python, "loss_scale.py", &[]);
    let keras: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(keras.len(), 18, "{out}");
    let rate = |kind: &str| -> LearningRate {
        match kind {
            "constant" => 0.1.into(),
            "exponential" => ExponentialDecay {
                initial_learning_rate: 0.1,
                decay_steps: 2,
                decay_rate: 0.5,
                staircase: false,
            }
            .into(),
            _ => CosineDecay {
                initial_learning_rate: 0.1,
                decay_steps: 4,
                alpha: 0.1,
            }
            .into(),
        }
    };
    for d in devices() {
        for kind in ["constant", "exponential", "cosine"] {
            for traced in [false, true] {
                let on = |v: Vec<f32>| Tensor::from_vec(v, &[3], &d).unwrap();
                let w = Variable::new(on(vec![1.0, -2.0, 3.0]), "w");
                let mut opt: Optimizer = LossScaleOptimizer::new(Adam::new(rate(kind)))
                    .dynamic_growth_steps(2)
                    .into();
                let mut f = wgflow::function::Traced::new("step");
                let g = [0.5f32, -1.0, 2.0];
                let steps = [Some(1.0f32), Some(-0.5), None, Some(2.0), Some(0.25), Some(-1.5)];
                let want = keras.iter().filter(|k| k["kind"] == kind);
                for (c, want) in steps.into_iter().zip(want) {
                    let k = opt.loss_scale().unwrap().unwrap() as f32;
                    let grad = on(g.iter().map(|v| c.map_or(f32::INFINITY, |c| v * (c * k))).collect());
                    if traced {
                        f.call(&[grad], |a| {
                            opt.apply_gradients(&[Some(a[0].clone())], std::slice::from_ref(&w))?;
                            Ok(vec![])
                        })
                        .unwrap();
                    } else {
                        opt.apply_gradients(&[Some(grad)], std::slice::from_ref(&w)).unwrap();
                    }
                    let at = format!("{d} {kind} traced={traced}: {want}");
                    assert_eq!(opt.loss_scale().unwrap(), want["scale"].as_f64(), "{at}");
                    assert_eq!(Some(opt.iterations()), want["iterations"].as_u64(), "{at}");
                    let kw: Vec<f32> = want["w"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap() as f32)
                        .collect();
                    assert_close(&w.value().to_vec::<f32>().unwrap(), &kw, 1e-4, &at);
                }
            }
        }
    }
}

/// A schedule of one's own that evaluates on the device must give an f32
/// `[1]` tensor; anything else is a typed error naming the method, not a
/// broadcast into the optimizer's hyperparameters.
#[test]
fn a_device_schedule_of_the_wrong_shape_is_an_error() {
    struct Wide;
    impl LearningRateSchedule for Wide {
        fn lr(&self, _: u64) -> f64 {
            0.1
        }
        fn lr_on_device(&self, step: &Tensor) -> Option<wgflow::Result<Tensor>> {
            Some(wgflow::ops::layout::concat(&[step, step], 0))
        }
    }
    let d = Device::Cpu;
    let w = Variable::new(Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap(), "w");
    let mut opt: Optimizer = LossScaleOptimizer::new(SGD::new(Wide)).into();
    let g = Tensor::from_vec(vec![1.0f32, 1.0], &[2], &d).unwrap();
    let e = opt.apply_gradients(&[Some(g)], std::slice::from_ref(&w)).unwrap_err();
    assert!(e.to_string().contains("lr_on_device"), "{e}");
    assert_eq!(w.value().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
}

/// `fit` under a mixed policy, traced and eager, on every device: the loss
/// falls, the variables stay f32 and finite, and compile wrapped the
/// optimizer in a LossScaleOptimizer. A mirrored model with loss scaling
/// is a typed error.
#[test]
fn fit_in_mixed_precision() {
    let (ok, out, err) = run_child("child_fit_mixed", &[]);
    assert!(ok && tagged(&out, "DONE").len() == 1, "{out}\n{err}");
}

/// `fit` of the CNN under the global policy on every device, eager and
/// traced: the optimizer is loss-scaled or not as `scaled` says, the loss
/// falls, the variables stay f32 and finite.
fn fit_on_every_device(x: &Tensor, y: &Tensor, scaled: bool) {
    for d in devices() {
        for eager in [false, true] {
            let mut m = cnn(&d, &global_policy());
            m.compile(
                Adam::new(1e-2),
                SparseCategoricalCrossentropy::new(true),
                SparseCategoricalAccuracy::new(),
            );
            assert_eq!(m.compiled().as_ref().unwrap().optimizer.is_loss_scaled(), scaled);
            m.set_run_eagerly(eager).unwrap();
            let h = m
                .fit(
                    x,
                    y,
                    FitArgs {
                        batch_size: 32,
                        epochs: 6,
                        verbose: false,
                        device: Some(d.clone()),
                        ..FitArgs::default()
                    },
                )
                .unwrap();
            let loss = h.get("loss").unwrap();
            assert!(loss.last().unwrap() < &loss[0], "{d} eager={eager}: {loss:?}");
            for v in m.variables() {
                assert_eq!(v.dtype(), DType::F32);
                assert!(
                    v.value().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()),
                    "{d}: {}",
                    v.name()
                );
            }
        }
    }
}

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_fit_mixed() {
    set_global_policy("mixed_float16").unwrap();
    assert_eq!(global_policy(), Policy::mixed_float16());
    let n = 96;
    let x = uniform(&[n, 8, 8, 1], 0.0, 1.0, 7, DType::F32);
    let y = randint(&[n], 0, 10, 8);
    fit_on_every_device(&x, &y, true);
    if let Some(g) = gpus().first() {
        let s = wgflow::distribute::MirroredStrategy::new(&[&g.to_string(), "cpu"]).unwrap();
        let mut m = s.scope(|dev| Ok(cnn(dev, &global_policy()))).unwrap();
        m.compile(Adam::new(1e-2), SparseCategoricalCrossentropy::new(true), ());
        // Loss scaling under MirroredStrategy: the replicas' scaled
        // gradients are summed, then unscaled and checked by the optimizer.
        let h = m
            .fit(
                &x,
                &y,
                FitArgs {
                    batch_size: 32,
                    epochs: 6,
                    verbose: false,
                    ..FitArgs::default()
                },
            )
            .unwrap();
        let loss = h.get("loss").unwrap();
        assert!(loss.iter().all(|l| l.is_finite()), "mirrored: {loss:?}");
        assert!(loss.last().unwrap() < &loss[0], "mirrored: {loss:?}");
        // The reported loss is unscaled: near the single-device one, not 2^15 times it.
        assert!(loss[0] < 10.0, "mirrored: {loss:?}");
        for v in m.replicas()[0].variables() {
            assert!(
                v.value().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()),
                "{}",
                v.name()
            );
        }
    }
    println!("DONE ok");
}

/// `fit` under the global `mixed_bfloat16` policy, eager and traced, on
/// every device: no loss scaling (Keras scales only float16), the loss
/// falls, the variables stay f32 and finite.
#[test]
fn fit_in_mixed_bfloat16() {
    let (ok, out, err) = run_child("child_fit_mixed_bfloat16", &[]);
    assert!(ok && tagged(&out, "DONE").len() == 1, "{out}\n{err}");
}

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_fit_mixed_bfloat16() {
    set_global_policy("mixed_bfloat16").unwrap();
    let n = 96;
    let x = uniform(&[n, 8, 8, 1], 0.0, 1.0, 7, DType::F32);
    let y = randint(&[n], 0, 10, 8);
    fit_on_every_device(&x, &y, false);
    println!("DONE ok");
}

/// A checkpoint keeps the loss scale and its step count: a fresh
/// LossScaleOptimizer restored from it (before or after its first step)
/// continues with them.
#[test]
fn checkpoints_keep_the_loss_scale() {
    use wgflow::io::checkpoint::{Checkpoint, OptimizerState};
    let d = Device::Cpu;
    let w = Variable::new(Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap(), "w");
    let ckpt = Checkpoint::new().track("model", vec![("w".to_string(), w.clone())]);
    let step = |opt: &mut Optimizer| {
        let tape = GradientTape::new();
        let loss = opt
            .scale_loss(&w.value().square().unwrap().sum(None, false).unwrap())
            .unwrap();
        let g = tape.gradient(&loss, &[&w]).unwrap();
        opt.apply_gradients(&g, std::slice::from_ref(&w)).unwrap();
    };
    let mut opt: Optimizer = LossScaleOptimizer::new(SGD::new(0.01)).dynamic_growth_steps(2).into();
    for _ in 0..3 {
        step(&mut opt);
    }
    // Two finite steps doubled it; the third counts one.
    assert_eq!(opt.loss_scale().unwrap(), Some(65536.0));
    assert_eq!(opt.loss_scale_state().unwrap(), Some((65536.0, 1)));
    let dir = std::env::temp_dir().join(format!("wgflow-ls-{}", std::process::id()));
    let path = dir.join("ckpt.safetensors");
    ckpt.save(&path, 3, Some(&opt as &dyn OptimizerState)).unwrap();
    for used in [false, true] {
        let mut fresh: Optimizer = LossScaleOptimizer::new(SGD::new(0.01)).dynamic_growth_steps(2).into();
        if used {
            fresh.scale_loss(&w.value()).unwrap();
        }
        let meta = ckpt
            .restore(&path, Some(&mut fresh as &mut dyn OptimizerState))
            .unwrap();
        assert_eq!(meta.loss_scale, Some((65536.0, 1)));
        assert_eq!(fresh.loss_scale_state().unwrap(), Some((65536.0, 1)), "used={used}");
        // One more finite step completes the pair: the scale doubles.
        step(&mut fresh);
        assert_eq!(fresh.loss_scale().unwrap(), Some(131072.0), "used={used}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A traced `fit` step whose scaled gradients overflow to infinity is
/// skipped on every device: the weights stay as they were and the scale
/// halves (the finiteness check must survive the fused kernels' constant
/// folding, where `x * 0` may fold to 0).
#[test]
fn an_overflowing_traced_step_is_skipped() {
    let x = uniform(&[16, 8, 8, 1], 0.0, 1.0, 9, DType::F32);
    let y = randint(&[16], 0, 10, 10);
    for d in devices() {
        for eager in [false, true] {
            let mut m = cnn(&d, &Policy::float32());
            let before = values(&m);
            m.compile(
                LossScaleOptimizer::new(SGD::new(0.1)).initial_scale(1e38),
                SparseCategoricalCrossentropy::new(true),
                (),
            );
            m.set_run_eagerly(eager).unwrap();
            let args = || FitArgs {
                batch_size: 16,
                epochs: 1,
                verbose: false,
                shuffle: false,
                device: Some(d.clone()),
                ..FitArgs::default()
            };
            m.fit(&x, &y, args()).unwrap();
            // BatchNormalization's moving statistics move in a skipped step too
            // (they are not the optimizer's); the trainable weights do not.
            let after = values(&m);
            for (i, v) in m.variables().iter().enumerate() {
                if v.trainable() {
                    assert_eq!(
                        after[i],
                        before[i],
                        "{d} eager={eager}: {} changed in a skipped step",
                        v.name()
                    );
                }
            }
            let scale = m.compiled().as_ref().unwrap().optimizer.loss_scale().unwrap().unwrap();
            assert_eq!(scale, 5e37f32 as f64, "{d} eager={eager}");
            // The next steps, at lower scales, are skipped until finite ones train.
            for _ in 0..200 {
                m.fit(&x, &y, args()).unwrap();
                if values(&m).iter().zip(&before).any(|(a, b)| a != b)
                    && m.compiled().as_ref().unwrap().optimizer.loss_scale().unwrap().unwrap() < 1e30
                {
                    break;
                }
            }
            assert!(
                m.variables()
                    .iter()
                    .all(|v| v.value().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite())),
                "{d}"
            );
        }
    }
}
