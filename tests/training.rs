//! The training stack: tape semantics, layers, losses, optimizers, metrics,
//! fit on every device, GPU and CPU reaching the same weights, the pool
//! serving every step after the first, callbacks, and typed errors.

mod common;
use common::*;
use wgflow::nn::callbacks::{EarlyStopping, TensorBoard};
use wgflow::nn::layers::{
    AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D, Layer, MaxPooling2D,
};
use wgflow::nn::losses::{
    BinaryCrossentropy, CategoricalCrossentropy, Loss, MeanAbsoluteError, MeanSquaredError,
    SparseCategoricalCrossentropy,
};
use wgflow::nn::metrics::{Accuracy, Mean, Metric, SparseCategoricalAccuracy};
use wgflow::nn::optimizers::{
    Adam, AdamW, CosineDecay, ExponentialDecay, InverseTimeDecay, LearningRateSchedule, PiecewiseConstantDecay,
    PolynomialDecay, RMSprop, SGD,
};
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, GradientTape, Tensor, Variable, ops, stop_gradient};

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn tape_watches_trainable_variables_only() {
    let w = Variable::new(t(&[2.0, 3.0], &[2]), "w");
    let frozen = Variable::with_trainable(t(&[1.0, 1.0], &[2]), "frozen", false);
    let x = t(&[5.0, 7.0], &[2]);
    let tape = GradientTape::new();
    let y = w
        .value()
        .mul(&x)
        .unwrap()
        .add(&frozen.value())
        .unwrap()
        .sum(None, false)
        .unwrap();
    let g = tape.gradient(&y, &[&w, &frozen]).unwrap();
    assert_eq!(g[0].as_ref().unwrap().to_vec::<f32>().unwrap(), vec![5.0, 7.0]);
    assert!(g[1].is_none(), "non-trainable variables are not watched");
    // A non-persistent tape computes once.
    assert!(matches!(tape.gradient(&y, &[&w]), Err(Error::InvalidArgument { .. })));
}

#[test]
fn persistent_tapes_stop_gradient_and_unconnected_sources() {
    let x = t(&[3.0], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = x.mul(&x).unwrap();
    let z = y.mul(&x).unwrap();
    assert_eq!(
        tape.gradient_wrt(&y, &[&x]).unwrap()[0]
            .as_ref()
            .unwrap()
            .item()
            .unwrap(),
        6.0
    );
    assert_eq!(
        tape.gradient_wrt(&z, &[&x]).unwrap()[0]
            .as_ref()
            .unwrap()
            .item()
            .unwrap(),
        27.0
    );
    // stop_gradient blocks the path through y.
    let s = stop_gradient(&y).mul(&x).unwrap();
    assert_eq!(
        tape.gradient_wrt(&s, &[&x]).unwrap()[0]
            .as_ref()
            .unwrap()
            .item()
            .unwrap(),
        9.0
    );
    let other = t(&[1.0], &[1]);
    assert!(tape.gradient_wrt(&z, &[&other]).unwrap()[0].is_none());
    // Ops after the tape is dropped are not recorded anywhere.
    drop(tape);
    let _ = x.mul(&x).unwrap();
    // stop_recording pauses one tape.
    let tape = GradientTape::new();
    tape.watch(&x);
    let a = tape.stop_recording(|| x.mul(&x).unwrap());
    assert!(tape.gradient_wrt(&a, &[&x]).unwrap()[0].is_none());
}

#[test]
fn variables_assign_and_check_shapes() {
    let v = Variable::new(t(&[1.0, 2.0], &[2]), "v");
    v.assign_add(&t(&[1.0, 1.0], &[2])).unwrap();
    assert_eq!(v.value().to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    v.assign_sub(&t(&[2.0, 2.0], &[2])).unwrap();
    assert_eq!(v.value().to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
    assert!(matches!(
        v.assign(&t(&[1.0], &[1])),
        Err(Error::Shape { op: "assign", .. })
    ));
    assert!(
        v.assign(&Tensor::from_vec(vec![1, 2], &[2], &Device::Cpu).unwrap())
            .is_err()
    );
    // A value read before an assignment keeps its values.
    let before = v.value();
    v.assign(&t(&[9.0, 9.0], &[2])).unwrap();
    assert_eq!(before.to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
}

#[test]
fn layers_compute_and_reject_wrong_inputs() {
    let d = Device::Cpu;
    set_random_seed(3);
    let mut dense = Dense::new(4).activation(Activation::Relu);
    let x = ops::random_normal(&[2, 3], 0.0, 1.0, DType::F32, 1, &d).unwrap();
    let y = dense.call(&x, false).unwrap();
    assert_eq!(y.shape(), &[2, 4]);
    let k = dense.kernel().unwrap().value();
    let b = dense.bias().unwrap().value();
    let want = x.matmul(&k).unwrap().add(&b).unwrap().relu().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    // Glorot uniform: |w| <= sqrt(6 / (3 + 4)); bias zero.
    assert!(
        k.to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|w| w.abs() <= (6.0f32 / 7.0).sqrt())
    );
    assert!(b.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    // Dense over a rank-3 input works on the last axis; a wrong width errors.
    assert_eq!(
        dense
            .call(&ops::zeros(&[2, 5, 3], DType::F32, &d).unwrap(), false)
            .unwrap()
            .shape(),
        &[2, 5, 4]
    );
    assert!(matches!(
        dense.call(&ops::zeros(&[2, 5], DType::F32, &d).unwrap(), false),
        Err(Error::Shape { op: "Dense", .. })
    ));
    assert!(matches!(
        Dense::new(2).call(&ops::zeros(&[3], DType::F32, &d).unwrap(), false),
        Err(Error::Shape { .. })
    ));
    let mut conv = Conv2D::new(6, [3, 3]).padding("same").unwrap();
    let img = ops::random_normal(&[2, 5, 5, 2], 0.0, 1.0, DType::F32, 2, &d).unwrap();
    assert_eq!(conv.call(&img, false).unwrap().shape(), &[2, 5, 5, 6]);
    match conv.call(&ops::zeros(&[5, 5, 2], DType::F32, &d).unwrap(), false) {
        Err(e @ Error::Shape { op: "Conv2D", .. }) => {
            assert!(e.to_string().contains("[batch, height, width, channels]"))
        }
        other => panic!("wrong result {other:?}"),
    }
    assert!(Conv2D::new(2, [3, 3]).padding("full").is_err());
    assert_eq!(
        MaxPooling2D::new([2, 2]).call(&img, false).unwrap().shape(),
        &[2, 2, 2, 2]
    );
    assert_eq!(
        AveragePooling2D::new([2, 2])
            .padding("same")
            .unwrap()
            .call(&img, false)
            .unwrap()
            .shape(),
        &[2, 3, 3, 2]
    );
    assert_eq!(
        GlobalAveragePooling2D::new().call(&img, false).unwrap().shape(),
        &[2, 2]
    );
    assert_eq!(Flatten::new().call(&img, false).unwrap().shape(), &[2, 50]);
    // Dropout: identity in inference; in training zeros about `rate` and rescales.
    let mut drop = Dropout::new(0.5);
    let ones = ops::ones(&[1000], DType::F32, &d).unwrap();
    assert_eq!(
        drop.call(&ones, false).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0; 1000]
    );
    let out = drop.call(&ones, true).unwrap().to_vec::<f32>().unwrap();
    let kept = out.iter().filter(|&&v| v == 2.0).count();
    assert!(out.iter().all(|&v| v == 0.0 || v == 2.0));
    assert!((400..600).contains(&kept), "{kept}");
    assert!(Dropout::new(1.5).call(&ones, true).is_err());
}

/// `Embedding` picks rows (float ids truncated as Keras casts them),
/// returns them in its policy's compute dtype, and refuses what it cannot
/// index; its gradient adds up the rows a batch used.
#[test]
fn embeddings_pick_rows_and_add_up_their_gradients() {
    use wgflow::nn::Initializer;
    use wgflow::nn::layers::Embedding;
    use wgflow::nn::mixed_precision::Policy;
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for d in devices {
        let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut e = Embedding::new(4, 3).embeddings_initializer(Initializer::Zeros);
        e.build(&[2], &d).unwrap();
        e.weights()[0]
            .1
            .assign(&Tensor::from_vec(table, &[4, 3], &d).unwrap())
            .unwrap();
        let ids = Tensor::from_vec(vec![3.7f32, 0.0, 1.2, 3.0], &[2, 2], &d).unwrap();
        let tape = GradientTape::new();
        let y = e.call(&ids, true).unwrap();
        assert_eq!(y.shape(), &[2, 2, 3]);
        assert_eq!(
            y.to_vec::<f32>().unwrap(),
            [9., 10., 11., 0., 1., 2., 3., 4., 5., 9., 10., 11.],
            "{d}"
        );
        let w = e.weights()[0].1.clone();
        let g = tape.gradient(&y.sum(None, false).unwrap(), &[&w]).unwrap();
        let g = g[0].as_ref().unwrap().to_vec::<f32>().unwrap();
        assert_eq!(g, [1., 1., 1., 1., 1., 1., 0., 0., 0., 2., 2., 2.], "{d}");
        let flags = Tensor::from_vec(vec![true, false], &[2], &d).unwrap();
        assert!(matches!(e.call(&flags, false).unwrap_err(), Error::DType { .. }));
        let e4 = Tensor::from_vec(vec![4i32], &[1], &d).unwrap();
        let err = e.call(&e4, false).and_then(|t| t.to_vec::<f32>()).unwrap_err();
        assert!(err.to_string().contains("gather"), "{d}: {err}");
        let mut mixed = Embedding::new(4, 3).dtype(Policy::new("mixed_float16").unwrap());
        let y = mixed.call(&ids, false).unwrap();
        assert_eq!((y.dtype(), mixed.weights()[0].1.dtype()), (DType::F16, DType::F32));
        let mut empty = Embedding::new(0, 3);
        assert!(empty.call(&ids, false).is_err());
    }
}

#[test]
fn batch_normalization_modes() {
    let d = Device::Cpu;
    let mut bn = BatchNormalization::new().momentum(0.5);
    let x = t(&[1.0, 10.0, 3.0, 20.0, 5.0, 30.0], &[3, 2]);
    let y = bn.call(&x, true).unwrap().to_vec::<f32>().unwrap();
    // Each column normalized with its batch mean and (biased) variance.
    let col0 = [1.0f32, 3.0, 5.0];
    let var0 = 8.0f32 / 3.0;
    for (i, v) in col0.iter().enumerate() {
        assert!((y[2 * i] - (v - 3.0) / (var0 + 1e-3).sqrt()).abs() < 1e-5);
    }
    let mm = bn.moving_mean().unwrap().value().to_vec::<f32>().unwrap();
    assert!(close(&mm, &[1.5, 10.0], 1e-6), "{mm:?}");
    let mv = bn.moving_variance().unwrap().value().to_vec::<f32>().unwrap();
    assert!(close(&mv, &[0.5 + 0.5 * var0, 0.5 + 0.5 * 200.0 / 3.0], 1e-5), "{mv:?}");
    // Inference uses the moving statistics.
    let z = bn.call(&x, false).unwrap().to_vec::<f32>().unwrap();
    assert!((z[0] - (1.0 - 1.5) / (mv[0] + 1e-3).sqrt()).abs() < 1e-5);
    assert_eq!(bn.weights().len(), 4);
    assert!(!bn.moving_mean().unwrap().trainable());
    assert!(bn.call(&ops::zeros(&[2, 3], DType::F32, &d).unwrap(), false).is_err());
}

#[test]
fn losses_match_their_formulas() {
    let y = t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
    let p = t(&[0.8, 0.2, 0.4, 0.6], &[2, 2]);
    let mse = MeanSquaredError.call(&y, &p).unwrap().item().unwrap();
    assert!((mse - (0.04 + 0.04 + 0.16 + 0.16) / 4.0).abs() < 1e-6);
    let mae = MeanAbsoluteError.call(&y, &p).unwrap().item().unwrap();
    assert!((mae - 0.3).abs() < 1e-6);
    let bce = BinaryCrossentropy::new(false).call(&y, &p).unwrap().item().unwrap();
    let want = -((0.8f64).ln() + (0.8f64).ln() + (0.6f64).ln() + (0.6f64).ln()) / 4.0;
    assert!((bce - want).abs() < 1e-5, "{bce} {want}");
    let logits = t(&[1.0, -1.0, 0.5, 2.0], &[2, 2]);
    let bce_l = BinaryCrossentropy::new(true).call(&y, &logits).unwrap().item().unwrap();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let want = -((sig(1.0)).ln() + (1.0 - sig(-1.0)).ln() + (1.0 - sig(0.5)).ln() + sig(2.0).ln()) / 4.0;
    assert!((bce_l - want).abs() < 1e-5);
    let cce = CategoricalCrossentropy::new(false)
        .call(&y, &p)
        .unwrap()
        .item()
        .unwrap();
    assert!((cce - -((0.8f64).ln() + (0.6f64).ln()) / 2.0).abs() < 1e-5);
    let cce_l = CategoricalCrossentropy::new(true)
        .call(&y, &logits)
        .unwrap()
        .item()
        .unwrap();
    let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
    let want = ((lse(1.0, -1.0) - 1.0) + (lse(0.5, 2.0) - 2.0)) / 2.0;
    assert!((cce_l - want).abs() < 1e-5);
    let labels = Tensor::from_vec(vec![0, 1], &[2], &Device::Cpu).unwrap();
    let scce = SparseCategoricalCrossentropy::new(true)
        .call(&labels, &logits)
        .unwrap()
        .item()
        .unwrap();
    assert!((scce - want).abs() < 1e-5);
    let scce_p = SparseCategoricalCrossentropy::new(false)
        .call(&labels, &p)
        .unwrap()
        .item()
        .unwrap();
    assert!((scce_p - cce).abs() < 1e-5);
    // Probabilities from a softmax or sigmoid activation keep their logits,
    // as Keras 3's `_keras_logits`: a confident wrong answer costs its full
    // 60 (or 30), not the clipped -log(1e-7) = 16.1 (Keras gives 60 and 30).
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for d in &devices {
        let sure = t(&[30.0, -30.0], &[1, 2]).to_device(d).unwrap();
        let p = Activation::Softmax.apply(&sure).unwrap();
        let one = Tensor::from_vec(vec![1], &[1], &Device::Cpu).unwrap();
        let l = SparseCategoricalCrossentropy::new(false)
            .call(&one, &p)
            .unwrap()
            .item()
            .unwrap();
        assert!((l - 60.0).abs() < 1e-3, "{d}: {l}");
        let hot = t(&[0.0, 1.0], &[1, 2]).to_device(d).unwrap();
        let l = CategoricalCrossentropy::new(false)
            .call(&hot, &p)
            .unwrap()
            .item()
            .unwrap();
        assert!((l - 60.0).abs() < 1e-3, "{d}: {l}");
        let s = Activation::Sigmoid
            .apply(&t(&[-30.0], &[1, 1]).to_device(d).unwrap())
            .unwrap();
        let l = BinaryCrossentropy::new(false)
            .call(&t(&[1.0], &[1, 1]), &s)
            .unwrap()
            .item()
            .unwrap();
        assert!((l - 30.0).abs() < 1e-3, "{d}: {l}");
    }
    // Errors: shapes, and labels out of range on every device.
    assert!(matches!(
        MeanSquaredError.call(&y, &t(&[1.0], &[1])),
        Err(Error::Shape { .. })
    ));
    let bad = Tensor::from_vec(vec![0, 2], &[2], &Device::Cpu).unwrap();
    let e = SparseCategoricalCrossentropy::new(true)
        .call(&bad, &logits)
        .unwrap_err();
    assert!(e.to_string().contains("label 2 is out of range [0, 2)"), "{e}");
    for g in gpus() {
        let r = SparseCategoricalCrossentropy::new(true)
            .call(&bad.to_device(&g).unwrap(), &logits.to_device(&g).unwrap())
            .and_then(|l| l.item());
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{g}: {r:?}");
    }
}

#[test]
fn optimizers_follow_keras_formulas() {
    let g = t(&[0.5, -1.0], &[2]);
    let step = |opt: &mut wgflow::nn::optimizers::Optimizer, v: &Variable, n: usize| {
        for _ in 0..n {
            opt.apply_gradients(&[Some(g.clone())], std::slice::from_ref(v))
                .unwrap();
        }
        v.value().to_vec::<f32>().unwrap()
    };
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    assert!(close(&step(&mut SGD::new(0.1), &v, 1), &[0.95, 1.1], 1e-6));
    // Momentum: m1 = -lr g, m2 = 0.9 m1 - lr g = -1.9 lr g; w = w0 + m1 + m2.
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    let w = step(&mut SGD::new(0.1).momentum(0.9), &v, 2);
    assert!(close(&w, &[1.0 - 0.29 * 0.5, 1.0 + 0.29], 1e-6), "{w:?}");
    // Adam's first step moves each weight by about lr, against the gradient sign.
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    let w = step(&mut Adam::new(0.01), &v, 1);
    assert!(close(&w, &[0.99, 1.01], 1e-4), "{w:?}");
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    let w = step(&mut AdamW::new(0.01).weight_decay(0.5), &v, 1);
    assert!(close(&w, &[1.0 - 0.005 - 0.01, 1.0 - 0.005 + 0.01], 1e-4), "{w:?}");
    // RMSprop: ms = 0.1 g^2, step = lr g / sqrt(ms + eps).
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    let w = step(&mut RMSprop::new(0.01), &v, 1);
    assert!(
        close(&w, &[1.0 - 0.01 / 0.1f32.sqrt(), 1.0 + 0.01 / 0.1f32.sqrt()], 1e-4),
        "{w:?}"
    );
    // clipnorm rescales the gradient to norm 0.5.
    let v = Variable::new(t(&[1.0, 1.0], &[2]), "v");
    let n = (0.25f32 + 1.0).sqrt();
    let w = step(&mut SGD::new(1.0).clipnorm(0.5), &v, 1);
    assert!(close(&w, &[1.0 - 0.25 / n, 1.0 + 0.5 / n], 1e-5), "{w:?}");
    let mut opt = SGD::new(0.1);
    assert!(opt.apply_gradients(&[Some(t(&[1.0], &[1]))], &[v.clone()]).is_err());
    assert_eq!(opt.iterations(), 0);
    let s = ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 10,
        decay_rate: 0.5,
        staircase: false,
    };
    assert!((s.lr(10) - 0.05).abs() < 1e-12 && (s.lr(5) - 0.1 * 0.5f64.sqrt()).abs() < 1e-12);
    let s = ExponentialDecay { staircase: true, ..s };
    assert_eq!(s.lr(15), 0.05);
    let c = CosineDecay {
        initial_learning_rate: 1.0,
        decay_steps: 100,
        alpha: 0.1,
    };
    assert!((c.lr(0) - 1.0).abs() < 1e-12 && (c.lr(50) - 0.55).abs() < 1e-12 && (c.lr(500) - 0.1).abs() < 1e-12);
    let mut sched = SGD::new(ExponentialDecay {
        initial_learning_rate: 1.0,
        decay_steps: 1,
        decay_rate: 0.5,
        staircase: true,
    });
    let v = Variable::new(t(&[0.0, 0.0], &[2]), "v");
    let w = step(&mut sched, &v, 2);
    assert!(close(&w, &[-0.75, 1.5], 1e-6), "{w:?}");
}

/// Every schedule gives Keras 3's rates (tests/python/schedules.py) at
/// steps 0 to 40, on the host and on every device (the form a
/// LossScaleOptimizer evaluates); bad piecewise arguments are typed errors.
/// A Keras optimizer config comes back with its clipnorm; options wgflow
/// lacks are refused by name, never dropped.
#[test]
fn keras_optimizer_configs_keep_or_refuse_every_option() {
    use wgflow::nn::optimizers::Optimizer;
    let adam: Optimizer = Adam::new(0.01).clipnorm(1.5).into();
    let c = adam.keras_config();
    let back = Optimizer::from_keras_config(&c).unwrap();
    assert_eq!(back.keras_config(), c);
    assert_eq!(c["config"]["clipnorm"], 1.5);
    // What Keras 3 writes for a plain Adam loads.
    let plain: serde_json::Value = serde_json::from_str(
        r#"{"class_name": "Adam", "config": {"learning_rate": 0.001, "weight_decay": null, "clipnorm": null,
        "global_clipnorm": null, "clipvalue": null, "use_ema": false, "ema_momentum": 0.99,
        "ema_overwrite_frequency": null, "loss_scale_factor": null, "gradient_accumulation_steps": null,
        "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false}}"#,
    )
    .unwrap();
    Optimizer::from_keras_config(&plain).unwrap();
    for (key, value) in [
        ("amsgrad", serde_json::json!(true)),
        ("clipvalue", serde_json::json!(0.5)),
        ("weight_decay", serde_json::json!(0.01)),
        (
            "learning_rate",
            serde_json::json!({"class_name": "ExponentialDecay", "config": {}}),
        ),
    ] {
        let mut c = plain.clone();
        c["config"][key] = value;
        let e = Optimizer::from_keras_config(&c).err().expect(key).to_string();
        assert!(
            e.contains(if key == "learning_rate" { "schedule" } else { key }),
            "{key}: {e}"
        );
    }
}

#[test]
fn schedules_match_keras() {
    let exp = ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 7,
        decay_rate: 0.6,
        staircase: false,
    };
    let inv = InverseTimeDecay {
        initial_learning_rate: 0.1,
        decay_steps: 4,
        decay_rate: 0.5,
        staircase: false,
    };
    let poly = PolynomialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 25,
        end_learning_rate: 0.001,
        power: 2.0,
        cycle: false,
    };
    let ours: Vec<(&str, Box<dyn LearningRateSchedule>)> = vec![
        ("exponential", Box::new(exp.clone())),
        (
            "exponential_staircase",
            Box::new(ExponentialDecay { staircase: true, ..exp }),
        ),
        (
            "cosine",
            Box::new(CosineDecay {
                initial_learning_rate: 0.1,
                decay_steps: 30,
                alpha: 0.2,
            }),
        ),
        (
            "piecewise",
            Box::new(PiecewiseConstantDecay::new(vec![5, 12, 30], vec![0.1, 0.05, 0.01, 0.002]).unwrap()),
        ),
        ("polynomial", Box::new(poly.clone())),
        (
            "polynomial_cycle",
            Box::new(PolynomialDecay {
                decay_steps: 9,
                end_learning_rate: 0.01,
                power: 0.5,
                cycle: true,
                ..poly
            }),
        ),
        ("inverse_time", Box::new(inv.clone())),
        (
            "inverse_time_staircase",
            Box::new(InverseTimeDecay { staircase: true, ..inv }),
        ),
    ];
    assert!(PiecewiseConstantDecay::new(vec![5, 3], vec![0.1, 0.2, 0.3]).is_err());
    let e = PiecewiseConstantDecay::new(vec![5], vec![0.1]).unwrap_err();
    assert!(e.to_string().contains("PiecewiseConstantDecay"), "{e}");
    let Some(python) = python() else { return };
    let out = py(&python, "schedules.py", &[]);
    let keras: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(keras.len(), ours.len(), "{out}");
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for (name, s) in &ours {
        let want: Vec<f64> = keras
            .iter()
            .find(|k| k["name"] == *name)
            .unwrap_or_else(|| panic!("{name} missing from {out}"))["lr"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let host: Vec<f64> = (0..want.len() as u64).map(|k| s.lr(k)).collect();
        for (k, (h, w)) in host.iter().zip(&want).enumerate() {
            assert!(
                (h - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{name} step {k}: host {h}, Keras {w}"
            );
        }
        for d in &devices {
            let steps: Vec<f32> = (0..want.len()).map(|k| k as f32).collect();
            let st = Tensor::from_vec(steps, &[want.len()], d).unwrap();
            let got = s
                .lr_on_device(&st)
                .expect("built-in schedules run on the device")
                .unwrap();
            let got = got.to_vec::<f32>().unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let g = *g as f64;
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                    "{d} {name} step {k}: {g}, Keras {w}"
                );
            }
        }
    }
}

#[test]
fn metrics_accumulate_and_reset() {
    let mut m = Mean::new("m");
    m.update(&t(&[1.0, 2.0], &[2])).unwrap();
    m.update(&t(&[6.0], &[1])).unwrap();
    assert_eq!(m.result().unwrap(), 3.0);
    m.reset_state();
    assert_eq!(m.result().unwrap(), 0.0);
    let mut a = SparseCategoricalAccuracy::new();
    let scores = t(&[0.1, 0.9, 0.8, 0.2, 0.3, 0.7], &[3, 2]);
    a.update_state(&Tensor::from_vec(vec![1, 0, 0], &[3], &Device::Cpu).unwrap(), &scores)
        .unwrap();
    assert!((a.result().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let mut b = Accuracy::binary(0.5);
    b.update_state(&t(&[1.0, 0.0, 1.0, 0.0], &[4]), &t(&[0.9, 0.6, 0.4, 0.1], &[4]))
        .unwrap();
    assert_eq!(b.result().unwrap(), 0.5);
    let mut e = Accuracy::exact();
    e.update_state(&t(&[1.0, 2.0], &[2]), &t(&[1.0, 3.0], &[2])).unwrap();
    assert_eq!(e.result().unwrap(), 0.5);
    // Keras' rules: a soft label is compared as given (0.7 is a miss),
    // labels [n] meet predictions [n, 1] row by row, and a float label
    // between classes matches none.
    let mut b = Accuracy::binary(0.5);
    b.update_state(&t(&[0.7, 1.0], &[2]), &t(&[0.9, 0.9], &[2])).unwrap();
    assert_eq!(b.result().unwrap(), 0.5);
    let mut b = Accuracy::binary(0.5);
    b.update_state(&t(&[1.0, 0.0, 1.0], &[3]), &t(&[0.9, 0.2, 0.1], &[3, 1]))
        .unwrap();
    assert!((b.result().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let mut a = SparseCategoricalAccuracy::new();
    a.update_state(&t(&[1.5, 0.0], &[2]), &t(&[0.1, 0.9, 0.8, 0.2], &[2, 2]))
        .unwrap();
    assert_eq!(a.result().unwrap(), 0.5);
}

/// A learnable toy task: the class is which of 4 features is largest.
fn toy(n: usize, seed: u64) -> (Tensor, Tensor) {
    let x = ops::random_normal(&[n, 4], 0.0, 1.0, DType::F32, seed, &Device::Cpu).unwrap();
    let y = x.argmax(-1).unwrap();
    (x, y)
}

fn mlp(seed: u64, device: &Device) -> Sequential {
    set_random_seed(seed);
    let mut m = Sequential::new()
        .add(Dense::new(16).activation(Activation::Relu))
        .add(Dense::new(4));
    m.build(&[4], device).unwrap();
    m
}

#[test]
fn fit_converges_on_every_device() {
    let (x, y) = toy(512, 1);
    let (vx, vy) = toy(256, 2);
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for d in devices {
        let mut m = mlp(5, &d);
        m.compile(
            Adam::new(0.02),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let h = m
            .fit(
                &x,
                &y,
                FitArgs {
                    batch_size: 64,
                    epochs: 12,
                    validation_data: Some((vx.clone(), vy.clone())),
                    device: Some(d.clone()),
                    verbose: false,
                    ..FitArgs::default()
                },
            )
            .unwrap();
        let loss = h.get("loss").unwrap();
        assert_eq!(loss.len(), 12);
        assert!(loss[11] < loss[0] * 0.5, "{d}: loss {loss:?}");
        let acc = *h.get("val_sparse_categorical_accuracy").unwrap().last().unwrap();
        assert!(acc > 0.85, "{d}: validation accuracy {acc}");
        let logs = m.evaluate(&vx, &vy, 100).unwrap();
        assert_eq!(logs[0].0, "loss");
        let p = m.predict(&vx, 100).unwrap();
        assert_eq!(p.shape(), &[256, 4]);
    }
}

/// Keras weights each batch's loss by its size: with a learning rate of 0
/// the epoch's loss over 100 samples in batches of 32 (the last holds 4)
/// is the loss of all 100 at once, on every device, eager and traced.
#[test]
fn the_epoch_loss_is_weighted_by_batch_size() {
    let (x, y) = toy(100, 3);
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for d in devices {
        for eager in [false, true] {
            let mut m = mlp(6, &d);
            m.compile(
                SGD::new(0.0),
                SparseCategoricalCrossentropy::new(true),
                SparseCategoricalAccuracy::new(),
            );
            m.set_run_eagerly(eager).unwrap();
            let h = m
                .fit(
                    &x,
                    &y,
                    FitArgs {
                        batch_size: 32,
                        epochs: 1,
                        shuffle: false,
                        device: Some(d.clone()),
                        verbose: false,
                        ..FitArgs::default()
                    },
                )
                .unwrap();
            let got = h.get("loss").unwrap()[0];
            let want = m.evaluate(&x, &y, 100).unwrap()[0].1;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs(),
                "{d} eager {eager}: epoch loss {got}, all at once {want}"
            );
        }
    }
}

/// `fit` and `evaluate` with sample weights give Keras 3's logged losses
/// for each reduction (from tests/python's run of the same model: a
/// Dense(1) of ones, learning rate 0, batches of 3 and 2, squared errors
/// 0, 9, 36, 81, 144 weighted 1, 2, 0, 1, 3), on every device, eager and
/// traced.
#[test]
fn sample_weights_and_reductions_give_keras_epoch_losses() {
    use wgflow::nn::losses::Reduction;
    let x = t(&[0., 1., 2., 3., 4., 5., 6., 7., 8., 9.], &[5, 2]);
    let y = t(&[1., 2., 3., 4., 5.], &[5]);
    let w = t(&[1., 2., 0., 1., 3.], &[5]);
    let mut devices = gpus();
    devices.push(Device::Cpu);
    for d in devices {
        for eager in [false, true] {
            for (r, want) in [
                (Reduction::SumOverBatchSize, 106.2),
                (Reduction::Sum, 216.0),
                (Reduction::MeanWithSampleWeight, 54.9),
                (Reduction::None, 106.2),
            ] {
                let mut m = Sequential::new().add(Dense::new(1).kernel_initializer(wgflow::nn::Initializer::Ones));
                m.build(&[2], &d).unwrap();
                m.compile(SGD::new(0.0), MeanSquaredError.with_reduction(r), ());
                m.set_run_eagerly(eager).unwrap();
                let args = FitArgs {
                    batch_size: 3,
                    shuffle: false,
                    verbose: false,
                    sample_weight: Some(w.clone()),
                    validation_data: Some((x.clone(), y.clone())),
                    validation_sample_weight: Some(w.clone()),
                    ..FitArgs::default()
                };
                let h = m.fit(&x, &y, args).unwrap();
                // Validation runs in batches of 3 as well, weighted alike.
                let got = h.get("val_loss").unwrap()[0];
                assert!(
                    (got - want).abs() < 1e-4,
                    "{d} eager {eager} {r:?}: val_loss {got}, Keras {want}"
                );
                let got = h.get("loss").unwrap()[0];
                assert!(
                    (got - want).abs() < 1e-4,
                    "{d} eager {eager} {r:?}: fit loss {got}, Keras {want}"
                );
                let got = m.evaluate_weighted(&x, &y, &w, 3).unwrap()[0].1;
                assert!(
                    (got - want).abs() < 1e-4,
                    "{d} eager {eager} {r:?}: evaluate {got}, Keras {want}"
                );
            }
        }
    }
}

/// Keras' `weighted_metrics`: updated with the batch's sample weights,
/// reported after the plain metrics (`weighted_` before a name already
/// taken), in fit, evaluate and validation, and kept by Keras files.
#[test]
fn weighted_metrics_take_the_sample_weights() {
    let (x, y) = toy(30, 5);
    let mut w = ops::random_uniform(&[30], 0.0, 2.0, DType::F32, 6, &Device::Cpu)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    w[..7].fill(0.0);
    let w = t(&w, &[30]);
    let mut m = mlp(3, &Device::Cpu);
    m.compile(
        SGD::new(0.0),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    m.set_weighted_metrics((SparseCategoricalAccuracy::new(), Accuracy::auto()))
        .unwrap();
    let args = FitArgs {
        batch_size: 8,
        shuffle: false,
        verbose: false,
        sample_weight: Some(w.clone()),
        validation_data: Some((x.clone(), y.clone())),
        validation_sample_weight: Some(w.clone()),
        ..FitArgs::default()
    };
    let h = m.fit(&x, &y, args).unwrap();
    let names: Vec<&str> = h.history.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "loss",
            "sparse_categorical_accuracy",
            "weighted_sparse_categorical_accuracy",
            "accuracy",
            "val_loss",
            "val_sparse_categorical_accuracy",
            "val_weighted_sparse_categorical_accuracy",
            "val_accuracy"
        ]
    );
    // The learning rate is 0: every batch sees the same model.
    let pred = m.predict(&x, 30).unwrap();
    let mut plain = SparseCategoricalAccuracy::new();
    plain.update_state(&y, &pred).unwrap();
    let mut weighted = SparseCategoricalAccuracy::new();
    weighted.update_state_weighted(&y, &pred, Some(&w)).unwrap();
    let (p, q) = (plain.result().unwrap(), weighted.result().unwrap());
    assert_ne!(p, q, "the weights changed nothing");
    let get = |k: &str| h.get(k).unwrap()[0];
    for (k, want) in [
        ("sparse_categorical_accuracy", p),
        ("weighted_sparse_categorical_accuracy", q),
        ("accuracy", q),
        ("val_sparse_categorical_accuracy", p),
        ("val_weighted_sparse_categorical_accuracy", q),
    ] {
        assert!((get(k) - want).abs() < 1e-6, "{k}: {} vs {want}", get(k));
    }
    // Without weights the weighted metrics count every example once.
    let logs = m.evaluate(&x, &y, 8).unwrap();
    assert!((logs[2].1 - p).abs() < 1e-6, "{logs:?}");
    // Keras files keep them.
    let dir = std::env::temp_dir().join(format!("wgflow-weighted-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["m.keras", "m.h5"] {
        m.save(dir.join(file)).unwrap();
        let back = wgflow::nn::load_model(dir.join(file)).unwrap();
        let c = back.compiled_ref().unwrap();
        let names: Vec<&str> = c.weighted_metrics.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["sparse_categorical_accuracy", "accuracy"], "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    // A metric without a weighted form is a typed error once weights come.
    struct Plain;
    impl Metric for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        fn update_state(&mut self, _: &Tensor, _: &Tensor) -> wgflow::Result<()> {
            Ok(())
        }
        fn result(&self) -> wgflow::Result<f64> {
            Ok(0.0)
        }
        fn reset_state(&mut self) {}
    }
    let boxed: Vec<Box<dyn Metric>> = vec![Box::new(Plain)];
    m.set_weighted_metrics(boxed).unwrap();
    let args = FitArgs {
        verbose: false,
        sample_weight: Some(w),
        ..FitArgs::default()
    };
    let e = m.fit(&x, &y, args).unwrap_err();
    assert!(matches!(e, Error::Unimplemented { .. }), "{e}");
}

/// `class_weight` trains as the sample weights Keras derives from it
/// (the label, or a one-hot row's argmax; 1 for classes not listed), and
/// a dataset's `(x, y, sample_weight)` elements train as `fit`'s own.
#[test]
fn class_weights_are_sample_weights_of_each_label() {
    let (x, y) = toy(60, 4);
    let labels = y.to_vec::<i32>().unwrap();
    let cw = std::collections::HashMap::from([(0usize, 3.0), (2, 0.25), (7, 9.0)]);
    let sw: Vec<f32> = labels
        .iter()
        .map(|&l| cw.get(&(l as usize)).map_or(1.0, |&v| v as f32))
        .collect();
    let sw = t(&sw, &[60]);
    let onehot = ops::layout::one_hot(&y, 4, 1.0, 0.0, DType::F32).unwrap();
    let args = |sample: Option<Tensor>, class: Option<std::collections::HashMap<usize, f64>>| FitArgs {
        batch_size: 16,
        epochs: 2,
        shuffle: false,
        verbose: false,
        device: Some(Device::Cpu),
        sample_weight: sample,
        class_weight: class,
        ..FitArgs::default()
    };
    let train = |onehot_labels: bool, a: FitArgs| {
        let mut m = mlp(8, &Device::Cpu);
        if onehot_labels {
            m.compile(SGD::new(0.1), CategoricalCrossentropy::new(true), ());
            m.fit(&x, &onehot, a).unwrap();
        } else {
            m.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), ());
            m.fit(&x, &y, a).unwrap();
        }
        m.trainable_variables()
            .iter()
            .map(|v| v.value().to_vec::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let by_sample = train(false, args(Some(sw.clone()), None));
    let unweighted = train(false, args(None, None));
    assert_ne!(by_sample, unweighted, "the weights changed nothing");
    for onehot_labels in [false, true] {
        let by_class = train(onehot_labels, args(None, Some(cw.clone())));
        for (a, b) in by_class.iter().zip(&by_sample) {
            assert!(
                close(a, b, 1e-5),
                "one-hot {onehot_labels}: class weights differ from sample weights"
            );
        }
    }
    // The same weights carried by a dataset's elements.
    let ds = wgflow::data::Dataset::from_tensor_slices(&[x.clone(), y.clone(), sw.clone()])
        .unwrap()
        .batch(16, false)
        .unwrap();
    let mut m = mlp(8, &Device::Cpu);
    m.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), ());
    m.fit_dataset(&ds, args(None, None)).unwrap();
    let from_ds: Vec<Vec<f32>> = m
        .trainable_variables()
        .iter()
        .map(|v| v.value().to_vec::<f32>().unwrap())
        .collect();
    for (a, b) in from_ds.iter().zip(&by_sample) {
        assert!(close(a, b, 1e-5), "dataset weights differ from fit's");
    }
    // And class weights applied to a dataset's (x, y) elements.
    let ds2 = wgflow::data::Dataset::from_tensor_slices(&[x.clone(), y.clone()])
        .unwrap()
        .batch(16, false)
        .unwrap();
    let mut m = mlp(8, &Device::Cpu);
    m.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), ());
    m.fit_dataset(&ds2, args(None, Some(cw.clone()))).unwrap();
    let from_ds: Vec<Vec<f32>> = m
        .trainable_variables()
        .iter()
        .map(|v| v.value().to_vec::<f32>().unwrap())
        .collect();
    for (a, b) in from_ds.iter().zip(&by_sample) {
        assert!(close(a, b, 1e-5), "dataset class weights differ from fit's");
    }
    // Misuse is a typed error.
    let mut m = mlp(8, &Device::Cpu);
    m.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), ());
    let e = m.fit(&x, &y, args(Some(sw.clone()), Some(cw.clone()))).unwrap_err();
    assert!(e.to_string().contains("class_weight and sample_weight"), "{e}");
    let e = m.fit(&x, &y, args(Some(t(&[1.0; 59], &[59])), None)).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "fit", .. }), "{e}");
    let mut orphan = args(None, None);
    orphan.validation_sample_weight = Some(sw.clone());
    let e = m.fit(&x, &y, orphan).unwrap_err();
    assert!(e.to_string().contains("without validation_data"), "{e}");
    let e = m.fit_dataset(&ds, args(None, Some(cw.clone()))).unwrap_err();
    assert!(e.to_string().contains("class_weight and sample_weight"), "{e}");
    let e = m.fit_dataset(&ds2, args(Some(sw.clone()), None)).unwrap_err();
    assert!(e.to_string().contains("(x, y, sample_weight)"), "{e}");
    let e = m.evaluate_weighted(&x, &y, &t(&[1.0; 3], &[3]), 8).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // A custom loss without per-example values cannot take weights.
    struct Custom;
    impl Loss for Custom {
        fn name(&self) -> &'static str {
            "custom"
        }
        fn call(&self, t: &Tensor, p: &Tensor) -> wgflow::Result<Tensor> {
            MeanSquaredError.call(t, p)
        }
    }
    let yf = y.cast(DType::F32).unwrap().reshape(&[60, 1]).unwrap();
    let mut m = Sequential::new().add(Dense::new(1));
    m.build(&[4], &Device::Cpu).unwrap();
    m.compile(SGD::new(0.1), Custom, ());
    m.fit(&x, &yf, args(None, None)).unwrap();
    let e = m.fit(&x, &yf, args(Some(sw), None)).unwrap_err();
    assert!(matches!(e, Error::Unimplemented { .. }), "{e}");
}

#[test]
fn gpu_and_cpu_training_reach_the_same_weights() {
    let (x, y) = toy(96, 3);
    let cpu = {
        let mut m = mlp(11, &Device::Cpu);
        m.compile(
            SGD::new(0.1).momentum(0.9),
            SparseCategoricalCrossentropy::new(true),
            vec![],
        );
        for i in 0..20 {
            let s = (i % 3) * 32;
            m.train_step(&x.slice(&[s, 0], &[32, 4]).unwrap(), &y.slice(&[s], &[32]).unwrap())
                .unwrap();
        }
        m.variables()
            .iter()
            .map(|v| v.value().to_vec::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    for g in gpus() {
        let mut m = mlp(11, &g);
        m.compile(
            SGD::new(0.1).momentum(0.9),
            SparseCategoricalCrossentropy::new(true),
            vec![],
        );
        for i in 0..20 {
            let s = (i % 3) * 32;
            let bx = x.slice(&[s, 0], &[32, 4]).unwrap().to_device(&g).unwrap();
            let by = y.slice(&[s], &[32]).unwrap().to_device(&g).unwrap();
            m.train_step(&bx, &by).unwrap();
        }
        for (v, want) in m.variables().iter().zip(&cpu) {
            let got = v.value().to_vec::<f32>().unwrap();
            assert!(
                close(&got, want, 1e-3),
                "{g}: {} differs: {got:?} vs {want:?}",
                v.name()
            );
        }
    }
}

/// Child: a CNN's training steps after the first create no GPU buffer.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_steps_reuse_buffers() {
    let d = Device::gpu(0).unwrap();
    set_random_seed(1);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(BatchNormalization::new())
        .add(Flatten::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(3));
    m.build(&[8, 8, 1], &d).unwrap();
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let x = ops::random_normal(&[6, 8, 8, 1], 0.0, 1.0, DType::F32, 1, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![0, 1, 2, 0, 1, 2], &[6], &Device::Cpu).unwrap();
    let step = |m: &mut Sequential| {
        let bx = x.to_device(&d).unwrap();
        let by = y.to_device(&d).unwrap();
        m.train_step(&bx, &by).unwrap().item().unwrap()
    };
    step(&mut m);
    step(&mut m);
    let before = d.memory_info().buffers_created;
    for _ in 0..5 {
        step(&mut m);
    }
    println!("CREATED {before} {}", d.memory_info().buffers_created);
    // The traced step `fit` runs, without a readback per step: small host
    // uploads (learning rate, step) take memory not freed in the open batch,
    // so a handful of buffers appear until two batches have been submitted;
    // then none.
    let (bx, by) = (x.to_device(&d).unwrap(), y.to_device(&d).unwrap());
    let args = [bx, by];
    let mut traced = wgflow::function::Traced::new("train_step");
    for _ in 0..40 {
        traced.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?])).unwrap();
    }
    let before = d.memory_info().buffers_created;
    let submits = d.counters().submits;
    for _ in 0..60 {
        traced.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?])).unwrap();
    }
    assert!(d.counters().submits > submits + 2, "the steps span submissions");
    println!("TRACED {before} {}", d.memory_info().buffers_created);
}

#[test]
fn training_steps_after_the_first_are_served_by_the_pool() {
    if gpus().is_empty() {
        return;
    }
    let (ok, out, err) = run_child("child_steps_reuse_buffers", &[]);
    assert!(ok, "{out}\n{err}");
    let v: Vec<u64> = tagged(&out, "CREATED")[0]
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(v[0], v[1], "training steps created new buffers");
    let t: Vec<u64> = tagged(&out, "TRACED")[0]
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(t[0], t[1], "traced training steps created new buffers");
}

#[test]
fn early_stopping_and_tensorboard_callbacks() {
    let (x, y) = toy(64, 4);
    let mut m = mlp(2, &Device::Cpu);
    // A zero learning rate never improves the monitored loss.
    m.compile(SGD::new(0.0), SparseCategoricalCrossentropy::new(true), vec![]);
    let logdir = TempDir::new("fit-tb");
    let h = m
        .fit(
            &x,
            &y,
            FitArgs {
                epochs: 20,
                validation_data: Some((x.clone(), y.clone())),
                callbacks: vec![
                    Box::new(EarlyStopping::new("val_loss", 2)),
                    Box::new(TensorBoard::new(logdir.to_path_buf())),
                ],
                device: Some(Device::Cpu),
                verbose: false,
                ..FitArgs::default()
            },
        )
        .unwrap();
    assert_eq!(h.epochs.len(), 3, "stopped after patience ran out: {:?}", h.epochs);
    for sub in ["train", "validation"] {
        let files: Vec<_> = std::fs::read_dir(logdir.join(sub)).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
    // A bad monitor name is a clear error.
    let r = m.fit(
        &x,
        &y,
        FitArgs {
            callbacks: vec![Box::new(EarlyStopping::new("val_nothing", 1))],
            device: Some(Device::Cpu),
            verbose: false,
            ..FitArgs::default()
        },
    );
    assert!(r.unwrap_err().to_string().contains("val_nothing"));
}

#[test]
fn summary_matches_keras() {
    set_random_seed(0);
    let mut m = Sequential::new()
        .add(Conv2D::new(8, [3, 3]))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&[28, 28, 1], &Device::Cpu).unwrap();
    let s = m.summary();
    assert!(
        s.contains("(None, 26, 26, 8)")
            && s.contains("(None, 13, 13, 8)")
            && s.contains("(None, 1352)")
            && s.contains("(None, 10)"),
        "{s}"
    );
    assert!(s.contains("Total params: 13,610"), "{s}");
    assert!(s.contains("Trainable params: 13,610") && s.contains("Non-trainable params: 0"));
}

#[test]
fn uncompiled_and_malformed_training_inputs_are_errors() {
    let (x, y) = toy(8, 5);
    let mut m = mlp(1, &Device::Cpu);
    assert!(
        m.fit(
            &x,
            &y,
            FitArgs {
                device: Some(Device::Cpu),
                verbose: false,
                ..FitArgs::default()
            }
        )
        .unwrap_err()
        .to_string()
        .contains("compile")
    );
    m.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), vec![]);
    let short = y.slice(&[0], &[5]).unwrap();
    let e = m
        .fit(
            &x,
            &short,
            FitArgs {
                device: Some(Device::Cpu),
                verbose: false,
                ..FitArgs::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "from_tensor_slices",
                ..
            }
        ),
        "{e}"
    );
    let bad_labels = Tensor::from_vec(vec![0, 1, 2, 3, 4, 5, 6, 7], &[8], &Device::Cpu).unwrap();
    let e = m
        .fit(
            &x,
            &bad_labels,
            FitArgs {
                device: Some(Device::Cpu),
                verbose: false,
                ..FitArgs::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    let wide = ops::zeros(&[8, 7], DType::F32, &Device::Cpu).unwrap();
    assert!(
        m.fit(
            &wide,
            &y,
            FitArgs {
                device: Some(Device::Cpu),
                verbose: false,
                ..FitArgs::default()
            }
        )
        .is_err()
    );
}

/// A functional model with branches, every merge layer and a shared layer
/// trains to the same weights eagerly and traced, on the CPU and on every
/// GPU; a layer called twice gets the gradient of both calls.
#[test]
fn functional_models_train_the_same_everywhere() {
    use wgflow::nn::Functional;
    // y = w * (w * x): dy/dw = 2 w x through the two calls.
    let mut f = Functional::new();
    let x = f.input(&[1]).unwrap();
    let shared = f.layer(Dense::new(1).use_bias(false));
    let h = f.apply(shared, &[x]).unwrap();
    let y = f.apply(shared, &[h]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[1], &Device::Cpu).unwrap();
    let w = m.trainable_variables();
    assert_eq!(w.len(), 1, "one kernel for both calls");
    w[0].assign(&t(&[1.5], &[1, 1])).unwrap();
    let tape = GradientTape::new();
    let out = m.call(&t(&[2.0], &[1, 1]), true).unwrap();
    assert_eq!(out.to_vec::<f32>().unwrap(), [4.5]);
    let g = tape.gradient(&out, &[&w[0]]).unwrap();
    assert_eq!(g[0].as_ref().unwrap().to_vec::<f32>().unwrap(), [6.0]);

    let x = uniform(&[24, 28, 28, 1], 0.0, 1.0, 3, DType::F32);
    let y = randint(&[24], 0, 10, 4);
    let train = |d: &Device, eager: bool| {
        let mut m = merges(d, 47);
        m.compile(
            SGD::new(0.05).momentum(0.9),
            SparseCategoricalCrossentropy::new(true),
            vec![],
        );
        m.set_run_eagerly(eager).unwrap();
        let args = FitArgs {
            batch_size: 8,
            epochs: 2,
            shuffle: false,
            verbose: false,
            device: Some(d.clone()),
            ..FitArgs::default()
        };
        let h = m.fit(&x, &y, args).unwrap();
        let loss = h.get("loss").unwrap().to_vec();
        let ws: Vec<Vec<f32>> = m
            .variables()
            .iter()
            .map(|v| v.value().to_vec::<f32>().unwrap())
            .collect();
        (loss, ws)
    };
    let (loss, want) = train(&Device::Cpu, true);
    assert!(loss.iter().all(|l| l.is_finite()), "{loss:?}");
    let mut runs = vec![(Device::Cpu, false)];
    runs.extend(gpus().into_iter().flat_map(|g| [(g.clone(), true), (g, false)]));
    for (d, eager) in runs {
        let (l, ws) = train(&d, eager);
        assert!(
            close(
                &l.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                &loss.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                1e-3
            ),
            "{d} eager={eager}: {l:?} against {loss:?}"
        );
        for (got, w) in ws.iter().zip(&want) {
            assert!(close(got, w, 1e-3), "{d} eager={eager}: weights differ");
        }
    }
}

/// Conv2DTranspose's gradients (kernel, bias, input) match central
/// differences on awkward shapes (a window wider than its stride,
/// output_padding, dilation), on every device; the decoder trains to the
/// same weights eagerly and traced, on the CPU and every GPU.
#[test]
fn transposed_convolutions_match_finite_differences() {
    use wgflow::nn::layers::Conv2DTranspose;
    let mut devices = vec![Device::Cpu];
    devices.extend(gpus());
    for d in devices {
        for (k, s, op, dil, same) in [
            ([3, 2], [2, 1], None, [1, 1], false),
            ([3, 3], [2, 3], Some([1, 2]), [1, 1], false),
            ([2, 3], [1, 1], None, [2, 1], true),
            ([3, 3], [2, 2], Some([1, 0]), [1, 1], true),
        ] {
            let mut l = Conv2DTranspose::new(2, k).strides(s).dilation_rate(dil);
            if same {
                l = l.padding("same").unwrap();
            }
            if let Some(p) = op {
                l = l.output_padding(p);
            }
            let x = uniform(&[2, 3, 4, 3], -1.0, 1.0, 8, DType::F32).to_device(&d).unwrap();
            let xv = Variable::new(x.clone(), "x");
            let y0 = l.call(&x, true).unwrap();
            let r = uniform(y0.shape(), -1.0, 1.0, 9, DType::F32).to_device(&d).unwrap();
            let mut ws: Vec<Variable> = l.weights().into_iter().map(|(_, v)| v).collect();
            // The bias starts at zero: move it so its gradient is not trivially read.
            let b = uniform(&ws[1].shape(), -1.0, 1.0, 10, DType::F32)
                .to_device(&d)
                .unwrap();
            ws[1].assign(&b).unwrap();
            ws.push(xv.clone());
            let loss = |l: &mut Conv2DTranspose| {
                let y = l.call(&xv.value(), true).unwrap();
                y.mul(&r).unwrap().sum(None, false).unwrap()
            };
            let tape = GradientTape::new();
            let out = loss(&mut l);
            let refs: Vec<&Variable> = ws.iter().collect();
            let g = tape.gradient(&out, &refs).unwrap();
            let what = format!("kernel {k:?} strides {s:?} output_padding {op:?} dilation {dil:?} same {same} on {d}");
            for (v, g) in ws.iter().zip(&g) {
                let g = g.as_ref().unwrap().to_vec::<f32>().unwrap();
                let base = v.value().to_vec::<f32>().unwrap();
                let eps = 1e-2f32;
                let mut fd = Vec::with_capacity(base.len());
                for i in 0..base.len() {
                    let mut at = |delta: f32| {
                        let mut p = base.clone();
                        p[i] += delta;
                        v.assign(&Tensor::from_vec(p, &v.shape(), &d).unwrap()).unwrap();
                        loss(&mut l).to_vec::<f32>().unwrap()[0]
                    };
                    fd.push((at(eps) - at(-eps)) / (2.0 * eps));
                }
                v.assign(&Tensor::from_vec(base, &v.shape(), &d).unwrap()).unwrap();
                assert!(close(&g, &fd, 2e-2), "{what}: {} {g:?} vs {fd:?}", v.name());
            }
        }
    }

    let x = uniform(&[16, 28, 28, 1], 0.0, 1.0, 11, DType::F32);
    let y = randint(&[16], 0, 10, 12);
    let train = |d: &Device, eager: bool| {
        let mut m = decoder(d, 52);
        m.compile(Adam::new(1e-3), SparseCategoricalCrossentropy::new(true), vec![]);
        m.set_run_eagerly(eager).unwrap();
        let args = FitArgs {
            batch_size: 8,
            epochs: 2,
            shuffle: false,
            verbose: false,
            device: Some(d.clone()),
            ..FitArgs::default()
        };
        let loss = m.fit(&x, &y, args).unwrap().get("loss").unwrap().to_vec();
        let ws: Vec<Vec<f32>> = m
            .variables()
            .iter()
            .map(|v| v.value().to_vec::<f32>().unwrap())
            .collect();
        (loss, ws)
    };
    let (loss, want) = train(&Device::Cpu, true);
    assert!(loss[1] < loss[0], "{loss:?}");
    let mut runs = vec![(Device::Cpu, false)];
    runs.extend(gpus().into_iter().flat_map(|g| [(g.clone(), true), (g, false)]));
    for (d, eager) in runs {
        let (l, ws) = train(&d, eager);
        let (l, loss): (Vec<f32>, Vec<f32>) = l.iter().zip(&loss).map(|(&a, &b)| (a as f32, b as f32)).unzip();
        assert!(close(&l, &loss, 1e-3), "{d} eager={eager}: {l:?} against {loss:?}");
        for (got, w) in ws.iter().zip(&want) {
            assert!(close(got, w, 1e-3), "{d} eager={eager}: weights differ");
        }
    }
}

/// A model of two inputs and two outputs trains with one loss per output
/// and their weights: eagerly and traced, on the CPU and every GPU, to the
/// same weights; the reported loss is the weighted sum of the outputs'
/// losses; counts that do not fit the model are errors.
#[test]
fn models_of_several_outputs_train_the_same_everywhere() {
    use wgflow::nn::metrics::{MeanMetricWrapper, Metrics};
    let meta = uniform(&[24, 6], -1.0, 1.0, 13, DType::F32);
    let image = uniform(&[24, 28, 28, 1], 0.0, 1.0, 14, DType::F32);
    let cls = randint(&[24], 0, 10, 15);
    let reg = uniform(&[24, 1], -1.0, 1.0, 16, DType::F32);
    let compile = |m: &mut Sequential| {
        m.compile_outputs(
            Adam::new(1e-2),
            vec![
                Box::new(SparseCategoricalCrossentropy::new(true)),
                Box::new(MeanSquaredError),
            ],
            &[1.0, 0.25],
            vec![
                Metrics(vec![Box::new(SparseCategoricalAccuracy::new())]),
                Metrics(vec![Box::new(MeanMetricWrapper::new("mae", MeanAbsoluteError))]),
            ],
        )
        .unwrap();
    };
    let train = |d: &Device, eager: bool| {
        let mut m = two_towers(d, 57);
        compile(&mut m);
        m.set_run_eagerly(eager).unwrap();
        let args = FitArgs {
            batch_size: 8,
            epochs: 3,
            shuffle: false,
            verbose: false,
            device: Some(d.clone()),
            ..FitArgs::default()
        };
        let h = m
            .fit_many(&[meta.clone(), image.clone()], &[cls.clone(), reg.clone()], args)
            .unwrap();
        let ws: Vec<Vec<f32>> = m
            .variables()
            .iter()
            .map(|v| v.value().to_vec::<f32>().unwrap())
            .collect();
        (h, ws, m)
    };
    let (h, want, mut m) = train(&Device::Cpu, true);
    let names = m.output_names();
    // Validation data of several tensors: "val_" logs of every output.
    let args = FitArgs {
        epochs: 1,
        verbose: false,
        validation_data_many: Some((vec![meta.clone(), image.clone()], vec![cls.clone(), reg.clone()])),
        ..FitArgs::default()
    };
    let hv = m
        .fit_many(&[meta.clone(), image.clone()], &[cls.clone(), reg.clone()], args)
        .unwrap();
    for n in &names {
        assert!(hv.get(&format!("val_{n}_loss")).is_some(), "{:?}", hv.history);
    }
    assert!(hv.get("val_loss").is_some());
    let loss = h.get("loss").unwrap().to_vec();
    assert!(loss[2] < loss[0], "{loss:?}");
    for n in &names {
        assert!(h.get(&format!("{n}_loss")).is_some(), "{:?}", h.history);
    }
    assert!(
        h.get(&format!("{}_sparse_categorical_accuracy", names[0])).is_some(),
        "{:?}",
        h.history
    );
    // The reported loss is the weighted sum of the outputs' losses.
    let logs = m
        .evaluate_many(&[meta.clone(), image.clone()], &[cls.clone(), reg.clone()], 24)
        .unwrap();
    let get = |k: &str| logs.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap();
    let (l0, l1) = (get(&format!("{}_loss", names[0])), get(&format!("{}_loss", names[1])));
    assert!((get("loss") - (l0 + 0.25 * l1)).abs() < 1e-5, "{logs:?}");
    let mut runs = vec![(Device::Cpu, false)];
    runs.extend(gpus().into_iter().flat_map(|g| [(g.clone(), true), (g, false)]));
    for (d, eager) in runs {
        let (hd, ws, _) = train(&d, eager);
        let (a, b): (Vec<f32>, Vec<f32>) = hd
            .get("loss")
            .unwrap()
            .iter()
            .zip(&loss)
            .map(|(&a, &b)| (a as f32, b as f32))
            .unzip();
        assert!(close(&a, &b, 1e-3), "{d} eager={eager}: {a:?} against {b:?}");
        for (got, w) in ws.iter().zip(&want) {
            assert!(close(got, w, 1e-3), "{d} eager={eager}: weights differ");
        }
    }
    // Counts that do not fit, options for one output.
    let mut m = two_towers(&Device::Cpu, 58);
    let e = m
        .compile_outputs(Adam::new(1e-2), vec![Box::new(MeanSquaredError)], &[], vec![])
        .unwrap_err();
    assert!(e.to_string().contains("2 outputs"), "{e}");
    compile(&mut m);
    let quiet = || FitArgs {
        verbose: false,
        ..FitArgs::default()
    };
    assert!(
        m.fit_many(&[meta.clone()], &[cls.clone(), reg.clone()], quiet())
            .is_err()
    );
    assert!(
        m.fit_many(&[meta.clone(), image.clone()], &[cls.clone()], quiet())
            .is_err()
    );
    let mut cw = std::collections::HashMap::new();
    cw.insert(0usize, 2.0);
    let args = FitArgs {
        class_weight: Some(cw),
        ..quiet()
    };
    assert!(
        m.fit_many(&[meta.clone(), image.clone()], &[cls.clone(), reg.clone()], args)
            .is_err()
    );
    // One output compiled with lists: its weight scales the loss, its
    // metrics keep their own names.
    let mut single = Sequential::new().add(Dense::new(1));
    single.build(&[6], &Device::Cpu).unwrap();
    single
        .compile_outputs(
            Adam::new(1e-2),
            vec![Box::new(MeanSquaredError)],
            &[2.0],
            vec![Metrics(vec![Box::new(MeanMetricWrapper::new(
                "mae",
                MeanAbsoluteError,
            ))])],
        )
        .unwrap();
    let h = single.fit(&meta, &reg, quiet()).unwrap();
    assert!(h.get("mae").is_some(), "{:?}", h.history);
    let logs = single.evaluate(&meta, &reg, 24).unwrap();
    let pred = single.predict(&meta, 24).unwrap();
    let mse = MeanSquaredError.call(&reg, &pred).unwrap().item().unwrap();
    assert!((logs[0].1 - 2.0 * mse).abs() < 1e-5, "{logs:?} against 2 x {mse}");
    assert_eq!(logs[1].0, "mae");
    // Compiled with one loss, a model of two outputs cannot fit.
    let mut one = two_towers(&Device::Cpu, 59);
    one.compile(Adam::new(1e-2), MeanSquaredError, ());
    let e = one.fit_many(&[meta.clone(), image], &[cls, reg], quiet()).unwrap_err();
    assert!(e.to_string().contains("compile_outputs"), "{e}");
}

/// The recurrent layers' gradients (through every unrolled step, both
/// directions, every output) match central differences of their forward
/// pass, for every weight element.
#[test]
fn recurrent_gradients_match_finite_differences() {
    use wgflow::nn::layers::{Cell, Recurrent};
    let d = Device::Cpu;
    let x = uniform(&[2, 3, 2], -1.0, 1.0, 5, DType::F32);
    for (cell, reset_after, backwards) in [
        (Cell::Simple, true, true),
        (Cell::Lstm, true, false),
        (Cell::Lstm, true, true),
        (Cell::Gru, true, false),
        (Cell::Gru, false, true),
    ] {
        set_random_seed(8);
        let mut l = Recurrent::new(cell, 2)
            .return_sequences(true)
            .go_backwards(backwards)
            .reset_after(reset_after);
        l.build(&[3, 2], &d).unwrap();
        for (n, v) in l.weights() {
            if n == "bias" {
                v.assign(&uniform(&v.shape(), -0.5, 0.5, 6, DType::F32)).unwrap();
            }
        }
        let w = uniform(&[2, 3, 2], -1.0, 1.0, 7, DType::F32);
        let loss = |l: &mut Recurrent| -> f64 {
            l.call(&x, true)
                .unwrap()
                .mul(&w)
                .unwrap()
                .sum(None, false)
                .unwrap()
                .item()
                .unwrap()
        };
        let vars: Vec<Variable> = l.weights().into_iter().map(|(_, v)| v).collect();
        let tape = GradientTape::new();
        let y = l.call(&x, true).unwrap().mul(&w).unwrap().sum(None, false).unwrap();
        let refs: Vec<&Variable> = vars.iter().collect();
        let grads = tape.gradient(&y, &refs).unwrap();
        drop(tape);
        for (v, g) in vars.iter().zip(grads) {
            let g = g.unwrap().to_vec::<f32>().unwrap();
            let base = v.value().to_vec::<f32>().unwrap();
            let h = 1e-2f32;
            for i in 0..base.len() {
                let mut at = |dx: f32| {
                    let mut b = base.clone();
                    b[i] += dx;
                    v.assign(&Tensor::from_vec(b, &v.shape(), &d).unwrap()).unwrap();
                    loss(&mut l)
                };
                let num = ((at(h) - at(-h)) / (2.0 * h as f64)) as f32;
                v.assign(&Tensor::from_vec(base.clone(), &v.shape(), &d).unwrap())
                    .unwrap();
                assert!(
                    (num - g[i]).abs() <= 2e-3 + 2e-3 * num.abs(),
                    "{cell:?} reset_after={reset_after} backwards={backwards}: d/d{}[{i}] analytic {} numeric {num}",
                    v.name(),
                    g[i]
                );
            }
        }
    }
}
