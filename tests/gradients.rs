//! Gradient rules against finite differences (f64 on the CPU reference),
//! then GPU gradients against CPU gradients (f32) on every adapter.
//!
//! For an op f and inputs x, the checked scalar is L = sum(f(x) * w) with a
//! fixed random w, so every output element carries its own upstream
//! gradient. The numeric gradient is the central difference with h = 1e-6.

mod common;
use common::*;
use wgflow::ops::conv::{self, Padding};
use wgflow::ops::{self, binary, layout, matmul, pool, reduce, softmax, unary::UnaryOp};
use wgflow::{DType, Device, GradientTape, Tensor};

type F = Box<dyn Fn(&[Tensor]) -> wgflow::Result<Tensor>>;

struct Case {
    name: String,
    f: F,
    /// Inputs on the CPU in f64; integer inputs are passed through untouched.
    x: Vec<Tensor>,
}

fn case(name: &str, x: Vec<Tensor>, f: impl Fn(&[Tensor]) -> wgflow::Result<Tensor> + 'static) -> Case {
    Case {
        name: name.into(),
        f: Box::new(f),
        x,
    }
}

fn r64(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed, DType::F64)
}
fn pos64(shape: &[usize], seed: u64) -> Tensor {
    uniform(shape, 0.5, 2.0, seed, DType::F64)
}

/// L = sum(f(x) * w) and its gradients with respect to the float inputs.
fn analytic(c: &Case, x: &[Tensor], w: &Tensor) -> (f64, Vec<Option<Vec<f64>>>) {
    let tape = GradientTape::new();
    for t in x {
        tape.watch(t);
    }
    let y = (c.f)(x).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let l = y
        .mul(&w.cast(y.dtype()).unwrap().to_device(y.device()).unwrap())
        .unwrap()
        .sum(None, false)
        .unwrap();
    let refs: Vec<&Tensor> = x.iter().collect();
    let g = tape
        .gradient_wrt(&l, &refs)
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let gv = g
        .into_iter()
        .zip(x)
        .map(|(g, t)| {
            if t.dtype().is_float() {
                Some(g.map_or(vec![0.0; t.numel()], |g| g.to_f64_vec().unwrap()))
            } else {
                None
            }
        })
        .collect();
    (l.item().unwrap(), gv)
}

fn loss(c: &Case, x: &[Tensor], w: &Tensor) -> f64 {
    let y = (c.f)(x).unwrap();
    y.mul(w).unwrap().sum(None, false).unwrap().item().unwrap()
}

fn check_numeric(c: &Case) {
    let y = (c.f)(&c.x).unwrap();
    let w = r64(y.shape(), 99);
    let (_, grads) = analytic(c, &c.x, &w);
    let h = 1e-6;
    for (k, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        let base = c.x[k].to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let mut xs = c.x.clone();
                xs[k] = Tensor::from_vec(v, c.x[k].shape(), &Device::Cpu).unwrap();
                loss(c, &xs, &w)
            };
            let num = (at(h) - at(-h)) / (2.0 * h);
            let err = (num - g[i]).abs();
            assert!(
                err <= 1e-5 + 1e-5 * num.abs(),
                "{}: d/dx{k}[{i}] analytic {} vs numeric {num} (error {err:e})",
                c.name,
                g[i]
            );
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (i, u) in UnaryOp::ALL.iter().enumerate() {
        let u = *u;
        // Away from kinks (relu, abs, ...) and poles; inside each domain.
        let x = match u {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal | UnaryOp::Log1p => {
                pos64(&[7], i as u64)
            }
            _ => {
                let t = r64(&[7], i as u64);
                let s = t.sign().unwrap().mul_scalar(0.05).unwrap();
                t.add(&s).unwrap().mul_scalar(1.5).unwrap()
            }
        };
        v.push(case(u.name(), vec![x.clone()], move |x| ops::unary::unary(&x[0], u)));
        // Second derivatives: the gradient of sum(f(x) x) as a function of
        // x, whose rule reads x through f' and as its upstream gradient.
        v.push(case(&format!("d/dx {}", u.name()), vec![x], move |x| {
            let tape = GradientTape::new();
            tape.watch(&x[0]);
            let l = ops::unary::unary(&x[0], u)?.mul(&x[0])?.sum(None, false)?;
            let g = tape.gradient_wrt(&l, &[&x[0]])?.remove(0);
            g.ok_or_else(|| wgflow::Error::InvalidArgument {
                op: "test",
                msg: "no gradient".into(),
            })
        }));
    }
    let bops = [
        binary::BinaryOp::Add,
        binary::BinaryOp::Sub,
        binary::BinaryOp::Mul,
        binary::BinaryOp::Div,
        binary::BinaryOp::Pow,
        binary::BinaryOp::Maximum,
        binary::BinaryOp::Minimum,
        binary::BinaryOp::SquaredDifference,
    ];
    for (i, b) in bops.into_iter().enumerate() {
        let (a, c) = if b == binary::BinaryOp::Pow || b == binary::BinaryOp::Div {
            (pos64(&[3, 4], i as u64), pos64(&[4], 50 + i as u64))
        } else {
            (r64(&[3, 4], i as u64), r64(&[4], 50 + i as u64))
        };
        v.push(case(b.name(), vec![a, c], move |x| binary::binary(&x[0], &x[1], b)));
        v.push(case(
            &format!("{} broadcast both", b.name()),
            vec![pos64(&[3, 1], 7 + i as u64), pos64(&[1, 2], 8 + i as u64)],
            move |x| binary::binary(&x[0], &x[1], b),
        ));
    }
    v.push(case(
        "where",
        vec![randbool(&[3, 4], 1), r64(&[3, 4], 2), r64(&[4], 3)],
        |x| binary::where_(&x[0], &x[1], &x[2]),
    ));
    v.push(case("reshape", vec![r64(&[2, 6], 5)], |x| x[0].reshape(&[3, -1])));
    v.push(case("transpose", vec![r64(&[2, 3, 4], 6)], |x| {
        x[0].transpose(&[2, 0, 1])
    }));
    v.push(case("broadcast_to", vec![r64(&[3, 1], 7)], |x| {
        x[0].broadcast_to(&[2, 3, 4])
    }));
    v.push(case("slice", vec![r64(&[4, 5], 8)], |x| x[0].slice(&[1, 2], &[2, 3])));
    v.push(case("concat", vec![r64(&[2, 3], 9), r64(&[2, 1], 10)], |x| {
        layout::concat(&[&x[0], &x[1]], 1)
    }));
    v.push(case("stack", vec![r64(&[3], 11), r64(&[3], 12)], |x| {
        layout::stack(&[&x[0], &x[1]], 0)
    }));
    let idx = Tensor::from_vec(vec![2, 0, 2, 1], &[4], &Device::Cpu).unwrap();
    v.push(case(
        "gather axis 1 (repeated indices)",
        vec![r64(&[2, 3, 2], 13), idx.clone()],
        |x| layout::gather(&x[0], &x[1], 1),
    ));
    v.push(case("gather_grad", vec![idx, r64(&[2, 4, 2], 14)], |x| {
        ops::apply(ops::Op::GatherGrad { axis: 1, dim: 3 }, &[&x[0], &x[1]])
    }));
    v.push(case("pad", vec![r64(&[2, 2], 15)], |x| {
        ops::apply(
            ops::Op::Pad {
                before: vec![1, 0],
                shape: vec![4, 3],
            },
            &[&x[0]],
        )
    }));
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = r64(&if ta { [4, 3] } else { [3, 4] }, 16);
        let b = r64(&if tb { [2, 4] } else { [4, 2] }, 17);
        v.push(case(&format!("matmul ta={ta} tb={tb}"), vec![a, b], move |x| {
            matmul::matmul_t(&x[0], &x[1], ta, tb)
        }));
    }
    v.push(case(
        "matmul batch broadcast",
        vec![r64(&[2, 1, 3, 4], 18), r64(&[3, 4, 2], 19)],
        |x| x[0].matmul(&x[1]),
    ));
    let convs = [
        ([1, 5, 5, 2], [3, 3, 2, 2], [1, 1], Padding::Same, [1, 1]),
        ([2, 6, 5, 2], [2, 3, 2, 3], [2, 1], Padding::Valid, [1, 1]),
        (
            [1, 6, 6, 1],
            [2, 2, 1, 2],
            [1, 1],
            Padding::Explicit {
                top: 1,
                bottom: 0,
                left: 2,
                right: 1,
            },
            [2, 2],
        ),
        ([1, 4, 4, 4], [3, 3, 2, 2], [1, 1], Padding::Same, [1, 1]),
    ];
    for (i, (xs, fs, st, pad, dil)) in convs.into_iter().enumerate() {
        v.push(case(
            &format!("conv2d {i}"),
            vec![r64(&xs, 20 + i as u64), r64(&fs, 30 + i as u64)],
            move |x| conv::conv2d(&x[0], &x[1], st, pad, dil),
        ));
    }
    // The backprop ops are differentiable too (second-order gradients).
    let y = conv::conv2d(
        &r64(&[1, 5, 5, 2], 1),
        &r64(&[3, 3, 2, 2], 2),
        [2, 2],
        Padding::Same,
        [1, 1],
    )
    .unwrap();
    v.push(case(
        "conv2d_backprop_input",
        vec![r64(y.shape(), 40), r64(&[3, 3, 2, 2], 41)],
        |x| conv::conv2d_backprop_input(&[1, 5, 5, 2], &x[1], &x[0], [2, 2], Padding::Same, [1, 1]),
    ));
    v.push(case(
        "conv2d_backprop_filter",
        vec![r64(&[1, 5, 5, 2], 42), r64(y.shape(), 43)],
        |x| conv::conv2d_backprop_filter(&x[0], &[3, 3, 2, 2], &x[1], [2, 2], Padding::Same, [1, 1]),
    ));
    v.push(case("max_pool2d", vec![r64(&[1, 5, 5, 2], 44)], |x| {
        pool::max_pool2d(&x[0], [2, 2], [2, 2], Padding::Same)
    }));
    v.push(case("avg_pool2d", vec![r64(&[2, 5, 4, 1], 45)], |x| {
        pool::avg_pool2d(&x[0], [3, 2], [2, 1], Padding::Same)
    }));
    let ap = pool::Pool2d {
        max: false,
        ksize: [2, 2],
        strides: [1, 1],
        padding: Padding::Valid,
    };
    v.push(case(
        "avg_pool2d_grad",
        vec![r64(&[1, 3, 3, 1], 46), r64(&[1, 2, 2, 1], 47)],
        move |x| pool::pool2d_grad(&x[0], &x[1], &ap),
    ));
    for (i, axes) in [None, Some(vec![1isize]), Some(vec![0, 2])].into_iter().enumerate() {
        let x = r64(&[2, 3, 4], 50 + i as u64);
        for (name, f) in [
            (
                "reduce_sum",
                reduce::reduce_sum as fn(&Tensor, Option<&[isize]>, bool) -> wgflow::Result<Tensor>,
            ),
            ("reduce_mean", reduce::reduce_mean),
            ("reduce_max", reduce::reduce_max),
            ("reduce_min", reduce::reduce_min),
            ("reduce_prod", reduce::reduce_prod),
        ] {
            let ax = axes.clone();
            v.push(case(&format!("{name} {axes:?}"), vec![x.clone()], move |x| {
                f(&x[0], ax.as_deref(), i == 1)
            }));
        }
    }
    // Rows with no zero, one zero and two zeros: each element's gradient
    // is the product of the others (TensorFlow's [6, 0, 0] for [0, 2, 3]).
    let zeros = Tensor::from_vec(
        vec![0.0f64, 2.0, 3.0, 0.0, 0.0, 4.0, 1.5, -2.0, 3.0, 0.5, 0.0, -1.0],
        &[4, 3],
        &Device::Cpu,
    )
    .unwrap();
    for axes in [vec![1isize], vec![0], vec![0, 1]] {
        v.push(case(
            &format!("reduce_prod with zeros {axes:?}"),
            vec![zeros.clone()],
            move |x| reduce::reduce_prod(&x[0], Some(&axes), false),
        ));
    }
    v.push(case("softmax", vec![r64(&[3, 5], 60)], |x| softmax::softmax(&x[0], -1)));
    v.push(case("softmax axis 0", vec![r64(&[3, 5], 61)], |x| {
        softmax::softmax(&x[0], 0)
    }));
    v.push(case("log_softmax", vec![r64(&[2, 3, 4], 62)], |x| {
        softmax::log_softmax(&x[0], 1)
    }));
    let labels = Tensor::from_vec(vec![1, 0, 4], &[3], &Device::Cpu).unwrap();
    v.push(case(
        "sparse_softmax_cross_entropy",
        vec![labels, r64(&[3, 5], 63)],
        |x| softmax::sparse_softmax_cross_entropy_with_logits(&x[0], &x[1]),
    ));
    // A gradient penalty (WGAN-GP): the norm of a two-layer network's input
    // gradient, differentiated with respect to its weights.
    v.push(case(
        "gradient penalty through dense layers",
        vec![r64(&[4, 3], 68), r64(&[3, 5], 69), r64(&[5, 1], 70)],
        |x| {
            let tape = GradientTape::new();
            tape.watch(&x[0]);
            let h = x[0].matmul(&x[1])?.tanh()?.matmul(&x[2])?.softplus()?;
            let g = tape.gradient_wrt(&h.sum(None, false)?, &[&x[0]])?.remove(0);
            let g = g.ok_or_else(|| wgflow::Error::InvalidArgument {
                op: "test",
                msg: "no gradient".into(),
            })?;
            g.square()?.sum(Some(&[1]), false)?.sqrt()?.add_scalar(-1.0)?.square()
        },
    ));
    // Its second derivative: the gradient rule's own gradient, with the
    // logits also scaling the upstream gradient.
    let labels = Tensor::from_vec(vec![2, 0, 3], &[3], &Device::Cpu).unwrap();
    v.push(case(
        "d/dz sparse_softmax_cross_entropy",
        vec![labels, r64(&[3, 5], 67)],
        |x| {
            let tape = GradientTape::new();
            tape.watch(&x[1]);
            let l = softmax::sparse_softmax_cross_entropy_with_logits(&x[0], &x[1])?
                .mul(&x[1].sum(Some(&[-1]), false)?)?
                .sum(None, false)?;
            let g = tape.gradient_wrt(&l, &[&x[1]])?.remove(0);
            g.ok_or_else(|| wgflow::Error::InvalidArgument {
                op: "test",
                msg: "no gradient".into(),
            })
        },
    ));
    v.push(case(
        "chain: dense + relu + mean",
        vec![r64(&[4, 3], 64), r64(&[3, 2], 65), r64(&[2], 66)],
        |x| x[0].matmul(&x[1])?.add(&x[2])?.relu()?.mean(None, false),
    ));
    v
}

#[test]
fn gradients_match_finite_differences() {
    let all = cases();
    let n = all.len();
    for c in &all {
        check_numeric(c);
    }
    eprintln!("{n} gradient rules checked against finite differences");
}

#[test]
fn gpu_gradients_match_cpu_gradients() {
    let gpus = gpus();
    for c in cases() {
        let x32: Vec<Tensor> =
            c.x.iter()
                .map(|t| {
                    if t.dtype() == DType::F64 {
                        t.cast(DType::F32).unwrap()
                    } else {
                        t.clone()
                    }
                })
                .collect();
        let y = (c.f)(&x32).unwrap();
        let w = randn(y.shape(), 98, DType::F32);
        let (_, want) = analytic(&c, &x32, &w);
        for g in &gpus {
            let xg: Vec<Tensor> = x32.iter().map(|t| t.to_device(g).unwrap()).collect();
            let (_, got) = analytic(&c, &xg, &w);
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                let (Some(a), Some(b)) = (a, b) else { continue };
                let tol = ops::Tol::new(1e-4, 1e-4);
                let (max, ok) = tol.check(a, b);
                assert!(ok, "{} on {g}: gradient of input {k} differs by {max:e}", c.name);
            }
        }
    }
}

#[test]
fn higher_order_gradients_through_nested_tapes() {
    // d2/dx2 of x^3 = 6x
    let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3], &Device::Cpu).unwrap();
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    let y = x.mul(&x).unwrap().mul(&x).unwrap().sum(None, false).unwrap();
    let dy = inner.gradient_wrt(&y, &[&x]).unwrap()[0].clone().unwrap();
    assert_eq!(dy.to_vec::<f64>().unwrap(), vec![0.75, 3.0, 12.0]);
    let d2 = outer.gradient_wrt(&dy.sum(None, false).unwrap(), &[&x]).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(d2.to_vec::<f64>().unwrap(), vec![3.0, -6.0, 12.0]);
}
