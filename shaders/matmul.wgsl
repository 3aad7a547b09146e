// Batched strided matmul operands for the GEMM core (gemm.wgsl):
//   A(m, k) = a[b * sa + m * lda + k]   (TA: a[b * sa + k * lda + m])
//   B(k, n) = b[b * sb + k * ldb + n]   (TB: b[b * sb + n * ldb + k])
//   C(m, n) -> c[b * sc + m * ldc + n]
// VEC4: every row start and K (or M, N along the contiguous axis) is a
// multiple of 4, so tiles load as vec4s through the a4/b4 views.
//
// Bindings: 1 a, 2 b, 3 c, 4 a as vec4s, 5 b as vec4s.

override TA: bool = false;
override TB: bool = false;
override VEC4: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    b0: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    _p: u32,
    sa: u32,
    sb: u32,
    sc: u32,
    _q: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> bm: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<T>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<T>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<T>>;

fn gemm_dims() -> vec4<u32> {
    return vec4<u32>(p.m, p.n, p.k, p.b0);
}

fn a_at(base: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    if (TA) {
        return f32(a[base + k * p.lda + m]);
    }
    return f32(a[base + m * p.lda + k]);
}

fn b_at(base: u32, k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    if (TB) {
        return f32(bm[base + n * p.ldb + k]);
    }
    return f32(bm[base + k * p.ldb + n]);
}

fn load_tiles(b: u32, m0: u32, n0: u32, k0: u32, t: u32) {
    let abase = b * p.sa;
    let bbase = b * p.sb;
    // A tile, 64 (m) x 16 (k): four elements per invocation, along the
    // operand's contiguous axis so neighbours read neighbouring addresses.
    if (TA) {
        let k = t / 16u;
        let mq = (t % 16u) * 4u;
        if (VEC4) {
            var v = vec4<f32>(0.0);
            if (k0 + k < p.k && m0 + mq < p.m) {
                v = vec4<f32>(a4[(abase + (k0 + k) * p.lda + m0 + mq) / 4u]);
            }
            ta[k * 16u + mq / 4u] = v;
        } else {
            for (var j = 0u; j < 4u; j++) {
                ta[k * 16u + (mq + j) / 4u][j] = a_at(abase, m0 + mq + j, k0 + k);
            }
        }
    } else {
        let m = t / 4u;
        let kq = (t % 4u) * 4u;
        if (VEC4) {
            var v = vec4<f32>(0.0);
            if (m0 + m < p.m && k0 + kq < p.k) {
                v = vec4<f32>(a4[(abase + (m0 + m) * p.lda + k0 + kq) / 4u]);
            }
            for (var j = 0u; j < 4u; j++) {
                ta[(kq + j) * 16u + m / 4u][m % 4u] = v[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                ta[(kq + j) * 16u + m / 4u][m % 4u] = a_at(abase, m0 + m, k0 + kq + j);
            }
        }
    }
    // B tile, 16 (k) x 64 (n).
    if (TB) {
        let n = t / 4u;
        let kq = (t % 4u) * 4u;
        if (VEC4) {
            var v = vec4<f32>(0.0);
            if (n0 + n < p.n && k0 + kq < p.k) {
                v = vec4<f32>(b4[(bbase + (n0 + n) * p.ldb + k0 + kq) / 4u]);
            }
            for (var j = 0u; j < 4u; j++) {
                tb[(kq + j) * 16u + n / 4u][n % 4u] = v[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                tb[(kq + j) * 16u + n / 4u][n % 4u] = b_at(bbase, k0 + kq + j, n0 + n);
            }
        }
    } else {
        let k = t / 16u;
        let nq = (t % 16u) * 4u;
        if (VEC4) {
            var v = vec4<f32>(0.0);
            if (k0 + k < p.k && n0 + nq < p.n) {
                v = vec4<f32>(b4[(bbase + (k0 + k) * p.ldb + n0 + nq) / 4u]);
            }
            tb[k * 16u + nq / 4u] = v;
        } else {
            for (var j = 0u; j < 4u; j++) {
                tb[k * 16u + (nq + j) / 4u][j] = b_at(bbase, k0 + k, n0 + nq + j);
            }
        }
    }
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    c[b * p.sc + m * p.ldc + n] = T(v);
}
