//! `wgflow_model_server` under load, side by side with TensorFlow in one
//! run: a Rust load generator (keep-alive connections, a fixed number of
//! concurrent clients, 5% malformed requests mixed in) drives
//!
//! - `wgflow_model_server` (the binary of this crate, release build) on the
//!   CPU device and on each GPU, batching off and on;
//! - TensorFlow's `tf.saved_model.load` behind a minimal Python HTTP server
//!   (`benches/tf_http_server.py`), when `WGFLOW_PYTHON` names a Python with
//!   tensorflow-cpu;
//!
//! for TF Serving's half_plus_two (batch 1 per request) and the MNIST
//! example CNN (one image per request). Every malformed request must get
//! 400 and every good one its right answer, or the bench fails.
//!
//!     WGFLOW_PYTHON=~/.cache/wgflow-venv/bin/python cargo bench --bench model_server [-- SECONDS CLIENTS]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wgflow::function::{ConcreteFunction, TensorSpec};
use wgflow::io::saved_model::{self, SaveOptions};
use wgflow::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, Variable, config, ops};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).ok();
        Conn {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let code: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b)?;
        Ok((code, String::from_utf8_lossy(&b).into_owned()))
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(port: u16, path: &str, child: &mut Proc) {
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok() && out.contains("AVAILABLE") {
                return;
            }
        }
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("the server exited: {st:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "server not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A request and how to judge its answer.
#[derive(Clone)]
struct Case {
    body: String,
    /// `None`: malformed, must be 400.
    want: Option<Vec<f32>>,
}

fn numbers(s: &str) -> Vec<f32> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == 'E' || c == '+'))
        .filter(|t| !t.is_empty() && t.chars().any(|c| c.is_ascii_digit()))
        .filter_map(|t| t.parse().ok())
        .collect()
}

struct Stats {
    rps: f64,
    p50: f64,
    p99: f64,
    bad: usize,
    good: usize,
}

fn load(port: u16, path: &str, cases: &[Case], seconds: f64, clients: usize) -> Stats {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let cases = Arc::new(cases.to_vec());
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let (lat, counts, cases, path) = (lat.clone(), counts.clone(), cases.clone(), path.to_string());
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let mut mine = Vec::new();
                let (mut good, mut bad) = (0, 0);
                let mut i = k * 7919;
                while t0.elapsed().as_secs_f64() < seconds {
                    let case = &cases[i % cases.len()];
                    i += 1;
                    let t = Instant::now();
                    let (code, body) = match c.post(&path, case.body.as_bytes()) {
                        Ok(r) => r,
                        Err(_) => {
                            c = Conn::open(port);
                            c.post(&path, case.body.as_bytes()).expect("request")
                        }
                    };
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                    match &case.want {
                        None => {
                            assert_eq!(code, 400, "a malformed request got {code}: {body}");
                            bad += 1;
                        }
                        Some(w) => {
                            assert_eq!(code, 200, "{body}");
                            let got = numbers(&body);
                            assert_eq!(got.len(), w.len(), "{body}");
                            for (g, w) in got.iter().zip(w) {
                                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}: {body}");
                            }
                            good += 1;
                        }
                    }
                }
                lat.lock().expect("lock").extend(mine);
                let mut n = counts.lock().expect("lock");
                n.0 += good;
                n.1 += bad;
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut l = lat.lock().expect("lock").clone();
    l.sort_by(f64::total_cmp);
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let (good, bad) = *counts.lock().expect("lock");
    Stats {
        rps: (good + bad) as f64 / wall,
        p50: q(0.5),
        p99: q(0.99),
        bad,
        good,
    }
}

fn half_plus_two(dir: &Path) {
    let d = Device::Cpu;
    let va = Variable::new(Tensor::from_vec(vec![0.5f32], &[1, 1], &d).expect("a"), "a");
    let vb = Variable::new(Tensor::from_vec(vec![2.0f32], &[1], &d).expect("b"), "b");
    let spec = TensorSpec::new(&[None, Some(1)], DType::F32).named("x");
    let f = ConcreteFunction::trace("half_plus_two", &[spec], &d, |x: &[Tensor]| {
        Ok(vec![x[0].matmul(&va.value())?.add(&vb.value())?])
    })
    .and_then(|f| f.with_output_names(&["y"]))
    .expect("trace");
    saved_model::save_functions(dir, &[("serving_default", &f)], &SaveOptions::default()).expect("save");
}

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

fn with_malformed(mut good: Vec<Case>) -> Vec<Case> {
    // One in twenty: broken JSON, a missing key, a wrong type, ragged lists.
    let bad = [
        r#"{"instances": [[1.0]"#,
        r#"{"instance": [[1.0]]}"#,
        r#"{"instances": [["x"]]}"#,
        r#"{"instances": [[1.0], [1.0, 2.0]]}"#,
    ];
    let mut out = Vec::new();
    for (i, c) in good.drain(..).enumerate() {
        out.push(c);
        if i % 19 == 18 {
            out.push(Case {
                body: bad[(i / 19) % bad.len()].to_string(),
                want: None,
            });
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let clients: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let root = std::env::temp_dir().join(format!("wgflow-bench-ms-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    half_plus_two(&root.join("hpt/1"));
    set_random_seed(1);
    let mut cnn = Sequential::new()
        .add(Conv2D::new(16, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(32, [3, 3]).activation(Activation::Relu))
        .add(MaxPooling2D::new([2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    cnn.build(&[28, 28, 1], &Device::Cpu).expect("build");
    cnn.export(root.join("mnist/1")).expect("export");
    let batching = root.join("batching.config");
    std::fs::write(
        &batching,
        format!(
            "max_batch_size {{ value: {clients} }}\nbatch_timeout_micros {{ value: 1000 }}\nnum_batch_threads {{ value: 1 }}\nmax_enqueued_batches {{ value: 100 }}\n"
        ),
    )
    .expect("write");

    let hpt_cases = with_malformed(
        (0..200)
            .map(|i| {
                let x = i as f32 * 0.25 - 10.0;
                Case {
                    body: format!("{{\"instances\": [[{x:?}]]}}"),
                    want: Some(vec![0.5 * x + 2.0]),
                }
            })
            .collect(),
    );
    let mnist_cases = with_malformed(
        (0..100)
            .map(|i| {
                let x = ops::random_uniform(&[1, 28, 28, 1], 0.0, 1.0, DType::F32, 100 + i, &Device::Cpu).expect("x");
                let want = cnn.call(&x, false).and_then(|y| y.to_vec::<f32>()).expect("predict");
                let v = x.to_vec::<f32>().expect("x");
                Case {
                    body: format!("{{\"instances\": [{}]}}", image_json(&v)),
                    want: Some(want),
                }
            })
            .collect(),
    );
    let models: [(&str, &[Case]); 2] = [("hpt", &hpt_cases), ("mnist", &mnist_cases)];

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wgflow_model_server"));
    let mut devices = vec!["cpu".to_string()];
    devices.extend(
        config::list_logical_devices()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.is_gpu())
            .map(|d| d.to_string()),
    );
    println!("{seconds} s per row, {clients} concurrent keep-alive clients, 1 row per request, 5% malformed\n");
    println!("| model | server | device | batching | requests/s | p50 ms | p99 ms | good / malformed |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, cases) in models {
        let path = format!("/v1/models/{name}:predict");
        for dev in &devices {
            for batch in [false, true] {
                let port = free_port();
                let mut cmd = Command::new(&bin);
                cmd.arg("--port=0")
                    .arg(format!("--rest_api_port={port}"))
                    .arg(format!("--model_name={name}"))
                    .arg(format!("--model_base_path={}", root.join(name).display()))
                    .env("WGFLOW_DEVICE", dev)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if batch {
                    cmd.arg("--enable_batching")
                        .arg(format!("--batching_parameters_file={}", batching.display()));
                }
                let mut p = Proc(cmd.spawn().expect("spawn the server"));
                wait_ready(port, &format!("/v1/models/{name}"), &mut p);
                let s = load(port, &path, cases, seconds, clients);
                println!(
                    "| {name} | wgflow_model_server | {dev} | {} | {:.0} | {:.2} | {:.2} | {} / {} |",
                    if batch { "on" } else { "off" },
                    s.rps,
                    s.p50,
                    s.p99,
                    s.good,
                    s.bad
                );
            }
        }
        if let Some(py) = std::env::var_os("WGFLOW_PYTHON") {
            let port = free_port();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tf_http_server.py");
            let mut p = Proc(
                Command::new(py)
                    .arg(script)
                    .arg(port.to_string())
                    .arg(root.join(name).join("1"))
                    .env("TF_CPP_MIN_LOG_LEVEL", "3")
                    .env("CUDA_VISIBLE_DEVICES", "")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn python"),
            );
            wait_ready(port, &format!("/v1/models/{name}"), &mut p);
            let s = load(port, &path, cases, seconds, clients);
            println!(
                "| {name} | TensorFlow 2.21 + Python http.server | cpu | off | {:.0} | {:.2} | {:.2} | {} / {} |",
                s.rps, s.p50, s.p99, s.good, s.bad
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
