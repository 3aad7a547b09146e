//! SavedModel serving latency, wgflow against TensorFlow side by side: the
//! MNIST example CNN (conv 16, pool, conv 32, pool, flatten, dense 10) is
//! exported once, then each side loads it in this run and is timed for
//! load, first call (batch 1) and steady calls at batches 1 and 64.
//!
//!     cargo bench --bench saved_model
//!
//! wgflow runs on every visible device and the CPU device; TensorFlow
//! (`tf.saved_model.load(...).signatures["serving_default"]`, CPU) runs
//! when `WGFLOW_PYTHON` names a Python with tensorflow-cpu.

use std::time::Instant;
use wgflow::io::saved_model;
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::{Activation, Model, Sequential};
use wgflow::{DType, Device, Result, Tensor, config, ops};

const STEADY: usize = 30;

fn time_calls(l: &mut saved_model::Loaded, x: &Tensor) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..STEADY {
        let out = l.call("serving_default", &[("inputs", x.clone())])?;
        out[0].1.to_vec::<f32>()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / STEADY as f64)
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("wgflow-bench-sm-{}", std::process::id()));
    let mut model = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    model.build(&[28, 28, 1], &Device::Cpu)?;
    model.export(&dir)?;
    println!("| runtime | device | load ms | first call ms (batch 1) | steady ms, batch 1 | steady ms, batch 64 |");
    println!("|---|---|---|---|---|---|");
    let mut devices: Vec<Device> = config::list_logical_devices()?
        .into_iter()
        .filter(|d| d.is_gpu())
        .collect();
    devices.push(Device::Cpu);
    for d in devices {
        let x1 = ops::random_uniform(&[1, 28, 28, 1], 0.0, 1.0, DType::F32, 1, &d)?;
        let x64 = ops::random_uniform(&[64, 28, 28, 1], 0.0, 1.0, DType::F32, 2, &d)?;
        let t = Instant::now();
        let mut l = saved_model::load_with(&dir, &["serve"], &d)?;
        let load = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        l.call("serving_default", &[("inputs", x1.clone())])?[0]
            .1
            .to_vec::<f32>()?;
        let first = t.elapsed().as_secs_f64() * 1e3;
        l.call("serving_default", &[("inputs", x64.clone())])?;
        let s1 = time_calls(&mut l, &x1)?;
        let s64 = time_calls(&mut l, &x64)?;
        println!(
            "| wgflow | {d} ({}) | {load:.1} | {first:.1} | {s1:.2} | {s64:.2} |",
            d.name()
        );
    }
    if let Some(py) = std::env::var_os("WGFLOW_PYTHON") {
        let script = format!(
            r#"
import time, os
t0 = time.perf_counter()
import tensorflow as tf, numpy as np
t1 = time.perf_counter()
m = tf.saved_model.load({dir:?}); f = m.signatures["serving_default"]
t2 = time.perf_counter()
x1 = tf.constant(np.random.rand(1, 28, 28, 1).astype("float32"))
x64 = tf.constant(np.random.rand(64, 28, 28, 1).astype("float32"))
f(inputs=x1)["output_0"].numpy(); t3 = time.perf_counter()
f(inputs=x64)["output_0"].numpy()
def steady(x):
    t = time.perf_counter()
    for _ in range({STEADY}): f(inputs=x)["output_0"].numpy()
    return (time.perf_counter() - t) * 1e3 / {STEADY}
s1 = steady(x1); s64 = steady(x64)
print(f"| TensorFlow {{tf.__version__}} | CPU | {{(t2-t1)*1e3:.1f}} | {{(t3-t2)*1e3:.1f}} | {{s1:.2f}} | {{s64:.2f}} |")
"#,
            dir = dir.display().to_string()
        );
        let out = std::process::Command::new(py)
            .args(["-c", &script])
            .env("TF_CPP_MIN_LOG_LEVEL", "3")
            .env("CUDA_VISIBLE_DEVICES", "")
            .output()
            .map_err(|e| wgflow::Error::InvalidArgument {
                op: "bench",
                msg: e.to_string(),
            })?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    } else {
        println!("(TensorFlow not measured: set WGFLOW_PYTHON to a Python with tensorflow-cpu)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
