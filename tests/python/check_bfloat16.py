"""Loads wgflow's mixed_bfloat16 files with the real tools: the Keras file
(printing each layer's dtype policy, predicting x.npy into keras.npy) and
the SavedModel (serving_default on x.npy into tf.npy, printing the dtypes
of its graph). Usage: check_bfloat16.py DIR (holding m.keras, export/, x.npy)"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

d = sys.argv[1]
x = np.load(os.path.join(d, "x.npy"))
m = keras.models.load_model(os.path.join(d, "m.keras"))
for l in m.layers:
    print("POLICY", type(l).__name__, l.dtype_policy.name)
np.save(os.path.join(d, "keras.npy"), np.asarray(m.predict(x, verbose=0), dtype=np.float32))

sig = tf.saved_model.load(os.path.join(d, "export")).signatures["serving_default"]
(key,) = sig.structured_input_signature[1].keys()
out = sig(**{key: tf.constant(x)})
t = next(iter(out.values()))
print("OUTPUT", t.dtype.name)
np.save(os.path.join(d, "tf.npy"), t.numpy().astype(np.float32))
types = sorted({op.get_attr("T").name for op in sig.graph.get_operations() if "T" in op.node_def.attr})
print("GRAPH TYPES", types)
print("OK")
