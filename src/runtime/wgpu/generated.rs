//! Kernels whose last source part is generated at run time: a compiled
//! graph's fused kernels (`function::fused`) and the eager ops fused at a
//! flush ([`super::fusion`]). One cache, keyed by the generated source,
//! keeps them for reuse; past [`KERNEL_CACHE`] entries the least recently
//! used one is dropped. Holders keep a dropped kernel alive, and the devices
//! drop its pipelines once no one does. Names are never reused.

use super::{KType, Kernel};
use crate::core::error::Result;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// A generated kernel's opaque zero (`opaque` in shaders/elementwise.wgsl),
/// declared once at module scope; [`ZERO_SET`] sets it first thing in `main`.
pub(crate) const ZERO_DECL: &str = "var<private> zero: u32;";
/// Sets `zero` from the grid (z is 1 in every launch of a generated kernel).
pub(crate) const ZERO_SET: &str = "    zero = nwg.z - 1u;";

/// WGSL of operand `v` hidden from the compiler's algebra; `salt` (from 1)
/// must differ between the uses in one kernel, or a compiler could merge
/// two equal expressions and fold again.
pub(crate) fn opaque(v: &str, salt: usize) -> String {
    format!("opaque({v}, zero * {salt}u)")
}

/// Generated kernels kept for reuse by later graphs and flushes with the same source.
pub(crate) const KERNEL_CACHE: usize = 256;

/// The generated kernels by source, with the tick of their last use.
struct KernelCache {
    kernels: HashMap<String, (Arc<Kernel>, u64)>,
    tick: u64,
    made: u64,
}

static KERNELS: LazyLock<Mutex<KernelCache>> = LazyLock::new(|| {
    Mutex::new(KernelCache {
        kernels: HashMap::new(),
        tick: 0,
        made: 0,
    })
});

/// The f32 kernel of `sources` followed by generated source `src`, from the
/// cache or new (checked by naga now, so a bad generated kernel is an error
/// here). Its name is `prefix` and a number. The cache is keyed by `src`
/// alone: a generator's sources name what they need of the fixed files.
pub(crate) fn generated_kernel(prefix: &str, src: String, sources: &'static [&'static str]) -> Result<Arc<Kernel>> {
    let mut cache = KERNELS.lock().unwrap_or_else(|p| p.into_inner());
    cache.tick += 1;
    let tick = cache.tick;
    if let Some((k, used)) = cache.kernels.get_mut(&src) {
        *used = tick;
        return Ok(k.clone());
    }
    let k = Arc::new(Kernel {
        name: Cow::Owned(format!("{prefix}_{}", cache.made)),
        sources,
        generated: Some(Arc::from(src.as_str())),
        types: &[KType::F32],
        params: &[],
        enables: &[],
        checked: true,
    });
    k.validate(KType::F32)?;
    cache.made += 1;
    if cache.kernels.len() >= KERNEL_CACHE {
        let oldest = cache
            .kernels
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(s, _)| s.clone());
        if let Some(s) = oldest {
            cache.kernels.remove(&s);
        }
    }
    cache.kernels.insert(src, (k.clone(), tick));
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_kernels_are_cached_and_bounded() {
        const COMMON: &[&str] = &[include_str!("../../../shaders/common.wgsl")];
        let src = |i: usize| format!("@compute @workgroup_size(1)\nfn main() {{\n    let x = {i}u;\n}}\n");
        let first = generated_kernel("test", src(1_000_000), COMMON).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &generated_kernel("test", src(1_000_000), COMMON).unwrap()
        ));
        let mut names = std::collections::HashSet::new();
        for i in 0..KERNEL_CACHE + 20 {
            let k = generated_kernel("test", src(i), COMMON).unwrap();
            assert!(names.insert(k.name.to_string()), "name {} reused", k.name);
        }
        assert!(KERNELS.lock().unwrap().kernels.len() <= KERNEL_CACHE);
        // Evicted, but alive while held, and a new one for its source gets a new name.
        assert!(first.validate(KType::F32).is_ok());
        let again = generated_kernel("test", src(1_000_000), COMMON).unwrap();
        assert!(!Arc::ptr_eq(&first, &again) && again.name != first.name);
    }
}
