//! What the benches share.
#![allow(dead_code)]

use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::{Activation, Sequential, set_random_seed};
use wgflow::{Device, Result};

/// The MNIST example's CNN (without dropout), built on `d` from seed 1.
pub fn mnist_cnn(d: &Device) -> Result<Sequential> {
    set_random_seed(1);
    let mut m = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d)?;
    Ok(m)
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every logical device, or those `WGFLOW_BENCH_DEVICES` names
/// (comma-separated, e.g. `gpu:0,cpu`); naming none of them exits with a
/// message listing them.
pub fn bench_devices() -> Result<Vec<Device>> {
    let mut devices = wgflow::config::list_logical_devices()?;
    if let Ok(v) = std::env::var("WGFLOW_BENCH_DEVICES") {
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        devices.retain(|d| v.split(',').any(|n| n.trim() == d.to_string()));
        if devices.is_empty() {
            eprintln!("WGFLOW_BENCH_DEVICES={v} names none of {}", names.join(", "));
            std::process::exit(2);
        }
    }
    Ok(devices)
}
