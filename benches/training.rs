//! Training throughput (samples/s) of the MNIST example's CNN and of an
//! MLP (784-256-10, batch 128), eager `train_step`s and the traced step
//! `fit` replays, side by side, on every visible device and the CPU
//! reference.
//!
//!     cargo bench --bench training [-- cnn|mlp]
//!
//! Each run takes 3 warm-up steps (tracing, pipeline compilation, pool
//! warm-up), then is timed over at least 10 steps and 2 seconds; a step
//! ends when the device has finished it.

use std::time::{Duration, Instant};
use wgflow::function::Traced;
use wgflow::nn::layers::{Conv2D, Dense, Dropout, Flatten, Layer, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, config, ops};

fn cnn() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(Conv2D::new(16, [3, 3]).activation(Activation::Relu)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(Conv2D::new(32, [3, 3]).activation(Activation::Relu)),
        Box::new(MaxPooling2D::new([2, 2])),
        Box::new(Flatten::new()),
        Box::new(Dropout::new(0.25)),
        Box::new(Dense::new(10)),
    ]
}

fn mlp() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(Flatten::new()),
        Box::new(Dense::new(256).activation(Activation::Relu)),
        Box::new(Dense::new(10)),
    ]
}

fn bench(
    name: &str,
    layers: fn() -> Vec<Box<dyn Layer>>,
    d: &Device,
    batch: usize,
    traced: bool,
) -> wgflow::Result<f64> {
    set_random_seed(1);
    let mut m = Sequential::from_layers(layers());
    m.build(&[28, 28, 1], d)?;
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let x = ops::random_uniform(&[batch, 28, 28, 1], 0.0, 1.0, DType::F32, 1, d)?;
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[batch], d)?;
    let mut graph = Traced::new("train_step");
    let args = [x, y];
    let mut step = |m: &mut Sequential| -> wgflow::Result<()> {
        if traced {
            graph.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?]))?;
        } else {
            m.train_step(&args[0], &args[1])?;
        }
        Ok(())
    };
    for _ in 0..3 {
        step(&mut m)?;
    }
    d.synchronize()?;
    wgflow::ops::profile::reset();
    let start = Instant::now();
    let mut steps = 0;
    while steps < 10 || start.elapsed() < Duration::from_secs(2) {
        step(&mut m)?;
        steps += 1;
    }
    d.synchronize()?;
    let s = start.elapsed().as_secs_f64();
    let rate = (steps * batch) as f64 / s;
    println!(
        "{:<6} {name:<28} {:<8} {:>9.1} samples/s {:>9.2} ms/step",
        d.to_string(),
        if traced { "traced" } else { "eager" },
        rate,
        s * 1e3 / steps as f64
    );
    if wgflow::ops::profile::enabled() {
        print!("{}", wgflow::ops::profile::report());
    }
    Ok(rate)
}

fn main() -> wgflow::Result<()> {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let devices = config::list_logical_devices()?;
    println!("wgflow training throughput");
    for d in &devices {
        println!("  {d:<6} {}", d.name());
    }
    println!();
    for d in &devices {
        let models: [(&str, &str, fn() -> Vec<Box<dyn Layer>>); 2] = [
            ("cnn", "CNN (MNIST example), b=128", cnn),
            ("mlp", "MLP 784-256-10, b=128", mlp),
        ];
        for (key, name, layers) in models {
            if filter.as_deref().is_none_or(|f| key.contains(f)) {
                let eager = bench(name, layers, d, 128, false)?;
                let traced = bench(name, layers, d, 128, true)?;
                println!("{:<6} {name:<28} traced/eager {:.2}x", d.to_string(), traced / eager);
            }
        }
    }
    Ok(())
}
