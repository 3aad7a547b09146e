//! Conformance: every op, GPU against the CPU reference, on every adapter,
//! on seeded inputs of awkward shapes (size 1, odd, prime, not multiples of
//! the tile, zero-size dimensions, broadcasting), in f32, f16 and bf16, plus the
//! error inputs of every op on both devices. Tolerances are the ops' own
//! (`Op::tolerance`): |gpu - cpu| <= atol + rtol * |cpu|, with atol growing
//! as sqrt(K) for reductions of length K, and loosened for f16 and bf16.
//! Run with `--nocapture` to see the case counts.

mod common;
use common::*;
use wgflow::ops::Op;
use wgflow::ops::binary::{BinaryOp, CmpOp};
use wgflow::ops::conv::Conv2d;
use wgflow::ops::pool::Pool2d;
use wgflow::ops::reduce::ReduceOp;
use wgflow::ops::unary::UnaryOp;
use wgflow::runtime::wgpu::{
    GemmChecks, GemmVariant, force_cpu_style_kernels, force_gemm_checks, force_gemm_variant, pretend_cooperative_matrix,
};
use wgflow::{DType, Padding, Tensor};

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Runs `cases` with each family of elementwise kernels on every adapter:
/// the GPU kernels (vec4 views where the length allows) and the
/// CPU-adapter ones (vec4<u64> views, eight 32-bit elements per
/// invocation, where the adapter has 64-bit integers).
fn both_styles(name: &str, cases: fn(&mut Suite)) {
    for cpu_style in [false, true] {
        force_cpu_style_kernels(Some(cpu_style));
        let style = if cpu_style {
            "CPU-adapter kernels"
        } else {
            "GPU kernels"
        };
        cases(&mut Suite::new(format!("{name}, {style}")));
    }
    force_cpu_style_kernels(None);
}

#[test]
fn unary() {
    both_styles("unary", unary_cases);
}

fn unary_cases(s: &mut Suite) {
    // Lengths of multiples of 8 and 4 take the kernels' vector views
    // (1040: several workgroups of 8 elements per invocation).
    let shapes: [&[usize]; 10] = [
        &[],
        &[1],
        &[7],
        &[3, 5],
        &[0, 4],
        &[257],
        &[8],
        &[3, 4],
        &[20],
        &[2, 520],
    ];
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

const SHAPE_PAIRS: [(&[usize], &[usize]); 33] = [
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
    // The kernel's fast modes: a column (each value repeated over the
    // trailing dimensions) on either side, a single value, and a shape that
    // is neither a row nor a column.
    (&[3, 4], &[3, 1]),
    (&[2, 1, 1], &[2, 3, 5]),
    (&[6, 7, 1], &[6, 7, 3]),
    (&[2, 3, 5], &[1]),
    (&[1, 3, 1], &[2, 3, 4]),
    (&[3, 0], &[3, 1]),
    // Broadcasts over several workgroups, 4 elements per invocation with a
    // partial last run: a row of 7 and a column of 1031 values.
    (&[1031, 7], &[7]),
    (&[1031, 1], &[1031, 7]),
    // Vector views, eight (lengths of multiples of 8) or four elements per
    // invocation, in every fast mode: same shapes, rows and columns whose
    // period is a multiple of 8 or only of 4, columns and single values
    // shorter than a vector, over several workgroups.
    (&[16], &[16]),
    (&[24, 8], &[8]),
    (&[8], &[6, 8]),
    (&[6, 8], &[6, 1]),
    (&[3, 1], &[3, 16]),
    (&[40], &[]),
    (&[1], &[2, 4]),
    (&[6, 12], &[12]),
    (&[5, 4], &[5, 1]),
    (&[2, 6], &[1, 6]),
    (&[1031, 8], &[8]),
    // Rows read as words serve several output rows each (`binary8_rows`):
    // row counts not a multiple of that run, rows of several words, the
    // row on either side.
    (&[17, 40], &[40]),
    (&[16], &[9, 16]),
    (&[3, 5, 24], &[5, 24]),
];

#[test]
fn binary() {
    both_styles("binary", binary_cases);
}

fn binary_cases(s: &mut Suite) {
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
            // int32: divisors other than zero, exponents from zero up (both
            // refused below, as TensorFlow refuses them).
            let (lo, hi) = if *op == BinaryOp::Pow { (0, 6) } else { (-50, 50) };
            let y = randint(b, lo, hi, seed + 2);
            let y = y
                .equal(&y.zeros_like().unwrap())
                .unwrap()
                .where_(&y.ones_like().unwrap(), &y)
                .unwrap();
            s.check(Op::Binary(*op), &[randint(a, -9, 10, seed), y]);
        }
        if matches!(op, BinaryOp::Div | BinaryOp::Pow) {
            let bad = if *op == BinaryOp::Div { 0 } else { -1 };
            let y = Tensor::from_vec(vec![2, bad, 3], &[3], &cpu()).unwrap();
            s.check_err(Op::Binary(*op), &[randint(&[4, 3], -9, 10, 5), y]);
            let y = Tensor::from_vec(vec![bad], &[], &cpu()).unwrap();
            s.check_err(Op::Binary(*op), &[randint(&[5], -9, 10, 6), y.clone()]);
            // Nothing is divided when the result is empty (TensorFlow too).
            s.check(Op::Binary(*op), &[randint(&[0, 3], -9, 10, 7), y]);
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
    // The same shapes take vector views: 8 per invocation (16, 1040) or 4 (12, 20).
    let triples: [(&[usize], &[usize], &[usize]); 8] = [
        (&[3, 4], &[3, 4], &[3, 4]),
        (&[4], &[3, 4], &[1]),
        (&[3, 1], &[1, 4], &[3, 4]),
        (&[0, 2], &[2], &[2]),
        (&[], &[5], &[5]),
        (&[2, 8], &[2, 8], &[2, 8]),
        (&[5, 4], &[5, 4], &[5, 4]),
        (&[1040], &[1040], &[1040]),
    ];
    for (j, (c, a, b)) in triples.iter().enumerate() {
        for dt in [DType::F32, DType::F16, DType::BF16, DType::I32] {
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
    let all = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::Bool];
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
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I32] {
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
fn dequantize_int8() {
    let mut s = Suite::new("dequantize_int8");
    // Every byte value, rows of 1, 5 (a partial last word), 8 and 13 columns, no rows.
    for (rows, cols, seed) in [
        (3usize, 1usize, 1u64),
        (7, 5, 2),
        (2, 8, 3),
        (11, 13, 4),
        (0, 6, 5),
        (4, 0, 6),
    ] {
        let words = randint(&[rows, cols.div_ceil(4)], -1_000_000_000, 1_000_000_000, seed);
        let scales = randn(&[rows], seed, DType::F32);
        s.check(Op::DequantizeInt8 { cols }, &[words, scales]);
    }
    // Packing and dequantizing gives back q * scale.
    let q: Vec<i8> = vec![-128, -1, 0, 1, 127, 5, -7];
    let packed = wgflow::ops::layout::pack_int8(&q, 1, 7).unwrap();
    assert!(wgflow::ops::layout::pack_int8(&q, 2, 7).is_err());
    assert!(wgflow::ops::layout::pack_int8(&q, usize::MAX, 7).is_err());
    // Special scales: NaN and inf propagate as on the CPU (0 * inf is NaN).
    let special = Tensor::from_vec(vec![f32::NAN, f32::INFINITY, -0.0, f32::NEG_INFINITY], &[4], &cpu()).unwrap();
    s.check(
        Op::DequantizeInt8 { cols: 7 },
        &[randint(&[4, 2], -1_000_000_000, 1_000_000_000, 7), special],
    );
    let w = Tensor::from_vec(packed, &[1, 2], &cpu()).unwrap();
    let sc = Tensor::from_vec(vec![0.5f32], &[1], &cpu()).unwrap();
    let got = wgflow::ops::layout::dequantize_int8(&w, &sc, 7)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got, q.iter().map(|&v| f32::from(v) * 0.5).collect::<Vec<_>>());
    let x = randint(&[2, 2], 0, 9, 1);
    s.check_err(Op::DequantizeInt8 { cols: 9 }, &[x.clone(), randn(&[2], 1, DType::F32)]);
    s.check_err(Op::DequantizeInt8 { cols: 8 }, &[x.clone(), randn(&[3], 1, DType::F32)]);
    s.check_err(
        Op::DequantizeInt8 { cols: 8 },
        &[randn(&[2, 2], 1, DType::F32), randn(&[2], 1, DType::F32)],
    );
}

/// Random int8 weights: `rows` rows of `cols` values as packed words, and
/// scales of up to about 1/127, so the weights are of unit scale as
/// quantization makes them (the tolerances assume operands of that scale).
fn int8_weights(rows: usize, cols: usize, seed: u64) -> (Tensor, Tensor) {
    let words = randint(&[rows, cols.div_ceil(4)], -1_000_000_000, 1_000_000_000, seed);
    let s: Vec<f32> = randn(&[rows], seed + 1, DType::F32)
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.abs() / 127.0)
        .collect();
    (words, Tensor::from_vec(s, &[rows], &cpu()).unwrap())
}

#[test]
fn int8_products() {
    // The int8 weights expanded inside the GEMM core, on the GPUs' tiled
    // path and the CPU adapters' register path (whose convolutions run on
    // patch matrices).
    for v in [GemmVariant::Tiled, GemmVariant::Register] {
        force_gemm_variant(v);
        let mut s = Suite::new(if v == GemmVariant::Tiled {
            "int8 products, tiled kernel"
        } else {
            "int8 products, register kernel"
        });
        let shapes: [(&[usize], usize); 11] = [
            (&[1, 1], 1),
            (&[3, 5], 7),
            (&[7, 4], 3),
            (&[2, 3, 13], 5),
            (&[65, 17], 63),
            (&[1, 129], 70),
            (&[64, 64], 64),
            (&[2, 2, 2, 9], 11),
            (&[0, 6], 4),
            (&[4, 6], 0),
            (&[4, 0], 3),
        ];
        for (i, (a, n)) in shapes.iter().enumerate() {
            let k = a[a.len() - 1];
            let (w, sc) = int8_weights(*n, k, i as u64 * 3);
            s.check(Op::MatMulInt8, &[randn(a, i as u64, DType::F32), w, sc]);
        }
        // Special values: NaN and inf in the input, inf and 0 scales.
        let x = Tensor::from_vec(
            vec![f32::NAN, 1.0, -2.0, f32::INFINITY, 0.5, -0.0, 3.0, f32::NEG_INFINITY],
            &[2, 4],
            &cpu(),
        )
        .unwrap();
        let (w, _) = int8_weights(3, 4, 40);
        let sc = Tensor::from_vec(vec![f32::INFINITY, 0.0, 1.5], &[3], &cpu()).unwrap();
        s.check(Op::MatMulInt8, &[x, w, sc]);
        let ex = Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        };
        let cases = [
            ([1, 5, 5, 1], [3, 3], 1, conv([1, 1], Padding::Same, [1, 1], 1)),
            ([2, 7, 6, 3], [3, 2], 5, conv([1, 1], Padding::Valid, [1, 1], 1)),
            ([2, 9, 11, 4], [3, 3], 6, conv([2, 2], Padding::Same, [1, 1], 1)),
            ([2, 8, 8, 3], [3, 3], 4, conv([1, 1], Padding::Same, [2, 2], 1)),
            ([1, 6, 7, 2], [2, 3], 3, conv([2, 1], ex, [1, 2], 1)),
            ([2, 7, 5, 6], [3, 3], 9, conv([2, 2], Padding::Same, [1, 1], 3)),
            ([3, 5, 5, 5], [1, 1], 5, conv([1, 1], Padding::Valid, [1, 1], 5)),
            ([4, 14, 14, 8], [3, 3], 67, conv([1, 1], Padding::Same, [1, 1], 1)),
            ([0, 4, 4, 2], [3, 3], 2, conv([1, 1], Padding::Same, [1, 1], 1)),
            ([1, 3, 3, 2], [3, 3], 0, conv([1, 1], Padding::Same, [1, 1], 1)),
        ];
        for (i, (xs, k, o, a)) in cases.iter().enumerate() {
            let fs = vec![k[0], k[1], xs[3] / a.groups, *o];
            let (w, sc) = int8_weights(*o, fs[0] * fs[1] * fs[2], 100 + i as u64);
            let x = randn(xs, 200 + i as u64, DType::F32);
            s.check(Op::Conv2dInt8(a.clone(), fs), &[x, w, sc]);
        }
        // The fused ops equal the float ops on the dequantized weights.
        let (w, sc) = int8_weights(6, 18, 7);
        let x = randn(&[2, 5, 5, 2], 8, DType::F32);
        let a = conv([1, 1], Padding::Same, [1, 1], 1);
        for d in std::iter::once(cpu()).chain(gpus()) {
            let (x, w, sc) = (
                x.to_device(&d).unwrap(),
                w.to_device(&d).unwrap(),
                sc.to_device(&d).unwrap(),
            );
            let deq = wgflow::ops::layout::dequantize_int8(&w, &sc, 18).unwrap();
            let f = deq.reshape(&[6, 3, 3, 2]).unwrap().transpose(&[1, 2, 3, 0]).unwrap();
            let want = wgflow::ops::apply(Op::Conv2d(a.clone()), &[&x, &f]).unwrap();
            let got = wgflow::ops::apply(Op::Conv2dInt8(a.clone(), vec![3, 3, 2, 6]), &[&x, &w, &sc]).unwrap();
            let v = |t: Tensor| t.to_vec::<f32>().unwrap();
            assert_close(&v(got), &v(want), 1e-5, &format!("conv2d_int8 on {d}"));
            let rows = randn(&[5, 18], 9, DType::F32).to_device(&d).unwrap();
            let want = rows.matmul_t(&deq, false, true).unwrap();
            let got = wgflow::ops::apply(Op::MatMulInt8, &[&rows, &w, &sc]).unwrap();
            assert_close(&v(got), &v(want), 1e-5, &format!("matmul_int8 on {d}"));
            // Their input gradients are the float ops' (the weights get none).
            for (fused, float) in [
                (
                    (Op::Conv2dInt8(a.clone(), vec![3, 3, 2, 6]), vec![&x, &w, &sc]),
                    (Op::Conv2d(a.clone()), vec![&x, &f]),
                ),
                (
                    (Op::MatMulInt8, vec![&rows, &w, &sc]),
                    (Op::MatMul { ta: false, tb: true }, vec![&rows, &deq]),
                ),
            ] {
                let grads = |(op, args): (Op, Vec<&Tensor>)| {
                    let tape = wgflow::GradientTape::new();
                    tape.watch(args[0]);
                    let y = wgflow::ops::apply(op, &args).unwrap().sum(None, false).unwrap();
                    let all: Vec<&Tensor> = args.clone();
                    tape.gradient_wrt(&y, &all).unwrap()
                };
                let (gf, gw) = (grads(fused), grads(float));
                let (gf0, gw0) = (gf[0].clone().unwrap(), gw[0].clone().unwrap());
                assert_close(&v(gf0), &v(gw0), 1e-4, &format!("int8 input gradient on {d}"));
                assert!(
                    gf[1..].iter().all(Option::is_none),
                    "int8 weights got a gradient on {d}"
                );
            }
        }
        // Bad operands are shape errors naming the op.
        let (w, sc) = int8_weights(4, 8, 9);
        s.check_err(Op::MatMulInt8, &[randn(&[2, 9], 1, DType::F32), w.clone(), sc.clone()]);
        s.check_err(Op::MatMulInt8, &[randn(&[8], 1, DType::F32), w.clone(), sc.clone()]);
        s.check_err(Op::MatMulInt8, &[randn(&[2, 8], 1, DType::F16), w.clone(), sc.clone()]);
        s.check_err(
            Op::MatMulInt8,
            &[randn(&[2, 8], 1, DType::F32), w.clone(), randn(&[3], 1, DType::F32)],
        );
        s.check_err(Op::MatMulInt8, &[randn(&[2, 8], 1, DType::F32), sc.clone(), w.clone()]);
        let a = conv([1, 1], Padding::Same, [1, 1], 1);
        let x = randn(&[1, 4, 4, 2], 1, DType::F32);
        s.check_err(
            Op::Conv2dInt8(a.clone(), vec![2, 2, 2, 5]),
            &[x.clone(), w.clone(), sc.clone()],
        );
        s.check_err(
            Op::Conv2dInt8(a.clone(), vec![2, 2, 3, 4]),
            &[x.clone(), w.clone(), sc.clone()],
        );
        s.check_err(Op::Conv2dInt8(a.clone(), vec![8, 4]), &[x, w, sc]);
    }
    force_gemm_variant(GemmVariant::Auto);
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
                for dt in [DType::F32, DType::F16, DType::BF16, DType::I32] {
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
    both_styles("softmax", softmax_cases);
}

fn softmax_cases(s: &mut Suite) {
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

/// The GEMM kernels a matmul can be forced to (each proven where it runs).
const MATMUL_KERNELS: [GemmVariant; 10] = [
    GemmVariant::Tiled,
    GemmVariant::Wide,
    GemmVariant::WideDouble,
    GemmVariant::WideWarp,
    GemmVariant::WideDoubleWarp,
    GemmVariant::Register,
    GemmVariant::Subgroup,
    GemmVariant::Cooperative,
    GemmVariant::CooperativeWide,
    GemmVariant::CooperativeStaged,
];

/// The GEMM kernels of convolutions: the implicit GEMM (tiled,
/// cooperative) and the patch matrices' GEMMs (register, subgroup).
const CONV_KERNELS: [GemmVariant; 4] = [
    GemmVariant::Tiled,
    GemmVariant::Register,
    GemmVariant::Subgroup,
    GemmVariant::Cooperative,
];

#[test]
fn matmul() {
    // Every GEMM kernel on every adapter that can run it: the tiled ones
    // GPUs use and the register-blocked ones CPU adapters use.
    for v in MATMUL_KERNELS {
        let (mut s, dts) = forced_gemm("matmul", v);
        matmul_cases(&mut s, dts);
    }
    let with = subgroup8_gpus();
    force_gemm_variant(GemmVariant::Subgroup);
    for d in gpus().into_iter().filter(|d| !with.contains(d)) {
        let a = randn(&[4, 4], 1, DType::F32).to_device(&d).unwrap();
        let e = a.matmul(&a).unwrap_err();
        assert!(e.to_string().contains("no 8-lane subgroups"), "{d}: {e}");
    }
    // Cooperative matrices forced where they cannot run: an error naming
    // what is missing, for every dtype; where they can, f32 products take
    // the tiled kernel.
    for v in [GemmVariant::Cooperative, GemmVariant::CooperativeWide] {
        let with = if v == GemmVariant::Cooperative {
            coop_gpus()
        } else {
            coop_wide_gpus()
        };
        force_gemm_variant(v);
        for d in gpus() {
            let a = randn(&[4, 4], 1, DType::F32).to_device(&d).unwrap();
            for x in [a.clone(), a.cast(DType::F16).unwrap()] {
                let r = x.matmul(&x);
                if with.contains(&d) {
                    r.unwrap();
                } else {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(&format!("{v:?} forced")) && e.contains("lacks"), "{d}: {e}");
                }
            }
        }
    }
    force_gemm_variant(GemmVariant::Auto);
}

/// Every GEMM kernel again, built without wgpu's runtime checks on Vulkan
/// (what `WGFLOW_GEMM_CHECKS=off` runs there, and autotuning times).
#[test]
fn gemm_unchecked() {
    force_gemm_checks(GemmChecks::Off);
    for v in MATMUL_KERNELS {
        let (mut s, dts) = forced_gemm("matmul unchecked", v);
        matmul_cases(&mut s, dts);
    }
    for v in CONV_KERNELS {
        let (mut s, dts) = forced_gemm("conv2d unchecked", v);
        conv2d_cases(&mut s, dts);
    }
    force_gemm_variant(GemmVariant::Auto);
    // The plan names the unchecked build, on Vulkan alone (elsewhere the
    // checked one runs).
    for d in gpus() {
        let a = randn(&[8, 8], 1, DType::F32).to_device(&d).unwrap();
        let args = [a.clone(), a];
        let mut t = wgflow::function::Traced::new("unchecked");
        t.call(&args, |x| Ok(vec![x[0].matmul(&x[1])?])).unwrap();
        let plan = t.graph(&args).unwrap().describe();
        let index: usize = d.to_string()["gpu:".len()..].parse().unwrap();
        let vulkan = wgflow::config::physical_of(index).unwrap().backend == "Vulkan";
        assert_eq!(plan.contains("_unchecked::"), vulkan, "{d}: {plan}");
    }
    force_gemm_checks(GemmChecks::Auto);
}

/// Forces GEMM kernel `v` for `op`'s cases: the suite and the dtypes to
/// check. Forced on an adapter without 8-lane subgroups (cooperative
/// matrices) a kernel is an error, so those cases prove it on every
/// adapter that has them; cooperative matrices take f16 alone.
fn forced_gemm(op: &str, v: GemmVariant) -> (Suite, &'static [DType]) {
    force_gemm_variant(v);
    let mut s = Suite::new(format!("{op}, {v:?} kernel"));
    let mut dts: &[DType] = &FLOATS;
    match v {
        GemmVariant::Subgroup => s.gpus = subgroup8_gpus(),
        // Adapters with less than 32 KiB of workgroup memory say so.
        GemmVariant::WideDouble | GemmVariant::WideDoubleWarp => {
            s.gpus.retain(|d| {
                let a = randn(&[2, 2], 1, DType::F32).to_device(d).unwrap();
                match a.matmul(&a) {
                    Ok(_) => true,
                    Err(e) => {
                        assert!(e.to_string().contains("lacks workgroups"), "{d}: {e}");
                        false
                    }
                }
            });
        }
        GemmVariant::Cooperative => {
            s.gpus = coop_gpus();
            dts = &[DType::F16];
        }
        // 16x16x16 cooperative matrices only.
        GemmVariant::CooperativeWide => {
            s.gpus = coop_wide_gpus();
            dts = &[DType::F16];
        }
        // Cooperative matrices with subgroups of the size its builds
        // need; the others say what they lack.
        GemmVariant::CooperativeStaged => {
            s.gpus = coop_gpus();
            s.gpus.retain(|d| {
                let a = randn(&[2, 2], 1, DType::F16).to_device(d).unwrap();
                match a.matmul(&a) {
                    Ok(_) => true,
                    Err(e) => {
                        assert!(e.to_string().contains("lacks"), "{d}: {e}");
                        false
                    }
                }
            });
            dts = &[DType::F16];
        }
        _ => {}
    }
    (s, dts)
}

/// A cooperative-matrix kernel the device refuses to build (pretended on
/// adapters without them, whose devices reject its shader) is dropped on
/// that device and f16 products and convolutions run on the other kernels;
/// forced afterwards, it is an error saying it did not build.
#[test]
fn a_cooperative_kernel_that_fails_to_build_falls_back() {
    let with = coop_gpus();
    let read = |t: wgflow::Result<Tensor>| t.and_then(|t| t.cast(DType::F32)?.to_vec::<f32>()).unwrap();
    let close = |g: &[f32], w: &[f32]| g.iter().zip(w).all(|(g, w)| (g - w).abs() <= 0.05 + 0.01 * w.abs());
    let a = randn(&[37, 19], 1, DType::F16);
    let b = randn(&[19, 11], 2, DType::F16);
    let x = randn(&[2, 7, 6, 3], 3, DType::F16);
    let f = randn(&[3, 3, 3, 5], 4, DType::F16);
    let conv = Op::Conv2d(conv([1, 1], Padding::Same, [1, 1], 1));
    let want = read(a.matmul(&b));
    let want_conv = read(wgflow::ops::apply(conv.clone(), &[&x, &f]));
    pretend_cooperative_matrix(true);
    for d in gpus().into_iter().filter(|d| !with.contains(d)) {
        let on = |t: &Tensor| t.to_device(&d).unwrap();
        let got = read(on(&a).matmul(&on(&b)));
        assert!(close(&got, &want), "{d}: {got:?} vs {want:?}");
        let got = read(wgflow::ops::apply(conv.clone(), &[&on(&x), &on(&f)]));
        assert!(close(&got, &want_conv), "{d}: conv {got:?} vs {want_conv:?}");
        force_gemm_variant(GemmVariant::Cooperative);
        let r = on(&a).matmul(&on(&b));
        force_gemm_variant(GemmVariant::Auto);
        if d.f16_arithmetic() {
            // It was tried, failed to build and is remembered.
            let e = r.unwrap_err().to_string();
            assert!(e.contains("gemm_coop that builds"), "{d}: {e}");
        }
    }
    pretend_cooperative_matrix(false);
}

fn matmul_cases(s: &mut Suite, dts: &[DType]) {
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
        // Several steps of k (32 for the cooperative kernels), the last partial.
        (256, 136, 72),
        // Tiles the 128x128 cooperative kernel loads straight from the
        // operands (k a multiple of 16, aligned rows) beside edge tiles.
        (256, 136, 48),
        // Every tile inside: gemm_coop_wide runs as gemm_coop_direct.
        (128, 256, 64),
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
                for &dt in dts {
                    seed += 1;
                    let a = randn(&if ta { [k, m] } else { [m, k] }, seed, dt);
                    let b = randn(&if tb { [n, k] } else { [k, n] }, seed + 1000, dt);
                    s.check(Op::MatMul { ta, tb }, &[a, b]);
                }
            }
        }
    }
    // Batches: equal, broadcast from 1, partial broadcast, rank 4.
    let batched: [(&[usize], &[usize]); 6] = [
        (&[3, 5, 7], &[3, 7, 4]),
        (&[5, 8], &[2, 8, 6]),
        (&[2, 1, 5, 4], &[3, 4, 6]),
        (&[1, 4, 4], &[6, 4, 4]),
        (&[2, 3, 9, 12], &[2, 3, 12, 16]),
        (&[2, 128, 32], &[2, 32, 128]),
    ];
    for (i, (a, b)) in batched.iter().enumerate() {
        for &dt in dts {
            s.check(
                Op::MatMul { ta: false, tb: false },
                &[randn(a, i as u64, dt), randn(b, i as u64 + 50, dt)],
            );
        }
    }
    for &dt in dts {
        s.check(
            Op::MatMul { ta: true, tb: true },
            &[randn(&[4, 7, 5], 1, dt), randn(&[4, 3, 7], 2, dt)],
        );
    }
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
    for v in CONV_KERNELS {
        let (mut s, dts) = forced_gemm("conv2d", v);
        conv2d_cases(&mut s, dts);
    }
    force_gemm_variant(GemmVariant::Auto);
}

fn conv2d_cases(s: &mut Suite, dts: &[DType]) {
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
        // Groups of 4 and 8 channels (vec4 patch matrices on CPU adapters)
        // with dilation, explicit padding and strides.
        ([2, 7, 6, 8], [3, 3], 6, conv([1, 1], ex, [2, 1], 2)),
        ([1, 9, 7, 24], [2, 3], 9, conv([2, 3], Padding::Valid, [1, 1], 3)),
        // Short patches (direct loops on the CPU device) with output
        // channels in blocks of 16, 4 and 1.
        ([2, 9, 8, 2], [3, 3], 21, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([1, 1, 1, 3], [1, 1], 2, conv([1, 1], Padding::Valid, [1, 1], 1)),
        ([0, 4, 4, 2], [3, 3], 2, conv([1, 1], Padding::Same, [1, 1], 1)),
        ([1, 3, 3, 2], [3, 3], 0, conv([1, 1], Padding::Same, [1, 1], 1)),
    ];
    for (i, (xs, k, o, a)) in cases.iter().enumerate() {
        let fs = [k[0], k[1], xs[3] / a.groups, *o];
        for &dt in dts {
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
    for &dt in dts {
        let x = randn(&[64, 12, 12, 2], 5, dt);
        s.check(
            Op::Conv2dFilterGrad(a.clone(), vec![3, 3, 2, 4]),
            &[x, randn(&[64, 12, 12, 4], 6, dt)],
        );
    }
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
    let ex2 = Padding::Explicit {
        top: 1,
        bottom: 0,
        left: 1,
        right: 1,
    };
    let cases = [
        ([1, 4, 4, 1], [2, 2], [2, 2], Padding::Valid),
        ([2, 5, 7, 3], [2, 2], [2, 2], Padding::Same),
        ([2, 7, 7, 2], [3, 3], [2, 2], Padding::Same),
        ([1, 9, 6, 4], [3, 2], [1, 2], Padding::Valid),
        ([1, 6, 6, 2], [3, 3], [3, 1], ex),
        ([3, 1, 1, 5], [1, 1], [1, 1], Padding::Same),
        ([1, 28, 28, 8], [2, 2], [2, 2], Padding::Valid),
        // Channels in blocks of 16, 4 and 1 on the CPU device.
        ([2, 5, 6, 21], [2, 3], [2, 1], Padding::Same),
        ([0, 4, 4, 2], [2, 2], [2, 2], Padding::Same),
        // Windows that do not overlap (max pooling's gradient then writes
        // each window's positions): covering the input, leaving its last
        // row and column out, and with gaps between windows.
        ([2, 11, 11, 3], [2, 2], [2, 2], Padding::Valid),
        ([1, 11, 9, 2], [2, 3], [2, 3], Padding::Same),
        ([2, 7, 8, 2], [2, 1], [3, 2], Padding::Valid),
        ([1, 5, 5, 2], [2, 2], [2, 2], ex2),
        // Channels in fours (the GPUs' vec4 entries): windows clipped by
        // padding, with gaps between them, and overlapping.
        ([1, 5, 5, 8], [2, 2], [2, 2], ex2),
        ([2, 7, 8, 4], [2, 1], [3, 2], Padding::Valid),
        ([2, 5, 7, 12], [3, 3], [2, 2], Padding::Same),
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
    for c in [2, 4] {
        let x = randint(&[1, 5, 5, c], 0, 2, 3).cast(DType::F32).unwrap();
        s.check(Op::PoolGrad(p.clone()), &[x, randn(&[1, 4, 4, c], 4, DType::F32)]);
    }
    // And where windows do not overlap.
    let q = Pool2d {
        strides: [2, 2],
        ..p.clone()
    };
    // Channels in fours too (the GPUs' vec4 entries).
    for c in [3, 4] {
        let x = randint(&[2, 6, 5, c], 0, 2, 5).cast(DType::F32).unwrap();
        s.check(Op::PoolGrad(q.clone()), &[x, randn(&[2, 3, 2, c], 6, DType::F32)]);
    }
    // NaN is a window's maximum (the first NaN takes the gradient), on both
    // gradient paths, and in the pooling.
    for c in [2, 4] {
        let v: Vec<f32> = randn(&[36 * c], 7, DType::F32).to_vec::<f32>().unwrap();
        let v: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, &e)| if i % 7 == 3 || i % 11 == 5 { f32::NAN } else { e })
            .collect();
        let x = Tensor::from_vec(v, &[1, 6, 6, c], &cpu()).unwrap();
        s.check(Op::Pool(q.clone()), &[x.clone()]);
        s.check(
            Op::PoolGrad(q.clone()),
            &[x.clone(), randn(&[1, 3, 3, c], 8, DType::F32)],
        );
        s.check(Op::PoolGrad(p.clone()), &[x, randn(&[1, 5, 5, c], 9, DType::F32)]);
    }
    // A dy of -0 gives +0 (0 + dy, as TensorFlow sums) on every device, on
    // both gradient paths and for average pooling.
    for (c, q) in [2, 4].into_iter().flat_map(|c| {
        [
            q.clone(),
            p.clone(),
            Pool2d {
                max: false,
                ..q.clone()
            },
        ]
        .map(|q| (c, q))
    }) {
        let x = randn(&[1, 6, 6, c], 10, DType::F32);
        let y = wgflow::ops::apply(Op::Pool(q.clone()), &[&x]).unwrap();
        let dy = y.mul_scalar(0.0).unwrap().abs().unwrap().neg().unwrap();
        for d in std::iter::once(cpu()).chain(gpus()) {
            let dx = wgflow::ops::apply(
                Op::PoolGrad(q.clone()),
                &[&x.to_device(&d).unwrap(), &dy.to_device(&d).unwrap()],
            )
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
            assert!(
                dx.iter().all(|v| v.to_bits() == 0),
                "{} on {d}: a dy of -0 must give +0, got {dx:?}",
                q.grad_name()
            );
        }
    }
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
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I32] {
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
    both_styles("optimizers", optimizer_cases);
}

fn optimizer_cases(s: &mut Suite) {
    use wgflow::ops::optim::{Rule, Update};
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
            // 64 and 120: eight per invocation on CPU adapters.
            for sh in [&[1usize] as &[usize], &[7], &[3, 129], &[64], &[5, 24]] {
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

// Special values: NaN, +-inf, +-0, negative numbers, 1, small and large
// values through every op family, eagerly and (for the ops a compiled graph
// fuses) in generated kernels, GPU against the CPU reference with NaN ==
// NaN, exact infinities and, where the result's zero has a defined sign,
// the same sign. `tensorflow_special_values` pins the CPU reference itself
// to TensorFlow's values.

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// The table: specials, negatives, 1, small values; `large` adds two
/// values near the top of the dtype's range.
fn special(dt: DType, large: bool) -> Tensor {
    let mut v = vec![
        NAN, INF, -INF, 0.0, -0.0, -2.5, -1.0, -0.5, 1.0, 0.5, 3.0, 1e-3, -1e-3, 60.0, -60.0,
    ];
    if large {
        let l = if dt == DType::F16 { 6e4 } else { 1e20 };
        v.extend([l, -l]);
    }
    let n = v.len();
    Tensor::from_vec(v, &[n], &cpu()).unwrap().cast(dt).unwrap()
}

/// `t` (one dimension) repeated 8 times.
fn times8(t: &Tensor) -> Tensor {
    let n = t.shape()[0];
    t.broadcast_to(&[8, n]).unwrap().reshape(&[8 * n as isize]).unwrap()
}

/// Operands for binary ops: every pair of these, through broadcasting.
const PAIRS: [f32; 16] = [
    NAN,
    INF,
    -INF,
    0.0,
    -0.0,
    -8.0,
    -2.0,
    -1.0,
    -0.5,
    0.5,
    1.0,
    2.0,
    3.0,
    1.0 / 3.0,
    -3.0,
    1e20,
];

fn pairs(dt: DType) -> [Tensor; 2] {
    let n = PAIRS.len();
    let f = |sh: &[usize]| Tensor::from_vec(PAIRS.to_vec(), sh, &cpu()).unwrap().cast(dt).unwrap();
    [f(&[n, 1]), f(&[1, n])]
}

/// Ops whose zero results have a sign TensorFlow (IEEE 754) defines for
/// these inputs: sqrt(-0) = -0, -0 * 3 = -0, floor(-0) = -0 ...
fn signed_zeros(op: &Op) -> bool {
    match op {
        Op::Unary(u) => matches!(
            u,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Sign
                | UnaryOp::Expm1
                | UnaryOp::Log1p
                | UnaryOp::Sqrt
                | UnaryOp::Square
                | UnaryOp::Sin
                | UnaryOp::Tanh
                | UnaryOp::Softsign
                | UnaryOp::Floor
                | UnaryOp::Ceil
                | UnaryOp::Round
                | UnaryOp::Erf
                | UnaryOp::LeakyRelu(_)
        ),
        Op::Binary(b) => matches!(b, BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow),
        Op::Cast(_) => true,
        _ => false,
    }
}

/// The first element where one of `got` and `want` is zero and they differ
/// in sign.
fn zero_sign_mismatch(got: &[f64], want: &[f64]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(g, w)| (*g == 0.0 || *w == 0.0) && g.to_bits() != w.to_bits() && g == w)
}

/// `s.check`, and the signs of zeros where `signed_zeros(op)`.
fn check_special(s: &mut Suite, op: Op, x: &[Tensor]) {
    s.check(op.clone(), x);
    if !signed_zeros(&op) {
        return;
    }
    let refs: Vec<&Tensor> = x.iter().collect();
    let want = wgflow::ops::apply(op.clone(), &refs).unwrap().to_f64_vec().unwrap();
    for g in &s.gpus {
        let gx: Vec<Tensor> = x.iter().map(|t| t.to_device(g).unwrap()).collect();
        let grefs: Vec<&Tensor> = gx.iter().collect();
        let got = wgflow::ops::apply(op.clone(), &grefs).unwrap().to_f64_vec().unwrap();
        if let Some(i) = zero_sign_mismatch(&got, &want) {
            panic!(
                "{} on {g}: element {i} is {} want {} (inputs {:?})",
                op.name(),
                got[i],
                want[i],
                x.iter().map(|t| t.to_f64_vec().unwrap()).collect::<Vec<_>>()
            );
        }
    }
}

/// `op` traced inside `wgflow::function` between two multiplications by 1
/// (so that it is fused into a generated kernel), replayed on the CPU and
/// every GPU, against the eager CPU reference.
fn check_fused(op: Op, x: &[Tensor]) {
    let refs: Vec<&Tensor> = x.iter().collect();
    let want = wgflow::ops::apply(op.clone(), &refs).unwrap();
    let want_v = want.to_f64_vec().unwrap();
    let tol = op.tolerance(&refs, want.dtype());
    let mut devs = vec![cpu()];
    devs.extend(gpus());
    for d in devs {
        let dx: Vec<Tensor> = x.iter().map(|t| t.to_device(&d).unwrap()).collect();
        let mut traced = wgflow::function::Traced::new(op.name());
        let body = |a: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
            let ones: Vec<Tensor> = a.iter().map(|t| t.mul_scalar(1.0)).collect::<wgflow::Result<_>>()?;
            let r: Vec<&Tensor> = ones.iter().collect();
            Ok(vec![wgflow::ops::apply(op.clone(), &r)?.mul_scalar(1.0)?])
        };
        traced.call(&dx, body).unwrap();
        // The trace ran eagerly; the replay runs the compiled graph.
        let got = traced.call(&dx, body).unwrap()[0].to_f64_vec().unwrap();
        let stats = traced.graph(&dx).unwrap().stats();
        assert!(stats.fused_kernels >= 1, "{} on {d}: not fused: {stats:?}", op.name());
        let (max, ok) = tol.check(&got, &want_v);
        let bad = got
            .iter()
            .zip(&want_v)
            .position(|(g, w)| !tol.check(&[*g], &[*w]).1)
            .unwrap_or(0);
        assert!(
            ok,
            "fused {} on {d}: max error {max:e} beyond {tol:?}; element {bad} is {} want {} (inputs {:?})",
            op.name(),
            got[bad],
            want_v[bad],
            x.iter().map(|t| t.to_f64_vec().unwrap()).collect::<Vec<_>>()
        );
        if signed_zeros(&op) {
            if let Some(i) = zero_sign_mismatch(&got, &want_v) {
                panic!(
                    "fused {} on {d}: element {i} is {} want {}",
                    op.name(),
                    got[i],
                    want_v[i]
                );
            }
        }
    }
}

const ARITH: [BinaryOp; 8] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Maximum,
    BinaryOp::Minimum,
    BinaryOp::SquaredDifference,
];

/// Fills and seeded random tensors of every dtype are the same on every
/// device, and eager ops with a scalar (which fill it first) agree: a fill
/// of a 16-bit dtype that the device computes in f32 (bf16 everywhere, f16
/// without `SHADER_F16`) is written in its own dtype. (Such fills, and
/// every random tensor, are built by the host's code on every device; the
/// scalar ops are what catches a fill labelled with the wrong dtype.)
#[test]
fn creation() {
    use wgflow::ops;
    let values = |t: &Tensor| t.to_f64_vec().unwrap();
    for g in gpus() {
        for dt in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::Bool] {
            // WGSL leaves f32 to f16 conversions past f16's range open.
            let big = if dt == DType::F16 { 65504.0 } else { 3e38 };
            for (sh, v) in [
                (&[] as &[usize], 1.0 / 3.0),
                (&[0, 2], 2.0),
                (&[7], -65504.0),
                (&[3, 5], big),
            ] {
                let want = ops::full(sh, v, dt, &cpu()).unwrap();
                let got = ops::full(sh, v, dt, &g).unwrap();
                assert_eq!((got.dtype(), got.shape()), (dt, sh), "fill on {g}");
                assert_eq!(values(&got), values(&want), "fill {v} as {dt} on {g}");
            }
            let e = ops::full(&[2], 1.0, dt, &g).unwrap().cast(DType::F64).unwrap_err();
            assert!(e.to_string().contains("float64"), "{e}");
            if dt.is_float() {
                let want = ops::random_normal(&[4, 9], 0.5, 2.0, dt, 7, &cpu()).unwrap();
                let got = ops::random_normal(&[4, 9], 0.5, 2.0, dt, 7, &g).unwrap();
                assert_eq!(values(&got), values(&want), "random_normal {dt} on {g}");
                let x = randn(&[5], 3, dt);
                let want = values(&x.mul_scalar(1.0 / 3.0).unwrap().add_scalar(0.25).unwrap());
                let gx = x.to_device(&g).unwrap();
                let got = values(&gx.mul_scalar(1.0 / 3.0).unwrap().add_scalar(0.25).unwrap());
                assert_close(
                    &got.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &want.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    2e-2,
                    &format!("x / 3 + 0.25 in {dt} on {g}"),
                );
            }
        }
    }
}

/// Rounding to bf16 on every device, bit for bit against the CPU's
/// `half::bf16` (round to nearest, ties to even): ties both ways, values
/// one f32 ulp either side of a tie, the largest finite bf16 and values
/// that round past it to infinity, f32 subnormals, NaN with either sign.
#[test]
fn bf16_rounding() {
    let mut s = Suite::new("bf16 rounding");
    let tie = |base: f32, k: i32| base + (k as f32) * base * 2f32.powi(-8);
    let next = |x: f32, d: i32| f32::from_bits((x.to_bits() as i64 + d as i64) as u32);
    let max = half::bf16::MAX.to_f32();
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        tie(1.0, 1),
        tie(1.0, 3),
        tie(-1.0, 1),
        tie(-1.0, 3),
        next(tie(1.0, 1), 1),
        next(tie(1.0, 1), -1),
        // Ties between bf16s that are not powers of two: 1.5 stays (even),
        // 1.5 + 3 * 2^-8 goes up to the even 1.5 + 2^-6.
        1.5 + 2f32.powi(-8),
        1.5 + 3.0 * 2f32.powi(-8),
        max,
        next(max, 1),
        f32::MAX,
        f32::MIN,
        f32::from_bits(1),
        f32::from_bits(0x8000_8000),
        f32::MIN_POSITIVE,
        INF,
        -INF,
        NAN,
        -NAN,
        65520.0,
        1.0e30,
        -7.3e-39,
    ];
    // A bf16 tie halfway to the next bf16 of every exponent of an f16.
    for e in -14..16 {
        v.push(tie(2f32.powi(e), 1));
        v.push(tie(-(2f32.powi(e)), 3));
    }
    let n = v.len();
    let x = Tensor::from_vec(v.clone(), &[n], &cpu()).unwrap();
    s.check(Op::Cast(DType::BF16), &[x.clone()]);
    let want: Vec<u16> = v.iter().map(|&f| half::bf16::from_f32(f).to_bits()).collect();
    let bits = |t: &Tensor| -> Vec<u16> {
        let h = t.cast(DType::BF16).unwrap().to_vec::<half::bf16>().unwrap();
        h.iter().map(|b| b.to_bits()).collect()
    };
    assert_eq!(bits(&x), want, "the CPU reference rounds as half::bf16");
    for g in &s.gpus {
        let got = bits(&x.to_device(g).unwrap());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            // NaN payloads may differ; NaN-ness and sign may not.
            let nan = |u: u16| u & 0x7fff > 0x7f80;
            assert!(
                a == b || (nan(*a) && nan(*b) && a >> 15 == b >> 15),
                "cast {} to bf16 on {g}: {a:#06x}, want {b:#06x}",
                v[i]
            );
        }
    }
    // int32 rounds through f32, as TensorFlow's Cast does (2^24 + 2^16 + 1
    // is 2^24 + 2^17 rounded once, 2^24 rounded twice).
    let ints = Tensor::from_vec(
        vec![16842753, -16842753, i32::MAX, i32::MIN, 0, -1, 257, 16777217],
        &[8],
        &cpu(),
    )
    .unwrap();
    s.check(Op::Cast(DType::BF16), &[ints.clone()]);
    let wide = ints
        .cast(DType::BF16)
        .unwrap()
        .cast(DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(wide[0], 16777216.0, "int32 to bf16 rounds through f32");
    // And back: bf16 widens exactly, to f32 and to f16's nearest.
    let h = x.cast(DType::BF16).unwrap();
    for to in [DType::F32, DType::F16, DType::I32, DType::Bool] {
        s.check(Op::Cast(to), &[h.clone()]);
    }
}

#[test]
fn special_values() {
    let mut s = Suite::new("special values");
    for op in UnaryOp::ALL {
        // sin and cos of huge arguments are range-reduction tests, not special values.
        let large = !matches!(op, UnaryOp::Sin | UnaryOp::Cos);
        for dt in FLOATS {
            check_special(&mut s, Op::Unary(op), &[special(dt, large)]);
        }
        let x = special(DType::F32, large);
        let y = wgflow::ops::apply(Op::Unary(op), &[&x]).unwrap();
        s.check(
            Op::UnaryGrad(op),
            &[x.clone(), y, special(DType::F32, large).abs().unwrap()],
        );
        // The same values through the kernels' vector views, 8 copies of
        // each (a length of a multiple of 8), with both kernel families.
        for cpu_style in [false, true] {
            force_cpu_style_kernels(Some(cpu_style));
            for dt in FLOATS {
                check_special(&mut s, Op::Unary(op), &[times8(&special(dt, large))]);
            }
            let x = times8(&special(DType::F32, large));
            let y = wgflow::ops::apply(Op::Unary(op), &[&x]).unwrap();
            s.check(Op::UnaryGrad(op), &[x.clone(), y, x.abs().unwrap()]);
        }
        force_cpu_style_kernels(None);
    }
    for dt in FLOATS {
        let [a, b] = pairs(dt);
        for op in ARITH {
            check_special(&mut s, Op::Binary(op), &[a.clone(), b.clone()]);
        }
        // Every pair through the vector views: the same shape (mode 0) and
        // a column (mode 4), with both kernel families.
        let n = PAIRS.len();
        let (af, bf) = (a.broadcast_to(&[n, n]).unwrap(), b.broadcast_to(&[n, n]).unwrap());
        for cpu_style in [false, true] {
            force_cpu_style_kernels(Some(cpu_style));
            for op in ARITH {
                check_special(&mut s, Op::Binary(op), &[af.clone(), bf.clone()]);
                check_special(&mut s, Op::Binary(op), &[a.clone(), bf.clone()]);
            }
            s.check(Op::Compare(CmpOp::Less), &[af.clone(), bf.clone()]);
            s.check(Op::Compare(CmpOp::NotEqual), &[af.clone(), b.clone()]);
            let c = af.not_equal(&bf).unwrap();
            check_special(&mut s, Op::Where, &[c, af.clone(), bf.clone()]);
        }
        force_cpu_style_kernels(None);
        for op in [
            CmpOp::Equal,
            CmpOp::NotEqual,
            CmpOp::Less,
            CmpOp::LessEqual,
            CmpOp::Greater,
            CmpOp::GreaterEqual,
        ] {
            s.check(Op::Compare(op), &[a.clone(), b.clone()]);
        }
        let c = a.not_equal(&b).unwrap();
        s.check(Op::Where, &[c, a.clone(), b.clone()]);
        // Casts, with values past int32's and f16's ranges.
        let x = Tensor::from_vec(
            vec![
                NAN,
                INF,
                -INF,
                0.0,
                -0.0,
                -2.7,
                2.7,
                3e9,
                -3e9,
                2147483520.0,
                1e5,
                -1e5,
                65504.0,
                65520.0,
            ],
            &[14],
            &cpu(),
        )
        .unwrap()
        .cast(dt)
        .unwrap();
        for to in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::Bool] {
            check_special(&mut s, Op::Cast(to), &[x.clone()]);
        }
        // Reductions: rows with NaN, infinities of both signs, zeros of
        // both signs; a long row (tree and split kernels) with one NaN.
        let rows = Tensor::from_vec(
            vec![
                1.0, NAN, 3.0, -1.0, //
                INF, -INF, 0.0, 1.0, //
                -INF, -INF, -INF, -INF, //
                NAN, NAN, 1.0, INF, //
                -0.0, 0.0, -0.0, -0.0, //
                INF, 1.0, 2.0, INF, //
                0.0, INF, -1.0, 2.0, //
            ],
            &[7, 4],
            &cpu(),
        )
        .unwrap()
        .cast(dt)
        .unwrap();
        let mut long = vec![0.5f32; 3000];
        long[1777] = NAN;
        long[5] = INF;
        long[2500] = -INF;
        let long = Tensor::from_vec(long, &[1, 3000], &cpu()).unwrap().cast(dt).unwrap();
        for cpu_style in [false, true] {
            force_cpu_style_kernels(Some(cpu_style));
            for x in [&rows, &long] {
                for op in [
                    ReduceOp::Sum,
                    ReduceOp::Mean,
                    ReduceOp::Max,
                    ReduceOp::Min,
                    ReduceOp::Prod,
                ] {
                    for axis in [0, 1] {
                        s.check(
                            Op::Reduce {
                                op,
                                axes: vec![axis],
                                keepdims: false,
                            },
                            &[x.clone()],
                        );
                    }
                }
                for max in [true, false] {
                    for axis in [0, 1] {
                        s.check(Op::ArgReduce { max, axis }, &[x.clone()]);
                    }
                }
            }
        }
        force_cpu_style_kernels(None);
        // Pooling: NaN and infinities inside windows.
        let x = rows.reshape(&[1, 7, 4, 1]).unwrap();
        for max in [true, false] {
            let p = Pool2d {
                max,
                ksize: [2, 2],
                strides: [1, 1],
                padding: Padding::Same,
            };
            s.check(Op::Pool(p.clone()), &[x.clone()]);
            let dy = randn(&[1, 7, 4, 1], 3, dt);
            s.check(Op::PoolGrad(p), &[x.clone(), dy]);
        }
        // Softmax with infinities and NaN in rows.
        for log in [false, true] {
            s.check(Op::Softmax { axis: 1, log }, &[rows.clone()]);
        }
        // Layout ops move special values bit for bit.
        let x = special(dt, true);
        s.check(Op::Concat { axis: 0 }, &[x.clone(), x.neg().unwrap()]);
        s.check(Op::Gather { axis: 0 }, &[x.clone(), randint(&[9], 0, 17, 5)]);
        s.check(Op::Permute(vec![1, 0]), &[rows.clone()]);
        s.check(
            Op::Pad {
                before: vec![1, 0],
                shape: vec![9, 5],
            },
            &[rows.clone()],
        );
        // Cross-entropy with infinite and NaN logits.
        // (A workgroup per row, and an invocation per row as on CPU adapters.)
        let labels = Tensor::from_vec(vec![0, 1, 2, 3, 0, 1, 2], &[7], &cpu()).unwrap();
        for cpu_style in [false, true] {
            force_cpu_style_kernels(Some(cpu_style));
            s.check(Op::SparseXent, &[rows.clone(), labels.clone()]);
            s.check(Op::SparseXentGrad, &[rows.clone(), labels.clone()]);
        }
        force_cpu_style_kernels(None);
        // Optimizer steps with special gradients.
        for rule in [
            wgflow::ops::optim::Rule::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            wgflow::ops::optim::Rule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
                weight_decay: 0.0,
            },
        ] {
            let u = wgflow::ops::optim::Update { rule, clip: None };
            // (Not the large values: the CPU reference steps in f64, where
            // g * g does not overflow as it does in f32.)
            // 15 values, and 16 (eight per invocation on CPU adapters).
            let specials = special(dt, false);
            let one = Tensor::from_vec(vec![1.0f32], &[1], &cpu()).unwrap().cast(dt).unwrap();
            for g in [
                specials.clone(),
                wgflow::ops::layout::concat(&[&specials, &one], 0).unwrap(),
            ] {
                let n = g.shape()[0];
                let mut x = vec![randn(&[n], 1, dt), g];
                for k in 0..u.slots() {
                    x.push(uniform(&[n], 0.0, 0.5, 2 + k as u64, dt));
                }
                x.push(Tensor::from_vec(vec![0.01f32, 3e-3], &[2], &cpu()).unwrap());
                for cpu_style in [false, true] {
                    force_cpu_style_kernels(Some(cpu_style));
                    s.check(Op::Optimizer(u), &x);
                }
                force_cpu_style_kernels(None);
            }
        }
        // Products with NaN and infinities.
        let w = Tensor::from_vec(vec![1.0f32, 0.5, -1.0, 2.0, 0.0, 1.0, 1.0, -2.0], &[4, 2], &cpu())
            .unwrap()
            .cast(dt)
            .unwrap();
        s.check(Op::MatMul { ta: false, tb: false }, &[rows.clone(), w]);
        let f = Tensor::from_vec(vec![1.0f32, -1.0, 0.5, 2.0], &[2, 2, 1, 1], &cpu())
            .unwrap()
            .cast(dt)
            .unwrap();
        s.check(
            Op::Conv2d(conv([1, 1], Padding::Valid, [1, 1], 1)),
            &[rows.reshape(&[1, 7, 4, 1]).unwrap(), f],
        );
    }
}

#[test]
fn special_values_fused() {
    // leaky_relu's slope is a parameter fused kernels do not take.
    for op in UnaryOp::ALL.into_iter().filter(|u| !matches!(u, UnaryOp::LeakyRelu(_))) {
        let large = !matches!(op, UnaryOp::Sin | UnaryOp::Cos);
        check_fused(Op::Unary(op), &[special(DType::F32, large)]);
    }
    let [a, b] = pairs(DType::F32);
    for op in ARITH {
        check_fused(Op::Binary(op), &[a.clone(), b.clone()]);
    }
    // Through the eight-wide generated kernels of CPU adapters (lengths of
    // multiples of 8) and the plain ones, with each leaf kind: laid out as
    // the output, a row of 16 (read as vectors) or of 12 (not), a column,
    // a single value.
    let n = PAIRS.len();
    let (af, bf) = (a.broadcast_to(&[n, n]).unwrap(), b.broadcast_to(&[n, n]).unwrap());
    let row12 = Tensor::from_vec(PAIRS[..12].to_vec(), &[12], &cpu()).unwrap();
    let by12 = Tensor::from_vec(PAIRS[4..].repeat(6), &[6, 12], &cpu()).unwrap();
    let one = Tensor::from_vec(vec![-2.0f32], &[], &cpu()).unwrap();
    for cpu_style in [false, true] {
        force_cpu_style_kernels(Some(cpu_style));
        for op in UnaryOp::ALL.into_iter().filter(|u| !matches!(u, UnaryOp::LeakyRelu(_))) {
            let large = !matches!(op, UnaryOp::Sin | UnaryOp::Cos);
            check_fused(Op::Unary(op), &[times8(&special(DType::F32, large))]);
        }
        for op in ARITH {
            for x in [
                [af.clone(), bf.clone()],
                [af.clone(), b.clone()],
                [a.clone(), bf.clone()],
                [by12.clone(), row12.clone()],
                [one.clone(), bf.clone()],
            ] {
                check_fused(Op::Binary(op), &x);
            }
        }
    }
    force_cpu_style_kernels(None);
    let mut long = vec![0.5f32; 3000];
    long[1777] = NAN;
    long[5] = INF;
    let long = Tensor::from_vec(long, &[1, 3000], &cpu()).unwrap();
    let rows = a.add(&b).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
        for x in [&rows, &long] {
            for axis in [0, 1] {
                check_fused(
                    Op::Reduce {
                        op,
                        axes: vec![axis],
                        keepdims: false,
                    },
                    &[x.clone()],
                );
            }
        }
    }
}

/// Values TensorFlow 2 gives (C's, IEEE 754's), on the CPU and every GPU,
/// in f32 and f16, eagerly and (where the op fuses) in a generated kernel.
/// Where C leaves a conversion undefined (NaN, infinities and out-of-range
/// floats to int32), TensorFlow's x86 kernel gives INT_MIN; so does wgflow.
#[test]
fn tensorflow_special_values() {
    let u = |op: UnaryOp, x: &[f32], want: &[f64]| (Op::Unary(op), vec![x.to_vec()], want.to_vec());
    let b = |op: BinaryOp, x: &[f32], y: &[f32], want: &[f64]| {
        (Op::Binary(op), vec![x.to_vec(), y.to_vec()], want.to_vec())
    };
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let cases: Vec<(Op, Vec<Vec<f32>>, Vec<f64>)> = vec![
        b(
            BinaryOp::Pow,
            &[-2.0, 0.0, -8.0, -2.0, NAN, 1.0, -0.0, 0.0, -INF, -1.0, -2.0, 2.0, -0.0],
            &[2.0, 0.0, 1.0 / 3.0, 3.0, 0.0, NAN, -1.0, -2.0, 3.0, INF, -1.0, 0.5, 3.0],
            &[
                4.0,
                1.0,
                nan,
                -8.0,
                1.0,
                1.0,
                -inf,
                inf,
                -inf,
                1.0,
                -0.5,
                std::f64::consts::SQRT_2,
                -0.0,
            ],
        ),
        b(BinaryOp::Maximum, &[NAN, 1.0, -INF], &[1.0, NAN, 2.0], &[nan, nan, 2.0]),
        b(BinaryOp::Minimum, &[NAN, 1.0, INF], &[1.0, NAN, 2.0], &[nan, nan, 2.0]),
        b(
            BinaryOp::Div,
            &[1.0, -1.0, 0.0, -0.0],
            &[0.0, 0.0, 0.0, 2.0],
            &[inf, -inf, nan, -0.0],
        ),
        (
            Op::Compare(CmpOp::NotEqual),
            vec![vec![NAN, NAN, 1.0], vec![NAN, 1.0, 1.0]],
            vec![1.0, 1.0, 0.0],
        ),
        (
            Op::Compare(CmpOp::Equal),
            vec![vec![NAN, 0.0, INF], vec![NAN, -0.0, INF]],
            vec![0.0, 1.0, 1.0],
        ),
        (
            Op::Compare(CmpOp::LessEqual),
            vec![vec![NAN, 1.0, -INF], vec![1.0, NAN, -INF]],
            vec![0.0, 0.0, 1.0],
        ),
        u(UnaryOp::Sign, &[NAN, -3.0, 2.0, -INF], &[nan, -1.0, 1.0, -1.0]),
        u(UnaryOp::Relu, &[NAN, -INF, INF], &[nan, 0.0, inf]),
        u(UnaryOp::Relu6, &[NAN, -INF, INF], &[nan, 0.0, 6.0]),
        u(UnaryOp::Erf, &[INF, -INF, -0.0, NAN], &[1.0, -1.0, -0.0, nan]),
        u(UnaryOp::Gelu, &[INF, -INF, NAN, -30.0], &[inf, nan, nan, -0.0]),
        u(UnaryOp::GeluTanh, &[INF, -INF, -30.0], &[inf, nan, -0.0]),
        u(UnaryOp::Silu, &[INF, -INF], &[inf, nan]),
        u(
            UnaryOp::Softplus,
            &[INF, -INF, NAN, -9.0],
            &[inf, 0.0, nan, 0.00012340218972325883],
        ),
        u(UnaryOp::Sigmoid, &[INF, -INF, NAN], &[1.0, 0.0, nan]),
        u(UnaryOp::Tanh, &[INF, -INF, -0.0, NAN], &[1.0, -1.0, -0.0, nan]),
        u(UnaryOp::Exp, &[INF, -INF, NAN], &[inf, 0.0, nan]),
        u(
            UnaryOp::Expm1,
            &[INF, -INF, -0.0, 0.01, -0.3],
            &[inf, -1.0, -0.0, 0.010050167084168058, -0.2591817793182821],
        ),
        u(
            UnaryOp::Log,
            &[0.0, -0.0, -1.0, INF, -INF, NAN],
            &[-inf, -inf, nan, inf, nan, nan],
        ),
        u(
            UnaryOp::Log1p,
            &[-1.0, -2.0, INF, -0.0, 0.01, -0.2],
            &[-inf, nan, inf, -0.0, 0.009950330853168083, -0.2231435513142097],
        ),
        u(UnaryOp::Sqrt, &[-0.0, -1.0, INF, -INF], &[-0.0, nan, inf, nan]),
        u(UnaryOp::Rsqrt, &[0.0, -0.0, INF, -1.0], &[inf, -inf, 0.0, nan]),
        u(UnaryOp::Reciprocal, &[-0.0, 0.0, INF, -INF], &[-inf, inf, 0.0, -0.0]),
        u(UnaryOp::Elu, &[-INF, INF], &[-1.0, inf]),
        u(UnaryOp::Selu, &[-INF, INF], &[-1.7580993408473766, inf]),
        // EluGrad and SeluGrad branch on the output: 0 and NaN take the
        // linear side (inputs x, f(x), dy).
        (
            Op::UnaryGrad(UnaryOp::Elu),
            vec![
                vec![0.0, NAN, -1.0],
                vec![0.0, NAN, -0.63212055882],
                vec![1.0, 1.0, 1.0],
            ],
            vec![1.0, 1.0, 0.36787944117],
        ),
        (
            Op::UnaryGrad(UnaryOp::Selu),
            vec![vec![0.0, NAN], vec![0.0, NAN], vec![1.0, 1.0]],
            vec![1.0507009873554805, 1.0507009873554805],
        ),
        u(UnaryOp::Softsign, &[INF, -INF, -0.0], &[1.0, -1.0, -0.0]),
        u(UnaryOp::Floor, &[INF, -INF, -0.0, NAN], &[inf, -inf, -0.0, nan]),
        u(UnaryOp::Ceil, &[INF, -INF, -0.5], &[inf, -inf, -0.0]),
        u(UnaryOp::Round, &[INF, -INF, -0.5, 2.5], &[inf, -inf, -0.0, 2.0]),
        u(UnaryOp::Sin, &[INF, -0.0], &[nan, -0.0]),
        u(UnaryOp::Cos, &[-INF], &[nan]),
        u(UnaryOp::Abs, &[-INF, -0.0], &[inf, 0.0]),
        u(UnaryOp::Neg, &[0.0, NAN], &[-0.0, nan]),
        (
            Op::Cast(DType::Bool),
            vec![vec![NAN, -0.0, 0.0, INF, 0.5]],
            vec![1.0, 0.0, 0.0, 1.0, 1.0],
        ),
        (
            Op::Cast(DType::I32),
            vec![vec![NAN, INF, -INF, 3e9, -3e9, -2.7, 2.7, -2147483648.0, 65504.0, -0.0]],
            vec![
                -2147483648.0,
                -2147483648.0,
                -2147483648.0,
                -2147483648.0,
                -2147483648.0,
                -2.0,
                2.0,
                -2147483648.0,
                65504.0,
                0.0,
            ],
        ),
        (
            Op::Reduce {
                op: ReduceOp::Max,
                axes: vec![0],
                keepdims: false,
            },
            vec![vec![1.0, NAN, 3.0]],
            vec![nan],
        ),
        (
            Op::Reduce {
                op: ReduceOp::Min,
                axes: vec![0],
                keepdims: false,
            },
            vec![vec![1.0, NAN, -3.0]],
            vec![nan],
        ),
        (
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![0],
                keepdims: false,
            },
            vec![vec![INF, -INF]],
            vec![nan],
        ),
        // argmax and argmin skip NaN; a row of NaN and -inf gives 0 for
        // argmax (TensorFlow's scan starts from the lowest value at 0).
        (
            Op::ArgReduce { max: true, axis: 0 },
            vec![vec![1.0, NAN, 3.0, NAN]],
            vec![2.0],
        ),
        (
            Op::ArgReduce { max: false, axis: 0 },
            vec![vec![1.0, -3.0, NAN]],
            vec![1.0],
        ),
        (
            Op::ArgReduce { max: true, axis: 1 },
            vec![vec![NAN, -INF, NAN, NAN, 1.0, INF, NAN, INF, NAN, NAN, NAN, NAN]],
            vec![0.0, 2.0, 1.0, 0.0],
        ),
        (
            Op::ArgReduce { max: false, axis: 1 },
            vec![vec![NAN, -INF, NAN, NAN, 1.0, INF, NAN, INF, NAN, NAN, NAN, NAN]],
            vec![1.0, 1.0, 0.0, 0.0],
        ),
        (
            Op::Pool(Pool2d {
                max: true,
                ksize: [2, 2],
                strides: [2, 2],
                padding: Padding::Valid,
            }),
            vec![vec![1.0, NAN, 3.0, 2.0, -1.0, -2.0, -3.0, -4.0]],
            vec![nan, 3.0],
        ),
    ];
    let mut devs = vec![cpu()];
    devs.extend(gpus());
    for (op, xs, want) in cases {
        let fused = matches!(op, Op::Unary(u) if !matches!(u, UnaryOp::LeakyRelu(_))) || matches!(op, Op::Binary(_));
        for dt in FLOATS {
            let x: Vec<Tensor> = xs
                .iter()
                .map(|v| {
                    // Pooling reads [1, 2, 4, 1]: windows [1 nan; -1 -2] and [3 2; -3 -4].
                    let sh: &[usize] = if matches!(op, Op::Pool(_)) {
                        &[1, 2, 4, 1]
                    } else if matches!(op, Op::ArgReduce { axis: 1, .. }) {
                        &[4, 3]
                    } else {
                        &[v.len()]
                    };
                    Tensor::from_vec(v.clone(), sh, &cpu()).unwrap().cast(dt).unwrap()
                })
                .collect();
            let rtol = match dt {
                DType::F16 => 2e-3,
                DType::BF16 => 8e-3,
                _ => 1e-6,
            };
            for d in &devs {
                let dx: Vec<Tensor> = x.iter().map(|t| t.to_device(d).unwrap()).collect();
                let refs: Vec<&Tensor> = dx.iter().collect();
                let mut runs = vec![("eager", wgflow::ops::apply(op.clone(), &refs).unwrap())];
                if fused && dt == DType::F32 {
                    let mut traced = wgflow::function::Traced::new("special");
                    let body = |a: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
                        let ones: Vec<Tensor> = a.iter().map(|t| t.mul_scalar(1.0)).collect::<wgflow::Result<_>>()?;
                        let r: Vec<&Tensor> = ones.iter().collect();
                        Ok(vec![wgflow::ops::apply(op.clone(), &r)?.mul_scalar(1.0)?])
                    };
                    traced.call(&dx, body).unwrap();
                    runs.push(("fused", traced.call(&dx, body).unwrap().remove(0)));
                }
                for (how, t) in runs {
                    let got = t.to_f64_vec().unwrap();
                    assert_eq!(got.len(), want.len(), "{} {how} on {d}", op.name());
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let ok = if w.is_nan() {
                            g.is_nan()
                        } else if w.is_infinite() || *w == 0.0 {
                            g.to_bits() == w.to_bits()
                        } else {
                            (g - w).abs() <= rtol * w.abs()
                        };
                        assert!(
                            ok,
                            "{} {how} on {d} in {dt:?}: element {i} of {:?} is {g}, TensorFlow gives {w}",
                            op.name(),
                            xs
                        );
                    }
                }
            }
        }
    }
}

/// Issue 9's repro: `x.pow_scalar(2.0)` of a negative base, eagerly and
/// traced (a fused kernel with the exponent as a scalar leaf).
#[test]
fn pow_scalar_of_negative_bases() {
    let mut devs = vec![cpu()];
    devs.extend(gpus());
    for d in devs {
        let x = Tensor::from_vec(vec![-2.0f32, -0.5, 0.0, 3.0], &[4], &d).unwrap();
        let want = vec![4.0f32, 0.25, 0.0, 9.0];
        assert_eq!(
            x.pow_scalar(2.0).unwrap().to_vec::<f32>().unwrap(),
            want,
            "eager on {d}"
        );
        let cube = x.pow_scalar(3.0).unwrap().to_vec::<f32>().unwrap();
        assert!(
            (cube[0] + 8.0).abs() < 1e-5 && (cube[1] + 0.125).abs() < 1e-6,
            "{d}: {cube:?}"
        );
        let mut f = wgflow::function::function(|a: &[Tensor]| Ok(vec![a[0].pow_scalar(2.0)?.add_scalar(1.0)?]));
        f.call(&[x.clone()]).unwrap();
        let got = f.call(&[x.clone()]).unwrap()[0].to_vec::<f32>().unwrap();
        assert_eq!(got, vec![5.0, 1.25, 1.0, 10.0], "traced on {d}");
        assert!(f.graph(&[x.clone()]).unwrap().stats().fused_kernels >= 1, "{d}: fused");
    }
}
