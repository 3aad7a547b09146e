// 2-D convolution, NHWC activations and HWIO filters, as implicit GEMMs on
// the tiled core (gemm.wgsl): patches are gathered while loading tiles, so
// no im2col buffer exists. Batch index b of the core = group * splits + split.
//
// p.mode 0, forward:      y[(n,oh,ow), o]  = sum_(kh,kw,ci) x-patch * f
// p.mode 1, input grad:   dx[(n,ih,iw), ci] = sum_(kh,kw,o) dy at the output
//                       positions whose window covers (ih, iw) * f
// p.mode 2, filter grad:  df[(kh,kw,ci), o] = sum_(n,oh,ow) x-patch * dy, with
//                       the sum split in `splits` chunks of `kc` written to
//                       separate slices of c and summed afterwards.
//
// Bindings: 1 x (or dy for mode 1), 2 f (or dy for mode 2), 3 c.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    o: u32,
    kh: u32,
    kw: u32,
    cg: u32,
    og: u32,
    splits: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pt: u32,
    pl: u32,
    kc: u32,
    ktotal: u32,
    gm: u32,
    gn: u32,
    b0: u32,
    mode: u32,
    // First tile along n and m of this launch (grids split by the limit).
    tx0: u32,
    ty0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read> wgt: array<T>;
@group(0) @binding(3) var<storage, read_write> dst: array<T>;

fn gemm_dims() -> vec4<u32> {
    return vec4<u32>(p.gm, p.gn, p.kc, p.b0);
}

fn gemm_tile0() -> vec2<u32> {
    return vec2<u32>(p.tx0, p.ty0);
}

// x[n, oh*sh + kh*dh - pt, ow*sw + kw*dw - pl, g*cg + ci], zero in the padding.
fn x_patch(g: u32, pix: u32, tap: u32) -> f32 {
    let ow = pix % p.ow;
    let oh = (pix / p.ow) % p.oh;
    let n = pix / (p.ow * p.oh);
    let ci = tap % p.cg;
    let kw = (tap / p.cg) % p.kw;
    let kh = tap / (p.cg * p.kw);
    let ih = i32(oh * p.sh + kh * p.dh) - i32(p.pt);
    let iw = i32(ow * p.sw + kw * p.dw) - i32(p.pl);
    if (ih < 0 || iw < 0 || u32(ih) >= p.h || u32(iw) >= p.w) {
        return 0.0;
    }
    return f32(src[((n * p.h + u32(ih)) * p.w + u32(iw)) * p.c + g * p.cg + ci]);
}

// dy[n, oh, ow, g*og + o] for the output position whose tap (kh, kw) lands
// on input pixel (n, ih, iw); zero when none does.
fn dy_at(g: u32, pix: u32, tap: u32) -> f32 {
    let iw = pix % p.w;
    let ih = (pix / p.w) % p.h;
    let n = pix / (p.w * p.h);
    let o = tap % p.og;
    let kw = (tap / p.og) % p.kw;
    let kh = tap / (p.og * p.kw);
    let th = i32(ih + p.pt) - i32(kh * p.dh);
    let tw = i32(iw + p.pl) - i32(kw * p.dw);
    if (th < 0 || tw < 0 || u32(th) % p.sh != 0u || u32(tw) % p.sw != 0u) {
        return 0.0;
    }
    let oh = u32(th) / p.sh;
    let ow = u32(tw) / p.sw;
    if (oh >= p.oh || ow >= p.ow) {
        return 0.0;
    }
    return f32(src[((n * p.oh + oh) * p.ow + ow) * p.o + g * p.og + o]);
}

fn a_at(b: u32, m: u32, k: u32) -> f32 {
    let g = b / p.splits;
    let kg = (b % p.splits) * p.kc + k;
    if (m >= p.gm || k >= p.kc || kg >= p.ktotal) {
        return 0.0;
    }
    switch p.mode {
        case 1u: { return dy_at(g, m, kg); }
        case 2u: { return x_patch(g, kg, m); }
        default: { return x_patch(g, m, kg); }
    }
}

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

fn b4_at(b: u32, k: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(b_at(b, k, n), b_at(b, k, n + 1u), b_at(b, k, n + 2u), b_at(b, k, n + 3u));
}

fn load_tiles(b: u32, m0: u32, n0: u32, k0: u32, t: u32) {
    let m = t / 4u;
    let kq = (t % 4u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        ta[(kq + j) * 16u + m / 4u][m % 4u] = a_at(b, m0 + m, k0 + kq + j);
    }
    let k = t / 16u;
    let nq = (t % 16u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        tb[k * 16u + (nq + j) / 4u][j] = b_at(b, k0 + k, n0 + nq + j);
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
