"""TF Serving's test model half_plus_two (y = 0.5 x + 2), built as its
saved_model_half_plus_two.py builds it: a TF1 graph whose serving_default
signature reads x:0 (the Identity after tf.Example parsing) and whose
classify/regress signatures read serialized tf.Examples.
Usage: make_half_plus_two.py DIR [VERSION] [A B] -> DIR/VERSION (default 123, 0.5, 2.0)."""
import os
import sys

import tensorflow.compat.v1 as tf

tf.disable_eager_execution()

out = sys.argv[1]
version = sys.argv[2] if len(sys.argv) > 2 else "123"
a_val = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
b_val = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
export_dir = os.path.join(out, version)

builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
with tf.Session(graph=tf.Graph()) as sess:
    a = tf.Variable(a_val, name="a")
    b = tf.Variable(b_val, name="b")
    c = tf.Variable(3.0, name="c")
    serialized = tf.placeholder(tf.string, name="tf_example")
    features = {
        "x": tf.FixedLenFeature([1], dtype=tf.float32),
        "x2": tf.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }
    example = tf.parse_example(serialized, features)
    x = tf.identity(example["x"], name="x")
    y = tf.add(tf.multiply(a, x), b, name="y")
    y2 = tf.add(tf.multiply(a, x), c, name="y2")
    x2 = tf.identity(example["x2"], name="x2")
    y3 = tf.add(tf.multiply(a, x2), c, name="y3")
    sess.run(tf.global_variables_initializer())

    u = tf.saved_model.utils.build_tensor_info
    sig = tf.saved_model.signature_def_utils.build_signature_def
    S = tf.saved_model.signature_constants
    predict = sig(inputs={"x": u(x)}, outputs={"y": u(y)}, method_name=S.PREDICT_METHOD_NAME)
    regress_x_to_y = sig(
        inputs={S.REGRESS_INPUTS: u(serialized)},
        outputs={S.REGRESS_OUTPUTS: u(y)},
        method_name=S.REGRESS_METHOD_NAME,
    )
    regress_x2_to_y3 = sig(
        inputs={S.REGRESS_INPUTS: u(x2)},
        outputs={S.REGRESS_OUTPUTS: u(y3)},
        method_name=S.REGRESS_METHOD_NAME,
    )
    classify_x_to_y = sig(
        inputs={S.CLASSIFY_INPUTS: u(serialized)},
        outputs={S.CLASSIFY_OUTPUT_SCORES: u(y)},
        method_name=S.CLASSIFY_METHOD_NAME,
    )
    builder.add_meta_graph_and_variables(
        sess,
        [tf.saved_model.tag_constants.SERVING],
        signature_def_map={
            "regress_x_to_y": regress_x_to_y,
            "regress_x_to_y2": sig(
                inputs={S.REGRESS_INPUTS: u(serialized)},
                outputs={S.REGRESS_OUTPUTS: u(y2)},
                method_name=S.REGRESS_METHOD_NAME,
            ),
            "regress_x2_to_y3": regress_x2_to_y3,
            "classify_x_to_y": classify_x_to_y,
            S.DEFAULT_SERVING_SIGNATURE_DEF_KEY: predict,
        },
        main_op=tf.group(tf.local_variables_initializer(), name="main_op"),
        strip_default_attrs=True,
    )
builder.save()
