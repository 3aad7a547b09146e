//! A small CNN trained on MNIST with `fit`, on the default device.
//!
//!     cargo run --release --example train_mnist -- [--data-dir DIR] [--epochs N]
//!         [--batch-size N] [--logdir DIR] [--checkpoint-dir DIR] [--resume]
//!         [--train-size N] [--run-eagerly] [--export-dir DIR] [--save-keras FILE.keras]
//!         [--strategy one|mirrored|multi-worker] [--devices gpu:0,gpu:1] [--seed N]
//!         [--dropout RATE] [--optimizer adam|sgd] [--learning-rate X]
//!         [--steps-per-epoch N] [--backup-dir DIR]
//!         [--mixed-precision[=mixed_float16|mixed_bfloat16]]
//!
//! `--strategy mirrored` trains one replica per device of `--devices`
//! (default: every visible GPU, else the CPU) with `MirroredStrategy`;
//! `--batch-size` is then the global batch, split across the replicas.
//! `--strategy multi-worker` (cargo feature `mpi`) is one worker of an MPI
//! job with `MultiWorkerMirroredStrategy`:
//!
//!     cargo build --release --features mpi --example train_mnist
//!     mpirun -np 2 target/release/examples/train_mnist --strategy multi-worker
//!
//! Worker 0 alone prints the progress and writes logs, checkpoints and the
//! export; every worker prints its weights' fingerprint at the end.
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
use wgflow::distribute::{Mirrored, MirroredStrategy, MultiWorkerMirroredStrategy};
use wgflow::io::checkpoint::{Checkpoint, CheckpointManager, OptimizerState};
use wgflow::nn::callbacks::{BackupAndRestore, Callback, ModelCheckpoint, TensorBoard};
use wgflow::nn::layers::{Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::{Adam, Optimizer, SGD};
use wgflow::nn::{Activation, FitArgs, History, Logs, Model, Sequential, set_random_seed};
use wgflow::{Device, Tensor, config, saved_model};

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
    /// Save the trained model in Keras 3's format (FILE.keras), loadable by
    /// `keras.models.load_model` and `wgflow::nn::load_model`.
    #[arg(long, value_name = "FILE")]
    save_keras: Option<PathBuf>,
    /// One device, MirroredStrategy over --devices, or one worker of an MPI
    /// job (multi-worker: launch with mpirun; needs the `mpi` feature).
    #[arg(long, value_enum, default_value_t = Strategy::One)]
    strategy: Strategy,
    /// The device of --strategy one (default: the default device), the
    /// replica devices of --strategy mirrored, or of each worker with
    /// multi-worker (default: every visible GPU, else the CPU).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    devices: Vec<String>,
    /// Seed of the weights' initialization and of the shuffle order.
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,
    /// Dropout rate before the classifier (0 turns it off).
    #[arg(long, value_name = "RATE", default_value_t = 0.25)]
    dropout: f64,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = Opt::Adam)]
    optimizer: Opt,
    /// Learning rate (default 0.001 for Adam, 0.01 for SGD).
    #[arg(long, value_name = "X")]
    learning_rate: Option<f64>,
    /// Keras' steps_per_epoch: batches per epoch (default: the whole set).
    #[arg(long, value_name = "N")]
    steps_per_epoch: Option<usize>,
    /// Keras mixed precision: the "mixed_float16" policy (layers compute in
    /// f16, variables stay f32, dynamic loss scaling), or with
    /// `=mixed_bfloat16` that policy (bf16 compute, no loss scaling).
    #[arg(
        long,
        value_name = "POLICY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "mixed_float16",
        value_parser = ["mixed_float16", "mixed_bfloat16"]
    )]
    mixed_precision: Option<String>,
    /// Keras' BackupAndRestore: back up after every epoch to DIR, and resume
    /// an interrupted run from it (deleted when training completes).
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Strategy {
    One,
    Mirrored,
    MultiWorker,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Opt {
    Adam,
    Sgd,
}

/// The model on one device, or mirrored over several.
enum Trainer {
    One(Box<Sequential>),
    Mirrored(Mirrored<Sequential>),
}

impl Trainer {
    fn first(&mut self) -> &mut Sequential {
        match self {
            Trainer::One(m) => m,
            Trainer::Mirrored(m) => &mut m.replicas_mut()[0],
        }
    }

    fn fit(&mut self, x: &Tensor, y: &Tensor, args: FitArgs) -> wgflow::Result<History> {
        match self {
            Trainer::One(m) => m.fit(x, y, args),
            Trainer::Mirrored(m) => m.fit(x, y, args),
        }
    }

    fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch: usize) -> wgflow::Result<Logs> {
        match self {
            Trainer::One(m) => m.evaluate(x, y, batch),
            Trainer::Mirrored(m) => m.evaluate(x, y, batch),
        }
    }
}

fn main() {
    common::init_logging();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The strategy of --strategy: none, one process's, or an MPI job's.
enum Dist {
    One,
    Mirrored(MirroredStrategy),
    MultiWorker(MultiWorkerMirroredStrategy),
}

fn run(args: Args) -> wgflow::Result<()> {
    if let Some(p) = &args.mixed_precision {
        wgflow::nn::mixed_precision::set_global_policy(p)?;
    }
    let names: Vec<&str> = args.devices.iter().map(String::as_str).collect();
    let dist = match args.strategy {
        Strategy::One => Dist::One,
        Strategy::Mirrored if names.is_empty() => Dist::Mirrored(MirroredStrategy::default()?),
        Strategy::Mirrored => Dist::Mirrored(MirroredStrategy::new(&names)?),
        Strategy::MultiWorker if names.is_empty() => Dist::MultiWorker(MultiWorkerMirroredStrategy::default()?),
        Strategy::MultiWorker => Dist::MultiWorker(MultiWorkerMirroredStrategy::new(&names)?),
    };
    // Worker 0 alone prints (and writes files); the others train quietly.
    let chief = match &dist {
        Dist::MultiWorker(s) => s.is_chief(),
        _ => true,
    };
    macro_rules! say {
        ($($t:tt)*) => { if chief { println!($($t)*) } };
    }
    let list = |ds: &[Device]| {
        ds.iter()
            .map(|d| format!("{d} ({})", d.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let device = match &dist {
        Dist::One => match names.as_slice() {
            [] => config::default_device()?,
            [one] => config::device(one)?,
            _ => {
                return Err(wgflow::Error::Unimplemented {
                    what: "several --devices with --strategy one".into(),
                    msg: "give one device, or use --strategy mirrored".into(),
                });
            }
        },
        Dist::Mirrored(s) => s.devices()[0].clone(),
        Dist::MultiWorker(s) => s.devices()[0].clone(),
    };
    match &dist {
        Dist::One => say!(
            "Training on {device} ({}){}",
            device.name(),
            args.mixed_precision
                .as_ref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default()
        ),
        Dist::Mirrored(s) => say!(
            "Training with MirroredStrategy on {} replicas: {}",
            s.num_replicas_in_sync(),
            list(s.devices())
        ),
        Dist::MultiWorker(s) => println!(
            "Worker {} of {} (pid {}; MultiWorkerMirroredStrategy, {} replicas in sync): {}",
            s.worker(),
            s.num_workers(),
            std::process::id(),
            s.num_replicas_in_sync(),
            list(s.devices())
        ),
    }

    let (x_train, y_train, x_test, y_test): (Tensor, Tensor, Tensor, Tensor) = match &args.data_dir {
        Some(dir) => {
            say!("Reading MNIST from {}", dir.display());
            mnist::load(dir)?
        }
        None => {
            say!(
                "No --data-dir: using {} synthetic handwritten digits (and 2000 for testing)",
                args.train_size
            );
            let (x, y) = synthetic::digits(args.train_size, 1)?;
            let (tx, ty) = synthetic::digits(2000, 2)?;
            (x, y, tx, ty)
        }
    };

    let (seed, dropout) = (args.seed, args.dropout);
    let build = |d: &Device| -> wgflow::Result<Sequential> {
        set_random_seed(seed);
        let mut m = Sequential::new()
            .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
            .add(MaxPooling2D::new([2, 2]))
            .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
            .add(MaxPooling2D::new([2, 2]))
            .add(Flatten::new());
        if dropout > 0.0 {
            m = m.add(Dropout::new(dropout));
        }
        m = m.add(Dense::new(10));
        m.build(&[28, 28, 1], d)?;
        Ok(m)
    };
    let optimizer = || -> Optimizer {
        match args.optimizer {
            Opt::Adam => Adam::new(args.learning_rate.unwrap_or(1e-3)).into(),
            Opt::Sgd => SGD::new(args.learning_rate.unwrap_or(1e-2)).into(),
        }
    };
    let loss = SparseCategoricalCrossentropy::new(true);
    let mut model = match &dist {
        Dist::One => {
            let mut m = build(&device)?;
            m.compile(optimizer(), loss, SparseCategoricalAccuracy::new());
            // fit traces its step once and replays it; --run-eagerly runs op by op.
            m.set_run_eagerly(args.run_eagerly)?;
            Trainer::One(Box::new(m))
        }
        Dist::Mirrored(s) => {
            let mut m = s.scope(build)?;
            m.compile(optimizer(), loss, SparseCategoricalAccuracy::new());
            m.set_run_eagerly(args.run_eagerly);
            Trainer::Mirrored(m)
        }
        Dist::MultiWorker(s) => {
            let mut m = s.scope(build)?;
            m.compile(optimizer(), loss, SparseCategoricalAccuracy::new());
            m.set_run_eagerly(args.run_eagerly);
            Trainer::Mirrored(m)
        }
    };
    if chief {
        print!("{}", model.first().summary());
    }

    let steps_per_epoch = args
        .steps_per_epoch
        .unwrap_or(x_train.shape()[0].div_ceil(args.batch_size.max(1))) as u64;
    let mut initial_epoch = 0;
    if args.resume {
        let manager = CheckpointManager::new(
            Checkpoint::new().track("model", model.first().named_variables()),
            &args.checkpoint_dir,
            5,
        );
        let opt = model
            .first()
            .compiled()
            .as_mut()
            .map(|c| &mut c.optimizer as &mut dyn OptimizerState);
        match manager.restore_latest(opt)? {
            Some(meta) => {
                initial_epoch = (meta.step / steps_per_epoch) as usize;
                say!(
                    "Resumed from {} (step {}, epoch {initial_epoch})",
                    manager.latest_checkpoint().unwrap().display(),
                    meta.step
                );
            }
            None => say!("No checkpoint in {}: starting fresh", args.checkpoint_dir.display()),
        }
        if let Trainer::Mirrored(m) = &mut model {
            m.copy_first_to_all()?;
        }
    }

    let mut callbacks: Vec<Box<dyn Callback>> = vec![
        Box::new(TensorBoard::new(&args.logdir)),
        Box::new(ModelCheckpoint::new(&args.checkpoint_dir).max_to_keep(3)),
    ];
    if let Some(dir) = &args.backup_dir {
        callbacks.push(Box::new(BackupAndRestore::new(dir)));
    }
    let history = model.fit(
        &x_train,
        &y_train,
        FitArgs {
            batch_size: args.batch_size,
            epochs: initial_epoch + args.epochs,
            initial_epoch,
            validation_data: Some((x_test.clone(), y_test.clone())),
            callbacks,
            device: Some(device.clone()),
            seed: args.seed,
            steps_per_epoch: args.steps_per_epoch,
            ..FitArgs::default()
        },
    )?;
    let test = model.evaluate(&x_test, &y_test, 256)?;
    let acc = test
        .iter()
        .find(|(k, _)| k == "sparse_categorical_accuracy")
        .map_or(0.0, |(_, v)| *v);
    say!("Final test loss {:.4}, test accuracy {:.4}", test[0].1, acc);
    if let Some(l) = history.get("loss") {
        say!(
            "Training loss per epoch: {:?}",
            l.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>()
        );
    }
    say!("TensorBoard logs: tensorboard --logdir {}", args.logdir.display());
    say!("Checkpoints: {}", args.checkpoint_dir.display());
    // Equal on every replica and worker: compare runs and workers by it.
    let fingerprint = fingerprint(model.first())?;
    match &dist {
        Dist::MultiWorker(s) => println!("Worker {}: weights fingerprint {fingerprint:016x}", s.worker()),
        _ => println!("Weights fingerprint {fingerprint:016x}"),
    }
    if let (Some(file), true) = (&args.save_keras, chief) {
        if let Trainer::Mirrored(m) = &mut model {
            m.sync_on_read()?;
        }
        model.first().save(file)?;
        println!("Keras model: {}", file.display());
    }
    if let (Some(base), true) = (&args.export_dir, chief) {
        let dir = base.join(saved_model::next_version(base)?.to_string());
        if let Trainer::Mirrored(m) = &mut model {
            m.sync_on_read()?;
        }
        model.first().export(&dir)?;
        println!(
            "SavedModel: {} (signature serving_default, input 'inputs')",
            dir.display()
        );
    }
    Ok(())
}

/// FNV-1a over the bits of every trainable weight.
fn fingerprint(m: &Sequential) -> wgflow::Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in m.trainable_variables() {
        for x in v.value().to_vec::<f32>()? {
            for b in x.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    Ok(h)
}
