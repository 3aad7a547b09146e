//! Kernel throughput on every visible device and the CPU reference:
//! matmul (256..2048, f32 and f16), conv2d, an elementwise chain (eager
//! and traced into one fused kernel),
//! reductions and softmax. Prints GFLOP/s or GB/s with the adapter name.
//!
//!     cargo bench --bench kernels              # everything
//!     cargo bench --bench kernels -- matmul    # names containing "matmul"
//!     WGFLOW_BENCH_QUICK=1 cargo bench ...     # smaller sizes, fewer runs
//!     WGFLOW_BENCH_SIZES=1024,4096 cargo bench --bench kernels -- matmul
//!                                              # matmul sizes to run
//!     WGFLOW_BENCH_GEMM=tiled|wide|...|cooperative_staged ... # force a GEMM kernel (as WGFLOW_GEMM)
//!     WGFLOW_BENCH_DEVICES=gpu:0 cargo bench ... # only these devices
//!
//! Each case runs once to warm up (pipeline compilation), then repeats until
//! a second has passed (at least 3 runs); the median run is reported. GPU
//! timings include submission and the wait for completion.

mod common;

use std::time::{Duration, Instant};
use wgflow::ops::{self, conv, softmax};
use wgflow::{DType, Device, Padding, Tensor};

fn median_secs<R>(mut f: impl FnMut() -> R, dev: &Device) -> f64 {
    let r = f();
    dev.synchronize().unwrap();
    drop(r);
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed() < Duration::from_secs(1) && runs.len() < 50) {
        let t = Instant::now();
        // The result is held until the sync: a GPU computes eager
        // elementwise results that are dropped unread at no cost at all
        // (runtime::wgpu::fusion), so a bench must keep what it times.
        let r = f();
        dev.synchronize().unwrap();
        runs.push(t.elapsed().as_secs_f64());
        drop(r);
    }
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[runs.len() / 2]
}

/// The kernel `x @ y` ran on (after the autotuner's choice, with its
/// candidates' times), as `Graph::describe` names it.
fn kernel_of(x: &Tensor, y: &Tensor) -> String {
    plan_of("matmul", &[x.clone(), y.clone()], |a| a[0].matmul(&a[1]))
}

/// What `Graph::describe` says of the `op` node of `f` traced on `args`:
/// its kernel or plan, with the autotuner's times.
fn plan_of(op: &str, args: &[Tensor], f: impl Fn(&[Tensor]) -> wgflow::Result<Tensor>) -> String {
    let mut t = wgflow::function::Traced::new(op);
    if let Err(e) = t.call(args, |a| Ok(vec![f(a)?])) {
        return e.to_string();
    }
    let plan = t.graph(args).map(|g| g.describe()).unwrap_or_default();
    let line = plan.lines().find(|l| l.contains(&format!("{op} ["))).unwrap_or("?");
    let kernel = line.split_once(" [").map_or(line, |(_, k)| k);
    kernel.rsplit_once("] ->").map_or(kernel, |(k, _)| k).to_string()
}

fn rand(shape: &[usize], dt: DType, seed: u64, d: &Device) -> Tensor {
    ops::random_normal(shape, 0.0, 1.0, dt, seed, d).unwrap()
}

struct Bench {
    filter: Option<String>,
    quick: bool,
}

impl Bench {
    fn run<R>(&self, name: &str, dev: &Device, work: f64, unit: &str, f: impl FnMut() -> R) {
        if self.filter.as_ref().is_some_and(|p| !name.contains(p.as_str())) {
            return;
        }
        let s = median_secs(f, dev);
        let rate = work / s / 1e9;
        println!(
            "{:<8} {:<44} {:>10.3} ms {:>9.2} {unit}",
            dev.to_string(),
            name,
            s * 1e3,
            rate
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let b = Bench {
        filter: args.first().cloned(),
        quick: std::env::var("WGFLOW_BENCH_QUICK").is_ok(),
    };
    if let Ok(v) = std::env::var("WGFLOW_BENCH_GEMM") {
        use wgflow::runtime::wgpu::{GemmVariant, force_gemm_variant};
        let Some(g) = GemmVariant::parse(&v) else {
            panic!("WGFLOW_BENCH_GEMM: one of {}", GemmVariant::NAMES)
        };
        force_gemm_variant(g);
    }
    let devices = common::bench_devices().expect("devices");
    println!("wgflow kernel benchmarks");
    for d in &devices {
        println!("  {d:<6} {}", d.name());
    }
    println!();
    let sizes: Vec<usize> = match std::env::var("WGFLOW_BENCH_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse().expect("WGFLOW_BENCH_SIZES: comma-separated integers"))
            .collect(),
        Err(_) if b.quick => vec![256, 512],
        Err(_) => vec![256, 512, 1024, 2048],
    };
    for d in &devices {
        for &n in &sizes {
            for dt in [DType::F32, DType::F16] {
                let x = rand(&[n, n], dt, 1, d);
                let y = rand(&[n, n], dt, 2, d);
                let name = format!("matmul {n}x{n}x{n} {dt}");
                b.run(&name, d, 2.0 * (n as f64).powi(3), "GFLOP/s", || {
                    x.matmul(&y).unwrap();
                });
                if d.is_gpu() && b.filter.as_ref().is_none_or(|p| name.contains(p.as_str())) {
                    println!("         {:<44} {}", "", kernel_of(&x, &y));
                }
            }
        }
        // A CNN layer as the MNIST example has it, and a wider one; in f16
        // too on GPUs (mixed precision), with the plan each forward
        // convolution took (the autotuner weighs the implicit GEMM against
        // patch matrices and the matmul's kernels).
        let f16 = d.is_gpu() && d.f16_arithmetic();
        for (dt, (nb, h, c, o)) in [DType::F32, DType::F16]
            .into_iter()
            .filter(|&dt| dt == DType::F32 || f16)
            .flat_map(|dt| [(128usize, 14usize, 32usize, 64usize), (32, 32, 64, 64)].map(|l| (dt, l)))
        {
            let x = rand(&[nb, h, h, c], dt, 3, d);
            let f = rand(&[3, 3, c, o], dt, 4, d);
            let flops = 2.0 * (nb * h * h * o * 9 * c) as f64;
            let suffix = if dt == DType::F16 { " f16" } else { "" };
            let name = format!("conv2d {nb}x{h}x{h}x{c} 3x3x{o} same{suffix}");
            let fwd = |a: &[Tensor]| conv::conv2d(&a[0], &a[1], [1, 1], Padding::Same, [1, 1]);
            b.run(&name, d, flops, "GFLOP/s", || fwd(&[x.clone(), f.clone()]).unwrap());
            if d.is_gpu() && b.filter.as_ref().is_none_or(|p| name.contains(p.as_str())) {
                println!(
                    "         {:<44} {}",
                    "",
                    plan_of("conv2d", &[x.clone(), f.clone()], fwd)
                );
            }
            let dy = rand(&[nb, h, h, o], dt, 5, d);
            b.run(
                &format!("conv2d filter grad {nb}x{h}x{h}x{c}{suffix}"),
                d,
                flops,
                "GFLOP/s",
                || conv::conv2d_backprop_filter(&x, &[3, 3, c, o], &dy, [1, 1], Padding::Same, [1, 1]).unwrap(),
            );
            b.run(
                &format!("conv2d input grad {nb}x{h}x{h}x{c}{suffix}"),
                d,
                flops,
                "GFLOP/s",
                || conv::conv2d_backprop_input(&[nb, h, h, c], &f, &dy, [1, 1], Padding::Same, [1, 1]).unwrap(),
            );
        }
        // WGFLOW_BENCH_ELEMENTS: elements of the elementwise benches (a
        // multiple of 1024; on a fast GPU 4M are a few microseconds, below
        // the cost of a launch and a sync, so its bandwidth needs more).
        let n = match std::env::var("WGFLOW_BENCH_ELEMENTS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(n) if n >= 1024 && n % 1024 == 0 => n,
            Some(_) => panic!("WGFLOW_BENCH_ELEMENTS: a multiple of 1024"),
            None if b.quick => 1 << 20,
            None => 1 << 22,
        };
        let x = rand(&[n], DType::F32, 6, d);
        let y = rand(&[n], DType::F32, 7, d);
        // gelu(x * y + x) - y: four kernels, each reading and writing n floats.
        b.run(
            &format!("elementwise chain (4 ops) {n}"),
            d,
            (4 * 3 * 4 * n) as f64,
            "GB/s",
            || x.mul(&y).unwrap().add(&x).unwrap().gelu().unwrap().sub(&y).unwrap(),
        );
        // Eager binary ops against `exp` on the same tensor: each reads what
        // it must and writes n floats, so on a memory-bound device each
        // should take about as long as `exp` (ratios printed).
        if b.filter.as_ref().is_none_or(|p| "eager".contains(p.as_str())) {
            let rows = n / 1024;
            let m = rand(&[rows, 1024], DType::F32, 11, d);
            let row = rand(&[1024], DType::F32, 12, d);
            let col = rand(&[rows, 1], DType::F32, 13, d);
            let half = x.scalar_like(0.5).unwrap();
            let exp = median_secs(|| x.exp().unwrap(), d);
            // Bytes each case must move, in units of n f32s (GB/s printed).
            let gbs = |streams: usize, secs: f64| (4 * streams * n) as f64 / secs / 1e9;
            println!(
                "{:<8} {:<44} {:>10.3} ms {:>8.2}x exp {:>9.2} GB/s",
                d.to_string(),
                format!("eager exp {n}"),
                exp * 1e3,
                1.0,
                gbs(2, exp)
            );
            type Case<'a> = (&'static str, usize, Box<dyn Fn() -> Tensor + 'a>);
            let cases: Vec<Case> = vec![
                // Unary ops beside exp: vectorized polynomials on the CPU
                // device (tanh and gelu_tanh take three forms and a division, gelu
                // two forms of erf).
                ("eager tanh", 2, Box::new(|| x.tanh().unwrap())),
                ("eager log", 2, Box::new(|| x.log().unwrap())),
                ("eager expm1", 2, Box::new(|| x.expm1().unwrap())),
                ("eager softplus", 2, Box::new(|| x.softplus().unwrap())),
                ("eager gelu_tanh", 2, Box::new(|| x.gelu_tanh().unwrap())),
                ("eager gelu", 2, Box::new(|| x.gelu().unwrap())),
                ("eager mul, same shape", 3, Box::new(|| x.mul(&y).unwrap())),
                ("eager mul, scalar", 2, Box::new(|| x.mul(&half).unwrap())),
                ("eager maximum, scalar", 2, Box::new(|| x.maximum(&half).unwrap())),
                ("eager add, row broadcast", 2, Box::new(|| m.add(&row).unwrap())),
                ("eager add, column broadcast", 2, Box::new(|| m.add(&col).unwrap())),
                ("eager greater, same shape", 3, Box::new(|| x.greater(&y).unwrap())),
                ("eager greater, row broadcast", 2, Box::new(|| m.greater(&row).unwrap())),
                (
                    "eager greater, column broadcast",
                    2,
                    Box::new(|| m.greater(&col).unwrap()),
                ),
                (
                    "eager chain mul add exp max min (5 ops)",
                    12,
                    Box::new(|| {
                        x.mul(&y)
                            .unwrap()
                            .add(&x)
                            .unwrap()
                            .exp()
                            .unwrap()
                            .maximum(&half)
                            .unwrap()
                            .minimum(&x.scalar_like(2.0).unwrap())
                            .unwrap()
                    }),
                ),
            ];
            for (name, streams, f) in cases {
                let t = median_secs(&f, d);
                println!(
                    "{:<8} {:<44} {:>10.3} ms {:>8.2}x exp {:>9.2} GB/s",
                    d.to_string(),
                    name,
                    t * 1e3,
                    t / exp,
                    gbs(streams, t)
                );
            }
        }
        // The same chain traced: one generated kernel reading x and y once.
        // Counted with the eager chain's bytes, so the two rates compare.
        let mut chain = wgflow::function(|a: &[Tensor]| Ok(vec![a[0].mul(&a[1])?.add(&a[0])?.gelu()?.sub(&a[1])?]));
        let args = [x.clone(), y.clone()];
        b.run(
            &format!("elementwise chain, traced (fused) {n}"),
            d,
            (4 * 3 * 4 * n) as f64,
            "GB/s",
            || {
                chain.call(&args).unwrap();
            },
        );
        let m = rand(&[n / 1024, 1024], DType::F32, 8, d);
        b.run(
            &format!("reduce_sum rows {}x1024", n / 1024),
            d,
            (4 * n) as f64,
            "GB/s",
            || {
                m.sum(Some(&[1]), false).unwrap();
            },
        );
        b.run(
            &format!("reduce_sum columns {}x1024", n / 1024),
            d,
            (4 * n) as f64,
            "GB/s",
            || {
                m.sum(Some(&[0]), false).unwrap();
            },
        );
        b.run(&format!("reduce_max all {n}"), d, (4 * n) as f64, "GB/s", || {
            m.max(None, false).unwrap();
        });
        b.run(&format!("softmax {}x1024", n / 1024), d, (8 * n) as f64, "GB/s", || {
            softmax::softmax(&m, -1).unwrap();
        });
    }
}
