//! MirroredStrategy's pieces, side by side in one run:
//!
//! - the in-process all-reduce (`distribute::all_reduce_sum`) of 4 and 64 MiB
//!   per replica over the visible GPUs (and a GPU with the CPU device),
//!   with nccl-tests' algorithm and bus bandwidth (algbw = bytes / time,
//!   busbw = algbw x 2(n-1)/n), against its parts measured alone: the
//!   slowest read-back, the host sum, the slowest upload;
//! - uploads through the device's staging ring against wgpu's
//!   `write_buffer`, alternating in one run;
//! - the MNIST example CNN's training samples/s with 1 and 2 replicas, and
//!   with 2 replicas for several gradient pack sizes (one pack read after
//!   the backward pass, against packs started during it).
//!
//!     cargo bench --bench distribute

mod common;
use common::{median, mnist_cnn};
use std::time::Instant;
use wgflow::distribute::{CommunicationOptions, MirroredStrategy, all_reduce_sum};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{FitArgs, Model};
use wgflow::{DType, Device, Result, Tensor, config, ops};

fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn main() -> Result<()> {
    let gpus: Vec<Device> = config::list_logical_devices()?
        .into_iter()
        .filter(|d| d.is_gpu())
        .collect();
    let mut groups: Vec<Vec<Device>> = Vec::new();
    if gpus.len() >= 2 {
        groups.push(gpus[..2].to_vec());
    }
    if let Some(g) = gpus.first() {
        groups.push(vec![g.clone(), Device::Cpu]);
    }
    println!(
        "| replicas | MiB per replica | all-reduce ms | algbw GB/s | busbw GB/s | slowest read-back ms | host sum ms | slowest upload ms | all-reduce / parts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for devs in &groups {
        for mib in [4usize, 64] {
            let n = mib << 18;
            let xs: Vec<Tensor> = devs
                .iter()
                .enumerate()
                .map(|(i, d)| ops::random_uniform(&[n], -1.0, 1.0, DType::F32, i as u64, d))
                .collect::<Result<_>>()?;
            let reps = 5;
            let t_all = time(reps, || {
                let s = all_reduce_sum(&xs, &devs[0])?;
                s.to_device(&devs[0])?;
                s.sum(None, false)?.item()?;
                Ok(())
            })?;
            let mut read = 0f64;
            let mut hosts = Vec::new();
            for x in &xs {
                read = read.max(time(reps, || x.to_vec::<f32>().map(|_| ()))?);
                hosts.push(x.to_vec::<f32>()?);
            }
            let sum = time(reps, || {
                let mut out = vec![0f32; n];
                for h in &hosts {
                    for (o, v) in out.iter_mut().zip(h) {
                        *o += v;
                    }
                }
                std::hint::black_box(&out);
                Ok(())
            })?;
            let mut up = 0f64;
            for d in devs {
                up = up.max(time(reps, || {
                    let t = Tensor::from_slice(&hosts[0], &[n], d)?;
                    t.sum(None, false)?.item()?;
                    Ok(())
                })?);
            }
            let bytes = (n * 4) as f64;
            let r = devs.len() as f64;
            let algbw = bytes / t_all / 1e9;
            println!(
                "| {} | {mib} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2}x |",
                devs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" + "),
                t_all * 1e3,
                algbw,
                algbw * 2.0 * (r - 1.0) / r,
                read * 1e3,
                sum * 1e3,
                up * 1e3,
                t_all / (read + sum + up)
            );
        }
    }
    println!();
    println!("| device | upload size | uploads | staging ring ms | write_buffer ms | ring / write_buffer |");
    println!("|---|---|---|---|---|---|");
    for d in gpus.iter().take(1) {
        for (kib, count) in [(64usize, 400usize), (256, 200), (1024, 100), (8192, 20)] {
            let host = vec![0.5f32; kib << 8];
            let upload = || -> Result<()> {
                let ts: Vec<Tensor> = (0..count)
                    .map(|_| Tensor::from_slice(&host, &[host.len()], d))
                    .collect::<Result<_>>()?;
                d.synchronize()?;
                drop(ts);
                Ok(())
            };
            let (mut ring, mut plain) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                for on in [true, false] {
                    wgflow::runtime::wgpu::force_upload_ring(on);
                    let t = time(1, upload)?;
                    if on { ring.push(t) } else { plain.push(t) }
                }
            }
            wgflow::runtime::wgpu::force_upload_ring(true);
            let (r, p) = (median(ring), median(plain));
            println!(
                "| {d} | {kib} KiB | {count} | {:.1} | {:.1} | {:.2}x |",
                r * 1e3,
                p * 1e3,
                r / p
            );
        }
    }
    println!();
    println!("| replicas | global batch | samples/s |");
    println!("|---|---|---|");
    let x = ops::random_uniform(&[2048, 28, 28, 1], 0.0, 1.0, DType::F32, 7, &Device::Cpu)?;
    let y = ops::random_uniform(&[2048], 0.0, 9.99, DType::F32, 8, &Device::Cpu)?.cast(DType::I32)?;
    let args = || FitArgs {
        batch_size: 128,
        epochs: 1,
        verbose: false,
        shuffle: false,
        ..FitArgs::default()
    };
    let mut configs: Vec<Vec<Device>> = gpus.iter().take(1).map(|g| vec![g.clone()]).collect();
    configs.extend(groups.iter().cloned());
    configs.push(vec![Device::Cpu]);
    for devs in configs {
        let names: Vec<String> = devs.iter().map(|d| d.to_string()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let s = MirroredStrategy::new(&refs)?;
        let mut m = s.scope(mnist_cnn)?;
        m.compile(
            Adam::new(1e-3),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let warm = x.slice(&[0, 0, 0, 0], &[256, 28, 28, 1])?;
        let wy = y.slice(&[0], &[256])?;
        m.fit(&warm, &wy, args())?;
        let t = Instant::now();
        m.fit(&x, &y, args())?;
        let sps = 2048.0 / t.elapsed().as_secs_f64();
        println!("| {} | 128 | {sps:.0} |", names.join(" + "));
    }
    if let Some(devs) = groups.first() {
        println!();
        println!("| replicas | bytes per pack | packs per step | samples/s |");
        println!("|---|---|---|---|");
        let names: Vec<String> = devs.iter().map(|d| d.to_string()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut rows = Vec::new();
        // Alternating runs, each pack size's median reported.
        for round in 0..3 {
            for (k, pack) in [usize::MAX, 256 << 10, 32 << 10].into_iter().enumerate() {
                let s = MirroredStrategy::new(&refs)?
                    .with_communication_options(CommunicationOptions { bytes_per_pack: pack });
                let mut m = s.scope(mnist_cnn)?;
                m.compile(
                    Adam::new(1e-3),
                    SparseCategoricalCrossentropy::new(true),
                    SparseCategoricalAccuracy::new(),
                );
                let grads: usize = m.replicas()[0]
                    .trainable_variables()
                    .iter()
                    .map(|v| v.shape().iter().product::<usize>() * 4)
                    .sum();
                let warm = x.slice(&[0, 0, 0, 0], &[256, 28, 28, 1])?;
                let wy = y.slice(&[0], &[256])?;
                m.fit(&warm, &wy, args())?;
                let t = Instant::now();
                m.fit(&x, &y, args())?;
                let sps = 2048.0 / t.elapsed().as_secs_f64();
                if round == 0 {
                    rows.push((pack, grads.div_ceil(pack.min(grads)), Vec::new()));
                }
                rows[k].2.push(sps);
            }
        }
        for (pack, packs, sps) in rows {
            let label = if pack == usize::MAX {
                "one pack".to_string()
            } else {
                format!("{} KiB", pack >> 10)
            };
            println!("| {} | {label} | ~{packs} | {:.0} |", names.join(" + "), median(sps));
        }
    }
    Ok(())
}
