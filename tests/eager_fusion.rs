//! Eager fusion on every GPU adapter: elementwise f32 ops called one by one
//! wait and run as generated kernels when something needs the device
//! (runtime::wgpu::fusion). Random programs of waiting ops, with results
//! held, dropped, read in the middle and consumed by other kernels, must
//! give the CPU device's values; intermediates no one holds must cost no
//! launch; special values must pass through both generated forms.

mod common;

use common::*;
use wgflow::nn::optimizers::Adam;
use wgflow::ops::binary::BinaryOp;
use wgflow::ops::unary::UnaryOp;
use wgflow::ops::{self, Op};
use wgflow::runtime::wgpu::force_cpu_style_kernels;
use wgflow::{DType, Device, GradientTape, Tensor, Variable};

/// Tests that count a device's launches run alone (write); the others
/// share it (read).
static LAUNCHES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    LAUNCHES.read().unwrap_or_else(|p| p.into_inner())
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Continuous ops only: the devices' transcendental functions differ in
/// the last bits, which a discontinuity could turn into different values
/// (and no periodic ones, where those bits of a large argument matter).
const UNARY: [UnaryOp; 10] = [
    UnaryOp::Tanh,
    UnaryOp::Softsign,
    UnaryOp::Sigmoid,
    UnaryOp::Relu,
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Exp,
    UnaryOp::Gelu,
    UnaryOp::Softplus,
    UnaryOp::LeakyRelu(0.3),
];
const BINARY: [BinaryOp; 6] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Maximum,
    BinaryOp::Minimum,
    BinaryOp::SquaredDifference,
];

fn close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-4 + 1e-4 * b.abs();
        assert!(ok, "{what}: element {i}: {a} against the CPU device's {b}");
    }
}

/// Leaves of a program: three tensors of the full shape, a row, a
/// column, and two single values.
const LEAVES: usize = 7;

/// One random program over `[r, c]` on `d` and on the CPU device, op by
/// op; returns how many values it compared. Its values have the shapes
/// of its leaves and of their broadcasts: `[r, c]`, rows, columns and
/// single values, so lists hold ops of several lengths.
fn program(d: &Device, (r, c): (usize, usize), seed: u64) -> usize {
    let n = r * c;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let leaf = |shape: &[usize], s: u64| uniform(shape, -2.0, 2.0, s, DType::F32);
    let host: Vec<Tensor> = vec![
        leaf(&[r, c], seed),
        leaf(&[r, c], seed + 1),
        leaf(&[r, c], seed + 2),
        leaf(&[c], seed + 3),
        leaf(&[r, 1], seed + 4),
        leaf(&[], seed + 5),
        leaf(&[1], seed + 6),
    ];
    // (on d, on the CPU, a label): leaves first, then results.
    let mut pool: Vec<(Tensor, Tensor, String)> = host
        .iter()
        .enumerate()
        .map(|(k, t)| (t.to_device(d).unwrap(), t.clone(), format!("leaf {k}")))
        .collect();
    let mut compared = 0;
    for step in 0..14 {
        // Mostly recent results, so that chains form; often a value
        // shorter than the full shape (a row, a column, one value, or a
        // result of those), so that lists hold ops of several lengths
        // and full-length ops read shorter results still waiting.
        let pick = |rng: &mut Rng| {
            let short: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].0.numel() < n).collect();
            if !short.is_empty() && rng.chance(0.3) {
                short[short.len() - 1 - rng.below(2.min(short.len()))]
            } else if pool.len() > LEAVES && rng.chance(0.7) {
                pool.len() - 1 - rng.below(3.min(pool.len() - LEAVES))
            } else {
                rng.below(pool.len())
            }
        };
        let op = if rng.chance(0.45) {
            Op::Unary(UNARY[rng.below(UNARY.len())])
        } else {
            Op::Binary(BINARY[rng.below(BINARY.len())])
        };
        let args: Vec<usize> = (0..if matches!(op, Op::Unary(_)) { 1 } else { 2 })
            .map(|_| pick(&mut rng))
            .collect();
        let on_d: Vec<&Tensor> = args.iter().map(|&i| &pool[i].0).collect();
        let on_cpu: Vec<&Tensor> = args.iter().map(|&i| &pool[i].1).collect();
        let got = ops::apply(op.clone(), &on_d).unwrap();
        let want = ops::apply(op.clone(), &on_cpu).unwrap();
        let label = format!("step {step} {} of {:?}", op.name(), args);
        pool.push((got, want, label));
        // Drop a result now and then: unless a later op reads it, no one
        // holds it, and it is never written.
        if pool.len() > LEAVES + 1 && rng.chance(0.35) {
            let i = LEAVES + rng.below(pool.len() - LEAVES - 1);
            pool.remove(i);
        }
        // Read one in the middle now and then (a flush with ops waiting).
        if rng.chance(0.15) {
            let i = rng.below(pool.len());
            close(
                &pool[i].0,
                &pool[i].1,
                &format!("{d} [{r}, {c}] seed={seed}: {}", pool[i].2),
            );
            compared += 1;
        }
        // Hand one to a kernel that does not wait (a reduction).
        if rng.chance(0.1) {
            let i = rng.below(pool.len());
            let (g, w) = (pool[i].0.sum(None, false).unwrap(), pool[i].1.sum(None, false).unwrap());
            let (g, w) = (g.item().unwrap(), w.item().unwrap());
            assert!(
                (g - w).abs() <= 1e-3 * (1.0 + w.abs()) * (n as f64).sqrt(),
                "{d} [{r}, {c}] seed={seed}: sum of {}: {g} against {w}",
                pool[i].2
            );
        }
    }
    for (g, w, label) in &pool {
        close(g, w, &format!("{d} [{r}, {c}] seed={seed}: {label}"));
        compared += 1;
    }
    compared
}

#[test]
fn random_programs_match_the_cpu_device() {
    let _shared = shared();
    for d in gpus() {
        // Both kernel families: the CPU adapters' (eight elements per
        // invocation) and the GPUs' (four); lengths that are not multiples
        // of 4 take one.
        for cpu_style in [true, false] {
            force_cpu_style_kernels(Some(cpu_style));
            let mut compared = 0;
            // One element; odd and prime lengths; rows of periods 8 (read
            // as vectors), 12 and 6 (element by element) and 1; columns.
            for shape in [(1, 1), (1, 7), (7, 6), (5, 8), (8, 12), (1031, 1), (3, 1031), (64, 64)] {
                for seed in 0..5 {
                    compared += program(&d, shape, 1000 * (shape.0 * shape.1) as u64 + seed);
                }
            }
            force_cpu_style_kernels(None);
            assert!(compared > 100, "{d}: compared {compared} values");
        }
    }
}

/// The chain: x * y + x, exp, then the bounds; all but the result die.
fn chain(x: &Tensor, y: &Tensor, lo: &Tensor, hi: &Tensor) -> Tensor {
    x.mul(y)
        .unwrap()
        .add(x)
        .unwrap()
        .exp()
        .unwrap()
        .maximum(lo)
        .unwrap()
        .minimum(hi)
        .unwrap()
}

#[test]
fn a_chain_is_one_launch_and_dead_results_none() {
    let _alone = LAUNCHES.write().unwrap_or_else(|p| p.into_inner());
    for d in gpus() {
        for n in [4096, 1031] {
            let host = [
                uniform(&[n], -1.0, 1.0, 1, DType::F32),
                uniform(&[n], -1.0, 1.0, 2, DType::F32),
            ];
            let x = host[0].to_device(&d).unwrap();
            let y = host[1].to_device(&d).unwrap();
            let lo = Tensor::scalar(0.5f32, &d).unwrap();
            let hi = Tensor::scalar(2.0f32, &d).unwrap();
            d.synchronize().unwrap();
            let before = d.counters().dispatches;
            let out = chain(&x, &y, &lo, &hi);
            let got = out.to_vec::<f32>().unwrap();
            assert_eq!(d.counters().dispatches - before, 1, "{d} n={n}: one generated kernel");
            let want = chain(
                &host[0],
                &host[1],
                &Tensor::scalar(0.5f32, &cpu()).unwrap(),
                &Tensor::scalar(2.0f32, &cpu()).unwrap(),
            );
            close(&out, &want, &format!("{d} n={n}: chain"));
            assert_eq!(got.len(), n);

            // A result dropped unread is never computed.
            let before = d.counters().dispatches;
            drop(chain(&x, &y, &lo, &hi));
            drop(x.exp().unwrap());
            d.synchronize().unwrap();
            assert_eq!(
                d.counters().dispatches,
                before,
                "{d} n={n}: dead results launch nothing"
            );

            // Held intermediates are written by the same kernel.
            let before = d.counters().dispatches;
            let a = x.mul(&y).unwrap();
            let b = a.add(&x).unwrap().exp().unwrap();
            let c = b.maximum(&lo).unwrap();
            drop(b);
            close(&a, &host[0].mul(&host[1]).unwrap(), &format!("{d}: held a"));
            assert_eq!(d.counters().dispatches - before, 1, "{d} n={n}: a and c in one kernel");
            let want_c = host[0]
                .mul(&host[1])
                .unwrap()
                .add(&host[0])
                .unwrap()
                .exp()
                .unwrap()
                .maximum(&Tensor::scalar(0.5f32, &cpu()).unwrap())
                .unwrap();
            close(&c, &want_c, &format!("{d}: held c"));
        }
    }
}

#[test]
fn other_kernels_read_waiting_results_in_order() {
    let _shared = shared();
    for d in gpus() {
        let host = uniform(&[6, 8], -1.0, 1.0, 3, DType::F32);
        let x = host.to_device(&d).unwrap();
        // A matmul, a softmax and a reshape read results still waiting.
        let h = x.mul(&x).unwrap().add(&x).unwrap();
        let p = h.matmul(&h.transpose(&[1, 0]).unwrap()).unwrap();
        let s = h.tanh().unwrap().reshape(&[48]).unwrap().softmax(-1).unwrap();
        let hh = host.mul(&host).unwrap().add(&host).unwrap();
        close(
            &p,
            &hh.matmul(&hh.transpose(&[1, 0]).unwrap()).unwrap(),
            &format!("{d}: matmul"),
        );
        close(
            &s,
            &hh.tanh().unwrap().reshape(&[48]).unwrap().softmax(-1).unwrap(),
            &format!("{d}: softmax"),
        );
        // Adam's step after a waiting op read the variable: the op sees
        // the old value, the variable the new one.
        let v = Variable::new(x.clone(), "v");
        let before = v.value().mul(&x).unwrap();
        let g = x.add(&x).unwrap();
        Adam::new(0.1)
            .apply_gradients(&[Some(g)], std::slice::from_ref(&v))
            .unwrap();
        close(
            &before,
            &host.mul(&host).unwrap(),
            &format!("{d}: read before the step"),
        );
        let vc = Variable::new(host.clone(), "v");
        Adam::new(0.1)
            .apply_gradients(&[Some(host.add(&host).unwrap())], std::slice::from_ref(&vc))
            .unwrap();
        close(&v.value(), &vc.value(), &format!("{d}: the step"));
    }
}

#[test]
fn shorter_results_are_computed_before_the_ops_that_broadcast_them() {
    let _shared = shared();
    for d in gpus() {
        let host = [
            uniform(&[3, 8], 0.5, 2.0, 6, DType::F32),
            uniform(&[8], 0.5, 2.0, 7, DType::F32),
            uniform(&[3, 1], 0.5, 2.0, 8, DType::F32),
        ];
        // A full-length op waits first, then a row and a column are
        // computed, then full-length ops read them.
        let run = |x: &[Tensor]| {
            let a = x[0].mul(&x[0]).unwrap();
            let row = x[1].sub_scalar(1.0).unwrap();
            let col = x[2].exp().unwrap();
            a.pow(&row).unwrap().mul(&col).unwrap()
        };
        let on_d: Vec<Tensor> = host.iter().map(|t| t.to_device(&d).unwrap()).collect();
        close(&run(&on_d), &run(&host), &format!("{d}: row and column computed first"));
    }
}

#[test]
fn gradients_through_waiting_ops() {
    let _shared = shared();
    for d in gpus() {
        let host = uniform(&[1031], -1.0, 1.0, 4, DType::F32);
        let run = |dev: &Device| {
            let x = Variable::new(host.to_device(dev).unwrap(), "x");
            let tape = GradientTape::new();
            let xv = x.value();
            let y = xv
                .mul(&xv)
                .unwrap()
                .add(&xv)
                .unwrap()
                .sigmoid()
                .unwrap()
                .mul(&xv)
                .unwrap();
            let loss = y.sum(None, false).unwrap();
            tape.gradient(&loss, &[&x]).unwrap().remove(0).unwrap()
        };
        close(&run(&d), &run(&cpu()), &format!("{d}: gradient"));
    }
}

#[test]
fn special_values_through_generated_kernels() {
    let _shared = shared();
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::MIN_POSITIVE,
    ];
    for d in gpus() {
        for cpu_style in [true, false] {
            force_cpu_style_kernels(Some(cpu_style));
            // 64 values (eight or four per invocation) and 63 (one).
            for n in [64, 63] {
                let a: Vec<f32> = (0..n).map(|i| specials[i % 8]).collect();
                let b: Vec<f32> = (0..n).map(|i| specials[(i / 8) % 8]).collect();
                let run = |dev: &Device| {
                    let a = Tensor::from_vec(a.clone(), &[n], dev).unwrap();
                    let b = Tensor::from_vec(b.clone(), &[n], dev).unwrap();
                    let m = Tensor::scalar(-1.0f32, dev).unwrap();
                    let t = a.mul(&b).unwrap().mul(&m).unwrap();
                    let u = t.maximum(&a).unwrap().sub(&b).unwrap().exp().unwrap();
                    let v = a.minimum(&b).unwrap().add(&t).unwrap().relu().unwrap();
                    [t, u, v].map(|t| t.to_vec::<f32>().unwrap())
                };
                let (got, want) = (run(&d), run(&cpu()));
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    for (i, (x, y)) in g.iter().zip(w).enumerate() {
                        // NaN as NaN, infinities and zeros to the sign, the rest
                        // to the devices' exp (last bits).
                        let same = (x.is_nan() && y.is_nan())
                            || x.to_bits() == y.to_bits()
                            || (x.is_finite() && *y != 0.0 && (x - y).abs() <= 1e-6 * y.abs());
                        assert!(same, "{d} n={n}: result {k} element {i}: {x:?} against {y:?}");
                    }
                }
            }
            force_cpu_style_kernels(None);
        }
    }
}

#[test]
fn threads_sharing_a_device() {
    let _shared = shared();
    for d in gpus() {
        let host = uniform(&[4096], -1.0, 1.0, 5, DType::F32);
        let want = host.mul(&host).unwrap().tanh().unwrap().add(&host).unwrap();
        std::thread::scope(|s| {
            for k in 0..3 {
                let (d, host, want) = (&d, &host, &want);
                s.spawn(move || {
                    let x = host.to_device(d).unwrap();
                    for _ in 0..20 {
                        let y = x.mul(&x).unwrap().tanh().unwrap().add(&x).unwrap();
                        close(&y, want, &format!("{d}: thread {k}"));
                    }
                });
            }
        });
    }
}

#[test]
fn long_chains_split_where_bindings_run_out() {
    let _shared = shared();
    for d in gpus() {
        for n in [4096, 1031] {
            let host: Vec<Tensor> = (0..24).map(|k| uniform(&[n], -1.0, 1.0, 50 + k, DType::F32)).collect();
            let on_d: Vec<Tensor> = host.iter().map(|t| t.to_device(&d).unwrap()).collect();
            // One new leaf per op: a list of 16 waiting ops binds 17
            // leaves, so it is cut inside, and the ops after the cut read
            // the value before it, which no one else holds.
            let sum = |ts: &[Tensor]| {
                let mut t = ts[0].clone();
                for (k, u) in ts[1..].iter().enumerate() {
                    t = if k % 2 == 0 {
                        t.mul(u).unwrap()
                    } else {
                        t.add(u).unwrap()
                    };
                }
                t
            };
            close(&sum(&on_d), &sum(&host), &format!("{d} n={n}: 24 leaves"));
        }
    }
}

/// Child: a chain whose waiting results would pass a 64 MiB limit if
/// they were all kept: an allocation that finds no room encodes the list,
/// and the results no one holds make room.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_chain_over_the_limit() {
    let d = Device::gpu(0).expect("gpu:0");
    let n = 2 << 20; // 8 MiB of f32
    let host = uniform(&[n], -1.0, 1.0, 9, DType::F32);
    let x = host.to_device(&d).unwrap();
    let step = |t: Tensor, x: &Tensor| t.mul(x).unwrap().tanh().unwrap().add(x).unwrap();
    let (mut t, mut w) = (x.clone(), host.clone());
    // 15 ops: 120 MiB of results, 8 MiB held at a time.
    for _ in 0..5 {
        t = step(t, &x);
        w = step(w, &host);
    }
    close(&t, &w, &format!("{d}: chain over the limit"));
    println!("DONE ok");
}

#[test]
fn waiting_results_never_cause_out_of_memory() {
    if gpus().is_empty() {
        return;
    }
    for growth in ["true", "false"] {
        let (ok, out, err) = run_child(
            "child_chain_over_the_limit",
            &[
                ("WGFLOW_MEMORY_LIMIT_MB", "64"),
                ("WGFLOW_FORCE_GPU_ALLOW_GROWTH", growth),
            ],
        );
        assert!(ok, "growth {growth}:\n{out}\n{err}");
        assert_eq!(tagged(&out, "DONE"), vec!["ok"], "growth {growth}");
    }
}

/// Child: prints the launches of the chain.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_chain_launches() {
    let d = Device::gpu(0).expect("gpu:0");
    let x = uniform(&[4096], -1.0, 1.0, 1, DType::F32).to_device(&d).unwrap();
    let (lo, hi) = (Tensor::scalar(0.5f32, &d).unwrap(), Tensor::scalar(2.0f32, &d).unwrap());
    d.synchronize().unwrap();
    let before = d.counters().dispatches;
    let out = chain(&x, &x, &lo, &hi);
    out.to_vec::<f32>().unwrap();
    println!("LAUNCHES {}", d.counters().dispatches - before);
}

#[test]
fn wgflow_eager_fusion_0_turns_it_off() {
    if gpus().is_empty() {
        return;
    }
    for (value, launches) in [("0", "5"), ("1", "1")] {
        let (ok, out, err) = run_child("child_chain_launches", &[("WGFLOW_EAGER_FUSION", value)]);
        assert!(ok, "{out}\n{err}");
        assert_eq!(tagged(&out, "LAUNCHES"), vec![launches], "WGFLOW_EAGER_FUSION={value}");
    }
}

#[test]
fn a_flush_cut_short_is_reported_and_redone() {
    // Alone: another thread's launch would flush this thread's list
    // without the injected failure.
    let _alone = LAUNCHES.write().unwrap_or_else(|p| p.into_inner());
    // Three groups (a column, a row, full length); the full-length group
    // is one generated kernel: three launches in all.
    let run = |x: &[Tensor]| -> Vec<Tensor> {
        let col = x[2].neg().unwrap();
        let row = x[1].exp().unwrap();
        let a = x[0].mul(&x[0]).unwrap();
        let b = a.add(&row).unwrap().mul(&col).unwrap();
        let c = b.mul_scalar(0.5).unwrap();
        vec![col, row, a, b, c]
    };
    for d in gpus() {
        for n in 0..4 {
            // New values each time: the pool's recycled buffers must not
            // hold the right answer already.
            let host = [
                uniform(&[5, 7], -1.0, 1.0, 11 + 3 * n, DType::F32),
                uniform(&[7], -1.0, 1.0, 12 + 3 * n, DType::F32),
                uniform(&[5, 1], -1.0, 1.0, 13 + 3 * n, DType::F32),
            ];
            let want = run(&host);
            let on_d: Vec<Tensor> = host.iter().map(|t| t.to_device(&d).unwrap()).collect();
            d.synchronize().unwrap();
            let got = run(&on_d);
            let before = d.counters().dispatches;
            wgflow::runtime::wgpu::fail_launch_after(Some(n));
            let first = d.synchronize();
            wgflow::runtime::wgpu::fail_launch_after(None);
            let launched = d.counters().dispatches - before;
            match n {
                // A per-op kernel refused: reported, the rest redone later.
                0 | 1 => assert!(first.is_err(), "{d} n={n}: the failure is reported"),
                // The generated kernel refused: the ops' own kernels instead.
                2 => {
                    assert!(first.is_ok(), "{d}: fallback: {first:?}");
                    assert!(launched > 3, "{d}: fallback launches per op ({launched})");
                }
                _ => assert!(
                    first.is_ok() && launched == 3,
                    "{d}: no failure: {launched} launches, {first:?}"
                ),
            }
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                close(g, w, &format!("{d} n={n}: result {k} after a failed flush"));
            }
        }
    }
}

/// Programs whose ops a compiler's finite-value algebra would fold or
/// contract once they sit in one kernel.
fn foldable(x: &Tensor, y: &Tensor, z: &Tensor) -> Vec<Tensor> {
    let e = x.exp().unwrap();
    vec![
        x.sub(x).unwrap(),
        e.sub(&e).unwrap().mul(x).unwrap(),
        x.mul(x).unwrap().sub(&x.mul(x).unwrap()).unwrap(),
        x.mul_scalar(0.0).unwrap().add_scalar(1.0).unwrap(),
        x.div(x).unwrap().mul(y).unwrap(),
        x.leaky_relu(0.0).unwrap().add(y).unwrap(),
        x.add(y).unwrap().sub(y).unwrap(),
        // a * b + c in two roundings, as two kernels give (no FMA).
        x.mul(y).unwrap().add(z).unwrap(),
    ]
}

#[test]
fn generated_kernels_do_not_fold_special_values() {
    // Alone: another thread's launch would flush this thread's waiting
    // ops with its own kernel family.
    let _alone = LAUNCHES.write().unwrap_or_else(|p| p.into_inner());
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, 2e38, -3e38];
    for d in gpus() {
        for cpu_style in [true, false] {
            force_cpu_style_kernels(Some(cpu_style));
            for n in [64, 63] {
                let col = |f: fn(usize) -> usize| -> Vec<f32> { (0..n).map(|i| specials[f(i) % 8]).collect() };
                let (mut a, mut b, mut c) = (col(|i| i), col(|i| i / 8), col(|i| i * 3 + i / 8));
                // x * y + z rounds twice: 2^-11, where an FMA gives 2^-11 + 2^-24.
                let e = 1.0 + 2f32.powi(-12);
                (a[5], b[5], c[5]) = (e, e, -1.0);
                let on = |dev: &Device| [&a, &b, &c].map(|v| Tensor::from_vec(v.clone(), &[n], dev).unwrap());
                let [x, y, z] = on(&d);
                let eager = foldable(&x, &y, &z);
                let mut f = wgflow::function(|t: &[Tensor]| Ok(foldable(&t[0], &t[1], &t[2])));
                for _ in 0..4 {
                    f.call(&[x.clone(), y.clone(), z.clone()]).unwrap();
                }
                let traced = f.call(&[x.clone(), y.clone(), z.clone()]).unwrap();
                let graph = f.graph(&[x.clone(), y.clone(), z.clone()]).unwrap();
                assert!(graph.stats().fused_kernels >= 1, "{d}: the traced programs fuse");
                let [xc, yc, zc] = on(&cpu());
                let want = foldable(&xc, &yc, &zc);
                for (how, got) in [("eager", &eager), ("traced", &traced)] {
                    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                        let (g, w) = (g.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
                        for (i, (p, q)) in g.iter().zip(&w).enumerate() {
                            assert!(
                                (p.is_nan() && q.is_nan()) || p.to_bits() == q.to_bits(),
                                "{d} {how} n={n}: program {k} element {i} ({}, {}, {}): {p:?} against {q:?}",
                                a[i],
                                b[i],
                                c[i]
                            );
                        }
                    }
                }
            }
            force_cpu_style_kernels(None);
        }
    }
}
