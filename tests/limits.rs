//! Sizes at and past the limits: dispatch grids beyond the adapter's
//! 65,535 workgroups per dimension (every kernel family, every adapter,
//! every GEMM variant), and sizes whose arithmetic overflows, which must be
//! typed errors rather than panics or wrapped values.

mod common;
use common::*;
use wgflow::nn::optimizers::{Adam, SGD};
use wgflow::runtime::wgpu::{GemmVariant, force_cpu_style_kernels, force_gemm_variant};
use wgflow::{DType, Device, Error, Padding, Result, Tensor, Variable, function, ops};

/// The grid tests run one at a time: each keeps the adapters busy for
/// seconds, and wgpu's GL backend panics when a thread waits more than six
/// seconds for its context (a limitation of wgpu's GLES backend, named in
/// the README), so concurrent giant launches on the GL adapter would fail
/// for a reason that is not wgflow's.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Workgroups per dimension every adapter allows.
const LIMIT: usize = 65_535;
/// Elements of a 1-D grid of 256-wide workgroups exactly at the limit, and one past.
const AT: usize = LIMIT * 256;
const PAST: usize = AT + 1;

fn close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a - b).abs() <= tol * (1.0 + b.abs()) || (a.is_nan() && b.is_nan());
        assert!(ok, "{what}: element {i} is {a}, want {b}");
    }
}

/// Runs `f` on CPU copies of `x` and on every GPU, and compares.
fn same_as_cpu(what: &str, x: &[Tensor], tol: f64, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let want = f(x).unwrap_or_else(|e| panic!("{what} on the CPU: {e}"));
    for d in gpus() {
        let xs: Vec<Tensor> = x.iter().map(|t| t.to_device(&d).unwrap()).collect();
        let got = f(&xs).unwrap_or_else(|e| panic!("{what} on {d}: {e}"));
        close(&got, &want, tol, &format!("{what} on {d}"));
    }
}

/// 0, 1, 2, ... as f32 (exact below 2^24).
fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<f32>>(), shape, &cpu()).unwrap()
}

/// Values in a small repeating range, so sums stay exact-ish.
fn small(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect::<Vec<f32>>(),
        shape,
        &cpu(),
    )
    .unwrap()
}

/// A column times a 1x1 matrix: flipped to C^T = B^T A^T by the register
/// kernels, so the tall side lands on x; the tiled kernels put it on y.
/// Rows of 64 or 128 (the variant's tile) times 65,535, plus 3, pass the limit.
#[test]
fn matmul_of_a_tall_column_on_every_gemm_variant() {
    let _serial = serial();
    let b = Tensor::from_vec(vec![2.0f32], &[1, 1], &cpu()).unwrap();
    for (tile, variants) in [
        (64, [GemmVariant::Tiled, GemmVariant::Subgroup]),
        (128, [GemmVariant::Register, GemmVariant::Wide]),
    ] {
        let m = tile * LIMIT + 3;
        let a = iota(&[m, 1]);
        let want = a.mul_scalar(2.0).unwrap();
        for d in gpus() {
            let (a, b) = (a.to_device(&d).unwrap(), b.to_device(&d).unwrap());
            for v in variants {
                force_gemm_variant(v);
                let got = a.matmul(&b);
                force_gemm_variant(GemmVariant::Auto);
                match got {
                    // An adapter without 8-lane subgroups refuses that kernel.
                    Err(Error::InvalidArgument { .. }) if v == GemmVariant::Subgroup => continue,
                    got => close(&got.unwrap(), &want, 0.0, &format!("[{m},1] x [1,1] {v:?} on {d}")),
                }
            }
        }
    }
}

/// The shapes: [4_200_000, 1] x [1, 1] and [270_000, 64] x [64, 64]
/// (on every adapter, the GL one included).
#[test]
fn matmul_shapes_from_the_report() {
    let _serial = serial();
    for d in gpus() {
        let a = ops::ones(&[4_200_000, 1], DType::F32, &d).unwrap();
        let b = ops::ones(&[1, 1], DType::F32, &d).unwrap();
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[4_200_000, 1]);
        assert_eq!(c.sum(None, false).unwrap().item().unwrap(), 4_200_000.0, "on {d}");
        let a = ops::ones(&[270_000, 64], DType::F32, &d).unwrap();
        let b = ops::ones(&[64, 64], DType::F32, &d).unwrap();
        let c = a.matmul(&b).unwrap();
        let (lo, hi) = (
            c.min(None, false).unwrap().item().unwrap(),
            c.max(None, false).unwrap().item().unwrap(),
        );
        assert_eq!((lo, hi), (64.0, 64.0), "[270000,64] x [64,64] on {d}");
    }
}

/// Rows along y past the limit for the register kernel (m / 4 tiles), with
/// 64 columns so nothing is flipped; batched too (z).
#[test]
fn matmul_rows_past_the_limit_and_batched() {
    let _serial = serial();
    let m = 4 * LIMIT + 7;
    let a = iota(&[m, 1]);
    let b = Tensor::from_vec((0..64).map(|i| (i % 5) as f32).collect::<Vec<f32>>(), &[1, 64], &cpu()).unwrap();
    for v in [GemmVariant::Auto, GemmVariant::Register, GemmVariant::Tiled] {
        force_gemm_variant(v);
        same_as_cpu(&format!("[{m},1] x [1,64] {v:?}"), &[a.clone(), b.clone()], 0.0, |x| {
            x[0].matmul(&x[1])
        });
        force_gemm_variant(GemmVariant::Auto);
    }
    let a = small(&[2, 4 * LIMIT + 1, 1]);
    let b = small(&[2, 1, 64]);
    same_as_cpu("batched [2,262141,1] x [2,1,64]", &[a, b], 0.0, |x| x[0].matmul(&x[1]));
}

/// The report's convolution, [1,700,700,8] with a [3,3,8,1] filter (490,000
/// output rows, all 72), and a cheaper one per GEMM variant against the CPU.
#[test]
fn conv2d_with_many_output_pixels() {
    let _serial = serial();
    for d in gpus() {
        let x = ops::ones(&[1, 700, 700, 8], DType::F32, &d).unwrap();
        let f = ops::ones(&[3, 3, 8, 1], DType::F32, &d).unwrap();
        let y = ops::conv::conv2d(&x, &f, [1, 1], Padding::Valid, [1, 1]).unwrap();
        assert_eq!(y.shape(), &[1, 698, 698, 1]);
        let (lo, hi) = (
            y.min(None, false).unwrap().item().unwrap(),
            y.max(None, false).unwrap().item().unwrap(),
        );
        assert_eq!((lo, hi), (72.0, 72.0), "on {d}");
    }
    let x = small(&[1, 600, 500, 1]);
    let f = Tensor::from_vec(vec![0.5f32], &[1, 1, 1, 1], &cpu()).unwrap();
    for v in [GemmVariant::Auto, GemmVariant::Register, GemmVariant::Tiled] {
        force_gemm_variant(v);
        same_as_cpu(
            &format!("conv2d [1,600,500,1] {v:?}"),
            &[x.clone(), f.clone()],
            1e-6,
            |x| ops::conv::conv2d(&x[0], &x[1], [1, 1], Padding::Same, [1, 1]),
        );
        force_gemm_variant(GemmVariant::Auto);
    }
}

/// One workgroup per row (reductions, softmax, cross-entropy): 4 * 65,536 + 3 rows.
#[test]
fn row_kernels_with_more_rows_than_the_limit() {
    let _serial = serial();
    let rows = 65_536 * 4 + 3;
    let x = small(&[rows, 3]);
    for style in [Some(false), Some(true)] {
        force_cpu_style_kernels(style);
        same_as_cpu(&format!("sum axis 1 {style:?}"), &[x.clone()], 1e-6, |x| {
            x[0].sum(Some(&[1]), false)
        });
        same_as_cpu(&format!("max axis 1 {style:?}"), &[x.clone()], 0.0, |x| {
            x[0].max(Some(&[-1]), false)
        });
        same_as_cpu(&format!("argmax axis 1 {style:?}"), &[x.clone()], 0.0, |x| {
            x[0].argmax(1)
        });
        same_as_cpu(&format!("mean axis 0 {style:?}"), &[x.clone()], 1e-5, |x| {
            x[0].mean(Some(&[0]), false)
        });
        same_as_cpu(&format!("softmax {style:?}"), &[x.clone()], 1e-5, |x| x[0].softmax(-1));
        same_as_cpu(&format!("log_softmax {style:?}"), &[x.clone()], 1e-5, |x| {
            x[0].log_softmax(-1)
        });
        force_cpu_style_kernels(None);
    }
    // Rows split in parts: more (row, part) workgroups than the limit.
    let x = small(&[1024, 16_500]);
    same_as_cpu("sum of [1024, 16500] axis 1", &[x], 1e-6, |x| {
        x[0].sum(Some(&[1]), false)
    });
}

/// Elementwise grids of 256-wide workgroups at exactly 65,535 groups and
/// one element past.
#[test]
fn elementwise_at_and_past_the_limit() {
    let _serial = serial();
    for n in [AT, PAST] {
        let x = small(&[n]);
        same_as_cpu(&format!("relu(x) + 1 [{n}]"), &[x.clone()], 0.0, |x| {
            x[0].relu()?.add_scalar(1.0)
        });
        same_as_cpu(&format!("x * x [{n}]"), &[x.clone()], 0.0, |x| x[0].mul(&x[0]));
        same_as_cpu(&format!("cast [{n}]"), &[x.clone()], 0.0, |x| {
            x[0].cast(DType::F16)?.cast(DType::F32)
        });
        same_as_cpu(&format!("fill [{n}]"), &[x.clone()], 0.0, |x| {
            ops::full(&[n], 3.0, DType::F32, x[0].device())
        });
        same_as_cpu(&format!("sum [{n}]"), &[x.clone()], 1e-6, |x| x[0].sum(None, false));
    }
}

/// Pooling, gather, one-hot and transposes over more than 65,535 * 256 outputs.
#[test]
fn layout_and_pooling_past_the_limit() {
    let _serial = serial();
    let x = small(&[1, PAST, 1, 1]);
    same_as_cpu("max_pool2d", &[x.clone()], 0.0, |x| {
        ops::pool::max_pool2d(&x[0], [1, 1], [1, 1], Padding::Valid)
    });
    same_as_cpu("avg_pool2d", &[x.clone()], 1e-6, |x| {
        ops::pool::avg_pool2d(&x[0], [1, 1], [1, 1], Padding::Valid)
    });
    let table = small(&[5]);
    let idx = Tensor::from_vec((0..PAST).map(|i| (i % 5) as i32).collect::<Vec<i32>>(), &[PAST], &cpu()).unwrap();
    same_as_cpu("gather", &[table, idx], 0.0, |x| {
        x[0].gather(&x[1].to_device(x[0].device())?, 0)
    });
    let x = small(&[PAST / 3 + 1, 3]);
    same_as_cpu("transpose", &[x], 0.0, |x| x[0].transpose(&[1, 0]));
}

/// Optimizer updates of a variable with more than 65,535 * 256 elements.
#[test]
fn optimizer_updates_past_the_limit() {
    let _serial = serial();
    let x = small(&[PAST]);
    let g = small(&[PAST]).mul_scalar(0.5).unwrap();
    let step = |d: &Device, adam: bool| -> Tensor {
        let v = Variable::new(x.to_device(d).unwrap(), "v");
        let grads = [Some(g.to_device(d).unwrap())];
        if adam {
            Adam::new(0.1).apply_gradients(&grads, &[v.clone()]).unwrap();
        } else {
            SGD::new(0.1)
                .momentum(0.9)
                .apply_gradients(&grads, &[v.clone()])
                .unwrap();
        }
        v.value()
    };
    for adam in [false, true] {
        let want = step(&cpu(), adam);
        for d in gpus() {
            close(&step(&d, adam), &want, 1e-5, &format!("adam={adam} on {d}"));
        }
    }
}

/// Fused kernels of a compiled function: elementwise, and one workgroup per
/// output row of a reduction.
#[test]
fn fused_kernels_past_the_limit() {
    let _serial = serial();
    let x = small(&[PAST]);
    let body = |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].relu()?.mul_scalar(2.0)?.add_scalar(1.0)?]) };
    let rows = small(&[65_536 * 4 + 3, 40]);
    let red = |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].square()?.sum(Some(&[1]), false)?.sqrt()?]) };
    for d in gpus() {
        let want = body(&[x.clone()]).unwrap();
        let mut f = function(body);
        let got = f.call(&[x.to_device(&d).unwrap()]).unwrap();
        close(&got[0], &want[0], 0.0, &format!("fused elementwise on {d}"));
        let want = red(&[rows.clone()]).unwrap();
        let mut f = function(red);
        let got = f.call(&[rows.to_device(&d).unwrap()]).unwrap();
        close(&got[0], &want[0], 1e-5, &format!("fused row reduction on {d}"));
    }
}

/// The op named in an error.
fn op_of(e: &Error) -> &'static str {
    match e {
        Error::Shape { op, .. } | Error::InvalidArgument { op, .. } | Error::DType { op, .. } => op,
        _ => "",
    }
}

/// Element counts that overflow `usize` are shape errors, on every device.
#[test]
fn shapes_whose_element_count_overflows_are_errors() {
    let mut devices = vec![cpu()];
    devices.extend(gpus());
    for d in &devices {
        for shape in [vec![1 << 32, 1 << 32], vec![usize::MAX, 2], vec![1 << 62, 3, 0]] {
            let zero = shape.contains(&0);
            match ops::zeros(&shape, DType::F32, d) {
                Err(e @ Error::Shape { .. }) if !zero => assert_eq!(op_of(&e), "fill", "{e}"),
                Ok(t) if zero => assert_eq!(t.shape(), &shape[..]),
                other => panic!("zeros({shape:?}) on {d}: {other:?}"),
            }
        }
        let e = ops::random_normal(&[1 << 40, 1 << 40], 0.0, 1.0, DType::F32, 1, d).unwrap_err();
        assert!(matches!(e, Error::Shape { op: "random", .. }), "{e:?}");
        let x = ops::ones(&[1 << 16, 1], DType::F32, d).unwrap();
        let e = x.broadcast_to(&[1 << 16, 1 << 48]).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    }
}

/// `slice` with a begin near usize::MAX: an argument error, not an overflow.
#[test]
fn slice_past_usize_max_is_an_error() {
    let mut devices = vec![cpu()];
    devices.extend(gpus());
    for d in &devices {
        let x = ops::ones(&[4, 3], DType::F32, d).unwrap();
        for (begin, size) in [
            ([usize::MAX, 0], [2, 3]),
            ([1, usize::MAX - 1], [1, 2]),
            ([0, 0], [usize::MAX, 1]),
        ] {
            let e = x.slice(&begin, &size).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { op: "slice", .. }), "{e:?}");
        }
    }
}

/// `range` with a count beyond memory: an argument error, before allocating.
#[test]
fn range_with_a_huge_count_is_an_error() {
    for (start, limit, delta) in [(0.0, 1e30, 1.0), (0.0, f64::INFINITY, 1.0), (0.0, 1.0, 1e-300)] {
        let e = ops::arange(start, limit, delta, DType::F32, &cpu()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "range", .. }), "{e:?}");
    }
    assert_eq!(
        ops::arange(0.0, 5.0, 2.0, DType::F32, &cpu())
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        [0.0, 2.0, 4.0]
    );
}

/// An IDX header whose dimensions multiply past usize: an Io error.
#[test]
fn idx_header_whose_dimensions_overflow_is_an_error() {
    let dir = std::env::temp_dir().join(format!("wgflow-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.idx");
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [u32::MAX, u32::MAX, u32::MAX] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&path, &bytes).unwrap();
    let e = wgflow::data::mnist::read_idx(&path).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A memory limit whose bytes overflow u64: a selection error.
#[test]
fn memory_limit_that_overflows_is_an_error() {
    for d in wgflow::config::list_physical_devices()
        .iter()
        .filter(|d| d.device_type != "CPU")
    {
        let e = wgflow::config::set_memory_limit(d, u64::MAX >> 10).unwrap_err();
        assert!(matches!(e, Error::DeviceSelection { .. }), "{e:?}");
    }
}

/// A CPU-device tensor larger than the machine: OutOfMemory, no abort.
#[test]
fn cpu_allocation_larger_than_the_machine_is_out_of_memory() {
    for shape in [vec![1usize << 42], vec![1 << 21, 1 << 21]] {
        let e = ops::zeros(&shape, DType::F32, &cpu()).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    }
    let x = ops::ones(&[1 << 21, 1], DType::F32, &cpu()).unwrap();
    let e = x.broadcast_to(&[1 << 21, 1 << 21]).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
}
