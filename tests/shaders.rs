//! CPU-only: every file in shaders/ is part of a kernel, and every kernel
//! variant (kernel x element type) parses and validates with naga. Runs
//! without any GPU.

use std::path::Path;
use wgflow::ops::kernels;
use wgflow::runtime::wgpu::KType;

const TYPES: [KType; 4] = [KType::F32, KType::F16, KType::I32, KType::U32];

fn wgsl_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            wgsl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "wgsl") {
            out.push(p);
        }
    }
}

#[test]
fn every_shader_file_is_used() {
    let mut files = Vec::new();
    wgsl_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders"), &mut files);
    assert!(files.len() >= 10, "found only {} shader files", files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let used =
            kernels().iter().any(|k| k.sources.contains(&text.as_str())) || TYPES.iter().any(|t| t.prelude() == text);
        assert!(
            used,
            "{} is not part of any kernel in wgflow::ops::kernels()",
            f.display()
        );
    }
}

#[test]
fn every_kernel_variant_validates() {
    let mut n = 0;
    for k in kernels() {
        assert!(!k.types.is_empty(), "{} declares no element type", k.name);
        for &t in k.types {
            let (module, _) = k.validate(t).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                !module.entry_points.is_empty(),
                "{}<{}> has no entry point",
                k.name,
                t.name()
            );
            for ep in &module.entry_points {
                let [x, y, z] = ep.workgroup_size;
                assert!(
                    x * y * z <= 256,
                    "{}::{} uses {} invocations per workgroup",
                    k.name,
                    ep.name,
                    x * y * z
                );
            }
            n += 1;
        }
    }
    eprintln!("validated {n} kernel variants");
}

#[test]
fn validation_reports_errors_with_the_kernel_name() {
    let bad = wgflow::runtime::wgpu::Kernel {
        name: "broken",
        sources: &["fn f() -> f32 { return 1u; }"],
        types: &[KType::F32],
    };
    let e = bad.validate(KType::F32).unwrap_err().to_string();
    assert!(e.contains("broken<f32>"), "{e}");
}
