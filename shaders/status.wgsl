// The status words in which a kernel reports a bad value (see
// StatusRecord in src/runtime/wgpu/memory.rs): four words per launch's
// record, [code, value, limit, 0], `slot` the record's index in the bound
// chunk. The first report in a record wins. Codes: 1 an index out of range
// (gather), 2 a label out of range (sparse cross-entropy), 3 an integer
// division by zero, 4 a negative integer power (int_check).

@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;

fn report_status(slot: u32, code: u32, value: i32, limit: u32) {
    let s = slot * 4u;
    if (atomicMax(&status[s], code) == 0u) {
        atomicStore(&status[s + 1u], bitcast<u32>(value));
        atomicStore(&status[s + 2u], limit);
    }
}
