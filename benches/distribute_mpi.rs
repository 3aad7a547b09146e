//! MultiWorkerMirroredStrategy's MPI all-reduce against a raw
//! `MPI_Allreduce` loop, side by side in one MPI job, and the MNIST example
//! CNN's samples/s with one and two workers.
//!
//!     cargo bench --features mpi --bench distribute_mpi
//!
//! Run plainly, it relaunches itself under `mpirun -np 2 --oversubscribe`
//! (OpenMPI; as root with its allow-run-as-root variables); `mpirun -np N
//! target/release/deps/distribute_mpi-* --worker` runs it on N workers. Both
//! loops sum the same host buffers (4 and 64 MiB of f32 per worker) with
//! separate send and receive buffers; runs alternate (wgflow, raw, wgflow,
//! ...), 7 of each, and each run's time is the mean of its iterations (the
//! slowest worker's); the table has the medians. Bandwidths follow
//! nccl-tests: algbw = bytes / time, busbw = algbw x 2(n-1)/n.

mod common;
use common::{median, mnist_cnn};
use mpi::collective::SystemOperation;
use mpi::traits::*;
use std::process::Command;
use std::time::Instant;
use wgflow::distribute::MultiWorkerMirroredStrategy;
use wgflow::nn::FitArgs;
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::{Device, Result, Tensor, ops};

fn main() -> Result<()> {
    let worker = std::env::args().any(|a| a == "--worker");
    if !worker && std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() {
        let exe = std::env::current_exe().expect("the bench's path");
        // One worker (the CNN's samples/s alone), then two.
        for np in ["1", "2"] {
            let status = Command::new("mpirun")
                .args(["--oversubscribe", "-np", np])
                .arg(&exe)
                .arg("--worker")
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .status()
                .expect("run mpirun (Debian: openmpi-bin)");
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        return Ok(());
    }
    let device = wgflow::config::device(&std::env::var("WGFLOW_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let s = MultiWorkerMirroredStrategy::new(&[&device.to_string()])?;
    let world = mpi::topology::SimpleCommunicator::world();
    let n = s.num_workers();
    let chief = s.is_chief();
    if chief && n > 1 {
        println!("MPI all-reduce, {n} workers ({}), f32 sum of host buffers", env_mpi());
        println!("| MiB | wgflow ms | raw MPI_Allreduce ms | wgflow / raw speed | algbw GB/s | busbw GB/s |");
        println!("|---|---|---|---|---|---|");
    }
    for mib in [4usize, 64].into_iter().filter(|_| n > 1) {
        let len = (mib << 20) / 4;
        let send: Vec<f32> = (0..len).map(|i| (i % 97) as f32).collect();
        let mut recv = vec![0.0f32; len];
        let iters = if mib == 4 { 20 } else { 5 };
        // The slowest worker's mean per iteration.
        let slowest = |secs: f64| -> f64 {
            let mut all = vec![0.0f64; n];
            world.all_gather_into(&secs, &mut all[..]);
            all.into_iter().fold(0.0, f64::max)
        };
        let mut ours = Vec::new();
        let mut raw = Vec::new();
        // A warm-up of each.
        s.all_reduce_sum(&send, &mut recv)?;
        world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
        for _ in 0..7 {
            world.barrier();
            let t = Instant::now();
            for _ in 0..iters {
                s.all_reduce_sum(&send, &mut recv)?;
            }
            ours.push(slowest(t.elapsed().as_secs_f64() / iters as f64));
            world.barrier();
            let t = Instant::now();
            for _ in 0..iters {
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
            }
            raw.push(slowest(t.elapsed().as_secs_f64() / iters as f64));
        }
        assert_eq!(recv[5], 5.0 * n as f32, "the sum is wrong");
        let (a, b) = (median(ours), median(raw));
        let algbw = (mib << 20) as f64 / a / 1e9;
        let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
        if chief {
            println!(
                "| {mib} | {:.2} | {:.2} | {:.2}x | {algbw:.2} | {busbw:.2} |",
                a * 1e3,
                b * 1e3,
                b / a
            );
        }
    }

    // Samples/s of the MNIST CNN: one worker alone, then all of them.
    let rows = 2048;
    let x = ops::random_uniform(&[rows, 28, 28, 1], 0.0, 1.0, wgflow::DType::F32, 3, &Device::Cpu)?;
    let y = Tensor::from_vec(
        (0..rows as i32).map(|i| i % 10).collect::<Vec<_>>(),
        &[rows],
        &Device::Cpu,
    )?;
    let mut m = s.scope(mnist_cnn)?;
    m.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let args = |epochs| FitArgs {
        batch_size: 128,
        epochs,
        verbose: false,
        ..FitArgs::default()
    };
    m.fit(&x, &y, args(1))?;
    world.barrier();
    let t = Instant::now();
    m.fit(&x, &y, args(2))?;
    let secs = t.elapsed().as_secs_f64();
    let mut all = vec![0.0f64; n];
    world.all_gather_into(&secs, &mut all[..]);
    let secs = all.into_iter().fold(0.0, f64::max);
    if chief {
        println!(
            "MNIST CNN, {n} workers x {device}, global batch 128: {:.0} samples/s",
            2.0 * rows as f64 / secs
        );
    }
    Ok(())
}

fn env_mpi() -> String {
    let (v, sub) = mpi::environment::version();
    format!(
        "MPI {v}.{sub}, {}",
        mpi::environment::library_version()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
    )
}
