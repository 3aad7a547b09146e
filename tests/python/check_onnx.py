"""Checks a wgflow ONNX export with the real tools: onnx.checker (full
check, with shape inference) and ONNX Runtime on x{b}.npy for each batch,
writing ort{b}.npy. Prints the opset, IR version, input shape and op types.

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
name = sess.get_inputs()[0].name
for b in batches:
    x = np.load(f"{out_dir}/x{b}.npy")
    (y,) = sess.run(None, {name: x})
    np.save(f"{out_dir}/ort{b}.npy", y.astype(np.float32))
print("OK")
