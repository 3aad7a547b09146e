//! FP16 precision mode (TF-TRT's `precision_mode='FP16'`):
//! `saved_model::convert_precision` and `wgflow_convert --precision fp16`
//! rewrite a SavedModel to compute in f16 with f32 inputs and outputs; it
//! picks the same class as the f32 model on at least 99% of images on the
//! CPU device and on every GPU adapter, and TensorFlow loads and runs it.

mod common;
use common::*;
use std::path::Path;
use wgflow::data::synthetic;
use wgflow::function::{ConcreteFunction, TensorSpec};
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, saved_model};

fn trained() -> Sequential {
    let d = Device::Cpu;
    set_random_seed(3);
    let mut m = Sequential::new()
        .add(Conv2D::new(8, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    m.build(&[28, 28, 1], &d).unwrap();
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(false),
        SparseCategoricalAccuracy::new(),
    );
    let (x, y) = synthetic::digits(1024, 4).unwrap();
    let args = FitArgs {
        batch_size: 64,
        epochs: 2,
        verbose: false,
        ..FitArgs::default()
    };
    m.fit(&x, &y, args).unwrap();
    m
}

fn argmax_rows(v: &[f32]) -> Vec<usize> {
    v.chunks(10)
        .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

fn predict(dir: &Path, d: &Device, x: &Tensor) -> (Vec<f32>, DType) {
    let mut m = saved_model::load_with(dir, &["serve"], d).unwrap();
    let out = m
        .call("serving_default", &[("inputs", x.to_device(d).unwrap())])
        .unwrap();
    let t = &out[0].1;
    (t.to_vec::<f32>().unwrap(), t.dtype())
}

#[test]
fn fp16_saved_models_agree_with_f32_on_every_device() {
    let tmp = TempDir::new("precision");
    let mut model = trained();
    let f32_dir = tmp.join("f32");
    let f16_dir = tmp.join("f16");
    model.export(&f32_dir).unwrap();
    saved_model::convert_precision(&f32_dir, &f16_dir, DType::F16).unwrap();
    let mut loaded = saved_model::load_with(&f16_dir, &["serve"], &Device::Cpu).unwrap();
    let f = loaded.signature("serving_default").unwrap();
    assert!(
        f.def().values.iter().any(|v| v.dtype == DType::F16),
        "no f16 values in the converted graph"
    );
    assert!(f.inputs().iter().all(|s| s.dtype == DType::F32));
    let (x, _) = synthetic::digits(300, 7).unwrap();
    let (want, _) = predict(&f32_dir, &Device::Cpu, &x);
    let mut devices = vec![Device::Cpu];
    devices.extend(gpus());
    for d in &devices {
        let (got, dtype) = predict(&f16_dir, d, &x);
        assert_eq!(dtype, DType::F32, "{d}: outputs stay f32");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 2e-2, "{d}: max error {err}");
        let same = argmax_rows(&got)
            .iter()
            .zip(argmax_rows(&want))
            .filter(|(a, b)| **a == *b)
            .count();
        assert!(same * 100 >= 99 * 300, "{d}: {same} of 300 argmax agree");
    }
    if let Some(python) = python() {
        save_npy(&tmp.join("x.npy"), &x);
        let out = py(&python, "check_fp16.py", &[&f32_dir, &f16_dir, &tmp.join("x.npy")]);
        assert!(out.contains("OK"), "{out}");
    }
}

#[test]
fn the_command_line_converts_keras_files_and_saved_models() {
    let tmp = TempDir::new("precision-cli");
    let mut model = trained();
    let keras = tmp.join("m.keras");
    model.save(&keras).unwrap();
    let sm = tmp.join("sm");
    model.export(&sm).unwrap();
    for (flag, src, out) in [
        ("--keras_model_file", &keras, tmp.join("a")),
        ("--saved_model_dir", &sm, tmp.join("b")),
    ] {
        let (ok, text) = wgflow_convert(&[
            flag,
            src.to_str().unwrap(),
            "--output_file",
            out.to_str().unwrap(),
            "--precision",
            "fp16",
        ]);
        assert!(ok, "{text}");
        let mut m = saved_model::load_with(&out, &["serve"], &Device::Cpu).unwrap();
        let f = m.signature("serving_default").unwrap();
        assert!(f.def().values.iter().any(|v| v.dtype == DType::F16));
    }
    let onnx = tmp.join("c.onnx");
    let (ok, text) = wgflow_convert(&[
        "--saved_model_dir",
        sm.to_str().unwrap(),
        "--output_file",
        onnx.to_str().unwrap(),
        "--precision",
        "fp16",
    ]);
    assert!(!ok && text.contains("--precision"), "{text}");
}

#[test]
fn training_functions_and_other_dtypes_are_refused() {
    let d = Device::Cpu;
    let spec = TensorSpec::new(&[None, Some(3)], DType::F32).named("x");
    let f = ConcreteFunction::trace("double", &[spec], &d, |x| Ok(vec![x[0].add(&x[0])?])).unwrap();
    let e = f.with_compute_dtype(DType::I32).unwrap_err();
    assert!(e.to_string().contains("f16 or f32"), "{e}");
    let h = f.with_compute_dtype(DType::F16).unwrap();
    let mut h = h;
    let x = Tensor::from_vec(vec![1.5f32, -2.0, 65504.0], &[1, 3], &d).unwrap();
    let y = h.call(&[x]).unwrap();
    assert_eq!(y[0].dtype(), DType::F32);
    // 65504 + 65504 overflows f16, as it does in TensorFlow's FP16 mode.
    assert_eq!(y[0].to_vec::<f32>().unwrap()[..2], [3.0, -4.0]);
    assert!(y[0].to_vec::<f32>().unwrap()[2].is_infinite());
}
