//! The TensorFlow 2 handbook's linear regression: house prices for
//! 2013-2017, normalized; `a` and `b` as variables; 10,000 SGD steps at
//! learning rate 5e-4 on the loss 0.5 * sum((a X + b - y)^2), with a
//! `GradientTape`. Prints a, b, the time and the steps per second.
//!
//! `--mode eager` runs the step's ops one by one; `--mode function` (the
//! default) traces the step once with `wgflow::function` and replays the
//! compiled graph, as `@tf.function` does.
//!
//!     cargo run --release --example linear_regression [-- --mode eager|function] [--steps N]
//!     WGFLOW_DEVICE=cpu cargo run --release --example linear_regression

mod common;

use clap::{Parser, ValueEnum};
use std::time::Instant;
use wgflow::nn::optimizers::SGD;
use wgflow::{DType, GradientTape, Tensor, Variable, config, function, ops};

/// The TF2 handbook's linear regression with a GradientTape, eager or traced.
#[derive(Parser)]
struct Args {
    /// How the training step runs.
    #[arg(long, value_enum, default_value_t = Mode::Function)]
    mode: Mode,
    /// SGD steps.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    steps: usize,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    /// Every op of the step runs eagerly, one by one.
    Eager,
    /// The step is traced once and its compiled graph replayed (`@tf.function`).
    Function,
}

fn main() -> wgflow::Result<()> {
    common::init_logging();
    let Args { mode, steps } = Args::parse();
    let traced = mode == Mode::Function;
    let device = config::default_device()?;
    println!("Device: {device} ({})", device.name());

    let x_raw = [2013.0f32, 2014.0, 2015.0, 2016.0, 2017.0];
    let y_raw = [12000.0f32, 14000.0, 15000.0, 16500.0, 17500.0];
    let norm = |v: &[f32]| {
        let (lo, hi) = (
            v.iter().cloned().fold(f32::MAX, f32::min),
            v.iter().cloned().fold(f32::MIN, f32::max),
        );
        v.iter().map(|x| (x - lo) / (hi - lo)).collect::<Vec<_>>()
    };
    let x = Tensor::from_vec(norm(&x_raw), &[5], &device)?;
    let y = Tensor::from_vec(norm(&y_raw), &[5], &device)?;

    let a = Variable::new(ops::zeros(&[], DType::F32, &device)?, "a");
    let b = Variable::new(ops::zeros(&[], DType::F32, &device)?, "b");
    let vars = [a.clone(), b.clone()];
    let mut optimizer = SGD::new(5e-4);

    let mut step = |args: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
        let (x, y) = (&args[0], &args[1]);
        let tape = GradientTape::new();
        let y_pred = a.value().mul(x)?.add(&b.value())?;
        let loss = y_pred.sub(y)?.square()?.sum(None, false)?.mul_scalar(0.5)?;
        let grads = tape.gradient(&loss, &[&a, &b])?;
        optimizer.apply_gradients(&grads, &vars)?;
        Ok(vec![loss])
    };
    let args = [x, y];
    let start = Instant::now();
    let mut stats = None;
    if traced {
        let mut f = function(&mut step).named("train_step");
        for _ in 0..steps {
            f.call(&args)?;
        }
        stats = f.graph(&args).map(|g| g.stats());
        if std::env::var("SHOW_GRAPH").is_ok() {
            print!("{}", f.graph(&args).unwrap().describe());
        }
    } else {
        for _ in 0..steps {
            step(&args)?;
        }
    }
    let (av, bv) = (a.value().item()?, b.value().item()?);
    let secs = start.elapsed().as_secs_f64();
    println!("Mode: {}", if traced { "function" } else { "eager" });
    if let Some(s) = stats {
        println!(
            "Traced once: {} ops compiled to {} ({} fused kernels covering {} ops)",
            s.traced_ops, s.ops, s.fused_kernels, s.fused_ops
        );
    }
    println!("a = {av:.6}, b = {bv:.6}");
    println!("{steps} steps in {secs:.3} s: {:.0} steps/s", steps as f64 / secs);
    let c = device.counters();
    if device.is_gpu() {
        println!(
            "GPU work: {} kernel launches, {} queue submits",
            c.dispatches, c.submits
        );
    }
    Ok(())
}
