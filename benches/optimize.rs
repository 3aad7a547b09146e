//! Model optimization (issue 14), side by side in one run:
//!
//! - FP16 precision mode: the MNIST example CNN, trained briefly on
//!   synthetic digits and exported, against its `convert_precision(F16)`
//!   form: inference latency (batch 64, median) on the CPU device and every
//!   visible GPU, the largest output difference and the share of images
//!   whose class agrees;
//! - wgflow's int8-weights SavedModel (`quantize_weights`): the same
//!   latency, error and agreement;
//! - TensorFlow Lite: the file size of each converter variant of the CNN
//!   and of an MLP 784-256-10, and its ratio to the float file.
//!
//!     cargo bench --bench optimize

mod common;
use common::{median, mnist_cnn};
use std::time::Instant;
use wgflow::data::synthetic;
use wgflow::lite::{Converter, Optimize};
use wgflow::nn::layers::{Dense, Flatten};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, FitArgs, Model, Sequential};
use wgflow::{DType, Device, Result, Tensor, config, saved_model};

fn predict(dir: &std::path::Path, d: &Device, x: &Tensor) -> Result<(Vec<f32>, f64)> {
    let mut m = saved_model::load_with(dir, &["serve"], d)?;
    let x = x.to_device(d)?;
    let run = |m: &mut saved_model::Loaded| -> Result<Vec<f32>> {
        let out = m.call("serving_default", &[("inputs", x.clone())])?;
        out[0].1.to_vec::<f32>()
    };
    let first = run(&mut m)?;
    let mut t = Vec::new();
    for _ in 0..7 {
        let s = Instant::now();
        run(&mut m)?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok((first, median(t) * 1e3))
}

fn argmax(v: &[f32]) -> Vec<usize> {
    v.chunks(10)
        .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0))
        .collect()
}

fn main() -> Result<()> {
    let cpu = Device::Cpu;
    let tmp = std::env::temp_dir().join(format!("wgflow-bench-optimize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cnn = mnist_cnn(&cpu)?;
    cnn.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let (x, y) = synthetic::digits(4000, 1)?;
    cnn.fit(
        &x,
        &y,
        FitArgs {
            batch_size: 128,
            epochs: 1,
            verbose: false,
            ..FitArgs::default()
        },
    )?;
    let f32_dir = tmp.join("f32");
    let f16_dir = tmp.join("f16");
    cnn.export(&f32_dir)?;
    saved_model::convert_precision(&f32_dir, &f16_dir, DType::F16)?;
    let q_dir = tmp.join("int8");
    saved_model::quantize_weights(&f32_dir, &q_dir)?;

    let (test, _) = synthetic::digits(512, 2)?;
    let batch = wgflow::ops::layout::slice(&test, &[0, 0, 0, 0], &[64, 28, 28, 1])?;
    let mut devices = vec![cpu.clone()];
    devices.extend(config::list_logical_devices()?.into_iter().filter(|d| d.is_gpu()));
    println!(
        "| device | f16 arithmetic | f32 ms (batch 64) | fp16 ms | fp16 / f32 | fp16 max abs error (logits, 512 images) | fp16 same class | int8-weights ms | int8 / f32 | int8 max abs error | int8 same class |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for d in &devices {
        let (_, t32) = predict(&f32_dir, d, &batch)?;
        let (_, t16) = predict(&f16_dir, d, &batch)?;
        let (w, _) = predict(&f32_dir, d, &test)?;
        let (g, _) = predict(&f16_dir, d, &test)?;
        let err = w.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let same = argmax(&w).iter().zip(argmax(&g)).filter(|(a, b)| **a == *b).count();
        let (_, t8) = predict(&q_dir, d, &batch)?;
        let (q, _) = predict(&q_dir, d, &test)?;
        let err8 = w.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let same8 = argmax(&w).iter().zip(argmax(&q)).filter(|(a, b)| **a == *b).count();
        let n = (w.len() / 10) as f64;
        println!(
            "| {} | {} | {t32:.2} | {t16:.2} | {:.2} | {err:.2e} | {:.1}% | {t8:.2} | {:.2} | {err8:.2e} | {:.1}% |",
            d.name(),
            d.f16_arithmetic(),
            t16 / t32,
            same as f64 * 100.0 / n,
            t8 / t32,
            same8 as f64 * 100.0 / n
        );
    }

    let mut mlp = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(256).activation(Activation::Relu))
        .add(Dense::new(10));
    mlp.build(&[28, 28, 1], &cpu)?;
    println!();
    println!("| model | float bytes | dynamic-range int8 | float16 | full int8 |");
    println!("|---|---|---|---|---|");
    let rep = wgflow::ops::layout::slice(&test, &[0, 0, 0, 0], &[128, 28, 28, 1])?;
    for (name, model) in [("MNIST CNN", &mut cnn as &mut Sequential), ("MLP 784-256-10", &mut mlp)] {
        let mut sizes = Vec::new();
        for kind in 0..4 {
            let mut c = Converter::from_keras_model(model)?;
            if kind > 0 {
                c.optimizations = vec![Optimize::Default];
            }
            if kind == 2 {
                c.target_spec.supported_types = vec![DType::F16];
            }
            if kind == 3 {
                c.representative_dataset = Some(vec![vec![rep.clone()]]);
            }
            sizes.push(c.convert()?.len());
        }
        let r = |i: usize| sizes[0] as f64 / sizes[i] as f64;
        println!(
            "| {name} | {} | {} ({:.2}x smaller) | {} ({:.2}x) | {} ({:.2}x) |",
            sizes[0],
            sizes[1],
            r(1),
            sizes[2],
            r(2),
            sizes[3],
            r(3)
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
