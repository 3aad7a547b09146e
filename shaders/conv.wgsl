// 2-D convolution with float filters (the geometry and the patches are in
// conv_patch.wgsl): the B operand and the result of the implicit GEMMs, and
// the explicit patch matrices of the im2col plan.
//
// Bindings: 1 x (or dy for mode 1), 2 f (or dy for mode 2), 3 c.

@group(0) @binding(2) var<storage, read> wgt: array<T>;
@group(0) @binding(3) var<storage, read_write> dst: array<T>;

fn b_at(b: u32, k: u32, n: u32) -> f32 {
    let g = b / p.splits;
    let kg = (b % p.splits) * p.kc + k;
    if (n >= p.gn || k >= p.kc || kg >= p.ktotal) {
        return 0.0;
    }
    switch p.mode {
        case 1u: {
            // f[kh, kw, ci = n, g*og + o] with (kh, kw, o) from kg
            let o = kg % p.og;
            let tap = kg / p.og;
            return f32(wgt[(tap * p.cg + n) * p.o + g * p.og + o]);
        }
        case 2u: { return f32(wgt[kg * p.o + g * p.og + n]); }
        default: { return f32(wgt[kg * p.o + g * p.og + n]); }
    }
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    let g = b / p.splits;
    switch p.mode {
        case 1u: { dst[m * p.c + g * p.cg + n] = T(v); }
        case 2u: {
            let s = b % p.splits;
            dst[s * (p.gm * p.o) + m * p.o + g * p.og + n] = T(v);
        }
        default: { dst[m * p.o + g * p.og + n] = T(v); }
    }
}

// Explicit patch matrices, for adapters where the GEMM kernel wants plain
// strided operands (gemm_reg): cols[g][(n, oh, ow)][(kh, kw, ci)].
@compute @workgroup_size(256)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    let kg = p.kh * p.kw * p.cg;
    let pixels = p.n * p.oh * p.ow;
    if (i >= kg * pixels * (p.c / p.cg)) {
        return;
    }
    let tap = i % kg;
    let pix = (i / kg) % pixels;
    let g = i / (kg * pixels);
    dst[i] = T(x_patch(g, pix, tap));
}

// dx[n, ih, iw, g*cg + ci] = sum over the taps whose window covers (ih, iw)
// of cols[g][(n, oh, ow)][(kh, kw, ci)]: the adjoint of im2col.
@compute @workgroup_size(256)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n * p.h * p.w * p.c) {
        return;
    }
    let c = i % p.c;
    let iw = (i / p.c) % p.w;
    let ih = (i / (p.c * p.w)) % p.h;
    let n = i / (p.c * p.w * p.h);
    let g = c / p.cg;
    let ci = c % p.cg;
    let kg = p.kh * p.kw * p.cg;
    let pixels = p.n * p.oh * p.ow;
    var acc = 0.0;
    for (var kh = 0u; kh < p.kh; kh++) {
        let th = i32(ih + p.pt) - i32(kh * p.dh);
        if (th < 0 || u32(th) % p.sh != 0u || u32(th) / p.sh >= p.oh) {
            continue;
        }
        let oh = u32(th) / p.sh;
        for (var kw = 0u; kw < p.kw; kw++) {
            let tw = i32(iw + p.pl) - i32(kw * p.dw);
            if (tw < 0 || u32(tw) % p.sw != 0u || u32(tw) / p.sw >= p.ow) {
                continue;
            }
            let pix = (n * p.oh + oh) * p.ow + u32(tw) / p.sw;
            acc += f32(src[(g * pixels + pix) * kg + (kh * p.kw + kw) * p.cg + ci]);
        }
    }
    dst[i] = T(acc);
}
