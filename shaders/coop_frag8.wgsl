// Fragment prelude of gemm_coop_staged.wgsl: 8x8x8 cooperative matrices
// with 8-invocation subgroups (lavapipe from Mesa 25.1), so that a CPU
// adapter runs the code the 16x16x16 build runs on GPUs; each of the 32
// invocations stages 8 vec4s of each operand's tile per step.
alias FragA = coop_mat8x8<f16, A>;
alias FragB = coop_mat8x8<f16, B>;
alias FragC = coop_mat8x8<f32, C>;
const FS = 8u;
const FL = 8u;
