"""Writes two SavedModels whose serving_default casts its float32 input to
bfloat16 and back: DIR/round (tf.cast, round to nearest even) and
DIR/truncate (raw Cast with Truncate=True), and prints TensorFlow's
outputs for the input in DIR/x.npy. Usage: make_bf16_casts.py DIR"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

d = sys.argv[1]
x = np.load(os.path.join(d, "x.npy"))
for name, truncate in (("round", False), ("truncate", True)):
    m = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def f(x, truncate=truncate):
        h = tf.raw_ops.Cast(x=x, DstT=tf.bfloat16, Truncate=truncate)
        return {"y": tf.cast(h * tf.constant(3.0, tf.bfloat16), tf.float32)}

    m.f = f
    tf.saved_model.save(m, os.path.join(d, name), signatures={"serving_default": f})
    print(name.upper(), " ".join(repr(float(v)) for v in f(tf.constant(x))["y"].numpy()))
print("OK")
