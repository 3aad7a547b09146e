"""TensorFlow Lite checks for tests/tflite.rs.

  digits DIR      scikit-learn's load_digits upscaled to 28x28 (x.npy,
                  y.npy, rep.npy); a Keras CNN and MLP trained on them
                  (cnn.keras, mlp.keras); TensorFlow's own converter's
                  files for each (tf_{cnn,mlp}_{none,default,float16,int8}.tflite).
  eval X Y F...   prints one JSON line per .tflite F: its accuracy on images
                  X with labels Y, its size, and its weight tensors' types
                  and per-channel scale counts.
  predict X F...  runs each .tflite F through its serving_default signature
                  on X and saves the output as F.npy.
  multi F NAME=X...  runs F's serving_default with input NAME fed the .npy X
                  (each input), saving output K as F.K.npy.
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from tensorflow.lite.python import schema_py_generated as s  # noqa: E402


def interpreter(path):
    return tf.lite.Interpreter(model_path=path)


def constants(path):
    """The tensors of a .tflite that hold data (weights, biases)."""
    with open(path, "rb") as f:
        buf = f.read()
    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(buf, 0))
    return [t for g in m.subgraphs for t in g.tensors
            if m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data) > 0]


def run(path, x):
    it = interpreter(path)
    runner = it.get_signature_runner("serving_default")
    name = it.get_signature_list()["serving_default"]["inputs"][0]
    out = runner(**{name: x.astype(np.float32)})
    return next(iter(out.values()))


def digits(out):
    import keras
    from sklearn.datasets import load_digits

    d = load_digits()
    x = tf.image.resize(d.images[..., None].astype("float32") / 16.0, (28, 28)).numpy()
    y = d.target.astype("int64")
    np.save(os.path.join(out, "x.npy"), x[1400:])
    np.save(os.path.join(out, "y.npy"), y[1400:])
    np.save(os.path.join(out, "rep.npy"), x[:200])
    keras.utils.set_random_seed(3)
    L = keras.layers
    models = {
        "cnn": keras.Sequential([
            keras.Input((28, 28, 1)),
            L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
            L.Flatten(), L.Dense(10)]),
        "mlp": keras.Sequential([
            keras.Input((28, 28, 1)), L.Flatten(),
            L.Dense(256, activation="relu"), L.Dense(10)]),
    }
    rep = x[:200]
    for name, m in models.items():
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        m.fit(x[:1400], y[:1400], epochs=8, batch_size=32, verbose=0)
        m.save(os.path.join(out, f"{name}.keras"))
        sm = os.path.join(out, f"{name}_sm")
        m.export(sm, verbose=False)
        for kind in ["none", "default", "float16", "int8"]:
            c = tf.lite.TFLiteConverter.from_saved_model(sm)
            if kind != "none":
                c.optimizations = [tf.lite.Optimize.DEFAULT]
            if kind == "float16":
                c.target_spec.supported_types = [tf.float16]
            if kind == "int8":
                c.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
            with open(os.path.join(out, f"tf_{name}_{kind}.tflite"), "wb") as f:
                f.write(c.convert())
    print("OK")


def main():
    cmd = sys.argv[1]
    if cmd == "digits":
        digits(sys.argv[2])
    elif cmd == "eval":
        x, y = np.load(sys.argv[2]), np.load(sys.argv[3])
        for path in sys.argv[4:]:
            p = run(path, x)
            weights = []
            for t in constants(path):
                q = t.quantization
                if t.shape is not None and len(t.shape) >= 2 and t.type in (s.TensorType.INT8, s.TensorType.FLOAT16):
                    scales = q.scale if q is not None and q.scale is not None else []
                    zeros = q.zeroPoint if q is not None and q.zeroPoint is not None else []
                    weights.append({
                        "dtype": "int8" if t.type == s.TensorType.INT8 else "float16",
                        "shape": [int(d) for d in t.shape],
                        "scales": len(scales),
                        "zero_points_zero": bool(all(z == 0 for z in zeros)),
                    })
            print(json.dumps({"file": os.path.basename(path), "acc": float((p.argmax(-1) == y).mean()),
                              "size": os.path.getsize(path), "weights": weights}))
    elif cmd == "predict":
        x = np.load(sys.argv[2])
        for path in sys.argv[3:]:
            np.save(path + ".npy", run(path, x))
        print("OK")
    elif cmd == "multi":
        path = sys.argv[2]
        feeds = {}
        for arg in sys.argv[3:]:
            name, _, x = arg.partition("=")
            feeds[name] = np.load(x).astype(np.float32)
        it = interpreter(path)
        sig = it.get_signature_list()["serving_default"]
        print("inputs", sorted(sig["inputs"]), "outputs", sorted(sig["outputs"]))
        out = it.get_signature_runner("serving_default")(**feeds)
        for k, v in out.items():
            np.save(f"{path}.{k}.npy", v)
        print("OK")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
