"""Keras' own values for losses and metrics, from the configs wgflow writes.

usage: keras_losses.py SPEC.json DIR
SPEC is a list of {"what": "loss" | "metric", "config": <a Keras config>,
"y_true": [npy names], "y_pred": [npy names]}: a loss is called on the
first pair (with "sample_weight": an npy name, weighted by it); a metric is
updated with every pair in turn (weighted by "sample_weight" likewise). Prints one JSON list: floats, or for a
case with "flat": true the loss's values as a flat list.
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np  # noqa: E402
import keras  # noqa: E402

spec = json.load(open(sys.argv[1]))
base = sys.argv[2]
out = []
for case in spec:
    yt = [np.load(os.path.join(base, f)) for f in case["y_true"]]
    yp = [np.load(os.path.join(base, f)) for f in case["y_pred"]]
    if case["what"] == "loss":
        fn = keras.losses.get(case["config"])
        # As compile does: a function is wrapped, which squeezes or expands
        # a trailing 1 and takes the mean over examples.
        if not isinstance(fn, keras.losses.Loss):
            from keras.src.losses.losses import LossFunctionWrapper

            fn = LossFunctionWrapper(fn)
        sw = case.get("sample_weight")
        sw = None if sw is None else np.load(os.path.join(base, sw))
        v = fn(yt[0], yp[0], sample_weight=sw)
        if case.get("flat"):
            out.append(np.asarray(v, dtype="float64").reshape(-1).tolist())
        else:
            out.append(float(v))
    else:
        # As compile resolves it ("accuracy" by the shapes of the data).
        from keras.src.trainers.compile_utils import get_metric

        m = get_metric(case["config"], yt[0], yp[0])
        sws = case.get("sample_weight") or [None] * len(yt)
        if isinstance(sws, str):
            sws = [sws] * len(yt)
        for a, b, sw in zip(yt, yp, sws):
            sw = None if sw is None else np.load(os.path.join(base, sw))
            m.update_state(a, b, sample_weight=sw)
        r = float(m.result())
        out.append([r] if case.get("flat") else r)
print(json.dumps(out))
