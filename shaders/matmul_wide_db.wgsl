// `matmul_wide_db`: matmul_wide (matmul.wgsl) with its workgroup tiles
// double-buffered, for GPUs whose workgroups hold 32 KiB of workgroup
// memory. matmul_wide waits at two barriers per step of k (the tile written,
// then read by every invocation before the next overwrites it); here step i
// reads buffer i % 2 while the next tile goes into the other one, whose
// readers all passed the previous step's barrier, so one barrier per step
// suffices. The same 128x128 outputs per workgroup of 16x16 invocations,
// the same loads (wide_load) and layout ([k][m/4] and [k][n/4] vec4s).
// Grid: x = ceil(N / 128), y = ceil(M / 128), z = batches.

var<workgroup> da: array<vec4<f32>, 1024>; // two A tiles of 512 vec4s
var<workgroup> db: array<vec4<f32>, 1024>; // two B tiles

// Writes wide_a's vec4 `idx` into the A tile at `base` (0 or 512).
fn db_put_a(base: u32, idx: u32, v: vec4<f32>) {
    if (p.ta != 0u) {
        da[base + idx] = v;
    } else {
        let m = idx / 4u;
        let k = (idx % 4u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            da[base + (k + j) * 32u + m / 4u][m % 4u] = v[j];
        }
    }
}

// Writes wide_b's vec4 `idx` into the B tile at `base` (0 or 512).
fn db_put_b(base: u32, idx: u32, v: vec4<f32>) {
    if (p.tb != 0u) {
        let n = idx / 4u;
        let k = (idx % 4u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            db[base + (k + j) * 32u + n / 4u][n % 4u] = v[j];
        }
    } else {
        db[base + idx] = v;
    }
}

fn db_put(base: u32, t: u32, v: WideLoad) {
    db_put_a(base, t, v.a0);
    db_put_a(base, t + 256u, v.a1);
    db_put_b(base, t, v.b0);
    db_put_b(base, t + 256u, v.b1);
}

@compute @workgroup_size(16, 16)
fn matmul_wide_db(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    db_tile(wid, lid.y * 16u + lid.x, lid.y, lid.x);
}

// matmul_wide_db with matmul_wide_warp's 4x8 invocations per subgroup.
@compute @workgroup_size(16, 16)
fn matmul_wide_db_warp(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let yx = warp_yx(t);
    db_tile(wid, t, yx.x, yx.y);
}

// matmul.wgsl's wide_tile, double-buffered.
fn db_tile(wid: vec3<u32>, t: u32, ty: u32, tx: u32) {
    let b = wid.z + p.b0;
    let m0 = (wid.y + p.ty0) * 128u;
    let n0 = (wid.x + p.tx0) * 128u;
    var c00: array<vec4<f32>, 4>;
    var c01: array<vec4<f32>, 4>;
    var c10: array<vec4<f32>, 4>;
    var c11: array<vec4<f32>, 4>;
    var next = wide_load(b, m0, n0, 0u, t);
    db_put(0u, t, next);
    workgroupBarrier();
    var base = 0u;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        let more = k0 + 16u < p.k;
        // The next tile's global loads are in flight while this one multiplies.
        if (more) {
            next = wide_load(b, m0, n0, k0 + 16u, t);
        }
        for (var k = 0u; k < 16u; k++) {
            let r = base + k * 32u;
            let a0 = da[r + ty];
            let a1 = da[r + 16u + ty];
            let v0 = db[r + tx];
            let v1 = db[r + 16u + tx];
            wide_fma(&c00, a0, v0);
            wide_fma(&c01, a0, v1);
            wide_fma(&c10, a1, v0);
            wide_fma(&c11, a1, v1);
        }
        base = 512u - base;
        if (more) {
            db_put(base, t, next);
        }
        workgroupBarrier();
    }
    wide_store(b, m0 + ty * 4u, n0 + tx * 4u, c00, c01, c10, c11);
}
