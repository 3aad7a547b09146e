//! Property-based tests (issue 9): generated shapes (rank 0-4, dimensions
//! 0..=7 with 0 and 1 frequent and the odd prime), axes (negative and out of
//! range), attributes and values (NaN, ±inf, ±0, negatives, large
//! magnitudes) for every op family. Each case runs on the CPU reference and
//! on every GPU adapter; either both succeed and the GPU equals the CPU
//! within the op's own tolerance (`Op::tolerance`: NaN matches NaN,
//! infinities exactly), or both fail with the same `wgflow::Error` variant
//! (a GPU error may surface at readback, so results are compared after
//! reading back). A panic anywhere fails the property.
//!
//! Case counts are bounded (24 per property) so the file runs quickly on a
//! software adapter; `WGFLOW_PROPTEST_CASES=n` raises them. The seed is
//! fixed (`WGFLOW_PROPTEST_SEED=n` picks another), so failures reproduce.
//! No failure persistence files are written.
//!
//! The ignored properties are known defects of issue 9 (and two found here);
//! each holds the special values or sizes that its family's main property
//! leaves out, so the main ones stay strict on everything else.

mod common;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use std::sync::OnceLock;
use wgflow::ops::binary::{BinaryOp, CmpOp};
use wgflow::ops::reduce::ReduceOp;
use wgflow::ops::unary::UnaryOp;
use wgflow::ops::{self, Op, Tol};
use wgflow::{DType, Device, Padding, Tensor};

// ---- harness ---------------------------------------------------------------

fn config() -> ProptestConfig {
    let cases = std::env::var("WGFLOW_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    // A fixed seed by default, so a failure reproduces; set
    // WGFLOW_PROPTEST_SEED to explore others.
    let seed = std::env::var("WGFLOW_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9_f10e);
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn gpus() -> &'static [Device] {
    static G: OnceLock<Vec<Device>> = OnceLock::new();
    G.get_or_init(common::gpus)
}

type Read = (Vec<usize>, DType, Vec<f64>);

fn read(t: wgflow::Result<Tensor>) -> wgflow::Result<Read> {
    let t = t?;
    let v = t.to_f64_vec()?;
    Ok((t.shape().to_vec(), t.dtype(), v))
}

/// Runs `f` on the CPU inputs `x` and on copies of them on every GPU; the
/// results must agree (values within `tol(cpu inputs, dtype)`) or both be
/// errors of the same variant.
fn agree(
    name: &str,
    x: &[Tensor],
    f: impl Fn(&[&Tensor]) -> wgflow::Result<Tensor>,
    tol: impl Fn(&[&Tensor], DType) -> Tol,
) -> Result<(), TestCaseError> {
    let refs: Vec<&Tensor> = x.iter().collect();
    let want = read(f(&refs));
    for g in gpus() {
        let gx: Vec<Tensor> = x
            .iter()
            .map(|t| t.to_device(g))
            .collect::<wgflow::Result<_>>()
            .map_err(|e| TestCaseError::fail(format!("{name}: copying the inputs to {g} failed: {e}")))?;
        let grefs: Vec<&Tensor> = gx.iter().collect();
        let got = read(f(&grefs));
        match (&want, got) {
            (Ok((ws, wd, wv)), Ok((gs, gd, gv))) => {
                prop_assert_eq!(&gs, ws, "{} shape on {}", name, g);
                prop_assert_eq!(gd, *wd, "{} dtype on {}", name, g);
                let t = tol(&refs, *wd);
                let (max, ok) = t.check(&gv, wv);
                if !ok {
                    let bad = gv
                        .iter()
                        .zip(wv)
                        .position(|(a, b)| !t.check(&[*a], &[*b]).1)
                        .unwrap_or(0);
                    return Err(TestCaseError::fail(format!(
                        "{name} on {g}: max error {max:e} beyond {t:?}; element {bad} of {gs:?}: GPU {} CPU {}",
                        gv.get(bad).copied().unwrap_or(f64::NAN),
                        wv.get(bad).copied().unwrap_or(f64::NAN),
                    )));
                }
            }
            (Err(we), Err(ge)) => prop_assert_eq!(
                std::mem::discriminant(we),
                std::mem::discriminant(&ge),
                "{} on {}: GPU error `{}` but CPU error `{}`",
                name,
                g,
                ge,
                we
            ),
            (Ok(_), Err(ge)) => {
                return Err(TestCaseError::fail(format!(
                    "{name}: CPU succeeded but {g} failed: {ge}"
                )));
            }
            (Err(we), Ok(_)) => {
                return Err(TestCaseError::fail(format!(
                    "{name}: CPU failed ({we}) but {g} succeeded"
                )));
            }
        }
    }
    Ok(())
}

/// `agree` with the tolerance of `op` (computed only when the CPU succeeded).
fn agree_op(x: &[Tensor], op: Op) -> Result<(), TestCaseError> {
    let o = op.clone();
    agree(op.name(), x, |t| ops::apply(o.clone(), t), |t, d| op.tolerance(t, d))
}

// ---- generators ------------------------------------------------------------

/// Which values fill a tensor.
#[derive(Clone, Copy, Debug)]
enum Vals {
    /// Everything: moderate, special (NaN, ±inf, ±0) and huge magnitudes.
    Wild,
    /// Moderate values, small integers (ties) and specials: for ops that
    /// accumulate, where huge finite values would only test rounding order.
    Tame,
    /// `Wild` without NaN.
    WildNoNan,
    /// Finite values inside int32's range, NaN and ±0 included.
    Finite,
    /// `Tame` without NaN.
    NoNan,
    /// Magnitudes near 1 and specials: for products.
    Near1,
}

const SPECIAL: [f32; 7] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0];
const SPECIAL_NO_NAN: [f32; 6] = [f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0];
const LARGE: [f32; 10] = [1e4, -1e4, 1e10, -1e10, 1e30, -1e30, 3e38, -3.4e38, f32::MAX, 1e-30];

fn value(kind: Vals) -> BoxedStrategy<f32> {
    let ints = (-3i32..=3).prop_map(|i| i as f32);
    match kind {
        Vals::Wild => prop_oneof![
            5 => -8.0f32..8.0,
            1 => ints,
            2 => select(SPECIAL.to_vec()),
            2 => select(LARGE.to_vec()),
        ]
        .boxed(),
        Vals::WildNoNan => prop_oneof![
            5 => -8.0f32..8.0,
            1 => ints,
            2 => select(SPECIAL_NO_NAN.to_vec()),
            2 => select(LARGE.to_vec()),
        ]
        .boxed(),
        Vals::Finite => prop_oneof![
            5 => -8.0f32..8.0,
            1 => ints,
            1 => select(vec![f32::NAN, 0.0, -0.0, 1e4, -1e4, 1e9, -2e9, 1e-30]),
        ]
        .boxed(),
        Vals::Tame => prop_oneof![
            5 => -4.0f32..4.0,
            2 => ints,
            1 => select(SPECIAL.to_vec()),
        ]
        .boxed(),
        Vals::NoNan => prop_oneof![
            5 => -4.0f32..4.0,
            2 => ints,
            1 => select(SPECIAL_NO_NAN.to_vec()),
        ]
        .boxed(),
        Vals::Near1 => prop_oneof![
            4 => 0.9f32..1.1,
            2 => -1.1f32..-0.9,
            1 => select(SPECIAL.to_vec()),
        ]
        .boxed(),
    }
}

/// 0 and 1 often, 2..=7 mostly, and the odd prime.
fn dim() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![1 => Just(0usize), 2 => Just(1usize), 6 => 2usize..=7, 1 => select(vec![11usize, 13])]
}

fn shape_r(rank: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> + Clone {
    prop::collection::vec(dim(), rank)
}

fn shape() -> impl Strategy<Value = Vec<usize>> + Clone {
    shape_r(0..=4)
}

/// A shape that broadcasts against `s`: a suffix of it with some dimensions
/// set to 1.
fn partner(s: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = s.len();
    (0..=r, prop::collection::vec(prop::bool::weighted(0.3), r))
        .prop_map(move |(k, ones)| (r - k..r).map(|i| if ones[i] { 1 } else { s[i] }).collect())
}

/// Two shapes: mostly broadcast-compatible (either order), sometimes
/// unrelated (and then mostly incompatible).
fn shape_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop_oneof![
        4 => (shape().prop_flat_map(|s| (Just(s.clone()), partner(s))), any::<bool>())
            .prop_map(|((a, b), swap)| if swap { (b, a) } else { (a, b) }),
        1 => (shape(), shape()),
    ]
}

/// A tensor's recipe: shape, f32 values, dtype. Values become int32 by
/// Rust's saturating `as` (NaN is 0) and bool by `!= 0`.
#[derive(Clone)]
struct Spec {
    shape: Vec<usize>,
    dtype: DType,
    vals: Vec<f32>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?} {:?}", self.dtype, self.shape, self.vals)
    }
}

impl Spec {
    fn tensor(&self) -> Tensor {
        let cpu = Device::Cpu;
        match self.dtype {
            DType::I32 => {
                let v: Vec<i32> = self.vals.iter().map(|&x| x as i32).collect();
                Tensor::from_vec(v, &self.shape, &cpu).unwrap()
            }
            DType::Bool => {
                let v: Vec<bool> = self.vals.iter().map(|&x| x != 0.0).collect();
                Tensor::from_vec(v, &self.shape, &cpu).unwrap()
            }
            dt => Tensor::from_vec(self.vals.clone(), &self.shape, &cpu)
                .unwrap()
                .cast(dt)
                .unwrap(),
        }
    }
}

fn spec_of(shape: Vec<usize>, dtype: DType, kind: Vals) -> impl Strategy<Value = Spec> {
    let n: usize = shape.iter().product();
    prop::collection::vec(value(kind), n).prop_map(move |vals| Spec {
        shape: shape.clone(),
        dtype,
        vals,
    })
}

fn spec(shape: impl Strategy<Value = Vec<usize>>, dtypes: &'static [DType], kind: Vals) -> impl Strategy<Value = Spec> {
    (shape, select(dtypes)).prop_flat_map(move |(s, d)| spec_of(s, d, kind))
}

/// int32 indices of `shape` in `lo..hi`.
fn indices(shape: impl Strategy<Value = Vec<usize>>, lo: i32, hi: i32) -> impl Strategy<Value = Spec> {
    shape.prop_flat_map(move |s| {
        let n: usize = s.iter().product();
        prop::collection::vec((lo..hi).prop_map(|i| i as f32), n).prop_map(move |vals| Spec {
            shape: s.clone(),
            dtype: DType::I32,
            vals,
        })
    })
}

const FLOATS: &[DType] = &[DType::F32, DType::F32, DType::F16];
const NUMERIC: &[DType] = &[DType::F32, DType::F32, DType::F16, DType::I32];
const ALL: &[DType] = &[DType::F32, DType::F16, DType::I32, DType::Bool];

fn axis() -> impl Strategy<Value = isize> {
    -5isize..=5
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        2 => Just(Padding::Same),
        2 => Just(Padding::Valid),
        1 => (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3).prop_map(|(top, bottom, left, right)| Padding::Explicit {
            top,
            bottom,
            left,
            right
        }),
    ]
}

fn norm(axis: isize, rank: usize) -> usize {
    axis.rem_euclid(rank.max(1) as isize) as usize
}

// ---- properties ------------------------------------------------------------

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

const CMPS: [CmpOp; 6] = [
    CmpOp::Equal,
    CmpOp::NotEqual,
    CmpOp::Less,
    CmpOp::LessEqual,
    CmpOp::Greater,
    CmpOp::GreaterEqual,
];

fn binary_inputs(kind: Vals, dtypes: &'static [DType]) -> impl Strategy<Value = (Spec, Spec)> {
    (shape_pair(), select(dtypes), prop::bool::weighted(0.1), select(ALL)).prop_flat_map(
        move |((a, b), d, mixed, d2)| (spec_of(a, d, kind), spec_of(b, if mixed { d2 } else { d }, kind)),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unary((op, x) in select(UnaryOp::ALL.to_vec()).prop_flat_map(|op| {
        // Huge arguments of sin and cos, and NaN, are the ignored properties below.
        let kind = if matches!(op, UnaryOp::Sin | UnaryOp::Cos) { Vals::NoNan } else { Vals::WildNoNan };
        (Just(op), spec(shape(), NUMERIC, kind))
    })) {
        agree_op(&[x.tensor()], Op::Unary(op))?;
    }

    #[test]
    #[ignore = "found by this file, not yet in issue 9: sin and cos of huge arguments (|x| >= 1e10) on the GPU are off by up to 1 (no full range reduction; sin(1e10) is -1 on lavapipe, -0.4875 on the CPU)"]
    fn sin_cos_huge((op, x) in (select(vec![UnaryOp::Sin, UnaryOp::Cos]), spec(shape(), FLOATS, Vals::Wild))) {
        agree_op(&[x.tensor()], Op::Unary(op))?;
    }

    #[test]
    fn unary_special((op, x) in select(UnaryOp::ALL.to_vec()).prop_flat_map(|op| {
        let kind = if matches!(op, UnaryOp::Sin | UnaryOp::Cos) { Vals::Tame } else { Vals::Wild };
        (Just(op), spec(shape(), NUMERIC, kind))
    })) {
        agree_op(&[x.tensor()], Op::Unary(op))?;
    }

    #[test]
    fn binary((op, (a, b)) in (select(ARITH.iter().copied().filter(|o| *o != BinaryOp::Pow).collect::<Vec<_>>()), binary_inputs(Vals::Wild, NUMERIC))) {
        agree_op(&[a.tensor(), b.tensor()], Op::Binary(op))?;
    }

    #[test]
    #[ignore = "open: pow of values near f32::MAX (e.g. 3.4e38 ^ 1) overflows to inf on the GPU, whose pow runs in f32 through exp2/log2, where the CPU reference gives f32::MAX; negative bases, 0^0 and the IEEE cases are checked by tests/conformance.rs special_values"]
    fn binary_pow((a, b) in binary_inputs(Vals::Wild, NUMERIC)) {
        agree_op(&[a.tensor(), b.tensor()], Op::Binary(BinaryOp::Pow))?;
    }

    #[test]
    fn logical((op, (a, b)) in (select(vec![BinaryOp::LogicalAnd, BinaryOp::LogicalOr, BinaryOp::LogicalXor]), binary_inputs(Vals::Tame, &[DType::Bool, DType::Bool, DType::Bool, DType::F32]))) {
        agree_op(&[a.tensor(), b.tensor()], Op::Binary(op))?;
    }

    #[test]
    fn compare((op, (a, b)) in (select(CMPS.to_vec()), binary_inputs(Vals::NoNan, ALL))) {
        agree_op(&[a.tensor(), b.tensor()], Op::Compare(op))?;
    }

    #[test]
    fn compare_nan((op, (a, b)) in (select(CMPS.to_vec()), binary_inputs(Vals::Wild, ALL))) {
        agree_op(&[a.tensor(), b.tensor()], Op::Compare(op))?;
    }

    #[test]
    fn where_((c, (a, b)) in (
        prop_oneof![3 => shape().prop_flat_map(partner), 1 => shape()].prop_flat_map(|s| spec_of(s, DType::Bool, Vals::Tame)),
        binary_inputs(Vals::Wild, ALL),
    )) {
        let cd = if c.vals.len() % 7 == 3 { DType::F32 } else { DType::Bool };
        let c = Spec { dtype: cd, ..c };
        agree_op(&[c.tensor(), a.tensor(), b.tensor()], Op::Where)?;
    }

    #[test]
    fn cast((x, to) in select(ALL).prop_flat_map(|to| {
        // NaN to bool and ±inf or huge values to int32 are the ignored
        // property below.
        let kind = match to {
            DType::Bool => Vals::WildNoNan,
            DType::I32 => Vals::Finite,
            _ => Vals::Wild,
        };
        (spec(shape(), ALL, kind), Just(to))
    })) {
        agree_op(&[x.tensor()], Op::Cast(to))?;
    }

    #[test]
    fn cast_special((x, to) in (spec(shape(), FLOATS, Vals::Wild), select(vec![DType::Bool, DType::I32]))) {
        agree_op(&[x.tensor()], Op::Cast(to))?;
    }

    #[test]
    fn reshape((x, target) in (
        spec(shape(), ALL, Vals::Wild),
        prop::collection::vec(prop_oneof![6 => 0isize..=7, 1 => Just(-1isize), 1 => Just(-2isize), 1 => Just(13isize)], 0..=5),
    )) {
        let x = x.tensor();
        // Sometimes the same element count as x, in another shape.
        agree("reshape", &[x], |t| t[0].reshape(&target), |t, d| Op::Reshape(vec![]).tolerance(t, d))?;
    }

    #[test]
    fn reshape_valid((x, split, hole) in (spec(shape(), ALL, Vals::Wild), 0usize..=4, any::<bool>())) {
        // The element count regrouped: [n / k, k] for a divisor k, or flat.
        let n = x.vals.len();
        let k = (1..=n.max(1)).rev().find(|k| n % k == 0 && *k <= split.max(1)).unwrap_or(1);
        let target: Vec<isize> = if n == 0 { vec![0, 3] } else if hole { vec![-1, k as isize] } else { vec![(n / k) as isize, k as isize] };
        agree("reshape", &[x.tensor()], |t| t[0].reshape(&target), |t, d| Op::Reshape(vec![]).tolerance(t, d))?;
    }

    #[test]
    fn transpose((x, perm) in spec(shape(), ALL, Vals::Wild).prop_flat_map(|x| {
        let r = x.shape.len();
        let good = Just((0..r).collect::<Vec<usize>>()).prop_shuffle().boxed();
        let bad = prop::collection::vec(0usize..=5, 0..=5).boxed();
        (Just(x), prop_oneof![3 => good, 1 => bad])
    })) {
        agree_op(&[x.tensor()], Op::Permute(perm))?;
    }

    #[test]
    fn broadcast_to((x, target) in spec(shape(), ALL, Vals::Wild).prop_flat_map(|x| {
        let s = x.shape.clone();
        // Grow: leading dimensions added, 1s expanded; or anything.
        let grown = (prop::collection::vec(dim(), 0..=2), prop::collection::vec(dim(), s.len()))
            .prop_map(move |(lead, new)| {
                let mut t = lead;
                t.extend(s.iter().zip(&new).map(|(&d, &n)| if d == 1 { n } else { d }));
                t
            })
            .boxed();
        (Just(x), prop_oneof![3 => grown, 1 => shape().boxed()])
    })) {
        agree_op(&[x.tensor()], Op::BroadcastTo(target))?;
    }

    #[test]
    fn slice((x, begin, size) in spec(shape(), ALL, Vals::Wild).prop_flat_map(|x| {
        let r = x.shape.len();
        let per_dim: Vec<BoxedStrategy<(usize, usize)>> = x
            .shape
            .iter()
            .map(|&d| {
                prop_oneof![
                    4 => (0..=d).prop_flat_map(move |b| (Just(b), 0..=d - b)),
                    1 => (0usize..=9, 0usize..=9),
                ]
                .boxed()
            })
            .collect();
        let rank_off = prop_oneof![6 => Just(0isize), 1 => Just(1isize), 1 => Just(-1isize)];
        (Just(x), per_dim, rank_off).prop_map(move |(x, bs, off)| {
            let (mut b, mut s): (Vec<usize>, Vec<usize>) = bs.into_iter().unzip();
            if off > 0 {
                b.push(0);
                s.push(1);
            } else if off < 0 && r > 0 {
                b.pop();
                s.pop();
            }
            (x, b, s)
        })
    })) {
        agree_op(&[x.tensor()], Op::Slice { begin, size })?;
    }

    #[test]
    fn slice_huge((x, i, big) in spec(shape_r(1..=4), ALL, Vals::Tame).prop_flat_map(|x| {
        let r = x.shape.len();
        (Just(x), 0..r, select(vec![usize::MAX, usize::MAX - 1, usize::MAX / 2 + 1, 1 << 40]))
    }), on_begin in any::<bool>()) {
        let mut begin = vec![0; x.shape.len()];
        let mut size = x.shape.clone();
        if on_begin { begin[i] = big } else { size[i] = big }
        agree_op(&[x.tensor()], Op::Slice { begin, size })?;
    }

    #[test]
    fn concat((parts, axis) in (shape_r(1..=4), select(ALL), 1usize..=3, axis()).prop_flat_map(|(s, d, n, axis)| {
        let r = s.len();
        let parts: Vec<BoxedStrategy<Spec>> = (0..n)
            .map(|_| {
                let s = s.clone();
                let ax = norm(axis, r);
                (dim(), prop::bool::weighted(0.1), prop::bool::weighted(0.05), select(ALL))
                    .prop_flat_map(move |(len, odd, other_dt, d2)| {
                        let mut s = s.clone();
                        s[ax] = len;
                        if odd {
                            // A mismatch outside the axis (or a rank change).
                            let j = (ax + 1) % r;
                            if j == ax { s.push(2) } else { s[j] += 1 }
                        }
                        spec_of(s, if other_dt { d2 } else { d }, Vals::Wild)
                    })
                    .boxed()
            })
            .collect();
        (parts, Just(axis))
    })) {
        let ts: Vec<Tensor> = parts.iter().map(Spec::tensor).collect();
        agree("concat", &ts, |t| ops::layout::concat(t, axis), |t, d| Op::Concat { axis: 0 }.tolerance(t, d))?;
    }

    #[test]
    fn gather((x, idx, axis) in (spec(shape(), ALL, Vals::Wild), axis()).prop_flat_map(|(x, axis)| {
        let ax = norm(axis, x.shape.len());
        let d = if x.shape.is_empty() { 3 } else { x.shape[ax] as i32 };
        // Mostly in range; sometimes -1 or past the end, except where the
        // output is empty (the ignored property below).
        let empty_out = x.shape.iter().enumerate().any(|(i, &n)| i != ax && n == 0);
        let (lo, hi) = if empty_out { (0, d.max(1)) } else { (-1, d + 1) };
        // No index is in range of an empty axis: then only empty indices.
        let ishape = if empty_out && d == 0 { Just(vec![0]).boxed() } else { shape_r(0..=2).boxed() };
        let idx = prop_oneof![
            6 => indices(ishape.clone(), 0, d.max(1)),
            1 => indices(ishape, lo, hi),
            1 => spec(shape_r(0..=1), &[DType::F32], Vals::Tame),
        ];
        (Just(x), idx, Just(axis))
    })) {
        agree("gather", &[x.tensor(), idx.tensor()], |t| ops::layout::gather(t[0], t[1], axis), |t, d| Op::Gather { axis: 0 }.tolerance(t, d))?;
    }

    #[test]
    fn gather_empty_output_bad_index((x, idx, axis) in (shape_r(2..=4), select(ALL), 0usize..4).prop_flat_map(|(mut s, d, zero)| {
        let r = s.len();
        let axis = (zero + 1) % r;
        s[zero % r] = 0;
        s[axis] = s[axis].max(1);
        let n = s[axis] as i32;
        (spec_of(s, d, Vals::Tame), indices(shape_r(1..=2), -2, n + 2), Just(axis as isize))
    })) {
        agree("gather", &[x.tensor(), idx.tensor()], |t| ops::layout::gather(t[0], t[1], axis), |t, d| Op::Gather { axis: 0 }.tolerance(t, d))?;
    }

    #[test]
    fn one_hot((idx, depth, on, off, dtype) in (
        prop_oneof![4 => indices(shape_r(0..=3), -2, 9), 1 => spec(shape_r(0..=2), &[DType::F32, DType::Bool], Vals::Tame)],
        0usize..=7,
        value(Vals::Wild),
        value(Vals::Wild),
        select(ALL),
    )) {
        let (on, off) = (on as f64, off as f64);
        agree_op(&[idx.tensor()], Op::OneHot { depth, on, off, dtype })?;
    }

    #[test]
    fn matmul((a, b, ta, tb) in (
        shape_r(0..=2), dim(), dim(), dim(), prop::bool::weighted(0.15), dim(), any::<bool>(), any::<bool>(), select(FLOATS), prop::bool::weighted(0.05),
    ).prop_flat_map(|(batch, m, k, n, bad_k, k2, ta, tb, d, low_rank)| {
        let k2 = if bad_k { k2 } else { k };
        let mut sa = batch.clone();
        sa.extend(if ta { [k, m] } else { [m, k] });
        let mut sb: Vec<usize> = batch.iter().map(|&x| if x % 2 == 0 { x } else { 1 }).collect();
        sb.extend(if tb { [n, k2] } else { [k2, n] });
        if low_rank {
            sa = sa[sa.len() - 1..].to_vec();
        }
        (spec_of(sa, d, Vals::Tame), spec_of(sb, d, Vals::Tame), Just(ta), Just(tb))
    })) {
        agree_op(&[a.tensor(), b.tensor()], Op::MatMul { ta, tb })?;
    }

    #[test]
    fn conv2d((x, f, strides, padding, dilations) in (
        (0usize..=2, dim(), dim(), 1usize..=4, 1usize..=3),
        (1usize..=4, 1usize..=4, 1usize..=3, prop::bool::weighted(0.1)),
        (0usize..=3, 0usize..=3), padding(), (1usize..=2, 1usize..=2), select(FLOATS),
    ).prop_flat_map(|((n, h, w, cin, groups), (kh, kw, cout_per, bad_c), strides, padding, dil, d)| {
        let c = cin * groups;
        let fin = if bad_c { cin + 1 } else { cin };
        let x = spec_of(vec![n, h, w, c], d, Vals::Tame);
        let f = spec_of(vec![kh, kw, fin, cout_per * groups], d, Vals::Tame);
        (x, f, Just([strides.0, strides.1]), Just(padding), Just([dil.0, dil.1]))
    })) {
        agree(
            "conv2d",
            &[x.tensor(), f.tensor()],
            |t| ops::conv::conv2d(t[0], t[1], strides, padding, dilations),
            |t, d| {
                let groups = t[0].shape()[3] / t[1].shape()[2];
                Op::Conv2d(wgflow::ops::conv::Conv2d { strides, padding, dilations, groups }).tolerance(t, d)
            },
        )?;
    }

    #[test]
    fn pool((x, max, ksize, strides, padding) in (
        prop_oneof![4 => shape_r(4..=4), 1 => shape_r(2..=3)],
        any::<bool>(), (0usize..=9, 0usize..=9), (0usize..=3, 1usize..=3), padding(), select(FLOATS),
    ).prop_flat_map(|(s, max, k, st, p, d)| {
        (spec_of(s, d, Vals::NoNan), Just(max), Just([k.0.max(1), k.1]), Just([st.0, st.1]), Just(p))
    })) {
        pool_case(x, max, ksize, strides, padding)?;
    }

    #[test]
    fn pool_nan((x, max, ksize, strides, padding) in (
        shape_r(4..=4), any::<bool>(), (1usize..=4, 1usize..=4), (1usize..=3, 1usize..=3), padding(), select(FLOATS),
    ).prop_flat_map(|(s, max, k, st, p, d)| {
        (spec_of(s, d, Vals::Tame), Just(max), Just([k.0, k.1]), Just([st.0, st.1]), Just(p))
    })) {
        pool_case(x, max, ksize, strides, padding)?;
    }

    #[test]
    fn reduce((x, op, axes, keepdims) in (
        select(vec![ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod]),
        shape(), select(ALL),
        prop::option::weighted(0.8, prop::collection::vec(axis(), 0..=3)),
        any::<bool>(),
    ).prop_flat_map(|(op, s, d, axes, keepdims)| {
        // NaN in max and min is the ignored property below.
        let kind = match op {
            ReduceOp::Prod => Vals::Near1,
            ReduceOp::Max | ReduceOp::Min => Vals::NoNan,
            _ => Vals::Tame,
        };
        (spec_of(s, d, kind), Just(op), Just(axes), Just(keepdims))
    })) {
        let axes2 = axes.clone();
        let f = move |t: &[&Tensor]| {
            let a = axes.as_deref();
            match op {
                ReduceOp::Sum => ops::reduce::reduce_sum(t[0], a, keepdims),
                ReduceOp::Mean => ops::reduce::reduce_mean(t[0], a, keepdims),
                ReduceOp::Max => ops::reduce::reduce_max(t[0], a, keepdims),
                ReduceOp::Min => ops::reduce::reduce_min(t[0], a, keepdims),
                _ => ops::reduce::reduce_prod(t[0], a, keepdims),
            }
        };
        agree(op.name(), &[x.tensor()], f, move |t, d| {
            let r = t[0].rank();
            let mut norm_axes: Vec<usize> = match &axes2 {
                None => (0..r).collect(),
                Some(a) => a.iter().map(|&a| norm(a, r)).collect(),
            };
            norm_axes.sort();
            Op::Reduce { op, axes: norm_axes, keepdims }.tolerance(t, d)
        })?;
    }

    #[test]
    fn reduce_max_min_nan((x, max, axes, keepdims) in (
        shape(), select(FLOATS), any::<bool>(), prop::option::weighted(0.8, prop::collection::vec(axis(), 0..=3)), any::<bool>(),
    ).prop_flat_map(|(s, d, max, axes, keepdims)| (spec_of(s, d, Vals::Tame), Just(max), Just(axes), Just(keepdims)))) {
        let op = if max { ReduceOp::Max } else { ReduceOp::Min };
        let axes2 = axes.clone();
        agree(op.name(), &[x.tensor()], move |t| {
            if max { ops::reduce::reduce_max(t[0], axes.as_deref(), keepdims) } else { ops::reduce::reduce_min(t[0], axes.as_deref(), keepdims) }
        }, move |t, d| {
            let r = t[0].rank();
            let mut a: Vec<usize> = match &axes2 { None => (0..r).collect(), Some(a) => a.iter().map(|&a| norm(a, r)).collect() };
            a.sort();
            Op::Reduce { op, axes: a, keepdims }.tolerance(t, d)
        })?;
    }

    #[test]
    fn argmax((x, axis, max) in (spec(shape(), ALL, Vals::NoNan), axis(), any::<bool>())) {
        agree(
            if max { "argmax" } else { "argmin" },
            &[x.tensor()],
            |t| if max { ops::reduce::argmax(t[0], axis) } else { ops::reduce::argmin(t[0], axis) },
            |t, d| Op::ArgReduce { max, axis: norm(axis, t[0].rank()) }.tolerance(t, d),
        )?;
    }

    #[test]
    fn softmax((x, axis, log) in (spec(shape(), NUMERIC, Vals::Wild), axis(), any::<bool>())) {
        agree(
            if log { "log_softmax" } else { "softmax" },
            &[x.tensor()],
            |t| if log { ops::softmax::log_softmax(t[0], axis) } else { ops::softmax::softmax(t[0], axis) },
            |t, d| Op::Softmax { axis: norm(axis, t[0].rank()), log }.tolerance(t, d),
        )?;
    }

    #[test]
    fn sparse_xent((logits, labels, grad) in (
        prop_oneof![6 => shape_r(2..=2), 1 => shape_r(0..=3)], select(FLOATS), prop::bool::weighted(0.2), prop::bool::weighted(0.1), any::<bool>(),
    ).prop_flat_map(|(s, d, bad_labels, bad_shape, grad)| {
        let n = s.first().copied().unwrap_or(1);
        let c = s.get(1).copied().unwrap_or(1) as i32;
        let ls = if bad_shape { vec![n + 1] } else { vec![n] };
        let labels = if bad_labels { indices(Just(ls), -2, c + 2).boxed() } else { indices(Just(ls), 0, c.max(1)).boxed() };
        (spec_of(s, d, Vals::Tame), labels, Just(grad))
    })) {
        let op = if grad { Op::SparseXentGrad } else { Op::SparseXent };
        agree_op(&[logits.tensor(), labels.tensor()], op)?;
    }
}

fn pool_case(
    x: Spec,
    max: bool,
    ksize: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Result<(), TestCaseError> {
    let p = wgflow::ops::pool::Pool2d {
        max,
        ksize,
        strides,
        padding,
    };
    agree(
        p.name(),
        &[x.tensor()],
        |t| {
            if max {
                ops::pool::max_pool2d(t[0], ksize, strides, padding)
            } else {
                ops::pool::avg_pool2d(t[0], ksize, strides, padding)
            }
        },
        |t, d| Op::Pool(p.clone()).tolerance(t, d),
    )
}
