// Shared by the elementwise-style kernels.

// Linear index of an invocation in a 1-D grid of 256-wide workgroups that the
// host folded into x and y to stay under the 65535-workgroup limit (gpu::grid).
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Dimension d of a shape or stride list packed as two vec4s (rank <= 8).
fn at8(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d >> 2u][d & 3u];
}
