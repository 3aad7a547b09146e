//! `wgflow::function`: tracing, retracing, replay semantics (arguments,
//! variables, random ops, side effects), dead-op elimination, the fused
//! kernels a compiled graph generates (checked against the CPU reference on
//! awkward shapes, on every device), and training steps traced versus
//! eager, by hand and through Keras' `fit`, `evaluate` and `predict`.

mod common;
use common::*;
use std::cell::Cell;
use wgflow::function::{Traced, function};
use wgflow::nn::layers::Dense;
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::{Adam, Optimizer, RMSprop, SGD};
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, GradientTape, Result, Tensor, Variable, ops};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpus());
    d
}

fn on(x: &[Tensor], d: &Device) -> Vec<Tensor> {
    x.iter().map(|t| t.to_device(d).unwrap()).collect()
}

/// |a - b| <= tol (1 + |b|) everywhere.
fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i} is {a}, want {b} (tolerance {tol})"
        );
    }
}

type Body = fn(&[Tensor]) -> Result<Vec<Tensor>>;

/// Expressions whose compiled graphs use generated kernels: pre ops with
/// broadcasting, sibling reductions, epilogues, both reduction strategies,
/// dependent reductions, gradients. (name, input shapes, body, fused kernels
/// expected at least).
fn cases() -> Vec<(&'static str, Vec<Vec<usize>>, Body, usize)> {
    vec![
        (
            "broadcast chain [3,1] [1,5] [5]",
            vec![vec![3, 1], vec![1, 5], vec![5]],
            |x| Ok(vec![x[0].mul(&x[1])?.add(&x[2])?.tanh()?.sub(&x[0])?.square()?]),
            1,
        ),
        (
            "prime shapes [7,13] [13]",
            vec![vec![7, 13], vec![13]],
            |x| {
                let a = x[0].sub(&x[1])?.relu()?.mul_scalar(0.5)?;
                Ok(vec![a.add(&x[0].abs()?.sqrt()?)?, a.sigmoid()?])
            },
            1,
        ),
        (
            "size one [1] []",
            vec![vec![1], vec![]],
            |x| Ok(vec![x[0].mul(&x[1])?.add_scalar(1.0)?.exp()?]),
            1,
        ),
        (
            "sum and mean over middle axes, epilogue",
            vec![vec![3, 4, 5, 2]],
            |x| {
                let sq = x[0].square()?;
                Ok(vec![
                    sq.sum(Some(&[1, 2]), false)?.mul_scalar(2.0)?,
                    x[0].mean(Some(&[1, 2]), false)?,
                ])
            },
            1,
        ),
        (
            "sibling max min mean [6,11]",
            vec![vec![6, 11]],
            |x| {
                let e = x[0].exp()?;
                Ok(vec![
                    e.max(Some(&[1]), false)?,
                    x[0].min(Some(&[1]), false)?,
                    e.mean(Some(&[1]), true)?.add_scalar(1.0)?,
                ])
            },
            1,
        ),
        (
            "long rows: workgroup reductions [3,1000] [2000]",
            vec![vec![3, 1000], vec![2000]],
            |x| {
                Ok(vec![
                    x[0].square()?.sum(Some(&[1]), false)?,
                    x[1].mul_scalar(0.5)?.exp()?.mean(None, false)?.mul_scalar(3.0)?,
                    // All negative: the maximum's identity must not leak in.
                    x[0].sub_scalar(10.0)?.abs()?.neg()?.max(Some(&[1]), false)?,
                    x[0].add_scalar(10.0)?.abs()?.min(Some(&[1]), true)?,
                ])
            },
            2,
        ),
        (
            "inner axis kept [4,9,3]",
            vec![vec![4, 9, 3]],
            |x| {
                let s = x[0].abs()?.sum(Some(&[1]), true)?;
                Ok(vec![s.mul_scalar(2.0)?, x[0].div(&s.add_scalar(1.0)?)?])
            },
            1,
        ),
        (
            "softmax from parts [5,37]",
            vec![vec![5, 37]],
            |x| {
                let m = x[0].max(Some(&[1]), true)?;
                let e = x[0].sub(&m)?.exp()?;
                let s = e.sum(Some(&[1]), true)?;
                Ok(vec![e.div(&s)?])
            },
            2,
        ),
        (
            "gradient through a tape [4,3]",
            vec![vec![4, 3]],
            |x| {
                let tape = GradientTape::new();
                tape.watch(&x[0]);
                let y = x[0].sigmoid()?.mul(&x[0])?.add(&x[0].tanh()?)?.sum(None, false)?;
                let g = tape.gradient_wrt(&y, &[&x[0]])?;
                Ok(vec![y, g[0].clone().unwrap()])
            },
            1,
        ),
        (
            "zero-size [0,4] [4]",
            vec![vec![0, 4], vec![4]],
            |x| {
                let a = x[0].add(&x[1])?.square()?;
                Ok(vec![a.clone(), a.sum(Some(&[0]), false)?])
            },
            0,
        ),
    ]
}

#[test]
fn fused_kernels_match_the_cpu_reference() {
    // Both kernel families: reductions take a workgroup per output on a
    // GPU, an invocation per output on CPU adapters (but the longest).
    for cpu_style in [false, true] {
        wgflow::runtime::wgpu::force_cpu_style_kernels(Some(cpu_style));
        fused_cases_match();
    }
    wgflow::runtime::wgpu::force_cpu_style_kernels(None);
}

fn fused_cases_match() {
    for (ci, (name, shapes, body, min_fused)) in cases().into_iter().enumerate() {
        let inputs = |seed: u64| -> Vec<Tensor> {
            shapes
                .iter()
                .enumerate()
                .map(|(k, s)| randn(s, seed * 10 + k as u64, DType::F32))
                .collect()
        };
        for d in devices() {
            let mut traced = Traced::new(name);
            for call in 0..3u64 {
                let x = inputs(ci as u64 * 100 + call);
                let want = body(&x).unwrap();
                let got = traced.call(&on(&x, &d), body).unwrap();
                assert_eq!(got.len(), want.len(), "{name} on {d}: outputs");
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_close(g, w, 1e-4, &format!("{name} on {d}, call {call}, output {k}"));
                }
            }
            assert_eq!(traced.trace_count(), 1, "{name} on {d}: one trace");
            let stats = traced.graph(&on(&inputs(0), &d)).unwrap().stats();
            assert!(
                stats.fused_kernels >= min_fused,
                "{name} on {d}: {stats:?}, want at least {min_fused} fused kernels"
            );
        }
    }
}

#[test]
fn new_signatures_retrace_and_side_effects_happen_while_tracing() {
    let traces = Cell::new(0);
    let mut f = function(|x: &[Tensor]| {
        traces.set(traces.get() + 1);
        Ok(vec![x[0].mul_scalar(2.0)?])
    });
    let d = Device::Cpu;
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
    let b = Tensor::from_vec(vec![4.0f32, 5.0, 6.0], &[3], &d).unwrap();
    assert_eq!(
        f.call(&[a.clone()]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![2.0, 4.0, 6.0]
    );
    assert_eq!(f.call(&[b]).unwrap()[0].to_vec::<f32>().unwrap(), vec![8.0, 10.0, 12.0]);
    assert_eq!((f.trace_count(), traces.get()), (1, 1), "same signature: replayed");
    let longer = Tensor::from_vec(vec![1.0f32; 4], &[4], &d).unwrap();
    f.call(&[longer]).unwrap();
    let f64s = a.cast(DType::F64).unwrap();
    assert_eq!(f.call(&[f64s]).unwrap()[0].dtype(), DType::F64);
    let matrix = Tensor::from_vec(vec![1.0f32; 4], &[2, 2], &d).unwrap();
    assert_eq!(f.call(&[matrix]).unwrap()[0].shape(), &[2, 2]);
    assert_eq!((f.trace_count(), traces.get()), (4, 4), "shape, dtype and rank retrace");
    assert!(f.graph(&[a]).is_some());
}

#[test]
fn a_graph_rejects_arguments_it_was_not_traced_for() {
    let d = Device::Cpu;
    let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
    let scope = wgflow::function::TraceScope::begin(std::slice::from_ref(&a)).unwrap();
    let y = a.mul(&a).unwrap();
    let mut graph = scope.finish(std::slice::from_ref(&a), &[y]).unwrap();
    let other = Tensor::from_vec(vec![1i32, 2], &[2], &d).unwrap();
    match graph.run(&[other]) {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "function");
            assert!(msg.contains("traced for") && msg.contains("I32"), "{msg}");
        }
        r => panic!("expected an error naming the signatures, got {:?}", r.map(|_| ())),
    }
    let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &d).unwrap();
    assert_eq!(graph.run(&[b]).unwrap()[0].to_vec::<f32>().unwrap(), vec![9.0, 16.0]);
}

#[test]
fn reading_a_traced_value_is_an_error_that_explains_why() {
    for d in devices() {
        let mut f = function(|x: &[Tensor]| {
            let s = x[0].sum(None, false)?;
            // Control flow on a value the trace computes: refused.
            if s.item()? > 0.0 {
                Ok(vec![x[0].clone()])
            } else {
                Ok(vec![x[0].neg()?])
            }
        });
        let x = Tensor::from_vec(vec![1.0f32, -3.0], &[2], &d).unwrap();
        match f.call(std::slice::from_ref(&x)) {
            Err(e @ Error::ReadInTrace { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("tracing") && msg.contains("where_"), "{msg}");
            }
            r => panic!("{d}: expected ReadInTrace, got {:?}", r.map(|_| ())),
        }
        // The failed trace leaves nothing recording: eager code and new traces work.
        assert_eq!(x.sum(None, false).unwrap().item().unwrap(), -2.0);
        let mut g = function(|x: &[Tensor]| Ok(vec![x[0].abs()?]));
        assert_eq!(g.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![1.0, 3.0]);
    }
}

#[test]
fn variables_are_read_and_assigned_on_every_call() {
    for d in devices() {
        let v = Variable::new(ops::zeros(&[2], DType::F32, &d).unwrap(), "acc");
        let mut f = function(|x: &[Tensor]| {
            v.assign(&v.value().add(&x[0])?)?;
            // A read after the assignment sees the new value.
            Ok(vec![v.value().mul_scalar(10.0)?])
        });
        let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
        for k in 1..=4 {
            let out = f.call(std::slice::from_ref(&x)).unwrap();
            let want = vec![k as f32, 2.0 * k as f32];
            assert_eq!(v.value().to_vec::<f32>().unwrap(), want, "{d}: after call {k}");
            let scaled: Vec<f32> = want.iter().map(|w| w * 10.0).collect();
            assert_eq!(out[0].to_vec::<f32>().unwrap(), scaled);
        }
        // An assignment outside is seen by the next replay.
        v.assign(&Tensor::from_vec(vec![100.0f32, 0.0], &[2], &d).unwrap())
            .unwrap();
        f.call(&[x]).unwrap();
        assert_eq!(v.value().to_vec::<f32>().unwrap(), vec![101.0, 2.0]);
        assert_eq!(f.trace_count(), 1);
    }
}

#[test]
fn a_call_that_fails_while_tracing_leaves_variables_untouched() {
    for d in devices() {
        let v = Variable::new(ops::ones(&[3], DType::F32, &d).unwrap(), "v");
        let w = Variable::new(ops::ones(&[2], DType::F32, &d).unwrap(), "w");
        let mut f = function(|x: &[Tensor]| {
            v.assign(&v.value().add(&x[0])?)?;
            w.assign(&w.value().mul_scalar(5.0)?)?;
            v.assign(&v.value().add(&x[0])?)?;
            // [3] x [3] is no matrix product: the trace fails here.
            Ok(vec![x[0].matmul(&x[0])?])
        });
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
        let err = f.call(std::slice::from_ref(&x)).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{d}: {err:?}");
        assert_eq!(
            v.value().to_vec::<f32>().unwrap(),
            vec![1.0, 1.0, 1.0],
            "{d}: v untouched"
        );
        assert_eq!(w.value().to_vec::<f32>().unwrap(), vec![1.0, 1.0], "{d}: w untouched");
        // A scope dropped before its end puts assigned variables back too.
        let scope = wgflow::function::TraceScope::begin(std::slice::from_ref(&x)).unwrap();
        v.assign(&x).unwrap();
        drop(scope);
        assert_eq!(
            v.value().to_vec::<f32>().unwrap(),
            vec![1.0, 1.0, 1.0],
            "{d}: scope dropped"
        );
    }
}

#[test]
fn one_tensor_passed_for_two_arguments_is_two_inputs() {
    for d in devices() {
        let mut f = function(|a: &[Tensor]| Ok(vec![a[0].sub(&a[1])?.mul(&a[0])?]));
        let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
        let y = Tensor::from_vec(vec![5.0f32, 7.0], &[2], &d).unwrap();
        // An autoencoder's step: the input is also the target.
        let same = f.call(&[x.clone(), x.clone()]).unwrap();
        assert_eq!(same[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0], "{d}");
        let diff = f.call(&[x.clone(), y.clone()]).unwrap();
        assert_eq!(
            diff[0].to_vec::<f32>().unwrap(),
            vec![-4.0, -10.0],
            "{d}: the replay keeps them apart"
        );
        let again = f.call(&[y.clone(), y]).unwrap();
        assert_eq!(again[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0], "{d}");
        assert_eq!(f.trace_count(), 1, "{d}");
    }
}

#[test]
fn random_ops_draw_new_numbers_on_every_call() {
    for d in devices() {
        let dev = d.clone();
        let mut f = function(move |x: &[Tensor]| {
            let r = ops::random_normal(&[64], 0.0, 1.0, DType::F32, 7, &dev)?;
            Ok(vec![r.add(&x[0])?])
        });
        let x = ops::zeros(&[64], DType::F32, &d).unwrap();
        let a = f.call(std::slice::from_ref(&x)).unwrap()[0].to_vec::<f32>().unwrap();
        let b = f.call(std::slice::from_ref(&x)).unwrap()[0].to_vec::<f32>().unwrap();
        let c = f.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap();
        assert!(a != b && b != c && a != c, "{d}: every call draws anew");
        let mean = c.iter().sum::<f32>() / 64.0;
        assert!(mean.abs() < 0.5, "{d}: still standard normal (mean {mean})");
    }
}

#[test]
fn dead_ops_are_dropped_and_elementwise_chains_fuse() {
    for d in devices() {
        let mut f = function(|x: &[Tensor]| {
            let _unused = x[0].exp()?.matmul(&x[0].transpose(&[1, 0])?)?;
            Ok(vec![x[0].mul_scalar(2.0)?.add_scalar(1.0)?.relu()?])
        });
        let x = randn(&[4, 4], 3, DType::F32).to_device(&d).unwrap();
        f.call(std::slice::from_ref(&x)).unwrap();
        let s = f.graph(&[x]).unwrap().stats();
        assert!(s.traced_ops >= 7, "{d}: {s:?}");
        assert_eq!((s.ops, s.fused_kernels), (1, 1), "{d}: one kernel, no matmul: {s:?}");
    }
}

/// A trace's GraphDef is plain data (no device, buffer or closure): ops with
/// their attributes, variables by name, the optimizer's learning rate and
/// step as host inputs, a captured tensor as a capture; and the executable
/// compiled from it drops the dead op the def keeps.
#[test]
fn the_graph_def_is_plain_data_with_variables_by_name_and_host_inputs() {
    fn plain<T: Send + Sync + Clone + PartialEq + std::fmt::Debug + 'static>() {}
    plain::<wgflow::function::GraphDef>();
    use wgflow::function::Feed;
    for d in devices() {
        let w = Variable::new(ops::ones(&[3], DType::F32, &d).unwrap(), "dense/kernel");
        let scale = Tensor::from_vec(vec![2.0f32, 3.0, 4.0], &[3], &d).unwrap();
        let mut opt = SGD::new(0.1);
        let vars = [w.clone()];
        let mut f = function(|x: &[Tensor]| {
            let tape = GradientTape::new();
            let _dead = x[0].exp()?;
            let loss = w.value().mul(&x[0])?.mul(&scale)?.sum(None, false)?;
            let grads = tape.gradient(&loss, &[&w])?;
            opt.apply_gradients(&grads, &vars)?;
            Ok(vec![loss])
        });
        let x = Tensor::from_vec(vec![1.0f32, 1.0, 1.0], &[3], &d).unwrap();
        let first = f.call(std::slice::from_ref(&x)).unwrap()[0].item().unwrap();
        let second = f.call(std::slice::from_ref(&x)).unwrap()[0].item().unwrap();
        assert_eq!(first, 9.0, "{d}");
        // w -= 0.1 * x * scale: 9 - 0.1 * (4 + 9 + 16)
        assert!((second - (9.0 - 0.1 * 29.0)).abs() < 1e-5, "{d}: {second}");
        let g = f.graph(&[x]).unwrap();
        let def = g.def().clone();
        assert_eq!(def.variables.len(), 1, "{d}: {:?}", def.variables);
        assert_eq!(def.variables[0].name, "dense/kernel");
        assert!(def.variables[0].trainable);
        assert_eq!(def.assigns.len(), 1, "{d}: the update assigns the variable");
        assert_eq!(def.arguments().len(), 1);
        let hosts = def.feeds.iter().filter(|(_, f)| matches!(f, Feed::Host(_))).count();
        assert!(hosts >= 1, "{d}: the learning rate is a host input: {:?}", def.feeds);
        assert_eq!(hosts, def.host_inputs.len());
        assert!(
            def.feeds.iter().any(|(_, f)| matches!(f, Feed::Capture(_))),
            "{d}: `scale` is captured: {:?}",
            def.feeds
        );
        assert!(
            def.nodes.iter().any(|n| n.op.name() == "exp"),
            "{d}: the def keeps what was traced"
        );
        assert!(def.nodes.iter().all(|n| n.device == d.to_string()), "{d}");
        for n in &def.nodes {
            for &v in n.inputs.iter().chain(&n.outputs) {
                assert!(def.values[v].concrete().is_some());
            }
        }
        assert!(
            g.stats().ops < def.nodes.len(),
            "{d}: compiled {:?} from {} nodes",
            g.stats(),
            def.nodes.len()
        );
    }
}

/// The seed document's linear regression: the whole step (forward, loss,
/// gradients, both updates) compiles to one kernel and matches eager.
#[test]
fn linear_regression_step_is_one_kernel_and_matches_eager() {
    for d in devices() {
        let x = Tensor::from_vec(vec![0.0f32, 0.25, 0.5, 0.75, 1.0], &[5], &d).unwrap();
        let y = Tensor::from_vec(vec![0.0f32, 0.36, 0.55, 0.82, 1.0], &[5], &d).unwrap();
        let run = |traced: bool| -> (f64, f64, Option<wgflow::function::GraphStats>) {
            let a = Variable::new(ops::zeros(&[], DType::F32, &d).unwrap(), "a");
            let b = Variable::new(ops::zeros(&[], DType::F32, &d).unwrap(), "b");
            let vars = [a.clone(), b.clone()];
            let mut opt = SGD::new(5e-2);
            let mut step = |args: &[Tensor]| -> Result<Vec<Tensor>> {
                let tape = GradientTape::new();
                let pred = a.value().mul(&args[0])?.add(&b.value())?;
                let loss = pred.sub(&args[1])?.square()?.sum(None, false)?.mul_scalar(0.5)?;
                let grads = tape.gradient(&loss, &[&a, &b])?;
                opt.apply_gradients(&grads, &vars)?;
                Ok(vec![loss])
            };
            let args = [x.clone(), y.clone()];
            let mut stats = None;
            if traced {
                let mut f = function(&mut step);
                for _ in 0..200 {
                    f.call(&args).unwrap();
                }
                stats = Some(f.graph(&args).unwrap().stats());
            } else {
                for _ in 0..200 {
                    step(&args).unwrap();
                }
            }
            (a.value().item().unwrap(), b.value().item().unwrap(), stats)
        };
        let (ea, eb, _) = run(false);
        let (ta, tb, stats) = run(true);
        assert!(
            (ea - ta).abs() < 1e-5 && (eb - tb).abs() < 1e-5,
            "{d}: eager ({ea}, {eb}) traced ({ta}, {tb})"
        );
        assert!(ea > 0.5, "{d}: trained ({ea})");
        let s = stats.unwrap();
        assert_eq!((s.ops, s.fused_kernels), (1, 1), "{d}: {s:?}");
    }
}

fn toy(n: usize, seed: u64) -> (Tensor, Tensor) {
    let x = ops::random_normal(&[n, 4], 0.0, 1.0, DType::F32, seed, &Device::Cpu).unwrap();
    let y = x.argmax(-1).unwrap();
    (x, y)
}

fn mlp(device: &Device) -> Sequential {
    set_random_seed(21);
    let mut m = Sequential::new()
        .add(Dense::new(16).activation(Activation::Tanh))
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dense::new(4));
    m.build(&[4], device).unwrap();
    m
}

fn weights(m: &Sequential) -> Vec<Tensor> {
    m.variables()
        .iter()
        .map(|v| v.value().to_device(&Device::Cpu).unwrap())
        .collect()
}

/// Many training steps eagerly and traced, with every optimizer rule: the
/// same weights on every device (and traced GPU = eager CPU).
#[test]
fn traced_training_steps_match_eager_ones() {
    let (x, y) = toy(96, 4);
    let optimizers: Vec<(&str, fn() -> Optimizer)> = vec![
        ("sgd momentum", || SGD::new(0.1).momentum(0.9).into()),
        ("sgd nesterov clipnorm", || {
            SGD::new(0.1).momentum(0.5).nesterov(true).clipnorm(0.5).into()
        }),
        ("adam", || Adam::new(0.01).into()),
        ("rmsprop momentum", || RMSprop::new(0.01).momentum(0.5).into()),
    ];
    for (name, make) in optimizers {
        let batches: Vec<(Tensor, Tensor)> = (0..3)
            .map(|i| {
                (
                    x.slice(&[i * 32, 0], &[32, 4]).unwrap(),
                    y.slice(&[i * 32], &[32]).unwrap(),
                )
            })
            .collect();
        let train = |d: &Device, traced: bool| -> (Vec<Tensor>, Option<String>) {
            let mut m = mlp(d);
            m.compile(make(), SparseCategoricalCrossentropy::new(true), vec![]);
            let mut t = Traced::new("train_step");
            for s in 0..24 {
                let (bx, by) = &batches[s % 3];
                let args = on(&[bx.clone(), by.clone()], d);
                if traced {
                    t.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?])).unwrap();
                } else {
                    m.train_step(&args[0], &args[1]).unwrap();
                }
            }
            let graph = t
                .graph(&on(&[batches[0].0.clone(), batches[0].1.clone()], d))
                .map(|g| g.describe());
            (weights(&m), graph)
        };
        let (reference, _) = train(&Device::Cpu, false);
        for d in devices() {
            let (eager, _) = train(&d, false);
            let (traced, graph) = train(&d, true);
            let graph = graph.unwrap();
            assert!(
                graph.contains("update") && graph.contains("fused["),
                "{name} on {d}:\n{graph}"
            );
            // On a GPU the plan names the GEMM kernel each matmul runs on.
            assert_eq!(graph.contains("matmul [matmul"), d.is_gpu(), "{name} on {d}:\n{graph}");
            for (k, ((t, e), r)) in traced.iter().zip(&eager).zip(&reference).enumerate() {
                assert_close(t, e, 2e-4, &format!("{name} on {d}: traced vs eager, weight {k}"));
                assert_close(t, r, 2e-3, &format!("{name} on {d}: traced vs CPU eager, weight {k}"));
            }
        }
    }
}

/// Keras: `fit`, `evaluate` and `predict` trace by default and agree with
/// `run_eagerly`.
#[test]
fn keras_traced_steps_agree_with_run_eagerly() {
    let (x, y) = toy(200, 8);
    let (vx, vy) = toy(70, 9);
    for d in devices() {
        let run = |eager: bool| {
            let mut m = mlp(&d);
            m.compile(
                Adam::new(0.01),
                SparseCategoricalCrossentropy::new(true),
                SparseCategoricalAccuracy::new(),
            );
            m.set_run_eagerly(eager).unwrap();
            let h = m
                .fit(
                    &x,
                    &y,
                    FitArgs {
                        // 200 = 6 x 32 + 8: the last batch has its own graph.
                        batch_size: 32,
                        epochs: 3,
                        verbose: false,
                        device: Some(d.clone()),
                        ..Default::default()
                    },
                )
                .unwrap();
            let eval = m
                .evaluate(&vx.to_device(&d).unwrap(), &vy.to_device(&d).unwrap(), 32)
                .unwrap();
            let pred = m.predict(&vx.to_device(&d).unwrap(), 32).unwrap();
            (h, eval, pred, weights(&m))
        };
        let (he, ee, pe, we) = run(true);
        let (ht, et, pt, wt) = run(false);
        for key in ["loss", "sparse_categorical_accuracy"] {
            let (a, b) = (ht.get(key).unwrap(), he.get(key).unwrap());
            assert_eq!(a.len(), 3);
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-4, "{d}: {key} traced {a:?} vs eager {b:?}");
            }
        }
        let loss = ht.get("loss").unwrap();
        assert!(loss[2] < loss[0], "{d}: training lowers the loss: {loss:?}");
        for ((k, a), (_, b)) in et.iter().zip(&ee) {
            assert!((a - b).abs() < 1e-4, "{d}: evaluate {k}: traced {a} vs eager {b}");
        }
        assert_close(&pt, &pe, 1e-4, &format!("{d}: predict"));
        assert_eq!(pt.shape(), &[70, 4]);
        for (k, (a, b)) in wt.iter().zip(&we).enumerate() {
            assert_close(a, b, 2e-4, &format!("{d}: weight {k} after fit"));
        }
    }
}

/// A GPU graph's intermediates share buffers by liveness, and once the plan
/// exists (and a variable's buffers have rotated once) a replay creates no
/// buffer and no bind group and copies no uniform parameters; the numbers
/// stay those of eager steps.
#[test]
fn memory_plan_shares_buffers_and_replays_create_nothing() {
    // In its own process: the device counters are shared with concurrent tests.
    let (ok, out, err) = run_child("child_memory_plan", &[]);
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(
        out.contains("test child_memory_plan ... ok") || err.contains("SKIPPED"),
        "{out}\n{err}"
    );
}

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_memory_plan() {
    let init: Vec<Tensor> = (0..6)
        .map(|k| randn(&[32, 32], 40 + k, DType::F32).mul_scalar(0.2).unwrap())
        .collect();
    let x = randn(&[16, 32], 3, DType::F32);
    let chain = |ws: &[Variable], x: &[Tensor]| -> Result<Vec<Tensor>> {
        let mut y = x[0].clone();
        for w in ws {
            y = y.matmul(&w.value())?.tanh()?;
        }
        // Updated as an optimizer would: its buffers rotate.
        ws[0].assign(&ws[0].value().mul_scalar(0.999)?)?;
        Ok(vec![y.sum(None, false)?])
    };
    let vars = |d: &Device| -> Vec<Variable> {
        init.iter()
            .map(|t| Variable::new(t.to_device(d).unwrap(), "w"))
            .collect()
    };
    let cpu_ws = vars(&Device::Cpu);
    let want: Vec<f64> = (0..8)
        .map(|_| chain(&cpu_ws, std::slice::from_ref(&x)).unwrap()[0].item().unwrap())
        .collect();
    for d in gpus() {
        let ws = vars(&d);
        let xd = x.to_device(&d).unwrap();
        let mut traced = Traced::new("chain");
        let mut call = || {
            traced.call(std::slice::from_ref(&xd), |a| chain(&ws, a)).unwrap()[0]
                .item()
                .unwrap()
        };
        // Trace, observe, then two planned replays (one per variable buffer).
        let mut got: Vec<f64> = (0..4).map(|_| call()).collect();
        let (mem, work) = (d.memory_info(), d.counters());
        got.extend((0..4).map(|_| call()));
        let (mem2, work2) = (d.memory_info(), d.counters());
        assert_eq!(
            mem2.buffers_created, mem.buffers_created,
            "{d}: replays create no buffer"
        );
        assert_eq!(work2.bind_groups, work.bind_groups, "{d}: replays create no bind group");
        assert_eq!(
            work2.params_copied, work.params_copied,
            "{d}: replays bind parameters written once"
        );
        assert!(
            work2.dispatches >= work.dispatches + 4 * 7,
            "{d}: {work:?} -> {work2:?}"
        );
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-3 * (1.0 + w.abs()), "{d}: call {k}: {g} vs {w}");
        }
        let plan = traced
            .graph(std::slice::from_ref(&xd))
            .unwrap()
            .memory_plan()
            .expect("a plan after a replay");
        assert!(plan.values >= 6 && plan.buffers <= 3, "{d}: {plan:?}");
        assert!(plan.bytes < plan.unshared_bytes, "{d}: {plan:?}");
    }
}

/// Convolution, batch normalization (its moving statistics are variables
/// the step assigns), pooling: traced steps match eager ones; with dropout
/// the traced step trains too (its masks differ from eager ones by design).
#[test]
fn traced_cnn_with_batch_norm_matches_eager() {
    use wgflow::nn::layers::{BatchNormalization, Conv2D, Dropout, Flatten, Layer, MaxPooling2D};
    let x = ops::random_normal(&[24, 6, 6, 2], 0.0, 1.0, DType::F32, 31, &Device::Cpu).unwrap();
    let y = x
        .sum(Some(&[1, 2, 3]), false)
        .unwrap()
        .greater(&ops::zeros(&[], DType::F32, &Device::Cpu).unwrap())
        .unwrap()
        .cast(DType::I32)
        .unwrap();
    let build = |d: &Device, dropout: bool| {
        set_random_seed(5);
        let mut layers: Vec<Box<dyn Layer>> = vec![
            Box::new(Conv2D::new(4, [3, 3]).activation(Activation::Relu)),
            Box::new(BatchNormalization::new()),
            Box::new(MaxPooling2D::new([2, 2])),
            Box::new(Flatten::new()),
        ];
        if dropout {
            layers.push(Box::new(Dropout::new(0.3)));
        }
        layers.push(Box::new(Dense::new(2)));
        let mut m = Sequential::from_layers(layers);
        m.build(&[6, 6, 2], d).unwrap();
        m.compile(
            SGD::new(0.05).momentum(0.9),
            SparseCategoricalCrossentropy::new(true),
            vec![],
        );
        m
    };
    for d in devices() {
        let (bx, by) = (x.to_device(&d).unwrap(), y.to_device(&d).unwrap());
        let args = [bx, by];
        let mut eager = build(&d, false);
        let mut traced = build(&d, false);
        let mut t = Traced::new("cnn");
        for _ in 0..8 {
            eager.train_step(&args[0], &args[1]).unwrap();
            t.call(&args, |a| Ok(vec![traced.train_step(&a[0], &a[1])?])).unwrap();
        }
        let names: Vec<String> = traced.named_variables().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n.contains("moving_mean")), "{names:?}");
        for (k, (a, b)) in weights(&traced).iter().zip(&weights(&eager)).enumerate() {
            assert_close(a, b, 5e-4, &format!("{d}: {} after 8 steps", names[k]));
        }
        let mut m = build(&d, true);
        let mut t = Traced::new("cnn dropout");
        let losses: Vec<f64> = (0..8)
            .map(|_| {
                t.call(&args, |a| Ok(vec![m.train_step(&a[0], &a[1])?])).unwrap()[0]
                    .item()
                    .unwrap()
            })
            .collect();
        assert!(
            losses.iter().all(|l| l.is_finite()) && losses[7] < losses[0],
            "{d}: {losses:?}"
        );
    }
}

#[test]
#[ignore = "run by the other tests in a child process"]
fn child_retraces() {
    log_notices();
    let mut f = function(|x: &[Tensor]| Ok(vec![x[0].add_scalar(1.0)?])).named("grows");
    for n in 1..=7 {
        f.call(&[ops::zeros(&[n], DType::F32, &Device::Cpu).unwrap()]).unwrap();
    }
    println!("TRACES {}", f.trace_count());
}

/// Many signatures: one warning, as TensorFlow gives, naming the function.
#[test]
fn many_retraces_warn_once() {
    let (ok, out, err) = run_child("child_retraces", &[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(tagged(&out, "TRACES"), vec!["7"]);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("was traced")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("grows was traced 6 times"), "{err}");
}

/// `input_signature` with an unknown batch: one trace serves every batch
/// size (reshape's target and a fill's shape follow the batch), results
/// equal the eager computation, and inputs that do not fit are typed errors.
#[test]
fn input_signature_with_unknown_batch_serves_every_size() {
    use wgflow::function::{Dim, TensorSpec};
    for d in devices() {
        let w = Variable::new(randn(&[6, 3], 7, DType::F32).to_device(&d).unwrap(), "w");
        let body = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let n = x[0].shape()[0] as isize;
            let h = x[0].reshape(&[n, 6])?.matmul(&w.value())?;
            let ones = ops::ones(&[x[0].shape()[0], 3], DType::F32, x[0].device())?;
            Ok(vec![h.add(&ones)?.softmax(-1)?])
        };
        let traces = Cell::new(0);
        let mut f = function(|x: &[Tensor]| {
            traces.set(traces.get() + 1);
            body(x)
        })
        .input_signature(vec![TensorSpec::new(&[None, Some(2), Some(3)], DType::F32)]);
        for (i, b) in [1usize, 7, 64, 1].into_iter().enumerate() {
            let x = randn(&[b, 2, 3], i as u64, DType::F32).to_device(&d).unwrap();
            let got = f.call(std::slice::from_ref(&x)).unwrap();
            let want = body(std::slice::from_ref(&x)).unwrap();
            assert_close(&got[0], &want[0], 1e-5, &format!("{d} batch {b}"));
        }
        assert_eq!(traces.get(), 2, "two stand-in traces, none per batch size");
        assert_eq!(f.trace_count(), 1);
        let c = f.concrete_function(&d).unwrap().unwrap();
        assert_eq!(c.compiled_shapes(), 3);
        let reshape = c.def().nodes.iter().find(|n| n.op.name() == "reshape").unwrap();
        assert_eq!(reshape.dims, Some(vec![Dim::Arg { arg: 0, axis: 0 }, Dim::Known(6)]));
        assert_eq!(c.def().values[c.def().outputs[0]].shape, vec![None, Some(3)]);
        // Wrong inner shape, rank and dtype: typed errors naming the spec.
        let bad = [
            randn(&[4, 3, 2], 1, DType::F32),
            randn(&[4, 6], 1, DType::F32),
            randn(&[4, 2, 3], 1, DType::F16),
        ];
        for x in bad {
            let e = f.call(&[x.to_device(&d).unwrap()]).unwrap_err();
            assert!(e.to_string().contains("float32[?, 2, 3]"), "{e}");
        }
    }
}

/// A graph that depends on an unknown dimension beyond shapes (a constant
/// built on the host from the batch size) cannot serve every size: a typed
/// error at the first call, which names what differs.
#[test]
fn input_signature_refuses_host_values_that_follow_the_batch() {
    use wgflow::function::TensorSpec;
    let mut f = function(|x: &[Tensor]| {
        let n = x[0].shape()[0];
        let w = Tensor::from_vec(vec![1.0f32; n], &[n, 1], x[0].device())?;
        Ok(vec![x[0].mul(&w)?])
    })
    .input_signature(vec![TensorSpec::new(&[None, Some(2)], DType::F32)]);
    let e = f.call(&[randn(&[4, 2], 1, DType::F32)]).unwrap_err();
    assert!(e.to_string().contains("captured constant"), "{e}");
}

/// A compiled graph's plan names the GEMM kernel each matmul and
/// convolution runs on a GPU, the same one its launches use.
#[test]
fn the_plan_names_each_gemm_kernel() {
    let x = randn(&[2, 9, 9, 3], 1, DType::F32);
    let f = randn(&[3, 3, 3, 4], 2, DType::F32);
    let w = randn(&[4, 5], 3, DType::F32);
    for d in devices() {
        let on = |t: &Tensor| t.to_device(&d).unwrap();
        let mut t = Traced::new("conv_dense");
        let args = [on(&x), on(&f), on(&w)];
        let body = |a: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = ops::conv::conv2d(&a[0], &a[1], [1, 1], ops::conv::Padding::Same, [1, 1])?;
            Ok(vec![y.reshape(&[162, 4])?.matmul(&a[2])?])
        };
        t.call(&args, body).unwrap();
        let plan = t.graph(&args).unwrap().describe();
        let named = plan.contains("conv2d [conv") && plan.contains("matmul [matmul");
        assert_eq!(named, d.is_gpu(), "{d}:\n{plan}");
        eprintln!("{d}:\n{plan}");
    }
}

/// Pooling gradients in a replayed graph, where outputs are recycled
/// buffers that still hold earlier results: windows that tile the input
/// (written, not zeroed first), that leave its last row and column out or
/// have gaps (zeroed first), and that overlap (added up). Each call's
/// gradients equal the eager ones.
#[test]
fn pooling_gradients_replay_like_eager() {
    use wgflow::Padding;
    use wgflow::ops::pool::{Pool2d, pool2d_grad};
    let geoms: [([usize; 4], [usize; 2], [usize; 2], Padding); 4] = [
        ([2, 6, 8, 3], [2, 2], [2, 2], Padding::Valid),
        ([2, 7, 7, 3], [2, 2], [2, 2], Padding::Valid),
        ([2, 7, 8, 3], [2, 1], [3, 2], Padding::Valid),
        ([2, 7, 7, 3], [3, 3], [2, 2], Padding::Same),
    ];
    for d in devices() {
        for (shape, ksize, strides, padding) in geoms {
            for max in [true, false] {
                let p = Pool2d {
                    max,
                    ksize,
                    strides,
                    padding,
                };
                let body = |a: &[Tensor]| -> Result<Vec<Tensor>> {
                    let y = if max {
                        ops::pool::max_pool2d(&a[0], ksize, strides, padding)?
                    } else {
                        ops::pool::avg_pool2d(&a[0], ksize, strides, padding)?
                    };
                    // dy from x, so that every call's differs.
                    let dy = y.mul_scalar(3.0)?.add_scalar(1.0)?;
                    // An input-shaped intermediate from a kernel no
                    // fusion absorbs, dead before the gradient: the memory
                    // plan may hand its (nonzero) buffer to the gradient.
                    let t = ops::pool::avg_pool2d(&a[0].add_scalar(2.0)?, [1, 1], [1, 1], Padding::Valid)?;
                    let s = t.sum(None, false)?;
                    Ok(vec![pool2d_grad(&a[0], &dy, &p)?, s])
                };
                let mut traced = |a: &[Tensor]| body(a);
                let mut f = function(&mut traced);
                for seed in 0..3 {
                    let x = ops::random_normal(&shape, 0.0, 1.0, DType::F32, seed, &d).unwrap();
                    let want = body(std::slice::from_ref(&x)).unwrap();
                    let got = f.call(std::slice::from_ref(&x)).unwrap();
                    let what = format!("{d} {} {shape:?} {ksize:?}/{strides:?} call {seed}", p.grad_name());
                    assert_close(&got[0], &want[0], 1e-6, &what);
                }
            }
        }
    }
}
