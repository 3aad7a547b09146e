//! wgflow's own quantized SavedModel (`saved_model::quantize_weights`,
//! `wgflow_convert --optimizations default` to a SavedModel): matmul and
//! convolution weights of 1,024 values or more stay int8 on the device,
//! four to a word, and are dequantized where they are read; the model
//! predicts the same classes as the float one on the CPU device and every
//! GPU, with about 4x less weight memory.

mod common;
use common::*;
use std::path::Path;
use wgflow::data::synthetic;
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, saved_model};

fn trained() -> Sequential {
    let d = Device::Cpu;
    set_random_seed(21);
    let mut m = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(64).activation(Activation::Relu))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], &d).unwrap();
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let (x, y) = synthetic::digits(2048, 4).unwrap();
    m.fit(
        &x,
        &y,
        FitArgs {
            batch_size: 64,
            epochs: 2,
            verbose: false,
            ..FitArgs::default()
        },
    )
    .unwrap();
    m
}

fn weight_bytes(m: &saved_model::Loaded) -> usize {
    m.variables().iter().map(|(_, v)| v.numel() * 4).sum()
}

fn predict(m: &mut saved_model::Loaded, x: &Tensor, d: &Device) -> Vec<f32> {
    let out = m
        .call("serving_default", &[("inputs", x.to_device(d).unwrap())])
        .unwrap();
    out[0].1.to_vec::<f32>().unwrap()
}

fn classes(v: &[f32]) -> Vec<usize> {
    v.chunks(10)
        .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

#[test]
fn int8_weights_predict_the_same_classes_with_a_quarter_of_the_memory() {
    let tmp = TempDir::new("int8-weights");
    let mut model = trained();
    let f32_dir = tmp.join("f32");
    let q_dir = tmp.join("int8");
    model.export(&f32_dir).unwrap();
    saved_model::quantize_weights(&f32_dir, &q_dir).unwrap();
    let (x, y) = synthetic::digits(400, 9).unwrap();
    let labels = y.to_vec::<i32>().unwrap();
    let mut devices = vec![Device::Cpu];
    devices.extend(gpus());
    for d in &devices {
        let mut f = saved_model::load_with(&f32_dir, &["serve"], d).unwrap();
        let mut q = saved_model::load_with(&q_dir, &["serve"], d).unwrap();
        let (fb, qb) = (weight_bytes(&f), weight_bytes(&q));
        assert!(
            fb as f64 / qb as f64 >= 3.3,
            "{d}: weights {fb} bytes as f32, {qb} as int8"
        );
        assert!(
            q.variables().iter().any(|(_, v)| v.dtype() == DType::I32),
            "{d}: no packed weights"
        );
        let (want, got) = (predict(&mut f, &x, d), predict(&mut q, &x, d));
        let (cw, cg) = (classes(&want), classes(&got));
        let acc = |c: &[usize]| c.iter().zip(&labels).filter(|(a, b)| **a as i32 == **b).count() as f64 / 400.0;
        assert!(
            acc(&cg) >= acc(&cw) - 0.01,
            "{d}: int8 accuracy {} against float {}",
            acc(&cg),
            acc(&cw)
        );
        let same = cw.iter().zip(&cg).filter(|(a, b)| a == b).count();
        assert!(same >= 392, "{d}: {same} of 400 classes agree");
        // The weights are expanded inside the product kernels: no f32 copy
        // of them is computed.
        let xd = x.to_device(d).unwrap();
        let plan = q.signature("serving_default").unwrap().graph(&[xd]).unwrap().describe();
        assert_eq!(plan.matches("conv2d_int8").count(), 1, "{d}:\n{plan}");
        assert_eq!(plan.matches("matmul_int8").count(), 1, "{d}:\n{plan}");
        assert!(!plan.contains("dequantize_int8"), "{d}:\n{plan}");
        if d.is_gpu() {
            // Nor does the step hold one: its intermediate buffers are the
            // float model's.
            predict(&mut f, &x, d);
            predict(&mut q, &x, d);
            let xd = x.to_device(d).unwrap();
            let bytes = |m: &mut saved_model::Loaded| {
                let g = m.signature("serving_default").unwrap().graph(&[xd.clone()]).unwrap();
                g.memory_plan().expect("a memory plan after three calls").bytes
            };
            let (fb, qb) = (bytes(&mut f), bytes(&mut q));
            assert!(qb <= fb, "{d}: int8 step buffers {qb} bytes, float {fb}");
        }
        if d.is_gpu() {
            // The packed weights are what the device holds: a quarter of the bytes.
            let words: usize = q
                .variables()
                .iter()
                .filter(|(_, v)| v.dtype() == DType::I32)
                .map(|(_, v)| v.numel())
                .sum();
            let floats: usize = f.variables().iter().map(|(_, v)| v.numel()).sum();
            assert!(
                floats as f64 / words as f64 > 3.9,
                "{d}: {floats} floats against {words} words"
            );
        }
    }
}

#[test]
fn the_command_line_writes_the_int8_variant() {
    let tmp = TempDir::new("int8-cli");
    let mut model = trained();
    let sm = tmp.join("sm");
    model.export(&sm).unwrap();
    let keras = tmp.join("m.keras");
    model.save(&keras).unwrap();
    let run = wgflow_convert;
    for (flag, src, out) in [
        ("--saved_model_dir", &sm, tmp.join("a")),
        ("--keras_model_file", &keras, tmp.join("b")),
    ] {
        let (ok, err) = run(&[
            flag,
            src.to_str().unwrap(),
            "--output_file",
            out.to_str().unwrap(),
            "--optimizations",
            "default",
        ]);
        assert!(ok, "{err}");
        let data = |d: &Path| {
            std::fs::read_dir(d.join("variables"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains("data"))
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum::<u64>()
        };
        assert!(
            data(&sm) as f64 / data(&out) as f64 > 3.0,
            "{} vs {}",
            data(&sm),
            data(&out)
        );
        saved_model::load_with(&out, &["serve"], &Device::Cpu).unwrap();
    }
    let (ok, err) = run(&[
        "--saved_model_dir",
        sm.to_str().unwrap(),
        "--output_file",
        tmp.join("c").to_str().unwrap(),
        "--optimizations",
        "int8",
    ]);
    assert!(!ok && err.contains(".tflite"), "{err}");
}
