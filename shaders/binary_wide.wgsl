// `binary4` and `cmp4` eight elements per invocation through vec4<u64>
// views (shaders/wide.wgsl), for 32-bit element types on CPU adapters:
// where n is a multiple of 8 and, in the broadcast modes 2 to 5, so is the
// period. Bindings 1 a, 2 b (broadcast values), 10 a, 11 b, 12 out,
// 13 mask out (as vec4<u64>s).

@group(0) @binding(10) var<storage, read> aw: array<vec4<u64>>;
@group(0) @binding(11) var<storage, read> bw: array<vec4<u64>>;
@group(0) @binding(12) var<storage, read_write> outw: array<vec4<u64>>;
@group(0) @binding(13) var<storage, read_write> maskw: array<vec4<u64>>;

struct Pair8 {
    a: Eight,
    b: Eight,
}

fn operands8(j: u32) -> Pair8 {
    // Words of 8 elements per period.
    let q = p.period / 8u;
    switch MODE {
        case 2u: {
            return Pair8(unpack8(aw[j]), unpack8(bw[j % q]));
        }
        case 3u: {
            return Pair8(unpack8(aw[j % q]), unpack8(bw[j]));
        }
        case 4u: {
            return Pair8(unpack8(aw[j]), splat8(b[j / q]));
        }
        case 5u: {
            return Pair8(splat8(a[j / q]), unpack8(bw[j]));
        }
        case 6u: {
            return Pair8(unpack8(aw[j]), splat8(b[0]));
        }
        case 7u: {
            return Pair8(splat8(a[0]), unpack8(bw[j]));
        }
        default: {
            return Pair8(unpack8(aw[j]), unpack8(bw[j]));
        }
    }
}

@compute @workgroup_size(256)
fn binary8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 8u) {
        let o = operands8(j);
        outw[j] = pack8(Eight(binary_vec4(o.a.lo, o.b.lo), binary_vec4(o.a.hi, o.b.hi)));
    }
}

@compute @workgroup_size(256)
fn cmp8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 8u) {
        let o = operands8(j);
        maskw[j] = pack_words(compare_vec4(o.a.lo, o.b.lo), compare_vec4(o.a.hi, o.b.hi));
    }
}

// Modes 2 and 3 (one operand a row repeating with period p.period) with
// each invocation taking one word of the row for up to ROWS rows: the
// row's word is loaded once, not once per row. On llvmpipe a kernel's time
// follows its count of storage loads and stores, so a row broadcast then
// costs about what a unary op does (8 + 4 / ROWS words per 8 elements,
// against 12). Invocation i: word i % q of rows (i / q) * ROWS onwards.
// The host sets ROWS (ROW_RUN in src/runtime/wgpu/binary.rs).
override ROWS: u32 = 8u;

struct RowWork {
    col: u32,
    first: u32,
    end: u32,
    row: Eight,
}

fn row_work(i: u32) -> RowWork {
    let q = p.period / 8u;
    let rows = (p.n / 8u) / q;
    let col = i % q;
    let first = (i / q) * ROWS;
    var row = splat8(T(0));
    if (first < rows) {
        if (MODE == 2u) {
            row = unpack8(bw[col]);
        } else {
            row = unpack8(aw[col]);
        }
    }
    return RowWork(col, first, min(first + ROWS, rows), row);
}

// The full operand's word j and the row's, in the order of a and b.
fn row_pair(w: RowWork, j: u32) -> Pair8 {
    if (MODE == 2u) {
        return Pair8(unpack8(aw[j]), w.row);
    }
    return Pair8(w.row, unpack8(bw[j]));
}

@compute @workgroup_size(256)
fn binary8_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = row_work(linear_index(gid, nwg));
    let q = p.period / 8u;
    for (var r = w.first; r < w.end; r++) {
        let j = r * q + w.col;
        let o = row_pair(w, j);
        outw[j] = pack8(Eight(binary_vec4(o.a.lo, o.b.lo), binary_vec4(o.a.hi, o.b.hi)));
    }
}

@compute @workgroup_size(256)
fn cmp8_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = row_work(linear_index(gid, nwg));
    let q = p.period / 8u;
    for (var r = w.first; r < w.end; r++) {
        let j = r * q + w.col;
        let o = row_pair(w, j);
        maskw[j] = pack_words(compare_vec4(o.a.lo, o.b.lo), compare_vec4(o.a.hi, o.b.hi));
    }
}

// `where4` eight elements per invocation. Bindings 10 a, 11 b, 12 out,
// 15 condition (as vec4<u64>s).
@group(0) @binding(15) var<storage, read> condw: array<vec4<u64>>;

@compute @workgroup_size(256)
fn where8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 8u) {
        let a8 = unpack8(aw[j]);
        let b8 = unpack8(bw[j]);
        let c = unpack_words(condw[j]);
        let z = vec4<u32>(0u);
        outw[j] = pack8(Eight(select(b8.lo, a8.lo, c[0] != z), select(b8.hi, a8.hi, c[1] != z)));
    }
}
