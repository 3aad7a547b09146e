// Fragment prelude of gemm_coop_staged.wgsl: 16x16x16 cooperative
// matrices (NVIDIA's tensor cores) with 32-invocation subgroups; each of
// the 128 invocations stages 8 vec4s of each operand's tile per step.
alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;
const FS = 16u;
const FL = 8u;
