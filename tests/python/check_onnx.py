"""Checks a wgflow ONNX export with the real tools: onnx.checker (full
check, with shape inference) and ONNX Runtime on x{b}.npy for each batch
(x{b}_{input}.npy per input of a model of several), writing ort{b}.npy
(the first output) and ort{b}_{k}.npy for every output. Prints the opset, IR version, input shape and op types.

    python check_onnx.py MODEL.onnx DIR B1 B2 ...
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

path, out_dir, batches = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3:]]
model = onnx.load(path)
onnx.checker.check_model(model, full_check=True)
print("opset", model.opset_import[0].version, "ir", model.ir_version)
inp = model.graph.input[0]
dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
print("input", inp.name, dims)
print("ops", sorted({n.op_type for n in model.graph.node}))
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
print("inputs", names, "outputs", [o.name for o in sess.get_outputs()])
for b in batches:
    # One input reads x{b}.npy; several read x{b}_{name}.npy each.
    if len(names) == 1:
        feeds = {names[0]: np.load(f"{out_dir}/x{b}.npy")}
    else:
        feeds = {n: np.load(f"{out_dir}/x{b}_{n}.npy") for n in names}
    ys = sess.run(None, feeds)
    np.save(f"{out_dir}/ort{b}.npy", ys[0].astype(np.float32))
    for k, y in enumerate(ys):
        np.save(f"{out_dir}/ort{b}_{k}.npy", y.astype(np.float32))
print("OK")
