//! Training throughput (samples/s) of the MNIST example's CNN and of an
//! MLP (784-256-10, batch 128), eager `train_step`s and the traced step
//! `fit` replays, side by side, on every visible device and the CPU
//! reference.
//!
//!     cargo bench --bench training [-- cnn|mlp] [--tf] [--mixed]
//!
//! `WGFLOW_BENCH_DEVICES=gpu:0,cpu` limits the run to those devices.
//!
//! With `--mixed`, the models train under Keras' "mixed_float16" policy
//! (f16 compute, f32 variables, dynamic loss scaling).
//!
//! With `--tf`, TensorFlow's Keras trains the same models on the CPU
//! (`train_on_batch`, benches/tf_training.py) in the same run, and the
//! CPU device's samples/s are printed as ratios to it. The Python is
//! `WGFLOW_PYTHON`, else the venv `.ci/run` creates
//! (`~/.cache/wgflow-venv`).
//!
//! Each mode takes 3 warm-up steps (tracing, pipeline compilation, pool
//! warm-up); then eager and traced are timed in 5 alternating rounds of at
//! least 5 steps and 0.5 s each, and each mode's median round is reported
//! (the ratio between them is then robust to the machine's speed drifting);
//! a step ends when the device has finished it.

mod common;

use std::time::Instant;
use wgflow::function::Traced;
use wgflow::nn::layers::{Conv2D, Dense, Dropout, Flatten, Layer, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, ops};

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

/// One model's training step on `d`, eager or traced.
struct Run {
    m: Sequential,
    graph: Traced,
    args: [Tensor; 2],
    traced: bool,
}

impl Run {
    fn new(layers: fn() -> Vec<Box<dyn Layer>>, d: &Device, batch: usize, traced: bool) -> wgflow::Result<Run> {
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
        Ok(Run {
            m,
            graph: Traced::new("train_step"),
            args: [x, y],
            traced,
        })
    }

    fn step(&mut self) -> wgflow::Result<()> {
        let Run { m, graph, args, traced } = self;
        if *traced {
            graph.call(args, |a| Ok(vec![m.train_step(&a[0], &a[1])?]))?;
        } else {
            m.train_step(&args[0], &args[1])?;
        }
        Ok(())
    }

    /// Seconds per step over at least 5 steps and `secs` seconds.
    fn time(&mut self, d: &Device, secs: f64) -> wgflow::Result<f64> {
        d.synchronize()?;
        let start = Instant::now();
        let mut steps = 0;
        while steps < 5 || start.elapsed().as_secs_f64() < secs {
            self.step()?;
            steps += 1;
        }
        d.synchronize()?;
        Ok(start.elapsed().as_secs_f64() / steps as f64)
    }
}

/// Eager and traced samples/s of one model on `d`: both warmed up, then
/// timed in alternating rounds (this machine's speed drifts), each mode's
/// median round counting.
fn bench(name: &str, layers: fn() -> Vec<Box<dyn Layer>>, d: &Device, batch: usize) -> wgflow::Result<(f64, f64)> {
    let mut runs = [Run::new(layers, d, batch, false)?, Run::new(layers, d, batch, true)?];
    for r in runs.iter_mut() {
        for _ in 0..3 {
            r.step()?;
        }
    }
    wgflow::ops::profile::reset();
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (r, t) in runs.iter_mut().zip(times.iter_mut()) {
            t.push(r.time(d, 0.5)?);
        }
    }
    let mut rates = [0.0; 2];
    for ((t, rate), mode) in times.iter_mut().zip(rates.iter_mut()).zip(["eager", "traced"]) {
        t.sort_by(f64::total_cmp);
        let s = t[t.len() / 2];
        *rate = batch as f64 / s;
        println!(
            "{:<6} {name:<28} {mode:<8} {:>9.1} samples/s {:>9.2} ms/step",
            d.to_string(),
            *rate,
            s * 1e3
        );
    }
    if wgflow::ops::profile::enabled() {
        print!("{}", wgflow::ops::profile::report());
    }
    Ok((rates[0], rates[1]))
}

/// Alternating timed rounds per mode.
const ROUNDS: usize = 5;

fn python() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("WGFLOW_PYTHON") {
        return Some(p.into());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    let p = cache.join("wgflow-venv/bin/python");
    p.exists().then_some(p)
}

/// TensorFlow's samples/s per model key, from benches/tf_training.py.
fn tensorflow(keys: &[&str]) -> Vec<(String, f64)> {
    let Some(py) = python() else {
        println!("(TensorFlow not measured: set WGFLOW_PYTHON to a Python with tensorflow-cpu, or run .ci/run once)");
        return Vec::new();
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/tf_training.py");
    let out = std::process::Command::new(&py).arg(script).args(keys).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect(),
        Ok(o) => {
            println!("(TensorFlow failed: {})", String::from_utf8_lossy(&o.stderr).trim());
            Vec::new()
        }
        Err(e) => {
            println!("(TensorFlow not measured: {}: {e})", py.display());
            Vec::new()
        }
    }
}

fn main() -> wgflow::Result<()> {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let with_tf = std::env::args().any(|a| a == "--tf");
    let mixed = std::env::args().any(|a| a == "--mixed");
    if mixed {
        wgflow::nn::mixed_precision::set_global_policy("mixed_float16")?;
    }
    let devices = common::bench_devices()?;
    println!(
        "wgflow training throughput{}",
        if mixed { " (mixed_float16)" } else { "" }
    );
    for d in &devices {
        println!("  {d:<6} {}", d.name());
    }
    println!();
    let models: [(&str, &str, fn() -> Vec<Box<dyn Layer>>); 2] = [
        ("cnn", "CNN (MNIST example), b=128", cnn),
        ("mlp", "MLP 784-256-10, b=128", mlp),
    ];
    let keys: Vec<&str> = models
        .iter()
        .map(|m| m.0)
        .filter(|k| filter.as_deref().is_none_or(|f| k.contains(f)))
        .collect();
    let mut cpu = Vec::new();
    for d in &devices {
        for (key, name, layers) in models {
            if keys.contains(&key) {
                let (eager, traced) = bench(name, layers, d, 128)?;
                println!("{:<6} {name:<28} traced/eager {:.2}x", d.to_string(), traced / eager);
                if *d == Device::Cpu {
                    cpu.push((key, name, eager, traced));
                }
            }
        }
    }
    if with_tf {
        println!();
        let tf = tensorflow(&keys);
        for (key, name, eager, traced) in cpu {
            if let Some((_, t)) = tf.iter().find(|(k, _)| k == key) {
                println!(
                    "cpu    {name:<28} TensorFlow {t:>9.1} samples/s; wgflow eager {:.2}x, traced {:.2}x of it",
                    eager / t,
                    traced / t
                );
            }
        }
    }
    Ok(())
}
