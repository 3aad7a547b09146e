"""TensorFlow's side of `cargo bench --bench training -- --tf`: Keras
`train_on_batch` samples/s of the same two models on the CPU (batch 128,
Adam 1e-3, sparse categorical cross-entropy from logits, accuracy), after
3 warm-up steps, timed over at least 10 steps and 2 seconds. Prints one
line per model: `<key> <samples/s>`."""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np
import tensorflow as tf


def cnn():
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Dense(10),
    ])


def mlp():
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(256, activation="relu"),
        tf.keras.layers.Dense(10),
    ])


def rate(build, batch=128):
    tf.keras.utils.set_random_seed(1)
    m = build()
    m.compile(
        tf.keras.optimizers.Adam(1e-3),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = np.random.default_rng(1).random((batch, 28, 28, 1), dtype=np.float32)
    y = (np.arange(batch) % 10).astype(np.int32)
    for _ in range(3):
        m.train_on_batch(x, y)
    steps, start = 0, time.perf_counter()
    while steps < 10 or time.perf_counter() - start < 2.0:
        m.train_on_batch(x, y)
        steps += 1
    return steps * batch / (time.perf_counter() - start)


for key in sys.argv[1:] or ["cnn", "mlp"]:
    print(key, rate({"cnn": cnn, "mlp": mlp}[key]), flush=True)
