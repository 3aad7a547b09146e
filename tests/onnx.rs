//! ONNX export checked with the real tools (the Python venv `.ci/run`
//! creates; `WGFLOW_PYTHON` names its interpreter): `onnx.checker` with
//! `full_check=True` accepts the files, and ONNX Runtime computes what
//! wgflow predicts within 1e-4 for batches 1, 7 and 64, at opsets 13 and
//! 17; unsupported ops and opsets are typed errors.

mod common;
use common::*;
use std::path::PathBuf;
use wgflow::function::{ConcreteFunction, TensorSpec};
use wgflow::nn::layers::{
    AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D, MaxPooling2D,
};
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Error, ops};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgflow-onnx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every layer kind the exporter maps, with batch statistics that are not
/// the identity.
fn cnn(d: &Device) -> Sequential {
    set_random_seed(7);
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
        .add(Conv2D::new(8, [1, 1]).activation(Activation::Swish))
        // SAME with dilations: ONNX Runtime takes no auto_pad there, so the
        // padding is written out (4x4 here).
        .add(Conv2D::new(8, [3, 3]).dilation_rate([2, 2]).padding("same").unwrap())
        .add(GlobalAveragePooling2D::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    m.build(&[28, 28, 1], d).unwrap();
    randomize_moving_stats(&m, d);
    m
}

fn mlp(d: &Device) -> Sequential {
    set_random_seed(8);
    let mut m = Sequential::new()
        .add(Flatten::new())
        .add(Dense::new(32).activation(Activation::Tanh))
        .add(Dense::new(16).activation(Activation::Elu))
        .add(Dense::new(10));
    m.build(&[28, 28, 1], d).unwrap();
    m
}

/// A model of two inputs and two outputs: ONNX inputs named as its
/// `Input`s, in the model's order, and both outputs as wgflow computes them.
#[test]
fn onnx_runtime_runs_models_of_several_inputs_and_outputs() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let mut model = two_towers(&d, 56);
    let dir = tmp("multi-17");
    let file = dir.join("model.onnx");
    wgflow::onnx::export(&mut model, &file, 17).unwrap();
    let mut wants = Vec::new();
    for b in [1usize, 7, 64] {
        let meta = uniform(&[b, 6], -1.0, 1.0, 50 + b as u64, DType::F32);
        let image = uniform(&[b, 28, 28, 1], 0.0, 1.0, 60 + b as u64, DType::F32);
        save_npy(&dir.join(format!("x{b}_meta.npy")), &meta);
        save_npy(&dir.join(format!("x{b}_image.npy")), &image);
        wants.push((b, model.call_many(&[meta, image], false).unwrap()));
    }
    let bs = [PathBuf::from("1"), PathBuf::from("7"), PathBuf::from("64")];
    let mut args: Vec<&std::path::Path> = vec![&file, &dir];
    args.extend(bs.iter().map(PathBuf::as_path));
    let out = py(&python, "check_onnx.py", &args);
    assert!(out.contains("OK"), "{out}");
    assert!(out.contains("inputs ['meta', 'image']"), "{out}");
    for (b, want) in &wants {
        for (k, w) in want.iter().enumerate() {
            let (shape, got) = load_npy(&dir.join(format!("ort{b}_{k}.npy")));
            assert_eq!(shape, w.shape());
            assert_close(
                &got,
                &w.to_vec::<f32>().unwrap(),
                1e-4,
                &format!("output {k}, batch {b}"),
            );
        }
    }
}

#[test]
fn onnx_runtime_matches_wgflow_at_opsets_13_and_17() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    for (name, mut model) in [
        ("cnn", cnn(&d)),
        ("mlp", mlp(&d)),
        ("extra", extra_layers(&d, 9)),
        ("lnmlp", layer_norm_mlp(&d, 31)),
        ("residual", residual(&d, 45)),
        ("merges", merges(&d, 46)),
        ("decoder", decoder(&d, 50)),
    ] {
        for opset in [13, 17] {
            let dir = tmp(&format!("{name}-{opset}"));
            let file = dir.join("model.onnx");
            wgflow::onnx::export(&mut model, &file, opset).unwrap();
            let batches = [1usize, 7, 64];
            for (i, &b) in batches.iter().enumerate() {
                let x = uniform(&[b, 28, 28, 1], 0.0, 1.0, 20 + i as u64, DType::F32);
                save_npy(&dir.join(format!("x{b}.npy")), &x);
                save_npy(&dir.join(format!("want{b}.npy")), &model.call(&x, false).unwrap());
            }
            let bs: Vec<String> = batches.iter().map(|b| b.to_string()).collect();
            let mut args: Vec<&std::path::Path> = vec![&file, &dir];
            let bps: Vec<PathBuf> = bs.iter().map(PathBuf::from).collect();
            args.extend(bps.iter().map(PathBuf::as_path));
            let out = py(&python, "check_onnx.py", &args);
            assert!(out.contains("OK"), "{out}");
            let ir = if opset == 13 { 7 } else { 8 };
            assert!(out.contains(&format!("opset {opset} ir {ir}")), "{out}");
            assert!(out.contains("input inputs ['batch', 28, 28, 1]"), "{out}");
            let ops = if name == "cnn" {
                vec![
                    "'Conv'",
                    "'BatchNormalization'",
                    "'MaxPool'",
                    "'AveragePool'",
                    "'GlobalAveragePool'",
                    "'Transpose'",
                    "'Erf'",
                    "'Softmax'",
                    "'Gemm'",
                ]
            } else if name == "extra" {
                vec![
                    "'Pad'",
                    "'Mul'",
                    "'Add'",
                    "'Conv'",
                    "'Clip'",
                    "'ReduceMax'",
                    "'LeakyRelu'",
                    "'Reshape'",
                    "'Gemm'",
                ]
            } else if name == "residual" {
                vec!["'Conv'", "'Add'", "'MaxPool'", "'Gemm'"]
            } else if name == "merges" {
                vec![
                    "'Conv'", "'Add'", "'Sub'", "'Mul'", "'Div'", "'Max'", "'Min'", "'Concat'", "'Gemm'",
                ]
            } else if name == "decoder" {
                vec!["'Conv'", "'ConvTranspose'", "'Concat'", "'Tanh'", "'Gemm'"]
            } else if name == "lnmlp" {
                vec!["'ReduceMean'", "'Sub'", "'Mul'", "'Add'", "'Gemm'"]
            } else {
                vec!["'Gemm'", "'Reshape'", "'Tanh'", "'Elu'"]
            };
            for op in ops {
                assert!(out.contains(op), "{name} opset {opset}: no {op} in {out}");
            }
            for b in batches {
                let (shape, got) = load_npy(&dir.join(format!("ort{b}.npy")));
                let (_, want) = load_npy(&dir.join(format!("want{b}.npy")));
                assert_eq!(shape, vec![b, 10]);
                assert_close(
                    &got,
                    &want,
                    1e-4,
                    &format!("ONNX Runtime on {name} opset {opset}, batch {b}"),
                );
            }
        }
    }
}

#[test]
fn unsupported_ops_and_opsets_are_typed_errors() {
    let d = Device::Cpu;
    let mut m = mlp(&d);
    let dir = tmp("bad");
    for opset in [12, 18] {
        let e = wgflow::onnx::export(&mut m, dir.join("m.onnx"), opset).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("opset {opset}")), "{e}");
    }
    let spec = TensorSpec::new(&[None, Some(3)], DType::F32).named("x");
    let f = ConcreteFunction::trace("noisy", &[spec], &d, |x| {
        let n = ops::random_normal(&[3], 0.0, 1.0, DType::F32, 1, &d)?;
        Ok(vec![x[0].add(&n)?])
    })
    .unwrap();
    let e = wgflow::onnx::export_function(&f, dir.join("noisy.onnx"), 17).unwrap_err();
    assert!(matches!(e, Error::Unimplemented { .. }), "{e:?}");
    assert!(e.to_string().contains("random"), "{e}");
    assert!(!dir.join("noisy.onnx").exists(), "a failed export left a file");
}

/// A text model (`Embedding` as Cast and Gather, a causal `Conv1D`, 1-D
/// pooling) in ONNX Runtime, at both opsets.
#[test]
fn onnx_runtime_runs_text_models() {
    use wgflow::nn::layers::{Conv1D, Embedding, GlobalAveragePooling1D, MaxPooling1D};
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    wgflow::nn::set_random_seed(5);
    let mut model = Sequential::new()
        .add(Embedding::new(30, 4))
        .add(
            Conv1D::new(5, 3)
                .padding("causal")
                .unwrap()
                .activation(wgflow::nn::Activation::Relu),
        )
        .add(MaxPooling1D::new(2).padding("same").unwrap())
        .add(GlobalAveragePooling1D::new())
        .add(Dense::new(10));
    model.build(&[7], &d).unwrap();
    for opset in [13, 17] {
        let dir = tmp(&format!("text-{opset}"));
        let file = dir.join("model.onnx");
        wgflow::onnx::export(&mut model, &file, opset).unwrap();
        let x = randint(&[5, 7], 0, 30, 3).cast(DType::F32).unwrap();
        save_npy(&dir.join("x5.npy"), &x);
        let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
        let out = py(&python, "check_onnx.py", &[&file, &dir, std::path::Path::new("5")]);
        assert!(out.contains("'Gather'"), "{out}");
        let (shape, got) = load_npy(&dir.join("ort5.npy"));
        assert_eq!(shape, vec![5, 10]);
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("ONNX Runtime on a text model, opset {opset}"),
        );
    }
}

/// A recurrent model (LSTM backwards over every step, GRU) in ONNX
/// Runtime, at both opsets: the cells unrolled into Gather, MatMul and the
/// activations.
#[test]
fn onnx_runtime_runs_recurrent_models() {
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let mut model = recurrent(&d, 7);
    for opset in [13, 17] {
        let dir = tmp(&format!("rnn-{opset}"));
        let file = dir.join("model.onnx");
        wgflow::onnx::export(&mut model, &file, opset).unwrap();
        let x = uniform(&[5, 7, 3], -2.0, 2.0, 3, DType::F32);
        save_npy(&dir.join("x5.npy"), &x);
        let want = model.call(&x, false).unwrap().to_vec::<f32>().unwrap();
        let out = py(&python, "check_onnx.py", &[&file, &dir, std::path::Path::new("5")]);
        assert!(out.contains("'Gather'") && out.contains("'Sigmoid'"), "{out}");
        let (shape, got) = load_npy(&dir.join("ort5.npy"));
        assert_eq!(shape, vec![5, 10]);
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("ONNX Runtime on a recurrent model, opset {opset}"),
        );
    }
}

/// A reduction over no axes changes nothing (as in TensorFlow and wgflow):
/// ONNX Runtime keeps the shape and values, where ONNX's empty axes would
/// reduce every axis.
#[test]
fn reductions_over_no_axes_stay_identities() {
    use wgflow::ops::{Op, reduce::ReduceOp};
    let Some(python) = python() else { return };
    let d = Device::Cpu;
    let dir = tmp("no-axes");
    let spec = TensorSpec::new(&[None, Some(3)], DType::F32).named("x");
    let body = |x: &[wgflow::Tensor]| -> wgflow::Result<Vec<wgflow::Tensor>> {
        let mut outs = Vec::new();
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            outs.push(ops::apply(
                Op::Reduce {
                    op,
                    axes: vec![],
                    keepdims: false,
                },
                &[&x[0]],
            )?);
        }
        Ok(vec![outs[0].add(&outs[1])?.add(&outs[2])?.mul_scalar(2.0)?])
    };
    let f = ConcreteFunction::trace("no_axes", &[spec], &d, body).unwrap();
    let path = dir.join("no_axes.onnx");
    wgflow::onnx::export_function(&f, &path, 17).unwrap();
    let x = uniform(&[5, 3], -1.0, 1.0, 4, DType::F32);
    save_npy(&dir.join("x5.npy"), &x);
    let want = body(&[x]).unwrap()[0].to_vec::<f32>().unwrap();
    py(&python, "check_onnx.py", &[&path, &dir, std::path::Path::new("5")]);
    let (shape, got) = load_npy(&dir.join("ort5.npy"));
    assert_eq!(shape, vec![5, 3]);
    assert_close(&got, &want, 1e-5, "reductions over no axes in ONNX Runtime");
}
