//! The README's Rust snippets, compiled with the examples (so they cannot
//! rot) and run on small synthetic data: `cargo run --example readme`.
//! `tests/readme.rs` checks that every Rust block of README.md stands here
//! verbatim.
#![allow(unused_variables, clippy::needless_return)]

use wgflow::nn::layers::Dense;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Model, Sequential};
use wgflow::{DType, Tensor, config, ops};

/// "Keras in Rust".
#[rustfmt::skip]
fn keras(x_train: &Tensor, y_train: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
    use wgflow::nn::{losses::SparseCategoricalCrossentropy, metrics::SparseCategoricalAccuracy, optimizers::Adam};
    use wgflow::nn::{Activation, FitArgs, Model, Sequential};

    let mut model = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    model.compile(Adam::new(1e-3), SparseCategoricalCrossentropy::new(true), SparseCategoricalAccuracy::new());
    let history = model.fit(&x_train, &y_train, FitArgs { epochs: 3, batch_size: 128, ..FitArgs::default() })?;
    Ok(())
}

/// "A custom training step with a tape".
#[rustfmt::skip]
fn custom_step(model: &mut Sequential, optimizer: &mut Adam, x: &Tensor, y: &Tensor) -> wgflow::Result<()> {
    let tape = wgflow::GradientTape::new();
    let loss = model.call(&x, true)?.sub(&y)?.square()?.mean(None, false)?;
    let vars = model.trainable_variables();
    let grads = tape.gradient(&loss, &vars.iter().collect::<Vec<_>>())?;
    optimizer.apply_gradients(&grads, &vars)?;
    Ok(())
}

/// "Tensors and ops".
#[rustfmt::skip]
mod tensors_and_ops {
    use wgflow::{config, ops, DType};

    fn main() -> wgflow::Result<()> {
        let dev = config::default_device()?;           // the first real GPU, or the CPU
        let x = ops::random_normal(&[64, 784], 0.0, 1.0, DType::F32, 42, &dev)?;
        let w = ops::random_normal(&[784, 10], 0.0, 0.05, DType::F32, 7, &dev)?;
        let logits = x.matmul(&w)?;
        let probs = logits.softmax(-1)?;
        println!("{}", probs.sum(Some(&[1]), false)?);  // readback flushes the GPU
        Ok(())
    }

    pub fn run() -> wgflow::Result<()> {
        main()
    }
}

/// "Traced functions".
#[rustfmt::skip]
fn traced(
    model: &mut Sequential,
    vars: Vec<wgflow::Variable>,
    optimizer: &mut Adam,
    batches: Vec<(Tensor, Tensor)>,
) -> wgflow::Result<()> {
    use wgflow::{function, GradientTape, Tensor};

    let mut train_step = function(|args: &[Tensor]| {
        let (x, y) = (&args[0], &args[1]);
        let tape = GradientTape::new();
        let loss = model.call(x, true)?.sub(y)?.square()?.mean(None, false)?;
        let grads = tape.gradient(&loss, &vars.iter().collect::<Vec<_>>())?;
        optimizer.apply_gradients(&grads, &vars)?;
        Ok(vec![loss])
    });
    for (x, y) in batches {
        let loss = train_step.call(&[x, y])?.remove(0);   // traced once, then replayed
    }
    Ok(())
}

/// "SavedModel: to and from TensorFlow".
#[rustfmt::skip]
fn saved_model_round_trip(model: &mut Sequential, images: &Tensor) -> wgflow::Result<()> {
    use wgflow::saved_model;

    model.export("models/mnist/1")?;                        // Keras' model.export
    let mut loaded = saved_model::load("models/mnist/1")?;  // tf.saved_model.load
    let out = loaded.call("serving_default", &[("inputs", images.clone())])?;
    println!("{} {:?}", out[0].0, out[0].1.shape());        // output_0 [batch, 10]
    Ok(())
}

/// "Keras files".
#[rustfmt::skip]
fn keras_files(model: &Sequential, images: &Tensor) -> wgflow::Result<()> {
model.save("mnist.keras")?;                               // Keras' model.save
let mut back = wgflow::nn::load_model("mnist.keras")?;    // keras.models.load_model
let probs = back.predict(images, 32)?;                    // the same as model.predict
wgflow::onnx::export(&mut back, "mnist.onnx", 17)?;       // for ONNX Runtime
    println!("{:?}", probs.shape());
    Ok(())
}

/// "TensorFlow Lite".
#[rustfmt::skip]
fn tflite(mut model: Sequential) -> wgflow::Result<()> {
let mut c = wgflow::lite::Converter::from_keras_model(&mut model)?;
c.optimizations = vec![wgflow::lite::Optimize::Default];  // int8 weights
c.convert_to("mnist.tflite")?;
    Ok(())
}

/// "Pruning".
#[rustfmt::skip]
fn pruning(model: Sequential, x: &Tensor, y: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::losses::SparseCategoricalCrossentropy;
    use wgflow::nn::metrics::SparseCategoricalAccuracy;
    use wgflow::nn::FitArgs;
use wgflow::nn::pruning::{PolynomialDecay, UpdatePruningStep, prune_low_magnitude, strip_pruning};
let mut pruned = prune_low_magnitude(model, PolynomialDecay::new(0.0, 0.5, 0, 200))?;
pruned.compile(Adam::new(1e-3), SparseCategoricalCrossentropy::new(true), SparseCategoricalAccuracy::new());
pruned.fit(&x, &y, FitArgs { callbacks: vec![Box::new(UpdatePruningStep::new())], ..FitArgs::default() })?;
let model = strip_pruning(pruned)?;                        // zeros in the kernels
    println!("{} layers", model.layers().len());
    Ok(())
}

/// "Input signatures".
#[rustfmt::skip]
fn input_signature(a: &Tensor, b: &Tensor) -> wgflow::Result<()> {
    use wgflow::{DType, function, function::TensorSpec};

    // One graph for every batch size: no retracing.
    let mut f = function(|x: &[Tensor]| Ok(vec![x[0].relu()?.sum(Some(&[-1]), false)?]))
        .input_signature(vec![TensorSpec::new(&[None, Some(4)], DType::F32)]);
    let (ya, yb) = (f.call(&[a.clone()])?, f.call(&[b.clone()])?);
    assert_eq!(f.trace_count(), 1);
    Ok(())
}

/// "Distribution".
#[rustfmt::skip]
fn mirrored(images: &Tensor, labels: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::layers::Flatten;
    use wgflow::nn::losses::SparseCategoricalCrossentropy;
    use wgflow::nn::metrics::SparseCategoricalAccuracy;
    use wgflow::nn::optimizers::SGD;
    use wgflow::nn::FitArgs;
    if config::visible_gpu_count()? == 0 {
        return Ok(());
    }
    use wgflow::distribute::MirroredStrategy;

    let strategy = MirroredStrategy::new(&["gpu:0", "cpu"])?;
    let mut replicated = strategy.scope(|device| {
        let mut m = Sequential::new().add(Flatten::new()).add(Dense::new(10));
        m.build(&[28, 28, 1], device)?;
        Ok(m)
    })?;
    replicated.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), SparseCategoricalAccuracy::new());
    replicated.fit(&images, &labels, FitArgs { batch_size: 64, verbose: false, ..FitArgs::default() })?;
    println!("{} replicas in sync", strategy.num_replicas_in_sync());
    Ok(())
}

/// "Several processes and hosts" (one worker unless launched by mpirun).
#[rustfmt::skip]
fn multi_worker(images: &Tensor, labels: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::layers::Flatten;
    use wgflow::nn::losses::SparseCategoricalCrossentropy;
    use wgflow::nn::metrics::SparseCategoricalAccuracy;
    use wgflow::nn::optimizers::SGD;
    use wgflow::nn::FitArgs;
    if !cfg!(feature = "mpi") {
        return Ok(());
    }
    let build = |device: &wgflow::Device| -> wgflow::Result<Sequential> {
        let mut m = Sequential::new().add(Flatten::new()).add(Dense::new(10));
        m.build(&[28, 28, 1], device)?;
        Ok(m)
    };
    use wgflow::distribute::MultiWorkerMirroredStrategy;

    let strategy = MultiWorkerMirroredStrategy::default()?; // this worker's GPUs, else its CPU
    let mut model = strategy.scope(build)?; // worker 0's weights on every worker
    model.compile(SGD::new(0.1), SparseCategoricalCrossentropy::new(true), SparseCategoricalAccuracy::new());
    model.fit(&images, &labels, FitArgs { batch_size: 256, ..FitArgs::default() })?;
    Ok(())
}

/// "Sample and class weights, and Keras' loss reductions".
#[rustfmt::skip]
fn weighted(model: &mut Sequential, x_train: &Tensor, y_train: &Tensor, w: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::FitArgs;
    let (x_test, y_test, w_test) = (x_train, y_train, w);
    use std::collections::HashMap;
    use wgflow::nn::losses::{Loss, MeanAbsoluteError, MeanSquaredError, Reduction};
    use wgflow::nn::metrics::MeanMetricWrapper;

    // keras: fit(x, y, class_weight={0: 1.0, 1: 5.0})
    let args = FitArgs { class_weight: Some(HashMap::from([(0, 1.0), (1, 5.0)])), ..FitArgs::default() };
    // keras: fit(x, y, sample_weight=w), one weight per example
    let args = FitArgs { sample_weight: Some(w.clone()), ..FitArgs::default() };
    model.fit(&x_train, &y_train, args)?;
    let logs = model.evaluate_weighted(&x_test, &y_test, &w_test, 32)?;
    // keras: compile(..., weighted_metrics=["mae"])
    model.set_weighted_metrics(MeanMetricWrapper::new("mae", MeanAbsoluteError))?;
    // keras: MeanSquaredError(reduction="sum")
    model.compile(Adam::new(1e-3), MeanSquaredError.with_reduction(Reduction::Sum), ());
    Ok(())
}

fn main() -> wgflow::Result<()> {
    let dev = config::default_device()?;
    // 28x28 images and labels for the Keras snippet.
    let x = ops::random_normal(&[16, 28, 28, 1], 0.0, 1.0, DType::F32, 1, &dev)?;
    let labels: Vec<i32> = (0..16).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[16], &dev)?;
    keras(&x, &y)?;

    let mut model = Sequential::new().add(Dense::new(4));
    let mut optimizer = Adam::new(1e-2);
    let xs = ops::random_normal(&[8, 3], 0.0, 1.0, DType::F32, 2, &dev)?;
    let ys = ops::random_normal(&[8, 4], 0.0, 1.0, DType::F32, 3, &dev)?;
    model.call(&xs, false)?;
    custom_step(&mut model, &mut optimizer, &xs, &ys)?;
    let mut regression = Sequential::new().add(Dense::new(4));
    regression.compile(Adam::new(1e-2), wgflow::nn::losses::MeanSquaredError, ());
    let w = ops::random_uniform(&[8], 0.0, 2.0, DType::F32, 4, &dev)?;
    weighted(&mut regression, &xs, &ys, &w)?;

    tensors_and_ops::run()?;

    let vars = model.trainable_variables();
    let batches = vec![(xs.clone(), ys.clone()), (xs, ys)];
    traced(&mut model, vars, &mut optimizer, batches)?;
    let mut cnn = Sequential::new()
        .add(wgflow::nn::layers::Flatten::new())
        .add(Dense::new(10));
    cnn.build(&[28, 28, 1], &dev)?;
    saved_model_round_trip(&mut cnn, &x)?;
    keras_files(&cnn, &x)?;
    let mut small = Sequential::new()
        .add(wgflow::nn::layers::Flatten::new())
        .add(Dense::new(10));
    small.build(&[28, 28, 1], &dev)?;
    tflite(small)?;
    let mut to_prune = Sequential::new()
        .add(wgflow::nn::layers::Flatten::new())
        .add(Dense::new(10));
    to_prune.build(&[28, 28, 1], &dev)?;
    pruning(to_prune, &x, &y)?;
    let a = ops::random_normal(&[3, 4], 0.0, 1.0, DType::F32, 4, &dev)?;
    let b = ops::random_normal(&[9, 4], 0.0, 1.0, DType::F32, 5, &dev)?;
    input_signature(&a, &b)?;
    mirrored(&x, &y)?;
    multi_worker(&x, &y)?;
    mixed(&dev)?;
    functional(&x)?;
    several_outputs(&x, &y)?;
    transfer(&dev)?;
    println!("every README snippet ran on {dev}");
    Ok(())
}

/// "Functional models".
#[rustfmt::skip]
fn functional(images: &Tensor) -> wgflow::Result<()> {
use wgflow::nn::layers::{Add, Conv2D, Dense, GlobalAveragePooling2D};
use wgflow::nn::{Activation, Functional};

let mut f = Functional::new();
let x = f.input(&[28, 28, 1])?;                                       // keras.Input((28, 28, 1))
let h = f.call(Conv2D::new(8, [3, 3]).activation(Activation::Relu), &[x])?;
let r = f.call(Conv2D::new(8, [3, 3]).padding("same")?, &[h])?;
let h = f.call(Add::new(), &[h, r])?;                                 // a residual connection
let shared = f.layer(Dense::new(16).activation(Activation::Relu));    // one Dense, ...
let g = f.call(GlobalAveragePooling2D::new(), &[h])?;
let a = f.apply(shared, &[g])?;
let b = f.apply(shared, &[a])?;                                       // ... called twice
let y = f.call(Dense::new(10), &[b])?;
let mut model = f.build(y)?;                                          // keras.Model(x, y)
    model.build(&[28, 28, 1], images.device())?;
    println!("{}", model.summary());
    Ok(())
}

/// "Mixed precision".
#[rustfmt::skip]
fn mixed(dev: &wgflow::Device) -> wgflow::Result<()> {
    use wgflow::nn::losses::SparseCategoricalCrossentropy;
    use wgflow::nn::Activation;
    use wgflow::nn::mixed_precision::{self, Policy};

    mixed_precision::set_global_policy("mixed_float16")?;
    let mut model = Sequential::new()
        .add(Dense::new(64).activation(Activation::Relu)) // computes in f16, f32 variables
        .add(Dense::new(10).dtype(Policy::float32()));    // a layer kept in f32
    model.build(&[784], &dev)?;
    model.compile(Adam::new(1e-3), SparseCategoricalCrossentropy::new(true), ()); // wrapped in LossScaleOptimizer
    mixed_precision::set_global_policy("float32")?;
    assert!(model.compiled().as_ref().is_some_and(|c| c.optimizer.is_loss_scaled()));
    Ok(())
}

/// "Functional models": several inputs and outputs.
#[rustfmt::skip]
fn several_outputs(images: &Tensor, labels: &Tensor) -> wgflow::Result<()> {
    use wgflow::nn::layers::{Concatenate, Dense, Flatten};
    use wgflow::nn::losses::{MeanSquaredError, SparseCategoricalCrossentropy};
    use wgflow::nn::metrics::{Metrics, SparseCategoricalAccuracy};
    use wgflow::nn::{FitArgs, Functional};
    let dev = images.device();
    let n = images.shape()[0];
    let mut f = Functional::new();
    let img = f.input_named(&[28, 28, 1], "image")?;
    let m = f.input_named(&[6], "meta")?;
    let h = f.call(Flatten::new(), &[img])?;
    let h = f.call(Concatenate::new(-1), &[h, m])?;
    let class = f.call(Dense::new(10), &[h])?;
    let value = f.call(Dense::new(1), &[m])?;
    let mut model = f.build_multi(&[m, img], &[class, value])?;
    let meta = ops::random_normal(&[n, 6], 0.0, 1.0, DType::F32, 7, dev)?;
    let targets = ops::random_normal(&[n, 1], 0.0, 1.0, DType::F32, 8, dev)?;
    let (images, labels) = (images.clone(), labels.clone());
model.compile_outputs(
    Adam::new(1e-3),
    vec![Box::new(SparseCategoricalCrossentropy::new(true)), Box::new(MeanSquaredError)],
    &[1.0, 0.5],                                                      // loss_weights
    vec![Metrics(vec![Box::new(SparseCategoricalAccuracy::new())]), Metrics(vec![])],
)?;
let (xs, ys) = ([meta, images], [labels, targets]);                 // in the model's order
let history = model.fit_many(&xs, &ys, FitArgs::default())?;
let logs = model.evaluate_many(&xs, &ys, 32)?;
    println!("{:?} {logs:?}", history.get("loss"));
    Ok(())
}

/// "Nested models, frozen layers and keras.applications".
#[rustfmt::skip]
fn transfer(dev: &wgflow::Device) -> wgflow::Result<()> {
    use wgflow::nn::layers::Conv2D;
    use wgflow::nn::losses::SparseCategoricalCrossentropy;
    let mut trained = Sequential::new().add(Conv2D::new(4, [3, 3]).activation(wgflow::nn::Activation::Relu));
    trained.build(&[32, 32, 3], dev)?;
    trained.save("base.keras")?;
use wgflow::nn::{Functional, Layer, ModelLayer};
use wgflow::nn::layers::{Dense, GlobalAveragePooling2D};

let mut base = ModelLayer::new(wgflow::nn::load_model("base.keras")?); // a trained Sequential or functional model
base.set_trainable(false)?;                                           // base.trainable = False
let mut f = Functional::new();
let x = f.input(&[32, 32, 3])?;
let b = f.layer(base);
let h = f.apply_training(b, &[x], false)?;                            // base(x, training=False)
let h = f.call(GlobalAveragePooling2D::new(), &[h])?;
let y = f.call(Dense::new(5), &[h])?;
let mut model = f.build(y)?;                                          // compile and fit train the head only
    model.compile(Adam::new(1e-2), SparseCategoricalCrossentropy::new(true), ());
    let images = ops::random_normal(&[8, 32, 32, 3], 0.0, 1.0, DType::F32, 9, dev)?;
    let labels = Tensor::from_vec((0..8).map(|i| i % 5).collect::<Vec<i32>>(), &[8], dev)?;
    model.fit(&images, &labels, wgflow::nn::FitArgs { verbose: false, ..Default::default() })?;
    assert_eq!(model.trainable_variables().len(), 2, "only the head trains");
    Ok(())
}
