//! CPU-only: every file in shaders/ is part of a kernel, every kernel
//! variant (kernel x element type) parses and validates with naga, and
//! every kernel's host parameter structs match naga's layout of its uniform
//! structs. Runs without any GPU.

use std::path::Path;
use wgflow::ops::kernels;
use wgflow::runtime::wgpu::{KType, Kernel, ParamsLayout};

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
        // A kernel's source is its type prelude, the shared IEEE helpers and its files.
        let used = kernels().iter().any(|k| {
            TYPES
                .iter()
                .any(|&t| k.types.contains(&t) && k.source(t).contains(text.as_str()))
        });
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
    let bad = wgflow::runtime::wgpu::Kernel::new("broken", &["fn f() -> f32 { return 1u; }"], &[KType::F32], &[]);
    let e = bad.validate(KType::F32).unwrap_err().to_string();
    assert!(e.contains("broken<f32>"), "{e}");
}

/// Differences between the host twins of `k`'s uniform structs and naga's
/// layout of them in `module`, one line each naming kernel, struct and field.
fn layout_mismatches(k: &Kernel, t: KType, module: &naga::Module) -> Vec<String> {
    let kernel = format!("{}<{}>", k.name, t.name());
    let mut errs = Vec::new();
    let mut used = vec![false; k.params.len()];
    for (_, g) in module.global_variables.iter() {
        if g.space != naga::AddressSpace::Uniform {
            continue;
        }
        let ty = &module.types[g.ty];
        let name = ty.name.as_deref().unwrap_or("?");
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            errs.push(format!("{kernel}: uniform {name} is not a struct"));
            continue;
        };
        let Some(i) = k.params.iter().position(|p| p.wgsl == name) else {
            errs.push(format!(
                "{kernel}: struct {name} has no host twin in the kernel's params"
            ));
            continue;
        };
        used[i] = true;
        let host: &ParamsLayout = &k.params[i];
        let at = format!("{kernel}: struct {name} (host {})", host.rust);
        if host.size != *span as usize {
            errs.push(format!("{at}: size {} on the host, {span} in WGSL", host.size));
        }
        for (j, m) in members.iter().enumerate() {
            let field = m.name.as_deref().unwrap_or("?");
            match host.fields.get(j) {
                None => errs.push(format!("{at}: field {field} missing on the host")),
                Some(&(hf, _)) if hf != field => {
                    errs.push(format!("{at}: field {j} is {field} in WGSL, {hf} on the host"))
                }
                Some(&(_, off)) if off != m.offset as usize => errs.push(format!(
                    "{at}: field {field} at offset {off} on the host, {} in WGSL",
                    m.offset
                )),
                Some(_) => {}
            }
        }
        for &(hf, _) in host.fields.iter().skip(members.len()) {
            errs.push(format!("{at}: field {hf} is not in WGSL"));
        }
    }
    for (p, u) in k.params.iter().zip(used) {
        if !u {
            errs.push(format!(
                "{kernel}: host struct {} ({}) is no uniform of the shader",
                p.rust, p.wgsl
            ));
        }
    }
    errs
}

#[test]
fn host_params_match_the_shaders_uniform_structs() {
    let mut errs = Vec::new();
    let mut n = 0;
    for k in kernels() {
        for &t in k.types {
            let (module, _) = k.validate(t).unwrap_or_else(|e| panic!("{e}"));
            errs.extend(layout_mismatches(k, t, &module));
            n += k.params.len();
        }
    }
    assert!(
        errs.is_empty(),
        "host parameter structs differ from the shaders:\n{}",
        errs.join("\n")
    );
    eprintln!("checked {n} parameter structs");
}

#[test]
fn params_layout_mismatch_names_kernel_struct_and_field() {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Host {
        n: u32,
        beta: f32,
    }
    impl wgflow::runtime::wgpu::Params for Host {
        const NAME: &'static str = "Host";
        const WGSL: &'static str = "P";
        const FIELDS: &'static [(&'static str, usize)] = &[("n", 0), ("beta", 4)];
    }
    static PARAMS: [ParamsLayout; 1] = [ParamsLayout::of::<Host>()];
    let k = Kernel::new(
        "probe",
        &[
            "struct P { n: u32, alpha: f32 }\n@group(0) @binding(0) var<uniform> p: P;\n@compute @workgroup_size(1) fn main() { _ = p.n; }",
        ],
        &[KType::F32],
        &PARAMS,
    );
    let (module, _) = k.validate(KType::F32).unwrap_or_else(|e| panic!("{e}"));
    let errs = layout_mismatches(&k, KType::F32, &module).join("\n");
    assert!(
        errs.contains("probe<f32>") && errs.contains("struct P") && errs.contains("alpha"),
        "{errs}"
    );
}

/// Every kernel variant without pipeline overrides (those need their
/// values first) translates to SPIR-V, as wgpu's Vulkan backend translates
/// it: the cooperative-matrix kernels included, which only adapters with
/// `EXPERIMENTAL_COOPERATIVE_MATRIX` ever run, so this is their one check
/// on machines without such an adapter.
#[test]
fn every_kernel_variant_translates_to_spirv() {
    let (mut coop, mut n) = (0, 0);
    for k in kernels() {
        for &t in k.types {
            let (module, info) = k.validate(t).unwrap_or_else(|e| panic!("{e}"));
            if !module.overrides.is_empty() {
                continue;
            }
            n += 1;
            let options = naga::back::spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let words = naga::back::spv::write_vec(&module, &info, &options, None)
                .unwrap_or_else(|e| panic!("{}<{}> to SPIR-V: {e}", k.name, t.name()));
            assert_eq!(
                words.first(),
                Some(&0x0723_0203),
                "{}<{}>: not SPIR-V",
                k.name,
                t.name()
            );
            // Walk the instructions (after the 5-word header): the low half
            // of each one's first word is its opcode, the high half its
            // length. OpCooperativeMatrixMulAddKHR is opcode 4459.
            let mut at = 5;
            let mut mul_add = false;
            while let Some(&w) = words.get(at) {
                mul_add |= w & 0xffff == 4459;
                at += ((w >> 16) as usize).max(1);
            }
            coop += mul_add as usize;
        }
    }
    assert_eq!(
        coop, 5,
        "matmul_coop, matmul_coop_wide, both matmul_coop_staged builds and conv_coop multiply cooperative matrices"
    );
    eprintln!("translated {n} kernel variants");
}
