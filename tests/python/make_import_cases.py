"""TensorFlow 2.21 SavedModels whose graphs exercise corners of wgflow's
SavedModel import, each with inputs and TensorFlow's outputs.
Usage: make_import_cases.py DIR
Writes DIR/<case>/ (the SavedModel) and DIR/<case>.<name>.npy (inputs `in*`,
TensorFlow's outputs `out*`), for the cases:
- shape_data: shape values used as data (x / tf.shape(x)[0], tf.size),
  called with batches of 4 and 9;
- assign_add: v.assign_add(reduce_sum(x)) then v.read_value(), called twice;
- scatter: v.scatter_add(...) (an op wgflow does not implement);
- float_pack: tf.stack and tf.concat of float constants;
- int_math: integer Div / FloorDiv / FloorMod of negative constants,
  FloorDiv / FloorMod of tensors (int and float), tf.shape(x)[1] // 2 in a
  reshape and tf.shape(x)[0] // 2 as data;
- fused_bn_half: FusedBatchNormV3 with T=half, U=float (as mixed_float16);
- grouped_conv: a grouped Conv2D (filter in-channels = channels / 2);
- conv_transpose: tf.nn.conv2d_transpose (Conv2DBackpropInput) with the
  batch from tf.shape, SAME with stride 2, then VALID dilated with a
  leftover column, called with batches of 2 and 3."""
import os
import sys

import numpy as np
import tensorflow as tf

out = sys.argv[1]
rng = np.random.default_rng(0)


def save(name, module, fn):
    tf.saved_model.save(module, os.path.join(out, name), signatures={"serving_default": fn})


def npy(case, name, a):
    np.save(os.path.join(out, f"{case}.{name}.npy"), np.asarray(a))


# shape values used as data
class ShapeData(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        n = tf.shape(x)[0]
        return {
            "mean_rows": x / tf.cast(n, tf.float32),
            "size": x * tf.cast(tf.size(x), tf.float32),
        }


m = ShapeData()
save("shape_data", m, m.__call__)
for b in (4, 9):
    x = rng.standard_normal((b, 3)).astype(np.float32)
    npy("shape_data", f"in{b}", x)
    for k, v in m(x).items():
        npy("shape_data", f"out{b}_{k}", v.numpy())


# a variable assigned, then read
class AssignAdd(tf.Module):
    def __init__(self):
        self.v = tf.Variable([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        self.v.assign_add(tf.reduce_sum(x, axis=0))
        return {"v": self.v.read_value() * 2.0}


m = AssignAdd()
save("assign_add", m, m.__call__)
for i in (1, 2):
    x = rng.standard_normal((i + 1, 3)).astype(np.float32)
    npy("assign_add", f"in{i}", x)
    npy("assign_add", f"out{i}", m(x)["v"].numpy())


class Scatter(tf.Module):
    def __init__(self):
        self.v = tf.Variable([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([3], tf.float32)])
    def __call__(self, x):
        self.v.scatter_add(tf.IndexedSlices(x[:1], tf.constant([1])))
        return {"v": self.v.read_value() + x}


m = Scatter()
save("scatter", m, m.__call__)


class FloatPack(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        s = tf.stack([tf.constant(0.5), tf.constant(1.5), tf.constant(-2.25)])
        c = tf.concat([tf.constant([0.25]), tf.constant([1.75, -3.5])], 0)
        return {"stack": x * s, "concat": x + c}


m = FloatPack()
save("float_pack", m, m.__call__)
x = rng.standard_normal((2, 3)).astype(np.float32)
npy("float_pack", "in", x)
for k, v in m(x).items():
    npy("float_pack", f"out_{k}", v.numpy())


class IntMath(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 6], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def __call__(self, x, k):
        c = lambda v: tf.constant(v, tf.int32)
        consts = tf.stack(
            [
                tf.raw_ops.Div(x=c(-7), y=c(2)),
                tf.raw_ops.FloorDiv(x=c(7), y=c(-2)),
                tf.raw_ops.FloorMod(x=c(7), y=c(-2)),
                tf.raw_ops.FloorMod(x=c(-7), y=c(2)),
                tf.raw_ops.TruncateDiv(x=c(-7), y=c(2)),
                tf.raw_ops.TruncateMod(x=c(-7), y=c(2)),
            ]
        )
        half = tf.reshape(x, [-1, tf.shape(x)[1] // 2])
        return {
            "consts": consts,
            "half": half,
            "kdiv": tf.math.floordiv(k, 3),
            "kmod": tf.math.floormod(k, 3),
            "kdivneg": tf.math.floordiv(k, -4),
            "fdiv": tf.math.floordiv(x, 0.75),
            "fmod": tf.math.floormod(x, 0.75),
            "rows_half": x + tf.cast(tf.shape(x)[0] // 2, tf.float32),
        }


m = IntMath()
save("int_math", m, m.__call__)
x = (rng.standard_normal((2, 6)) * 3).astype(np.float32)
k = np.array([-7, -6, -1, 0, 1, 5, 9], np.int32)
npy("int_math", "in_x", x)
npy("int_math", "in_k", k)
for name, v in m(x, k).items():
    npy("int_math", f"out_{name}", v.numpy())


class FusedBnHalf(tf.Module):
    def __init__(self):
        self.scale = tf.Variable(rng.random(4).astype(np.float32) + 0.5)
        self.offset = tf.Variable(rng.standard_normal(4).astype(np.float32))
        self.mean = tf.Variable(rng.standard_normal(4).astype(np.float32))
        self.var = tf.Variable(rng.random(4).astype(np.float32) + 0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 5, 4], tf.float16)])
    def __call__(self, x):
        y = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=self.scale,
            offset=self.offset,
            mean=self.mean,
            variance=self.var,
            epsilon=1e-3,
            is_training=False,
        )[0]
        return {"y": y}


m = FusedBnHalf()
save("fused_bn_half", m, m.__call__)
x = rng.standard_normal((2, 5, 5, 4)).astype(np.float16)
npy("fused_bn_half", "in", x)
npy("fused_bn_half", "out", m(x)["y"].numpy())


class GroupedConv(tf.Module):
    def __init__(self):
        # 6 input channels in 2 groups of 3, 4 output channels.
        self.w = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 7, 7, 6], tf.float32)])
    def __call__(self, x):
        return {"y": tf.raw_ops.Conv2D(input=x, filter=self.w, strides=[1, 1, 1, 1], padding="SAME")}


m = GroupedConv()
save("grouped_conv", m, m.__call__)
x = rng.standard_normal((2, 7, 7, 6)).astype(np.float32)
npy("grouped_conv", "in", x)
# Each group separately (TensorFlow's CPU kernels may lack grouped convolutions).
w = m.w.numpy()
ys = [
    tf.nn.conv2d(x[..., 3 * g : 3 * g + 3], w[..., 2 * g : 2 * g + 2], 1, "SAME").numpy()
    for g in range(2)
]
npy("grouped_conv", "out", np.concatenate(ys, axis=-1))


class ConvTranspose(tf.Module):
    def __init__(self):
        # [kh, kw, out, in]
        self.w1 = tf.Variable(rng.standard_normal((3, 3, 4, 5)).astype(np.float32))
        self.w2 = tf.Variable(rng.standard_normal((3, 2, 2, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 6, 5], tf.float32)])
    def __call__(self, x):
        n = tf.shape(x)[0]
        y = tf.nn.conv2d_transpose(x, self.w1, tf.stack([n, 10, 12, 4]), 2, "SAME")
        z = tf.nn.conv2d_transpose(
            tf.nn.relu(y), self.w2, tf.stack([n, 14, 25, 2]), [1, 2], "VALID", dilations=[2, 1]
        )
        return {"y": y, "z": z}


m = ConvTranspose()
save("conv_transpose", m, m.__call__)
for b in [2, 3]:
    x = rng.standard_normal((b, 5, 6, 5)).astype(np.float32)
    npy("conv_transpose", f"in{b}", x)
    for k, v in m(x).items():
        npy("conv_transpose", f"out{b}_{k}", v.numpy())
print("ok")
