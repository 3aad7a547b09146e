"""End-to-end check of wgflow_model_server against TensorFlow Serving's
behaviour, with TensorFlow Serving's own clients: the official
`tensorflow_serving.apis` gRPC stubs, `tf.make_tensor_proto` /
`tf.make_ndarray`, strict protobuf JSON parsing (`json_format.Parse`) of the
REST answers, and plain `urllib` / raw sockets for REST.

Usage: check_model_server.py SERVER_BINARY WORKDIR [--keep-going]

Builds its models into WORKDIR (TF Serving's half_plus_two with
make_half_plus_two.py, a small Keras CNN with model.export), starts servers
on free loopback ports (WGFLOW_DEVICE=cpu unless set), and checks:
REST status/metadata/predict/errors, gRPC Predict/GetModelMetadata/
GetModelStatus and their errors, the CNN against Keras over REST and gRPC,
hot swap of a new version under load and a corrupt version, server-side
batching against no batching, Prometheus, and graceful shutdown on SIGTERM.

Prints `ok: <check>` per check; on the first failure prints `FAIL: <check>:
<why>` and the servers' logs, and exits 1 (with --keep-going: runs every
check, then exits 1 if any failed)."""
import atexit
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

T0 = time.monotonic()
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
if len(sys.argv) < 3:
    sys.exit(__doc__)
BINARY = os.path.abspath(sys.argv[1])
WORK = os.path.abspath(sys.argv[2])
KEEP_GOING = "--keep-going" in sys.argv[3:]

HPT = "half_plus_two"
MNIST = "mnist"
HPT_BASE = os.path.join(WORK, HPT)
MNIST_BASE = os.path.join(WORK, MNIST)
STAGING = os.path.join(WORK, "tmp")  # outside every base path

SERVERS = []
BUILDERS = []  # model-building subprocesses
FAILURES = []


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def expect(cond, msg):
    if not cond:
        fail(msg)


# ---------------------------------------------------------------- servers


HANDED_OUT = set()


def free_ports(n):
    """n free loopback ports, distinct and never handed out before: a server
    started earlier may not have bound its ports yet, and the OS can offer
    a released port again. Every socket is held until the ports are chosen."""
    held, out = [], []
    try:
        while len(out) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port not in HANDED_OUT:
                HANDED_OUT.add(port)
                out.append(port)
        return out
    finally:
        for s in held:
            s.close()


class Server:
    def __init__(self, tag, args):
        self.tag = tag
        self.grpc_port, self.rest_port = free_ports(2)
        self.log_path = os.path.join(WORK, f"server-{tag}.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("WGFLOW_DEVICE", "cpu")
        self.cmd = [BINARY, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *args]
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        SERVERS.append(self)

    def url(self, path):
        return f"http://127.0.0.1:{self.rest_port}{path}"

    @property
    def grpc_target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def wait_available(self, model, timeout=120):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"server {self.tag} exited with code {self.proc.returncode} before {model} was AVAILABLE")
            try:
                st, _, body = http("GET", self.url(f"/v1/models/{model}"), timeout=5)
                last = (st, body[:300])
                if st == 200 and b'"AVAILABLE"' in body:
                    return
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        fail(f"server {self.tag}: {model} not AVAILABLE after {timeout} s (last answer: {last})")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.log.close()

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        return "\n".join(text[-lines:])


def kill_servers():
    for p in BUILDERS:
        if p.poll() is None:
            p.kill()
    for s in SERVERS:
        try:
            s.kill()
        except Exception:
            pass


atexit.register(kill_servers)


def _on_signal(signum, _frame):
    # SIGTERM / SIGINT (a test harness' timeout, ^C): exit through atexit,
    # which kills the servers.
    print(f"check_model_server.py: signal {signum}; stopping the servers", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def dump_logs():
    for s in SERVERS:
        print(f"----- server {s.tag}: {' '.join(s.cmd)} (exit code {s.proc.poll()}); last lines of its log:",
              file=sys.stderr)
        print(s.log_tail(), file=sys.stderr)


# ---------------------------------------------------------------- HTTP


def http(method, url, body=None, headers=None, timeout=30):
    """(status, content type, body bytes); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def post_json(server, path, obj_or_bytes, timeout=30):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return http("POST", server.url(path), body, timeout=timeout)


def loads(body):
    """Python's json accepts NaN / Infinity / -Infinity as TF Serving writes them."""
    try:
        return json.loads(body)
    except ValueError as e:
        fail(f"answer is not JSON ({e}): {body[:500]!r}")


def predict_ok(server, path, req, what):
    st, ctype, body = post_json(server, path, req)
    shown = req.decode() if isinstance(req, bytes) else json.dumps(req)
    expect(st == 200, f"{what}: POST {path} {shown[:200]} -> {st} {body[:500]!r}, expected 200")
    expect(ctype.startswith("application/json"), f"{what}: Content-Type {ctype!r}, expected application/json")
    return loads(body)


def expect_error(server, method, path, body, status, message=None, contains=None, what=""):
    st, ctype, out = http(method, server.url(path), body)
    shown = body if body is None or len(body) < 200 else body[:200] + b"..."
    expect(st == status, f"{what}: {method} {path} body {shown!r} -> HTTP {st} {out[:500]!r}, expected {status}")
    if message is None and contains is None:
        return out
    expect(ctype.startswith("application/json"), f"{what}: error Content-Type {ctype!r}, expected application/json")
    doc = loads(out)
    expect(isinstance(doc, dict) and isinstance(doc.get("error"), str),
           f"{what}: error body {out[:500]!r} has no string 'error'")
    if message is not None:
        expect(doc["error"] == message, f"{what}: error {doc['error']!r}, expected {message!r}")
    if contains is not None:
        expect(contains in doc["error"], f"{what}: error {doc['error']!r} does not contain {contains!r}")
    return doc


def close(a, b, atol=1e-6):
    return a == b or abs(a - b) <= atol


# ---------------------------------------------------------------- checks


def run_check(name, fn):
    t = time.monotonic()
    try:
        fn()
    except CheckFailed as e:
        report_failure(name, str(e))
        return False
    except Exception:
        report_failure(name, "unexpected exception:\n" + traceback.format_exc())
        return False
    print(f"ok: {name} ({time.monotonic() - t:.1f} s)", flush=True)
    return True


def report_failure(name, msg):
    FAILURES.append(name)
    print(f"FAIL: {name}: {msg}", flush=True)
    dump_logs()
    if not KEEP_GOING:
        sys.stdout.flush()
        kill_servers()
        sys.exit(1)


def main():
    print(f"server: {BINARY}\nworkdir: {WORK}", flush=True)
    expect(os.access(BINARY, os.X_OK), f"{BINARY} is not an executable")
    os.makedirs(WORK, exist_ok=True)
    for d in (HPT_BASE, MNIST_BASE, STAGING):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(STAGING)

    # TF Serving's half_plus_two (version 123, y = 0.5 x + 2) and, staged
    # outside the base path for the hot swap, version 124 (y = 1.0 x + 2),
    # built while the Keras model is built here.
    make = os.path.join(HERE, "make_half_plus_two.py")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    builders = BUILDERS
    builders += [
        subprocess.Popen([PY, make, HPT_BASE, "123"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env),
        subprocess.Popen([PY, make, STAGING, "124", "1.0", "2.0"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env),
    ]

    global np, tf, keras, grpc, json_format
    global get_model_status_pb2, get_model_metadata_pb2, predict_pb2, model_pb2
    global prediction_service_pb2_grpc, model_service_pb2_grpc, saved_model_pb2
    import numpy as np
    import tensorflow as tf
    import keras
    import grpc
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                         model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

    ctx = {}

    def build_models():
        keras.utils.set_random_seed(1234)
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),  # logits: a stronger comparison than a flat softmax
        ])
        model.export(os.path.join(MNIST_BASE, "1"), verbose=False)
        rng = np.random.default_rng(20240601)
        ctx["x1"] = rng.random((1, 28, 28, 1), dtype=np.float32)
        ctx["x7"] = rng.random((7, 28, 28, 1), dtype=np.float32)
        ctx["x1000"] = np.random.default_rng(7).random((1000, 28, 28, 1), dtype=np.float32)
        for k in ("x1", "x7", "x1000"):
            ctx["keras_" + k] = model.predict(ctx[k], batch_size=256, verbose=0)
        for p in builders:
            out, _ = p.communicate(timeout=300)
            expect(p.returncode == 0, f"{' '.join(p.args)} failed:\n{out.decode(errors='replace')[-3000:]}")
        expect(os.path.isfile(os.path.join(HPT_BASE, "123", "saved_model.pb")), "half_plus_two/123 not built")
        expect(os.path.isfile(os.path.join(STAGING, "124", "saved_model.pb")), "tmp/124 not built")

    run_check("build models (half_plus_two 123 and 124, Keras CNN export and predictions)", build_models)

    def start_servers():
        mon = os.path.join(WORK, "monitoring.config")
        with open(mon, "w") as f:
            f.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
        batching = os.path.join(WORK, "batching.config")
        with open(batching, "w") as f:
            f.write("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                    "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 1000 }\n")
        poll = "--file_system_poll_wait_seconds=1"
        ctx["A"] = Server("hpt", [f"--model_name={HPT}", f"--model_base_path={HPT_BASE}", poll,
                                  f"--monitoring_config_file={mon}"])
        ctx["B"] = Server("hpt-small-limit", [f"--model_name={HPT}", f"--model_base_path={HPT_BASE}", poll,
                                              "--rest_api_max_request_bytes=1000"])
        ctx["C"] = Server("mnist", [f"--model_name={MNIST}", f"--model_base_path={MNIST_BASE}", poll])
        ctx["D"] = Server("mnist-batching", [f"--model_name={MNIST}", f"--model_base_path={MNIST_BASE}", poll,
                                             "--enable_batching", f"--batching_parameters_file={batching}",
                                             f"--monitoring_config_file={mon}"])
        ctx["A"].wait_available(HPT)
        ctx["B"].wait_available(HPT)
        ctx["C"].wait_available(MNIST)
        ctx["D"].wait_available(MNIST)

    run_check("servers start and report AVAILABLE", start_servers)
    A, B, C, D = ctx["A"], ctx["B"], ctx["C"], ctx["D"]
    pred = f"/v1/models/{HPT}:predict"

    def saved_signatures(base, version):
        sm = saved_model_pb2.SavedModel()
        with open(os.path.join(base, str(version), "saved_model.pb"), "rb") as f:
            sm.ParseFromString(f.read())
        (mg,) = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags]
        out = get_model_metadata_pb2.SignatureDefMap()
        for k, v in mg.signature_def.items():
            out.signature_def[k].CopyFrom(v)
        return out

    # 1 -----------------------------------------------------------------
    def rest_status():
        for path in (f"/v1/models/{HPT}", f"/v1/models/{HPT}/versions/123"):
            st, ctype, body = http("GET", A.url(path))
            expect(st == 200, f"GET {path} -> {st} {body[:300]!r}")
            expect(ctype.startswith("application/json"), f"GET {path}: Content-Type {ctype!r}")
            msg = get_model_status_pb2.GetModelStatusResponse()
            try:
                json_format.Parse(body, msg)
            except json_format.ParseError as e:
                fail(f"GET {path}: body does not parse as GetModelStatusResponse ({e}): {body[:500]!r}")
            vs = msg.model_version_status
            expect(len(vs) == 1, f"GET {path}: {len(vs)} versions, expected 1: {body!r}")
            expect(vs[0].version == 123, f"GET {path}: version {vs[0].version}, expected 123")
            expect(vs[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                   f"GET {path}: state {vs[0].state}, expected AVAILABLE")
            expect(vs[0].status.error_code == 0, f"GET {path}: error_code {vs[0].status.error_code}, expected OK")
            doc = loads(body)
            expect(doc["model_version_status"][0] == {"version": "123", "state": "AVAILABLE",
                                                      "status": {"error_code": "OK", "error_message": ""}},
                   f"GET {path}: {doc}, expected TF Serving's exact fields (version as a string, error_message \"\")")
        expect_error(A, "GET", f"/v1/models/{HPT}/versions/7", None, 404,
                     message=f"Could not find version 7 of model {HPT}", what="status of an unknown version")
        expect_error(A, "GET", "/v1/models/nope", None, 404,
                     message="Could not find any versions of model nope", what="status of an unknown model")

    run_check("1 REST model status (strict GetModelStatusResponse)", rest_status)

    # 2 -----------------------------------------------------------------
    def shape_structure(doc, where):
        expect(set(doc) == {"model_spec", "metadata"}, f"{where}: top-level keys {sorted(doc)}")
        expect(set(doc["metadata"]) == {"signature_def"}, f"{where}: metadata keys {sorted(doc['metadata'])}")
        sd = doc["metadata"]["signature_def"]
        expect(set(sd) == {"signature_def"}, f"{where}: metadata.signature_def keys {sorted(sd)}")
        for key, sig in sd["signature_def"].items():
            expect({"inputs", "outputs", "method_name"} <= set(sig), f"{where}: signature {key} keys {sorted(sig)}")
            for side in ("inputs", "outputs"):
                for alias, info in sig[side].items():
                    w = f"{where}: {key}.{side}.{alias}"
                    expect(isinstance(info.get("dtype"), str) and isinstance(info.get("name"), str),
                           f"{w}: dtype/name missing or not strings: {info}")
                    ts = info.get("tensor_shape")
                    expect(isinstance(ts, dict) and isinstance(ts.get("dim"), list)
                           and isinstance(ts.get("unknown_rank"), bool),
                           f"{w}: tensor_shape must have a dim list and an unknown_rank bool (TF Serving prints "
                           f"both with always_print_primitive_fields): {ts}")
                    for d in ts["dim"]:
                        expect(isinstance(d.get("size"), str) and isinstance(d.get("name"), str),
                               f"{w}: a dim must have size as a string and a name: {d}")
        return sd["signature_def"]

    def rest_metadata():
        path = f"/v1/models/{HPT}/metadata"
        st, ctype, body = http("GET", A.url(path))
        expect(st == 200, f"GET {path} -> {st} {body[:300]!r}")
        expect(ctype.startswith("application/json"), f"GET {path}: Content-Type {ctype!r}")
        doc = loads(body)
        expect(doc.get("model_spec") == {"name": HPT, "signature_name": "", "version": "123"},
               f"GET {path}: model_spec {doc.get('model_spec')}, expected "
               f"{{'name': '{HPT}', 'signature_name': '', 'version': '123'}}")
        sigs = shape_structure(doc, f"GET {path}")
        expect(set(sigs) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                             "regress_x2_to_y3"}, f"GET {path}: signatures {sorted(sigs)}")
        sd = sigs["serving_default"]
        expect(sd["method_name"] == "tensorflow/serving/predict", f"serving_default method_name {sd['method_name']}")
        expect(set(sd["inputs"]) == {"x"} and sd["inputs"]["x"]["dtype"] == "DT_FLOAT"
               and sd["inputs"]["x"]["name"] == "x:0", f"serving_default inputs {sd['inputs']}")
        expect(set(sd["outputs"]) == {"y"} and sd["outputs"]["y"]["dtype"] == "DT_FLOAT"
               and sd["outputs"]["y"]["name"] == "y:0", f"serving_default outputs {sd['outputs']}")
        expect(sigs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify", "classify_x_to_y method")
        expect(sigs["regress_x2_to_y3"]["method_name"] == "tensorflow/serving/regress", "regress_x2_to_y3 method")
        parsed = get_model_metadata_pb2.SignatureDefMap()
        try:
            json_format.Parse(json.dumps(doc["metadata"]["signature_def"]), parsed)
        except json_format.ParseError as e:
            fail(f"metadata.signature_def does not parse as SignatureDefMap: {e}")
        want = saved_signatures(HPT_BASE, 123)
        expect(parsed == want, "metadata.signature_def differs from the SavedModel's MetaGraphDef:\n"
                               f"got:\n{parsed}\nexpected:\n{want}")
        # The CNN: shapes with known dims (sizes as strings).
        st, _, body = http("GET", C.url(f"/v1/models/{MNIST}/metadata"))
        expect(st == 200, f"GET /v1/models/{MNIST}/metadata -> {st} {body[:300]!r}")
        mdoc = loads(body)
        expect(mdoc.get("model_spec") == {"name": MNIST, "signature_name": "", "version": "1"},
               f"mnist model_spec {mdoc.get('model_spec')}")
        msigs = shape_structure(mdoc, "mnist metadata")
        (inp,) = msigs["serving_default"]["inputs"].values()
        expect([d["size"] for d in inp["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
               and inp["tensor_shape"]["unknown_rank"] is False, f"mnist input shape {inp['tensor_shape']}")
        mparsed = get_model_metadata_pb2.SignatureDefMap()
        json_format.Parse(json.dumps(mdoc["metadata"]["signature_def"]), mparsed)
        mwant = saved_signatures(MNIST_BASE, 1)
        expect(mparsed == mwant, f"mnist metadata.signature_def differs from the SavedModel's:\n"
                                 f"got:\n{mparsed}\nexpected:\n{mwant}")

    run_check("2 REST model metadata (TF Serving's fixture structure, strict SignatureDefMap)", rest_metadata)

    # 3 -----------------------------------------------------------------
    def rest_predict():
        r = predict_ok(A, pred, {"instances": [2.0, 3.0, 4.0]}, "row")
        expect(r == {"predictions": [3.0, 3.5, 4.0]}, f"row: {r}, expected {{'predictions': [3.0, 3.5, 4.0]}}")
        r = predict_ok(A, pred, {"inputs": [2.0, 3.0, 4.0]}, "columnar")
        expect(r == {"outputs": [3.0, 3.5, 4.0]}, f"columnar: {r}, expected {{'outputs': [3.0, 3.5, 4.0]}}")
        r = predict_ok(A, pred, {"instances": [[1.0], [2.0]]}, "nested rows")
        expect(r == {"predictions": [[2.5], [3.0]]}, f"nested rows: {r}, expected [[2.5], [3.0]]")
        r = predict_ok(A, pred, {"inputs": {"x": [[1.0], [2.0]]}}, "named columnar")
        expect(r == {"outputs": [[2.5], [3.0]]}, f"named columnar: {r}")
        r = predict_ok(A, pred, {"instances": [{"x": 1.0}, {"x": 2.0}]}, "row objects")
        expect(r == {"predictions": [2.5, 3.0]}, f"row objects: {r}")
        r = predict_ok(A, pred, b'{"instances": [NaN, Infinity, -Infinity, 1e-3]}', "NaN/Infinity")
        p = r.get("predictions", [])
        expect(len(p) == 4 and p[0] != p[0] and p[1] == float("inf") and p[2] == float("-inf")
               and close(p[3], 2.0005), f"NaN/Infinity: {r}, expected [NaN, Infinity, -Infinity, 2.0005]")
        r = predict_ok(A, pred, {"signature_name": "regress_x2_to_y3", "instances": [1.0, 2.0]}, "regress_x2_to_y3")
        expect(r == {"predictions": [3.5, 4.0]},
               f"regress_x2_to_y3 (y3 = 0.5 x2 + 3): {r}, expected {{'predictions': [3.5, 4.0]}}")
        r = predict_ok(A, pred, {"signature_name": "serving_default", "instances": [2.0]}, "explicit default")
        expect(r == {"predictions": [3.0]}, f"signature_name serving_default: {r}")
        r = predict_ok(A, f"/v1/models/{HPT}/versions/123:predict", {"instances": [2.0]}, "versions/123")
        expect(r == {"predictions": [3.0]}, f"versions/123: {r}")
        expect_error(A, "POST", f"/v1/models/{HPT}/versions/7:predict", b'{"instances": [2.0]}', 404,
                     message=f"Servable not found for request: Specific({HPT}, 7)", what="unknown version")
        expect_error(A, "POST", "/v1/models/nope:predict", b'{"instances": [2.0]}', 404,
                     message="Servable not found for request: Latest(nope)", what="unknown model")

    run_check("3 REST predict (row, columnar, NaN/Infinity, signature_name, versions)", rest_predict)

    # 4 -----------------------------------------------------------------
    def rest_errors():
        e = lambda body, st, **kw: expect_error(A, "POST", pred, body, st, **kw)  # noqa: E731
        e(b"", 400, message="JSON Parse error: The document is empty", what="empty body")
        e(b"{}", 400, message="Missing 'inputs' or 'instances' key", what="{}")
        e(b'{"instances": [1.0,', 400, contains="JSON Parse error", what="malformed JSON")
        e(b"instances = [1, 2]", 400, contains="JSON Parse error: Invalid value.", what="not JSON")
        e(b'{"instances": [[1.0], [1.0, 2.0]]}', 400, contains="", what="ragged instances")
        e(b'{"instances": ["x"]}', 400, contains="is not of expected type: float", what="string into float")
        e(b'{"signature_name": "nope", "instances": [1.0]}', 400,
          message='Serving signature name: "nope" not found in signature def', what="unknown signature")
        e(b'{"instances": [1.0], "inputs": [1.0]}', 400,
          contains="Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
          what="both instances and inputs")
        e(b'{"instances": []}', 400, contains="No values in 'instances' array", what="empty instances")
        e(b'{"inputs": {"z": [1.0]}}', 400, message="Missing named input: x in 'inputs' object.",
          what="columnar, missing input")
        expect_error(A, "POST", f"/v1/models/{HPT}:classify",
                     b'{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}', 501, contains="",
                     what=":classify")
        expect_error(A, "POST", f"/v1/models/{HPT}:predicty", b'{"instances": [1.0]}', 400,
                     message=f"Malformed request: POST /v1/models/{HPT}:predicty", what="unknown verb")
        expect_error(A, "GET", "/v1/models", None, 400, message="Missing model name in request.",
                     what="GET /v1/models")
        st, _, _ = http("GET", A.url("/foo"))
        expect(st == 404, f"GET /foo -> {st}, expected 404")
        st, _, _ = http("POST", A.url("/foo"), b"{}")
        expect(st == 404, f"POST /foo -> {st}, expected 404")
        # Body size limit (server B: --rest_api_max_request_bytes=1000).
        big = json.dumps({"instances": [1.0] * 400}).encode()
        expect(len(big) > 1000, "test body too small")
        r = predict_ok(B, pred, {"instances": [2.0]}, "small-limit server, small body")
        expect(r == {"predictions": [3.0]}, f"small-limit server: {r}")
        expect_error(B, "POST", pred, big, 413, what=f"{len(big)}-byte body over a 1000-byte limit")
        # The same without Content-Length (chunked): the limit applies while reading.
        conn = httpclient.HTTPConnection("127.0.0.1", B.rest_port, timeout=30)
        try:
            conn.request("POST", pred, body=iter([big[:600], big[600:]]),
                         headers={"Content-Type": "application/json"}, encode_chunked=True)
            resp = conn.getresponse()
            st = resp.status
            resp.read()
        except (ConnectionError, httpclient.HTTPException) as ex:
            st = repr(ex)
        finally:
            conn.close()
        expect(st == 413, f"chunked {len(big)}-byte body over a 1000-byte limit -> {st}, expected 413")
        r = predict_ok(B, pred, {"instances": [2.0]}, "small-limit server after 413")
        expect(r == {"predictions": [3.0]}, f"small-limit server after 413: {r}")
        # Still answering correctly after all that.
        r = predict_ok(A, pred, {"instances": [2.0, 3.0, 4.0]}, "after errors")
        expect(r == {"predictions": [3.0, 3.5, 4.0]}, f"after errors: {r}")
        st, _, body = http("GET", A.url(f"/v1/models/{HPT}"))
        expect(st == 200 and b"AVAILABLE" in body, f"status after errors: {st} {body[:300]!r}")

    run_check("4 REST errors (status codes and TF Serving's messages; 413; 404)", rest_errors)

    # 5 -----------------------------------------------------------------
    def grpc_checks():
        with grpc.insecure_channel(A.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            mstub = model_service_pb2_grpc.ModelServiceStub(ch)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = HPT
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0]]))
            resp = stub.Predict(req, timeout=30)
            y = tf.make_ndarray(resp.outputs["y"])
            expect(y.dtype == np.float32 and y.tolist() == [[2.5], [3.0]], f"Predict y = {y!r}, expected [[2.5],[3.0]]")
            ms = resp.model_spec
            expect(ms.name == HPT and ms.HasField("version") and ms.version.value == 123
                   and ms.signature_name == "serving_default",
                   f"PredictResponse.model_spec {ms}, expected name {HPT}, version 123, signature serving_default")
            # a version and a signature
            req2 = predict_pb2.PredictRequest()
            req2.model_spec.name = HPT
            req2.model_spec.version.value = 123
            req2.model_spec.signature_name = "regress_x2_to_y3"
            req2.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
            resp2 = stub.Predict(req2, timeout=30)
            y3 = tf.make_ndarray(resp2.outputs["outputs"])
            expect(y3.tolist() == [[3.5], [4.0]], f"Predict regress_x2_to_y3 = {y3!r}, expected [[3.5],[4.0]]")
            # metadata
            mreq = get_model_metadata_pb2.GetModelMetadataRequest()
            mreq.model_spec.name = HPT
            mreq.metadata_field.append("signature_def")
            mresp = stub.GetModelMetadata(mreq, timeout=30)
            expect(mresp.model_spec.name == HPT and mresp.model_spec.version.value == 123,
                   f"GetModelMetadata model_spec {mresp.model_spec}")
            anyv = mresp.metadata["signature_def"]
            expect(anyv.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                   f"Any type_url {anyv.type_url!r}")
            sdm = get_model_metadata_pb2.SignatureDefMap()
            expect(anyv.Unpack(sdm), "the Any does not unpack into SignatureDefMap")
            expect("serving_default" in sdm.signature_def, f"SignatureDefMap keys {list(sdm.signature_def)}")
            want = saved_signatures(HPT_BASE, 123)
            expect(sdm == want, f"gRPC SignatureDefMap differs from the SavedModel's:\n{sdm}\nexpected:\n{want}")
            # status
            sreq = get_model_status_pb2.GetModelStatusRequest()
            sreq.model_spec.name = HPT
            sresp = mstub.GetModelStatus(sreq, timeout=30)
            vs = sresp.model_version_status
            expect(len(vs) == 1 and vs[0].version == 123
                   and vs[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
                   and vs[0].status.error_code == 0, f"GetModelStatus: {sresp}")

            def grpc_error(call, request, code, what, contains=None):
                try:
                    call(request, timeout=30)
                except grpc.RpcError as ex:
                    expect(ex.code() == code, f"{what}: {ex.code()} {ex.details()!r}, expected {code}")
                    if contains is not None:
                        expect(contains in (ex.details() or ""),
                               f"{what}: details {ex.details()!r} do not contain {contains!r}")
                    return ex.details()
                fail(f"{what}: succeeded, expected {code}")

            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = "nope"
            bad.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
            grpc_error(stub.Predict, bad, grpc.StatusCode.NOT_FOUND, "Predict, unknown model",
                       contains="Servable not found for request: Latest(nope)")
            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = HPT
            bad.model_spec.version.value = 7
            bad.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
            grpc_error(stub.Predict, bad, grpc.StatusCode.NOT_FOUND, "Predict, unknown version",
                       contains=f"Servable not found for request: Specific({HPT}, 7)")
            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = HPT
            bad.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1], [2]], np.int64)))
            grpc_error(stub.Predict, bad, grpc.StatusCode.INVALID_ARGUMENT, "Predict, int64 into a float input")
            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = HPT
            grpc_error(stub.Predict, bad, grpc.StatusCode.INVALID_ARGUMENT, "Predict, missing input")
            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = HPT
            bad.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
            bad.inputs["z"].CopyFrom(tf.make_tensor_proto([[1.0]]))
            grpc_error(stub.Predict, bad, grpc.StatusCode.INVALID_ARGUMENT, "Predict, extra input")
            sreq = get_model_status_pb2.GetModelStatusRequest()
            sreq.model_spec.name = "nope"
            grpc_error(mstub.GetModelStatus, sreq, grpc.StatusCode.NOT_FOUND, "GetModelStatus, unknown model")
            mreq = get_model_metadata_pb2.GetModelMetadataRequest()
            mreq.model_spec.name = HPT
            grpc_error(stub.GetModelMetadata, mreq, grpc.StatusCode.INVALID_ARGUMENT,
                       "GetModelMetadata without metadata_field",
                       contains="GetModelMetadataRequest must specify at least one metadata_field")
            # still serving
            resp = stub.Predict(req, timeout=30)
            expect(tf.make_ndarray(resp.outputs["y"]).tolist() == [[2.5], [3.0]], "Predict after errors")

    run_check("5 gRPC Predict / GetModelMetadata / GetModelStatus and errors", grpc_checks)

    # 6 -----------------------------------------------------------------
    def mnist():
        sigs = saved_signatures(MNIST_BASE, 1).signature_def["serving_default"]
        (in_name,) = list(sigs.inputs)
        (out_name,) = list(sigs.outputs)
        mpred = f"/v1/models/{MNIST}:predict"
        with grpc.insecure_channel(C.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for k in ("x1", "x7"):
                x, want = ctx[k], ctx["keras_" + k]
                r = predict_ok(C, mpred, {"instances": x.tolist()}, f"mnist REST row {k}")
                got = np.array(r["predictions"], np.float32)
                expect(got.shape == want.shape, f"mnist REST {k}: shape {got.shape}, expected {want.shape}")
                d = float(np.max(np.abs(got - want)))
                expect(d <= 1e-4, f"mnist REST {k}: max |server - keras| = {d:.3g} > 1e-4")
                r = predict_ok(C, mpred, {"inputs": {in_name: x.tolist()}}, f"mnist REST columnar {k}")
                got = np.array(r["outputs"], np.float32)
                expect(got.shape == want.shape and float(np.max(np.abs(got - want))) <= 1e-4,
                       f"mnist REST columnar {k}: differs from Keras")
                req = predict_pb2.PredictRequest()
                req.model_spec.name = MNIST
                req.inputs[in_name].CopyFrom(tf.make_tensor_proto(x))
                resp = stub.Predict(req, timeout=60)
                got = tf.make_ndarray(resp.outputs[out_name])
                expect(got.shape == want.shape, f"mnist gRPC {k}: shape {got.shape}, expected {want.shape}")
                d = float(np.max(np.abs(got - want)))
                expect(d <= 1e-4, f"mnist gRPC {k}: max |server - keras| = {d:.3g} > 1e-4")

    run_check("6 Keras CNN over REST and gRPC within 1e-4 of Keras (batches 1 and 7)", mnist)

    # 9 (before the hot swap changes the model) ---------------------------
    def prometheus():
        for _ in range(3):
            predict_ok(A, pred, {"instances": [1.0]}, "prometheus warm-up")
        st, ctype, body = http("GET", A.url("/monitoring/prometheus/metrics"))
        expect(st == 200, f"GET /monitoring/prometheus/metrics -> {st} {body[:300]!r}")
        expect(ctype.startswith("text/plain"), f"Prometheus Content-Type {ctype!r}, expected text/plain")
        text = body.decode()
        expect("# TYPE :tensorflow:serving:request_count counter" in text,
               f"no '# TYPE :tensorflow:serving:request_count counter' line:\n{text[:2000]}")
        counts = [int(m.group(1)) for m in re.finditer(
            r'^:tensorflow:serving:request_count\{[^}]*model_name="half_plus_two"[^}]*\} (\d+)$', text, re.M)]
        expect(counts and sum(counts) >= 3,
               f'no :tensorflow:serving:request_count{{model_name="half_plus_two",...}} line with >= 3:\n{text[:2000]}')
        expect(re.search(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",status="OK"\} \d+$',
                         text, re.M), f"no request_count line with status=\"OK\":\n{text[:2000]}")
        expect(re.search(r'^:tensorflow:serving:request_latency_bucket\{[^}]*model_name="half_plus_two"[^}]*'
                         r'le="[^"]+"\} \d+$', text, re.M),
               f"no :tensorflow:serving:request_latency_bucket line for half_plus_two:\n{text[:3000]}")

    run_check("9 Prometheus metrics (--monitoring_config_file)", prometheus)

    # 7 -----------------------------------------------------------------
    def status_of(server):
        st, _, body = http("GET", server.url(f"/v1/models/{HPT}"))
        expect(st == 200, f"status -> {st} {body[:300]!r}")
        msg = get_model_status_pb2.GetModelStatusResponse()
        json_format.Parse(body, msg)
        return {v.version: v for v in msg.model_version_status}, [v.version for v in msg.model_version_status]

    def wait_status(server, what, pred_fn, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last, order = status_of(server)
            if pred_fn(last):
                return last, order
            time.sleep(0.1)
        fail(f"{what}: not reached after {timeout} s; last status: "
             + "; ".join(f"{v}: {get_model_status_pb2.ModelVersionStatus.State.Name(s.state)} "
                         f"{s.status.error_code} {s.status.error_message!r}" for v, s in (last or {}).items()))

    def hot_swap():
        results = []  # (value or None, error)
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    st, _, body = post_json(A, pred, {"instances": [2.0]}, timeout=30)
                    if st != 200:
                        results.append((None, f"HTTP {st} {body[:300]!r}"))
                    else:
                        results.append((json.loads(body)["predictions"][0], None))
                except Exception as ex:  # noqa: BLE001
                    results.append((None, repr(ex)))

        th = threading.Thread(target=load, daemon=True)
        th.start()
        try:
            time.sleep(0.5)
            before = len(results)
            expect(before > 0, "no request answered before the deploy")
            os.rename(os.path.join(STAGING, "124"), os.path.join(HPT_BASE, "124"))
            t_deploy = time.monotonic()
            wait_status(A, "version 124 AVAILABLE",
                        lambda s: 124 in s and s[124].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE, 60)
            t_avail = time.monotonic() - t_deploy
            s, order = wait_status(A, "version 123 END after 124 is AVAILABLE",
                                   lambda s: 123 in s and s[123].state == get_model_status_pb2.ModelVersionStatus.END,
                                   30)
            expect(s[123].status.error_code == 0, f"123 unloaded with error {s[123].status}")
            expect(order == sorted(order, reverse=True), f"versions listed {order}, expected newest first")
            n = len(results)
            deadline = time.monotonic() + 10
            while len(results) < n + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            # A corrupt version: a saved_model.pb of garbage.
            bad = os.path.join(STAGING, "125")
            os.makedirs(os.path.join(bad, "variables"))
            with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
                f.write(b"\x08\xff\xff this is not a SavedModel \x00\x01\x02" * 20)
            os.rename(bad, os.path.join(HPT_BASE, "125"))
            s, _ = wait_status(A, "version 125 END with an error",
                               lambda s: 125 in s and s[125].state == get_model_status_pb2.ModelVersionStatus.END, 60)
            expect(s[125].status.error_code != 0 and s[125].status.error_message,
                   f"corrupt 125: status {s[125].status}, expected a non-OK error_code and a message")
            time.sleep(1.5)  # another poll: the failed version is not retried into trouble
            s, _ = status_of(A)
            expect(s[124].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                   f"124 is {get_model_status_pb2.ModelVersionStatus.State.Name(s[124].state)} after the corrupt 125")
            expect(s[125].state == get_model_status_pb2.ModelVersionStatus.END, f"125 state {s[125].state}")
        finally:
            stop.set()
            th.join(timeout=30)
        errors = [e for v, e in results if e]
        expect(not errors, f"{len(errors)} of {len(results)} requests failed during the swap, e.g. {errors[:3]}")
        values = [v for v, _ in results]
        expect(set(values) <= {3.0, 4.0}, f"answers other than 3.0 (v123) / 4.0 (v124): {sorted(set(values))}")
        expect(values[0] == 3.0 and values[-1] == 4.0, f"first answer {values[0]}, last {values[-1]}")
        first_new = values.index(4.0)
        expect(3.0 not in values[first_new:], "an answer from 123 after one from 124")
        r = predict_ok(A, pred, {"instances": [2.0, 3.0]}, "after swap")
        expect(r == {"predictions": [4.0, 5.0]}, f"after swap: {r}, expected [4.0, 5.0] (y = x + 2)")
        r = predict_ok(A, f"/v1/models/{HPT}/versions/124:predict", {"instances": [2.0]}, "versions/124")
        expect(r == {"predictions": [4.0]}, f"versions/124: {r}")
        expect_error(A, "POST", f"/v1/models/{HPT}/versions/123:predict", b'{"instances": [2.0]}', 404,
                     message=f"Servable not found for request: Specific({HPT}, 123)", what="unloaded 123")
        print(f"   hot swap: {len(results)} requests, 0 failed; 124 AVAILABLE {t_avail:.1f} s after the rename; "
              f"answers switched after {first_new} requests; corrupt 125: "
              f"{s[125].status.error_code} {s[125].status.error_message[:120]!r}", flush=True)

    run_check("7 hot swap (124 under load, corrupt 125)", hot_swap)

    # 8 -----------------------------------------------------------------
    def batching():
        x, want = ctx["x1000"], ctx["keras_x1000"]
        mpred = f"/v1/models/{MNIST}:predict"
        bodies = [json.dumps({"instances": x[i:i + 1].tolist()}).encode() for i in range(len(x))]

        def run_all(server):
            def one(i):
                st, _, body = http("POST", server.url(mpred), bodies[i], timeout=60)
                if st != 200:
                    return i, None, f"HTTP {st} {body[:300]!r}"
                return i, json.loads(body)["predictions"], None

            out = np.full(want.shape, np.nan, np.float32)
            errs = []
            t = time.monotonic()
            with ThreadPoolExecutor(32) as pool:
                for i, p, e in pool.map(one, range(len(bodies))):
                    if e:
                        errs.append((i, e))
                    else:
                        out[i] = np.array(p, np.float32)[0]
            return out, errs, time.monotonic() - t

        plain, e1, t1 = run_all(C)
        expect(not e1, f"no batching: {len(e1)} requests failed, e.g. {e1[:3]}")
        batched, e2, t2 = run_all(D)
        expect(not e2, f"batching: {len(e2)} requests failed, e.g. {e2[:3]}")
        diff = float(np.max(np.abs(plain - batched)))
        np.testing.assert_allclose(batched, plain, rtol=0, atol=1e-6,
                                   err_msg="batched answers differ from unbatched ones")
        dk1 = float(np.max(np.abs(plain - want)))
        dk2 = float(np.max(np.abs(batched - want)))
        expect(dk1 <= 1e-4 and dk2 <= 1e-4, f"max |server - keras|: unbatched {dk1:.3g}, batched {dk2:.3g} > 1e-4")
        st, _, body = http("GET", D.url("/monitoring/prometheus/metrics"))
        info = ""
        if st == 200:
            text = body.decode()
            c = re.search(r'^:tensorflow:serving:batching_session:input_batch_size_count\{model_name="mnist"\} (\d+)',
                          text, re.M)
            sm = re.search(r'^:tensorflow:serving:batching_session:input_batch_size_sum\{model_name="mnist"\} (\S+)',
                           text, re.M)
            if c and sm:
                nb, rows = int(c.group(1)), float(sm.group(1))
                info = f"; {nb} device batches for {rows:.0f} rows (mean {rows / max(nb, 1):.2f})"
                expect(nb < len(bodies), f"batching: {nb} device batches for {len(bodies)} concurrent requests: "
                                         "no request was batched with another")
        print(f"   batching: 1000 requests x 32 workers: unbatched {t1:.1f} s, batched {t2:.1f} s; "
              f"max |batched - unbatched| = {diff:.3g}; max |server - keras| = {max(dk1, dk2):.3g}{info}",
              flush=True)

    run_check("8 batching (1000 concurrent requests, equal to unbatched and to Keras)", batching)

    # 10 ----------------------------------------------------------------
    def graceful():
        # A REST request in flight: headers and half the body sent, the rest
        # after SIGTERM. Also a gRPC channel left open, as clients do.
        body = json.dumps({"instances": [2.0, 3.0]}).encode()
        ch = grpc.insecure_channel(A.grpc_target)
        try:
            sreq = get_model_status_pb2.GetModelStatusRequest()
            sreq.model_spec.name = HPT
            model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(sreq, timeout=30)
            sock = socket.create_connection(("127.0.0.1", A.rest_port), timeout=30)
            head = (f"POST {pred} HTTP/1.1\r\nHost: 127.0.0.1:{A.rest_port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + body[:10])
            time.sleep(0.5)
            A.proc.send_signal(signal.SIGTERM)
            t_term = time.monotonic()
            time.sleep(0.5)
            expect(A.proc.poll() is None,
                   f"server exited (code {A.proc.returncode}) with a request in flight, before it completed")
            sock.sendall(body[10:])
            data = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    hdr, _, rest = data.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length:\s*(\d+)", hdr)
                    if m and len(rest) >= int(m.group(1)):
                        break
            sock.close()
            expect(data.startswith(b"HTTP/1.1 200"), f"in-flight request answered {data[:300]!r}, expected 200")
            _, _, rest = data.partition(b"\r\n\r\n")
            expect(json.loads(rest) == {"predictions": [4.0, 5.0]}, f"in-flight request answer {rest!r}")
            try:
                code = A.proc.wait(timeout=max(0.1, 10 - (time.monotonic() - t_term)))
            except subprocess.TimeoutExpired:
                fail("the server did not exit within 10 s of SIGTERM (after its in-flight request completed)")
            took = time.monotonic() - t_term
            expect(code == 0, f"exit code {code} after SIGTERM, expected 0")
        finally:
            ch.close()
        print(f"   graceful shutdown: in-flight request 200, exit 0 {took:.1f} s after SIGTERM", flush=True)

    run_check("10 graceful shutdown on SIGTERM (request in flight completes, exit 0 within 10 s)", graceful)

    kill_servers()
    total = time.monotonic() - T0
    if FAILURES:
        print(f"FAILED checks: {', '.join(FAILURES)} ({total:.0f} s)")
        sys.exit(1)
    print(f"all checks passed in {total:.0f} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        dump_logs()
        sys.exit(1)
    finally:
        kill_servers()
