//! TensorFlow's SavedModel format, read and written (`tf.saved_model`).

pub mod bundle;
pub mod proto;
