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

// Patch row r (group g, pixel (n, oh, ow)): its group, batch entry and the
// input position of its window's first tap.
struct PatchRow {
    g: u32,
    n: u32,
    ih0: i32,
    iw0: i32,
}

// Whether input position (ih, iw) lies inside the input (not padding).
fn in_input(ih: i32, iw: i32) -> bool {
    return ih >= 0 && iw >= 0 && u32(ih) < p.h && u32(iw) < p.w;
}

fn patch_row(r: u32, pixels: u32) -> PatchRow {
    let pix = r % pixels;
    let ow = pix % p.ow;
    let oh = (pix / p.ow) % p.oh;
    return PatchRow(r / pixels, pix / (p.ow * p.oh), i32(oh * p.sh) - i32(p.pt), i32(ow * p.sw) - i32(p.pl));
}

// Explicit patch matrices, for adapters where the GEMM kernel wants plain
// strided operands (gemm_reg): cols[g][(n, oh, ow)][(kh, kw, ci)]. One
// invocation per row (g, pixel): the window is placed once and its taps
// are counted off, since an integer division by a uniform costs a CPU
// adapter one scalar instruction per lane (per element, the old form's
// divisions took three quarters of llvmpipe's convolution time).
@compute @workgroup_size(256)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg);
    let pixels = p.n * p.oh * p.ow;
    if (r >= pixels * (p.c / p.cg)) {
        return;
    }
    let pr = patch_row(r, pixels);
    var t = r * (p.kh * p.kw * p.cg);
    for (var kh = 0u; kh < p.kh; kh++) {
        let ih = pr.ih0 + i32(kh * p.dh);
        for (var kw = 0u; kw < p.kw; kw++) {
            let iw = pr.iw0 + i32(kw * p.dw);
            if (in_input(ih, iw)) {
                let base = ((pr.n * p.h + u32(ih)) * p.w + u32(iw)) * p.c + pr.g * p.cg;
                for (var ci = 0u; ci < p.cg; ci++) {
                    dst[t + ci] = src[base + ci];
                }
            } else {
                for (var ci = 0u; ci < p.cg; ci++) {
                    dst[t + ci] = T(0.0);
                }
            }
            t += p.cg;
        }
    }
}

// The output position along one axis whose tap lands on input position
// `at` (at = out * stride + tap * dilation - pad), or -1 where none does.
fn source_of(at: i32, stride: u32, out: u32) -> i32 {
    if (at < 0) {
        return -1;
    }
    var o = u32(at);
    // Stride 1 (uniform: no lane diverges) needs no division.
    if (stride != 1u) {
        if (o % stride != 0u) {
            return -1;
        }
        o = o / stride;
    }
    return select(-1, i32(o), o < out);
}

// dx[n, ih, iw, g*cg + ci] = sum over the taps whose window covers (ih, iw)
// of cols[g][(n, oh, ow)][(kh, kw, ci)]: the adjoint of im2col. One
// invocation per (input pixel, group), its channels in turn.
@compute @workgroup_size(256)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg);
    let groups = p.c / p.cg;
    if (r >= p.n * p.h * p.w * groups) {
        return;
    }
    let g = r % groups;
    let px = r / groups;
    let iw = px % p.w;
    let ih = (px / p.w) % p.h;
    let n = px / (p.w * p.h);
    let kg = p.kh * p.kw * p.cg;
    let rows = (g * p.n + n) * p.oh;
    for (var ci = 0u; ci < p.cg; ci++) {
        var acc = 0.0;
        for (var kh = 0u; kh < p.kh; kh++) {
            let oh = source_of(i32(ih + p.pt) - i32(kh * p.dh), p.sh, p.oh);
            if (oh < 0) {
                continue;
            }
            for (var kw = 0u; kw < p.kw; kw++) {
                let ow = source_of(i32(iw + p.pl) - i32(kw * p.dw), p.sw, p.ow);
                if (ow < 0) {
                    continue;
                }
                let row = (rows + u32(oh)) * p.ow + u32(ow);
                acc += f32(src[row * kg + (kh * p.kw + kw) * p.cg + ci]);
            }
        }
        dst[px * p.c + g * p.cg + ci] = T(acc);
    }
}

// col2im through vec4 views, where a group's channels come in fours (the
// host checks cg % 4 and the bindings' alignment): one invocation per
// output vec4, so consecutive invocations read consecutive vec4s of one
// patch row and take the same taps. Bindings 4 cols and 5 dx as vec4s.
@group(0) @binding(4) var<storage, read> src4: array<vec4<T>>;
@group(0) @binding(5) var<storage, read_write> dst4: array<vec4<T>>;

@compute @workgroup_size(256)
fn col2im4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg);
    let c4 = p.c / 4u;
    if (r >= p.n * p.h * p.w * c4) {
        return;
    }
    // r = px c/4 + (g cg + 4 q) / 4: vec4 q of group g's channels.
    let px = r / c4;
    let ch = (r % c4) * 4u;
    let g = ch / p.cg;
    let ci = ch % p.cg;
    let iw = px % p.w;
    let ih = (px / p.w) % p.h;
    let n = px / (p.w * p.h);
    let kg = p.kh * p.kw * p.cg;
    let rows = (g * p.n + n) * p.oh;
    var acc = vec4<f32>();
    for (var kh = 0u; kh < p.kh; kh++) {
        let oh = source_of(i32(ih + p.pt) - i32(kh * p.dh), p.sh, p.oh);
        if (oh < 0) {
            continue;
        }
        for (var kw = 0u; kw < p.kw; kw++) {
            let ow = source_of(i32(iw + p.pl) - i32(kw * p.dw), p.sw, p.ow);
            if (ow < 0) {
                continue;
            }
            let row = (rows + u32(oh)) * p.ow + u32(ow);
            acc += vec4<f32>(src4[(row * kg + (kh * p.kw + kw) * p.cg + ci) / 4u]);
        }
    }
    dst4[r] = vec4<T>(acc);
}

// im2col through the vec4 views (src4 the input, dst4 the patch matrix),
// where a group's channels come in fours: one invocation per row, as
// im2col, copying a tap's channels a vec4 at a time.
@compute @workgroup_size(256)
fn im2col4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg);
    let pixels = p.n * p.oh * p.ow;
    if (r >= pixels * (p.c / p.cg)) {
        return;
    }
    let pr = patch_row(r, pixels);
    let cg4 = p.cg / 4u;
    var t = r * (p.kh * p.kw * cg4);
    for (var kh = 0u; kh < p.kh; kh++) {
        let ih = pr.ih0 + i32(kh * p.dh);
        for (var kw = 0u; kw < p.kw; kw++) {
            let iw = pr.iw0 + i32(kw * p.dw);
            if (in_input(ih, iw)) {
                let base = (((pr.n * p.h + u32(ih)) * p.w + u32(iw)) * p.c + pr.g * p.cg) / 4u;
                for (var q = 0u; q < cg4; q++) {
                    dst4[t + q] = src4[base + q];
                }
            } else {
                for (var q = 0u; q < cg4; q++) {
                    dst4[t + q] = vec4<T>();
                }
            }
            t += cg4;
        }
    }
}
