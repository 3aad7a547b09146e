//! `wgflow_model_server` as a client sees it: the real binary on loopback
//! ports, spoken to over raw HTTP/1.1 (REST) and, with the venv's
//! `tensorflow-serving-api`, over gRPC (`tests/python/check_model_server.py`).
//! Models are written by wgflow here (half_plus_two as a function with two
//! variables, the MNIST CNN of the SavedModel tests) and by TensorFlow in
//! the Python check.

// Proving `Send` for futures that hold the model manager walks wgpu's
// types deeper than the default limit (as in the library, src/lib.rs).
#![recursion_limit = "256"]

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wgflow::function::{ConcreteFunction, TensorSpec};
use wgflow::io::saved_model::{self, SaveOptions};
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::serving::json::{self, Json};
use wgflow::{DType, Device, Tensor, Variable};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgflow-ms-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free loopback port no test of this process was given before (a
/// server may not have bound its ports yet when the next one asks).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Held until a fresh port comes, so the OS offers another each time.
    let mut held = Vec::new();
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        held.push(l);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// y = a x + b as TF Serving's half_plus_two: input `x` [-1, 1], output `y`.
fn half_plus_two(dir: &Path, a: f32, b: f32) {
    let d = Device::Cpu;
    let va = Variable::new(Tensor::from_vec(vec![a], &[1, 1], &d).unwrap(), "a");
    let vb = Variable::new(Tensor::from_vec(vec![b], &[1], &d).unwrap(), "b");
    let spec = TensorSpec::new(&[None, Some(1)], DType::F32).named("x");
    let f = ConcreteFunction::trace("half_plus_two", &[spec], &d, |x: &[Tensor]| {
        Ok(vec![x[0].matmul(&va.value())?.add(&vb.value())?])
    })
    .unwrap()
    .with_output_names(&["y"])
    .unwrap();
    saved_model::save_functions(dir, &[("serving_default", &f)], &SaveOptions::default()).unwrap();
}

fn cnn() -> Sequential {
    set_random_seed(5);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    m.build(&[28, 28, 1], &Device::Cpu).unwrap();
    m
}

struct Server {
    child: Child,
    rest: u16,
    grpc: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the binary with `args` (ports added) and waits until `model`
    /// (if any) has an AVAILABLE version.
    fn start(name: &str, args: &[String], model: Option<&str>) -> Server {
        Server::start_on("cpu", name, args, model)
    }

    /// [`Server::start`] on `device` (`WGFLOW_DEVICE`).
    fn start_on(device: &str, name: &str, args: &[String], model: Option<&str>) -> Server {
        let (rest, grpc) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("wgflow-ms-{}-{name}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_wgflow_model_server"))
            .arg(format!("--port={grpc}"))
            .arg(format!("--rest_api_port={rest}"))
            .args(args)
            .env("WGFLOW_DEVICE", device)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Server { child, rest, grpc, log };
        if let Some(m) = model {
            s.wait_version(m, None);
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `version` (or any version) of `model` is AVAILABLE.
    fn wait_version(&self, model: &str, version: Option<u64>) {
        let t0 = Instant::now();
        loop {
            if let Ok((200, body)) = try_http(self.rest, "GET", &format!("/v1/models/{model}"), b"") {
                let ok = match version {
                    None => body.contains("AVAILABLE"),
                    Some(v) => body.contains(&format!("{{\"version\":\"{v}\",\"state\":\"AVAILABLE\"")),
                };
                if ok {
                    return;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "model {model} version {version:?} not available; server log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        try_http(self.rest, method, path, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver log:\n{}", self.log()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn try_http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// One 28x28x1 image as nested JSON lists.
fn image_json(x: &[f32]) -> String {
    let rows: Vec<String> = x
        .chunks(28)
        .map(|r| {
            format!(
                "[{}]",
                r.iter().map(|v| format!("[{v:?}]")).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

fn parse(body: &str) -> Json {
    json::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn error_of(body: &str) -> String {
    match parse(body).get("error") {
        Some(Json::Str(s)) => s.clone(),
        _ => panic!("no error in {body}"),
    }
}

fn floats(v: &Json) -> Vec<f64> {
    match v {
        Json::Num(f, _) => vec![*f],
        Json::Arr(a) => a.iter().flat_map(floats).collect(),
        _ => panic!("not numbers: {v:?}"),
    }
}

#[test]
fn rest_api_answers_as_tf_serving_does() {
    let base = tmp("rest");
    half_plus_two(&base.join("123"), 0.5, 2.0);
    let s = Server::start(
        "rest",
        &[
            "--model_name=half_plus_two".into(),
            format!("--model_base_path={}", base.display()),
        ],
        Some("half_plus_two"),
    );
    assert!(
        TcpStream::connect(("127.0.0.1", s.grpc)).is_ok(),
        "the gRPC port listens"
    );
    // Status, exactly.
    let (c, b) = s.http("GET", "/v1/models/half_plus_two", "");
    assert_eq!(c, 200);
    assert_eq!(
        b,
        r#"{"model_version_status":[{"version":"123","state":"AVAILABLE","status":{"error_code":"OK","error_message":""}}]}"#
    );
    assert_eq!(s.http("GET", "/v1/models/half_plus_two/versions/123", "").0, 200);
    let (c, b) = s.http("GET", "/v1/models/half_plus_two/versions/7", "");
    assert_eq!(
        (c, error_of(&b).as_str()),
        (404, "Could not find version 7 of model half_plus_two")
    );
    let (c, b) = s.http("GET", "/v1/models/nope", "");
    assert_eq!(
        (c, error_of(&b).as_str()),
        (404, "Could not find any versions of model nope")
    );

    // Metadata in TF Serving's JSON form.
    let (c, b) = s.http("GET", "/v1/models/half_plus_two/metadata", "");
    assert_eq!(c, 200, "{b}");
    let m = parse(&b);
    let spec = m.get("model_spec").unwrap();
    assert_eq!(spec.get("name"), Some(&Json::Str("half_plus_two".into())));
    assert_eq!(spec.get("signature_name"), Some(&Json::Str(String::new())));
    assert_eq!(spec.get("version"), Some(&Json::Str("123".into())));
    let sig = m
        .get("metadata")
        .and_then(|m| m.get("signature_def"))
        .and_then(|m| m.get("signature_def"))
        .and_then(|m| m.get("serving_default"))
        .unwrap_or_else(|| panic!("{b}"));
    assert_eq!(
        sig.get("method_name"),
        Some(&Json::Str("tensorflow/serving/predict".into()))
    );
    let x = sig.get("inputs").and_then(|i| i.get("x")).unwrap();
    assert_eq!(x.get("dtype"), Some(&Json::Str("DT_FLOAT".into())));
    let dims = x.get("tensor_shape").and_then(|t| t.get("dim")).unwrap();
    let Json::Arr(dims) = dims else { panic!() };
    assert_eq!(dims[0].get("size"), Some(&Json::Str("-1".into())));
    assert_eq!(dims[1].get("size"), Some(&Json::Str("1".into())));
    assert!(sig.get("outputs").and_then(|o| o.get("y")).is_some());

    // Predict: row and columnar, NaN and infinities, versions.
    let (c, b) = s.http(
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [[1.0], [2.0], [5.0]]}"#,
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(floats(parse(&b).get("predictions").unwrap()), vec![2.5, 3.0, 4.5]);
    let (c, b) = s.http(
        "POST",
        "/v1/models/half_plus_two/versions/123:predict",
        r#"{"signature_name": "serving_default", "inputs": {"x": [[NaN], [Infinity], [-Infinity], [-4]]}}"#,
    );
    assert_eq!(c, 200, "{b}");
    let out = floats(parse(&b).get("outputs").unwrap());
    assert!(
        out[0].is_nan() && out[1] == f64::INFINITY && out[2] == f64::NEG_INFINITY && out[3] == 0.0,
        "{b}"
    );
    let (c, b) = s.http(
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [{"x": [3.0]}]}"#,
    );
    assert_eq!((c, floats(parse(&b).get("predictions").unwrap())), (200, vec![3.5]));

    // Errors: status and TF Serving's message.
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            "",
            400,
            "JSON Parse error: The document is empty",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            "{}",
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "POST",
            "/v1/models/nope:predict",
            r#"{"instances": [[1.0]]}"#,
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/9:predict",
            r#"{"instances": [[1.0]]}"#,
            404,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            r#"{"signature_name": "nope", "instances": [[1.0]]}"#,
            400,
            "Serving signature name: \"nope\" not found in signature def",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/labels/stable:predict",
            r#"{"instances": [[1.0]]}"#,
            400,
            "Unrecognized servable version label: stable",
        ),
        ("GET", "/v1/models", "", 400, "Missing model name in request."),
        (
            "PUT",
            "/v1/models/half_plus_two",
            "",
            400,
            "Malformed request: PUT /v1/models/half_plus_two",
        ),
        (
            "POST",
            "/v1/models/half_plus_two",
            "{}",
            400,
            "Malformed request: POST /v1/models/half_plus_two",
        ),
    ];
    for (method, path, body, code, msg) in cases {
        let (c, b) = s.http(method, path, body);
        assert_eq!((c, error_of(&b)), (*code, msg.to_string()), "{method} {path} {body}");
    }
    let prefixed: &[(&str, &str)] = &[
        (
            r#"{"instances": [[1.0], [1.0, 2.0]]}"#,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 1 but got: 2",
        ),
        (r#"{"instances": [["x"]]}"#, "is not of expected type: float"),
        (
            r#"{"instances": [[1.0]"#,
            "JSON Parse error: Missing a comma or ']' after an array element.",
        ),
        (r#"{"instances": 3}"#, "Excepting 'instances' to be an list/array"),
        (r#"{"instances": []}"#, "No values in 'instances' array"),
        (
            r#"{"instances": [[1]], "inputs": [[1]]}"#,
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            r#"{"inputs": {"y": [[1.0]]}}"#,
            "Missing named input: x in 'inputs' object.",
        ),
        (
            r#"{"inputs": [[1.0, 2.0]]}"#,
            "has shape [1,2], which does not fit the signature's [-1,1]",
        ),
        (
            r#"{"signature_name": 3, "instances": [[1]]}"#,
            "'signature_name' key must be a string value.",
        ),
        ("[1, 2]", "Is not object"),
        (r#"{"instances": [[1e39]]}"#, "without loss of precision"),
    ];
    for (body, part) in prefixed {
        let (c, b) = s.http("POST", "/v1/models/half_plus_two:predict", body);
        assert_eq!(c, 400, "{body}: {b}");
        assert!(error_of(&b).contains(part), "{body}: {b}");
    }
    let (c, b) = s.http(
        "POST",
        "/v1/models/half_plus_two:classify",
        r#"{"examples": [{"x": 1.0}]}"#,
    );
    assert_eq!(c, 501, "{b}");
    assert!(!error_of(&b).is_empty());
    let (c, b) = s.http("GET", "/favicon.ico", "");
    assert_eq!(c, 404);
    assert!(b.contains("404 Not Found"));
    // Still serving.
    let (c, b) = s.http("POST", "/v1/models/half_plus_two:predict", r#"{"inputs": [[2.0]]}"#);
    assert_eq!((c, floats(parse(&b).get("outputs").unwrap())), (200, vec![3.0]));
}

/// A SavedModel whose signature takes and returns `DT_BFLOAT16`: the
/// metadata says so, and REST requests give the bf16 results (values
/// rounded to bf16 on the way in, as TF Serving converts JSON numbers).
#[test]
fn bfloat16_signatures_are_served() {
    let base = tmp("bf16");
    let d = Device::Cpu;
    let va = Variable::new(
        Tensor::from_vec(vec![half::bf16::from_f32(0.5)], &[1, 1], &d).unwrap(),
        "a",
    );
    let vb = Variable::new(
        Tensor::from_vec(vec![half::bf16::from_f32(2.0)], &[1], &d).unwrap(),
        "b",
    );
    let spec = TensorSpec::new(&[None, Some(1)], DType::BF16).named("x");
    let f = ConcreteFunction::trace("half_plus_two", &[spec], &d, |x: &[Tensor]| {
        Ok(vec![x[0].matmul(&va.value())?.add(&vb.value())?])
    })
    .unwrap()
    .with_output_names(&["y"])
    .unwrap();
    saved_model::save_functions(base.join("1"), &[("serving_default", &f)], &SaveOptions::default()).unwrap();
    let s = Server::start(
        "bf16",
        &[
            "--model_name=hp2".into(),
            format!("--model_base_path={}", base.display()),
        ],
        Some("hp2"),
    );
    let (c, b) = s.http("GET", "/v1/models/hp2/metadata", "");
    assert_eq!(c, 200, "{b}");
    assert_eq!(b.matches("DT_BFLOAT16").count(), 2, "input and output: {b}");
    let (c, b) = s.http(
        "POST",
        "/v1/models/hp2:predict",
        r#"{"instances": [[1.0], [3.0], [1.00390625]]}"#,
    );
    assert_eq!(c, 200, "{b}");
    // 1.00390625 is halfway between two bf16s and rounds to even (1.0).
    assert_eq!(floats(parse(&b).get("predictions").unwrap()), vec![2.5, 3.5, 2.5]);
}

/// Two models from a config file: `specific` versions, a label, the CNN's
/// softmax within 1e-5 of wgflow's own prediction, several inputs by name.
#[test]
fn model_config_file_versions_and_labels() {
    let root = tmp("config");
    half_plus_two(&root.join("hpt/1"), 0.5, 2.0);
    half_plus_two(&root.join("hpt/2"), 1.0, 2.0);
    half_plus_two(&root.join("hpt/3"), 2.0, 2.0);
    let mut model = cnn();
    model.export(root.join("mnist/1")).unwrap();
    let cfg = root.join("models.config");
    std::fs::write(
        &cfg,
        format!(
            "model_config_list {{\n  config {{ name: 'hpt' base_path: '{}' model_platform: 'tensorflow'\n    \
             model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}\n    \
             version_labels {{ key: 'stable' value: 1 }} version_labels {{ key: 'canary' value: 2 }} }}\n  \
             config {{ name: 'mnist' base_path: '{}' }}\n}}\n",
            root.join("hpt").display(),
            root.join("mnist").display()
        ),
    )
    .unwrap();
    let s = Server::start(
        "config",
        &[format!("--model_config_file={}", cfg.display())],
        Some("mnist"),
    );
    s.wait_version("hpt", Some(1));
    s.wait_version("hpt", Some(2));
    let (_, b) = s.http("GET", "/v1/models/hpt", "");
    assert!(
        b.starts_with(r#"{"model_version_status":[{"version":"2","state":"AVAILABLE""#),
        "{b}"
    );
    assert!(!b.contains("\"3\""), "version 3 is not in the policy: {b}");
    let row = r#"{"instances": [[4.0]]}"#;
    for (path, want) in [
        ("/v1/models/hpt:predict", 6.0),
        ("/v1/models/hpt/versions/1:predict", 4.0),
        ("/v1/models/hpt/labels/stable:predict", 4.0),
        ("/v1/models/hpt/labels/canary:predict", 6.0),
    ] {
        let (c, b) = s.http("POST", path, row);
        assert_eq!(
            (c, floats(parse(&b).get("predictions").unwrap())),
            (200, vec![want]),
            "{path}"
        );
    }
    let (c, b) = s.http("POST", "/v1/models/hpt/versions/3:predict", row);
    assert_eq!(
        (c, error_of(&b).as_str()),
        (404, "Servable not found for request: Specific(hpt, 3)")
    );
    // The CNN: rows of 28x28x1 images.
    let x = uniform(&[3, 28, 28, 1], 0.0, 1.0, 11, DType::F32);
    let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
    let v = x.to_vec::<f32>().unwrap();
    let images: Vec<String> = v.chunks(784).map(image_json).collect();
    let body = format!("{{\"instances\": [{}]}}", images.join(","));
    let (c, b) = s.http("POST", "/v1/models/mnist:predict", &body);
    assert_eq!(c, 200, "{b}");
    let got = floats(parse(&b).get("predictions").unwrap());
    assert_eq!(got.len(), 30);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f32 - w).abs() <= 1e-5, "{g} vs {w}");
    }
}

/// A new version copied in while a client keeps asking: no request fails,
/// the status shows it, answers switch. A corrupt version is reported in
/// its status and the previous one keeps serving; so does a base path that
/// vanishes.
#[test]
fn hot_swap_loses_no_request() {
    let base = tmp("swap");
    half_plus_two(&base.join("1"), 0.5, 2.0);
    let s = Server::start(
        "swap",
        &[
            "--model_name=hpt".into(),
            format!("--model_base_path={}", base.display()),
            "--file_system_poll_wait_seconds=1".into(),
        ],
        Some("hpt"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed, new_answers) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let client = {
        let (stop, sent, failed, new_answers) = (stop.clone(), sent.clone(), failed.clone(), new_answers.clone());
        let port = s.rest;
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                match try_http(port, "POST", "/v1/models/hpt:predict", br#"{"instances": [[2.0]]}"#) {
                    Ok((200, b)) if b.contains("[3.0]") => {}
                    Ok((200, b)) if b.contains("[4.0]") => {
                        new_answers.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // Written beside the base path, then renamed in, as a deploy does.
    let staging = tmp("swap-staging");
    half_plus_two(&staging.join("2"), 1.0, 2.0);
    std::fs::rename(staging.join("2"), base.join("2")).unwrap();
    s.wait_version("hpt", Some(2));
    let t0 = Instant::now();
    while new_answers.load(Ordering::SeqCst) < 20 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A corrupt version 3: reported, version 2 keeps serving.
    std::fs::create_dir_all(base.join("3/variables")).unwrap();
    std::fs::write(base.join("3/saved_model.pb"), b"not a protobuf").unwrap();
    let t0 = Instant::now();
    let status = loop {
        let (_, b) = s.http("GET", "/v1/models/hpt", "");
        if b.contains(r#""version":"3","state":"END""#) {
            break b;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains(r#"{"version":"2","state":"AVAILABLE""#), "{status}");
    let v3 = status.split(r#""version":"3""#).nth(1).unwrap();
    assert!(
        !v3.starts_with(r#","state":"END","status":{"error_code":"OK""#),
        "{status}"
    );
    assert!(v3.contains("saved_model.pb"), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let (n, f, new) = (
        sent.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        new_answers.load(Ordering::SeqCst),
    );
    assert_eq!(f, 0, "{f} of {n} requests failed during the swap; log:\n{}", s.log());
    assert!(new >= 20, "answers switched to version 2 only {new} times of {n}");
    // The base path vanishes: what is loaded keeps serving.
    std::fs::remove_dir_all(&base).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (c, b) = s.http("POST", "/v1/models/hpt:predict", r#"{"instances": [[2.0]]}"#);
    assert_eq!((c, floats(parse(&b).get("predictions").unwrap())), (200, vec![4.0]));
}

/// The same 1,000 concurrent requests with batching on and off: the same
/// answers, byte for byte, on the CPU device and every GPU.
#[test]
fn batching_gives_the_answers_of_unbatched_runs() {
    let mut devices = vec!["cpu".to_string()];
    devices.extend(gpus().iter().map(|d| d.to_string()));
    for d in devices {
        batching_matches_on(&d);
    }
}

fn batching_matches_on(device: &str) {
    let base = tmp(&format!("batch-{}", device.replace(':', "")));
    let mut model = cnn();
    model.export(base.join("1")).unwrap();
    let params = base.join("batching.config");
    std::fs::write(
        &params,
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\nnum_batch_threads { value: 2 }\n\
         max_enqueued_batches { value: 1000 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 16\n",
    )
    .unwrap();
    let common = [
        "--model_name=mnist".to_string(),
        format!("--model_base_path={}", base.display()),
    ];
    let plain = Server::start_on(device, "plain", &common, Some("mnist"));
    let mut args = common.to_vec();
    args.push("--enable_batching".into());
    args.push(format!("--batching_parameters_file={}", params.display()));
    let monitoring = base.join("monitoring.config");
    std::fs::write(&monitoring, "prometheus_config { enable: true, path: \"/metrics\" }").unwrap();
    args.push(format!("--monitoring_config_file={}", monitoring.display()));
    let batched = Server::start_on(device, "batched", &args, Some("mnist"));
    let n = 1000;
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| {
                let x = uniform(&[1, 28, 28, 1], 0.0, 1.0, 1000 + i as u64, DType::F32)
                    .to_vec::<f32>()
                    .unwrap();
                format!("{{\"inputs\": {{\"inputs\": [{}]}}}}", image_json(&x))
            })
            .collect(),
    );
    let run = |port: u16| -> Vec<String> {
        let next = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (next, answers, bodies) = (next.clone(), answers.clone(), bodies.clone());
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        let (c, b) = try_http(port, "POST", "/v1/models/mnist:predict", bodies[i].as_bytes()).unwrap();
                        assert_eq!(c, 200, "{b}");
                        answers.lock().unwrap()[i] = b;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
    };
    let a = run(plain.rest);
    let b = run(batched.rest);
    for i in 0..n {
        assert_eq!(a[i], b[i], "request {i} on {device}");
    }
    // Batches really formed (more than one row per batch on average).
    let (c, m) = batched.http("GET", "/metrics", "");
    assert_eq!(c, 200);
    let count_line = m
        .lines()
        .find(|l| l.starts_with(":tensorflow:serving:batching_session:input_batch_size_count"))
        .unwrap_or_else(|| panic!("{m}"));
    let batches: f64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(batches < n as f64, "{batches} batches for {n} requests");
    assert!(
        m.contains(r#":tensorflow:serving:request_count{model_name="mnist",status="OK"}"#),
        "{m}"
    );
    // The first answer equals wgflow's own prediction.
    let x = uniform(&[1, 28, 28, 1], 0.0, 1.0, 1000, DType::F32);
    let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
    let got = floats(parse(&a[0]).get("outputs").unwrap());
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f32 - w).abs() <= 1e-5, "{device}: {g} vs {w}");
    }
}

/// Hostile clients: garbage, huge and deep bodies, a client that stops
/// mid-request, a request over the size limit, a slow model call past the
/// deadline; the server keeps answering the others correctly.
#[test]
fn hostile_requests_get_errors_and_the_server_keeps_serving() {
    let base = tmp("hostile");
    half_plus_two(&base.join("1"), 0.5, 2.0);
    let s = Server::start(
        "hostile",
        &[
            "--model_name=hpt".into(),
            format!("--model_base_path={}", base.display()),
            "--rest_api_max_request_bytes=100000".into(),
            "--rest_api_timeout_in_ms=2000".into(),
        ],
        Some("hpt"),
    );
    // A client that sends half a request and goes quiet, another that
    // promises a body it never sends.
    let mut quiet = TcpStream::connect(("127.0.0.1", s.rest)).unwrap();
    quiet
        .write_all(b"POST /v1/models/hpt:predict HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut short = TcpStream::connect(("127.0.0.1", s.rest)).unwrap();
    short
        .write_all(b"POST /v1/models/hpt:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inst")
        .unwrap();
    let bodies: Vec<(Vec<u8>, u16)> = vec![
        (vec![0xff, 0xfe, 0x00, 0x01], 400),
        (b"{\"instances\": [[\"\\ud800\"]]}".to_vec(), 400),
        ("[".repeat(50_000).into_bytes(), 400),
        (
            format!("{{\"instances\": {}1{}}}", "[".repeat(120), "]".repeat(120)).into_bytes(),
            400,
        ),
        (vec![b' '; 200_000], 413),
        (b"{\"instances\": [[1.0]], \"instances\": [[2.0]]}".to_vec(), 200),
        (b"{\"instances\": [[99999999999999999999999999999]]}".to_vec(), 200),
        (b"{\"inputs\": {\"x\": {\"b64\": \"AAAA\"}}}".to_vec(), 400),
    ];
    for (body, code) in &bodies {
        let (c, b) = try_http(s.rest, "POST", "/v1/models/hpt:predict", body).unwrap();
        assert_eq!(
            c,
            *code,
            "{:?}: {b}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        if c != 200 {
            assert!(!error_of(&b).is_empty());
        }
    }
    // The stalled connections time out without holding others up.
    let (c, _) = s.http("POST", "/v1/models/hpt:predict", r#"{"instances": [[2.0]]}"#);
    assert_eq!(c, 200);
    short.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = short.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 504"), "{out:?}");
    drop(quiet);
    // Many connections at once, half of them broken off.
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let port = s.rest;
            std::thread::spawn(move || {
                for j in 0..20 {
                    if (i + j) % 2 == 0 {
                        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        let _ = c.write_all(b"POST /v1/models/hpt:predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n{");
                    } else {
                        let (c, b) =
                            try_http(port, "POST", "/v1/models/hpt:predict", br#"{"instances": [[4.0]]}"#).unwrap();
                        assert_eq!((c, b.contains("4.0")), (200, true), "{b}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (c, b) = s.http("GET", "/v1/models/hpt", "");
    assert_eq!(c, 200, "{b}");
}

/// SIGTERM with a request in flight: it is answered, the process exits 0.
#[cfg(unix)]
#[test]
fn sigterm_finishes_requests_in_flight() {
    let base = tmp("term");
    let mut model = cnn();
    model.export(base.join("1")).unwrap();
    let mut s = Server::start(
        "term",
        &["--model_name=m".into(), format!("--model_base_path={}", base.display())],
        Some("m"),
    );
    // 64 images: long enough on the CPU device to be in flight at the signal.
    let img = image_json(&[0.5; 784]);
    let big = format!("{{\"instances\": [{}]}}", vec![img; 64].join(","));
    let port = s.rest;
    let t = std::thread::spawn(move || try_http(port, "POST", "/v1/models/m:predict", big.as_bytes()));
    std::thread::sleep(Duration::from_millis(30));
    let pid = s.child.id() as i32;
    // SAFETY: kill(2) with a child's pid and SIGTERM has no memory effects.
    unsafe { libc_kill(pid, 15) };
    let (c, b) = t.join().unwrap().unwrap();
    assert_eq!(c, 200, "{b}");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still running after SIGTERM:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", s.log());
    assert!(s.log().contains("SIGTERM"), "{}", s.log());
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn flags_and_startup_errors() {
    let bin = env!("CARGO_BIN_EXE_wgflow_model_server");
    let help = Command::new(bin).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--port",
        "--rest_api_port",
        "--rest_api_num_threads",
        "--rest_api_timeout_in_ms",
        "--model_name",
        "--model_base_path",
        "--model_config_file",
        "--file_system_poll_wait_seconds",
        "--enable_batching",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--rest_api_enable_cors_support",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let run = |args: &[&str]| {
        let o = Command::new(bin)
            .args(args)
            .env("WGFLOW_DEVICE", "cpu")
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(&["--rest_api_port=0"]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains("Both server_options.model_base_path and server_options.model_config_file are empty!"),
        "{err}"
    );
    let cfg = tmp("flags").join("bad.config");
    std::fs::write(&cfg, "model_config_list { config { name: 'a' base_pth: '/x' } }").unwrap();
    let (code, err) = run(&[&format!("--model_config_file={}", cfg.display())]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains("unknown field 'base_pth'") && err.contains("line 1"),
        "{err}"
    );
    let (code, err) = run(&["--model_base_path=/x", "--batching_parameters_file=/y"]);
    assert_eq!(code, Some(255));
    assert!(err.contains("without setting server_options.enable_batching"), "{err}");
}

/// CORS headers and preflight.
#[test]
fn cors_support() {
    let base = tmp("cors");
    half_plus_two(&base.join("1"), 0.5, 2.0);
    let s = Server::start(
        "cors",
        &[
            "--model_name=hpt".into(),
            format!("--model_base_path={}", base.display()),
            "--rest_api_enable_cors_support=true".into(),
        ],
        Some("hpt"),
    );
    let mut c = TcpStream::connect(("127.0.0.1", s.rest)).unwrap();
    c.write_all(
        b"OPTIONS /v1/models/hpt:predict HTTP/1.1\r\nHost: x\r\nOrigin: http://example.com\r\n\
          Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let lower = out.to_ascii_lowercase();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(lower.contains("access-control-allow-origin: *"), "{out}");
    assert!(lower.contains("access-control-allow-methods: post, get"), "{out}");
    let mut c = TcpStream::connect(("127.0.0.1", s.rest)).unwrap();
    c.write_all(b"GET /v1/models/hpt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(
        out.to_ascii_lowercase().contains("access-control-allow-origin: *"),
        "{out}"
    );
}

/// TensorFlow's own half_plus_two and a Keras CNN, spoken to with the
/// official `tensorflow-serving-api` client (gRPC) and strict protobuf
/// JSON parsing (REST): `tests/python/check_model_server.py`.
#[test]
fn tensorflow_serving_clients_work_unchanged() {
    let Some(python) = python() else { return };
    let dir = tmp("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_model_server.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_wgflow_model_server"))
        .arg(&dir)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_model_server.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: "), "{stdout}");
}

/// The batch queue's limits: a request with more rows than
/// `max_batch_size` is 400, and requests past `max_enqueued_batches` get
/// TF Serving's 503 while the others are answered.
#[test]
fn batch_queue_limits() {
    let base = tmp("queue");
    let mut model = cnn();
    model.export(base.join("1")).unwrap();
    let params = base.join("batching.config");
    std::fs::write(
        &params,
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n\
         max_enqueued_batches { value: 1 }\n",
    )
    .unwrap();
    let s = Server::start(
        "queue",
        &[
            "--model_name=m".into(),
            format!("--model_base_path={}", base.display()),
            "--enable_batching".into(),
            format!("--batching_parameters_file={}", params.display()),
        ],
        Some("m"),
    );
    let img = image_json(&[0.25; 784]);
    let (c, b) = s.http(
        "POST",
        "/v1/models/m:predict",
        &format!("{{\"instances\": [{img},{img}]}}"),
    );
    assert_eq!(
        (c, error_of(&b).as_str()),
        (400, "Task size 2 is larger than maximum input batch size 1")
    );
    let body = Arc::new(format!("{{\"instances\": [{img}]}}"));
    let port = s.rest;
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|_| try_http(port, "POST", "/v1/models/m:predict", body.as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let full = answers.iter().filter(|(c, _)| *c == 503).count();
    let ok = answers.iter().filter(|(c, _)| *c == 200).count();
    assert_eq!(
        full + ok,
        answers.len(),
        "only 200 and 503: {:?}",
        answers.iter().find(|(c, _)| *c != 200 && *c != 503)
    );
    assert!(ok > 0 && full > 0, "{ok} answered, {full} refused");
    let (_, refused) = answers.iter().find(|(c, _)| *c == 503).unwrap();
    assert_eq!(
        error_of(refused),
        "The batch scheduling queue to which this task was submitted is full"
    );
}

// ------------------------------------------------------------------------
// gRPC in process: TF Serving's services called through `GrpcApi`, with
// gRPC's framing (and gzip) written here, so that tonic's decoding limits
// and the handlers are what a client meets.

mod inproc {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use prost::Message;
    use tonic::codegen::Service;
    use wgflow::io::saved_model::proto::{TensorProto, TensorShapeProto, dt};
    use wgflow::serving::config::{ModelConfig, VersionPolicy};
    use wgflow::serving::grpc::{GrpcApi, pb};
    use wgflow::serving::manager::Manager;
    use wgflow::serving::{App, Options};

    pub const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";
    pub const METADATA: &str = "/tensorflow.serving.PredictionService/GetModelMetadata";
    pub const STATUS: &str = "/tensorflow.serving.ModelService/GetModelStatus";

    /// A manager serving half_plus_two versions 1 and 2 as `hpt`.
    pub fn manager(name: &str) -> Arc<Manager> {
        let base = tmp(name);
        half_plus_two(&base.join("1"), 0.5, 2.0);
        half_plus_two(&base.join("2"), 0.5, 2.0);
        let m = Arc::new(Manager::new(
            vec![ModelConfig {
                name: "hpt".into(),
                base_path: base,
                policy: VersionPolicy::All,
                labels: Default::default(),
            }],
            Device::Cpu,
            None,
            false,
        ));
        m.poll();
        m
    }

    pub fn app(manager: &Arc<Manager>, max_request_bytes: usize) -> Arc<App> {
        let o = Options {
            max_request_bytes,
            ..Options::default()
        };
        Arc::new(App::new(Arc::clone(manager), o, None))
    }

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// One framed message, gzip-compressed when `gzip`.
    pub fn frame(payload: &[u8], gzip: bool) -> Vec<u8> {
        let body = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(payload).unwrap();
            e.finish().unwrap()
        } else {
            payload.to_vec()
        };
        let mut out = vec![u8::from(gzip)];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A unary call with a raw request body: the answer, or (code, message).
    pub fn call_raw<R: Message + Default>(
        rt: &tokio::runtime::Runtime,
        app: &Arc<App>,
        path: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> Result<R, (i32, String)> {
        let mut b = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if gzip {
            b = b.header("grpc-encoding", "gzip");
        }
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        let mut svc = GrpcApi(Arc::clone(app));
        rt.block_on(async move {
            let resp = svc.call(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            let status = tonic::Status::from_header_map(&parts.headers)
                .or_else(|| trailers.as_ref().and_then(tonic::Status::from_header_map))
                .expect("a grpc-status");
            if status.code() != tonic::Code::Ok {
                return Err((status.code() as i32, status.message().to_string()));
            }
            assert!(data.len() >= 5, "no message in {data:?}");
            Ok(R::decode(&data[5..]).unwrap())
        })
    }

    pub fn call<Q: Message, R: Message + Default>(
        rt: &tokio::runtime::Runtime,
        app: &Arc<App>,
        path: &str,
        msg: &Q,
    ) -> Result<R, (i32, String)> {
        call_raw(rt, app, path, frame(&msg.encode_to_vec(), false), false)
    }

    pub fn spec(name: &str) -> Option<pb::ModelSpec> {
        Some(pb::ModelSpec {
            name: name.into(),
            ..Default::default()
        })
    }

    pub fn floats(dims: &[usize], values: Vec<f32>) -> TensorProto {
        TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: Some(TensorShapeProto::from_dims(
                &dims.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )),
            float_val: values,
            ..Default::default()
        }
    }

    pub fn predict_x(x: TensorProto) -> pb::PredictRequest {
        pb::PredictRequest {
            model_spec: spec("hpt"),
            inputs: [("x".to_string(), x)].into_iter().collect(),
            output_filter: vec![],
        }
    }
}

const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;

/// gRPC Predict checks the input names against the signature before any
/// tensor is decoded, charges what it decodes to one budget, and bounds
/// shapes: a request of a few bytes cannot make the server allocate
/// gigabytes, and the errors name what is wrong without quoting it at
/// length.
#[test]
fn grpc_predict_checks_names_and_sizes_before_decoding() {
    use inproc::*;
    use wgflow::io::saved_model::proto::{TensorProto, TensorShapeProto, dt};
    use wgflow::serving::grpc::pb;
    let m = manager("grpc-bomb");
    let app = app(&m, 64 << 20);
    let rt = runtime();
    let ok: pb::PredictResponse = call(&rt, &app, PREDICT, &predict_x(floats(&[2, 1], vec![1.0, 2.0]))).unwrap();
    assert_eq!(ok.outputs["y"].float_val, vec![2.5, 3.0]);

    // 1000 inputs of 60M floats each, from one value apiece (240 GB decoded).
    let t0 = Instant::now();
    let mut junk = predict_x(floats(&[2, 1], vec![1.0, 2.0]));
    junk.inputs.clear();
    for i in 0..1000 {
        junk.inputs.insert(format!("junk{i}"), floats(&[60_000_000], vec![1.0]));
    }
    let (code, msg) = call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &junk).unwrap_err();
    assert_eq!(code, INVALID_ARGUMENT, "{msg}");
    assert!(
        msg.starts_with("input size does not match signature: 1000!=1 len({")
            && msg.contains("Missing but required: {x}."),
        "{msg}"
    );
    assert!(msg.len() < 4000, "{} bytes", msg.len());
    // Right count, wrong name.
    let mut wrong = predict_x(floats(&[60_000_000], vec![1.0]));
    wrong.inputs = [("z".to_string(), floats(&[60_000_000], vec![1.0]))]
        .into_iter()
        .collect();
    let (code, msg) = call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &wrong).unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (
            INVALID_ARGUMENT,
            "input tensor alias not found in signature: z. Inputs expected to be in the set {x}."
        )
    );
    // The right name, 80 MB once decoded: over the 64 MiB budget.
    let (code, msg) =
        call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &predict_x(floats(&[20_000_000, 1], vec![1.0])))
            .unwrap_err();
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(
        msg.contains("input 'x'") && msg.contains("--rest_api_max_request_bytes"),
        "{msg}"
    );
    // A 1 MB string repeated over a large shape.
    let strings = TensorProto {
        dtype: dt::STRING,
        tensor_shape: Some(TensorShapeProto::from_dims(&[Some(100_000), Some(1)])),
        string_val: vec![vec![b'x'; 1 << 20]],
        ..Default::default()
    };
    let (code, msg) = call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &predict_x(strings)).unwrap_err();
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // A zero dimension beside huge ones; more dimensions than TensorFlow's 254.
    let (code, msg) =
        call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &predict_x(floats(&[0, 1 << 62, 4], vec![]))).unwrap_err();
    assert_eq!(code, INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("shape [0,4611686018427387904,4] is too large"), "{msg}");
    let (code, msg) =
        call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &predict_x(floats(&[1; 300], vec![1.0]))).unwrap_err();
    assert_eq!(code, INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("300 dimensions") && msg.len() < 300, "{msg}");
    // Duplicate output aliases.
    let mut dup = predict_x(floats(&[1, 1], vec![1.0]));
    dup.output_filter = vec!["y".into(), "y".into()];
    let (code, msg) = call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &dup).unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (INVALID_ARGUMENT, "duplicate output tensor alias: y")
    );
    dup.output_filter = vec!["y".into()];
    let r: pb::PredictResponse = call(&rt, &app, PREDICT, &dup).unwrap();
    assert_eq!(r.outputs["y"].float_val, vec![2.5]);
    // Still serving.
    let ok: pb::PredictResponse = call(&rt, &app, PREDICT, &predict_x(floats(&[1, 1], vec![4.0]))).unwrap();
    assert_eq!(ok.outputs["y"].float_val, vec![4.0]);
}

/// Messages over the limit get gRPC's RESOURCE_EXHAUSTED (TF Serving's C
/// core answers so), gzip-compressed requests are read, and a compressed
/// message that inflates past the limit is refused while it inflates.
#[test]
fn grpc_message_limit_and_gzip() {
    use inproc::*;
    use prost::Message;
    use wgflow::serving::grpc::pb;
    let m = manager("grpc-limit");
    let small = app(&m, 100_000);
    let rt = runtime();
    let big = predict_x(floats(&[50_000, 1], vec![1.0; 50_000]));
    let (code, msg) = call::<_, pb::PredictResponse>(&rt, &small, PREDICT, &big).unwrap_err();
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(msg.starts_with("Received message larger than max (200"), "{msg}");
    // gzip: the same request as before, compressed.
    let req = predict_x(floats(&[3, 1], vec![1.0, 2.0, 5.0]));
    let r: pb::PredictResponse = call_raw(&rt, &small, PREDICT, frame(&req.encode_to_vec(), true), true).unwrap();
    assert_eq!(r.outputs["y"].float_val, vec![2.5, 3.0, 4.5]);
    // 200 kB of zeros compress to a few hundred bytes: refused inflated.
    let zeros = predict_x(floats(&[50_000, 1], vec![0.0; 50_000]));
    let body = frame(&zeros.encode_to_vec(), true);
    assert!(body.len() < 10_000, "{}", body.len());
    let (code, msg) = call_raw::<pb::PredictResponse>(&rt, &small, PREDICT, body, true).unwrap_err();
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
}

/// ModelSpec details as TF Serving reads them.
#[test]
fn grpc_model_spec_as_tf_serving_reads_it() {
    use inproc::*;
    use wgflow::serving::grpc::pb;
    let m = manager("grpc-spec");
    let app = app(&m, 64 << 20);
    let rt = runtime();
    let status = |spec: Option<pb::ModelSpec>| {
        call::<_, pb::GetModelStatusResponse>(&rt, &app, STATUS, &pb::GetModelStatusRequest { model_spec: spec })
    };
    let with = |name: &str, version: Option<i64>, label: Option<&str>| {
        Some(pb::ModelSpec {
            name: name.into(),
            version: version.map(|value| pb::Int64Value { value }),
            version_label: label.map(String::from),
            ..Default::default()
        })
    };
    let versions = |r: pb::GetModelStatusResponse| r.model_version_status.iter().map(|v| v.version).collect::<Vec<_>>();
    assert_eq!(versions(status(with("hpt", None, None)).unwrap()), vec![2, 1]);
    // GetModelStatusWithModelSpec looks at the version only.
    assert_eq!(versions(status(with("hpt", None, Some("nope"))).unwrap()), vec![2, 1]);
    assert_eq!(versions(status(with("hpt", Some(1), None)).unwrap()), vec![1]);
    assert_eq!(
        status(with("hpt", Some(-1), None)).unwrap_err(),
        (NOT_FOUND, "Could not find version -1 of model hpt".into())
    );
    assert_eq!(
        status(with("x", Some(3), None)).unwrap_err(),
        (NOT_FOUND, "Could not find version 3 of model x".into())
    );
    assert_eq!(
        status(with("", None, None)).unwrap_err(),
        (NOT_FOUND, "Could not find any versions of model ".into())
    );
    assert_eq!(
        status(None).unwrap_err(),
        (INVALID_ARGUMENT, "Missing ModelSpec".into())
    );
    // Predict and GetModelMetadata look a servable up by name.
    let mut req = predict_x(floats(&[1, 1], vec![1.0]));
    req.model_spec = with("", None, None);
    assert_eq!(
        call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &req).unwrap_err(),
        (INVALID_ARGUMENT, "ModelSpec has no name specified.".into())
    );
    req.model_spec = with("hpt", Some(-1), None);
    assert_eq!(
        call::<_, pb::PredictResponse>(&rt, &app, PREDICT, &req).unwrap_err(),
        (NOT_FOUND, "Servable not found for request: Specific(hpt, -1)".into())
    );
    req.model_spec = with("hpt", Some(1), None);
    let r: pb::PredictResponse = call(&rt, &app, PREDICT, &req).unwrap();
    assert_eq!(r.model_spec.and_then(|s| s.version).map(|v| v.value), Some(1));
    let meta = pb::GetModelMetadataRequest {
        model_spec: with("", None, None),
        metadata_field: vec!["signature_def".into()],
    };
    assert_eq!(
        call::<_, pb::GetModelMetadataResponse>(&rt, &app, METADATA, &meta).unwrap_err(),
        (INVALID_ARGUMENT, "ModelSpec has no name specified.".into())
    );
}

/// The REST bodies in flight are bounded in bytes: four bodies of the
/// flag's size take the whole share (4 x 64 MiB), a fifth waits for one
/// to finish.
#[test]
fn rest_bodies_in_flight_are_bounded() {
    use inproc::*;
    let m = Arc::new(wgflow::serving::manager::Manager::new(
        Vec::new(),
        Device::Cpu,
        None,
        false,
    ));
    let app = app(&m, 64 << 20);
    let rt = runtime();
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(app.body_permits(64 << 20).await.unwrap());
        }
        let wait = tokio::time::timeout(Duration::from_millis(200), app.body_permits(1 << 20)).await;
        assert!(wait.is_err(), "a fifth large body got memory");
        held.pop();
        let got = tokio::time::timeout(Duration::from_secs(5), app.body_permits(64 << 20)).await;
        assert!(matches!(got, Ok(Some(_))));
    });
}

/// What concerns one request alone is checked before it is batched (int64
/// values the devices cannot hold, output aliases given twice), so that it
/// never fails a merged batch.
#[test]
fn requests_are_checked_alone_before_batching() {
    use wgflow::io::saved_model::proto::{SignatureDef, TensorInfo, TensorShapeProto, dt};
    use wgflow::serving::servable::{Named, check_inputs, check_output_filter};
    use wgflow::serving::status::Code;
    use wgflow::serving::tensor::{HostData, HostTensor};

    let info = |dtype| TensorInfo {
        dtype,
        tensor_shape: Some(TensorShapeProto::from_dims(&[None])),
        ..Default::default()
    };
    let sig = SignatureDef {
        inputs: [("ids".to_string(), info(dt::INT64))].into_iter().collect(),
        outputs: [("y".to_string(), info(dt::FLOAT))].into_iter().collect(),
        method_name: "tensorflow/serving/predict".into(),
    };
    let ids = |v: Vec<i64>| -> Named {
        vec![(
            "ids".into(),
            HostTensor {
                dtype: dt::INT64,
                shape: vec![v.len()],
                data: HostData::I64(v),
            },
        )]
    };
    assert!(check_inputs("serving_default", &sig, &ids(vec![1, -5])).is_ok());
    let e = check_inputs("serving_default", &sig, &ids(vec![1, 3_000_000_000])).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(
        e.message.contains("input 'ids'") && e.message.contains("3000000000"),
        "{e}"
    );
    assert_eq!(
        check_output_filter(&sig, &["y".into(), "y".into()])
            .unwrap_err()
            .message,
        "duplicate output tensor alias: y"
    );
}

/// Batches that fail or panic: no request sees another's error or values,
/// and the batch thread keeps serving.
#[test]
fn batches_isolate_requests_and_survive_panics() {
    use wgflow::io::saved_model::proto::dt;
    use wgflow::serving::batch::{BatchTarget, Batcher};
    use wgflow::serving::config::BatchingParameters;
    use wgflow::serving::servable::Named;
    use wgflow::serving::status::Status;
    use wgflow::serving::tensor::{HostData, HostTensor};

    /// Echoes `x` as `y`; fails on 13 (quoting every value), panics on 66.
    struct Echo;
    impl BatchTarget for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn run(&self, _: &str, inputs: Named, _: &[String]) -> Result<Named, Status> {
            let (_, x) = &inputs[0];
            let HostData::F32(v) = &x.data else {
                return Err(Status::invalid("not floats"));
            };
            if v.contains(&66.0) {
                panic!("a bug in the model call");
            }
            if v.contains(&13.0) {
                return Err(Status::invalid(format!("bad values {v:?}")));
            }
            Ok(vec![("y".into(), x.clone())])
        }
    }
    let target: Arc<dyn BatchTarget> = Arc::new(Echo);
    let params = BatchingParameters {
        max_batch_size: 2,
        batch_timeout_micros: 2_000_000,
        max_enqueued_batches: 10,
        num_batch_threads: 1,
        allowed_batch_sizes: vec![],
        pad_variable_length_inputs: false,
    };
    let batcher = Arc::new(Batcher::new(Arc::downgrade(&target), params));
    let x = |v: f32| -> Named {
        vec![(
            "x".into(),
            HostTensor {
                dtype: dt::FLOAT,
                shape: vec![1, 1],
                data: HostData::F32(vec![v]),
            },
        )]
    };
    // Two requests submitted together (one batch: max_batch_size 2),
    // answered within 20 s or reported as hanging.
    let pair = |a: f32, b: f32| -> Vec<Option<Result<Named, Status>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, v) in [a, b].into_iter().enumerate() {
            let (b, tx, input) = (Arc::clone(&batcher), tx.clone(), x(v));
            std::thread::spawn(move || {
                let _ = tx.send((i, b.submit("serving_default", input, &[])));
            });
        }
        let mut out = vec![None, None];
        let t0 = Instant::now();
        while out.iter().any(Option::is_none) {
            let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
            match rx.recv_timeout(left) {
                Ok((i, r)) => out[i] = Some(r),
                Err(_) => break,
            }
        }
        out
    };
    let y = |r: &Option<Result<Named, Status>>| match r {
        Some(Ok(n)) => match &n[0].1.data {
            HostData::F32(v) => Ok(v.clone()),
            other => Err(format!("{other:?}")),
        },
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no answer (hanging)".into()),
    };
    let r = pair(1.0, 13.0);
    assert_eq!(y(&r[0]), Ok(vec![1.0]), "the good request of a failed batch");
    let bad = y(&r[1]).unwrap_err();
    assert!(
        bad.contains("13") && !bad.contains("1.0,") && !bad.contains("[1.0"),
        "{bad}"
    );
    let r = pair(66.0, 2.0);
    for a in &r {
        let e = y(a).unwrap_err();
        assert!(e.starts_with("INTERNAL") && e.contains("panicked"), "{e}");
    }
    // The batch thread survived.
    let r = pair(3.0, 4.0);
    assert_eq!((y(&r[0]), y(&r[1])), (Ok(vec![3.0]), Ok(vec![4.0])));
}

/// REST: error quotes are bounded, an instance with a key given twice is
/// refused (one instance, one prediction), and GetModelStatus ignores a
/// label as TF Serving's does.
#[test]
fn rest_quotes_duplicate_keys_and_label_status() {
    let base = tmp("rest2");
    half_plus_two(&base.join("1"), 0.5, 2.0);
    let s = Server::start(
        "rest2",
        &[
            "--model_name=hpt".into(),
            format!("--model_base_path={}", base.display()),
        ],
        Some("hpt"),
    );
    // A 2.4 MB nest of 200 000 arrays: pretty-printed whole it would be ~10 MB.
    let body = format!("[{}]", vec!["[[[[1]]]]"; 200_000].join(","));
    let (c, b) = s.http("POST", "/v1/models/hpt:predict", &body);
    assert_eq!(c, 400);
    let e = error_of(&b);
    assert!(
        e.starts_with("JSON Value: [") && e.ends_with("Is not object"),
        "{}",
        &e[..100]
    );
    assert!(b.len() < 10_000, "{} bytes", b.len());
    // One instance, its key twice.
    let (c, b) = s.http(
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [{"x": [1.0], "x": [2.0]}]}"#,
    );
    assert_eq!(c, 400, "{b}");
    let e = error_of(&b);
    assert!(e.contains("element: 0 key: x") && e.contains("more than once"), "{e}");
    let (c, b) = s.http(
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [{"x": [1.0]}, {"x": [2.0]}]}"#,
    );
    assert_eq!(
        (c, floats(parse(&b).get("predictions").unwrap())),
        (200, vec![2.5, 3.0])
    );
    // Status through a label: every version, as TF Serving answers.
    let (c, b) = s.http("GET", "/v1/models/hpt/labels/whatever", "");
    assert_eq!(c, 200, "{b}");
    assert!(b.contains(r#""version":"1","state":"AVAILABLE""#), "{b}");
}

/// REST bodies with `Content-Encoding: gzip` are read and bounded once
/// inflated; models that do not exist do not become metric labels.
#[test]
fn rest_gzip_and_metrics() {
    let base = tmp("rest3");
    half_plus_two(&base.join("1"), 0.5, 2.0);
    let monitoring = base.join("monitoring.config");
    std::fs::write(&monitoring, "prometheus_config { enable: true, path: \"/metrics\" }").unwrap();
    let s = Server::start(
        "rest3",
        &[
            "--model_name=hpt".into(),
            format!("--model_base_path={}", base.display()),
            "--rest_api_max_request_bytes=3000000".into(),
            format!("--monitoring_config_file={}", monitoring.display()),
        ],
        Some("hpt"),
    );
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let post = |body: &[u8], encoding: &str| -> (u16, String) {
        let mut c = TcpStream::connect(("127.0.0.1", s.rest)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "POST /v1/models/hpt:predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: {encoding}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body).unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
    };
    let (c, b) = post(&gz(br#"{"instances": [[1.0], [2.0]]}"#), "gzip");
    assert_eq!(
        (c, floats(parse(&b).get("predictions").unwrap())),
        (200, vec![2.5, 3.0])
    );
    let mut bomb = b"{\"instances\": [[1.0]], \"pad\": \"".to_vec();
    bomb.extend(std::iter::repeat_n(b'a', 10_000_000));
    bomb.extend_from_slice(b"\"}");
    let (c, b) = post(&gz(&bomb), "gzip");
    assert_eq!(c, 413, "{b}");
    let (c, b) = post(b"garbage", "gzip");
    assert_eq!(c, 400, "{b}");
    let (c, b) = post(br#"{"instances": [[1.0]]}"#, "br");
    assert_eq!(c, 415, "{b}");
    assert!(error_of(&b).contains("Content-Encoding: br"), "{b}");
    // Names of models that do not exist are not kept in the metrics.
    for i in 0..20 {
        let (c, _) = s.http(
            "POST",
            &format!("/v1/models/nosuch{i}:predict"),
            r#"{"instances": [[1.0]]}"#,
        );
        assert_eq!(c, 404);
    }
    let (c, m) = s.http("GET", "/metrics", "");
    assert_eq!(c, 200);
    assert!(!m.contains("nosuch"), "{m}");
    assert!(m.contains(r#"request_count{model_name="hpt",status="OK"}"#), "{m}");
    assert!(m.contains(r#"request_count{model_name="",status="NOT_FOUND"}"#), "{m}");
}
