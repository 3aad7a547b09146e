// 2-D max and average pooling over NHWC, and their gradients. Windows are
// clipped to the input; average pooling divides by the number of input
// elements in the window (TF excludes padding). Max pooling's gradient goes
// to the first maximum of each window in row-major order, as TF's CPU
// kernel does. A NaN in a window is its maximum (the first NaN), so max
// pooling propagates NaN as TF's does. Math in f32.
//
// Bindings: 1 x, 2 y (output, or dx for the gradient), 3 dy.
//
// `total` counts the invocations' elements: y's for `forward` and
// `backward`, dy's for `backward_windows`.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    pt: u32,
    pl: u32,
    total: u32,
    max: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read> dy: array<T>;

// Clipped window of output (oh, ow): rows [r.x, r.y), columns [r.z, r.w).
fn window(oh: u32, ow: u32) -> vec4<i32> {
    let h0 = i32(oh * p.sh) - i32(p.pt);
    let w0 = i32(ow * p.sw) - i32(p.pl);
    return vec4<i32>(max(h0, 0), min(h0 + i32(p.kh), i32(p.h)), max(w0, 0), min(w0 + i32(p.kw), i32(p.w)));
}

// Output element i as (n, oh, ow, c).
fn output_at(i: u32) -> vec4<u32> {
    return vec4<u32>(i / (p.c * p.ow * p.oh), (i / (p.c * p.ow)) % p.oh, (i / p.c) % p.ow, i % p.c);
}

// The window of output element e: its batch entry, channel and rows and
// columns (`window`).
struct OutWindow {
    n: u32,
    c: u32,
    r: vec4<i32>,
}

fn output_window(e: u32) -> OutWindow {
    let o = output_at(e);
    return OutWindow(o.x, o.w, window(o.y, o.z));
}

// Input element e as (n, ih, iw, c), and the outputs whose windows cover
// it: rows [lo.x, hi.x] and columns [lo.y, hi.y] (oh sh - pt <= ih < oh sh
// - pt + kh, and the same for columns).
struct Covering {
    n: u32,
    ih: i32,
    iw: i32,
    c: u32,
    lo: vec2<i32>,
    hi: vec2<i32>,
}

fn covering(e: u32) -> Covering {
    let c = e % p.c;
    let iw = i32((e / p.c) % p.w);
    let ih = i32((e / (p.c * p.w)) % p.h);
    let n = e / (p.c * p.w * p.h);
    let th = ih + i32(p.pt);
    let tw = iw + i32(p.pl);
    let lo = vec2<i32>(max((th - i32(p.kh) + i32(p.sh)) / i32(p.sh), 0), max((tw - i32(p.kw) + i32(p.sw)) / i32(p.sw), 0));
    let hi = vec2<i32>(min(th / i32(p.sh), i32(p.oh) - 1), min(tw / i32(p.sw), i32(p.ow) - 1));
    return Covering(n, ih, iw, c, lo, hi);
}

fn at(n: u32, ih: i32, iw: i32, c: u32) -> u32 {
    return ((n * p.h + u32(ih)) * p.w + u32(iw)) * p.c + c;
}

// First position of the window's maximum, as ih * w + iw.
fn argmax(n: u32, c: u32, r: vec4<i32>) -> i32 {
    var best = r.x * i32(p.w) + r.z;
    var m = f32(x[at(n, r.x, r.z, c)]);
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            let v = f32(x[at(n, ih, iw, c)]);
            if (!f32_is_nan(m) && (v > m || f32_is_nan(v))) {
                m = v;
                best = ih * i32(p.w) + iw;
            }
        }
    }
    return best;
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let win = output_window(i);
    let n = win.n;
    let c = win.c;
    let r = win.r;
    var acc = f32(x[at(n, r.x, r.z, c)]);
    if (p.max == 0u) {
        acc = 0.0;
    }
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            let v = f32(x[at(n, ih, iw, c)]);
            acc = select(acc + v, f32_max_nan(acc, v), p.max != 0u);
        }
    }
    if (p.max == 0u) {
        acc = acc / f32((r.y - r.x) * (r.w - r.z));
    }
    y[i] = T(acc);
}

// dx[n, ih, iw, c] = sum over the windows containing (ih, iw).
@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let cv = covering(i);
    let n = cv.n;
    let c = cv.c;
    let ih = cv.ih;
    let iw = cv.iw;
    var acc = 0.0;
    for (var oh = cv.lo.x; oh <= cv.hi.x; oh++) {
        for (var ow = cv.lo.y; ow <= cv.hi.y; ow++) {
            let r = window(u32(oh), u32(ow));
            let g = f32(dy[((n * p.oh + u32(oh)) * p.ow + u32(ow)) * p.c + c]);
            if (p.max != 0u) {
                if (argmax(n, c, r) == ih * i32(p.w) + iw) {
                    acc += g;
                }
            } else {
                acc += g / f32((r.y - r.x) * (r.w - r.z));
            }
        }
    }
    y[i] = T(acc);
}

// Max pooling's gradient where windows do not overlap (each stride at least
// its window): one invocation per window writes dy at the window's first
// maximum and 0 at its other positions, so x is read once instead of once
// per position of the gather in `backward`. The host zeroes dx first where
// some input positions lie in no window.
@compute @workgroup_size(256)
fn backward_windows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let win = output_window(i);
    let n = win.n;
    let c = win.c;
    let r = win.r;
    if (r.x >= r.y || r.z >= r.w) {
        return;
    }
    let best = argmax(n, c, r);
    let g = dy[i];
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            // A dy of -0 lands as +0, the sum 0 + dy of the other kernels
            // (and TensorFlow's).
            y[at(n, ih, iw, c)] = select(T(0.0), g, ih * i32(p.w) + iw == best && g != T(0.0));
        }
    }
}

// `forward` and `backward_windows` four channels at a time through vec4
// views, where the channels come in fours (the host checks c % 4 and the
// bindings' alignment): a quarter of the loads, stores and index
// arithmetic. `total` counts vec4s. Bindings 4 x, 5 y (or dx), 6 dy.
@group(0) @binding(4) var<storage, read> x4: array<vec4<T>>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<T>>;
@group(0) @binding(6) var<storage, read> dy4: array<vec4<T>>;

fn nan4(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

fn x_at4(n: u32, ih: i32, iw: i32, c: u32) -> vec4<f32> {
    return vec4<f32>(x4[at(n, ih, iw, c) / 4u]);
}

@compute @workgroup_size(256)
fn forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let win = output_window(i * 4u);
    let n = win.n;
    let c = win.c;
    let r = win.r;
    var acc = x_at4(n, r.x, r.z, c);
    if (p.max == 0u) {
        acc = vec4<f32>();
    }
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            let v = x_at4(n, ih, iw, c);
            // f32_max_nan lane by lane: the first NaN wins.
            let m = select(select(max(acc, v), v, nan4(v)), acc, nan4(acc));
            acc = select(acc + v, m, p.max != 0u);
        }
    }
    if (p.max == 0u) {
        acc = acc / f32((r.y - r.x) * (r.w - r.z));
    }
    y4[i] = vec4<T>(acc);
}

@compute @workgroup_size(256)
fn backward_windows4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let win = output_window(i * 4u);
    let n = win.n;
    let c = win.c;
    let r = win.r;
    if (r.x >= r.y || r.z >= r.w) {
        return;
    }
    let best = argmax4(n, c, r);
    let g = dy4[i];
    let live = g != vec4<T>();
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            let here = best == vec4<i32>(ih * i32(p.w) + iw);
            y4[at(n, ih, iw, c) / 4u] = select(vec4<T>(), g, here & live);
        }
    }
}

// `argmax` lane by lane: the first maximum of each of four channels.
fn argmax4(n: u32, c: u32, r: vec4<i32>) -> vec4<i32> {
    var m = x_at4(n, r.x, r.z, c);
    var best = vec4<i32>(r.x * i32(p.w) + r.z);
    for (var ih = r.x; ih < r.y; ih++) {
        for (var iw = r.z; iw < r.w; iw++) {
            let v = x_at4(n, ih, iw, c);
            let take = !nan4(m) & ((v > m) | nan4(v));
            m = select(m, v, take);
            best = select(best, vec4<i32>(ih * i32(p.w) + iw), take);
        }
    }
    return best;
}

// `backward` four channels at a time (`total` counts dx's vec4s).
@compute @workgroup_size(256)
fn backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let cv = covering(i * 4u);
    let n = cv.n;
    let c = cv.c;
    let here = vec4<i32>(cv.ih * i32(p.w) + cv.iw);
    var acc = vec4<f32>();
    for (var oh = cv.lo.x; oh <= cv.hi.x; oh++) {
        for (var ow = cv.lo.y; ow <= cv.hi.y; ow++) {
            let r = window(u32(oh), u32(ow));
            let g = vec4<f32>(dy4[(((n * p.oh + u32(oh)) * p.ow + u32(ow)) * p.c + c) / 4u]);
            if (p.max != 0u) {
                acc += select(vec4<f32>(), g, argmax4(n, c, r) == here);
            } else {
                acc += g / f32((r.y - r.x) * (r.w - r.z));
            }
        }
    }
    y4[i] = vec4<T>(acc);
}
