// The 64x64 tile of C that gemm_coop.wgsl (16x16x16 matrices) and its twin
// gemm_coop8.wgsl (8x8x8) share: A and B staged in workgroup memory 32 of k
// at a time through the operand functions a_at / b_at (zero outside the
// matrices, so edge tiles need no special case), and C written back from
// cc 16 rows at a time, so that only elements inside C are written. Rows
// in workgroup memory are padded by 16 bytes so that the rows of a
// fragment fall in different banks (unpadded, B's rows were 128 bytes
// apart and all in one bank). Workgroup memory: 5 + 4.5 + 4.25 KiB.
// `stride` is the workgroup's count of invocations.

const CM = 64u;
const CN = 64u;
const CK = 32u;
// Padded row lengths of ca, cb and cc (multiples of 16 bytes, as
// cooperative loads and stores want).
const CKP = 40u;
const CNP = 72u;
const CCP = 68u;

var<workgroup> ca: array<f16, 2560>; // A tile [CM][CKP]
var<workgroup> cb: array<f16, 2304>; // B tile [CK][CNP]
var<workgroup> cc: array<f32, 1088>; // 16 rows of a C tile [16][CCP]

// Copies the A and B tiles of k0 .. k0 + CK into ca and cb.
fn coop_stage(b: u32, m0: u32, n0: u32, k0: u32, t: u32, stride: u32) {
    for (var i = t; i < CM * CK; i += stride) {
        ca[(i / CK) * CKP + i % CK] = f16(a_at(b, m0 + i / CK, k0 + i % CK));
        cb[(i / CN) * CNP + i % CN] = f16(b_at(b, k0 + i / CN, n0 + i % CN));
    }
}

// Writes cc as rows r * 16 .. + 16 of the tile, those inside C.
fn coop_write(b: u32, m0: u32, n0: u32, r: u32, t: u32, stride: u32) {
    let dims = gemm_dims();
    for (var i = t; i < 16u * CN; i += stride) {
        let m = m0 + r * 16u + i / CN;
        let n = n0 + i % CN;
        if (m < dims.x && n < dims.y) {
            store_c(b, m, n, cc[(i / CN) * CCP + i % CN]);
        }
    }
}
