//! TensorFlow's tensor bundle (`variables/variables.index` + `.data-*`).
