"""Loads a wgflow export with TensorFlow: runs serving_default on x{1,7,64}.npy
(or x{b}_{input}.npy per input of a model of several), writing tf{b}.npy
(output_0) and tf{b}_{output}.npy for every output, prints `saved_model_cli show --all` and the bundle's
variables (tf.train.list_variables). Usage: check_wgflow_export.py EXPORT WORKDIR"""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

export, work = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(export)
sig = loaded.signatures["serving_default"]
keys = sorted(sig.structured_input_signature[1].keys())
for b in (1, 7, 64):
    # One input reads x{b}.npy; several read x{b}_{name}.npy each.
    if len(keys) == 1:
        feeds = {keys[0]: np.load(os.path.join(work, f"x{b}.npy"))}
    else:
        feeds = {k: np.load(os.path.join(work, f"x{b}_{k}.npy")) for k in keys}
    out = sig(**{k: tf.constant(v) for k, v in feeds.items()})
    np.save(os.path.join(work, f"tf{b}.npy"), out["output_0"].numpy())
    for k, v in out.items():
        np.save(os.path.join(work, f"tf{b}_{k}.npy"), v.numpy())
cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
show = subprocess.run([cli, "show", "--dir", export, "--all"], capture_output=True, text=True, check=True)
print(show.stdout)
for name, shape in tf.train.list_variables(os.path.join(export, "variables", "variables")):
    print(f"VARIABLE {name} {shape}")
