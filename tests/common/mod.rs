//! Shared test harness: the GPUs to test, seeded inputs, and the
//! GPU-against-CPU comparison that the conformance suite runs for every op.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use wgflow::io::npy::{self, NpyArray, NpyData};
use wgflow::ops::{self, Op};
use wgflow::{DType, Device, Error, Tensor, config};

/// Every visible GPU. Without one the test fails, unless
/// `WGFLOW_ALLOW_NO_GPU=1`, in which case it says it was skipped.
pub fn gpus() -> Vec<Device> {
    let devs: Vec<Device> = config::list_logical_devices()
        .expect("device runtime")
        .into_iter()
        .filter(|d| d.is_gpu())
        .collect();
    if devs.is_empty() {
        if std::env::var("WGFLOW_ALLOW_NO_GPU").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no GPU adapter found (WGFLOW_ALLOW_NO_GPU=1)");
        } else {
            panic!(
                "no GPU adapter found: install a Vulkan driver (Debian: mesa-vulkan-drivers) \
                 or set WGFLOW_ALLOW_NO_GPU=1 to skip GPU tests"
            );
        }
    }
    devs
}

pub fn cpu() -> Device {
    Device::Cpu
}

/// Standard-normal f32 values cast to `dtype`, on the CPU.
pub fn randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let t = ops::random_normal(shape, 0.0, 1.0, DType::F32, seed, &cpu()).unwrap();
    if dtype == DType::F32 { t } else { t.cast(dtype).unwrap() }
}

/// Uniform in [lo, hi) as f32 cast to `dtype`.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64, dtype: DType) -> Tensor {
    let t = ops::random_uniform(shape, lo, hi, DType::F32, seed, &cpu()).unwrap();
    if dtype == DType::F32 { t } else { t.cast(dtype).unwrap() }
}

/// Integers in [lo, hi) as int32.
pub fn randint(shape: &[usize], lo: i32, hi: i32, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let u = ops::random_uniform(&[n], 0.0, 1.0, DType::F64, seed, &cpu())
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let v: Vec<i32> = u.iter().map(|x| lo + (x * (hi - lo) as f64).floor() as i32).collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

pub fn randbool(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<bool> = randint(&[n], 0, 2, seed)
        .to_vec::<i32>()
        .unwrap()
        .iter()
        .map(|&x| x == 1)
        .collect();
    Tensor::from_vec(v, shape, &cpu()).unwrap()
}

/// The op named in an error, to check that both devices fail the same way.
fn err_key(e: &Error) -> String {
    let op = match e {
        Error::Shape { op, .. } | Error::DType { op, .. } | Error::InvalidArgument { op, .. } => op.to_string(),
        Error::TooLargeForBinding { op, .. } => op.to_string(),
        _ => String::new(),
    };
    format!("{:?}/{op}", std::mem::discriminant(e))
}

/// Runs ops on the CPU reference and on every GPU and compares them,
/// counting cases per op; prints the counts when dropped.
pub struct Suite {
    pub gpus: Vec<Device>,
    counts: BTreeMap<&'static str, (usize, usize)>,
    name: String,
}

impl Suite {
    pub fn new(name: impl Into<String>) -> Suite {
        Suite {
            gpus: gpus(),
            counts: BTreeMap::new(),
            name: name.into(),
        }
    }

    /// `op` on CPU inputs `x` against the same op on each GPU.
    pub fn check(&mut self, op: Op, x: &[Tensor]) {
        let refs: Vec<&Tensor> = x.iter().collect();
        let want = ops::apply(op.clone(), &refs).unwrap_or_else(|e| panic!("CPU reference of {op:?} failed: {e}"));
        let want_v = want.to_f64_vec().unwrap();
        for g in &self.gpus {
            let gx: Vec<Tensor> = x.iter().map(|t| t.to_device(g).unwrap()).collect();
            let grefs: Vec<&Tensor> = gx.iter().collect();
            let got = ops::apply(op.clone(), &grefs).and_then(|t| t.to_f64_vec().map(|v| (t, v)));
            let (got, got_v) = got.unwrap_or_else(|e| panic!("{} on {g:?} failed: {e}", op.name()));
            assert_eq!(got.shape(), want.shape(), "{} shape on {g}", op.name());
            assert_eq!(got.dtype(), want.dtype(), "{} dtype on {g}", op.name());
            let tol = op.tolerance(&refs, want.dtype());
            let (max, ok) = tol.check(&got_v, &want_v);
            if !ok {
                let bad = got_v
                    .iter()
                    .zip(&want_v)
                    .position(|(a, b)| !((a - b).abs() <= tol.atol + tol.rtol * b.abs() || a.is_nan() && b.is_nan()))
                    .unwrap_or(0);
                panic!(
                    "{} on {g:?} with inputs {:?} {:?}: max error {max:e} beyond {tol:?}; first bad element {bad}: got {} want {}",
                    op.name(),
                    x.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>(),
                    x.iter().map(|t| t.dtype()).collect::<Vec<_>>(),
                    got_v.get(bad).copied().unwrap_or(f64::NAN),
                    want_v.get(bad).copied().unwrap_or(f64::NAN),
                );
            }
        }
        self.counts.entry(op.name()).or_default().0 += 1;
    }

    /// `op` must fail on the CPU and on every GPU with the same kind of error
    /// (a GPU may report it at the readback of the result).
    pub fn check_err(&mut self, op: Op, x: &[Tensor]) {
        let refs: Vec<&Tensor> = x.iter().collect();
        let want = match ops::apply(op.clone(), &refs).and_then(|t| t.to_f64_vec()) {
            Err(e) => e,
            Ok(_) => panic!("{} should fail on the CPU for {:?}", op.name(), x),
        };
        for g in &self.gpus {
            let gx: Vec<Tensor> = x.iter().map(|t| t.to_device(g).unwrap()).collect();
            let grefs: Vec<&Tensor> = gx.iter().collect();
            match ops::apply(op.clone(), &grefs).and_then(|t| t.to_f64_vec()) {
                Err(e) => assert_eq!(
                    err_key(&e),
                    err_key(&want),
                    "{}: GPU error {e} vs CPU error {want}",
                    op.name()
                ),
                Ok(_) => panic!("{} should fail on {g:?} as on the CPU ({want})", op.name()),
            }
            // The device stays usable after the error.
            let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2], g).unwrap();
            assert_eq!(t.add(&t).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
        }
        self.counts.entry(op.name()).or_default().1 += 1;
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let devs: Vec<String> = self.gpus.iter().map(|g| format!("{g} = {}", g.name())).collect();
        let mut out = format!("conformance [{}] on {}:\n", self.name, devs.join(", "));
        for (op, (ok, err)) in &self.counts {
            out += &format!("  {op:<40} {ok:>4} cases, {err:>3} error cases\n");
        }
        eprint!("{out}");
    }
}

/// Installs a logger that prints wgflow's notices (`log` records of the
/// `wgflow` target, info and up) to stderr as `wgflow: <message>`, one line
/// each, as the examples do; other crates' records are left out. For child
/// tests whose parent reads the notices from their stderr.
pub fn log_notices() {
    use std::io::Write;
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
        .filter_module("wgflow", log::LevelFilter::Info)
        .format(|buf, r| writeln!(buf, "wgflow: {}", r.args()))
        .try_init();
}

/// Runs the ignored test `name` of this test binary in a fresh process with
/// `env` (and no other WGFLOW_* variables), so each gets its own runtime.
/// Returns (success, stdout, stderr).
pub fn run_child(name: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("WGFLOW_") && k != "WGFLOW_ALLOW_NO_GPU" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the test binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What follows `TAG ` on the lines of `out` that have it (libtest may put
/// "test name ... " before a child's first line).
pub fn tagged<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    let key = format!("{tag} ");
    out.lines()
        .filter_map(|l| l.find(&key).map(|i| l[i + key.len()..].trim()))
        .collect()
}

/// The visible GPUs whose adapters have subgroups of 8 invocations (the
/// ones that run the subgroup matmul kernel).
pub fn subgroup8_gpus() -> Vec<Device> {
    gpus()
        .into_iter()
        .filter(|d| {
            let n: usize = d.to_string()["gpu:".len()..].parse().unwrap();
            config::physical_of(n).unwrap().subgroup_size == Some(8)
        })
        .collect()
}

/// The visible GPUs whose adapters run the cooperative-matrix GEMM
/// (`EXPERIMENTAL_COOPERATIVE_MATRIX` with 16x16x16 or 8x8x8 f16
/// configurations).
pub fn coop_gpus() -> Vec<Device> {
    gpus()
        .into_iter()
        .filter(|d| matches!(d, Device::Gpu(g) if g.cooperative_matrix()))
        .collect()
}

/// The [`coop_gpus`] with 16x16x16 cooperative matrices, which
/// `GemmVariant::CooperativeWide` needs.
#[allow(dead_code)]
pub fn coop_wide_gpus() -> Vec<Device> {
    gpus()
        .into_iter()
        .filter(|d| matches!(d, Device::Gpu(g) if g.cooperative_matrix_side() == Some(16)))
        .collect()
}

/// A fresh directory under the system's temp dir, removed when dropped, so
/// tests leave nothing behind even when they fail.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("wgflow-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The interpreter of the venv with TensorFlow, or `None` (outside CI only:
/// in CI a missing venv fails the test).
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("WGFLOW_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "WGFLOW_PYTHON is not set: .ci/run creates the venv (tensorflow-cpu 2.21, keras, onnx, onnxruntime, tensorflow-serving-api) and sets it"
            )
        }
        None => {
            eprintln!("SKIPPED: WGFLOW_PYTHON is not set (a Python with tensorflow-cpu 2.21; .ci/run makes one)");
            None
        }
    }
}

pub fn py(python: &Path, script: &str, args: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "{what}: element {i} is {a}, want {b}");
    }
}

pub fn save_npy(path: &Path, t: &Tensor) {
    npy::write(
        path,
        &NpyArray {
            shape: t.shape().to_vec(),
            data: NpyData::F32(t.to_vec::<f32>().unwrap()),
        },
    )
    .unwrap();
}

pub fn load_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).unwrap();
    match a.data {
        NpyData::F32(v) => (a.shape, v),
        other => panic!("{}: not float32: {other:?}", path.display()),
    }
}

/// Gives a model's BatchNormalization layers moving statistics that are not
/// the initial ones (so an export that ignored them would be caught).
pub fn randomize_moving_stats(m: &wgflow::nn::Sequential, device: &Device) {
    use wgflow::nn::Model;
    for (n, v) in m.named_variables() {
        if n.ends_with("moving_mean") || n.ends_with("moving_variance") {
            let t = uniform(&v.shape(), 0.2, 1.5, 9, DType::F32).to_device(device).unwrap();
            v.assign(&t).unwrap();
        }
    }
}

/// Runs the `wgflow_convert` binary; (success, stdout and stderr). A panic
/// (exit code 101) fails the test.
pub fn wgflow_convert(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgflow_convert"))
        .args(args)
        .output()
        .expect("run wgflow_convert");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(101), "wgflow_convert panicked: {text}");
    (out.status.success(), text)
}

/// A model of the Keras layers beyond the test CNNs' (Rescaling, Reshape,
/// ZeroPadding2D, relu6, DepthwiseConv2D, SeparableConv2D,
/// GlobalMaxPooling2D, LeakyReLU), built for
/// 28x28x1 examples: the same layers tests/python/keras_files.py gives Keras.
pub fn extra_layers(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::layers::{
        Conv2D, Dense, DepthwiseConv2D, Flatten, GlobalMaxPooling2D, LeakyReLU, Rescaling, Reshape, SeparableConv2D,
        ZeroPadding2D,
    };
    use wgflow::nn::{Activation, Sequential};
    wgflow::nn::set_random_seed(seed);
    let mut m = Sequential::new()
        .add(Rescaling::new(2.0, -1.0))
        .add(Reshape::new(&[14, 56, 1]))
        .add(ZeroPadding2D::new([[1, 2], [0, 1]]))
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu6))
        .add(
            DepthwiseConv2D::new([3, 3])
                .depth_multiplier(2)
                .strides([2, 2])
                .padding("same")
                .expect("same padding"),
        )
        .add(
            SeparableConv2D::new(6, [3, 3])
                .padding("same")
                .expect("same padding")
                .depth_multiplier(2)
                .activation(Activation::Relu),
        )
        .add(GlobalMaxPooling2D::new())
        .add(LeakyReLU::new(0.2))
        .add(Reshape::new(&[2, -1]))
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).expect("build");
    m
}

/// An MLP with LayerNormalization (epsilon 1e-2, gamma and beta away from
/// 1 and 0) between its Dense layers, for 28x28x1 examples: the layers
/// tests/python/keras_files.py gives Keras as "lnmlp".
pub fn layer_norm_mlp(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::layers::{Dense, Flatten, LayerNormalization};
    wgflow::nn::set_random_seed(seed);
    let mut m = wgflow::nn::Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(16))
        .add(LayerNormalization::new().epsilon(1e-2))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).expect("build");
    for (name, v) in m.layers()[2].weights() {
        let base = if name == "gamma" { 1.0 } else { 0.0 };
        let w = uniform(&[16], base - 0.5, base + 0.5, seed + 1, DType::F32);
        v.assign(&w.to_device(d).expect("device")).expect("assign");
    }
    m
}

/// A functional CNN with a residual connection (a convolution's output
/// used twice, an `Add` of two activations): MNIST-shaped in, 10 out.
pub fn residual(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::layers::{Add, Conv2D, Dense, GlobalAveragePooling2D, MaxPooling2D};
    use wgflow::nn::{Activation, Functional};
    wgflow::nn::set_random_seed(seed);
    let mut f = Functional::new();
    let x = f.input(&[28, 28, 1]).unwrap();
    let h = f
        .call(
            Conv2D::new(4, [3, 3]).strides([2, 2]).activation(Activation::Relu),
            &[x],
        )
        .unwrap();
    let r = f
        .call(
            Conv2D::new(4, [3, 3])
                .padding("same")
                .unwrap()
                .activation(Activation::Relu),
            &[h],
        )
        .unwrap();
    let h = f.call(Add::new(), &[h, r]).unwrap();
    let h = f.call(MaxPooling2D::new([2, 2]), &[h]).unwrap();
    let h = f.call(GlobalAveragePooling2D::new(), &[h]).unwrap();
    let y = f.call(Dense::new(10), &[h]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[28, 28, 1], d).unwrap();
    m
}

/// A functional CNN through every merge layer (add, subtract, multiply,
/// average, maximum, minimum, a channel concatenation), a layer shared by
/// two calls and an upsampling: MNIST-shaped in, 10 out.
pub fn merges(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::Functional;
    use wgflow::nn::layers::{
        Add, Average, Concatenate, Conv2D, Dense, GlobalAveragePooling2D, Maximum, Minimum, Multiply, Subtract,
    };
    wgflow::nn::set_random_seed(seed);
    let mut f = Functional::new();
    let x = f.input(&[28, 28, 1]).unwrap();
    let h = f.call(Conv2D::new(4, [3, 3]).strides([3, 3]), &[x]).unwrap();
    let shared = f.layer(Conv2D::new(4, [3, 3]).padding("same").unwrap());
    let r = f.apply(shared, &[h]).unwrap();
    let r2 = f.apply(shared, &[r]).unwrap();
    let a = f.call(Add::new(), &[h, r]).unwrap();
    let hi = f.call(Maximum::new(), &[a, r2]).unwrap();
    let lo = f.call(Minimum::new(), &[a, h]).unwrap();
    let p = f.call(Multiply::new(), &[hi, lo]).unwrap();
    let av = f.call(Average::new(), &[p, a, r2]).unwrap();
    let s = f.call(Subtract::new(), &[av, hi]).unwrap();
    let c = f.call(Concatenate::new(-1), &[s, h, r2]).unwrap();
    let c = f.call(wgflow::nn::layers::UpSampling2D::new([2, 3]), &[c]).unwrap();
    let c = f.call(Conv2D::new(4, [3, 3]).strides([2, 2]), &[c]).unwrap();
    let g = f.call(GlobalAveragePooling2D::new(), &[c]).unwrap();
    let y = f.call(Dense::new(10), &[g]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[28, 28, 1], d).unwrap();
    m
}

/// A functional encoder-decoder (a small U-Net): strided convolutions
/// down, transposed convolutions up (same padding; valid with
/// output_padding; dilated), a skip connection by concatenation, then a
/// dense layer over every pixel: MNIST-shaped in, 10 out.
pub fn decoder(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::Activation;
    use wgflow::nn::Functional;
    use wgflow::nn::layers::{Concatenate, Conv2D, Conv2DTranspose, Dense, Flatten};
    wgflow::nn::set_random_seed(seed);
    let mut f = Functional::new();
    let x = f.input(&[28, 28, 1]).unwrap();
    let e1 = f
        .call(
            Conv2D::new(4, [3, 3])
                .strides([2, 2])
                .padding("same")
                .unwrap()
                .activation(Activation::Relu),
            &[x],
        )
        .unwrap();
    let e2 = f
        .call(
            Conv2D::new(6, [3, 3])
                .strides([2, 2])
                .padding("same")
                .unwrap()
                .activation(Activation::Relu),
            &[e1],
        )
        .unwrap();
    let up = Conv2DTranspose::new(4, [3, 3])
        .strides([2, 2])
        .padding("same")
        .unwrap()
        .activation(Activation::Relu);
    let u = f.call(up, &[e2]).unwrap();
    let h = f.call(Concatenate::new(-1), &[u, e1]).unwrap();
    let valid = Conv2DTranspose::new(3, [3, 2]).strides([2, 2]).output_padding([1, 0]);
    let h = f.call(valid, &[h]).unwrap();
    let dilated = Conv2DTranspose::new(2, [3, 3])
        .dilation_rate([2, 2])
        .padding("same")
        .unwrap()
        .activation(Activation::Tanh);
    let h = f.call(dilated, &[h]).unwrap();
    let h = f.call(Flatten::new(), &[h]).unwrap();
    let y = f.call(Dense::new(10), &[h]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[28, 28, 1], d).unwrap();
    m
}

/// A functional model of two inputs and two outputs: an image tower
/// (`image`, `[28, 28, 1]`) and a dense one (`meta`, `[6]`), joined for a
/// 10-way output; a second output of one unit from the dense tower alone.
/// The model takes `meta` first, though `image` was made first.
pub fn two_towers(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::Activation;
    use wgflow::nn::Functional;
    use wgflow::nn::layers::{Concatenate, Conv2D, Dense, GlobalAveragePooling2D};
    wgflow::nn::set_random_seed(seed);
    let mut f = Functional::new();
    let image = f.input_named(&[28, 28, 1], "image").unwrap();
    let meta = f.input_named(&[6], "meta").unwrap();
    let h = f
        .call(
            Conv2D::new(4, [3, 3]).strides([2, 2]).activation(Activation::Relu),
            &[image],
        )
        .unwrap();
    let h = f.call(GlobalAveragePooling2D::new(), &[h]).unwrap();
    let m = f.call(Dense::new(5).activation(Activation::Tanh), &[meta]).unwrap();
    let c = f.call(Concatenate::new(-1), &[h, m]).unwrap();
    let cls = f.call(Dense::new(10), &[c]).unwrap();
    let reg = f.call(Dense::new(1), &[m]).unwrap();
    let mut model = f.build_multi(&[meta, image], &[cls, reg]).unwrap();
    model.build_many(&[vec![6], vec![28, 28, 1]], d).unwrap();
    model
}

/// A recurrent model over `[7, 3]` sequences: an LSTM (every step, run
/// backwards), a bidirectional GRU (the mean of both directions), a dense
/// layer of 10; biases away from their initial values.
pub fn recurrent(d: &Device, seed: u64) -> wgflow::nn::Sequential {
    use wgflow::nn::Model;
    use wgflow::nn::layers::{Bidirectional, Dense, GRU, LSTM, MergeMode};
    wgflow::nn::set_random_seed(seed);
    let mut m = wgflow::nn::Sequential::new()
        .add(LSTM::new(6).return_sequences(true).go_backwards(true))
        .add(Bidirectional::new(GRU::new(5)).merge_mode(MergeMode::Ave))
        .add(Dense::new(10));
    m.build(&[7, 3], d).unwrap();
    for (n, v) in m.named_variables() {
        if n.ends_with("bias") {
            let t = uniform(&v.shape(), -0.5, 0.5, seed, DType::F32).to_device(d).unwrap();
            v.assign(&t).unwrap();
        }
    }
    m
}
