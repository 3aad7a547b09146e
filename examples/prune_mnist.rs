//! Magnitude pruning of the MNIST CNN (tfmot's `prune_low_magnitude`), on
//! the default device:
//!
//!     cargo run --release --example prune_mnist -- [--data-dir DIR] [--epochs N]
//!         [--initial-sparsity S] [--final-sparsity S] [--begin-step N]
//!         [--end-step N] [--frequency N] [--export-dir DIR] [--log-dir DIR]
//!
//! Wraps the CNN's Conv2D and Dense layers, trains it with the
//! `UpdatePruningStep` callback under `PolynomialDecay`, strips the pruning
//! wrappers and prints the test accuracy and each kernel's sparsity; with
//! `--export-dir` it exports the stripped model as a SavedModel version.
//! The defaults fit the run: pruning begins at step 0, ends at two-thirds
//! of the run's steps, and updates the masks about twenty times, so the
//! final sparsity is reached and then fine-tuned. Without `--data-dir` it
//! trains on synthetic digits (`--train-size`).

mod common;

use clap::Parser;
use std::path::PathBuf;
use wgflow::data::{mnist, synthetic};
use wgflow::nn::callbacks::Callback;
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::pruning::{PolynomialDecay, PruningSummaries, UpdatePruningStep, prune_low_magnitude, strip_pruning};
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{Tensor, config, saved_model};

#[derive(Parser)]
struct Args {
    /// The MNIST IDX files (raw or .gz); without it, synthetic digits.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Epochs to train.
    #[arg(long, value_name = "N", default_value_t = 3)]
    epochs: usize,
    /// Examples per step.
    #[arg(long, value_name = "N", default_value_t = 128)]
    batch_size: usize,
    /// Synthetic training examples (without --data-dir).
    #[arg(long, value_name = "N", default_value_t = 10000)]
    train_size: usize,
    /// Sparsity when pruning begins.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    initial_sparsity: f64,
    /// Sparsity from --end-step on.
    #[arg(long, value_name = "S", default_value_t = 0.5)]
    final_sparsity: f64,
    /// The first pruning step (default 0).
    #[arg(long, value_name = "N")]
    begin_step: Option<i64>,
    /// The last pruning step (default: two-thirds of the run's steps).
    #[arg(long, value_name = "N")]
    end_step: Option<i64>,
    /// Steps between mask updates (default: about twenty updates).
    #[arg(long, value_name = "N")]
    frequency: Option<i64>,
    /// Export the stripped model as a SavedModel to DIR/<version>.
    #[arg(long, value_name = "DIR")]
    export_dir: Option<PathBuf>,
    /// TensorBoard pruning summaries (each kernel's sparsity and threshold).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Seed of the weights and the shuffle order.
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,
    /// Run every op eagerly instead of a traced training step.
    #[arg(long)]
    run_eagerly: bool,
}

fn main() {
    common::init_logging();
    if let Err(e) = run(Args::parse()) {
        eprintln!("prune_mnist: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> wgflow::Result<()> {
    let device = config::default_device()?;
    println!("Device: {device}");
    let (x_train, y_train, x_test, y_test): (Tensor, Tensor, Tensor, Tensor) = match &args.data_dir {
        Some(dir) => mnist::load(dir)?,
        None => {
            println!(
                "No --data-dir: using {} synthetic digits (and 2000 for testing)",
                args.train_size
            );
            let (x, y) = synthetic::digits(args.train_size, 1)?;
            let (tx, ty) = synthetic::digits(2000, 2)?;
            (x, y, tx, ty)
        }
    };
    let steps = (x_train.shape()[0].div_ceil(args.batch_size.max(1)) * args.epochs) as i64;
    let begin = args.begin_step.unwrap_or(0);
    let end = args
        .end_step
        .unwrap_or((begin + (steps - begin).max(0) * 2 / 3).max(begin));
    let frequency = args.frequency.unwrap_or(((end - begin) / 20).max(1));
    let schedule = PolynomialDecay {
        initial_sparsity: args.initial_sparsity,
        final_sparsity: args.final_sparsity,
        begin_step: begin,
        end_step: end,
        power: 3.0,
        frequency,
    };
    println!(
        "Pruning {:.2} -> {:.2} over steps {begin}..={end}, every {frequency} steps ({steps} steps in all)",
        args.initial_sparsity, args.final_sparsity
    );

    set_random_seed(args.seed);
    let mut model = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10));
    model.build(&[28, 28, 1], &device)?;
    let mut model = prune_low_magnitude(model, schedule)?;
    model.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    model.set_run_eagerly(args.run_eagerly)?;
    let mut callbacks: Vec<Box<dyn Callback>> = vec![Box::new(UpdatePruningStep::new())];
    if let Some(dir) = &args.log_dir {
        callbacks.push(Box::new(PruningSummaries::new(dir)));
    }
    model.fit(
        &x_train,
        &y_train,
        FitArgs {
            batch_size: args.batch_size,
            epochs: args.epochs,
            seed: args.seed,
            callbacks,
            ..FitArgs::default()
        },
    )?;

    let mut model = strip_pruning(model)?;
    model.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let test = model.evaluate(&x_test, &y_test, 256)?;
    let acc = test
        .iter()
        .find(|(k, _)| k == "sparse_categorical_accuracy")
        .map_or(f64::NAN, |(_, v)| *v);
    println!("Test accuracy: {acc:.4}");
    for (name, v) in model.named_variables() {
        if name.ends_with("kernel") {
            let w = v.value().to_f64_vec()?;
            let zeros = w.iter().filter(|&&x| x == 0.0).count();
            println!(
                "Sparsity of {name}: {:.4} ({zeros} of {} weights zero)",
                zeros as f64 / w.len().max(1) as f64,
                w.len()
            );
        }
    }
    if let Some(base) = &args.export_dir {
        let dir = base.join(saved_model::next_version(base)?.to_string());
        model.export(&dir)?;
        println!(
            "SavedModel: {} (signature serving_default, input 'inputs')",
            dir.display()
        );
    }
    Ok(())
}
