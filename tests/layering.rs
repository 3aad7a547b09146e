//! The layers of `src/` import downwards only (see `src/lib.rs` and
//! `../shared/ARCHITECTURE.md`): every `crate::…` path (and every `super::`
//! path that climbs out of its layer) in library code is checked against
//! this order, and each one that points up, or sideways into another layer
//! of the same rank, is listed.

use std::path::{Path, PathBuf};

/// The layers, bottom to top. Layers of the same rank may not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("core", 0),
    ("runtime", 1),
    ("tensor", 2),
    ("ops", 3),
    ("autodiff", 4),
    ("function", 4),
    ("io", 5),
    ("data", 5),
    ("nn", 6),
    ("serving", 7),
    ("distribute", 7),
    ("bin", 8),
];

fn rank(layer: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == layer).map(|(_, r)| *r)
}

/// The module path of a file under `src/` (`src/ops/mod.rs` -> ["ops"]).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// Library code only: a trailing `#[cfg(test)] mod tests { ... }` may use
/// helpers from anywhere.
fn library_part(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    }
}

/// The first-level modules that the paths in `src` (the text of the file
/// at `rel`) reach, with the line they are on.
fn targets(rel: &Path, src: &str) -> Vec<(String, usize, String)> {
    let module = module_of(rel);
    let mut out = Vec::new();
    for (no, line) in library_part(src).lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        // crate::x
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            let after = &rest[i + "crate::".len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
                continue;
            }
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                // `crate::{a, b}`: every name in the braces.
                if let Some(body) = after.strip_prefix('{') {
                    for n in body.split('}').next().unwrap_or("").split(',') {
                        let n: String = n
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !n.is_empty() {
                            out.push((n, no + 1, line.trim().to_string()));
                        }
                    }
                }
                continue;
            }
            out.push((name, no + 1, line.trim().to_string()));
        }
        // super::super::x climbing to the top level
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let mut after = &rest[i..];
            let mut up = 0;
            while let Some(a) = after.strip_prefix("super::") {
                up += 1;
                after = a;
            }
            rest = after;
            if up >= module.len() {
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push((name, no + 1, line.trim().to_string()));
            }
        }
    }
    out
}

/// Every import of `src` (a file at `rel` under `src/`) that goes against the layers.
fn violations(rel: &Path, src: &str) -> Vec<String> {
    let module = module_of(rel);
    let Some(own) = module.first() else {
        return Vec::new(); // lib.rs re-exports from every layer
    };
    let Some(own_rank) = rank(own) else {
        return vec![format!("{}: module `{own}` is in no layer", rel.display())];
    };
    let mut out = Vec::new();
    for (target, line, text) in targets(rel, src) {
        if &target == own {
            continue;
        }
        match rank(&target) {
            Some(r) if r < own_rank => {}
            Some(_) => out.push(format!(
                "{}:{line}: `{own}` imports `{target}`, which is not below it: {text}",
                rel.display()
            )),
            None => out.push(format!(
                "{}:{line}: `{own}` uses `crate::{target}`, which names no layer (use the layer's own path): {text}",
                rel.display()
            )),
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src/").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 20, "found only {} files under src/", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let src = std::fs::read_to_string(f).expect("read a source file");
        bad.extend(violations(rel, &src));
    }
    assert!(
        bad.is_empty(),
        "{} import(s) against the layers (core < runtime < tensor < ops < autodiff, function < io, data < nn < serving < bin):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn an_upward_import_is_reported() {
    let up = "use crate::core::dtype::DType;\nuse crate::nn::Model;\n";
    let v = violations(Path::new("ops/binary.rs"), up);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("`ops` imports `nn`"), "{v:?}");

    let grouped = "use crate::{tensor::Tensor, function::Graph};\n";
    let v = violations(Path::new("tensor/mod.rs"), grouped);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("`tensor` imports `function`"), "{v:?}");

    let inline = "fn f() { crate::autodiff::record(); }\n";
    assert_eq!(violations(Path::new("runtime/wgpu/mod.rs"), inline).len(), 1);

    let sideways = "use crate::function::trace;\n";
    assert_eq!(violations(Path::new("autodiff/mod.rs"), sideways).len(), 1);

    let climb = "use super::super::nn::Model;\n";
    assert_eq!(violations(Path::new("ops/conv.rs"), climb).len(), 1);

    let root_reexport = "use crate::Tensor;\n";
    assert_eq!(violations(Path::new("ops/conv.rs"), root_reexport).len(), 1);

    let down = "use crate::runtime::Device;\nuse crate::core::op::Op;\nuse super::exec;\n";
    assert!(violations(Path::new("ops/conv.rs"), down).is_empty());

    let in_tests = "use crate::core::op::Op;\n#[cfg(test)]\nmod tests {\n    use crate::nn::Model;\n}\n";
    assert!(violations(Path::new("ops/mod.rs"), in_tests).is_empty());
}
