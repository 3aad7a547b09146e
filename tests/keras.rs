//! Keras 3 `.keras` files both ways, checked with the real Keras (the
//! Python venv `.ci/run` creates; `WGFLOW_PYTHON` names its interpreter):
//! Keras-trained models load in wgflow and predict what Keras predicts;
//! wgflow's files load in Keras and predict what wgflow predicts; training
//! goes on after a load; broken files are typed errors.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use wgflow::nn::layers::{
    AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D, MaxPooling2D,
};
use wgflow::nn::losses::SparseCategoricalCrossentropy;
use wgflow::nn::metrics::SparseCategoricalAccuracy;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, FitArgs, Model, Sequential, load_model_on, set_random_seed};
use wgflow::{DType, Device, Error, Tensor};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgflow-keras-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpus());
    d
}

fn cnn(d: &Device) -> Sequential {
    set_random_seed(11);
    let mut m = Sequential::new()
        .add(Conv2D::new(4, [3, 3]).activation(Activation::Relu))
        .add(BatchNormalization::new())
        .add(MaxPooling2D::new([2, 2]))
        .add(
            Conv2D::new(6, [3, 3])
                .strides([2, 2])
                .padding("same")
                .unwrap()
                .activation(Activation::Gelu),
        )
        .add(AveragePooling2D::new([2, 2]).padding("same").unwrap())
        .add(GlobalAveragePooling2D::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    m.build(&[28, 28, 1], d).unwrap();
    randomize_moving_stats(&m, d);
    m
}

fn mlp(d: &Device) -> Sequential {
    set_random_seed(12);
    let mut m = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(32).activation(Activation::Relu))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).unwrap();
    m
}

/// Group and RMS normalization between a convolution and dense layers,
/// their weights away from the initial ones and zeros.
fn norms(d: &Device, seed: u64) -> Sequential {
    use wgflow::nn::layers::{GroupNormalization, RMSNormalization};
    set_random_seed(seed);
    let mut m = Sequential::new()
        .add(Conv2D::new(8, [3, 3]).strides([2, 2]))
        .add(GroupNormalization::new(4).epsilon(1e-2))
        .add(Flatten::new())
        .add(Dense::new(16))
        .add(RMSNormalization::new().epsilon(1e-3))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).unwrap();
    for i in [1, 4] {
        for (k, (_, v)) in m.layers()[i].weights().into_iter().enumerate() {
            let w = uniform(&v.shape(), 0.5, 1.5, seed + (i * 10 + k) as u64, DType::F32);
            v.assign(&w.to_device(d).unwrap()).unwrap();
        }
    }
    m
}

fn run(python: &Path, args: &[&str]) -> String {
    let paths: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    py(python, "keras_files.py", &refs)
}

#[test]
fn keras_trained_models_load_in_wgflow_and_predict_the_same() {
    let Some(python) = python() else { return };
    let dir = tmp("from-keras");
    let out = run(&python, &["make", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    // A functional model that is not a chain loads as its graph (checked
    // against Keras' predictions in keras_functional_models_both_ways).
    let mut r = load_model_on(dir.join("residual.keras"), &Device::Cpu).unwrap();
    assert!(r.is_functional());
    let kinds: Vec<&str> = r.layers().iter().map(|l| l.kind()).collect();
    assert_eq!(kinds, ["Flatten", "Dense", "Dense", "Add"]);
    let x = uniform(&[3, 28, 28, 1], 0.0, 1.0, 1, DType::F32);
    assert_eq!(r.predict(&x, 2).unwrap().shape(), &[3, 16]);
    for d in devices() {
        for file in [
            "cnn.keras",
            "mlp.keras",
            "cnn.h5",
            "mlp.h5",
            "fcnn.keras",
            "fcnn.h5",
            "extra.keras",
            "extra.h5",
            "lnmlp.keras",
            "lnmlp.h5",
            "norms.keras",
            "norms.h5",
        ] {
            let name = file.split('.').next().unwrap();
            let mut m = load_model_on(dir.join(file), &d).unwrap();
            // 1e-5 on the CPU device; GPUs compute GELU and sums their own way.
            let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
            for b in [1usize, 7, 64] {
                let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let (_, want) = load_npy(&dir.join(format!("keras_{name}_{b}.npy")));
                let x = Tensor::from_vec(x, &shape, &d).unwrap();
                let got = m.predict(&x, 32).unwrap();
                assert_eq!(got.shape(), &[b, 10]);
                assert_close(
                    &got.to_vec::<f32>().unwrap(),
                    &want,
                    tol,
                    &format!("{name} on {d}, batch {b}"),
                );
            }
            // Keras' compile_config comes back: fit goes on without compile.
            assert_eq!(m.compiled_ref().map(|c| c.optimizer.name()), Some("Adam"), "{file}");
            if file.ends_with(".keras") {
                // 2 epochs of 4 steps in Keras; the slots come back too.
                assert_eq!(m.compiled_ref().map(|c| c.optimizer.iterations()), Some(8), "{file}");
            }
            if file == "cnn.h5" && !d.is_gpu() {
                let x = uniform(&[64, 28, 28, 1], 0.0, 1.0, 3, DType::F32);
                let y = randint(&[64], 0, 10, 4);
                let h = m
                    .fit(
                        &x,
                        &y,
                        FitArgs {
                            batch_size: 16,
                            epochs: 3,
                            verbose: false,
                            ..FitArgs::default()
                        },
                    )
                    .unwrap();
                // Keras names a metric by the string compile was given.
                assert!(h.get("accuracy").is_some(), "{:?}", h.history);
            }
            if file == "cnn.keras" && !d.is_gpu() {
                // Training goes on from the loaded weights.
                m.compile(
                    Adam::new(1e-2),
                    SparseCategoricalCrossentropy::new(false),
                    SparseCategoricalAccuracy::new(),
                );
                let x = uniform(&[64, 28, 28, 1], 0.0, 1.0, 3, DType::F32);
                let y = randint(&[64], 0, 10, 4);
                let args = FitArgs {
                    batch_size: 16,
                    epochs: 5,
                    verbose: false,
                    ..FitArgs::default()
                };
                let h = m.fit(&x, &y, args).unwrap();
                let loss = h.get("loss").unwrap();
                assert!(loss[4] < loss[0], "the loss does not fall after a load: {loss:?}");
            }
        }
    }
}

#[test]
fn wgflow_models_load_in_keras_and_predict_the_same() {
    let Some(python) = python() else { return };
    let dir = tmp("to-keras");
    let d = Device::Cpu;
    let mut wants = Vec::new();
    for (name, mut m) in [
        ("cnn", cnn(&d)),
        ("mlp", mlp(&d)),
        ("extra", extra_layers(&d, 7)),
        ("lnmlp", layer_norm_mlp(&d, 23)),
        ("norms", norms(&d, 29)),
    ] {
        if name == "cnn" {
            m.compile(
                Adam::new(1e-3),
                SparseCategoricalCrossentropy::new(false),
                SparseCategoricalAccuracy::new(),
            );
            // Three steps: Keras reads the step count and the Adam slots.
            let x = uniform(&[48, 28, 28, 1], 0.0, 1.0, 40, DType::F32);
            let y = randint(&[48], 0, 10, 41);
            let args = FitArgs {
                batch_size: 16,
                epochs: 1,
                verbose: false,
                ..FitArgs::default()
            };
            m.fit(&x, &y, args).unwrap();
        }
        m.save(dir.join(format!("{name}.keras"))).unwrap();
        m.save(dir.join(format!("{name}.h5"))).unwrap();
        for (i, b) in [1usize, 7, 64].into_iter().enumerate() {
            let x = uniform(&[b, 28, 28, 1], 0.0, 1.0, 30 + i as u64, DType::F32);
            if name == "cnn" {
                save_npy(&dir.join(format!("x{b}.npy")), &x);
            }
            wants.push((name, b, m.predict(&x, 64).unwrap().to_vec::<f32>().unwrap()));
        }
    }
    let out = run(
        &python,
        &[
            "load",
            dir.to_str().unwrap(),
            "cnn.keras",
            "mlp.keras",
            "cnn.h5",
            "mlp.h5",
            "extra.keras",
            "extra.h5",
            "lnmlp.keras",
            "lnmlp.h5",
            "norms.keras",
            "norms.h5",
        ],
    );
    assert!(out.contains("OK"), "{out}");
    assert!(
        out.contains("cnn.keras compiled Adam sparse_categorical_crossentropy"),
        "{out}"
    );
    assert!(out.contains("cnn.h5 compiled Adam"), "{out}");
    assert!(out.contains("mlp.keras compiled None"), "{out}");
    assert!(out.contains("cnn.keras iterations 3"), "{out}");
    for file in ["cnn.keras", "cnn.h5"] {
        let layers = "['Conv2D', 'BatchNormalization', 'MaxPooling2D', 'Conv2D', 'AveragePooling2D', 'GlobalAveragePooling2D', 'Dropout', 'Dense']";
        assert!(out.contains(&format!("{file} {layers}")), "{out}");
    }
    for (name, b, want) in wants {
        for ext in ["keras", "h5"] {
            let (_, got) = load_npy(&dir.join(format!("kload_{name}_{ext}_{b}.npy")));
            assert_close(&got, &want, 1e-5, &format!("Keras on wgflow's {name}.{ext}, batch {b}"));
        }
    }
}

/// Text models: Keras-trained `Embedding` with 1-D global pooling load in
/// wgflow and predict the same on every device (float token ids, and a
/// model whose input is int32), train on, and wgflow's own load in Keras
/// and predict the same; indices out of range and masking are typed errors.
#[test]
fn keras_text_models_with_embeddings_both_ways() {
    use wgflow::nn::layers::{
        AveragePooling1D, Conv1D, Embedding, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D,
    };
    let Some(python) = python() else { return };
    let dir = tmp("text");
    let out = run(&python, &["text", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    for d in devices() {
        for file in [
            "text.keras",
            "text.h5",
            "textmax.keras",
            "textmax.h5",
            "textcnn.keras",
            "textcnn.h5",
        ] {
            let name = file.split('.').next().unwrap();
            let mut m = load_model_on(dir.join(file), &d).unwrap();
            let kinds: Vec<&str> = m.layers().iter().map(|l| l.kind()).collect();
            assert_eq!(kinds[0], "Embedding", "{file}");
            for b in [1usize, 7, 64] {
                let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let (_, want) = load_npy(&dir.join(format!("keras_{name}_{b}.npy")));
                let x = Tensor::from_vec(x, &shape, &d).unwrap();
                // Float ids and int32 ids alike.
                for x in [x.clone(), x.cast(DType::I32).unwrap()] {
                    let got = m.predict(&x, 32).unwrap();
                    assert_eq!(got.shape(), &[b, 10]);
                    let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
                    assert_close(
                        &got.to_vec::<f32>().unwrap(),
                        &want,
                        tol,
                        &format!("{file} on {d}, batch {b}"),
                    );
                }
            }
            // Training goes on, the embeddings among the weights it moves.
            let x = randint(&[64, 12], 0, 50, 7);
            let y = randint(&[64], 0, 10, 8);
            let before = m.layers()[0].weights()[0].1.value().to_vec::<f32>().unwrap();
            let args = FitArgs {
                batch_size: 16,
                epochs: 5,
                verbose: false,
                device: Some(d.clone()),
                ..FitArgs::default()
            };
            let h = m.fit(&x, &y, args).unwrap();
            let l = h.get("loss").unwrap();
            assert!(l[4] < l[0], "{file} on {d}: loss {l:?}");
            let after = m.layers()[0].weights()[0].1.value().to_vec::<f32>().unwrap();
            assert_ne!(before, after, "{file} on {d}: the embeddings did not train");
            // An id past the table is an error, not a silent row.
            let bad = Tensor::from_vec(vec![3.0f32; 11].into_iter().chain([50.0]).collect(), &[1, 12], &d).unwrap();
            let e = m.predict(&bad, 1).and_then(|p| p.to_vec::<f32>()).unwrap_err();
            assert!(e.to_string().contains("gather"), "{file} on {d}: {e}");
        }
    }
    // Masking is not built: a typed error naming the option.
    let masked = dir.join("masked.keras");
    rezip(&dir.join("text.keras"), &masked, |name, b| {
        if name != "config.json" {
            return Some(b);
        }
        let s = String::from_utf8(b)
            .unwrap()
            .replace("\"mask_zero\": false", "\"mask_zero\": true");
        assert!(s.contains("\"mask_zero\": true"));
        Some(s.into_bytes())
    });
    let e = load_err(&masked, &Device::Cpu);
    assert!(e.to_string().contains("mask_zero"), "{e}");
    // wgflow's text model in Keras.
    let d = Device::Cpu;
    set_random_seed(3);
    let mut m = Sequential::new()
        .add(Embedding::new(50, 8))
        .add(GlobalAveragePooling1D::new())
        .add(Dense::new(10));
    m.build(&[12], &d).unwrap();
    m.compile(
        Adam::new(1e-2),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let args = FitArgs {
        batch_size: 16,
        epochs: 2,
        verbose: false,
        ..FitArgs::default()
    };
    m.fit(&randint(&[64, 12], 0, 50, 9), &randint(&[64], 0, 10, 10), args)
        .unwrap();
    m.save(dir.join("wg_text.keras")).unwrap();
    m.save(dir.join("wg_text.h5")).unwrap();
    let mut cnn = Sequential::new()
        .add(Embedding::new(50, 8))
        .add(
            Conv1D::new(6, 3)
                .padding("causal")
                .unwrap()
                .dilation_rate(2)
                .activation(Activation::Relu),
        )
        .add(MaxPooling1D::new(2))
        .add(Conv1D::new(5, 2).strides(2).padding("same").unwrap())
        .add(AveragePooling1D::new(2).strides(1).padding("same").unwrap())
        .add(GlobalMaxPooling1D::new())
        .add(Dense::new(10));
    cnn.build(&[12], &d).unwrap();
    cnn.save(dir.join("wg_textcnn.keras")).unwrap();
    cnn.save(dir.join("wg_textcnn.h5")).unwrap();
    let files = ["wg_text.keras", "wg_text.h5", "wg_textcnn.keras", "wg_textcnn.h5"];
    let mut args = vec!["load", dir.to_str().unwrap()];
    args.extend(files);
    let out = run(&python, &args);
    assert!(out.contains("OK"), "{out}");
    assert!(
        out.contains("wg_text.keras ['Embedding', 'GlobalAveragePooling1D', 'Dense']"),
        "{out}"
    );
    let layers = "['Embedding', 'Conv1D', 'MaxPooling1D', 'Conv1D', 'AveragePooling1D', 'GlobalMaxPooling1D', 'Dense']";
    assert!(out.contains(&format!("wg_textcnn.keras {layers}")), "{out}");
    for (name, model) in [("wg_text", &mut m), ("wg_textcnn", &mut cnn)] {
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
            let want = model
                .predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 64)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for ext in ["keras", "h5"] {
                let (_, got) = load_npy(&dir.join(format!("kload_{name}_{ext}_{b}.npy")));
                assert_close(&got, &want, 1e-5, &format!("Keras on {name}.{ext}, batch {b}"));
            }
        }
    }
}

#[test]
fn round_trip_in_wgflow_keeps_every_weight() {
    let d = Device::Cpu;
    let dir = tmp("round-trip");
    let m = cnn(&d);
    for file in ["m.keras", "m.h5"] {
        m.save(dir.join(file)).unwrap();
        let back = load_model_on(dir.join(file), &d).unwrap();
        same_weights(&m, &back);
    }
}

fn same_weights(m: &Sequential, back: &Sequential) {
    let a: Vec<Vec<f32>> = m
        .layers()
        .iter()
        .flat_map(|l| l.weights())
        .map(|(_, v)| v.value().to_vec::<f32>().unwrap())
        .collect();
    let b: Vec<Vec<f32>> = back
        .layers()
        .iter()
        .flat_map(|l| l.weights())
        .map(|(_, v)| v.value().to_vec::<f32>().unwrap())
        .collect();
    assert_eq!(a.len(), 10);
    assert_eq!(a, b);
    let kinds: Vec<&str> = back.layers().iter().map(|l| l.kind()).collect();
    assert_eq!(kinds, m.layers().iter().map(|l| l.kind()).collect::<Vec<_>>());
}

fn load_err(p: &Path, d: &Device) -> Error {
    match load_model_on(p, d) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e,
    }
}

/// Rewrites one entry of a `.keras` zip.
fn rezip(from: &Path, to: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if let Some(bytes) = edit(&name, bytes) {
            zout.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            zout.write_all(&bytes).unwrap();
        }
    }
    zout.finish().unwrap();
}

/// Sets the uncompressed size that `name`'s local and central headers
/// declare in the zip `bytes`.
fn patch_declared_size(bytes: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(46) {
        let (sig, name_at, size_at) = match &bytes[i..i + 4] {
            b"PK\x03\x04" => (i, 30, 22),
            b"PK\x01\x02" => (i, 46, 24),
            _ => continue,
        };
        let len_at = if name_at == 30 { sig + 26 } else { sig + 28 };
        let len = u16::from_le_bytes([bytes[len_at], bytes[len_at + 1]]) as usize;
        if bytes.get(sig + name_at..sig + name_at + len) == Some(name.as_bytes()) {
            bytes[sig + size_at..sig + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "{name}: headers found");
}

/// A `.keras` entry that inflates past what its header declares (a zip
/// bomb), or declares more than wgflow reads, is an error before it is
/// read into memory.
#[test]
fn zip_bombs_are_refused() {
    let d = Device::Cpu;
    let dir = tmp("bomb");
    let good = dir.join("good.keras");
    mlp(&d).save(&good).unwrap();
    // config.json followed by 8 MiB of spaces (still JSON), deflated to a
    // few KiB, with a header that declares its first 200 bytes.
    let p = dir.join("bomb.keras");
    rezip(&good, &p, |name, mut b| {
        if name == "config.json" {
            b.resize(b.len() + (8 << 20), b' ');
        }
        Some(b)
    });
    assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
    let mut bytes = std::fs::read(&p).unwrap();
    patch_declared_size(&mut bytes, "config.json", 200);
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p, &d);
    assert!(e.to_string().contains("config.json"), "{e}");
    // Declaring 4 GiB - 1 for config.json: refused before reading.
    patch_declared_size(&mut bytes, "config.json", u32::MAX);
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p, &d);
    assert!(e.to_string().contains("declares 4294967295 bytes"), "{e}");
}

/// A BatchNormalization axis is checked against its input's rank: `[1]`
/// after a Dense (as Keras 2's legacy files write it) is the last axis and
/// loads; `[3]` or `[2]` there is an error, not a silent last-axis norm.
#[test]
fn batch_norm_axis_must_be_the_last_of_its_input() {
    let d = Device::Cpu;
    let dir = tmp("bn-axis");
    set_random_seed(5);
    let mut m = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(8).activation(Activation::Relu))
        .add(BatchNormalization::new())
        .add(Dense::new(3));
    m.build(&[4, 4, 1], &d).unwrap();
    let good = dir.join("good.keras");
    m.save(&good).unwrap();
    let x = uniform(&[5, 4, 4, 1], 0.0, 1.0, 1, DType::F32);
    let want = m.predict(&x, 8).unwrap().to_vec::<f32>().unwrap();
    for (axis, ok) in [
        (serde_json::json!([1]), true),
        (serde_json::json!(1), true),
        (serde_json::json!(-1), true),
        (serde_json::json!([3]), false),
        (serde_json::json!([2]), false),
        (serde_json::json!([1, 2]), false),
    ] {
        let p = dir.join("edited.keras");
        rezip(&good, &p, |name, b| {
            if name != "config.json" {
                return Some(b);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            for l in v["config"]["layers"].as_array_mut().unwrap() {
                if l["class_name"] == "BatchNormalization" {
                    l["config"]["axis"] = axis.clone();
                }
            }
            Some(v.to_string().into_bytes())
        });
        match load_model_on(&p, &d) {
            Ok(mut back) if ok => {
                let got = back.predict(&x, 8).unwrap().to_vec::<f32>().unwrap();
                assert_close(&got, &want, 1e-6, &format!("axis {axis}"));
            }
            Err(e) if !ok => assert!(e.to_string().contains("axis"), "{axis}: {e}"),
            Ok(_) => panic!("axis {axis} after a Dense loaded"),
            Err(e) => panic!("axis {axis} after a Dense: {e}"),
        }
    }
}

#[test]
fn broken_files_are_typed_errors() {
    let d = Device::Cpu;
    let dir = tmp("broken");
    let good = dir.join("good.keras");
    mlp(&d).save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // Truncated anywhere: an error, never a panic.
    for cut in [0, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 30] {
        let p = dir.join(format!("cut{cut}.keras"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(&p, &d);
        assert!(e.to_string().contains(&format!("cut{cut}.keras")), "{e}");
    }
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown",
            Box::new(|v| v["config"]["layers"][2]["class_name"] = "ConvLSTM2D".into()),
            "\"ConvLSTM2D\"",
        ),
        (
            "option",
            Box::new(|v| {
                v["config"]["layers"][2]["config"]["kernel_regularizer"] = serde_json::json!({"class_name": "L2"})
            }),
            "kernel_regularizer",
        ),
        (
            "shape",
            Box::new(|v| v["config"]["layers"][2]["config"]["units"] = 31.into()),
            "wrong shape",
        ),
        (
            "channels_first",
            Box::new(|v| v["config"]["layers"][1]["config"]["data_format"] = "channels_first".into()),
            "data_format",
        ),
        (
            "huge",
            Box::new(|v| v["config"]["layers"][2]["config"]["units"] = (1u64 << 40).into()),
            "out of memory",
        ),
        (
            "reshape",
            Box::new(|v| {
                v["config"]["layers"][1] =
                    serde_json::json!({"class_name": "Reshape", "config": {"name": "r", "target_shape": [-1, -1]}})
            }),
            "cannot take the shape",
        ),
        (
            "kernel",
            Box::new(|v| {
                v["config"]["layers"][1] = serde_json::json!({"class_name": "DepthwiseConv2D",
                    "config": {"name": "dw", "kernel_size": [2147483648u64, 2147483648u64], "depth_multiplier": 4}})
            }),
            "DepthwiseConv2D",
        ),
    ];
    // Kernels too large to allocate: a typed error, no overflow on the way.
    use wgflow::nn::Layer;
    let e = wgflow::nn::layers::DepthwiseConv2D::new([1 << 31, 1 << 31])
        .build(&[8, 8, 4], &d)
        .unwrap_err();
    assert!(e.to_string().contains("fit in memory"), "{e}");
    for (tag, f, want) in cases {
        let p = dir.join(format!("{tag}.keras"));
        rezip(&good, &p, |name, b| {
            if name != "config.json" {
                return Some(b);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            f(&mut v);
            Some(v.to_string().into_bytes())
        });
        let e = load_err(&p, &d);
        assert!(e.to_string().contains(want), "{tag}: {e}");
    }
    // A training config wgflow cannot follow (an optimizer option or a
    // loss option it lacks) loads the model uncompiled, weights intact.
    let mut compiled = mlp(&d);
    compiled.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let cgood = dir.join("compiled.keras");
    compiled.save(&cgood).unwrap();
    let x = Tensor::from_vec((0..784).map(|i| (i % 7) as f32 / 7.0).collect(), &[1, 28, 28, 1], &d).unwrap();
    let want = compiled.predict(&x, 1).unwrap().to_vec::<f32>().unwrap();
    let edits: Vec<(&str, Edit)> = vec![
        (
            "amsgrad",
            Box::new(|v| v["compile_config"]["optimizer"]["config"]["amsgrad"] = true.into()),
        ),
        (
            "smoothing",
            Box::new(|v| v["compile_config"]["loss"]["config"]["label_smoothing"] = 0.1.into()),
        ),
    ];
    for (tag, f) in edits {
        let p = dir.join(format!("{tag}.keras"));
        rezip(&cgood, &p, |name, b| {
            if name != "config.json" {
                return Some(b);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert!(v["compile_config"].is_object(), "{v}");
            f(&mut v);
            Some(v.to_string().into_bytes())
        });
        let mut m = load_model_on(&p, &d).unwrap();
        assert!(m.compiled_ref().is_none(), "{tag}: compiled anyway");
        assert_eq!(m.predict(&x, 1).unwrap().to_vec::<f32>().unwrap(), want, "{tag}");
    }
    let p = dir.join("no-weights.keras");
    rezip(&good, &p, |name, b| (name != "model.weights.h5").then_some(b));
    let e = load_err(&p, &d);
    assert!(e.to_string().contains("model.weights.h5"), "{e}");
    // An unbuilt model or another extension: errors, and no file.
    let e = Sequential::new()
        .add(Dense::new(3))
        .save(dir.join("unbuilt.keras"))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(!dir.join("unbuilt.keras").exists());
    assert!(mlp(&d).save(dir.join("m.txt")).is_err());
    assert!(!dir.join("m.txt").exists());
    let h5 = dir.join("good.h5");
    mlp(&d).save(&h5).unwrap();
    let bytes = std::fs::read(&h5).unwrap();
    for cut in [0, 8, bytes.len() / 2, bytes.len() - 16] {
        let p = dir.join(format!("cut{cut}.h5"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(&p, &d);
        assert!(e.to_string().contains(&format!("cut{cut}.h5")), "{e}");
    }
}

/// `wgflow_convert`: a Keras-trained file to ONNX (checked in ONNX Runtime
/// against Keras' predictions), to a SavedModel (loaded in wgflow), and a
/// SavedModel to ONNX, and a Keras file to TFLite (checked in the
/// interpreter).
#[test]
fn wgflow_convert_turns_keras_files_into_onnx_and_saved_models() {
    let Some(python) = python() else { return };
    let dir = tmp("convert");
    run(&python, &["make", dir.to_str().unwrap()]);
    let convert = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wgflow_convert"))
            .args(args)
            .output()
            .unwrap()
    };
    let keras = dir.join("cnn.keras");
    let onnx = dir.join("cnn.onnx");
    let sm = dir.join("cnn_sm");
    let onnx2 = dir.join("cnn_from_sm.onnx");
    for (inp, flag, out) in [
        (&keras, "--keras_model_file", &onnx),
        (&keras, "--keras_model_file", &sm),
        (&sm, "--saved_model_dir", &onnx2),
    ] {
        let o = convert(&[flag, inp.to_str().unwrap(), "--output_file", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for (file, tag) in [(&onnx, "keras"), (&onnx2, "sm")] {
        let sub = dir.join(tag);
        std::fs::create_dir_all(&sub).unwrap();
        for b in [1, 7, 64] {
            std::fs::copy(dir.join(format!("x{b}.npy")), sub.join(format!("x{b}.npy"))).unwrap();
        }
        let out = py(
            &python,
            "check_onnx.py",
            &[file, &sub, Path::new("1"), Path::new("7"), Path::new("64")],
        );
        assert!(out.contains("OK"), "{out}");
        for b in [1, 7, 64] {
            let (_, got) = load_npy(&sub.join(format!("ort{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_cnn_{b}.npy")));
            assert_close(
                &got,
                &want,
                1e-4,
                &format!("ONNX Runtime on the converted cnn ({tag}), batch {b}"),
            );
        }
    }
    let mut loaded = wgflow::saved_model::load_with(&sm, &["serve"], &Device::Cpu).unwrap();
    let (shape, x) = load_npy(&dir.join("x7.npy"));
    let x = Tensor::from_vec(x, &shape, &Device::Cpu).unwrap();
    let got = loaded.call("serving_default", &[("inputs", x)]).unwrap();
    let (_, want) = load_npy(&dir.join("keras_cnn_7.npy"));
    assert_close(
        &got[0].1.to_vec::<f32>().unwrap(),
        &want,
        1e-4,
        "the converted SavedModel",
    );
    let o = convert(&[
        "--keras_model_file",
        keras.to_str().unwrap(),
        "--output_file",
        dir.join("m.tflite").to_str().unwrap(),
    ]);
    // The Keras CNN's gelu is TFLite's GELU: the interpreter predicts
    // what Keras does.
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tfl = dir.join("m.tflite");
    py(
        &python,
        "tflite_files.py",
        &[Path::new("predict"), &dir.join("x7.npy"), &tfl],
    );
    let (_, got) = load_npy(&PathBuf::from(format!("{}.npy", tfl.display())));
    assert_close(&got, &want, 1e-4, "the TFLite interpreter on the converted cnn");
}

/// Corrupted files (bytes flipped anywhere) are errors or loads, never a
/// panic.
#[test]
fn corrupted_files_never_panic() {
    let d = Device::Cpu;
    let dir = tmp("corrupt");
    for ext in ["keras", "h5"] {
        let good = dir.join(format!("good.{ext}"));
        mlp(&d).save(&good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for k in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + k % 4 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            let p = dir.join(format!("bad{k}.{ext}"));
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_model_on(&p, &d).map(|_| ())));
            assert!(r.is_ok(), "{}: loading panicked", p.display());
        }
    }
}

/// Every Keras loss and metric wgflow has, against Keras on the same data,
/// from the configs wgflow writes (so a saved `compile_config` means in
/// Keras what it meant in wgflow): losses on one batch, metrics
/// accumulated over two, on every device.
#[test]
fn losses_and_metrics_match_keras() {
    use wgflow::nn::losses::*;
    use wgflow::nn::metrics::{
        AUC, Average, Curve, F1Score, FBetaScore, IoU, MeanMetricWrapper, Metric, Precision, Recall,
        RootMeanSquaredError, SparseTopKCategoricalAccuracy, Summation, TopKCategoricalAccuracy,
    };
    let Some(python) = python() else { return };
    let dir = tmp("losses");
    // Two batches of each kind of data, saved for Keras.
    let mut data = std::collections::HashMap::new();
    let mut put = |name: String, t: Tensor| {
        save_npy(&dir.join(format!("{name}.npy")), &t.cast(DType::F32).unwrap());
        data.insert(name, t);
    };
    for b in 0..2u64 {
        let s = 100 * b;
        put(format!("reg_t{b}"), randn(&[13, 5], s + 1, DType::F32));
        put(format!("reg_p{b}"), randn(&[13, 5], s + 2, DType::F32));
        // The same predictions with a trailing axis of 1 (Keras squeezes it).
        put(
            format!("reg3_p{b}"),
            randn(&[13, 5], s + 2, DType::F32).reshape(&[13, 5, 1]).unwrap(),
        );
        put(format!("pos_t{b}"), uniform(&[13, 5], 0.0, 3.0, s + 3, DType::F32));
        put(format!("pos_p{b}"), uniform(&[13, 5], 0.01, 3.0, s + 4, DType::F32));
        let soft = |seed| uniform(&[13, 5], 0.0, 1.0, seed, DType::F32).softmax(-1).unwrap();
        put(format!("prob_t{b}"), soft(s + 5));
        put(format!("prob_p{b}"), soft(s + 6));
        let bits = randint(&[13, 3], 0, 2, s + 7).cast(DType::F32).unwrap();
        put(format!("bin_t{b}"), bits.clone());
        put(
            format!("sign_t{b}"),
            bits.mul_scalar(2.0).unwrap().add_scalar(-1.0).unwrap(),
        );
        // Probabilities with exact 0, 1, 0.5 and bucket edges among them.
        let mut p = uniform(&[13, 3], 0.0, 1.0, s + 8, DType::F32).to_vec::<f32>().unwrap();
        p[..6].copy_from_slice(&[0.0, 1.0, 0.5, 1.0 / 199.0, 0.25, 0.75]);
        put(
            format!("bin_p{b}"),
            Tensor::from_vec(p, &[13, 3], &Device::Cpu).unwrap(),
        );
        put(
            format!("logit_p{b}"),
            randn(&[13, 3], s + 9, DType::F32).mul_scalar(3.0).unwrap(),
        );
        let labels = randint(&[13], 0, 5, s + 10);
        put(
            format!("onehot_t{b}"),
            wgflow::ops::layout::one_hot(&labels, 5, 1.0, 0.0, DType::F32).unwrap(),
        );
        put(format!("sparse_t{b}"), labels);
        put(format!("col_t{b}"), randn(&[13], s + 11, DType::F32));
        put(format!("col_p{b}"), randn(&[13, 1], s + 12, DType::F32));
        put(
            format!("bcol_t{b}"),
            randint(&[13], 0, 2, s + 13).cast(DType::F32).unwrap(),
        );
        put(format!("bcol_p{b}"), uniform(&[13, 1], 0.0, 1.0, s + 14, DType::F32));
        // Ties, infinities, NaN and labels out of range, for in_top_k.
        let cpu = Device::Cpu;
        let tie = vec![
            1.0,
            1.0,
            1.0,
            1.0,
            f32::INFINITY,
            0.0,
            0.0,
            0.0,
            f32::NAN,
            1.0,
            0.0,
            0.0,
            0.0,
            5.0,
            3.0,
            2.0,
            0.0,
            1.0,
            2.0,
            3.0,
            0.0,
            1.0,
            2.0,
            3.0,
        ];
        put(format!("tie_p{b}"), Tensor::from_vec(tie, &[6, 4], &cpu).unwrap());
        let labels = vec![2.0f32, 0.0, 1.0, 3.0, 9.0, -1.0];
        put(format!("tie_t{b}"), Tensor::from_vec(labels, &[6], &cpu).unwrap());
    }
    let losses: Vec<(Box<dyn Loss>, &str)> = vec![
        (Box::new(MeanSquaredError), "reg"),
        (Box::new(MeanSquaredError), "col"),
        (Box::new(MeanAbsoluteError), "reg"),
        (Box::new(MeanAbsolutePercentageError), "reg"),
        (Box::new(MeanSquaredLogarithmicError), "reg"),
        (Box::new(MeanSquaredLogarithmicError), "pos"),
        (Box::new(Huber::default()), "reg"),
        (Box::new(Huber { delta: 0.3 }), "reg"),
        (Box::new(LogCosh), "reg"),
        (Box::new(CosineSimilarity::default()), "reg"),
        (Box::new(CosineSimilarity { axis: 0 }), "reg"),
        (Box::new(CosineSimilarity::default()), "reg_reg3"),
        (Box::new(KLDivergence), "reg_reg3"),
        (Box::new(Poisson), "pos"),
        (Box::new(KLDivergence), "prob"),
        (Box::new(CategoricalCrossentropy::new(false)), "prob"),
        (
            Box::new(CategoricalCrossentropy::new(false).label_smoothing(0.1)),
            "onehot_prob",
        ),
        (
            Box::new(CategoricalCrossentropy::new(true).label_smoothing(0.2)),
            "onehot_reg",
        ),
        (Box::new(CategoricalHinge), "onehot_reg"),
        (Box::new(SparseCategoricalCrossentropy::new(false)), "sparse_prob"),
        (Box::new(BinaryCrossentropy::new(false)), "bin"),
        (Box::new(BinaryCrossentropy::new(false).label_smoothing(0.2)), "bin"),
        (
            Box::new(BinaryCrossentropy::new(true).label_smoothing(0.1)),
            "bin_logit",
        ),
        (Box::new(BinaryCrossentropy::new(false)), "bcol"),
        (Box::new(Hinge), "bin_logit"),
        (Box::new(Hinge), "sign_logit"),
        (Box::new(SquaredHinge), "bin_logit"),
        (Box::new(SquaredHinge), "reg"),
    ];
    // "t_p": y_true from set t, y_pred from set p; one name: both.
    let pair = |set: &str| -> (String, String) {
        match set.split_once('_') {
            Some((t, p)) => (format!("{t}_t"), format!("{p}_p")),
            None => (format!("{set}_t"), format!("{set}_p")),
        }
    };
    type MakeMetric = Box<dyn Fn() -> Box<dyn Metric>>;
    let metrics: Vec<(MakeMetric, &str)> = vec![
        (
            Box::new(|| Box::new(MeanMetricWrapper::new("mse", MeanSquaredError))),
            "reg",
        ),
        (
            Box::new(|| Box::new(MeanMetricWrapper::new("my_mae", MeanAbsoluteError))),
            "col",
        ),
        (
            Box::new(|| Box::new(MeanMetricWrapper::new("kl_divergence", KLDivergence))),
            "prob",
        ),
        (Box::new(|| Box::new(MeanMetricWrapper::new("logcosh", LogCosh))), "reg"),
        (
            Box::new(|| Box::new(MeanMetricWrapper::new("xent", BinaryCrossentropy::new(true)))),
            "bin_logit",
        ),
        // A Keras name with other options is written as its class.
        (
            Box::new(|| {
                Box::new(MeanMetricWrapper::new(
                    "binary_crossentropy",
                    BinaryCrossentropy::new(true),
                ))
            }),
            "bin_logit",
        ),
        (Box::new(|| Box::new(RootMeanSquaredError::new())), "reg"),
        (Box::new(|| Box::new(wgflow::nn::metrics::Accuracy::exact())), "bin"),
        (Box::new(|| Box::new(wgflow::nn::metrics::Accuracy::auto())), "bcol"),
        (
            Box::new(|| Box::new(wgflow::nn::metrics::Accuracy::auto())),
            "sparse_prob",
        ),
        (
            Box::new(|| Box::new(wgflow::nn::metrics::Accuracy::auto())),
            "onehot_prob",
        ),
        (Box::new(|| Box::new(Precision::new())), "bin"),
        (Box::new(|| Box::new(Recall::new())), "bin"),
        (
            Box::new(|| Box::new(Precision::new().threshold(0.3).named("p3"))),
            "bin",
        ),
        (Box::new(|| Box::new(Recall::new().class_id(2))), "bin"),
        (Box::new(|| Box::new(Precision::new().top_k(2))), "onehot_prob"),
        (
            Box::new(|| Box::new(Recall::new().top_k(1).threshold(0.1).named("r1"))),
            "onehot_prob",
        ),
        (Box::new(|| Box::new(Precision::new().top_k(2).class_id(1))), "bin"),
        (Box::new(|| Box::new(Precision::new().top_k(1).threshold(0.0))), "bin"),
        (Box::new(|| Box::new(Precision::new())), "bcol"),
        (Box::new(|| Box::new(AUC::new())), "bin"),
        (Box::new(|| Box::new(AUC::new().num_thresholds(7))), "bin"),
        (Box::new(|| Box::new(AUC::new().curve(Curve::Pr))), "bin"),
        (
            Box::new(|| Box::new(AUC::new().curve(Curve::Pr).summation(Summation::Majoring))),
            "bin",
        ),
        (Box::new(|| Box::new(AUC::new().summation(Summation::Minoring))), "bin"),
        (Box::new(|| Box::new(AUC::new().from_logits(true))), "bin_logit"),
        (Box::new(|| Box::new(AUC::new().multi_label(true))), "bin"),
        (
            Box::new(|| {
                Box::new(
                    AUC::new()
                        .multi_label(true)
                        .curve(Curve::Pr)
                        .label_weights(&[1.0, 0.5, 2.0]),
                )
            }),
            "bin",
        ),
        (Box::new(|| Box::new(AUC::new())), "bcol"),
        (
            Box::new(|| Box::new(TopKCategoricalAccuracy::new().k(2))),
            "onehot_prob",
        ),
        (Box::new(|| Box::new(TopKCategoricalAccuracy::new())), "onehot_prob"),
        (
            Box::new(|| Box::new(SparseTopKCategoricalAccuracy::new().k(3))),
            "sparse_reg",
        ),
        (
            Box::new(|| Box::new(SparseTopKCategoricalAccuracy::new().k(1).named("top1"))),
            "sparse_prob",
        ),
        (Box::new(|| Box::new(SparseTopKCategoricalAccuracy::new().k(2))), "tie"),
        (Box::new(|| Box::new(F1Score::new(Average::Macro))), "onehot_prob"),
        (Box::new(|| Box::new(F1Score::new(Average::Micro))), "onehot_prob"),
        (Box::new(|| Box::new(F1Score::new(Average::Weighted))), "onehot_reg"),
        (
            Box::new(|| Box::new(F1Score::new(Average::Macro).threshold(0.4))),
            "bin",
        ),
        (
            Box::new(|| Box::new(FBetaScore::new(Average::Weighted, 2.0).threshold(0.5))),
            "bin",
        ),
        (
            Box::new(|| Box::new(FBetaScore::new(Average::Micro, 0.5))),
            "onehot_prob",
        ),
        (Box::new(|| Box::new(IoU::mean(5).sparse_y_pred(false))), "sparse_prob"),
        (
            Box::new(|| Box::new(IoU::new(5, &[1, 3]).sparse_y_true(false).sparse_y_pred(false))),
            "onehot_prob",
        ),
        (
            Box::new(|| Box::new(IoU::mean(4).ignore_class(2).sparse_y_pred(false))),
            "tie",
        ),
        (Box::new(|| Box::new(IoU::binary(&[0, 1], 0.5))), "bin"),
        (Box::new(|| Box::new(IoU::binary(&[1], 0.3))), "bcol"),
    ];
    let mut spec = Vec::new();
    for (l, set) in &losses {
        let (t, p) = pair(set);
        spec.push(serde_json::json!({"what": "loss", "config": l.keras_config(),
            "y_true": [format!("{t}0.npy")], "y_pred": [format!("{p}0.npy")]}));
    }
    for (m, set) in &metrics {
        let (t, p) = pair(set);
        let config = m()
            .keras_config()
            .unwrap_or_else(|| panic!("{} has no Keras config", m().name()));
        spec.push(serde_json::json!({"what": "metric", "config": config,
            "y_true": [format!("{t}0.npy"), format!("{t}1.npy")], "y_pred": [format!("{p}0.npy"), format!("{p}1.npy")]}));
    }
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = py(&python, "keras_losses.py", &[&spec_path, &dir]);
    let want: Vec<f64> = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(want.len(), spec.len());
    for d in devices() {
        let get = |name: String| data[&name].to_device(&d).unwrap();
        let mut got = Vec::new();
        for (l, set) in &losses {
            let (t, p) = pair(set);
            got.push((
                l.name().to_string(),
                l.call(&get(format!("{t}0")), &get(format!("{p}0")))
                    .unwrap()
                    .item()
                    .unwrap(),
            ));
        }
        for (m, set) in &metrics {
            let (t, p) = pair(set);
            let mut m = m();
            for b in 0..2 {
                m.update_state(&get(format!("{t}{b}")), &get(format!("{p}{b}")))
                    .unwrap();
            }
            got.push((m.name().to_string(), m.result().unwrap()));
            // reset_state starts over; an empty batch adds nothing.
            m.reset_state();
            assert_eq!(m.result().unwrap(), 0.0, "{} after reset", m.name());
            if set.contains("reg") && !set.contains('_') {
                let e = Tensor::from_vec(Vec::<f32>::new(), &[0, 5], &d).unwrap();
                m.update_state(&e, &e).unwrap();
                let r = m.result().unwrap();
                assert_eq!(r, 0.0, "{} after an empty batch", m.name());
            }
        }
        for (i, ((name, g), w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-5 + 2e-4 * w.abs(),
                "{name} (case {i}, {}) on {d}: wgflow {g}, Keras {w}",
                spec[i]["config"]
            );
        }
    }
}

/// Every reduction, with and without sample weights (`[n]`, `[n, 1]`,
/// zeros and negative weights among them), gives Keras' values: the
/// reduced loss, or with `none` the weighted values themselves.
#[test]
fn weighted_losses_and_reductions_match_keras() {
    use wgflow::nn::losses::*;
    let Some(python) = python() else { return };
    let dir = tmp("weighted-losses");
    let mut data = std::collections::HashMap::new();
    let mut put = |name: &str, t: Tensor| {
        save_npy(&dir.join(format!("{name}.npy")), &t.cast(DType::F32).unwrap());
        data.insert(name.to_string(), t);
    };
    put("reg_t", randn(&[11, 4], 1, DType::F32));
    put("reg_p", randn(&[11, 4], 2, DType::F32));
    put("col_t", randn(&[11], 3, DType::F32));
    put("col_p", randn(&[11, 1], 4, DType::F32));
    put("flat_t", randn(&[11], 5, DType::F32));
    put("flat_p", randn(&[11], 6, DType::F32));
    let labels = randint(&[11], 0, 4, 7);
    put(
        "onehot_t",
        wgflow::ops::layout::one_hot(&labels, 4, 1.0, 0.0, DType::F32).unwrap(),
    );
    put("sparse_t", labels);
    put("logit_p", randn(&[11, 4], 8, DType::F32).mul_scalar(2.0).unwrap());
    put("bin_t", randint(&[11, 4], 0, 2, 9).cast(DType::F32).unwrap());
    put("prob_p", uniform(&[11, 4], 0.0, 1.0, 10, DType::F32));
    let mut w = uniform(&[11], 0.0, 3.0, 11, DType::F32).to_vec::<f32>().unwrap();
    w[2] = 0.0;
    w[5] = -0.5;
    put("w", Tensor::from_vec(w.clone(), &[11], &Device::Cpu).unwrap());
    put("wcol", Tensor::from_vec(w, &[11, 1], &Device::Cpu).unwrap());
    put("zero", Tensor::zeros(&[11], DType::F32, &Device::Cpu).unwrap());
    type MakeLoss = fn() -> Box<dyn Loss>;
    let losses: Vec<(MakeLoss, &str, &str)> = vec![
        (|| Box::new(MeanSquaredError), "reg_t", "reg_p"),
        (|| Box::new(MeanSquaredError), "col_t", "col_p"),
        (|| Box::new(MeanSquaredError), "flat_t", "flat_p"),
        (|| Box::new(MeanAbsoluteError), "reg_t", "reg_p"),
        (|| Box::new(Huber { delta: 0.5 }), "reg_t", "reg_p"),
        (|| Box::new(LogCosh), "reg_t", "reg_p"),
        (|| Box::new(CosineSimilarity::default()), "reg_t", "reg_p"),
        (
            || Box::new(SparseCategoricalCrossentropy::new(true)),
            "sparse_t",
            "logit_p",
        ),
        (|| Box::new(CategoricalCrossentropy::new(true)), "onehot_t", "logit_p"),
        (|| Box::new(BinaryCrossentropy::new(false)), "bin_t", "prob_p"),
        (|| Box::new(Hinge), "bin_t", "logit_p"),
        (|| Box::new(KLDivergence), "onehot_t", "prob_p"),
    ];
    let reductions = [
        Reduction::SumOverBatchSize,
        Reduction::Sum,
        Reduction::Mean,
        Reduction::MeanWithSampleWeight,
        Reduction::None,
    ];
    let mut spec = Vec::new();
    let mut cases = Vec::new();
    for (make, t, p) in &losses {
        for r in reductions {
            for sw in [None, Some("w"), Some("wcol"), Some("zero")] {
                let l = make().with_reduction(r);
                spec.push(serde_json::json!({"what": "loss", "config": l.keras_config(),
                    "y_true": [format!("{t}.npy")], "y_pred": [format!("{p}.npy")],
                    "sample_weight": sw.map(|s| format!("{s}.npy")), "flat": true}));
                cases.push((l, *t, *p, sw));
            }
        }
    }
    // Weighted metrics: the same weights, one batch each.
    use wgflow::nn::metrics::{
        AUC, Accuracy, Curve, MeanMetricWrapper, Metric, Precision, Recall, RootMeanSquaredError,
        SparseTopKCategoricalAccuracy,
    };
    type MakeMetric = fn() -> Box<dyn Metric>;
    let metrics: Vec<(MakeMetric, &str, &str)> = vec![
        (|| Box::new(Accuracy::auto()), "sparse_t", "logit_p"),
        (|| Box::new(Accuracy::auto()), "onehot_t", "logit_p"),
        (|| Box::new(Accuracy::binary(0.5)), "bin_t", "prob_p"),
        (|| Box::new(Accuracy::auto()), "col_t", "col_p"),
        (
            || Box::new(MeanMetricWrapper::new("mse", MeanSquaredError)),
            "reg_t",
            "reg_p",
        ),
        (
            || Box::new(MeanMetricWrapper::new("xent", BinaryCrossentropy::new(true))),
            "bin_t",
            "logit_p",
        ),
        (|| Box::new(RootMeanSquaredError::new()), "reg_t", "reg_p"),
        (|| Box::new(RootMeanSquaredError::new()), "col_t", "col_p"),
        (|| Box::new(Precision::new()), "bin_t", "prob_p"),
        (|| Box::new(Recall::new().class_id(2)), "bin_t", "prob_p"),
        (|| Box::new(AUC::new()), "bin_t", "prob_p"),
        (|| Box::new(AUC::new().curve(Curve::Pr)), "bin_t", "prob_p"),
        (
            || Box::new(SparseTopKCategoricalAccuracy::new().k(2)),
            "sparse_t",
            "logit_p",
        ),
    ];
    let mut metric_cases = Vec::new();
    for (make, t, p) in &metrics {
        for sw in ["w", "wcol", "zero"] {
            let config = make().keras_config().unwrap();
            spec.push(serde_json::json!({"what": "metric", "config": config,
                "y_true": [format!("{t}.npy")], "y_pred": [format!("{p}.npy")],
                "sample_weight": format!("{sw}.npy"), "flat": true}));
            metric_cases.push((*make, *t, *p, sw));
        }
    }
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = py(&python, "keras_losses.py", &[&spec_path, &dir]);
    let want: Vec<Vec<f64>> = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(want.len(), cases.len() + metric_cases.len());
    for d in devices() {
        let get = |name: &str| data[name].to_device(&d).unwrap();
        for (i, ((make, t, p, sw), w)) in metric_cases.iter().zip(&want[cases.len()..]).enumerate() {
            let mut m = make();
            m.update_state_weighted(&get(t), &get(p), Some(&get(sw))).unwrap();
            let got = m.result().unwrap();
            assert!(
                (got - w[0]).abs() <= 2e-5 + 2e-4 * w[0].abs(),
                "weighted metric {} ({t}/{p}, weights {sw}) on {d}: wgflow {got}, Keras {}",
                spec[cases.len() + i]["config"],
                w[0]
            );
        }
        // Weights that do not broadcast name the metric.
        let mut m = Accuracy::auto();
        let bad = Tensor::ones(&[5], DType::F32, &d).unwrap();
        let e = m
            .update_state_weighted(&get("sparse_t"), &get("logit_p"), Some(&bad))
            .unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
    }
    for d in devices() {
        let get = |name: &str| data[name].to_device(&d).unwrap();
        for (i, ((l, t, p, sw), w)) in cases.iter().zip(&want).enumerate() {
            let weight = sw.map(get);
            let v = l.call_weighted(&get(t), &get(p), weight.as_ref()).unwrap();
            let got = v.to_f64_vec().unwrap();
            assert_eq!(
                got.len(),
                w.len(),
                "case {i} ({}) on {d}: shape {:?}",
                spec[i]["config"],
                v.shape()
            );
            for (g, w) in got.iter().zip(w) {
                assert!(
                    (g - w).abs() <= 2e-5 + 2e-4 * w.abs(),
                    "case {i} ({} on {t}/{p}, weights {sw:?}) on {d}: wgflow {g}, Keras {w}",
                    spec[i]["config"]
                );
            }
        }
        // Weights that do not broadcast to the values name the loss.
        let bad = Tensor::ones(&[5], DType::F32, &d).unwrap();
        let e = MeanSquaredError
            .call_weighted(&get("reg_t"), &get("reg_p"), Some(&bad))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Shape {
                    op: "mean_squared_error",
                    ..
                }
            ),
            "{e}"
        );
    }
}

/// Keras files compiled with the losses and metrics wgflow has come back
/// compiled with them (options included); metrics wgflow lacks are
/// skipped, and a loss option it lacks leaves the model uncompiled.
#[test]
fn keras_compile_configs_with_other_losses_and_metrics() {
    let d = Device::Cpu;
    let dir = tmp("compile-configs");
    let mut base = mlp(&d);
    base.compile(
        Adam::new(1e-3),
        SparseCategoricalCrossentropy::new(true),
        SparseCategoricalAccuracy::new(),
    );
    let good = dir.join("base.keras");
    base.save(&good).unwrap();
    let cases = [
        (
            serde_json::json!({"module": "keras.losses", "class_name": "Huber", "config": {"name": "huber_loss", "reduction": "sum_over_batch_size", "delta": 2.5}}),
            serde_json::json!(["mse", {"module": "keras.metrics", "class_name": "AUC", "config": {"name": "my_auc", "num_thresholds": 50, "curve": "PR"}},
                "precision", {"class_name": "Recall", "config": {"name": "r", "thresholds": [0.7], "class_id": 3}},
                "root_mean_squared_error", "top_k_categorical_accuracy", {"class_name": "F1Score", "config": {}}]),
            Some((
                "huber",
                vec![
                    "mse",
                    "my_auc",
                    "precision",
                    "r",
                    "root_mean_squared_error",
                    "top_k_categorical_accuracy",
                ],
            )),
        ),
        (
            serde_json::json!({"class_name": "CategoricalCrossentropy", "config": {"from_logits": true, "label_smoothing": 0.1}}),
            serde_json::json!(["accuracy", "kld", "categorical_crossentropy"]),
            Some(("categorical_crossentropy", vec!["accuracy", "categorical_crossentropy"])),
        ),
        (
            serde_json::json!("log_cosh"),
            serde_json::json!([]),
            Some(("log_cosh", vec![])),
        ),
        // Functions as Keras serializes them; a metric Keras would refuse
        // and one past wgflow's limits are left out.
        (
            serde_json::json!({"class_name": "function", "config": "huber"}),
            serde_json::json!([{"class_name": "function", "config": "mae"}, "AUC",
                {"class_name": "Precision", "config": {"thresholds": 1.5}},
                {"class_name": "AUC", "config": {"num_thresholds": 1000000000}},
                {"class_name": "Accuracy", "config": {"name": "exact"}}]),
            Some(("huber", vec!["mae", "AUC", "exact"])),
        ),
        (
            serde_json::json!({"class_name": "BinaryCrossentropy", "config": {"label_smoothing": 1.5}}),
            serde_json::json!([]),
            None,
        ),
        (
            serde_json::json!({"class_name": "Huber", "config": {"reduction": "sum"}}),
            serde_json::json!([]),
            Some(("huber", vec![])),
        ),
        // Keras writes reduction=None as null.
        (
            serde_json::json!({"class_name": "MeanSquaredError", "config": {"reduction": null}}),
            serde_json::json!([]),
            Some(("mean_squared_error", vec![])),
        ),
        (
            serde_json::json!({"class_name": "MeanSquaredError", "config": {"reduction": "max"}}),
            serde_json::json!([]),
            None,
        ),
        (
            serde_json::json!({"class_name": "SparseCategoricalCrossentropy", "config": {"ignore_class": 0}}),
            serde_json::json!([]),
            None,
        ),
    ];
    for (i, (loss, metrics, want)) in cases.into_iter().enumerate() {
        let p = dir.join(format!("case{i}.keras"));
        let (l, m) = (loss.clone(), metrics.clone());
        rezip(&good, &p, move |name, b| {
            if name != "config.json" {
                return Some(b);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            v["compile_config"]["loss"] = l.clone();
            v["compile_config"]["metrics"] = m.clone();
            Some(v.to_string().into_bytes())
        });
        let m = load_model_on(&p, &d).unwrap();
        match want {
            None => assert!(m.compiled_ref().is_none(), "case {i}: {loss} compiled anyway"),
            Some((loss_name, metric_names)) => {
                let c = m
                    .compiled_ref()
                    .unwrap_or_else(|| panic!("case {i}: {loss} left the model uncompiled"));
                assert_eq!(c.loss.name(), loss_name, "case {i}");
                let names: Vec<&str> = c.metrics.iter().map(|m| m.name()).collect();
                assert_eq!(names, metric_names, "case {i}");
                if i == 0 {
                    assert_eq!(c.loss.keras_config()["config"]["delta"], 2.5);
                    let auc = c.metrics[1].keras_config().unwrap();
                    assert_eq!(auc["config"]["num_thresholds"], 50, "{auc}");
                    assert_eq!(auc["config"]["curve"], "PR", "{auc}");
                    let r = c.metrics[3].keras_config().unwrap();
                    assert_eq!(
                        (r["config"]["thresholds"].as_f64(), r["config"]["class_id"].as_u64()),
                        (Some(0.7), Some(3)),
                        "{r}"
                    );
                }
                if i == 1 {
                    let l = c.loss.keras_config();
                    assert_eq!(
                        (
                            l["config"]["from_logits"].as_bool(),
                            l["config"]["label_smoothing"].as_f64()
                        ),
                        (Some(true), Some(0.1)),
                        "{l}"
                    );
                }
                use wgflow::nn::losses::Reduction;
                let want_reduction = match loss.get("config").and_then(|c| c.get("reduction")) {
                    Some(serde_json::Value::Null) => Reduction::None,
                    Some(r) if r == "sum" => Reduction::Sum,
                    _ => Reduction::SumOverBatchSize,
                };
                assert_eq!(c.loss.reduction(), want_reduction, "case {i}");
                // It saves and loads back the same.
                let again = dir.join(format!("again{i}.keras"));
                m.save(&again).unwrap();
                let back = load_model_on(&again, &d).unwrap();
                let bc = back.compiled_ref().unwrap();
                assert_eq!(bc.loss.keras_config(), c.loss.keras_config(), "case {i}");
                let cfg = |c: &wgflow::nn::model::Compiled| -> Vec<Option<serde_json::Value>> {
                    c.metrics.iter().map(|m| m.keras_config()).collect()
                };
                assert_eq!(cfg(bc), cfg(c), "case {i}");
            }
        }
    }
}

/// wgflow's version of keras_files.py's "branches" model: a layer shared at
/// two depths, every merge layer, a concatenation with the input.
fn branches(d: &Device) -> Sequential {
    use wgflow::nn::Functional;
    use wgflow::nn::layers::{Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract};
    set_random_seed(21);
    let mut f = Functional::new();
    let v = f.input(&[6]).unwrap();
    let a = f.call(Dense::new(8).activation(Activation::Relu), &[v]).unwrap();
    let shared = f.layer(Dense::new(8).activation(Activation::Tanh));
    let b = f.apply(shared, &[a]).unwrap();
    let c = f.apply(shared, &[b]).unwrap();
    let s = f.call(Add::new(), &[a, b, c]).unwrap();
    let dd = f.call(Subtract::new(), &[s, c]).unwrap();
    let e = f.call(Multiply::new(), &[dd, b]).unwrap();
    let g = f.call(Average::new(), &[e, a, s]).unwrap();
    let g = f.call(Maximum::new(), &[g, c]).unwrap();
    let k = f.call(Minimum::new(), &[g, s]).unwrap();
    let side = f.call(Dense::new(3), &[v]).unwrap();
    let k = f.call(Concatenate::new(1), &[k, v, side]).unwrap();
    let y = f.call(Dense::new(4).activation(Activation::Softmax), &[k]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[6], d).unwrap();
    m
}

/// A residual CNN: two convolutions and a batch normalization beside a
/// skip connection, then a concatenated 1x1 branch.
fn resnet(d: &Device) -> Sequential {
    use wgflow::nn::Functional;
    use wgflow::nn::layers::{ActivationLayer, Add, Concatenate};
    set_random_seed(22);
    let mut f = Functional::new();
    let x = f.input(&[8, 8, 3]).unwrap();
    let same = |c: usize, k: usize| Conv2D::new(c, [k, k]).padding("same").unwrap();
    let h = f.call(same(8, 3).activation(Activation::Relu), &[x]).unwrap();
    let r = f.call(same(8, 3).activation(Activation::Relu), &[h]).unwrap();
    let r = f.call(BatchNormalization::new(), &[r]).unwrap();
    let r = f.call(same(8, 3), &[r]).unwrap();
    let h = f.call(Add::new(), &[h, r]).unwrap();
    let h = f.call(ActivationLayer::new(Activation::Relu), &[h]).unwrap();
    let h = f.call(MaxPooling2D::new([2, 2]), &[h]).unwrap();
    let side = f
        .call(Conv2D::new(4, [1, 1]).activation(Activation::Tanh), &[h])
        .unwrap();
    let h = f.call(Concatenate::new(-1), &[h, side]).unwrap();
    let h = f.call(wgflow::nn::layers::UpSampling2D::new([1, 2]), &[h]).unwrap();
    let h = f.call(GlobalAveragePooling2D::new(), &[h]).unwrap();
    let y = f.call(Dense::new(10), &[h]).unwrap();
    let mut m = f.build(y).unwrap();
    m.build(&[8, 8, 3], d).unwrap();
    randomize_moving_stats(&m, d);
    m
}

/// Functional models (branches, every merge layer, shared layers) both
/// ways: Keras-trained ones load in wgflow, predict what Keras predicts and
/// train on; wgflow's load in Keras with every weight in place.
#[test]
fn keras_functional_models_both_ways() {
    let Some(python) = python() else { return };
    let dir = tmp("graph");
    let out = run(&python, &["graph", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    let keras_layers = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} [")))
            .unwrap_or_else(|| panic!("{out}"));
        line[name.len() + 1..].to_string()
    };
    let listed = |m: &Sequential| {
        let mut kinds = vec!["'InputLayer'".to_string()];
        kinds.extend(m.layers().iter().map(|l| format!("'{}'", l.kind())));
        format!("[{}]", kinds.join(", "))
    };
    for d in devices() {
        for (name, prefix, classes) in [("resnet", "x", 10usize), ("branches", "xv", 4), ("unet", "x", 5)] {
            for ext in ["keras", "h5"] {
                let file = format!("{name}.{ext}");
                let mut m = load_model_on(dir.join(&file), &d).unwrap();
                assert!(m.is_functional(), "{file}");
                assert_eq!(listed(&m), keras_layers(name), "{file}: layers in Keras' order");
                assert!(m.summary().contains("Connected to"), "{}", m.summary());
                for b in [1usize, 7, 64] {
                    let (shape, x) = load_npy(&dir.join(format!("{prefix}{b}.npy")));
                    let (_, want) = load_npy(&dir.join(format!("keras_{name}_{b}.npy")));
                    let got = m.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
                    assert_eq!(got.shape(), &[b, classes]);
                    let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
                    assert_close(
                        &got.to_vec::<f32>().unwrap(),
                        &want,
                        tol,
                        &format!("{file} on {d}, batch {b}"),
                    );
                }
                // The compile config came along: training goes on.
                let (shape, x) = load_npy(&dir.join(format!("{prefix}64.npy")));
                let x = Tensor::from_vec(x, &shape, &d).unwrap();
                let y = randint(&[64], 0, classes as i32, 5);
                let args = FitArgs {
                    batch_size: 16,
                    epochs: 6,
                    verbose: false,
                    device: Some(d.clone()),
                    ..FitArgs::default()
                };
                let l = m.fit(&x, &y, args).unwrap().get("loss").unwrap().to_vec();
                assert!(l[5] < l[0], "{file} on {d}: loss {l:?}");
            }
        }
    }
    // Keras accepts a functional config's layers in any order and numbers
    // the weights in its own: a shuffled list loads with every weight in
    // place.
    for name in ["branches", "resnet", "unet"] {
        let shuffled = dir.join(format!("{name}_shuffled.keras"));
        rezip(&dir.join(format!("{name}.keras")), &shuffled, |file, b| {
            if file != "config.json" {
                return Some(b);
            }
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            let layers = v["config"]["layers"].as_array_mut().unwrap();
            layers.reverse();
            Some(v.to_string().into_bytes())
        });
        let prefix = if name == "branches" { "xv" } else { "x" };
        let mut m = load_model_on(&shuffled, &Device::Cpu).unwrap();
        let (shape, x) = load_npy(&dir.join(format!("{prefix}7.npy")));
        let (_, want) = load_npy(&dir.join(format!("keras_{name}_7.npy")));
        let got = m
            .predict(&Tensor::from_vec(x, &shape, &Device::Cpu).unwrap(), 7)
            .unwrap();
        assert_close(
            &got.to_vec::<f32>().unwrap(),
            &want,
            1e-5,
            &format!("{name} with its layers reversed"),
        );
    }
    // Several inputs and outputs, in Keras' order (the model takes `meta`
    // first): each output as Keras predicts it; `call` with one tensor is
    // an error that says what to use.
    for d in devices() {
        for ext in ["keras", "h5"] {
            let file = format!("multi.{ext}");
            let mut m = load_model_on(dir.join(&file), &d).unwrap();
            assert_eq!(m.input_names(), ["meta", "image"], "{file}");
            for b in [1usize, 7, 64] {
                let (sv, xv) = load_npy(&dir.join(format!("xv{b}.npy")));
                let (sx, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let xs = [
                    Tensor::from_vec(xv, &sv, &d).unwrap(),
                    Tensor::from_vec(x, &sx, &d).unwrap(),
                ];
                let got = m.predict_many(&xs, 32).unwrap();
                assert_eq!(got.len(), 2);
                for (k, g) in got.iter().enumerate() {
                    let (shape, want) = load_npy(&dir.join(format!("keras_multi_{b}_{k}.npy")));
                    assert_eq!(g.shape(), shape.as_slice());
                    let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
                    assert_close(
                        &g.to_vec::<f32>().unwrap(),
                        &want,
                        tol,
                        &format!("{file} output {k} on {d}, batch {b}"),
                    );
                }
                let e = m.call(&xs[0], false).unwrap_err();
                assert!(e.to_string().contains("call_many"), "{e}");
                let e = m.predict_many(&xs[..1], 8).unwrap_err();
                assert!(e.to_string().contains("2 inputs"), "{e}");
            }
        }
    }
    // The file's compile (a loss and metrics per output, loss weights)
    // came along: evaluate_many reports what Keras' evaluate does, and
    // fit_many trains on.
    let line = out
        .lines()
        .find(|l| l.starts_with("multi_eval "))
        .unwrap_or_else(|| panic!("{out}"));
    let keras_eval: serde_json::Value = serde_json::from_str(&line["multi_eval ".len()..]).unwrap();
    let data = |n: &str, d: &Device| {
        let (shape, v) = load_npy(&dir.join(format!("{n}.npy")));
        Tensor::from_vec(v, &shape, d).unwrap()
    };
    for d in devices() {
        let mut m = load_model_on(dir.join("multi.keras"), &d).unwrap();
        let xs = [data("mx", &d), data("mimg", &d)];
        let ys = [data("my0", &d), data("my1", &d)];
        let logs = m.evaluate_many(&xs, &ys, 64).unwrap();
        let keys: Vec<&str> = logs.iter().map(|(k, _)| k.as_str()).collect();
        let want = keras_eval.as_object().unwrap();
        assert_eq!(keys.len(), want.len(), "{keys:?} against {want:?}");
        for (k, v) in &logs {
            let w = want
                .get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or_else(|| panic!("{k} not in {want:?}"));
            assert!(
                (v - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{k} on {d}: {v} against Keras' {w}"
            );
        }
        let args = FitArgs {
            batch_size: 16,
            epochs: 4,
            verbose: false,
            device: Some(d.clone()),
            ..FitArgs::default()
        };
        let h = m.fit_many(&xs, &ys, args).unwrap();
        let l = h.get("loss").unwrap();
        assert!(l[3] < l[0], "{l:?}");
        for (k, _) in &logs {
            assert!(h.get(k).is_some(), "{k} missing from the history");
        }
    }

    // wgflow's functional models in Keras, and back in wgflow.
    let d = Device::Cpu;
    let mut models = [
        ("wg_branches", "xv", branches(&d)),
        ("wg_resnet", "x", resnet(&d)),
        ("wg_decoder", "xm", decoder(&d, 51)),
    ];
    for b in [1usize, 7, 64] {
        let x = uniform(&[b, 28, 28, 1], 0.0, 1.0, 70 + b as u64, DType::F32);
        save_npy(&dir.join(format!("xm{b}.npy")), &x);
    }
    models[0].2.compile(
        Adam::new(1e-2),
        wgflow::nn::losses::SparseCategoricalCrossentropy::new(false),
        SparseCategoricalAccuracy::new(),
    );
    let (shape, x) = load_npy(&dir.join("xv64.npy"));
    let x = Tensor::from_vec(x, &shape, &d).unwrap();
    let args = FitArgs {
        batch_size: 16,
        epochs: 2,
        verbose: false,
        ..FitArgs::default()
    };
    models[0].2.fit(&x, &randint(&[64], 0, 4, 6), args).unwrap();
    let mut files = Vec::new();
    for (name, prefix, m) in &models {
        for ext in ["keras", "h5"] {
            m.save(dir.join(format!("{name}.{ext}"))).unwrap();
            files.push(format!("{name}.{ext}:{prefix}"));
        }
    }
    let mut args = vec!["load", dir.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let out = run(&python, &args);
    assert!(out.contains("OK"), "{out}");
    for (name, prefix, m) in &mut models {
        assert!(out.contains(&format!("{name}.keras {}", listed(m))), "{out}");
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("{prefix}{b}.npy")));
            let want = m
                .predict(&Tensor::from_vec(x.clone(), &shape, &d).unwrap(), 64)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for ext in ["keras", "h5"] {
                let (_, got) = load_npy(&dir.join(format!("kload_{name}_{ext}_{b}.npy")));
                assert_close(&got, &want, 1e-5, &format!("Keras on {name}.{ext}, batch {b}"));
                let mut back = load_model_on(dir.join(format!("{name}.{ext}")), &d).unwrap();
                let again = back
                    .predict(&Tensor::from_vec(x.clone(), &shape, &d).unwrap(), 64)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                assert_eq!(again, want, "{name}.{ext} back in wgflow, batch {b}");
            }
        }
    }
    assert!(out.contains("wg_branches.keras compiled Adam"), "{out}");

    // wgflow's model of two inputs and two outputs in Keras, both formats.
    let mut multi = two_towers(&d, 54);
    let mut feeds = Vec::new();
    for b in [1usize, 7, 64] {
        let img = uniform(&[b, 28, 28, 1], 0.0, 1.0, 80 + b as u64, DType::F32);
        let meta = uniform(&[b, 6], -1.0, 1.0, 90 + b as u64, DType::F32);
        save_npy(&dir.join(format!("ximage{b}.npy")), &img);
        save_npy(&dir.join(format!("xmeta{b}.npy")), &meta);
        feeds.push((b, vec![meta, img]));
    }
    for ext in ["keras", "h5"] {
        multi.save(dir.join(format!("wg_multi.{ext}"))).unwrap();
    }
    let out = run(
        &python,
        &[
            "load",
            dir.to_str().unwrap(),
            "wg_multi.keras:xmeta+ximage",
            "wg_multi.h5:xmeta+ximage",
        ],
    );
    assert!(out.contains("OK"), "{out}");
    for (b, xs) in &feeds {
        let want = multi.predict_many(xs, 64).unwrap();
        for ext in ["keras", "h5"] {
            for (k, w) in want.iter().enumerate() {
                let (shape, got) = load_npy(&dir.join(format!("kload_wg_multi_{ext}_{b}_{k}.npy")));
                assert_eq!(shape, w.shape());
                assert_close(
                    &got,
                    &w.to_vec::<f32>().unwrap(),
                    1e-5,
                    &format!("Keras on wg_multi.{ext} output {k}, batch {b}"),
                );
            }
            let mut back = load_model_on(dir.join(format!("wg_multi.{ext}")), &d).unwrap();
            assert_eq!(back.input_names(), ["meta", "image"]);
            let again = back.predict_many(xs, 64).unwrap();
            for (a, w) in again.iter().zip(&want) {
                assert_eq!(
                    a.to_vec::<f32>().unwrap(),
                    w.to_vec::<f32>().unwrap(),
                    "wg_multi.{ext} back in wgflow"
                );
            }
        }
    }
}

/// Recurrent layers both ways: Keras-trained LSTM, GRU (both reset forms)
/// and SimpleRNN models, forwards and backwards, load in wgflow, predict
/// what Keras predicts and train on; wgflow's load in Keras.
#[test]
fn keras_recurrent_models_both_ways() {
    use wgflow::nn::layers::{Bidirectional, GRU, LSTM, MergeMode, SimpleRNN};
    let Some(python) = python() else { return };
    let dir = tmp("rnn");
    let out = run(&python, &["rnn", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    for d in devices() {
        for file in ["lstm.keras", "lstm.h5", "gru.keras", "gru.h5", "bidi.keras", "bidi.h5"] {
            // The .h5 files hold the same models: once, on the CPU device.
            if d.is_gpu() && file.ends_with(".h5") {
                continue;
            }
            let name = file.split('.').next().unwrap();
            let mut m = load_model_on(dir.join(file), &d).unwrap();
            for b in [1usize, 7, 64] {
                let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let (_, want) = load_npy(&dir.join(format!("keras_{name}_{b}.npy")));
                let got = m.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
                assert_eq!(got.shape(), &[b, 4]);
                let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
                assert_close(
                    &got.to_vec::<f32>().unwrap(),
                    &want,
                    tol,
                    &format!("{file} on {d}, batch {b}"),
                );
            }
            if !matches!(file, "lstm.keras" | "gru.keras" | "bidi.keras") {
                continue;
            }
            let (shape, x) = load_npy(&dir.join("x64.npy"));
            let x = Tensor::from_vec(x, &shape, &d).unwrap();
            let args = FitArgs {
                batch_size: 16,
                epochs: 5,
                verbose: false,
                device: Some(d.clone()),
                ..FitArgs::default()
            };
            let l = m
                .fit(&x, &randint(&[64], 0, 4, 5), args)
                .unwrap()
                .get("loss")
                .unwrap()
                .to_vec();
            assert!(l[4] < l[0], "{file} on {d}: loss {l:?}");
        }
    }
    // wgflow's recurrent model in Keras.
    let d = Device::Cpu;
    set_random_seed(31);
    let mut m = Sequential::new()
        .add(LSTM::new(6).return_sequences(true).go_backwards(true))
        .add(GRU::new(5).return_sequences(true))
        .add(
            GRU::new(4)
                .reset_after(false)
                .return_sequences(true)
                .activation(Activation::Relu),
        )
        .add(Bidirectional::new(SimpleRNN::new(3).return_sequences(true)))
        .add(Bidirectional::new(LSTM::new(2)).merge_mode(MergeMode::Mul))
        .add(Dense::new(4));
    m.build(&[7, 3], &d).unwrap();
    // Biases away from their initial zeros and ones.
    for (n, v) in m.named_variables() {
        if n.ends_with("bias") {
            v.assign(&uniform(&v.shape(), -0.5, 0.5, 3, DType::F32)).unwrap();
        }
    }
    m.save(dir.join("wg_rnn.keras")).unwrap();
    m.save(dir.join("wg_rnn.h5")).unwrap();
    let out = run(&python, &["load", dir.to_str().unwrap(), "wg_rnn.keras", "wg_rnn.h5"]);
    assert!(
        out.contains("['LSTM', 'GRU', 'GRU', 'Bidirectional', 'Bidirectional', 'Dense']"),
        "{out}"
    );
    for b in [1usize, 7, 64] {
        let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
        let want = m
            .predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 64)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for ext in ["keras", "h5"] {
            let (_, got) = load_npy(&dir.join(format!("kload_wg_rnn_{ext}_{b}.npy")));
            assert_close(&got, &want, 1e-5, &format!("Keras on wg_rnn.{ext}, batch {b}"));
        }
    }
}

/// An optimizer's state goes both ways in `.keras` files, RMSprop's too
/// (its slots grouped by kind, where Adam's go variable by variable): a
/// step after a load gives the same weights in Keras and in wgflow.
#[test]
fn optimizer_state_resumes_in_keras_and_back() {
    use wgflow::nn::optimizers::{Optimizer, RMSprop, SGD};
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let dir = tmp("resume");
    let x = uniform(&[16, 28, 28, 1], 0.0, 1.0, 3, DType::F32);
    let y = randint(&[16], 0, 10, 4);
    save_npy(&dir.join("x.npy"), &x);
    save_npy(&dir.join("y.npy"), &y.cast(DType::F32).unwrap());
    let optimizers: Vec<(&str, Optimizer)> = vec![
        ("rmsprop_momentum", RMSprop::new(1e-2).momentum(0.9).into()),
        ("rmsprop", RMSprop::new(1e-2).rho(0.8).into()),
        ("adam", Adam::new(1e-2).into()),
        ("sgd", SGD::new(0.1).momentum(0.9).into()),
    ];
    for (name, opt) in optimizers {
        let mut m = mlp(&d);
        m.compile(opt, SparseCategoricalCrossentropy::new(true), ());
        for _ in 0..3 {
            m.train_step(&x, &y).unwrap();
        }
        let file = format!("{name}.keras");
        m.save(dir.join(&file)).unwrap();
        let out = run(&python, &["resume", dir.to_str().unwrap(), &file, "x.npy", "y.npy"]);
        assert!(out.contains("OK") && out.contains("optimizer"), "{out}");
        assert!(
            out.contains(" 3\n") || out.contains(" 3\r"),
            "{name}: the step count: {out}"
        );
        // One step after the load: Keras from wgflow's file, wgflow from its own.
        let mut back = load_model_on(dir.join(&file), &d).unwrap();
        back.train_step(&x, &y).unwrap();
        let check = |m: &Sequential, tag: &str| {
            for (i, v) in m.variables().iter().enumerate() {
                let (_, want) = load_npy(&dir.join(format!("{tag}_{i}.npy")));
                assert_close(
                    &v.value().to_vec::<f32>().unwrap(),
                    &want,
                    1e-5,
                    &format!("{name}: {tag} weight {i}"),
                );
            }
        };
        check(&back, "resume1");
        // And a second step from the file Keras wrote after its first.
        let mut again = load_model_on(dir.join("resumed.keras"), &d).unwrap();
        assert_eq!(
            again.compiled_ref().map(|c| c.optimizer.iterations()),
            Some(4),
            "{name}"
        );
        again.train_step(&x, &y).unwrap();
        check(&again, "resume2");
    }
}

/// `keras.applications` models (random weights, small inputs) load and
/// compute what Keras computes: MobileNet (`keepdims` pooling),
/// MobileNetV3Small (operations on tensors such as `x + 3`, `hard_silu`,
/// `training=False` calls), EfficientNetB0 (an adapted `Normalization`,
/// `Dropout` with `noise_shape`). A model of those layers and operations
/// (with `Cropping2D`, fixed-statistics `Normalization` and more Keras
/// activations) goes both ways.
#[test]
fn keras_applications_and_operations_on_tensors() {
    let Some(python) = python() else { return };
    let dir = tmp("apps");
    let out = run(&python, &["apps", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    for d in devices() {
        for name in ["mobilenet", "mobilenet_v3", "efficientnet"] {
            let mut m = load_model_on(dir.join(format!("{name}.keras")), &d).unwrap();
            let (shape, x) = load_npy(&dir.join(format!("{name}_x.npy")));
            let (want_shape, want) = load_npy(&dir.join(format!("keras_{name}.npy")));
            let got = m.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 2).unwrap();
            assert_eq!(got.shape(), want_shape.as_slice(), "{name}");
            // Hundreds of layers: a looser bound than one layer's.
            let tol = if d.is_gpu() { 5e-4 } else { 1e-4 };
            assert_close(&got.to_vec::<f32>().unwrap(), &want, tol, &format!("{name} on {d}"));
        }
        for ext in ["keras", "h5"] {
            let mut m = load_model_on(dir.join(format!("ops.{ext}")), &d).unwrap();
            let kinds: Vec<&str> = m.layers().iter().map(|l| l.kind()).collect();
            for k in [
                "Subtract",
                "Multiply",
                "Maximum",
                "Divide",
                "Normalization",
                "Cropping2D",
                "Relu",
                "Gelu",
                "LeakyRelu",
                "Softmax",
                "Exp",
            ] {
                assert!(kinds.contains(&k), "{k} in {kinds:?}");
            }
            let mut xs = Vec::new();
            for b in [1usize, 7, 64] {
                let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let (_, want) = load_npy(&dir.join(format!("keras_ops_{b}.npy")));
                let x = Tensor::from_vec(x, &shape, &d).unwrap();
                let got = m.predict(&x, 32).unwrap();
                assert_eq!(got.shape(), &[b, 4]);
                let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
                let what = format!("ops.{ext} on {d}, batch {b}");
                assert_close(&got.to_vec::<f32>().unwrap(), &want, tol, &what);
                xs.push(x);
            }
            if !d.is_gpu() {
                let file = dir.join(format!("wg_ops.{ext}"));
                m.save(&file).unwrap();
                let mut back = load_model_on(&file, &d).unwrap();
                let again = back.predict(&xs[1], 32).unwrap().to_vec::<f32>().unwrap();
                assert_eq!(again, m.predict(&xs[1], 32).unwrap().to_vec::<f32>().unwrap());
            }
        }
    }
    // wgflow writes the operations' module in .h5 files too, so Keras loads both.
    let out = run(&python, &["load", dir.to_str().unwrap(), "wg_ops.keras", "wg_ops.h5"]);
    assert!(out.contains("OK"), "{out}");
    for ext in ["keras", "h5"] {
        for b in [1usize, 7, 64] {
            let (_, got) = load_npy(&dir.join(format!("kload_wg_ops_{ext}_{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_ops_{b}.npy")));
            assert_close(&got, &want, 1e-5, &format!("wgflow's ops.{ext} in Keras, batch {b}"));
        }
    }
}

/// Transfer learning as Keras does it: a functional model over a frozen
/// Sequential base (`base.trainable = False`, called with
/// `training=False`) and a functional block, fitted in Keras, loads nested
/// in wgflow, predicts the same, trains on without touching the base, and
/// goes back to Keras. A nested model built in Rust goes to Keras too;
/// legacy `.h5` files refuse nested models with a typed error.
#[test]
fn nested_models_and_frozen_layers_both_ways() {
    use wgflow::nn::layers::{Add, Layer};
    use wgflow::nn::{Functional, ModelLayer};
    let Some(python) = python() else { return };
    let dir = tmp("transfer");
    let out = run(&python, &["transfer", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    for d in devices() {
        let mut m = load_model_on(dir.join("transfer.keras"), &d).unwrap();
        let kinds: Vec<&str> = m.layers().iter().map(|l| l.kind()).collect();
        assert_eq!(kinds, ["Sequential", "Functional", "GlobalAveragePooling2D", "Dense"]);
        assert!(!m.layers()[0].trainable(), "the base is frozen");
        assert!(m.layers()[1].trainable());
        let tol = if d.is_gpu() { 1e-4 } else { 1e-5 };
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_transfer_{b}.npy")));
            let got = m.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
            assert_close(
                &got.to_vec::<f32>().unwrap(),
                &want,
                tol,
                &format!("transfer.keras on {d}, batch {b}"),
            );
        }
        let mut stacked = load_model_on(dir.join("stacked.keras"), &d).unwrap();
        assert!(!stacked.is_functional() && stacked.layers()[0].kind() == "Sequential");
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_stacked_{b}.npy")));
            let got = stacked.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
            assert_close(
                &got.to_vec::<f32>().unwrap(),
                &want,
                tol,
                &format!("stacked.keras on {d}, batch {b}"),
            );
        }
        let mut ends = load_model_on(dir.join("ends.keras"), &d).unwrap();
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("xv{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_ends_{b}.npy")));
            let got = ends.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
            assert_close(
                &got.to_vec::<f32>().unwrap(),
                &want,
                tol,
                &format!("ends.keras on {d}, batch {b}"),
            );
        }
        if !d.is_gpu() {
            ends.save(dir.join("wg_ends.keras")).unwrap();
        }
        // Augmentation is the identity in inference, its layers kept nested.
        let mut tut = load_model_on(dir.join("tutorial.keras"), &d).unwrap();
        let aug = tut.layers()[0]
            .as_any()
            .and_then(|a| a.downcast_ref::<ModelLayer>())
            .unwrap();
        let kinds: Vec<&str> = aug.model().layers().iter().map(|l| l.kind()).collect();
        assert_eq!(
            kinds,
            [
                "RandomFlip",
                "RandomRotation",
                "RandomZoom",
                "RandomTranslation",
                "RandomContrast",
                "RandomBrightness"
            ]
        );
        for b in [1usize, 7, 64] {
            let (shape, x) = load_npy(&dir.join(format!("xa{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_tutorial_{b}.npy")));
            let got = tut.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
            assert_close(
                &got.to_vec::<f32>().unwrap(),
                &want,
                tol,
                &format!("tutorial.keras on {d}, batch {b}"),
            );
        }
        if !d.is_gpu() {
            tut.save(dir.join("wg_tutorial.keras")).unwrap();
        }
        // Training draws every augmentation, traced as eagerly.
        let (xs64, x64) = load_npy(&dir.join("xa64.npy"));
        let (ys, y) = load_npy(&dir.join("y.npy"));
        let h = tut
            .fit(
                &Tensor::from_vec(x64, &xs64, &d).unwrap(),
                &Tensor::from_vec(y, &ys, &d).unwrap().cast(DType::I32).unwrap(),
                FitArgs {
                    batch_size: 16,
                    epochs: 2,
                    verbose: false,
                    ..FitArgs::default()
                },
            )
            .unwrap();
        assert!(h.get("loss").unwrap().iter().all(|l| l.is_finite()), "{:?}", h.history);
        // Keras' Adam state covers the block and the head only.
        assert_eq!(m.compiled_ref().map(|c| c.optimizer.iterations()), Some(8));
        assert_eq!(m.trainable_variables().len(), 4);
        let base: Vec<Vec<f32>> = m.layers()[0]
            .weights()
            .iter()
            .map(|(_, v)| v.value().to_vec::<f32>().unwrap())
            .collect();
        assert_eq!(base.len(), 6, "kernel, bias, gamma, beta and the two moving statistics");
        let head = m.layers()[3].weights()[0].1.value().to_vec::<f32>().unwrap();
        let (xs, x) = load_npy(&dir.join("xt.npy"));
        let (ys, y) = load_npy(&dir.join("y.npy"));
        let args = FitArgs {
            batch_size: 16,
            epochs: 2,
            verbose: false,
            ..FitArgs::default()
        };
        m.fit(
            &Tensor::from_vec(x, &xs, &d).unwrap(),
            &Tensor::from_vec(y, &ys, &d).unwrap().cast(DType::I32).unwrap(),
            args,
        )
        .unwrap();
        let after: Vec<Vec<f32>> = m.layers()[0]
            .weights()
            .iter()
            .map(|(_, v)| v.value().to_vec::<f32>().unwrap())
            .collect();
        assert_eq!(
            base, after,
            "training moved the frozen base (batch statistics included)"
        );
        assert_ne!(head, m.layers()[3].weights()[0].1.value().to_vec::<f32>().unwrap());
        let err = m.save(dir.join("nested.h5")).unwrap_err();
        assert!(matches!(err, Error::Unimplemented { .. }), "{err}");
        assert!(!dir.join("nested.h5").exists(), "nothing half-written");
        if !d.is_gpu() {
            // Exports see through the nesting: variables by path, one graph.
            let sm = dir.join("sm");
            m.export(&sm).unwrap();
            let mut loaded = wgflow::saved_model::load_with(&sm, &["serve"], &d).unwrap();
            let (shape, x) = load_npy(&dir.join("x7.npy"));
            let x = Tensor::from_vec(x, &shape, &d).unwrap();
            let want = m.predict(&x, 32).unwrap().to_vec::<f32>().unwrap();
            let got = loaded.call("serving_default", &[("inputs", x)]).unwrap();
            assert_close(
                &got[0].1.to_vec::<f32>().unwrap(),
                &want,
                1e-5,
                "the nested model's SavedModel",
            );
            m.save(dir.join("wg_transfer.keras")).unwrap();
            for b in [1usize, 7, 64] {
                let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
                let p = m.predict(&Tensor::from_vec(x, &shape, &d).unwrap(), 32).unwrap();
                save_npy(&dir.join(format!("wg_transfer_{b}.npy")), &p);
            }
        }
    }
    // A nested model built in Rust: a Sequential base under a functional head.
    set_random_seed(5);
    let mut base = Sequential::new()
        .add(Conv2D::new(3, [3, 3]).activation(Activation::Relu))
        .add(BatchNormalization::new());
    base.build(&[8, 8, 3], &Device::Cpu).unwrap();
    randomize_moving_stats(&base, &Device::Cpu);
    let mut inner = ModelLayer::new(base);
    inner.set_name("rust_base");
    inner.set_trainable(false).unwrap();
    let mut f = Functional::new();
    let x = f.input(&[8, 8, 3]).unwrap();
    let b = f.layer(inner);
    let h = f.apply_training(b, &[x], false).unwrap();
    let r = f.call(Conv2D::new(3, [1, 1]).padding("same").unwrap(), &[h]).unwrap();
    let h = f.call(Add::new(), &[h, r]).unwrap();
    let h = f.call(GlobalAveragePooling2D::new(), &[h]).unwrap();
    let y = f.call(Dense::new(2), &[h]).unwrap();
    let mut rust = f.build(y).unwrap();
    rust.build(&[8, 8, 3], &Device::Cpu).unwrap();
    assert_eq!(rust.trainable_variables().len(), 4);
    rust.save(dir.join("wg_rust.keras")).unwrap();
    let back = load_model_on(dir.join("wg_rust.keras"), &Device::Cpu).unwrap();
    assert!(!back.layers()[0].trainable());
    for b in [1usize, 7, 64] {
        let (shape, x) = load_npy(&dir.join(format!("x{b}.npy")));
        let p = rust
            .predict(&Tensor::from_vec(x, &shape, &Device::Cpu).unwrap(), 32)
            .unwrap();
        save_npy(&dir.join(format!("wg_rust_{b}.npy")), &p);
    }
    let out = run(
        &python,
        &[
            "load",
            dir.to_str().unwrap(),
            "wg_transfer.keras",
            "wg_rust.keras",
            "wg_ends.keras:xv",
            "wg_tutorial.keras:xa",
        ],
    );
    assert!(out.contains("OK"), "{out}");
    for name in ["ends", "tutorial"] {
        for b in [1usize, 7, 64] {
            let (_, got) = load_npy(&dir.join(format!("kload_wg_{name}_keras_{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("keras_{name}_{b}.npy")));
            assert_close(&got, &want, 1e-4, &format!("wgflow's {name}.keras in Keras, batch {b}"));
        }
    }
    for name in ["transfer", "rust"] {
        for b in [1usize, 7, 64] {
            let (_, got) = load_npy(&dir.join(format!("kload_wg_{name}_keras_{b}.npy")));
            let (_, want) = load_npy(&dir.join(format!("wg_{name}_{b}.npy")));
            assert_close(
                &got,
                &want,
                1e-5,
                &format!("wgflow's nested {name} in Keras, batch {b}"),
            );
        }
    }
}

/// `ops::image::affine_transform` computes what Keras' (TensorFlow's
/// `ImageProjectiveTransformV3`) does: rotations, scales, shifts past the
/// edges by several periods and projective rows, for every fill mode and
/// both interpolations, on every device.
#[test]
fn affine_transform_matches_keras() {
    use wgflow::nn::layers::{CenterCrop, Layer, Resizing};
    use wgflow::ops::image::{FillMode, affine_transform};
    let Some(python) = python() else { return };
    let dir = tmp("affine");
    let out = run(&python, &["affine", dir.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    let (is, images) = load_npy(&dir.join("images.npy"));
    let (ts, transforms) = load_npy(&dir.join("transforms.npy"));
    for d in devices() {
        let x = Tensor::from_vec(images.clone(), &is, &d).unwrap();
        let t = Tensor::from_vec(transforms.clone(), &ts, &d).unwrap();
        for fill in ["reflect", "wrap", "constant", "nearest"] {
            for (interp, bilinear) in [("bilinear", true), ("nearest", false)] {
                let (_, want) = load_npy(&dir.join(format!("affine_{fill}_{interp}.npy")));
                let mode = FillMode::from_name(fill).unwrap();
                let got = affine_transform(&x, &t, bilinear, mode, 0.5).unwrap();
                assert_eq!(got.shape(), x.shape());
                let what = format!("{fill} {interp} on {d}");
                assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-4, &what);
            }
        }
        for (oh, ow) in [(3usize, 4usize), (11, 13), (5, 7), (1, 1), (8, 2), (5, 9), (2, 7)] {
            for (interp, bilinear) in [("bilinear", true), ("nearest", false)] {
                let (_, want) = load_npy(&dir.join(format!("resize_{oh}x{ow}_{interp}.npy")));
                let got = wgflow::ops::image::resize(&x, [oh, ow], bilinear).unwrap();
                assert_eq!(got.shape(), &[6, oh, ow, 2]);
                let what = format!("resize to {oh}x{ow}, {interp}, on {d}");
                assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-5, &what);
                let (_, want) = load_npy(&dir.join(format!("crop_{oh}x{ow}_{interp}.npy")));
                let mut layer = Resizing::new(oh, ow);
                layer.bilinear = bilinear;
                layer.crop_to_aspect_ratio = true;
                let got = layer.call(&x, false).unwrap();
                let what = format!("Resizing({oh}, {ow}, crop_to_aspect_ratio), {interp}, on {d}");
                assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-5, &what);
            }
            let (_, want) = load_npy(&dir.join(format!("center_{oh}x{ow}.npy")));
            let got = CenterCrop::new(oh, ow).call(&x, false).unwrap();
            assert_eq!(got.shape(), &[6, oh, ow, 2]);
            let what = format!("CenterCrop({oh}, {ow}) on {d}");
            assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-5, &what);
        }
    }
}
