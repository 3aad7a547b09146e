//! Device selection for real: each configuration runs in its own process
//! (the runtime initializes once per process), against the adapters this
//! machine has (lavapipe's Vulkan device, llvmpipe through GL where wgpu
//! finds it) and the CPU device.

mod common;
use common::*;
use wgflow::config::{self, list_physical_devices, resolve_default, resolve_visible};
use wgflow::{DType, Device, Error, Tensor};

/// The default device over these GPUs: the first that is not a software
/// adapter, else the CPU.
fn expected_default(gpus: &[&config::PhysicalDevice]) -> String {
    gpus.iter()
        .position(|p| p.adapter_type != "Cpu")
        .map_or("cpu".to_string(), |i| format!("gpu:{i}"))
}

fn physical_gpus() -> Vec<config::PhysicalDevice> {
    list_physical_devices()
        .into_iter()
        .filter(|p| p.device_type == "GPU")
        .collect()
}

/// Child: prints the runtime's view of the devices, one tagged line each.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_probe() {
    log_notices();
    match config::list_logical_devices() {
        Err(e) => println!("ERROR {e}"),
        Ok(devs) => {
            for d in devs.iter().filter(|d| d.is_gpu()) {
                let n: usize = d.to_string()[4..].parse().unwrap();
                let p = config::physical_of(n).unwrap();
                println!("LOGICAL {d} {} {}", p.index.unwrap(), p.backend);
            }
            match config::default_device() {
                Err(e) => println!("ERROR {e}"),
                Ok(d) => {
                    let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
                    assert_eq!(t.add(&t).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
                    println!("DEFAULT {d}");
                }
            }
        }
    }
}

fn probe(env: &[(&str, &str)]) -> (Vec<String>, Option<String>, Option<String>, String) {
    let (ok, out, err) = run_child("child_probe", env);
    assert!(ok, "child failed for {env:?}: {out}\n{err}");
    let logical = tagged(&out, "LOGICAL").into_iter().map(String::from).collect();
    let default = tagged(&out, "DEFAULT").first().map(|s| s.to_string());
    let error = tagged(&out, "ERROR").first().map(|s| s.to_string());
    (logical, default, error, err)
}

/// A headless start (no XDG_RUNTIME_DIR, as on a server or in CI) says
/// nothing on stderr: libwayland's "error: XDG_RUNTIME_DIR is invalid" from
/// the drivers' probe is kept out, and every adapter is still found.
#[test]
fn a_headless_start_is_quiet() {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_probe", "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("WGFLOW_") && k != "WGFLOW_ALLOW_NO_GPU" {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("XDG_RUNTIME_DIR");
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "stderr: {err}");
    assert!(!err.to_lowercase().contains("error"), "stderr: {err}");
    let found = tagged(&stdout, "LOGICAL").len();
    let usable = physical_gpus().iter().filter(|p| p.compute).count();
    assert!(
        found >= usable.min(1),
        "adapters found: {found}, usable: {usable}\n{stdout}"
    );
}

#[test]
fn default_selection_shows_every_usable_adapter_in_order() {
    let gpus = physical_gpus();
    let compute: Vec<_> = gpus.iter().filter(|p| p.compute).collect();
    if compute.is_empty() {
        gpus_or_skip();
        return;
    }
    // Every compute adapter is a logical GPU, in order, unless it could not
    // open a device, and then a notice names it.
    let (logical, default, error, stderr) = probe(&[]);
    assert_eq!(error, None);
    let left_out = |p: &config::PhysicalDevice| stderr.contains(&format!("wgflow: leaving out {} ", p.tf_name()));
    let kept: Vec<_> = compute.iter().filter(|p| !left_out(p)).collect();
    assert_eq!(logical.len(), kept.len(), "{stderr}");
    for (i, (l, p)) in logical.iter().zip(&kept).enumerate() {
        assert_eq!(l, &format!("gpu:{i} {} {}", p.index.unwrap(), p.backend));
    }
    let kept_refs: Vec<&config::PhysicalDevice> = kept.iter().map(|p| **p).collect();
    assert_eq!(default, Some(expected_default(&kept_refs)));
    // Only software adapters: the CPU device is the default, with a notice
    // naming the adapter and how to choose it.
    if kept.first().is_some_and(|p| p.adapter_type == "Cpu") && default.as_deref() == Some("cpu") {
        let notice = format!(
            "wgflow: gpu:0 is {} ({}), a software adapter on the CPU",
            kept[0].name, kept[0].backend
        );
        assert!(stderr.contains(&notice), "{stderr}");
        assert!(stderr.contains("WGFLOW_DEVICE=gpu:0"), "{stderr}");
        let (_, chosen, _, stderr) = probe(&[("WGFLOW_DEVICE", "gpu:0")]);
        assert_eq!(chosen.as_deref(), Some("gpu:0"));
        assert!(!stderr.contains("software adapter"), "{stderr}");
    }

    // A broken adapter (simulated) is left out with one notice naming it;
    // the others keep their order and the default device still works.
    // (Needs one adapter that opens; the part above already checked the rest.)
    let Some(&broken) = kept.first() else { return };
    let (logical, default, error, stderr) = probe(&[("WGFLOW_TEST_BROKEN_ADAPTERS", &broken.backend)]);
    assert_eq!(error, None);
    let rest: Vec<_> = kept.iter().filter(|p| p.backend != broken.backend).collect();
    assert_eq!(logical.len(), rest.len(), "{stderr}");
    for (i, (l, p)) in logical.iter().zip(&rest).enumerate() {
        assert_eq!(l, &format!("gpu:{i} {} {}", p.index.unwrap(), p.backend));
    }
    let notice = format!(
        "wgflow: leaving out {} ({}, {}): ",
        broken.tf_name(),
        broken.name,
        broken.backend
    );
    assert!(stderr.lines().any(|l| l.starts_with(&notice)), "{stderr}");
    let rest_refs: Vec<&config::PhysicalDevice> = rest.iter().map(|p| ***p).collect();
    assert_eq!(default, Some(expected_default(&rest_refs)));
    // Chosen explicitly, the broken adapter is an error naming it.
    let (_, _, error, _) = probe(&[
        ("WGFLOW_TEST_BROKEN_ADAPTERS", &broken.backend),
        ("WGFLOW_VISIBLE_DEVICES", &broken.index.unwrap().to_string()),
    ]);
    let e = error.expect("an explicitly chosen broken adapter is an error");
    assert!(e.contains("request_device failed") && e.contains(&broken.name), "{e}");
}

/// The GPUs the default selection keeps (adapters that opened a device), in
/// physical order.
fn usable_gpus() -> Vec<config::PhysicalDevice> {
    let n = config::visible_gpu_count().unwrap();
    (0..n).map(|i| config::physical_of(i).unwrap()).collect()
}

/// Fails without a GPU unless WGFLOW_ALLOW_NO_GPU=1 (then it says it skipped).
fn gpus_or_skip() {
    assert!(gpus().is_empty());
}

#[test]
fn visible_devices_by_index_choose_and_order() {
    let gpus = usable_gpus();
    if gpus.is_empty() {
        gpus_or_skip();
        return;
    }
    let last = gpus.last().unwrap();
    let li = last.index.unwrap();
    let (logical, default, _, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", &li.to_string())]);
    assert_eq!(logical, vec![format!("gpu:0 {li} {}", last.backend)]);
    assert_eq!(default, Some(expected_default(&[last])));
    if gpus.len() >= 2 {
        let (a, b) = (&gpus[0], &gpus[1]);
        let (ai, bi) = (a.index.unwrap(), b.index.unwrap());
        let order = format!("{bi},{ai}");
        let (logical, _, _, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", &order)]);
        assert_eq!(
            logical,
            vec![format!("gpu:0 {bi} {}", b.backend), format!("gpu:1 {ai} {}", a.backend)]
        );
        let (_, default, _, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", &order), ("WGFLOW_DEVICE", "gpu:1")]);
        assert_eq!(default.as_deref(), Some("gpu:1"));
    }
}

#[test]
fn visible_devices_by_name() {
    let all = physical_gpus();
    // A usable adapter that its backend's name selects: the first compute
    // adapter of that backend.
    let first_of = |b: &str| all.iter().find(|q| q.compute && q.backend == b).and_then(|q| q.index);
    let Some(p) = usable_gpus()
        .into_iter()
        .rev()
        .find(|p| first_of(&p.backend) == p.index)
    else {
        gpus_or_skip();
        return;
    };
    // The backend name picks one adapter even when several share a device name.
    let (logical, _, error, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", &p.backend.to_lowercase())]);
    assert_eq!(error, None);
    assert_eq!(logical[0], format!("gpu:0 {} {}", p.index.unwrap(), p.backend));
    let (_, _, error, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", "no-such-adapter")]);
    let e = error.expect("an unknown name is an error");
    assert!(e.contains("no-such-adapter") && e.contains("valid devices"), "{e}");
}

#[test]
fn bad_selections_are_errors_listing_the_valid_devices() {
    let n = physical_gpus().len();
    let (_, _, error, _) = probe(&[("WGFLOW_VISIBLE_DEVICES", &(n + 3).to_string())]);
    let e = error.expect("out of range");
    assert!(e.contains("out of range") && e.contains("valid devices"), "{e}");
    let (_, _, error, _) = probe(&[("WGFLOW_DEVICE", "gpu:9")]);
    let e = error.expect("gpu:9");
    assert!(e.contains("gpu:9") && e.contains("cpu"), "{e}");
    let (_, _, error, _) = probe(&[("WGFLOW_DEVICE", "tpu")]);
    assert!(error.is_some());
    let (_, _, error, _) = probe(&[("WGFLOW_FORCE_GPU_ALLOW_GROWTH", "sometimes")]);
    assert!(error.expect("bad boolean").contains("true"));
    let (_, _, error, _) = probe(&[("WGFLOW_MEMORY_LIMIT_MB", "-5")]);
    assert!(error.expect("bad limit").contains("WGFLOW_MEMORY_LIMIT_MB"));
    let (_, _, error, _) = probe(&[("WGFLOW_GEMM", "fastest")]);
    let e = error.expect("bad GEMM kernel");
    assert!(e.contains("WGFLOW_GEMM") && e.contains("cooperative"), "{e}");
    let (_, _, error, _) = probe(&[("WGFLOW_GEMM_CHECKS", "never")]);
    let e = error.expect("bad GEMM checks");
    assert!(e.contains("WGFLOW_GEMM_CHECKS") && e.contains("auto, on, off"), "{e}");
    let (_, _, error, _) = probe(&[("WGFLOW_GEMM_CHECKS", "off")]);
    assert_eq!(error, None);
    let (_, _, error, _) = probe(&[("WGFLOW_DETERMINISTIC_OPS", "yes")]);
    let e = error.expect("bad determinism flag");
    assert!(e.contains("WGFLOW_DETERMINISTIC_OPS") && e.contains("true"), "{e}");
    let (_, _, error, _) = probe(&[("WGFLOW_DETERMINISTIC_OPS", "true")]);
    assert_eq!(error, None);
}

/// Child: an f16 matmul on every GPU, one tagged line each.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_gemm() {
    for d in config::list_logical_devices().unwrap().iter().filter(|d| d.is_gpu()) {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], d)
            .and_then(|a| a.cast(DType::F16))
            .unwrap();
        match a.matmul(&a).and_then(|c| c.cast(DType::F32)?.to_vec::<f32>()) {
            Ok(v) => println!("GEMM {d} {v:?}"),
            Err(e) => println!("GEMM {d} ERROR {e}"),
        }
    }
    for p in usable_gpus() {
        println!("KERNELS {}", p.gemm_kernels());
    }
}

/// `WGFLOW_GEMM=cooperative` runs f16 products on cooperative matrices
/// where the adapter has them and is an error naming what is missing
/// elsewhere.
#[test]
fn forcing_a_gemm_kernel_the_adapter_lacks_is_an_error() {
    let gpus = usable_gpus();
    if gpus.is_empty() {
        gpus_or_skip();
        return;
    }
    for (kernel, lacked) in [
        ("cooperative", "EXPERIMENTAL_COOPERATIVE_MATRIX"),
        ("cooperative_wide", "EXPERIMENTAL_COOPERATIVE_MATRIX"),
        ("cooperative_staged", "EXPERIMENTAL_COOPERATIVE_MATRIX"),
        ("tiled", ""),
    ] {
        let (ok, out, err) = run_child("child_gemm", &[("WGFLOW_GEMM", kernel)]);
        assert!(ok, "{out}\n{err}");
        // (Not `tagged`: the KERNELS lines say "GEMM " too.)
        let lines: Vec<&str> = out
            .lines()
            .filter_map(|l| l.find("GEMM gpu:").map(|i| l[i + 5..].trim()))
            .collect();
        assert_eq!(lines.len(), gpus.len(), "{out}");
        // `devices` says what is forced, and where it cannot run.
        for (line, p) in tagged(&out, "KERNELS").iter().zip(&gpus) {
            let forced = format!("forced by WGFLOW_GEMM={kernel}");
            assert!(line.contains(&forced), "{line}");
            if !lacked.is_empty() && !p.cooperative_matrix {
                assert!(line.contains("fail here") && line.contains(lacked), "{line}");
            }
        }
        assert_eq!(tagged(&out, "KERNELS").len(), gpus.len(), "{out}");
        for (line, p) in lines.iter().zip(&gpus) {
            let needs = p.gemm_kernels();
            // 8x8x8 cooperative matrices run gemm_coop, not the wide kernel.
            let coop8 = needs.contains("(8x8x8");
            // The staged kernel's 8x8x8 build wants subgroups of 8 (lavapipe;
            // not Apple's 32).
            let staged_lanes = coop8 && kernel == "cooperative_staged" && p.subgroup_size != Some(8);
            let runs = !(coop8 && kernel == "cooperative_wide") && !staged_lanes;
            if lacked.is_empty() || (p.cooperative_matrix && runs) {
                assert!(line.ends_with("[7.0, 10.0, 15.0, 22.0]"), "{kernel}: {line}");
            } else {
                // It names what this adapter lacks, as `devices` does: the
                // feature, subgroups of one size, 16x16x16 matrices, or the
                // staged kernel's subgroups of 8.
                let what = if staged_lanes {
                    "8-invocation subgroups"
                } else if p.cooperative_matrix {
                    "16x16x16 cooperative matrices"
                } else {
                    needs
                        .rsplit_once("needs ")
                        .map_or(lacked, |(_, w)| w.trim_end_matches(')'))
                };
                assert!(!what.is_empty(), "{needs}");
                assert!(
                    line.contains("ERROR") && line.contains(what),
                    "{kernel}: {line}\n{needs}"
                );
            }
        }
    }
}

/// Child: a traced 512^3 matmul (2^28 flops, the smallest product that
/// is autotuned) and a convolution of as many on every GPU: their plans,
/// and whether the traced, eager and CPU results agree
/// (`WGFLOW_TEST_CALL_DETERMINISM=1` first calls
/// `config::enable_op_determinism`; `WGFLOW_TEST_GPU_STYLE=1` has CPU
/// adapters run the GPUs' kernels, so that convolutions tune their plans
/// there too).
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_autotune() {
    if std::env::var("WGFLOW_TEST_CALL_DETERMINISM").as_deref() == Ok("1") {
        config::enable_op_determinism();
    }
    if std::env::var("WGFLOW_TEST_GPU_STYLE").as_deref() == Ok("1") {
        wgflow::runtime::wgpu::force_cpu_style_kernels(Some(false));
    }
    println!("DETERMINISM {}", config::is_op_determinism_enabled());
    let a = randn(&[512, 512], 1, DType::F32);
    let b = randn(&[512, 512], 2, DType::F32);
    // A convolution whose patch-matrix GEMM is 8192 x 64 x 288 (2^28.2 flops).
    let x = randn(&[8, 32, 32, 32], 3, DType::F32);
    let f = randn(&[3, 3, 32, 64], 4, DType::F32);
    let body = |x: &[Tensor]| -> wgflow::Result<Vec<Tensor>> {
        let y = wgflow::ops::conv::conv2d(&x[2], &x[3], [1, 1], wgflow::Padding::Same, [1, 1])?;
        Ok(vec![x[0].matmul(&x[1])?, y])
    };
    let read = |r: Vec<Tensor>| r.iter().map(|t| t.to_vec::<f32>().unwrap()).collect::<Vec<_>>();
    let want = read(body(&[a.clone(), b.clone(), x.clone(), f.clone()]).unwrap());
    for d in config::list_logical_devices().unwrap().iter().filter(|d| d.is_gpu()) {
        let args: Vec<Tensor> = [&a, &b, &x, &f].iter().map(|t| t.to_device(d).unwrap()).collect();
        let mut t = wgflow::function::Traced::new("product");
        let traced = read(t.call(&args, body).unwrap());
        let eager = read(body(&args).unwrap());
        let plan = t.graph(&args).unwrap().describe();
        for op in ["matmul [", "conv2d ["] {
            println!(
                "PLAN {d} {}",
                plan.lines().find(|l| l.contains(op)).unwrap_or("missing")
            );
        }
        let close = traced
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + y.abs()));
        println!("SAME {d} {} {close}", traced == eager);
    }
}

/// GEMMs are autotuned per shape class on first use where an adapter has
/// more than one kernel for them (the plan shows each candidate's time);
/// op determinism (by call or variable) and a forced kernel turn tuning
/// off; every choice gives the CPU's result, and eager and traced products
/// of one class agree bitwise.
#[test]
fn gemms_are_autotuned_unless_forced_or_deterministic() {
    let gpus = usable_gpus();
    if gpus.is_empty() {
        gpus_or_skip();
        return;
    }
    let runs: [(&[(&str, &str)], bool); 5] = [
        (&[], true),
        (&[("WGFLOW_DETERMINISTIC_OPS", "1")], false),
        (&[("WGFLOW_TEST_CALL_DETERMINISM", "1")], false),
        (&[("WGFLOW_GEMM", "register")], false),
        (&[("WGFLOW_TEST_GPU_STYLE", "1")], true),
    ];
    for (env, tunes) in runs {
        let gpu_style = env.iter().any(|(k, _)| *k == "WGFLOW_TEST_GPU_STYLE");
        let (ok, out, err) = run_child("child_autotune", env);
        assert!(ok, "{env:?}: {out}\n{err}");
        let deterministic = env.iter().any(|(k, _)| k.contains("DETERMINIS"));
        assert_eq!(tagged(&out, "DETERMINISM"), [deterministic.to_string()], "{out}");
        let plans = tagged(&out, "PLAN");
        assert_eq!(plans.len(), 2 * gpus.len(), "{out}");
        let each = gpus.iter().flat_map(|p| [(p, "matmul"), (p, "conv2d")]);
        for (plan, (p, op)) in plans.iter().zip(each) {
            // The kernels: on CPU adapters matmul_reg, and matmul_sg where
            // subgroups have 8 lanes (convolutions use them on patch
            // matrices, untuned); on GPUs gemm and matmul_wide, and
            // matmul_wide_db where workgroups hold 32 KiB, for matmuls, and
            // for f32 convolutions the implicit GEMM against the im2col plan
            // (whose own GEMM is tuned as a matmul). On Vulkan each kernel
            // is also built without wgpu's runtime checks (GemmChecks::Auto);
            // the im2col plan is one candidate.
            let cpu = p.adapter_type == "Cpu";
            let sg = p.subgroup_size == Some(8);
            let builds = if p.backend == "Vulkan" { 2 } else { 1 };
            let conv_plans = op == "conv2d" && !(cpu && !gpu_style);
            // A convolution's own candidates follow "; plan " where the
            // line first describes the im2col plan's GEMM.
            let own = plan.rsplit("; plan ").next().unwrap_or_default();
            let times = own.split("(autotuned: ").nth(1).unwrap_or_default();
            let db = times.contains("matmul_wide_db ");
            assert!(!(db && (cpu || op != "matmul")), "{plan}");
            let (kernels, plans) = match (cpu, op) {
                _ if conv_plans => (1, 1),
                (true, _) => (1 + sg as usize, 0),
                (false, _) => (2 + db as usize, 0),
            };
            assert!(plan.contains(op), "{plan}");
            let tuned = own.contains("(autotuned: ");
            assert_eq!(tuned, tunes && kernels * builds + plans > 1, "{env:?}: {plan}");
            if tuned {
                assert_eq!(times.matches(" ms").count(), kernels * builds + plans, "{plan}");
                assert_eq!(times.matches(" unchecked ").count(), kernels * (builds - 1), "{plan}");
                assert_eq!(times.contains("im2col "), conv_plans, "{plan}");
            }
            assert!(!plan.contains("on first run"), "{plan}");
        }
        for same in tagged(&out, "SAME") {
            assert!(same.ends_with("true true"), "{env:?}: {same}");
        }
    }
}

/// Tuning a product whose output is over 32 MiB compares only the two ends
/// of each candidate's result with the reference's: the product still
/// gets the CPU's result, and its plan shows the tuned choice.
#[test]
fn tuning_a_product_with_a_large_output() {
    // 4100 x 2100 f32 outputs (34 MB) from k = 16: 2^28.04 flops.
    let a = randn(&[4100, 16], 5, DType::F32);
    let b = randn(&[16, 2100], 6, DType::F32);
    let want = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
    for d in gpus() {
        let args = [a.to_device(&d).unwrap(), b.to_device(&d).unwrap()];
        let mut t = wgflow::function::Traced::new("large");
        let got = t.call(&args, |x| Ok(vec![x[0].matmul(&x[1])?])).unwrap();
        let got = got[0].to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{d}: off by {worst}");
        let plan = t.graph(&args).unwrap().describe();
        let line = plan.lines().find(|l| l.contains("matmul [")).unwrap_or_default();
        let n = config::physical_of(d.to_string()["gpu:".len()..].parse().unwrap()).unwrap();
        // CPU adapters without 8-lane subgroups have one kernel (and one
        // build off Vulkan): nothing to choose.
        let choice = n.adapter_type != "Cpu" || n.subgroup_size == Some(8) || n.backend == "Vulkan";
        assert_eq!(line.contains("(autotuned: "), choice, "{d}: {line}");
    }
}

/// Child: as if every adapter had cooperative matrices, an autotuned f16
/// matmul on every GPU with f16 arithmetic: llvmpipe cannot build
/// `gemm_coop`, so tuning leaves it out and drops it on the device (an
/// adapter that has them keeps it).
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_coop_tuning() {
    wgflow::runtime::wgpu::pretend_cooperative_matrix(true);
    let a = randn(&[512, 512], 1, DType::F16);
    let b = randn(&[512, 512], 2, DType::F16);
    let read = |t: wgflow::Result<Tensor>| t.and_then(|t| t.cast(DType::F32)?.to_vec::<f32>()).unwrap();
    let want = read(a.matmul(&b));
    for d in config::list_logical_devices()
        .unwrap()
        .iter()
        .filter(|d| d.is_gpu() && d.f16_arithmetic())
    {
        let got = read(a.to_device(d).unwrap().matmul(&b.to_device(d).unwrap()));
        let close = got
            .iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() <= 0.25 + 0.01 * w.abs());
        // Forced now, gemm_coop is an error saying why it is gone.
        wgflow::runtime::wgpu::force_gemm_variant(wgflow::runtime::wgpu::GemmVariant::Cooperative);
        let forced = a.to_device(d).unwrap().matmul(&b.to_device(d).unwrap());
        wgflow::runtime::wgpu::force_gemm_variant(wgflow::runtime::wgpu::GemmVariant::Auto);
        let dropped = forced.is_err_and(|e| e.to_string().contains("gemm_coop that builds"));
        println!("COOP {d} {close} {dropped} {}", d.cooperative_matrix());
    }
}

/// Tuning survives a cooperative-matrix kernel that fails to build: the
/// product runs on the other candidates and the device stops offering it.
#[test]
fn tuning_drops_a_cooperative_kernel_that_fails_to_build() {
    let (ok, out, err) = run_child("child_coop_tuning", &[]);
    assert!(ok, "{out}\n{err}");
    for line in tagged(&out, "COOP") {
        // Where the adapter really has cooperative matrices (the last
        // field), gemm_coop builds and stays; elsewhere it is dropped.
        let want = if line.ends_with("true") {
            "true false true"
        } else {
            "true true false"
        };
        assert!(line.ends_with(want), "{line}\n{err}");
    }
}

#[test]
fn no_visible_gpu_falls_back_to_the_cpu_with_a_notice() {
    let (logical, default, error, stderr) = probe(&[("WGFLOW_VISIBLE_DEVICES", "")]);
    assert_eq!(error, None);
    assert!(logical.is_empty());
    assert_eq!(default.as_deref(), Some("cpu"));
    let notices: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wgflow:")).collect();
    assert_eq!(notices.len(), 1, "one notice line: {stderr}");
    assert!(notices[0].contains("CPU"));
    let (_, default, _, _) = probe(&[("WGFLOW_DEVICE", "cpu")]);
    assert_eq!(default.as_deref(), Some("cpu"));
}

/// Child: `set_visible_devices` before initialization picks the GPU whose
/// physical index is in `WGFLOW_TEST_PHYS`.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_set_visible() {
    let gpus = physical_gpus();
    let phys: usize = std::env::var("WGFLOW_TEST_PHYS").unwrap().parse().unwrap();
    let last = gpus[phys].clone();
    config::set_visible_devices(std::slice::from_ref(&last)).unwrap();
    config::set_memory_limit(&last, 64).unwrap();
    let d = Device::gpu(0).unwrap();
    println!("PHYS {}", config::physical_of(0).unwrap().index.unwrap());
    println!("LIMIT {}", d.memory_info().limit);
    assert!(Device::gpu(1).is_err());
    // After initialization every setter is refused.
    let e = config::set_visible_devices(&gpus).unwrap_err();
    assert!(matches!(e, Error::AlreadyInitialized { .. }), "{e}");
    assert!(config::set_memory_growth(&last, false).is_err());
    println!("DONE ok");
}

#[test]
fn set_visible_devices_before_init_and_refused_after() {
    let Some(last) = usable_gpus().pop() else {
        gpus_or_skip();
        return;
    };
    let phys = last.index.unwrap().to_string();
    let (ok, out, err) = run_child("child_set_visible", &[("WGFLOW_TEST_PHYS", &phys)]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(tagged(&out, "PHYS"), vec![phys]);
    assert_eq!(tagged(&out, "LIMIT"), vec![(64u64 << 20).to_string()]);
    assert_eq!(tagged(&out, "DONE").len(), 1);
}

#[test]
fn selection_logic_against_this_machine() {
    let list = list_physical_devices();
    assert_eq!(
        list.last().unwrap().device_type,
        "CPU",
        "the CPU device is always listed, last"
    );
    let n = list.len() - 1;
    let all: Vec<usize> = (0..n).filter(|&i| list[i].compute).collect();
    assert_eq!(resolve_visible(&list, None).unwrap(), all);
    assert_eq!(resolve_visible(&list, Some("")).unwrap(), Vec::<usize>::new());
    assert!(matches!(
        resolve_visible(&list, Some(&n.to_string())),
        Err(Error::DeviceSelection { .. })
    ));
    assert!(resolve_visible(&list, Some("x,y")).is_err());
    if n >= 2 {
        assert_eq!(resolve_visible(&list, Some(" 1 , 0 ")).unwrap(), vec![1, 0]);
        assert!(resolve_visible(&list, Some("0,0")).is_err());
    }
    // Unset: the first real GPU, else the CPU; software adapters only when chosen.
    assert_eq!(resolve_default(None, &[false, false]).unwrap(), Some(0));
    assert_eq!(resolve_default(None, &[true, false]).unwrap(), Some(1));
    assert_eq!(resolve_default(None, &[true, true]).unwrap(), None);
    assert_eq!(resolve_default(None, &[]).unwrap(), None);
    assert_eq!(resolve_default(Some("gpu:1"), &[false, false]).unwrap(), Some(1));
    assert_eq!(resolve_default(Some("gpu:0"), &[true]).unwrap(), Some(0));
    assert_eq!(resolve_default(Some("CPU"), &[false, false]).unwrap(), None);
    assert!(resolve_default(Some("gpu:2"), &[false, false]).is_err());
    assert!(resolve_default(Some("gpu:0"), &[]).is_err());
    // A CPU "physical device" cannot be made visible as a GPU.
    let cpu = list.last().unwrap().clone();
    assert!(config::set_visible_devices(&[cpu]).is_err());
}

/// Child: the logical GPUs that `WGFLOW_LOGICAL_DEVICES` (or, with
/// `WGFLOW_TEST_LOGICAL_API`, `set_logical_device_configuration`) makes:
/// each its own device with its own pool and limit.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_logical() {
    use wgflow::config::LogicalDeviceConfiguration;
    if std::env::var("WGFLOW_TEST_LOGICAL_API").is_ok() {
        let gpu0 = list_physical_devices()
            .into_iter()
            .find(|p| p.index == Some(0))
            .unwrap();
        let cfg = [
            LogicalDeviceConfiguration { memory_limit_mb: 64 },
            LogicalDeviceConfiguration { memory_limit_mb: 32 },
        ];
        config::set_logical_device_configuration(&gpu0, &cfg).unwrap();
        assert_eq!(
            config::get_logical_device_configuration(&gpu0).unwrap(),
            Some(cfg.to_vec())
        );
    }
    let devs = match config::list_logical_devices() {
        Err(e) => {
            println!("ERROR {e}");
            return;
        }
        Ok(d) => d,
    };
    for d in devs.iter().filter(|d| d.is_gpu()) {
        let n: usize = d.to_string()[4..].parse().unwrap();
        let p = config::physical_of(n).unwrap();
        println!("LOGICAL {d} {} {}", p.index.unwrap(), d.memory_info().limit >> 20);
    }
    let (g0, g1) = (config::gpu(0).unwrap(), config::gpu(1).unwrap());
    // Separate devices: no implicit mixing, explicit copies work.
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &g0).unwrap();
    let b = a.to_device(&g1).unwrap();
    assert!(matches!(a.add(&b), Err(Error::DeviceMismatch { .. })));
    assert_eq!(b.mul(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);
    // Separate pools: 48 MiB fits gpu:0's 64, not gpu:1's 32; gpu:1 still works.
    let n = 12 << 20;
    let big0 = wgflow::ops::zeros(&[n], wgflow::DType::F32, &g0).unwrap();
    big0.to_vec::<f32>().unwrap();
    match wgflow::ops::zeros(&[n], wgflow::DType::F32, &g1).and_then(|t| t.to_vec::<f32>().map(|_| t)) {
        Err(Error::OutOfMemory { limit, .. }) => println!("OOM gpu:1 {}", limit >> 20),
        other => println!("NO-OOM {:?}", other.map(|t| t.shape().to_vec())),
    }
    assert_eq!(b.sum(None, false).unwrap().item().unwrap(), 6.0);
    println!("DONE ok");
}

#[test]
fn logical_devices_split_one_adapter() {
    if physical_gpus().is_empty() {
        assert!(std::env::var("WGFLOW_ALLOW_NO_GPU").is_ok(), "no GPU adapter");
        println!("SKIPPED: no GPU adapter");
        return;
    }
    for env in [
        vec![("WGFLOW_LOGICAL_DEVICES", "0:64,32")],
        vec![("WGFLOW_TEST_LOGICAL_API", "1")],
    ] {
        let (ok, out, err) = run_child("child_logical", &env);
        assert!(ok, "{env:?}: {out}\n{err}");
        let logical = tagged(&out, "LOGICAL");
        assert!(logical.len() >= 2, "{out}");
        assert_eq!(logical[0], "gpu:0 0 64", "{out}");
        assert_eq!(logical[1], "gpu:1 0 32", "{out}");
        // The next physical GPU, if any, follows as one logical GPU.
        if let Some(l) = logical.get(2) {
            assert!(l.starts_with("gpu:2 1 "), "{out}");
        }
        assert_eq!(tagged(&out, "OOM"), vec!["gpu:1 32"], "{out}");
        assert_eq!(tagged(&out, "DONE").len(), 1, "{out}");
    }
    for (spec, part) in [
        ("0:abc", "is not a positive number of MiB"),
        ("0:0", "is not a positive number of MiB"),
        ("64", "has no ':'"),
        ("0:64;0:32", "configured twice"),
        ("99:64", "not visible"),
    ] {
        let (ok, out, err) = run_child("child_logical", &[("WGFLOW_LOGICAL_DEVICES", spec)]);
        assert!(ok, "{spec}: {out}\n{err}");
        let e = tagged(&out, "ERROR");
        assert!(e.first().is_some_and(|e| e.contains(part)), "{spec}: {out}");
    }
    // After the runtime starts, as in TF: an error.
    let gpu0 = physical_gpus().remove(0);
    config::list_logical_devices().unwrap();
    let cfg = [config::LogicalDeviceConfiguration { memory_limit_mb: 8 }];
    assert!(matches!(
        config::set_logical_device_configuration(&gpu0, &cfg),
        Err(Error::AlreadyInitialized { .. })
    ));
}
