//! A small CNN trained on MNIST with `fit`, on the default device.
//!
//!     cargo run --release --example train_mnist -- [--data-dir DIR] [--epochs N]
//!         [--batch-size N] [--logdir DIR] [--checkpoint-dir DIR] [--resume]
//!         [--train-size N] [--run-eagerly]
//!
//! Without `--data-dir` it trains on a synthetic handwritten-digit set
//! generated in code (`--train-size` examples, 10000 by default), so it runs
//! on a fresh machine. Writes TensorBoard logs to `--logdir` (default
//! logs/mnist) and checkpoints to `--checkpoint-dir` (default
//! checkpoints/mnist); `--resume` continues from the latest checkpoint.

mod common;

use clap::Parser;
use std::path::PathBuf;
use wgflow::data::{mnist, synthetic};
use wgflow::io::checkpoint::{Checkpoint, CheckpointManager, OptimizerState};
use wgflow::nn::callbacks::{ModelCheckpoint, TensorBoard};
use wgflow::nn::layers::{Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, FitArgs, Model, Sequential, set_random_seed};
use wgflow::{Tensor, config, saved_model};

/// Trains a small CNN on MNIST (or synthetic digits) with `fit`, writing
/// TensorBoard logs and checkpoints.
#[derive(Parser)]
struct Args {
    /// The MNIST IDX files (raw or .gz); without it, synthetic digits.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Epochs to train (after the resumed ones with --resume).
    #[arg(long, value_name = "N", default_value_t = 3)]
    epochs: usize,
    /// Examples per training step.
    #[arg(long, value_name = "N", default_value_t = 128)]
    batch_size: usize,
    /// TensorBoard logs (train/ and validation/ runs).
    #[arg(long, value_name = "DIR", default_value = "logs/mnist")]
    logdir: PathBuf,
    /// Checkpoints, one per epoch (the last 3 kept).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/mnist")]
    checkpoint_dir: PathBuf,
    /// Continue from the latest checkpoint in --checkpoint-dir.
    #[arg(long)]
    resume: bool,
    /// Synthetic training examples (without --data-dir).
    #[arg(long, value_name = "N", default_value_t = 10000)]
    train_size: usize,
    /// Run every op eagerly instead of a traced training step.
    #[arg(long)]
    run_eagerly: bool,
    /// Export the trained model as a TensorFlow SavedModel to DIR/<version>
    /// (version 1, or the next free number), as TF Serving expects.
    #[arg(long, value_name = "DIR")]
    export_dir: Option<PathBuf>,
}

fn main() {
    common::init_logging();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> wgflow::Result<()> {
    let device = config::default_device()?;
    println!("Training on {device} ({})", device.name());
    set_random_seed(42);

    let (x_train, y_train, x_test, y_test): (Tensor, Tensor, Tensor, Tensor) = match &args.data_dir {
        Some(dir) => {
            println!("Reading MNIST from {}", dir.display());
            mnist::load(dir)?
        }
        None => {
            println!(
                "No --data-dir: using {} synthetic handwritten digits (and 2000 for testing)",
                args.train_size
            );
            let (x, y) = synthetic::digits(args.train_size, 1)?;
            let (tx, ty) = synthetic::digits(2000, 2)?;
            (x, y, tx, ty)
        }
    };

    let mut model = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dropout::new(0.25))
        .add(Dense::new(10));
    model.build(&[28, 28, 1], &device)?;
    print!("{}", model.summary());
    model.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    // fit traces its step once and replays it; --run-eagerly runs op by op.
    model.set_run_eagerly(args.run_eagerly)?;

    let steps_per_epoch = x_train.shape()[0].div_ceil(args.batch_size) as u64;
    let mut initial_epoch = 0;
    if args.resume {
        let manager = CheckpointManager::new(
            Checkpoint::new().track("model", model.named_variables()),
            &args.checkpoint_dir,
            5,
        );
        let opt = model
            .compiled()
            .as_mut()
            .map(|c| &mut c.optimizer as &mut dyn OptimizerState);
        match manager.restore_latest(opt)? {
            Some(meta) => {
                initial_epoch = (meta.step / steps_per_epoch) as usize;
                println!(
                    "Resumed from {} (step {}, epoch {initial_epoch})",
                    manager.latest_checkpoint().unwrap().display(),
                    meta.step
                );
            }
            None => println!("No checkpoint in {}: starting fresh", args.checkpoint_dir.display()),
        }
    }

    let history = model.fit(
        &x_train,
        &y_train,
        FitArgs {
            batch_size: args.batch_size,
            epochs: initial_epoch + args.epochs,
            initial_epoch,
            validation_data: Some((x_test.clone(), y_test.clone())),
            callbacks: vec![
                Box::new(TensorBoard::new(&args.logdir)),
                Box::new(ModelCheckpoint::new(&args.checkpoint_dir).max_to_keep(3)),
            ],
            device: Some(device.clone()),
            ..FitArgs::default()
        },
    )?;
    let test = model.evaluate(&x_test, &y_test, 256)?;
    let acc = test
        .iter()
        .find(|(k, _)| k == "sparse_categorical_accuracy")
        .map_or(0.0, |(_, v)| *v);
    println!("Final test loss {:.4}, test accuracy {:.4}", test[0].1, acc);
    if let Some(l) = history.get("loss") {
        println!(
            "Training loss per epoch: {:?}",
            l.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>()
        );
    }
    println!("TensorBoard logs: tensorboard --logdir {}", args.logdir.display());
    println!("Checkpoints: {}", args.checkpoint_dir.display());
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
