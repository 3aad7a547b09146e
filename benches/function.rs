//! The seed document's benchmark: the TensorFlow 2 handbook's linear
//! regression (5 points, `a` and `b`, SGD at 5e-4, loss 0.5 sum((a x + b -
//! y)^2) under a `GradientTape`), run eagerly and as a traced function side
//! by side on every visible device and on the CPU reference, in steps per
//! second. The seed measured TensorFlow 2: 22.9 s eager, 3.6 s tf.function
//! for 10,000 steps.
//!
//!     cargo bench --bench function [-- STEPS]
//!
//! Each mode runs 50 warm-up steps (tracing, pipelines), then STEPS steps
//! (default: as many as fit in about 2 seconds, at least 200), ending when
//! the device has finished them. Both modes must reach the same a and b.

use std::time::{Duration, Instant};
use wgflow::nn::optimizers::SGD;
use wgflow::{DType, Device, GradientTape, Result, Tensor, Variable, config, function, ops};

/// (steps per second, steps timed, a, b).
fn run(d: &Device, traced: bool, steps: Option<usize>) -> Result<(f64, usize, f64, f64)> {
    let norm = |v: [f32; 5]| {
        let (lo, hi) = (v[0], v[4]);
        v.map(|x| (x - lo) / (hi - lo)).to_vec()
    };
    let x = Tensor::from_vec(norm([2013.0, 2014.0, 2015.0, 2016.0, 2017.0]), &[5], d)?;
    let y = Tensor::from_vec(norm([12000.0, 14000.0, 15000.0, 16500.0, 17500.0]), &[5], d)?;
    let a = Variable::new(ops::zeros(&[], DType::F32, d)?, "a");
    let b = Variable::new(ops::zeros(&[], DType::F32, d)?, "b");
    let vars = [a.clone(), b.clone()];
    let mut opt = SGD::new(5e-4);
    let mut step = |args: &[Tensor]| -> Result<Vec<Tensor>> {
        let tape = GradientTape::new();
        let pred = a.value().mul(&args[0])?.add(&b.value())?;
        let loss = pred.sub(&args[1])?.square()?.sum(None, false)?.mul_scalar(0.5)?;
        let grads = tape.gradient(&loss, &[&a, &b])?;
        opt.apply_gradients(&grads, &vars)?;
        Ok(vec![loss])
    };
    let args = [x, y];
    let (rate, done) = if traced {
        let mut f = function(&mut step);
        time(d, steps, |n| (0..n).try_for_each(|_| f.call(&args).map(drop)))?
    } else {
        time(d, steps, |n| (0..n).try_for_each(|_| step(&args).map(drop)))?
    };
    Ok((rate, done, a.value().item()?, b.value().item()?))
}

/// Warms up with 50 steps, then times `steps` of them (or at least 200 and
/// about 2 seconds): (steps per second, steps timed).
fn time(d: &Device, steps: Option<usize>, mut go: impl FnMut(usize) -> Result<()>) -> Result<(f64, usize)> {
    go(50)?;
    d.synchronize()?;
    let start = Instant::now();
    let mut done = 0;
    match steps {
        Some(n) => {
            go(n)?;
            done = n;
        }
        None => {
            while done < 200 || start.elapsed() < Duration::from_secs(2) {
                go(50)?;
                done += 50;
            }
        }
    }
    d.synchronize()?;
    Ok((done as f64 / start.elapsed().as_secs_f64(), done))
}

fn main() -> Result<()> {
    let steps = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok());
    let devices = config::list_logical_devices()?;
    println!("linear regression steps/s, eager vs wgflow::function");
    for d in &devices {
        println!("  {d:<6} {}", d.name());
    }
    println!();
    for d in &devices {
        let (eager, n_e, ea, eb) = run(d, false, steps)?;
        let (traced, n_t, ta, tb) = run(d, true, steps)?;
        println!(
            "{:<6} eager {eager:>10.0} steps/s ({n_e} steps)   function {traced:>10.0} steps/s ({n_t} steps)   {:.1}x",
            d.to_string(),
            traced / eager
        );
        if n_e == n_t && ((ea - ta).abs() > 1e-5 || (eb - tb).abs() > 1e-5) {
            eprintln!("{d}: eager ({ea}, {eb}) and traced ({ta}, {tb}) disagree");
            std::process::exit(1);
        }
    }
    Ok(())
}
