//! Conformance: every op, GPU against the CPU reference, on every adapter,
//! on seeded inputs of awkward shapes (size 1, odd, prime, not multiples of
//! the tile, zero-size dimensions, broadcasting), in f32 and f16, plus the
//! error inputs of every op on both devices. Tolerances are the ops' own
//! (`Op::tolerance`): |gpu - cpu| <= atol + rtol * |cpu|, with atol growing
//! as sqrt(K) for reductions of length K, and loosened for f16.
//! Run with `--nocapture` to see the case counts.

mod common;
use common::*;
use wgflow::ops::Op;
use wgflow::ops::binary::{BinaryOp, CmpOp};
use wgflow::ops::conv::Conv2d;
use wgflow::ops::pool::Pool2d;
use wgflow::ops::reduce::ReduceOp;
use wgflow::ops::unary::UnaryOp;
use wgflow::runtime::wgpu::{GemmVariant, force_cpu_style_kernels, force_gemm_variant};
use wgflow::{DType, Padding, Tensor};

const FLOATS: [DType; 2] = [DType::F32, DType::F16];

#[test]
fn unary() {
    let mut s = Suite::new("unary");
    let shapes: [&[usize]; 6] = [&[], &[1], &[7], &[3, 5], &[0, 4], &[257]];
    for (i, op) in UnaryOp::ALL.iter().enumerate() {
        for (j, sh) in shapes.iter().enumerate() {
            for dt in FLOATS {
                let seed = (i * 100 + j) as u64;
                // Keep each op inside its domain and away from its poles.
                let x = match op {
                    UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => uniform(sh, 0.1, 4.0, seed, dt),
                    UnaryOp::Log1p => uniform(sh, -0.9, 4.0, seed, dt),
                    UnaryOp::Reciprocal => uniform(sh, 0.25, 4.0, seed, dt),
                    UnaryOp::Exp | UnaryOp::Expm1 => uniform(sh, -5.0, 5.0, seed, dt),
                    _ => randn(sh, seed, dt).mul_scalar(3.0).unwrap(),
                };
                s.check(Op::Unary(*op), &[x]);
            }
        }
        s.check_err(Op::Unary(*op), &[randint(&[3], 0, 5, 1)]);
    }
    // Values where a careless tanh overflows, and the series branches of expm1/log1p.
    let big = Tensor::from_vec(vec![-40.0f32, -12.0, 0.0, 12.0, 40.0, 90.0], &[6], &cpu()).unwrap();
    for op in [
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
    ] {
        s.check(Op::Unary(op), &[big.clone()]);
    }
    let tiny = Tensor::from_vec(vec![-1e-5f32, -1e-4, 0.0, 1e-6, 5e-4, 2e-3], &[6], &cpu()).unwrap();
    for op in [UnaryOp::Expm1, UnaryOp::Log1p, UnaryOp::Erf, UnaryOp::Gelu] {
        s.check(Op::Unary(op), &[tiny.clone()]);
    }
}

const SHAPE_PAIRS: [(&[usize], &[usize]); 11] = [
    (&[5], &[2, 3, 5]),
    (&[1, 4], &[3, 4]),
    (&[3, 4], &[3, 4]),
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[], &[5]),
    (&[2, 1, 3], &[4, 1]),
    (&[0, 3], &[1, 3]),
    (&[7], &[1]),
    (&[1031], &[1031]),
    (&[2, 3, 1, 5, 1, 2], &[3, 1, 1, 2]),
];

#[test]
fn binary() {
    let mut s = Suite::new("binary");
    let arith = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::SquaredDifference,
    ];
    for (i, op) in arith.iter().enumerate() {
        for (j, (a, b)) in SHAPE_PAIRS.iter().enumerate() {
            let seed = (i * 100 + j) as u64;
            for dt in FLOATS {
                let (x, y) = match op {
                    BinaryOp::Pow => (uniform(a, 0.5, 2.0, seed, dt), uniform(b, -2.0, 2.0, seed + 1, dt)),
                    BinaryOp::Div => (randn(a, seed, dt), uniform(b, 0.5, 2.0, seed + 1, dt)),
                    _ => (randn(a, seed, dt), randn(b, seed + 1, dt)),
                };
                s.check(Op::Binary(*op), &[x, y]);
            }
            // int32, with zero divisors (x / 0 = x) and negative exponents.
            let (lo, hi) = if *op == BinaryOp::Pow { (-3, 6) } else { (-50, 50) };
            s.check(
                Op::Binary(*op),
                &[randint(a, -9, 10, seed), randint(b, lo, hi, seed + 2)],
            );
        }
        s.check_err(
            Op::Binary(*op),
            &[randn(&[3, 4], 1, DType::F32), randn(&[3, 5], 2, DType::F32)],
        );
        s.check_err(Op::Binary(*op), &[randn(&[3], 1, DType::F32), randint(&[3], 0, 4, 2)]);
        s.check_err(Op::Binary(*op), &[randbool(&[3], 1), randbool(&[3], 2)]);
    }
    for op in [BinaryOp::LogicalAnd, BinaryOp::LogicalOr, BinaryOp::LogicalXor] {
        for (j, (a, b)) in SHAPE_PAIRS.iter().enumerate() {
            s.check(Op::Binary(op), &[randbool(a, j as u64), randbool(b, j as u64 + 7)]);
        }
        s.check_err(
            Op::Binary(op),
            &[randn(&[3], 1, DType::F32), randn(&[3], 2, DType::F32)],
        );
    }
    let cmps = [
        CmpOp::Equal,
        CmpOp::NotEqual,
        CmpOp::Less,
        CmpOp::LessEqual,
        CmpOp::Greater,
        CmpOp::GreaterEqual,
    ];
    for op in cmps {
        for (j, (a, b)) in SHAPE_PAIRS.iter().enumerate() {
            let seed = j as u64 * 3;
            // Small integers in float form so that ties occur.
            for dt in FLOATS {
                let x = randint(a, -2, 3, seed).cast(dt).unwrap();
                let y = randint(b, -2, 3, seed + 1).cast(dt).unwrap();
                s.check(Op::Compare(op), &[x, y]);
            }
            s.check(Op::Compare(op), &[randint(a, -2, 3, seed), randint(b, -2, 3, seed + 1)]);
            s.check(Op::Compare(op), &[randbool(a, seed), randbool(b, seed + 1)]);
        }
        s.check_err(
            Op::Compare(op),
            &[randn(&[2], 1, DType::F32), randn(&[3], 2, DType::F32)],
        );
    }
    let triples: [(&[usize], &[usize], &[usize]); 5] = [
        (&[3, 4], &[3, 4], &[3, 4]),
        (&[4], &[3, 4], &[1]),
        (&[3, 1], &[1, 4], &[3, 4]),
        (&[0, 2], &[2], &[2]),
        (&[], &[5], &[5]),
    ];
    for (j, (c, a, b)) in triples.iter().enumerate() {
        for dt in [DType::F32, DType::F16, DType::I32] {
            let x = if dt == DType::I32 {
                randint(a, -5, 5, j as u64)
            } else {
                randn(a, j as u64, dt)
            };
            let y = if dt == DType::I32 {
                randint(b, -5, 5, 9)
            } else {
                randn(b, 9, dt)
            };
            s.check(Op::Where, &[randbool(c, j as u64 + 3), x, y]);
        }
    }
    s.check_err(
        Op::Where,
        &[
            randn(&[2], 1, DType::F32),
            randn(&[2], 1, DType::F32),
            randn(&[2], 1, DType::F32),
        ],
    );
    s.check_err(
        Op::Where,
        &[randbool(&[2], 1), randn(&[2], 1, DType::F32), randint(&[2], 1, 2, 1)],
    );
}

#[test]
fn layout() {
    let mut s = Suite::new("layout");
    let all = [DType::F32, DType::F16, DType::I32, DType::Bool];
    let make = |sh: &[usize], dt: DType, seed: u64| match dt {
        DType::I32 => randint(sh, -100, 100, seed),
        DType::Bool => randbool(sh, seed),
        _ => randn(sh, seed, dt).mul_scalar(50.0).unwrap(),
    };
    for (k, sh) in [&[] as &[usize], &[1], &[5], &[3, 7], &[0, 3], &[1001]]
        .iter()
        .enumerate()
    {
        for from in all {
            for to in all {
                s.check(Op::Cast(to), &[make(sh, from, k as u64)]);
            }
        }
    }
    for dt in all {
        let x = make(&[2, 3, 5], dt, 1);
        for perm in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1], [2, 0, 1]] {
            s.check(Op::Permute(perm.to_vec()), &[x.clone()]);
        }
        s.check(Op::Permute(vec![1, 0]), &[make(&[1, 7], dt, 2)]);
        s.check(Op::Permute(vec![1, 0, 2, 3]), &[make(&[3, 0, 2, 2], dt, 2)]);
        s.check(Op::BroadcastTo(vec![4, 3, 5]), &[make(&[3, 1], dt, 3)]);
        s.check(Op::BroadcastTo(vec![2, 7]), &[make(&[], dt, 3)]);
        s.check(Op::BroadcastTo(vec![0, 3]), &[make(&[1, 3], dt, 3)]);
        s.check(
            Op::Slice {
                begin: vec![1, 0, 2],
                size: vec![1, 3, 2],
            },
            &[x.clone()],
        );
        s.check(
            Op::Slice {
                begin: vec![0, 2, 0],
                size: vec![2, 0, 5],
            },
            &[x.clone()],
        );
        s.check(
            Op::Concat { axis: 1 },
            &[
                make(&[2, 3, 4], dt, 4),
                make(&[2, 1, 4], dt, 5),
                make(&[2, 0, 4], dt, 6),
            ],
        );
        s.check(Op::Concat { axis: 0 }, &[make(&[1], dt, 4), make(&[6], dt, 5)]);
        s.check(Op::Gather { axis: 1 }, &[x.clone(), randint(&[4], 0, 3, 7)]);
        s.check(Op::Gather { axis: 0 }, &[x.clone(), randint(&[2, 3], 0, 2, 7)]);
        s.check(Op::Gather { axis: 2 }, &[x.clone(), randint(&[0], 0, 5, 7)]);
        s.check_err(
            Op::Gather { axis: 1 },
            &[x.clone(), Tensor::from_vec(vec![0, 3], &[2], &cpu()).unwrap()],
        );
        s.check_err(
            Op::Gather { axis: 0 },
            &[x.clone(), Tensor::from_vec(vec![-1], &[1], &cpu()).unwrap()],
        );
    }
    for dt in [DType::F32, DType::F16, DType::I32] {
        // Out-of-range and negative indices give rows of `off`, as in TF.
        s.check(
            Op::OneHot {
                depth: 5,
                on: 1.0,
                off: 0.0,
                dtype: dt,
            },
            &[randint(&[7], -2, 7, 1)],
        );
        s.check(
            Op::OneHot {
                depth: 3,
                on: 5.0,
                off: -1.0,
                dtype: dt,
            },
            &[randint(&[2, 3], 0, 3, 2)],
        );
        s.check(
            Op::OneHot {
                depth: 0,
                on: 1.0,
                off: 0.0,
                dtype: dt,
            },
            &[randint(&[4], 0, 3, 3)],
        );
    }
    let x = randn(&[2, 3], 1, DType::F32);
    s.check_err(Op::Permute(vec![0, 0]), &[x.clone()]);
    s.check_err(Op::BroadcastTo(vec![3, 3]), &[x.clone()]);
    s.check_err(
        Op::Slice {
            begin: vec![1, 2],
            size: vec![1, 2],
        },
        &[x.clone()],
    );
    s.check_err(Op::Concat { axis: 0 }, &[x.clone(), randn(&[2, 4], 1, DType::F32)]);
    s.check_err(Op::Concat { axis: 0 }, &[x.clone(), randint(&[2, 3], 0, 1, 1)]);
    s.check_err(Op::Gather { axis: 0 }, &[x.clone(), randn(&[2], 1, DType::F32)]);
    s.check_err(
        Op::OneHot {
            depth: 2,
            on: 1.0,
            off: 0.0,
            dtype: DType::F32,
        },
        &[x.clone()],
    );
    s.check_err(Op::Reshape(vec![4]), &[x]);
}

#[test]
fn reduce() {
    // Both kernel families on every adapter: a workgroup tree per row (GPUs)
    // and an invocation per output (CPU adapters), each with its split form.
    for cpu_style in [false, true] {
        force_cpu_style_kernels(Some(cpu_style));
        reduce_cases(&mut Suite::new(if cpu_style {
            "reduce, CPU-adapter kernels"
        } else {
            "reduce, GPU kernels"
        }));
    }
}

fn reduce_cases(s: &mut Suite) {
    // The last four split the reduced axis into chunks on GPUs (few
    // outputs, a long axis), ties across chunks included.
    let cases: [(&[usize], Option<&[usize]>); 16] = [
        (&[5], None),
        (&[1], Some(&[0])),
        (&[3, 4], Some(&[0])),
        (&[3, 4], Some(&[1])),
        (&[2, 3, 4], Some(&[0, 2])),
        (&[2, 3, 4], Some(&[1])),
        (&[2, 3, 4], Some(&[1, 2])),
        (&[2, 0, 3], Some(&[1])),
        (&[2, 0, 3], Some(&[0])),
        (&[17, 33], None),
        (&[3, 1000], Some(&[1])),
        (&[2, 3, 4, 5], Some(&[0, 3])),
        (&[3, 4099], Some(&[1])),
        (&[4099, 3], Some(&[0])),
        (&[5000], None),
        (&[2, 700, 3], Some(&[1])),
    ];
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
    ];
    for (i, (sh, axes)) in cases.iter().enumerate() {
        let axes: Vec<usize> = axes.map(|a| a.to_vec()).unwrap_or_else(|| (0..sh.len()).collect());
        for op in ops {
            for keepdims in [false, true] {
                for dt in [DType::F32, DType::F16, DType::I32] {
                    let x = match (dt, op) {
                        (DType::I32, _) => randint(sh, -3, 4, i as u64),
                        // Products of many values stay finite near 1.
                        (_, ReduceOp::Prod) => uniform(sh, 0.9, 1.1, i as u64, dt),
                        _ => randn(sh, i as u64, dt),
                    };
                    s.check(
                        Op::Reduce {
                            op,
                            axes: axes.clone(),
                            keepdims,
                        },
                        &[x],
                    );
                }
            }
        }
        if !sh.contains(&0) {
            for axis in 0..sh.len() {
                for max in [true, false] {
                    s.check(Op::ArgReduce { max, axis }, &[randn(sh, i as u64, DType::F32)]);
                    s.check(Op::ArgReduce { max, axis }, &[randn(sh, i as u64, DType::F16)]);
                    // Ties: the first index wins on both devices.
                    s.check(Op::ArgReduce { max, axis }, &[randint(sh, 0, 3, i as u64)]);
                }
            }
        }
    }
    s.check_err(Op::ArgReduce { max: true, axis: 1 }, &[randn(&[2, 0], 1, DType::F32)]);
    s.check_err(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0],
            keepdims: false,
        },
        &[randbool(&[3], 1)],
    );
}

#[test]
fn softmax() {
    let mut s = Suite::new("softmax");
    let cases: [(&[usize], usize); 6] = [
        (&[5], 0),
        (&[3, 7], 1),
        (&[2, 3, 4], 1),
        (&[2, 300], 1),
        (&[4, 1], 1),
        (&[0, 3], 1),
    ];
    for (i, (sh, axis)) in cases.iter().enumerate() {
        for log in [false, true] {
            for dt in FLOATS {
                let x = randn(sh, i as u64, dt).mul_scalar(4.0).unwrap();
                s.check(Op::Softmax { axis: *axis, log }, &[x]);
            }
        }
    }
    for (i, (n, c)) in [(1usize, 1usize), (4, 10), (7, 3), (3, 300), (0, 5)].iter().enumerate() {
        for dt in FLOATS {
            let logits = randn(&[*n, *c], i as u64, dt).mul_scalar(3.0).unwrap();
            let labels = randint(&[*n], 0, *c as i32, i as u64);
            s.check(Op::SparseXent, &[logits.clone(), labels.clone()]);
            s.check(Op::SparseXentGrad, &[logits, labels]);
        }
    }
    let logits = randn(&[3, 4], 1, DType::F32);
    for bad in [vec![0, 4, 1], vec![-1, 0, 0]] {
        let labels = Tensor::from_vec(bad, &[3], &cpu()).unwrap();
        s.check_err(Op::SparseXent, &[logits.clone(), labels.clone()]);
        s.check_err(Op::SparseXentGrad, &[logits.clone(), labels]);
    }
    s.check_err(Op::SparseXent, &[logits.clone(), randint(&[2], 0, 3, 1)]);
    s.check_err(Op::SparseXent, &[logits.clone(), randn(&[3], 1, DType::F32)]);
    s.check_err(Op::Softmax { axis: 0, log: false }, &[randint(&[3], 0, 3, 1)]);
}

#[test]
fn matmul() {
    // Every GEMM kernel on every adapter that can run it: the tiled ones
    // GPUs use and the register-blocked ones CPU adapters use.
    for v in [
        GemmVariant::Tiled,
        GemmVariant::Wide,
        GemmVariant::Register,
        GemmVariant::Subgroup,
    ] {
        force_gemm_variant(v);
        let mut s = Suite::new(match v {
            GemmVariant::Tiled => "matmul, tiled kernel",
            GemmVariant::Wide => "matmul, wide tiled kernel",
            GemmVariant::Register => "matmul, register kernel",
            _ => "matmul, subgroup kernel",
        });
        // Forced on an adapter without 8-lane subgroups it is an error, so
        // these cases prove the kernel on every adapter that has them.
        if v == GemmVariant::Subgroup {
            s.gpus = subgroup8_gpus();
        }
        matmul_cases(&mut s);
    }
    let with = subgroup8_gpus();
    for d in gpus().into_iter().filter(|d| !with.contains(d)) {
        let a = randn(&[4, 4], 1, DType::F32).to_device(&d).unwrap();
        let e = a.matmul(&a).unwrap_err();
        assert!(e.to_string().contains("no 8-lane subgroups"), "{d}: {e}");
    }
}

fn matmul_cases(s: &mut Suite) {
    let dims = [
        (1, 1, 1),
        (2, 3, 4),
        (7, 5, 3),
        (64, 64, 64),
        (65, 63, 17),
        (13, 1, 29),
        (1, 77, 5),
        (128, 4, 128),
        (16, 20, 12),
        // Several 128x128 tiles with ragged edges, scalar and vec4 loads.
        (131, 257, 19),
        (132, 260, 20),
        // Long sums into a small C: the register kernel splits them.
        (6, 9, 5003),
        (0, 3, 4),
        (3, 0, 4),
        (3, 4, 0),
    ];
    let mut seed = 0;
    for &(m, n, k) in &dims {
        for ta in [false, true] {
            for tb in [false, true] {
                for dt in FLOATS {
                    seed += 1;
                    let a = randn(&if ta { [k, m] } else { [m, k] }, seed, dt);
                    let b = randn(&if tb { [n, k] } else { [k, n] }, seed + 1000, dt);
                    s.check(Op::MatMul { ta, tb }, &[a, b]);
                }
            }
        }
    }
    // Batches: equal, broadcast from 1, partial broadcast, rank 4.
    let batched: [(&[usize], &[usize]); 5] = [
        (&[3, 5, 7], &[3, 7, 4]),
        (&[5, 8], &[2, 8, 6]),
        (&[2, 1, 5, 4], &[3, 4, 6]),
        (&[1, 4, 4], &[6, 4, 4]),
        (&[2, 3, 9, 12], &[2, 3, 12, 16]),
    ];
    for (i, (a, b)) in batched.iter().enumerate() {
        for dt in FLOATS {
            s.check(
                Op::MatMul { ta: false, tb: false },
                &[randn(a, i as u64, dt), randn(b, i as u64 + 50, dt)],
            );
        }
    }
    s.check(
        Op::MatMul { ta: true, tb: true },
        &[randn(&[4, 7, 5], 1, DType::F32), randn(&[4, 3, 7], 2, DType::F32)],
    );
    s.check_err(
        Op::MatMul { ta: false, tb: false },
        &[randn(&[2, 3], 1, DType::F32), randn(&[4, 5], 2, DType::F32)],
    );
    s.check_err(
        Op::MatMul { ta: false, tb: false },
        &[randn(&[3], 1, DType::F32), randn(&[3, 5], 2, DType::F32)],
    );
    s.check_err(
        Op::MatMul { ta: false, tb: false },
        &[randn(&[2, 2, 3], 1, DType::F32), randn(&[3, 3, 5], 2, DType::F32)],
    );
    s.check_err(
        Op::MatMul { ta: false, tb: false },
        &[randint(&[2, 2], 0, 3, 1), randint(&[2, 2], 0, 3, 1)],
    );
    s.check_err(
        Op::MatMul { ta: false, tb: false },
        &[randn(&[2, 2], 1, DType::F32), randn(&[2, 2], 1, DType::F16)],
    );
}

fn conv(strides: [usize; 2], padding: Padding, dilations: [usize; 2], groups: usize) -> Conv2d {
    Conv2d {
        strides,
        padding,
        dilations,
        groups,
    }
}

#[test]
fn conv2d() {
    // Patch matrices through the register and subgroup matmuls on CPU-style paths.
    for v in [GemmVariant::Tiled, GemmVariant::Register, GemmVariant::Subgroup] {
        force_gemm_variant(v);
        let mut s = Suite::new(match v {
            GemmVariant::Tiled => "conv2d, tiled kernel",
            GemmVariant::Register => "conv2d, register kernel",
            _ => "conv2d, subgroup kernel",
        });
        if v == GemmVariant::Subgroup {
            s.gpus = subgroup8_gpus();
        }
        conv2d_cases(&mut s);
    }
}

fn conv2d_cases(s: &mut Suite) {
    let ex = Padding::Explicit {
        top: 1,
        bottom: 2,
        left: 0,
        right: 1,
    };
    // (input [n,h,w,c], kernel [kh,kw], out channels, attributes)
    let cases = [
        ([1, 5, 5, 1], [3, 3], 1, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([2, 7, 6, 3], [3, 2], 5, conv([1, 1], Padding::Valid, [1, 1], 1)),
        ([2, 9, 11, 4], [3, 3], 6, conv([2, 2], Padding::Same, [1, 1], 1)),
        ([1, 13, 7, 2], [5, 3], 3, conv([3, 2], Padding::Valid, [1, 1], 1)),
        ([2, 8, 8, 3], [3, 3], 4, conv([1, 1], Padding::Same, [2, 2], 1)),
        ([1, 6, 7, 2], [2, 3], 3, conv([2, 1], ex, [1, 2], 1)),
        ([2, 6, 6, 4], [3, 3], 6, conv([1, 1], Padding::Same, [1, 1], 2)),
        ([2, 7, 5, 3], [3, 3], 6, conv([2, 2], Padding::Same, [1, 1], 3)),
        ([3, 5, 5, 5], [1, 1], 5, conv([1, 1], Padding::Valid, [1, 1], 5)),
        ([1, 28, 28, 1], [3, 3], 8, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([4, 14, 14, 8], [3, 3], 16, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([1, 1, 1, 3], [1, 1], 2, conv([1, 1], Padding::Valid, [1, 1], 1)),
        ([0, 4, 4, 2], [3, 3], 2, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([1, 3, 3, 2], [3, 3], 0, conv([1, 1], Padding::Same, [1, 1], 1)),
    ];
    for (i, (xs, k, o, a)) in cases.iter().enumerate() {
        let fs = [k[0], k[1], xs[3] / a.groups, *o];
        for dt in FLOATS {
            let seed = i as u64 * 10;
            let x = randn(xs, seed, dt);
            let f = randn(&fs, seed + 1, dt);
            let y = wgflow::ops::apply(Op::Conv2d(a.clone()), &[&x, &f]).unwrap();
            let dy = randn(y.shape(), seed + 2, dt);
            s.check(Op::Conv2d(a.clone()), &[x.clone(), f.clone()]);
            s.check(Op::Conv2dInputGrad(a.clone(), xs.to_vec()), &[dy.clone(), f]);
            s.check(Op::Conv2dFilterGrad(a.clone(), fs.to_vec()), &[x, dy]);
        }
    }
    // A filter gradient whose reduction (64 * 12 * 12 pixels) gets split.
    let a = conv([1, 1], Padding::Same, [1, 1], 1);
    let x = randn(&[64, 12, 12, 2], 5, DType::F32);
    s.check(
        Op::Conv2dFilterGrad(a.clone(), vec![3, 3, 2, 4]),
        &[x, randn(&[64, 12, 12, 4], 6, DType::F32)],
    );
    let x = randn(&[1, 5, 5, 3], 1, DType::F32);
    s.check_err(Op::Conv2d(a.clone()), &[x.clone(), randn(&[3, 3, 2, 4], 2, DType::F32)]);
    s.check_err(
        Op::Conv2d(a.clone()),
        &[randn(&[5, 5, 3], 1, DType::F32), randn(&[3, 3, 3, 4], 2, DType::F32)],
    );
    s.check_err(
        Op::Conv2d(conv([1, 1], Padding::Valid, [1, 1], 1)),
        &[x.clone(), randn(&[7, 7, 3, 4], 2, DType::F32)],
    );
    s.check_err(
        Op::Conv2d(conv([0, 1], Padding::Same, [1, 1], 1)),
        &[x.clone(), randn(&[3, 3, 3, 4], 2, DType::F32)],
    );
    s.check_err(
        Op::Conv2dInputGrad(a.clone(), vec![1, 5, 5, 3]),
        &[randn(&[1, 4, 5, 4], 1, DType::F32), randn(&[3, 3, 3, 4], 2, DType::F32)],
    );
    s.check_err(
        Op::Conv2dFilterGrad(a, vec![3, 3, 3, 4]),
        &[x, randn(&[1, 5, 5, 5], 1, DType::F32)],
    );
}

#[test]
fn pool() {
    let mut s = Suite::new("pool");
    let ex = Padding::Explicit {
        top: 1,
        bottom: 0,
        left: 1,
        right: 2,
    };
    let cases = [
        ([1, 4, 4, 1], [2, 2], [2, 2], Padding::Valid),
        ([2, 5, 7, 3], [2, 2], [2, 2], Padding::Same),
        ([2, 7, 7, 2], [3, 3], [2, 2], Padding::Same),
        ([1, 9, 6, 4], [3, 2], [1, 2], Padding::Valid),
        ([1, 6, 6, 2], [3, 3], [3, 1], ex),
        ([3, 1, 1, 5], [1, 1], [1, 1], Padding::Same),
        ([1, 28, 28, 8], [2, 2], [2, 2], Padding::Valid),
        ([0, 4, 4, 2], [2, 2], [2, 2], Padding::Same),
    ];
    for (i, (xs, k, st, pad)) in cases.iter().enumerate() {
        for max in [true, false] {
            let p = Pool2d {
                max,
                ksize: *k,
                strides: *st,
                padding: *pad,
            };
            for dt in FLOATS {
                let x = randn(xs, i as u64, dt);
                let y = wgflow::ops::apply(Op::Pool(p.clone()), &[&x]).unwrap();
                s.check(Op::Pool(p.clone()), &[x.clone()]);
                s.check(Op::PoolGrad(p.clone()), &[x, randn(y.shape(), i as u64 + 1, dt)]);
            }
        }
    }
    // Ties inside windows: the gradient goes to the first maximum on both devices.
    let p = Pool2d {
        max: true,
        ksize: [2, 2],
        strides: [1, 1],
        padding: Padding::Valid,
    };
    let x = randint(&[1, 5, 5, 2], 0, 2, 3).cast(DType::F32).unwrap();
    s.check(Op::PoolGrad(p.clone()), &[x, randn(&[1, 4, 4, 2], 4, DType::F32)]);
    let x = randn(&[1, 4, 4, 1], 1, DType::F32);
    s.check_err(Op::Pool(p.clone()), &[randn(&[4, 4, 1], 1, DType::F32)]);
    s.check_err(
        Op::Pool(Pool2d {
            ksize: [5, 5],
            ..p.clone()
        }),
        &[x.clone()],
    );
    s.check_err(
        Op::Pool(Pool2d {
            padding: Padding::Explicit {
                top: 2,
                bottom: 0,
                left: 0,
                right: 0,
            },
            ..p.clone()
        }),
        &[x.clone()],
    );
    s.check_err(Op::PoolGrad(p), &[x.clone(), randn(&[1, 2, 2, 1], 1, DType::F32)]);
}

#[test]
fn gradient_kernels() {
    let mut s = Suite::new("gradient kernels");
    for (i, op) in UnaryOp::ALL.iter().enumerate() {
        for sh in [&[] as &[usize], &[1], &[9], &[4, 33]] {
            for dt in FLOATS {
                let seed = i as u64 * 10;
                let x = match op {
                    UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal | UnaryOp::Log1p => {
                        uniform(sh, 0.2, 3.0, seed, dt)
                    }
                    _ => randn(sh, seed, dt).mul_scalar(2.0).unwrap(),
                };
                let y = wgflow::ops::apply(Op::Unary(*op), &[&x]).unwrap();
                s.check(Op::UnaryGrad(*op), &[x, y, randn(sh, seed + 1, dt)]);
            }
        }
        s.check_err(
            Op::UnaryGrad(*op),
            &[
                randn(&[3], 1, DType::F32),
                randn(&[3], 1, DType::F32),
                randn(&[4], 1, DType::F32),
            ],
        );
    }
    for dt in [DType::F32, DType::F16, DType::I32] {
        let x = if dt == DType::I32 {
            randint(&[2, 3], -5, 5, 1)
        } else {
            randn(&[2, 3], 1, dt)
        };
        s.check(
            Op::Pad {
                before: vec![1, 2],
                shape: vec![4, 6],
            },
            &[x.clone()],
        );
        s.check(
            Op::Pad {
                before: vec![0, 0],
                shape: vec![2, 3],
            },
            &[x.clone()],
        );
        s.check_err(
            Op::Pad {
                before: vec![3, 0],
                shape: vec![4, 6],
            },
            &[x],
        );
    }
    for dt in FLOATS {
        let idx = Tensor::from_vec(vec![2, 0, 2, 1, 7, -1], &[6], &cpu()).unwrap();
        s.check(
            Op::GatherGrad { axis: 1, dim: 5 },
            &[idx.clone(), randn(&[3, 6, 2], 2, dt)],
        );
        s.check(Op::GatherGrad { axis: 0, dim: 8 }, &[idx, randn(&[6], 3, dt)]);
        let idx2 = randint(&[2, 3], 0, 4, 4);
        s.check(Op::GatherGrad { axis: 0, dim: 4 }, &[idx2, randn(&[2, 3, 5], 5, dt)]);
    }
}

#[test]
fn optimizer_kernels() {
    use wgflow::ops::optim::{Rule, Update};
    let mut s = Suite::new("optimizers");
    let rules = [
        Rule::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        Rule::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        Rule::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay: 0.0,
        },
        Rule::Adam {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.004,
        },
        Rule::RmsProp {
            rho: 0.9,
            momentum: 0.0,
            eps: 1e-7,
        },
        Rule::RmsProp {
            rho: 0.8,
            momentum: 0.5,
            eps: 1e-7,
        },
    ];
    for (i, rule) in rules.into_iter().enumerate() {
        for clip in [None, Some(0.5f32)] {
            let u = Update { rule, clip };
            for sh in [&[1usize] as &[usize], &[7], &[3, 129]] {
                for dt in FLOATS {
                    let seed = i as u64 * 10;
                    let mut x = vec![randn(sh, seed, dt), randn(sh, seed + 1, dt)];
                    for k in 0..u.slots() {
                        // Second moments are non-negative.
                        x.push(uniform(sh, 0.0, 0.5, seed + 2 + k as u64, dt));
                    }
                    // [learning rate, Adam's bias-corrected rate]
                    x.push(Tensor::from_vec(vec![0.01f32, 3e-3], &[2], &cpu()).unwrap());
                    if clip.is_some() {
                        x.push(Tensor::from_vec(vec![1.5f32], &[], &cpu()).unwrap());
                    }
                    s.check(Op::Optimizer(u), &x);
                }
            }
            s.check_err(
                Op::Optimizer(u),
                &[randn(&[3], 1, DType::F32), randn(&[4], 1, DType::F32)],
            );
        }
    }
}
