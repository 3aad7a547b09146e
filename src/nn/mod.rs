//! Keras for wgflow: layers, models (`Sequential` and custom), losses,
//! optimizers, metrics, callbacks, `fit`. Names and defaults follow Keras.

pub mod activations;
pub mod callbacks;
pub mod initializers;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod optimizers;
pub mod progress;

pub use activations::Activation;
pub use initializers::{Initializer, set_random_seed};
pub use layers::Layer;
pub use model::{Compiled, FitArgs, History, Logs, Model, Sequential};
