//! `tf.bfloat16` tensors: values in and out, casts, checkpoints, and
//! `mixed_bfloat16` models in the files TensorFlow and Keras read (a
//! SavedModel and a `.keras` file, checked with the real tools in the venv
//! `.ci/run` creates; ONNX and TensorFlow Lite files, whose operators take
//! no bf16, are typed errors). The ops themselves are proven against the CPU
//! reference on every adapter in `tests/conformance.rs` (bf16 is one of
//! its float dtypes).

mod common;
use common::*;
use half::bf16;
use wgflow::function::{ConcreteFunction, TensorSpec};
use wgflow::io::checkpoint::Checkpoint;
use wgflow::io::saved_model;
use wgflow::lite::Converter;
use wgflow::nn::layers::{BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::mixed_precision::Policy;
use wgflow::nn::{Activation, Model, Sequential, load_model_on, set_random_seed};
use wgflow::{DType, Device, Error, Tensor, Variable, ops};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpus());
    d
}

/// Values enter and leave every device unchanged as bf16, widen exactly,
/// and an op on bf16 operands gives bf16 rounded from f32's result.
#[test]
fn values_casts_and_ops() {
    let v: Vec<bf16> = [1.0f32, -2.5, 3.0e38, 1.0e-40, 0.0, -0.0, f32::INFINITY, 0.1]
        .iter()
        .map(|&x| bf16::from_f32(x))
        .collect();
    for d in devices() {
        let t = Tensor::from_vec(v.clone(), &[2, 4], &d).unwrap();
        assert_eq!(t.dtype(), DType::BF16);
        let back = t.to_vec::<bf16>().unwrap();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{d}"
        );
        let wide = t.cast(DType::F32).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(wide, v.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), "{d}");
        assert!(t.to_vec::<f32>().is_err(), "{d}: reading bf16 as f32 is a dtype error");
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d)
            .unwrap()
            .cast(DType::BF16)
            .unwrap();
        let b = a.mul_scalar(1.0 / 3.0).unwrap().add(&a).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        // The scalar is bf16 too: 1/3 rounds to 0.333984375 first.
        let third = bf16::from_f32(1.0 / 3.0).to_f32();
        let want: Vec<f32> = [1.0f32, 2.0, 3.0]
            .iter()
            .map(|&x| bf16::from_f32(bf16::from_f32(x * third).to_f32() + x).to_f32())
            .collect();
        assert_eq!(b.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(), want, "{d}");
        let e = Tensor::from_vec(Vec::<bf16>::new(), &[0, 3], &d).unwrap();
        assert_eq!(e.exp().unwrap().shape(), &[0, 3]);
        assert!(a.add(&a.cast(DType::F32).unwrap()).is_err(), "{d}: no promotion");
    }
}

/// A bf16 variable is saved as safetensors' BF16 and restored bit for bit.
#[test]
fn checkpoints_keep_bf16_variables() {
    let tmp = TempDir::new("bf16-ckpt");
    let d = Device::Cpu;
    let v = Variable::new(uniform(&[3, 5], -4.0, 4.0, 3, DType::BF16).to_device(&d).unwrap(), "w");
    let path = tmp.join("c.safetensors");
    Checkpoint::new()
        .track("m", vec![("w".to_string(), v.clone())])
        .save(&path, 1, None)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, view) = st.tensors().into_iter().find(|(n, _)| n.ends_with("w")).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::BF16);
    let w = Variable::new(Tensor::zeros(&[3, 5], DType::BF16, &d).unwrap(), "w");
    Checkpoint::new()
        .track("m", vec![("w".to_string(), w.clone())])
        .restore(&path, None)
        .unwrap();
    let bits = |v: &Variable| -> Vec<u16> {
        v.value()
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    assert_eq!(bits(&w), bits(&v));
}

fn mixed_cnn(d: &Device) -> Sequential {
    set_random_seed(21);
    let p = Policy::mixed_bfloat16();
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu).dtype(p.clone()))
        .add(BatchNormalization::new())
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).dtype(p));
    m.build(&[8, 8, 1], d).unwrap();
    randomize_moving_stats(&m, d);
    m
}

/// A mixed_bfloat16 model exported as a SavedModel and saved as a `.keras`
/// file: wgflow loads both back (the layers keep their policy), and
/// TensorFlow and Keras run them and predict what wgflow predicts, within
/// bf16 rounding.
#[test]
fn mixed_bfloat16_models_in_tensorflow_and_keras_files() {
    let tmp = TempDir::new("bf16-files");
    let d = Device::Cpu;
    let mut m = mixed_cnn(&d);
    let x = uniform(&[5, 8, 8, 1], 0.0, 1.0, 4, DType::F32);
    let want = m.predict(&x, 32).unwrap();
    assert_eq!(want.dtype(), DType::F32);
    let want = want.to_vec::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let close = |got: &[f32], what: &str| assert_close(got, &want, 2e-2 * scale + 1e-3, what);

    m.export(tmp.join("export")).unwrap();
    let mut loaded = saved_model::load_with(tmp.join("export"), &["serve"], &d).unwrap();
    let f = loaded.signature("serving_default").unwrap();
    assert!(
        f.def().values.iter().any(|v| v.dtype == DType::BF16),
        "no bf16 values in the exported graph"
    );
    let key = f.inputs()[0].name.clone().unwrap();
    let out = loaded.call("serving_default", &[(key.as_str(), x.clone())]).unwrap();
    close(&out[0].1.to_vec::<f32>().unwrap(), "the SavedModel in wgflow");

    m.save(tmp.join("m.keras")).unwrap();
    let k = load_model_on(tmp.join("m.keras"), &d).unwrap();
    for i in [0, 4] {
        let c = k.layers()[i].keras_config().unwrap().to_string();
        assert!(c.contains("\"mixed_bfloat16\""), "layer {i} lost its policy: {c}");
    }

    // ONNX's operators of opsets 13 to 17 take no bf16: a typed error, no
    // file. The TFLite converter drops a policy's casts and writes an f32
    // model (TFLite's builtins take no bf16 either).
    let e = wgflow::onnx::export(&mut m, tmp.join("m.onnx"), 17).unwrap_err();
    assert!(
        matches!(e, Error::Unimplemented { .. }) && e.to_string().contains("bfloat16"),
        "{e}"
    );
    assert!(!tmp.join("m.onnx").exists());
    Converter::from_keras_model(&mut m)
        .and_then(|mut c| c.convert_to(tmp.join("m.tflite")))
        .unwrap();
    assert!(tmp.join("m.tflite").exists());

    if let Some(python) = python() {
        save_npy(&tmp.join("x.npy"), &x);
        let out = py(&python, "check_bfloat16.py", &[&*tmp]);
        assert!(out.contains("OK"), "{out}");
        assert!(out.contains("POLICY Conv2D mixed_bfloat16"), "{out}");
        assert!(out.contains("POLICY Dense mixed_bfloat16"), "{out}");
        // Layers without a policy of their own compute as the layer before.
        for class in ["BatchNormalization", "MaxPooling2D", "Flatten"] {
            assert!(out.contains(&format!("POLICY {class} mixed_bfloat16")), "{out}");
        }
        assert!(out.contains("OUTPUT float32"), "{out}");
        let types = out.lines().find(|l| l.starts_with("GRAPH TYPES")).unwrap_or_default();
        assert!(types.contains("bfloat16"), "TensorFlow's graph computes in bf16: {out}");
        close(&load_npy(&tmp.join("tf.npy")).1, "TensorFlow on wgflow's SavedModel");
        close(&load_npy(&tmp.join("keras.npy")).1, "Keras on wgflow's .keras file");
    }
}

/// A function converted to compute in bf16 (`with_compute_dtype`, as
/// `saved_model::convert_precision` does): its random op draws bf16 too, its
/// output stays f32 and agrees with the f32 function's within bf16
/// rounding, on every device; a function with int8 weights is refused.
#[test]
fn functions_converted_to_compute_in_bf16() {
    for d in devices() {
        let spec = TensorSpec::new(&[Some(4), Some(3)], DType::F32).named("x");
        let dd = d.clone();
        let f = ConcreteFunction::trace("noisy", &[spec], &d, move |x: &[Tensor]| {
            let noise = ops::random_normal(&[4, 3], 0.0, 1.0, DType::F32, 5, &dd)?;
            Ok(vec![x[0].add(&noise)?.mul_scalar(2.0)?])
        })
        .unwrap();
        let mut h = f.with_compute_dtype(DType::BF16).unwrap();
        assert!(h.def().values.iter().any(|v| v.dtype == DType::BF16), "{d}");
        let mut f = f;
        let x = uniform(&[4, 3], -1.0, 1.0, 9, DType::F32).to_device(&d).unwrap();
        let want = f.call(std::slice::from_ref(&x)).unwrap().remove(0);
        let got = h.call(std::slice::from_ref(&x)).unwrap().remove(0);
        assert_eq!(got.dtype(), DType::F32, "{d}");
        let (got, want) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.is_finite() && (g - w).abs() <= 0.02 * w.abs() + 0.02,
                "{d}: {g} vs {w}"
            );
        }
    }
    let d = Device::Cpu;
    let spec = TensorSpec::new(&[Some(2), Some(64)], DType::F32).named("x");
    let w = Variable::new(uniform(&[64, 32], -1.0, 1.0, 2, DType::F32), "w");
    let f = ConcreteFunction::trace("dense", &[spec], &d, move |x: &[Tensor]| {
        Ok(vec![x[0].matmul(&w.value())?])
    })
    .unwrap()
    .with_int8_weights(16)
    .unwrap();
    let e = f.with_compute_dtype(DType::BF16).unwrap_err();
    assert!(e.to_string().contains("int8"), "{e}");
}

/// TensorFlow's own bf16 SavedModels: a graph that casts to bf16 and
/// computes in it loads and gives TensorFlow's answers bit for bit; a
/// `Cast` with `Truncate=true` (rounding toward zero, which wgflow does not
/// do) is a typed error, not a silently different answer.
#[test]
fn tensorflow_bf16_saved_models() {
    let Some(python) = python() else { return };
    let tmp = TempDir::new("bf16-tf");
    // Halfway and near-halfway values, where the two roundings differ.
    let x = Tensor::from_vec(
        vec![1.003_906_3_f32, 1.011_718_8, -2.3, 1e-3, 70000.0],
        &[5],
        &Device::Cpu,
    )
    .unwrap();
    save_npy(&tmp.join("x.npy"), &x);
    let out = py(&python, "make_bf16_casts.py", &[&*tmp]);
    assert!(out.contains("OK"), "{out}");
    let want: Vec<f32> = out
        .lines()
        .find_map(|l| l.strip_prefix("ROUND "))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    for d in devices() {
        let mut m = saved_model::load_with(tmp.join("round"), &["serve"], &d).unwrap();
        let got = m.call("serving_default", &[("x", x.to_device(&d).unwrap())]).unwrap();
        assert_eq!(got[0].1.to_vec::<f32>().unwrap(), want, "{d}");
        let e = saved_model::load_with(tmp.join("truncate"), &["serve"], &d)
            .and_then(|mut m| m.call("serving_default", &[("x", x.to_device(&d).unwrap())]))
            .unwrap_err();
        assert!(
            matches!(e, Error::Unimplemented { .. }) && e.to_string().contains("Truncate"),
            "{d}: {e}"
        );
    }
}
