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
// This file: the geometry and the A operand (patches or the output
// gradient), shared by the float-filter convolution (conv.wgsl) and the
// int8-filter one (conv_int8.wgsl), which bind the filter and the result.
//
// Bindings: 0 parameters, 1 x (or dy for mode 1).

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
    // Words per filter row of an int8 filter (conv_int8.wgsl); else unused.
    words: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;

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
