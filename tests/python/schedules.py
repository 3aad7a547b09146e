"""Keras 3's learning-rate schedules at steps 0..40, one JSON line per
schedule ({"name", "lr": [...]}), for tests/training.rs to compare with
wgflow's (host and device forms)."""
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras

S = keras.optimizers.schedules
schedules = {
    "exponential": S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.6),
    "exponential_staircase": S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.6, staircase=True),
    "cosine": S.CosineDecay(0.1, decay_steps=30, alpha=0.2),
    "piecewise": S.PiecewiseConstantDecay([5, 12, 30], [0.1, 0.05, 0.01, 0.002]),
    "polynomial": S.PolynomialDecay(0.1, decay_steps=25, end_learning_rate=0.001, power=2.0),
    "polynomial_cycle": S.PolynomialDecay(0.1, decay_steps=9, end_learning_rate=0.01, power=0.5, cycle=True),
    "inverse_time": S.InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5),
    "inverse_time_staircase": S.InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True),
}
for name, s in schedules.items():
    print(json.dumps({"name": name, "lr": [float(s(step)) for step in range(41)]}))
