// Eight 32-bit elements as a vec4<u64>, for the elementwise kernels' wide
// entries on CPU adapters with 64-bit integers (SHADER_INT64). llvmpipe
// loads storage one component at a time per lane, each with its own range
// check, so a vec4<u64> (eight elements in four loads) costs about half
// what two vec4s of f32 do: exp on 4M f32 takes 10 ms this way against 17
// through vec4s and 22.5 one element per invocation.
//
// Word k holds elements 2k (low half) and 2k + 1 (high half): storage is
// little-endian on every adapter wgpu runs on.

struct Eight {
    lo: vec4<T>,
    hi: vec4<T>,
}

fn unpack_words(w: vec4<u64>) -> array<vec4<u32>, 2> {
    let m = 0xfffffffflu;
    return array<vec4<u32>, 2>(
        vec4<u32>(u32(w.x & m), u32(w.x >> 32u), u32(w.y & m), u32(w.y >> 32u)),
        vec4<u32>(u32(w.z & m), u32(w.z >> 32u), u32(w.w & m), u32(w.w >> 32u)),
    );
}

fn pack_words(lo: vec4<u32>, hi: vec4<u32>) -> vec4<u64> {
    let l = vec4<u64>(lo);
    let h = vec4<u64>(hi);
    return vec4<u64>(l.x | (l.y << 32u), l.z | (l.w << 32u), h.x | (h.y << 32u), h.z | (h.w << 32u));
}

fn unpack8(w: vec4<u64>) -> Eight {
    let u = unpack_words(w);
    return Eight(bitcast<vec4<T>>(u[0]), bitcast<vec4<T>>(u[1]));
}

fn pack8(e: Eight) -> vec4<u64> {
    return pack_words(bitcast<vec4<u32>>(e.lo), bitcast<vec4<u32>>(e.hi));
}

// One value as all eight elements.
fn splat8(v: T) -> Eight {
    return Eight(vec4<T>(v), vec4<T>(v));
}
