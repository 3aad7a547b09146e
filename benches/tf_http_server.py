"""The baseline of benches/model_server.rs: TensorFlow's own
tf.saved_model.load behind a minimal Python HTTP server answering TF
Serving's row-format predict (POST /v1/models/NAME:predict with
{"instances": [...]}) -> {"predictions": [...]}. Malformed bodies get 400.
Usage: tf_http_server.py PORT MODEL_DIR"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

port, model_dir = int(sys.argv[1]), sys.argv[2]
fn = tf.saved_model.load(model_dir).signatures["serving_default"]
(in_name,) = list(fn.structured_input_signature[1].keys())
(out_name,) = list(fn.structured_outputs.keys())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(n)
        try:
            x = np.asarray(json.loads(raw)["instances"], dtype=np.float32)
        except Exception as e:  # malformed: TF Serving's 400
            self.reply(400, {"error": str(e)})
            return
        y = fn(**{in_name: tf.constant(x)})[out_name].numpy()
        self.reply(200, {"predictions": y.tolist()})


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
