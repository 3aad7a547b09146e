//! Prints the physical and logical devices and the default one, so the
//! effect of WGFLOW_VISIBLE_DEVICES / WGFLOW_DEVICE can be seen:
//!
//!     cargo run --example devices
//!     WGFLOW_VISIBLE_DEVICES=1 cargo run --example devices
//!     WGFLOW_DEVICE=cpu cargo run --example devices
//!     WGFLOW_GEMM=cooperative cargo run --example devices   (an error without tensor cores)

mod common;

use wgflow::{Tensor, config};

fn main() {
    common::init_logging();
    println!("Physical devices:");
    for d in config::list_physical_devices() {
        println!("  {d}");
        // Which GEMM kernels matmul and the convolutions use there.
        println!("      GEMM: {}", d.gemm_kernels());
        println!("      elementwise: {}", d.elementwise_kernels());
    }
    let logical = match config::list_logical_devices() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("Logical devices:");
    for d in &logical {
        let phys = match d {
            wgflow::Device::Cpu => "CPU reference".to_string(),
            _ => d.name().to_string(),
        };
        println!("  {d:<6} {phys}");
    }
    let default = config::default_device().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    println!("Default device: {default} ({})", default.name());
    // A small op on the default device proves it runs.
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], &default).and_then(|x| x.matmul(&x));
    match x.and_then(|y| y.to_vec::<f32>()) {
        Ok(v) => println!("[[1,2],[3,4]]^2 on {default} = {v:?}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
