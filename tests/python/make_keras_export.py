"""Keras 3 and TensorFlow 2.21 exports for wgflow to load. Usage: make_keras_export.py DIR
- DIR/keras_cnn: a CNN with BatchNormalization trained a few steps, model.export;
  DIR/x{1,7,64}.npy inputs and DIR/keras{b}.npy Keras' predictions;
- DIR/half_plus_two: a tf.Module (y = 0.5 x + 2) saved with tf.saved_model.save."""
import os
import sys

import numpy as np
import tensorflow as tf
import keras

out = sys.argv[1]
keras.utils.set_random_seed(7)
model = keras.Sequential(
    [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile("adam", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((64, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, 64)
model.fit(x, y, epochs=2, batch_size=16, verbose=0)
model.export(os.path.join(out, "keras_cnn"))
for b in (1, 7, 64):
    xb = rng.random((b, 28, 28, 1), dtype=np.float32)
    np.save(os.path.join(out, f"x{b}.npy"), xb)
    np.save(os.path.join(out, f"keras{b}.npy"), model.predict(xb, verbose=0))


class HalfPlusTwo(tf.Module):
    def __init__(self):
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return {"y": self.a * x + self.b}


hpt = HalfPlusTwo()
tf.saved_model.save(hpt, os.path.join(out, "half_plus_two"), signatures={"serving_default": hpt.__call__})
