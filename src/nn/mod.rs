//! Keras for wgflow: layers, models (`Sequential`, functional graphs from
//! [`Functional`], and custom ones), losses,
//! optimizers, metrics, callbacks, `fit`. Names and defaults follow Keras;
//! layouts follow TF's `channels_last` (NHWC activations, HWIO kernels).
//!
//! This is the top library layer. A training step is built from the layers
//! below: tensor ops ([`crate::ops`]) recorded by a
//! [`GradientTape`](crate::autodiff::GradientTape), traced and replayed as a
//! graph by [`mod@crate::function`], fed by [`crate::data::Dataset`], and
//! saved through [`crate::io::checkpoint`] and [`crate::io::summary`].
//!
//! ```
//! use wgflow::nn::layers::{Dense, Flatten};
//! use wgflow::nn::{Activation, Sequential};
//!
//! let model = Sequential::new()
//!     .add(Flatten::new())
//!     .add(Dense::new(128).activation(Activation::Relu))
//!     .add(Dense::new(10));
//! assert_eq!(model.layers().len(), 3);
//! ```

pub mod activations;
pub mod callbacks;
pub mod functional;
pub mod heads;
pub mod initializers;
pub mod keras;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod mixed_precision;
pub mod model;
pub mod optimizers;
pub mod progress;
pub mod pruning;
mod topology;

pub use activations::Activation;
pub use functional::{Functional, KerasTensor, LayerId};
pub use initializers::{Initializer, set_random_seed};
pub use keras::{load_model, load_model_on};
pub use layers::Layer;
pub use model::{Compiled, FitArgs, History, Logs, Model, ModelLayer, Sequential};
