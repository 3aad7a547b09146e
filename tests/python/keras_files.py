"""Keras 3 files for tests/keras.rs.

    python keras_files.py make DIR    # Keras-trained CNN and MLP as DIR/{cnn,mlp}.{keras,h5},
                                      # inputs DIR/x{1,7,64}.npy, predictions DIR/keras_{name}_{b}.npy
    python keras_files.py text DIR    # Keras-trained text models (Embedding) as DIR/{text,textmax,textcnn}.{keras,h5},
                                      # token inputs DIR/x{1,7,64}.npy, predictions as for make
    python keras_files.py graph DIR   # Keras-trained functional models (residual CNN, branches, merges,
                                      # shared layers, a transposed-convolution decoder) as
                                      # DIR/{resnet,branches,unet}.{keras,h5}, inputs
                                      # DIR/x{b}.npy (resnet) and DIR/xv{b}.npy (branches)
    python keras_files.py rnn DIR     # Keras-trained recurrent models (LSTM, GRU, SimpleRNN) as
                                      # DIR/{lstm,gru,bidi}.{keras,h5}, inputs DIR/x{b}.npy
    python keras_files.py apps DIR    # keras.applications (MobileNet, MobileNetV3Small, EfficientNetB0) with
                                      # random weights as DIR/{name}.keras, inputs DIR/{name}_x.npy, features
                                      # DIR/keras_{name}.npy; and a model of the layers and operations they use
                                      # (ops on tensors, Normalization, Cropping2D, training=False calls, ...)
                                      # as DIR/ops.{keras,h5}, inputs DIR/x{b}.npy, predictions DIR/keras_ops_{b}.npy
    python keras_files.py transfer DIR  # a functional model over a frozen Sequential base called with
                                      # training=False and a functional block, fitted, as DIR/transfer.keras;
                                      # inputs DIR/x{b}.npy, labels DIR/y.npy, predictions DIR/keras_transfer_{b}.npy;
                                      # the base in a Sequential model as DIR/stacked.keras (keras_stacked_{b}.npy);
                                      # a model ending in a nested functional one as DIR/ends.keras
                                      # (inputs DIR/xv{b}.npy, predictions DIR/keras_ends_{b}.npy); a model with an
                                      # augmentation Sequential as DIR/tutorial.keras (DIR/xa{b}.npy, keras_tutorial_{b}.npy)
    python keras_files.py affine DIR  # keras.ops.image.affine_transform on DIR/images.npy and DIR/transforms.npy for
                                      # every fill mode and interpolation -> DIR/affine_{mode}_{interpolation}.npy;
                                      # keras.ops.image.resize and Resizing(crop_to_aspect_ratio=True) to several sizes
                                      # -> DIR/{resize,crop}_{h}x{w}_{interpolation}.npy
    python keras_files.py resume DIR FILE X Y  # load DIR/FILE, train_on_batch(X, Y) -> DIR/resume1_{i}.npy
                                      # (model.weights), save DIR/resumed.keras, one more step -> resume2_{i}.npy
    python keras_files.py load DIR FILE[:PREFIX]...  # keras.models.load_model(DIR/FILE) on PREFIX{b}.npy
                                            # (x by default) -> DIR/kload_{FILE with . as _}_{b}.npy;
                                            # PREFIX a+b feeds two inputs, several outputs go to
                                            # kload_..._{b}_{k}.npy
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
from keras import layers

BATCHES = [1, 7, 64]
mode, out = sys.argv[1], sys.argv[2]

if mode == "make":
    keras.utils.set_random_seed(0)
    models = {
        "cnn": keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(4, 3, activation="relu"),
                layers.BatchNormalization(),
                layers.MaxPooling2D(2),
                layers.Conv2D(6, 3, padding="same", strides=2, activation="gelu"),
                layers.AveragePooling2D(2, padding="same"),
                layers.GlobalAveragePooling2D(),
                layers.Dropout(0.5),
                layers.Dense(10, activation="softmax"),
            ]
        ),
        "mlp": keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Flatten(),
                layers.Dense(32, activation="relu"),
                layers.Dense(10),
            ]
        ),
        "norms": keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(8, 3, strides=2),
                layers.GroupNormalization(groups=4, epsilon=1e-2),
                layers.Flatten(),
                layers.Dense(16),
                layers.RMSNormalization(epsilon=1e-3),
                layers.Dense(10),
            ]
        ),
        "lnmlp": keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Flatten(),
                layers.Dense(16),
                layers.LayerNormalization(epsilon=1e-2),
                layers.Dense(10),
            ]
        ),
        "extra": keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Rescaling(2.0, offset=-1.0),
                layers.Reshape((14, 56, 1)),
                layers.ZeroPadding2D(((1, 2), (0, 1))),
                layers.Conv2D(4, 3),
                layers.ReLU(max_value=6.0),
                layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2),
                layers.SeparableConv2D(6, 3, padding="same", activation="relu", depth_multiplier=2),
                layers.GlobalMaxPooling2D(),
                layers.LeakyReLU(0.2),
                layers.Reshape((2, -1)),
                layers.Flatten(),
                layers.Dense(10),
                layers.Softmax(),
            ]
        ),
    }
    inp = keras.Input((28, 28, 1))
    h = layers.Conv2D(4, 3, activation="relu")(inp)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    models["fcnn"] = keras.Model(inp, layers.Dense(10, activation="softmax")(h))
    inp = keras.Input((28, 28, 1))
    h = layers.Flatten()(inp)
    a = layers.Dense(16)(h)
    keras.Model(inp, layers.Add()([a, layers.Dense(16)(h)])).save(f"{out}/residual.keras")
    rng = np.random.default_rng(0)
    xs = {b: rng.random((b, 28, 28, 1), dtype=np.float32) for b in BATCHES}
    for b, x in xs.items():
        np.save(f"{out}/x{b}.npy", x)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, (64,))
    for name, m in models.items():
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        m.save(f"{out}/{name}.keras")
        m.save(f"{out}/{name}.h5")
        for b, xb in xs.items():
            np.save(f"{out}/keras_{name}_{b}.npy", m.predict(xb, verbose=0))
    print("OK")
elif mode == "text":
    keras.utils.set_random_seed(0)
    models = {
        "text": keras.Sequential(
            [
                keras.Input((12,)),
                layers.Embedding(50, 8),
                layers.GlobalAveragePooling1D(),
                layers.Dense(16, activation="relu"),
                layers.Dense(10),
            ]
        ),
        "textmax": keras.Sequential(
            [
                keras.Input((12,), dtype="int32"),
                layers.Embedding(50, 6),
                layers.GlobalMaxPooling1D(),
                layers.Dense(10, activation="softmax"),
            ]
        ),
        "textcnn": keras.Sequential(
            [
                keras.Input((12,)),
                layers.Embedding(50, 8),
                layers.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="relu"),
                layers.MaxPooling1D(2),
                layers.Conv1D(5, 2, strides=2, padding="same"),
                layers.AveragePooling1D(2, strides=1, padding="same"),
                layers.GlobalMaxPooling1D(),
                layers.Dense(10),
            ]
        ),
    }
    rng = np.random.default_rng(1)
    xs = {b: rng.integers(0, 50, (b, 12)).astype(np.float32) for b in BATCHES}
    for b, x in xs.items():
        np.save(f"{out}/x{b}.npy", x)
    x = rng.integers(0, 50, (64, 12)).astype(np.float32)
    y = rng.integers(0, 10, (64,))
    for name, m in models.items():
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        m.save(f"{out}/{name}.keras")
        m.save(f"{out}/{name}.h5")
        for b, xb in xs.items():
            np.save(f"{out}/keras_{name}_{b}.npy", m.predict(xb, verbose=0))
    print("OK")
elif mode == "graph":
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    r = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    r = layers.BatchNormalization()(r)
    r = layers.Conv2D(8, 3, padding="same")(r)
    h = layers.Add()([h, r])
    h = layers.Activation("relu")(h)
    h = layers.MaxPooling2D(2)(h)
    side = layers.Conv2D(4, 1, activation="tanh")(h)
    h = layers.Concatenate()([h, side])
    h = layers.UpSampling2D((2, 1))(h)
    h = layers.Conv2D(4, 3, strides=2)(h)
    h = layers.GlobalAveragePooling2D()(h)
    resnet = keras.Model(inp, layers.Dense(10)(h))
    v = keras.Input((6,))
    a = layers.Dense(8, activation="relu")(v)
    shared = layers.Dense(8, activation="tanh")
    b = shared(a)
    c = shared(b)  # the same weights at two depths
    s = layers.Add()([a, b, c])
    d = layers.Subtract()([s, c])
    e = layers.Multiply()([d, b])
    f = layers.Average()([e, a, s])
    g = layers.Maximum()([f, c])
    k = layers.Minimum()([g, s])
    k = layers.Concatenate(axis=1)([k, v, layers.Dense(3)(v)])
    branches = keras.Model(v, layers.Dense(4, activation="softmax")(k))
    # An encoder-decoder: transposed convolutions (same with strides, valid
    # with output_padding, dilated, a window smaller than its stride) and
    # a skip connection; a dense layer reads every pixel.
    e1 = layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    e2 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(e1)
    u = layers.Conv2DTranspose(6, 3, strides=2, padding="same", activation="relu")(e2)
    h = layers.Concatenate()([u, e1])
    h = layers.Conv2DTranspose(4, 2)(h)
    h = layers.Conv2DTranspose(3, 3, strides=2, output_padding=1, use_bias=False)(h)
    h = layers.Conv2DTranspose(3, 3, dilation_rate=2, padding="same", activation="tanh")(h)
    h = layers.Conv2DTranspose(2, (1, 3), strides=(3, 2))(h)
    unet = keras.Model(inp, layers.Dense(5)(layers.Flatten()(h)))
    # Two inputs (the meta input first in the model's list, made second),
    # two outputs, one of them from one branch only.
    img = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((6,), name="meta")
    h = layers.Conv2D(4, 3, activation="relu")(img)
    h = layers.GlobalAveragePooling2D()(h)
    mb = layers.Dense(5, activation="tanh")(meta)
    c = layers.Concatenate()([h, mb])
    multi = keras.Model([meta, img], [layers.Dense(4, activation="softmax")(c), layers.Dense(1)(mb)])
    rng = np.random.default_rng(1)
    for b in BATCHES:
        np.save(f"{out}/x{b}.npy", rng.standard_normal((b, 8, 8, 3)).astype(np.float32))
        np.save(f"{out}/xv{b}.npy", rng.standard_normal((b, 6)).astype(np.float32))
    data = {
        "resnet": (rng.standard_normal((64, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, (64,)), "x"),
        "branches": (rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 4, (64,)), "xv"),
        "unet": (rng.standard_normal((64, 8, 8, 3)).astype(np.float32), rng.integers(0, 5, (64,)), "x"),
    }
    xm, ym = rng.standard_normal((64, 6)).astype(np.float32), rng.standard_normal((64, 1)).astype(np.float32)
    multi.compile(
        optimizer="adam",
        loss=["sparse_categorical_crossentropy", "mse"],
        loss_weights=[1.0, 0.5],
        metrics=[["sparse_categorical_accuracy"], ["mae"]],
    )
    yc = (data["resnet"][1] % 4).astype(np.float32)
    multi.fit([xm, data["resnet"][0]], [yc, ym], batch_size=16, epochs=2, verbose=0)
    # What evaluate reports on the training data, for wgflow's evaluate_many.
    for name, a in [("mx", xm), ("mimg", data["resnet"][0]), ("my0", yc), ("my1", ym)]:
        np.save(f"{out}/{name}.npy", a)
    ev = multi.evaluate([xm, data["resnet"][0]], [yc, ym], batch_size=64, return_dict=True, verbose=0)
    print("multi_eval", json.dumps({k: float(v) for k, v in ev.items()}))
    multi.save(f"{out}/multi.keras")
    multi.save(f"{out}/multi.h5")
    print("multi", [type(l).__name__ for l in multi.layers])
    for b in BATCHES:
        ys = multi.predict([np.load(f"{out}/xv{b}.npy"), np.load(f"{out}/x{b}.npy")], verbose=0)
        for k, y in enumerate(ys):
            np.save(f"{out}/keras_multi_{b}_{k}.npy", y)
    for name, m in [("resnet", resnet), ("branches", branches), ("unet", unet)]:
        x, y, prefix = data[name]
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=name != "branches"), metrics=["accuracy"])
        m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        m.save(f"{out}/{name}.keras")
        m.save(f"{out}/{name}.h5")
        print(name, [type(l).__name__ for l in m.layers])
        for b in BATCHES:
            xb = np.load(f"{out}/{prefix}{b}.npy")
            np.save(f"{out}/keras_{name}_{b}.npy", m.predict(xb, verbose=0))
    print("OK")
elif mode == "rnn":
    keras.utils.set_random_seed(0)
    models = {
        "lstm": keras.Sequential(
            [
                keras.Input((7, 3)),
                layers.LSTM(8, return_sequences=True),
                layers.GRU(6, go_backwards=True),
                layers.Dense(4),
            ]
        ),
        "gru": keras.Sequential(
            [
                keras.Input((7, 3)),
                layers.GRU(5, reset_after=False, return_sequences=True),
                layers.SimpleRNN(4, activation="relu", go_backwards=True, return_sequences=True),
                layers.LSTM(3, use_bias=False, return_sequences=True, go_backwards=True),
                layers.Flatten(),
                layers.Dense(4, activation="softmax"),
            ]
        ),
        "bidi": keras.Sequential(
            [
                keras.Input((7, 3)),
                layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
                layers.Bidirectional(layers.SimpleRNN(3, return_sequences=True), merge_mode="mul"),
                layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="ave"),
                layers.Bidirectional(layers.GRU(2, reset_after=False), merge_mode="sum"),
                layers.Dense(4),
            ]
        ),
    }
    rng = np.random.default_rng(2)
    for b in BATCHES:
        np.save(f"{out}/x{b}.npy", rng.standard_normal((b, 7, 3)).astype(np.float32))
    x = rng.standard_normal((64, 7, 3)).astype(np.float32)
    y = rng.integers(0, 4, (64,))
    for name, m in models.items():
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=name != "gru"))
        m.fit(x, y, batch_size=16, epochs=3, verbose=0)
        m.save(f"{out}/{name}.keras")
        m.save(f"{out}/{name}.h5")
        for b in BATCHES:
            np.save(f"{out}/keras_{name}_{b}.npy", m.predict(np.load(f"{out}/x{b}.npy"), verbose=0))
    print("OK")
elif mode == "apps":
    from keras import applications as A, ops

    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)

    def randomize(m):
        # Keras' fresh weights leave batch normalization an identity;
        # random statistics and weights test every layer's arithmetic.
        new = []
        for v in m.weights:
            w = np.asarray(v.numpy())
            if w.dtype.kind in "iu":
                new.append(w)
            elif "variance" in v.path:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            else:
                new.append((w + rng.normal(0, 0.05, w.shape)).astype(w.dtype))
        m.set_weights(new)

    apps = {
        "mobilenet": lambda: A.MobileNet(weights=None, input_shape=(32, 32, 3), alpha=0.25,
                                         include_top=True, classes=5, classifier_activation=None),
        "mobilenet_v3": lambda: A.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), alpha=0.75,
                                                   include_top=False, pooling="avg"),
        "efficientnet": lambda: A.EfficientNetB0(weights=None, input_shape=(32, 32, 3),
                                                 include_top=False, pooling="avg"),
    }
    for name, make in apps.items():
        m = make()
        randomize(m)
        m.save(f"{out}/{name}.keras")
        x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        np.save(f"{out}/{name}_x.npy", x)
        np.save(f"{out}/keras_{name}.npy", np.asarray(m(x, training=False)))
        print(name, len(m.layers))

    # The layers and operations those models use, small, both ways.
    inp = keras.Input((9, 9, 3), name="pixels")
    norm = layers.Normalization(axis=-1)
    norm.adapt(rng.normal(2.0, 3.0, (64, 9, 9, 3)).astype("float32"))
    fixed = layers.Normalization(mean=[1.0, -1.0, 0.5], variance=[4.0, 0.25, 1.0])
    h = fixed(norm(inp))
    h = layers.Cropping2D(((1, 0), (2, 1)))(h)
    h = layers.Conv2D(6, 3, activation="hard_silu", name="conv")(h)
    h = 1.0 - h * 0.5
    h = layers.Activation("mish")(h)
    g = layers.GlobalAveragePooling2D(keepdims=True)(h)
    g = layers.Dense(6, activation="hard_sigmoid")(g)
    h = ops.multiply(h, g)
    h = layers.Dropout(0.3, noise_shape=(None, 1, 1, 6))(h)
    h = layers.BatchNormalization()(h, training=False)
    h = layers.Activation("softsign")(h + 2)
    h = ops.relu(h) + ops.sigmoid(h) * ops.tanh(h) + ops.leaky_relu(h, negative_slope=0.1)
    h = h + ops.gelu(h, approximate=False) + ops.elu(h) + ops.hard_silu(h) - ops.exp(-ops.square(h))
    h = layers.GlobalMaxPooling2D()(h)
    y = layers.Dense(4, activation="log_softmax")(ops.maximum(h, 0.1) / 2)
    y = ops.softmax(y * 2.0)
    m = keras.Model(inp, y, name="ops")
    randomize(m)
    # Saved first: an adapted Normalization reads its new variables only
    # when loaded (finalize_state). Keras writes the operations to .h5
    # files without their module (and cannot load them back itself).
    m.save(f"{out}/ops.keras")
    m = keras.models.load_model(f"{out}/ops.keras")
    m.save(f"{out}/ops.h5")
    for b in BATCHES:
        x = rng.normal(1.0, 2.0, (b, 9, 9, 3)).astype("float32")
        np.save(f"{out}/x{b}.npy", x)
        np.save(f"{out}/keras_ops_{b}.npy", np.asarray(m.predict(x, verbose=0)))
    print("ops", [l.__class__.__name__ for l in m.layers])
    print("OK")

elif mode == "transfer":
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    base = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, name="base_conv"),
            layers.BatchNormalization(name="base_bn"),
            layers.ReLU(name="base_relu"),
        ],
        name="base",
    )
    bx = rng.normal(0, 1, (64, 8, 8, 3)).astype("float32")
    base.layers[1].moving_mean.assign(rng.normal(0, 0.3, 4).astype("float32"))
    base.layers[1].moving_variance.assign(rng.uniform(0.5, 2.0, 4).astype("float32"))
    fin = keras.Input((6, 6, 4))
    fout = layers.Add()([fin, layers.Conv2D(4, 1, activation="tanh")(fin)])
    block = keras.Model(fin, fout, name="block")
    base.trainable = False
    inp = keras.Input((8, 8, 3), name="img")
    h = base(inp, training=False)
    h = block(h)
    h = layers.GlobalAveragePooling2D()(h)
    m = keras.Model(inp, layers.Dense(3, name="head")(h), name="transfer")
    m.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = rng.integers(0, 3, (64,)).astype("int32")
    m.fit(bx, y, epochs=2, batch_size=16, verbose=0)
    m.save(f"{out}/transfer.keras")
    np.save(f"{out}/xt.npy", bx)
    np.save(f"{out}/y.npy", y.astype("float32"))
    for b in BATCHES:
        x = rng.normal(0, 1, (b, 8, 8, 3)).astype("float32")
        np.save(f"{out}/x{b}.npy", x)
        np.save(f"{out}/keras_transfer_{b}.npy", np.asarray(m.predict(x, verbose=0)))
    # keras.Sequential([base, ...]): the same base nested in a Sequential model.
    seq = keras.Sequential([keras.Input((8, 8, 3)), base, layers.Flatten(), layers.Dense(2)], name="stacked")
    seq.save(f"{out}/stacked.keras")
    for b in BATCHES:
        np.save(f"{out}/keras_stacked_{b}.npy", np.asarray(seq.predict(np.load(f"{out}/x{b}.npy"), verbose=0)))
    # A model whose output is a nested functional model's (Keras numbers
    # that call from 1 in output_layers).
    tin = keras.Input((5,))
    tail = keras.Model(tin, layers.Dense(2, activation="tanh")(tin), name="tail")
    vin = keras.Input((3,), name="v")
    ends = keras.Model(vin, tail(layers.Dense(5)(vin)), name="ends")
    ends.save(f"{out}/ends.keras")
    for b in BATCHES:
        v = rng.normal(0, 1, (b, 3)).astype("float32")
        np.save(f"{out}/xv{b}.npy", v)
        np.save(f"{out}/keras_ends_{b}.npy", np.asarray(ends.predict(v, verbose=0)))
    # The image tutorial's model: an augmentation Sequential inside.
    augment = keras.Sequential(
        [
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.1),
            layers.RandomZoom(0.1),
            layers.RandomTranslation(0.1, 0.2),
            layers.RandomContrast(0.2),
            layers.RandomBrightness(0.2),
        ],
        name="augment",
    )
    tut = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            augment,
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(3),
        ],
        name="tutorial",
    )
    tut.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tut.fit(bx * 50 + 128, y, epochs=1, batch_size=16, verbose=0)
    tut.save(f"{out}/tutorial.keras")
    for b in BATCHES:
        np.save(f"{out}/xa{b}.npy", np.load(f"{out}/x{b}.npy") * 50 + 128)
        np.save(f"{out}/keras_tutorial_{b}.npy", np.asarray(tut.predict(np.load(f"{out}/xa{b}.npy"), verbose=0)))
    print("base trainable", base.trainable, [type(l).__name__ for l in m.layers])
    print("OK")

elif mode == "affine":
    from keras import ops

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(3)
    images = rng.normal(0, 1, (6, 5, 7, 2)).astype("float32")
    th = np.deg2rad(np.array([0.0, 17.0, -140.0, 90.0, 33.0, 200.0]))
    cx, cy = 3.0, 2.0
    t = []
    for i, a in enumerate(th):
        s_ = [1.0, 1.3, 0.6, 1.0, 2.5, 0.9][i]
        a0, a1 = s_ * np.cos(a), -s_ * np.sin(a)
        b0, b1 = s_ * np.sin(a), s_ * np.cos(a)
        tx, ty = [0.0, 1.7, -9.3, 23.5, -0.4, 12.0][i], [0.0, -2.2, 4.1, -17.0, 0.3, -30.5][i]
        c0, c1 = [0.0, 0.0, 0.01, 0.0, -0.05, 0.02][i], [0.0, 0.0, -0.02, 0.0, 0.03, 0.0][i]
        t.append([a0, a1, cx - cx * a0 - cy * a1 + tx, b0, b1, cy - cx * b0 - cy * b1 + ty, c0, c1])
    t = np.array(t, "float32")
    np.save(f"{out}/images.npy", images)
    np.save(f"{out}/transforms.npy", t)
    for fill in ["reflect", "wrap", "constant", "nearest"]:
        for interp in ["bilinear", "nearest"]:
            y = ops.image.affine_transform(images, t, interpolation=interp, fill_mode=fill, fill_value=0.5)
            np.save(f"{out}/affine_{fill}_{interp}.npy", np.asarray(y))
    for oh, ow in [(3, 4), (11, 13), (5, 7), (1, 1), (8, 2), (5, 9), (2, 7)]:
        for interp in ["bilinear", "nearest"]:
            y = ops.image.resize(images, (oh, ow), interpolation=interp)
            np.save(f"{out}/resize_{oh}x{ow}_{interp}.npy", np.asarray(y))
            y = layers.Resizing(oh, ow, interpolation=interp, crop_to_aspect_ratio=True)(images)
            np.save(f"{out}/crop_{oh}x{ow}_{interp}.npy", np.asarray(y))
        y = layers.CenterCrop(oh, ow)(images)
        np.save(f"{out}/center_{oh}x{ow}.npy", np.asarray(y))
    print("OK")

elif mode == "resume":
    file, xf, yf = sys.argv[3:6]
    m = keras.models.load_model(f"{out}/{file}")
    x, y = np.load(f"{out}/{xf}"), np.load(f"{out}/{yf}")
    print("optimizer", type(m.optimizer).__name__, int(m.optimizer.iterations.numpy()))
    m.train_on_batch(x, y)
    for i, w in enumerate(m.weights):
        np.save(f"{out}/resume1_{i}.npy", np.asarray(w))
    m.save(f"{out}/resumed.keras")
    m.train_on_batch(x, y)
    for i, w in enumerate(m.weights):
        np.save(f"{out}/resume2_{i}.npy", np.asarray(w))
    print("OK")
elif mode == "load":
    for arg in sys.argv[3:]:
        file, _, prefix = arg.partition(":")
        prefix = prefix or "x"
        m = keras.models.load_model(f"{out}/{file}")
        print(file, [type(l).__name__ for l in m.layers])
        opt = getattr(m, "optimizer", None)
        print(file, "compiled", type(opt).__name__ if opt is not None else None, getattr(m, "loss", None))
        if opt is not None:
            print(file, "iterations", int(opt.iterations.numpy()))
        tag = file.replace(".", "_")
        for b in BATCHES:
            # PREFIX a+b: a model of several inputs, fed a{b}.npy and b{b}.npy.
            xs = [np.load(f"{out}/{p}{b}.npy") for p in prefix.split("+")]
            y = m.predict(xs if len(xs) > 1 else xs[0], verbose=0)
            if isinstance(y, (list, tuple)):
                for k, yk in enumerate(y):
                    np.save(f"{out}/kload_{tag}_{b}_{k}.npy", yk)
            else:
                np.save(f"{out}/kload_{tag}_{b}.npy", y)
    print("OK")
