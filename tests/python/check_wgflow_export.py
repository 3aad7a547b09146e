"""Loads a wgflow export with TensorFlow: runs serving_default on x{1,7,64}.npy
(writing tf{b}.npy), prints `saved_model_cli show --all` and the bundle's
variables (tf.train.list_variables). Usage: check_wgflow_export.py EXPORT WORKDIR"""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

export, work = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(export)
sig = loaded.signatures["serving_default"]
(key,) = sig.structured_input_signature[1].keys()
for b in (1, 7, 64):
    x = np.load(os.path.join(work, f"x{b}.npy"))
    out = sig(**{key: tf.constant(x)})
    np.save(os.path.join(work, f"tf{b}.npy"), out["output_0"].numpy())
cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
show = subprocess.run([cli, "show", "--dir", export, "--all"], capture_output=True, text=True, check=True)
print(show.stdout)
for name, shape in tf.train.list_variables(os.path.join(export, "variables", "variables")):
    print(f"VARIABLE {name} {shape}")
