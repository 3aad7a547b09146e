"""Keras 3's LossScaleOptimizer(Adam(lr), dynamic_growth_steps=2) on
w = [1, -2, 3] with scaled gradients c g * scale (c changing per step), one
non-finite step among finite ones, for three learning rates: 0.1
("constant"), ExponentialDecay(0.1, 2, 0.5) ("exponential") and
CosineDecay(0.1, 4, alpha=0.1) ("cosine"), so that the count of steps the
schedule sees shows too. Prints, per step, the rate's kind, the scale after
the step, `iterations` and w, as JSON lines, for tests/mixed_precision.rs to
compare with wgflow."""
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras
import numpy as np

rates = {
    "constant": lambda: 0.1,
    "exponential": lambda: keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5),
    "cosine": lambda: keras.optimizers.schedules.CosineDecay(0.1, decay_steps=4, alpha=0.1),
}
g = np.array([0.5, -1.0, 2.0], dtype=np.float32)
for kind, lr in rates.items():
    w = keras.Variable(np.array([1.0, -2.0, 3.0], dtype=np.float32))
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(lr()), dynamic_growth_steps=2)
    opt.build([w])
    # Gradients that change between steps, so that Adam's bias correction
    # (and so the count of steps taken) shows in the variable.
    for c in [1.0, -0.5, None, 2.0, 0.25, -1.5]:
        scale = float(opt.dynamic_scale.numpy())
        grad = np.full(3, np.inf, dtype=np.float32) if c is None else g * np.float32(c * scale)
        opt.apply([keras.ops.convert_to_tensor(grad)], [w])
        print(json.dumps({
            "kind": kind,
            "scale": float(opt.dynamic_scale.numpy()),
            "iterations": int(opt.iterations.numpy()),
            "w": [float(v) for v in w.numpy()],
        }))
