//! SavedModel export and loading: round trips in wgflow on every device,
//! checks with the real TensorFlow 2.21 and Keras 3 (the Python venv that
//! `.ci/run` creates; `WGFLOW_PYTHON` names its interpreter), the
//! `wgflow_saved_model_cli` binary, and corrupt files.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use wgflow::io::saved_model::{self, SaveOptions};
use wgflow::nn::layers::{BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, Tensor};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpus());
    d
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgflow-sm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cnn(device: &Device) -> Sequential {
    set_random_seed(3);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu))
        .add(BatchNormalization::new())
        .add(MaxPooling2D::new([2, 2]))
        .add(
            Conv2D::new(6, [3, 3])
                .padding("same")
                .unwrap()
                .activation(Activation::Gelu),
        )
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    m.build(&[28, 28, 1], device).unwrap();
    randomize_moving_stats(&m, device);
    m
}

/// Grouped and depthwise convolutions (with dilation): exported as Split,
/// one Conv2D per group and ConcatV2.
fn grouped(device: &Device) -> Sequential {
    set_random_seed(4);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).strides([2, 2]).activation(Activation::Relu))
        .add(Conv2D::new(8, [3, 3]).groups(2).padding("same").unwrap())
        .add(
            Conv2D::new(8, [3, 3])
                .groups(8)
                .dilation_rate([2, 2])
                .padding("same")
                .unwrap(),
        )
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&[28, 28, 1], device).unwrap();
    m
}

fn mlp(device: &Device) -> Sequential {
    set_random_seed(4);
    let mut m = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(32).activation(Activation::Relu))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], device).unwrap();
    m
}

fn images(n: usize, seed: u64) -> Tensor {
    uniform(&[n, 28, 28, 1], 0.0, 1.0, seed, DType::F32)
}

/// Export, load in wgflow (a fresh load, no model code), and compare with
/// the model's own inference on batches of 1, 7 and 64, on every device.
#[test]
fn export_and_load_round_trip_on_every_device() {
    for d in devices() {
        for (name, mut model) in [("cnn", cnn(&d)), ("mlp", mlp(&d)), ("grouped", grouped(&d))] {
            let dir = tmp(&format!("rt-{name}-{}", d.to_string().replace(':', "")));
            model.export(&dir).unwrap();
            assert!(dir.join("saved_model.pb").is_file());
            assert!(dir.join("variables/variables.index").is_file());
            let mut loaded = saved_model::load_with(&dir, &["serve"], &d).unwrap();
            assert_eq!(loaded.signature_keys(), vec!["serving_default"]);
            for (i, b) in [1usize, 7, 64].into_iter().enumerate() {
                let x = images(b, i as u64).to_device(&d).unwrap();
                let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
                let out = loaded.call("serving_default", &[("inputs", x.clone())]).unwrap();
                assert_eq!(out[0].0, "output_0");
                assert_eq!(out[0].1.shape(), &[b, 10]);
                assert_close(
                    &out[0].1.to_vec::<f32>().unwrap(),
                    &want,
                    1e-4,
                    &format!("{name} on {d}, batch {b}"),
                );
            }
            assert_eq!(loaded.signature("serving_default").unwrap().compiled_shapes(), 3);
            // A frozen export computes the same.
            let frozen = tmp(&format!("frozen-{name}-{}", d.to_string().replace(':', "")));
            let f = model.serving_function().unwrap();
            saved_model::save_functions(&frozen, &[("serving_default", &f)], &SaveOptions { freeze: true }).unwrap();
            assert!(!frozen.join("variables/variables.index").exists());
            let mut lf = saved_model::load_with(&frozen, &["serve"], &d).unwrap();
            let x = images(3, 5).to_device(&d).unwrap();
            let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
            let got = lf.call("serving_default", &[("inputs", x)]).unwrap();
            assert_close(
                &got[0].1.to_vec::<f32>().unwrap(),
                &want,
                1e-4,
                &format!("frozen {name} on {d}"),
            );
        }
    }
}

/// Inputs that do not fit the signature are typed errors naming the input.
#[test]
fn loaded_signature_rejects_bad_inputs() {
    let d = Device::Cpu;
    let dir = tmp("bad-inputs");
    mlp(&d).export(&dir).unwrap();
    let mut l = saved_model::load_with(&dir, &["serve"], &d).unwrap();
    let cases = [
        (
            "inputs",
            uniform(&[2, 28, 28], 0.0, 1.0, 1, DType::F32),
            "float32[?, 28, 28, 1]",
        ),
        (
            "inputs",
            uniform(&[2, 28, 27, 1], 0.0, 1.0, 1, DType::F32),
            "float32[?, 28, 28, 1]",
        ),
        ("inputs", randint(&[2, 28, 28, 1], 0, 3, 1), "float32[?, 28, 28, 1]"),
        ("x", images(2, 1), "no input 'x'"),
    ];
    for (name, x, want) in cases {
        let e = l.call("serving_default", &[(name, x)]).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains("inputs"), "{e}");
    }
    let e = l.signature("serve").unwrap_err();
    assert!(e.to_string().contains("serving_default"), "{e}");
    let e = saved_model::load_with(&dir, &["train"], &d).unwrap_err();
    assert!(e.to_string().contains("available tag-sets: [{serve}]"), "{e}");
}

/// TensorFlow 2.21 loads wgflow's exports: `tf.saved_model.load(D)
/// .signatures["serving_default"]` computes what wgflow's predict does,
/// `saved_model_cli show --all` lists the signature, and
/// `tf.train.list_variables` reads the bundle.
#[test]
fn tensorflow_loads_wgflow_exports() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    for (name, mut model) in [
        ("cnn", cnn(&d)),
        ("mlp", mlp(&d)),
        ("grouped", grouped(&d)),
        ("extra", extra_layers(&d, 19)),
        ("lnmlp", layer_norm_mlp(&d, 29)),
        ("residual", residual(&d, 43)),
        ("merges", merges(&d, 44)),
        ("decoder", decoder(&d, 49)),
    ] {
        let dir = tmp(&format!("tf-{name}"));
        let export = dir.join("model");
        model.export(&export).unwrap();
        for (i, b) in [1usize, 7, 64].into_iter().enumerate() {
            let x = images(b, 10 + i as u64);
            save_npy(&dir.join(format!("x{b}.npy")), &x);
            save_npy(&dir.join(format!("want{b}.npy")), &model.call(&x, false).unwrap());
        }
        let out = py(&python, "check_wgflow_export.py", &[&export, &dir]);
        for b in [1, 7, 64] {
            let (shape, got) = load_npy(&dir.join(format!("tf{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("want{b}.npy")));
            assert_eq!(shape, vec![b, 10]);
            assert_close(&got, &want, 1e-4, &format!("TensorFlow on wgflow's {name}, batch {b}"));
        }
        assert!(out.contains("shape: (-1, 28, 28, 1)"), "{out}");
        assert!(out.contains("Method name is: tensorflow/serving/predict"), "{out}");
        assert!(out.contains("signature_def['serving_default']"), "{out}");
        for (n, _) in model.export_names() {
            assert!(
                out.contains(&format!("VARIABLE {n} ")),
                "{n} missing from list_variables:\n{out}"
            );
        }
    }
}

/// A functional model of two inputs and two outputs exports with its
/// inputs named as its `Input`s (in the model's order) and outputs
/// `output_0`, `output_1`: TensorFlow computes what wgflow does, and
/// wgflow's own import of the export too.
#[test]
fn tensorflow_runs_models_of_several_inputs_and_outputs() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let mut model = two_towers(&d, 55);
    let dir = tmp("tf-multi");
    let export = dir.join("model");
    model.export(&export).unwrap();
    let mut wants = Vec::new();
    for b in [1usize, 7, 64] {
        let meta = uniform(&[b, 6], -1.0, 1.0, 30 + b as u64, DType::F32);
        let image = images(b, 40 + b as u64);
        save_npy(&dir.join(format!("x{b}_meta.npy")), &meta);
        save_npy(&dir.join(format!("x{b}_image.npy")), &image);
        let want = model.call_many(&[meta.clone(), image.clone()], false).unwrap();
        wants.push((b, meta, image, want));
    }
    let out = py(&python, "check_wgflow_export.py", &[&export, &dir]);
    assert!(out.contains("inputs['meta']"), "{out}");
    assert!(out.contains("inputs['image']"), "{out}");
    assert!(out.contains("outputs['output_1']"), "{out}");
    let mut back = saved_model::load_with(&export, &["serve"], &d).unwrap();
    for (b, meta, image, want) in &wants {
        let theirs = back
            .call("serving_default", &[("meta", meta.clone()), ("image", image.clone())])
            .unwrap();
        for (k, w) in want.iter().enumerate() {
            let (shape, got) = load_npy(&dir.join(format!("tf{b}_output_{k}.npy")));
            assert_eq!(shape, w.shape());
            let w = w.to_vec::<f32>().unwrap();
            assert_close(&got, &w, 1e-4, &format!("TensorFlow output {k}, batch {b}"));
            let (_, mine) = theirs.iter().find(|(n, _)| *n == format!("output_{k}")).unwrap();
            assert_close(
                &mine.to_vec::<f32>().unwrap(),
                &w,
                1e-5,
                &format!("wgflow's import, output {k}"),
            );
        }
    }
}

/// A text model (`Embedding`, `Conv1D`, 1-D pooling) exports too:
/// TensorFlow runs it on float token ids and gets wgflow's predictions.
#[test]
fn tensorflow_runs_wgflow_text_models() {
    use wgflow::nn::layers::{AveragePooling1D, Conv1D, Embedding, GlobalMaxPooling1D};
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    set_random_seed(4);
    let mut model = Sequential::new()
        .add(Embedding::new(40, 6))
        .add(Conv1D::new(4, 2).strides(2).padding("same").unwrap())
        .add(AveragePooling1D::new(2).padding("same").unwrap())
        .add(GlobalMaxPooling1D::new())
        .add(Dense::new(10));
    model.build(&[9], &d).unwrap();
    let dir = tmp("tf-text");
    let export = dir.join("model");
    model.export(&export).unwrap();
    for b in [1usize, 7, 64] {
        let x = randint(&[b, 9], 0, 40, b as u64).cast(DType::F32).unwrap();
        save_npy(&dir.join(format!("x{b}.npy")), &x);
        save_npy(&dir.join(format!("want{b}.npy")), &model.call(&x, false).unwrap());
    }
    let out = py(&python, "check_wgflow_export.py", &[&export, &dir]);
    assert!(out.contains("shape: (-1, 9)"), "{out}");
    for b in [1, 7, 64] {
        let (_, got) = load_npy(&dir.join(format!("tf{b}.npy")));
        let (_, want) = load_npy(&dir.join(format!("want{b}.npy")));
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("TensorFlow on wgflow's text model, batch {b}"),
        );
    }
}

/// A recurrent model (LSTM backwards over every step, GRU) exports too:
/// TensorFlow runs the unrolled cells and gets wgflow's predictions.
#[test]
fn tensorflow_runs_wgflow_recurrent_models() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let mut model = recurrent(&d, 6);
    let dir = tmp("tf-rnn");
    let export = dir.join("model");
    model.export(&export).unwrap();
    for b in [1usize, 7, 64] {
        let x = uniform(&[b, 7, 3], -2.0, 2.0, b as u64, DType::F32);
        save_npy(&dir.join(format!("x{b}.npy")), &x);
        save_npy(&dir.join(format!("want{b}.npy")), &model.call(&x, false).unwrap());
    }
    let out = py(&python, "check_wgflow_export.py", &[&export, &dir]);
    assert!(out.contains("shape: (-1, 7, 3)"), "{out}");
    for b in [1, 7, 64] {
        let (_, got) = load_npy(&dir.join(format!("tf{b}.npy")));
        let (_, want) = load_npy(&dir.join(format!("want{b}.npy")));
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("TensorFlow on wgflow's recurrent model, batch {b}"),
        );
    }
}

/// Keras 3's `model.export` of a CNN with batch normalization, trained a
/// few steps in Python, loads in wgflow and predicts what Keras predicts,
/// on the CPU device and on every GPU; so does a `tf.Module` saved with
/// `tf.saved_model.save` (TF Serving's half_plus_two).
#[test]
fn wgflow_loads_keras_and_tensorflow_exports() {
    let Some(python) = python() else { return };
    let dir = tmp("keras");
    py(&python, "make_keras_export.py", &[&dir]);
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("keras_cnn"), &["serve"], &d).unwrap();
        let key = l.signature("serving_default").unwrap().inputs()[0]
            .name
            .clone()
            .unwrap();
        for b in [1, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras{b}.npy")));
            let x = Tensor::from_vec(x, &shape, &d).unwrap();
            let out = l.call("serving_default", &[(&key, x)]).unwrap();
            assert_close(
                &out[0].1.to_vec::<f32>().unwrap(),
                &want,
                1e-4,
                &format!("Keras CNN on {d}, batch {b}"),
            );
        }
        let mut h = saved_model::load_with(dir.join("half_plus_two"), &["serve"], &d).unwrap();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 5.0], &[3], &d).unwrap();
        let out = h.call("serving_default", &[("x", x)]).unwrap();
        assert_eq!(out[0].0, "y");
        assert_eq!(out[0].1.to_vec::<f32>().unwrap(), vec![2.5, 3.0, 4.5]);
    }
}

/// `wgflow_saved_model_cli run` on an export gives the outputs the model
/// gave in the process that trained it, for batches of 1, 7 and 64;
/// `show` prints TensorFlow's wording.
#[test]
fn saved_model_cli_runs_and_shows() {
    let d = Device::Cpu;
    let dir = tmp("cli");
    let export = dir.join("1");
    let mut model = cnn(&d);
    model.export(&export).unwrap();
    let cli = env!("CARGO_BIN_EXE_wgflow_saved_model_cli");
    for b in [1usize, 7, 64] {
        let x = images(b, 20 + b as u64);
        let xin = dir.join(format!("in{b}.npy"));
        save_npy(&xin, &x);
        let outdir = dir.join(format!("out{b}"));
        let out = Command::new(cli)
            .args(["run", "--dir"])
            .arg(&export)
            .args(["--tag_set", "serve", "--signature_def", "serving_default", "--inputs"])
            .arg(format!("inputs={}", xin.display()))
            .arg("--outdir")
            .arg(&outdir)
            .env("WGFLOW_DEVICE", "cpu")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (shape, got) = load_npy(&outdir.join("output_0.npy"));
        assert_eq!(shape, vec![b, 10]);
        let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &want, 1e-4, &format!("saved_model_cli run, batch {b}"));
    }
    let show = Command::new(cli)
        .args(["show", "--all", "--dir"])
        .arg(&export)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    for want in [
        "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:",
        "signature_def['serving_default']:",
        "    inputs['inputs'] tensor_info:",
        "        dtype: DT_FLOAT",
        "        shape: (-1, 28, 28, 1)",
        "  Method name is: tensorflow/serving/predict",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let bad = Command::new(cli)
        .args(["show", "--dir"])
        .arg(&export)
        .args(["--tag_set", "serve", "--signature_def", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("serving_default"));
}

/// Missing, truncated and corrupt files: typed errors naming the file, no
/// panic on any truncation or bit flip of `saved_model.pb` and the bundle.
#[test]
fn corrupt_saved_models_are_errors_not_panics() {
    let d = Device::Cpu;
    let dir = tmp("corrupt");
    let good = dir.join("good");
    mlp(&d).export(&good).unwrap();
    let e = saved_model::load_with(dir.join("missing"), &["serve"], &d).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let e = saved_model::load_with(dir.join("empty"), &["serve"], &d).unwrap_err();
    assert!(e.to_string().contains("no saved_model.pb"), "{e}");

    let copy = |name: &str| -> PathBuf {
        let to = dir.join(name);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(to.join("variables")).unwrap();
        for f in [
            "saved_model.pb",
            "variables/variables.index",
            "variables/variables.data-00000-of-00001",
        ] {
            std::fs::copy(good.join(f), to.join(f)).unwrap();
        }
        to
    };
    let pb = std::fs::read(good.join("saved_model.pb")).unwrap();
    let work = copy("work");
    let step = (pb.len() / 97).max(1);
    for cut in (0..pb.len()).step_by(step) {
        std::fs::write(work.join("saved_model.pb"), &pb[..cut]).unwrap();
        let _ = saved_model::load_with(&work, &["serve"], &d);
    }
    let mut rng = 0x9e3779b97f4a7c15u64;
    for _ in 0..150 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut bytes = pb.clone();
        let i = (rng as usize) % bytes.len();
        bytes[i] ^= 1 << ((rng >> 32) % 8);
        std::fs::write(work.join("saved_model.pb"), &bytes).unwrap();
        let _ = saved_model::load_with(&work, &["serve"], &d);
    }
    std::fs::write(work.join("saved_model.pb"), b"\x0a\xff\xff\xff\xff\x0f").unwrap();
    let e = saved_model::load_with(&work, &["serve"], &d).unwrap_err();
    assert!(e.to_string().contains("saved_model.pb"), "{e}");

    // A flipped byte in the weights: the CRC names the variable and the file.
    let work = copy("crc");
    let data = work.join("variables/variables.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let e = saved_model::load_with(&work, &["serve"], &d).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("crc"), "{e}");
    // Truncated and missing shards.
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    assert!(saved_model::load_with(&work, &["serve"], &d).is_err());
    std::fs::remove_file(&data).unwrap();
    let e = saved_model::load_with(&work, &["serve"], &d).unwrap_err();
    assert!(e.to_string().contains("variables"), "{e}");
    // Every truncation of the index.
    let work = copy("index");
    let index = std::fs::read(good.join("variables/variables.index")).unwrap();
    for cut in 0..index.len() {
        std::fs::write(work.join("variables/variables.index"), &index[..cut]).unwrap();
        assert!(
            saved_model::load_with(&work, &["serve"], &d).is_err(),
            "index cut at {cut}"
        );
    }
}

/// Exports replace an existing directory as a whole and leave no temporary
/// directories behind; a failing export leaves the old one untouched.
#[test]
fn export_is_atomic() {
    let d = Device::Cpu;
    let dir = tmp("atomic");
    let target = dir.join("m");
    mlp(&d).export(&target).unwrap();
    let before = std::fs::read(target.join("saved_model.pb")).unwrap();
    cnn(&d).export(&target).unwrap();
    let after = std::fs::read(target.join("saved_model.pb")).unwrap();
    assert_ne!(before, after);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["m".to_string()], "leftovers: {names:?}");
    // A model that was never built cannot be exported; the old export stays.
    let mut unbuilt = Sequential::new().add(Dense::new(3));
    let e = unbuilt.export(&target).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert_eq!(std::fs::read(target.join("saved_model.pb")).unwrap(), after);
    assert_eq!(saved_model::next_version(&dir).unwrap(), 1);
    std::fs::create_dir_all(dir.join("3")).unwrap();
    assert_eq!(saved_model::next_version(&dir).unwrap(), 4);
}

/// Hand-made graphs a hostile or unusual file may hold: each is a typed
/// error at load time (naming the op and the node where one is missing),
/// never a panic, an abort or a hang.
#[test]
fn hostile_graphs_are_typed_errors() {
    use prost::Message;
    use std::collections::HashMap;
    use wgflow::io::saved_model::proto::{self, AttrValue, NodeDef, attr_value::Value, dt};

    let attr = |v: Value| AttrValue { value: Some(v) };
    let node = |name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, Value)>| NodeDef {
        name: name.into(),
        op: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attr: attrs.into_iter().map(|(k, v)| (k.to_string(), attr(v))).collect(),
    };
    let shape = |dims: &[i64]| proto::TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| proto::tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    };
    let placeholder = node(
        "x",
        "Placeholder",
        &[],
        vec![
            ("dtype", Value::Type(dt::FLOAT)),
            ("shape", Value::Shape(shape(&[-1, 3]))),
        ],
    );
    let int_const = |name: &str, v: &[i32]| {
        node(
            name,
            "Const",
            &[],
            vec![
                ("dtype", Value::Type(dt::INT32)),
                (
                    "value",
                    Value::Tensor(proto::TensorProto {
                        dtype: dt::INT32,
                        tensor_shape: Some(shape(&[v.len() as i64])),
                        int_val: v.to_vec(),
                        ..Default::default()
                    }),
                ),
            ],
        )
    };
    let write = |name: &str, nodes: Vec<NodeDef>, library: Vec<proto::FunctionDef>, out: &str| -> PathBuf {
        let dir = tmp(&format!("hostile-{name}"));
        let tensor = |n: &str| proto::TensorInfo {
            name: n.into(),
            dtype: dt::FLOAT,
            tensor_shape: Some(shape(&[-1, 3])),
        };
        let meta = proto::MetaGraphDef {
            meta_info_def: Some(proto::MetaInfoDef {
                tags: vec!["serve".into()],
                ..Default::default()
            }),
            graph_def: Some(proto::GraphDef {
                node: nodes,
                library: Some(proto::FunctionDefLibrary { function: library }),
                versions: None,
            }),
            signature_def: HashMap::from([(
                "serving_default".to_string(),
                proto::SignatureDef {
                    inputs: HashMap::from([("x".to_string(), tensor("x:0"))]),
                    outputs: HashMap::from([("y".to_string(), tensor(out))]),
                    method_name: "tensorflow/serving/predict".into(),
                },
            )]),
            ..Default::default()
        };
        let sm = proto::SavedModel {
            saved_model_schema_version: 1,
            meta_graphs: vec![meta],
        };
        std::fs::write(dir.join("saved_model.pb"), sm.encode_to_vec()).unwrap();
        dir
    };
    let d = Device::Cpu;
    let load = |dir: &Path| saved_model::load_with(dir, &["serve"], &d);

    // An op wgflow lacks: Unimplemented, naming the op and the node.
    let dir = write(
        "cumsum",
        vec![
            placeholder.clone(),
            int_const("axis", &[0]),
            node(
                "running/total",
                "Cumsum",
                &["x", "axis"],
                vec![("T", Value::Type(dt::FLOAT))],
            ),
        ],
        vec![],
        "running/total:0",
    );
    match load(&dir).unwrap_err() {
        Error::Unimplemented { what, msg } => {
            assert!(what.contains("Cumsum"), "{what}");
            assert!(msg.contains("running/total"), "{msg}");
        }
        e => panic!("expected Unimplemented, got {e}"),
    }
    // A constant of 2^40 elements from one stored value.
    let huge = node(
        "big",
        "Const",
        &[],
        vec![
            ("dtype", Value::Type(dt::FLOAT)),
            (
                "value",
                Value::Tensor(proto::TensorProto {
                    dtype: dt::FLOAT,
                    tensor_shape: Some(shape(&[1 << 20, 1 << 20])),
                    float_val: vec![1.0],
                    ..Default::default()
                }),
            ),
        ],
    );
    let dir = write(
        "huge-const",
        vec![placeholder.clone(), huge, node("y", "AddV2", &["x", "big"], vec![])],
        vec![],
        "y:0",
    );
    assert!(load(&dir).unwrap_err().to_string().contains("big"));
    // A Fill of 2^40 elements.
    let dir = write(
        "huge-fill",
        vec![
            placeholder.clone(),
            int_const("dims", &[1 << 20, 1 << 20]),
            node(
                "v",
                "Const",
                &[],
                vec![
                    ("dtype", Value::Type(dt::FLOAT)),
                    (
                        "value",
                        Value::Tensor(proto::TensorProto {
                            dtype: dt::FLOAT,
                            tensor_shape: Some(shape(&[])),
                            float_val: vec![0.0],
                            ..Default::default()
                        }),
                    ),
                ],
            ),
            node("f", "Fill", &["dims", "v"], vec![]),
        ],
        vec![],
        "f:0",
    );
    assert!(load(&dir).is_err());
    // A cycle, a dangling input, a missing output node.
    let cyc = write(
        "cycle",
        vec![
            placeholder.clone(),
            node("a", "AddV2", &["x", "b"], vec![]),
            node("b", "Relu", &["a"], vec![]),
        ],
        vec![],
        "b:0",
    );
    assert!(load(&cyc).unwrap_err().to_string().contains("cycle"));
    let dangling = write(
        "dangling",
        vec![placeholder.clone(), node("a", "Relu", &["nowhere:0"], vec![])],
        vec![],
        "a:0",
    );
    assert!(load(&dangling).unwrap_err().to_string().contains("nowhere"));
    let missing = write("missing-output", vec![placeholder.clone()], vec![], "gone:0");
    assert!(load(&missing).unwrap_err().to_string().contains("gone"));
    // A function that calls itself.
    let f = proto::FunctionDef {
        signature: Some(proto::OpDef {
            name: "loop".into(),
            input_arg: vec![proto::ArgDef {
                name: "a".into(),
                r#type: dt::FLOAT,
            }],
            output_arg: vec![proto::ArgDef {
                name: "out".into(),
                r#type: dt::FLOAT,
            }],
        }),
        node_def: vec![node(
            "again",
            "PartitionedCall",
            &["a"],
            vec![(
                "f",
                Value::Func(proto::NameAttrList {
                    name: "loop".into(),
                    attr: HashMap::new(),
                }),
            )],
        )],
        ret: HashMap::from([("out".to_string(), "again:output:0".to_string())]),
        ..Default::default()
    };
    let call = node(
        "call",
        "PartitionedCall",
        &["x"],
        vec![(
            "f",
            Value::Func(proto::NameAttrList {
                name: "loop".into(),
                attr: HashMap::new(),
            }),
        )],
    );
    let dir = write("recursion", vec![placeholder.clone(), call], vec![f], "call:0");
    assert!(load(&dir).unwrap_err().to_string().contains("nest deeper"));
    // Shape arithmetic with a broadcast empty operand and an absurd stride.
    let dir = write(
        "shape-math",
        vec![
            placeholder.clone(),
            int_const("empty", &[]),
            int_const("one", &[1]),
            node("m", "Mul", &["empty", "one"], vec![]),
            node("s", "Shape", &["x"], vec![]),
            int_const("b", &[0]),
            int_const("e", &[2]),
            int_const("st", &[i32::MAX]),
            node("ss", "StridedSlice", &["s", "b", "e", "st"], vec![]),
            node("r", "Reshape", &["x", "ss"], vec![]),
            node("y", "Identity", &["r"], vec![("T", Value::Type(dt::FLOAT))]),
        ],
        vec![],
        "y:0",
    );
    // Reshape [b, 3] to [b]: an error about the shapes, not a crash,
    // naming the node.
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("node 'r' (Reshape)"), "{e}");

    // A Fill of 2^60 elements: out of memory (ResourceExhausted), naming
    // the node, not a capacity overflow.
    // A scalar 1.0 for the fills below.
    let one = || {
        node(
            "v",
            "Const",
            &[],
            vec![
                ("dtype", Value::Type(dt::FLOAT)),
                (
                    "value",
                    Value::Tensor(proto::TensorProto {
                        dtype: dt::FLOAT,
                        tensor_shape: Some(shape(&[])),
                        float_val: vec![1.0],
                        ..Default::default()
                    }),
                ),
            ],
        )
    };
    let dir = write(
        "fill-2-60",
        vec![
            placeholder.clone(),
            int_const("dims", &[1 << 30, 1 << 30]),
            one(),
            node("huge/fill", "Fill", &["dims", "v"], vec![]),
            node("y", "AddV2", &["x", "huge/fill"], vec![]),
        ],
        vec![],
        "y:0",
    );
    match load(&dir).unwrap_err() {
        e @ Error::OutOfMemory { .. } => assert!(e.to_string().contains("huge/fill"), "{e}"),
        e => panic!("expected OutOfMemory, got {e}"),
    }
    // A Fill of 2^29 elements (2 GiB) that the host might hold: past the
    // budget of what one signature's constants and fills may expand to.
    let dir = write(
        "fill-budget",
        vec![
            placeholder.clone(),
            int_const("dims", &[1 << 14, 1 << 15]),
            one(),
            node("big/fill", "Fill", &["dims", "v"], vec![]),
            node("y", "AddV2", &["x", "big/fill"], vec![]),
        ],
        vec![],
        "y:0",
    );
    match load(&dir).unwrap_err() {
        e @ Error::OutOfMemory { .. } => assert!(e.to_string().contains("node 'big/fill' (Fill)"), "{e}"),
        e => panic!("expected OutOfMemory, got {e}"),
    }

    // f0 .. f40, each calling the next twice: 2^40 calls if inlined.
    let call_node = |name: &str, f: &str, inputs: &[&str]| {
        node(
            name,
            "PartitionedCall",
            inputs,
            vec![(
                "f",
                Value::Func(proto::NameAttrList {
                    name: f.into(),
                    attr: HashMap::new(),
                }),
            )],
        )
    };
    let arg_def = |n: &str| proto::ArgDef {
        name: n.into(),
        r#type: dt::FLOAT,
    };
    let mut library = Vec::new();
    for i in 0..=40 {
        let (nodes, ret) = if i == 40 {
            (vec![node("r", "Relu", &["a"], vec![])], "r:y:0".to_string())
        } else {
            let next = format!("f{}", i + 1);
            (
                vec![
                    call_node("c0", &next, &["a"]),
                    call_node("c1", &next, &["a"]),
                    node("s", "AddV2", &["c0:output:0", "c1:output:0"], vec![]),
                ],
                "s:z:0".to_string(),
            )
        };
        library.push(proto::FunctionDef {
            signature: Some(proto::OpDef {
                name: format!("f{i}"),
                input_arg: vec![arg_def("a")],
                output_arg: vec![arg_def("out")],
            }),
            node_def: nodes,
            ret: HashMap::from([("out".to_string(), ret)]),
            ..Default::default()
        });
    }
    let dir = write(
        "fan-out",
        vec![placeholder.clone(), call_node("call", "f0", &["x"])],
        library,
        "call:0",
    );
    let started = std::time::Instant::now();
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("function 'f"), "{e}");
    assert!(e.to_string().contains("inlined"), "{e}");
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());

    // Strides on the batch dimension: Unimplemented naming the attribute.
    let filter = node(
        "w",
        "Const",
        &[],
        vec![
            ("dtype", Value::Type(dt::FLOAT)),
            (
                "value",
                Value::Tensor(proto::TensorProto {
                    dtype: dt::FLOAT,
                    tensor_shape: Some(shape(&[1, 1, 3, 3])),
                    float_val: vec![1.0],
                    ..Default::default()
                }),
            ),
        ],
    );
    let shape4 = int_const("s4", &[-1, 1, 1, 3]);
    for (attr_name, v) in [("strides", [2i64, 1, 1, 1]), ("dilations", [1, 1, 1, 2])] {
        let mut conv = node(
            "conv",
            "Conv2D",
            &["x4", "w"],
            vec![("padding", Value::S(b"VALID".to_vec()))],
        );
        conv.attr.insert(
            attr_name.to_string(),
            attr(Value::List(proto::ListValue {
                i: v.to_vec(),
                ..Default::default()
            })),
        );
        let dir = write(
            &format!("conv-{attr_name}"),
            vec![
                placeholder.clone(),
                shape4.clone(),
                node("x4", "Reshape", &["x", "s4"], vec![]),
                filter.clone(),
                conv,
                node("y", "Reshape", &["conv", "s2"], vec![]),
                int_const("s2", &[-1, 3]),
            ],
            vec![],
            "y:0",
        );
        match load(&dir).unwrap_err() {
            Error::Unimplemented { what, msg } => {
                assert!(what.contains(attr_name), "{what}");
                assert!(msg.contains("node 'conv'"), "{msg}");
            }
            e => panic!("expected Unimplemented for {attr_name}, got {e}"),
        }
    }

    // StridedSlice of one index past the dimension, and Squeeze of a
    // dimension that is not 1: errors as in TensorFlow.
    let mut ss = node("ss", "StridedSlice", &["x", "b", "e", "st"], vec![]);
    ss.attr.insert("shrink_axis_mask".into(), attr(Value::I(2)));
    let dir = write(
        "shrink-out-of-range",
        vec![
            placeholder.clone(),
            int_const("b", &[0, -10]),
            int_const("e", &[0, -9]),
            int_const("st", &[1, 1]),
            ss,
        ],
        vec![],
        "ss:0",
    );
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("out of bounds"), "{e}");
    assert!(e.to_string().contains("node 'ss'"), "{e}");
    let mut sq = node("sq", "Squeeze", &["x"], vec![]);
    sq.attr.insert(
        "squeeze_dims".into(),
        attr(Value::List(proto::ListValue {
            i: vec![1],
            ..Default::default()
        })),
    );
    let dir = write("squeeze-3", vec![placeholder.clone(), sq], vec![], "sq:0");
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("squeeze dim[1]"), "{e}");

    // The batch size doubled 8 times, used as data: more arithmetic than
    // the import follows per call, so an error naming the node that reads
    // it (not the stand-in batch's value at every batch).
    let mut ss = node("n", "StridedSlice", &["s", "b", "e", "st"], vec![]);
    ss.attr.insert("shrink_axis_mask".into(), attr(Value::I(1)));
    let mut nodes = vec![
        placeholder.clone(),
        node("s", "Shape", &["x"], vec![]),
        int_const("b", &[0]),
        int_const("e", &[1]),
        int_const("st", &[1]),
        ss,
    ];
    let mut last = "n".to_string();
    for i in 0..8 {
        let next = format!("d{i}");
        nodes.push(node(&next, "AddV2", &[&last, &last], vec![]));
        last = next;
    }
    nodes.push(node("c", "Cast", &[&last], vec![("DstT", Value::Type(dt::FLOAT))]));
    nodes.push(node("y", "AddV2", &["x", "c"], vec![]));
    let dir = write("shape-arithmetic-as-data", nodes, vec![], "y:0");
    match load(&dir).unwrap_err() {
        Error::Unimplemented { what, msg } => {
            assert!(what.contains("dimensions"), "{what}");
            assert!(msg.contains("node 'c' (Cast)"), "{msg}");
        }
        e => panic!("expected Unimplemented, got {e}"),
    }

    // An int64 constant past 2^53 keeps its exact value (and, past int32,
    // is Unimplemented naming it).
    let dir = write(
        "int64-exact",
        vec![
            placeholder.clone(),
            node(
                "big",
                "Const",
                &[],
                vec![
                    ("dtype", Value::Type(dt::INT64)),
                    (
                        "value",
                        Value::Tensor(proto::TensorProto {
                            dtype: dt::INT64,
                            tensor_shape: Some(shape(&[])),
                            int64_val: vec![(1 << 53) + 1],
                            ..Default::default()
                        }),
                    ),
                ],
            ),
            node("c", "Cast", &["big"], vec![("DstT", Value::Type(dt::FLOAT))]),
            node("y", "AddV2", &["x", "c"], vec![]),
        ],
        vec![],
        "y:0",
    );
    let e = load(&dir).unwrap_err();
    assert!(e.to_string().contains("9007199254740993"), "{e}");
}

/// TensorFlow SavedModels for the import's corner cases
/// (tests/python/make_import_cases.py), made once per test run.
fn tf_cases() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let python = python()?;
        let dir = tmp("tf-cases");
        py(&python, "make_import_cases.py", &[&dir]);
        Some(dir)
    })
    .clone()
}

/// A `.npy` file as a tensor on `d` (float16, float32 and int32 arrays).
fn npy_tensor(path: &Path, d: &Device) -> Tensor {
    use wgflow::io::npy::{self, NpyData};
    let a = npy::read(path).unwrap();
    match a.data {
        NpyData::F32(v) => Tensor::from_vec(v, &a.shape, d).unwrap(),
        NpyData::I32(v) => Tensor::from_vec(v, &a.shape, d).unwrap(),
        NpyData::F16(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            Tensor::from_vec(f, &a.shape, d).unwrap().cast(DType::F16).unwrap()
        }
        other => panic!("{}: unexpected dtype {}", path.display(), other.descr()),
    }
}

/// Outputs as f32 values by name.
fn outputs(out: Vec<(String, Tensor)>) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    out.into_iter()
        .map(|(k, t)| {
            let v = t.cast(DType::F32).unwrap().to_vec::<f32>().unwrap();
            (k, (t.shape().to_vec(), v))
        })
        .collect()
}

/// `x / tf.cast(tf.shape(x)[0], tf.float32)` and `tf.size(x)` used as
/// data: each call computes them from its own batch, not from the size the
/// signature was traced at (`tf.shape(x)[0] // 2` is in
/// `integer_division_follows_tensorflow`).
#[test]
fn shape_values_used_as_data_follow_each_call() {
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("shape_data"), &["serve"], &d).unwrap();
        for b in [4, 9] {
            let x = npy_tensor(&dir.join(format!("shape_data.in{b}.npy")), &d);
            let got = outputs(l.call("serving_default", &[("x", x)]).unwrap());
            for k in ["mean_rows", "size"] {
                let (_, want) = load_npy(&dir.join(format!("shape_data.out{b}_{k}.npy")));
                assert_close(&got[k].1, &want, 1e-5, &format!("{k} at batch {b} on {d}"));
            }
        }
    }
}

/// `tf.nn.conv2d_transpose` (Keras' Conv2DTranspose) imports as
/// Conv2DBackpropInput with its output size from `tf.shape`: SAME with a
/// stride, VALID dilated with a column the forward convolution leaves
/// unread, each batch its own size.
#[test]
fn transposed_convolutions_import() {
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("conv_transpose"), &["serve"], &d).unwrap();
        for b in [2, 3] {
            let x = npy_tensor(&dir.join(format!("conv_transpose.in{b}.npy")), &d);
            let got = outputs(l.call("serving_default", &[("x", x)]).unwrap());
            for (k, shape) in [("y", [b, 10, 12, 4]), ("z", [b, 14, 25, 2])] {
                let (want_shape, want) = load_npy(&dir.join(format!("conv_transpose.out{b}_{k}.npy")));
                assert_eq!(got[k].0, shape);
                assert_eq!(want_shape, shape);
                assert_close(&got[k].1, &want, 1e-4, &format!("{k} at batch {b} on {d}"));
            }
        }
    }
}

/// Rust closures traced for unknown dimensions: a value computed on the
/// host from a stand-in size is refused, not frozen into the graph.
#[test]
fn host_values_from_unknown_dimensions_are_refused() {
    use wgflow::function::{ConcreteFunction, TensorSpec};
    let d = Device::Cpu;
    let spec = TensorSpec::new(&[None, Some(3)], DType::F32);
    let e = ConcreteFunction::trace("mean_rows", &[spec], &d, |x| {
        let n = Tensor::from_vec(vec![x[0].shape()[0] as f32], &[], &Device::Cpu)?;
        Ok(vec![x[0].div(&n)?])
    })
    .unwrap_err();
    assert!(e.to_string().contains("captured constant"), "{e}");
}

/// `v.assign_add(reduce_sum(x)); return v.read_value() * 2`: the read sees
/// the assignment, and the variable keeps it from call to call, as in
/// TensorFlow. An assignment wgflow lacks (ResourceScatterAdd) is an
/// Unimplemented error naming it, not a stale read.
#[test]
fn assignments_before_reads_take_effect() {
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("assign_add"), &["serve"], &d).unwrap();
        for i in [1, 2] {
            let x = npy_tensor(&dir.join(format!("assign_add.in{i}.npy")), &d);
            let got = outputs(l.call("serving_default", &[("x", x)]).unwrap());
            let (_, want) = load_npy(&dir.join(format!("assign_add.out{i}.npy")));
            assert_close(&got["v"].1, &want, 1e-5, &format!("call {i} on {d}"));
        }
    }
    match saved_model::load_with(dir.join("scatter"), &["serve"], &Device::Cpu).unwrap_err() {
        Error::Unimplemented { what, msg } => {
            assert!(what.contains("ResourceScatterAdd"), "{what}");
            assert!(msg.contains("node 'ResourceScatterAdd'"), "{msg}");
        }
        e => panic!("expected Unimplemented, got {e}"),
    }
}

/// `tf.stack` and `tf.concat` of float constants keep their values.
#[test]
fn packed_float_constants_stay_float() {
    let Some(dir) = tf_cases() else { return };
    let d = Device::Cpu;
    let mut l = saved_model::load_with(dir.join("float_pack"), &["serve"], &d).unwrap();
    let x = npy_tensor(&dir.join("float_pack.in.npy"), &d);
    let got = outputs(l.call("serving_default", &[("x", x)]).unwrap());
    for k in ["stack", "concat"] {
        let (_, want) = load_npy(&dir.join(format!("float_pack.out_{k}.npy")));
        assert_close(&got[k].1, &want, 1e-6, k);
    }
}

/// Integer division as TensorFlow defines it: Div and TruncateDiv truncate,
/// FloorDiv floors, FloorMod takes the divisor's sign; on host constants,
/// in shape arithmetic (`tf.shape(x)[1] // 2`) and on tensors.
#[test]
fn integer_division_follows_tensorflow() {
    use wgflow::io::npy::{self, NpyData};
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("int_math"), &["serve"], &d).unwrap();
        let x = npy_tensor(&dir.join("int_math.in_x.npy"), &d);
        let k = npy_tensor(&dir.join("int_math.in_k.npy"), &d);
        let out = l.call("serving_default", &[("x", x), ("k", k)]).unwrap();
        for (name, t) in out {
            let want = npy::read(dir.join(format!("int_math.out_{name}.npy"))).unwrap();
            assert_eq!(t.shape(), want.shape.as_slice(), "{name} on {d}");
            match want.data {
                NpyData::I32(w) => assert_eq!(t.to_vec::<i32>().unwrap(), w, "{name} on {d}"),
                NpyData::F32(w) => assert_close(&t.to_vec::<f32>().unwrap(), &w, 1e-5, &format!("{name} on {d}")),
                other => panic!("{name}: {}", other.descr()),
            }
        }
    }
}

/// FusedBatchNormV3 with T=half and U=float, as mixed_float16 models have.
#[test]
fn fused_batch_norm_of_half_with_float_statistics() {
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("fused_bn_half"), &["serve"], &d).unwrap();
        let x = npy_tensor(&dir.join("fused_bn_half.in.npy"), &d);
        let out = l.call("serving_default", &[("x", x)]).unwrap();
        assert_eq!(out[0].1.dtype(), DType::F16);
        let got = outputs(out);
        let want = npy_tensor(&dir.join("fused_bn_half.out.npy"), &Device::Cpu)
            .cast(DType::F32)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_close(&got["y"].1, &want, 1e-2, &format!("half batch norm on {d}"));
    }
}

/// A Conv2D whose filter has fewer input channels than the input is a
/// grouped convolution.
#[test]
fn grouped_conv2d_imports_with_its_groups() {
    let Some(dir) = tf_cases() else { return };
    for d in devices() {
        let mut l = saved_model::load_with(dir.join("grouped_conv"), &["serve"], &d).unwrap();
        let x = npy_tensor(&dir.join("grouped_conv.in.npy"), &d);
        let got = outputs(l.call("serving_default", &[("x", x)]).unwrap());
        let (shape, want) = load_npy(&dir.join("grouped_conv.out.npy"));
        assert_eq!(got["y"].0, shape);
        assert_close(&got["y"].1, &want, 1e-4, &format!("grouped conv on {d}"));
    }
}

/// wgflow loads its own exports of broadcast_to, slice, one_hot and pad.
#[test]
fn exports_of_layout_ops_load_back() {
    use wgflow::function::{ConcreteFunction, TensorSpec};
    use wgflow::ops::{self, Op};
    let d = Device::Cpu;
    let specs = [
        TensorSpec::new(&[Some(2), Some(3)], DType::F32).named("x"),
        TensorSpec::new(&[Some(4)], DType::I32).named("k"),
    ];
    let body = |a: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
        let b = a[0].slice(&[0, 0], &[1, 3])?.broadcast_to(&[4, 3])?;
        let s = a[0].slice(&[1, 1], &[1, 2])?;
        let h = ops::layout::one_hot(&a[1], 5, 2.0, -1.0, DType::F32)?;
        let p = ops::apply(
            Op::Pad {
                before: vec![1, 2],
                shape: vec![4, 6],
            },
            &[&a[0]],
        )?;
        Ok(vec![b, s, h, p])
    };
    let f = ConcreteFunction::trace("layout", &specs, &d, body).unwrap();
    let dir = tmp("layout-ops");
    saved_model::save_functions(&dir, &[("serving_default", &f)], &SaveOptions::default()).unwrap();
    let mut l = saved_model::load_with(&dir, &["serve"], &d).unwrap();
    let x = uniform(&[2, 3], -1.0, 1.0, 3, DType::F32);
    let k = Tensor::from_vec(vec![0i32, 4, 2, 7], &[4], &d).unwrap();
    let want = body(&[x.clone(), k.clone()]).unwrap();
    let got = l.call("serving_default", &[("x", x), ("k", k)]).unwrap();
    assert_eq!(got.len(), 4);
    for ((name, g), w) in got.iter().zip(&want) {
        assert_eq!(g.shape(), w.shape(), "{name}");
        assert_eq!(g.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap(), "{name}");
    }
}
