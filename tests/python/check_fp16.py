"""TensorFlow loads a SavedModel wgflow converted to compute in f16 and
picks the same class as the f32 model: check_fp16.py F32_DIR F16_DIR X.npy"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

f32_dir, f16_dir, x = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
outs = []
for d in (f32_dir, f16_dir):
    sig = tf.saved_model.load(d).signatures["serving_default"]
    out = sig(inputs=tf.constant(x))
    t = next(iter(out.values()))
    assert t.dtype == tf.float32, t.dtype
    outs.append(t.numpy())
a, b = outs
agree = (a.argmax(1) == b.argmax(1)).mean()
err = np.abs(a - b).max()
assert agree >= 0.99 and err < 2e-2, (agree, err)
print("OK", agree, err)
