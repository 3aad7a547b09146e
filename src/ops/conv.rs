//! 2-D convolution, NHWC activations with HWIO filters, and its two
//! gradients (kernel: shaders/conv.wgsl over the GEMM core).
//!
//! Groups follow TensorFlow: they are implied by `C / filter_in_channels`;
//! a depthwise convolution is the case groups == C. Padding is `Same`
//! (TF's rule: output = ceil(input / stride), extra padding at the end),
//! `Valid`, or explicit per side.
//!
//! The GPU runs each as an implicit GEMM, gathering patches while loading
//! tiles; the filter gradient, whose reduction runs over every output pixel,
//! splits that reduction into chunks to keep the GPU busy and sums them. The
//! CPU reference builds patch matrices and calls a GEMM.

use super::{Op, Tol, exec, reduce};
use crate::device::cpu::{CpuData, Gemm};
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::numel;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub static CONV: Kernel = Kernel {
    name: "conv",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/gemm.wgsl"),
        include_str!("../../shaders/conv.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
    Explicit {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
    },
}

/// The attributes of a convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub strides: [usize; 2],
    pub padding: Padding,
    pub dilations: [usize; 2],
    pub groups: usize,
}

/// Output size and padding of one spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim {
    pub out: usize,
    pub pad_before: usize,
}

/// TensorFlow's output size and leading padding for one spatial dimension.
pub fn out_dim(
    op: &'static str,
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: Option<(usize, usize)>,
    same: bool,
) -> Result<Dim> {
    let eff = (k - 1) * dilation + 1;
    if same {
        let out = input.div_ceil(stride);
        let total = ((out.max(1) - 1) * stride + eff).saturating_sub(input);
        return Ok(Dim {
            out,
            pad_before: total / 2,
        });
    }
    let (b, a) = pad.unwrap_or((0, 0));
    let span = input + b + a;
    if span < eff {
        return Err(Error::arg(
            op,
            format!(
                "the window ({eff} with dilation) is larger than the padded input ({span}): the output would be empty"
            ),
        ));
    }
    Ok(Dim {
        out: (span - eff) / stride + 1,
        pad_before: b,
    })
}

impl Conv2d {
    /// (height, width) output dims for an input of [h, w] and a [kh, kw] window.
    pub fn dims(&self, op: &'static str, h: usize, w: usize, kh: usize, kw: usize) -> Result<(Dim, Dim)> {
        let (ph, pw) = match self.padding {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => (Some((top, bottom)), Some((left, right))),
            _ => (None, None),
        };
        let same = self.padding == Padding::Same;
        Ok((
            out_dim(op, h, kh, self.strides[0], self.dilations[0], ph, same)?,
            out_dim(op, w, kw, self.strides[1], self.dilations[1], pw, same)?,
        ))
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err(Error::arg(
                op,
                format!(
                    "strides {:?} and dilations {:?} must be positive",
                    self.strides, self.dilations
                ),
            ));
        }
        if self.groups == 0 {
            return Err(Error::arg(op, "groups must be positive"));
        }
        Ok(())
    }
}

/// Every size of one convolution problem.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    o: usize,
    kh: usize,
    kw: usize,
    cg: usize,
    og: usize,
    g: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
}

fn geom(op: &'static str, a: &Conv2d, x: &[usize], f: &[usize]) -> Result<Geom> {
    let (hd, wd) = a.dims(op, x[1], x[2], f[0], f[1])?;
    Ok(Geom {
        n: x[0],
        h: x[1],
        w: x[2],
        c: x[3],
        oh: hd.out,
        ow: wd.out,
        o: f[3],
        kh: f[0],
        kw: f[1],
        cg: f[2],
        og: f[3] / a.groups,
        g: a.groups,
        sh: a.strides[0],
        sw: a.strides[1],
        dh: a.dilations[0],
        dw: a.dilations[1],
        pt: hd.pad_before,
        pl: wd.pad_before,
    })
}

/// Checks x [n,h,w,c] against f [kh,kw,c/groups,o]; returns the geometry.
fn check_pair(op: &'static str, a: &Conv2d, x: &[usize], f: &[usize]) -> Result<Geom> {
    a.check(op)?;
    if x.len() != 4 || f.len() != 4 {
        return Err(Error::shape(
            op,
            &[x, f],
            "needs input [batch, height, width, channels] and filter [height, width, in, out]",
        ));
    }
    if f[2] == 0 || x[3] != f[2] * a.groups || f[3] % a.groups != 0 {
        return Err(Error::shape(
            op,
            &[x, f],
            format!(
                "input channels {} must equal filter in-channels {} times groups {}, and out-channels {} divide by the groups",
                x[3], f[2], a.groups, f[3]
            ),
        ));
    }
    if f[0] == 0 || f[1] == 0 {
        return Err(Error::shape(op, &[x, f], "the filter window is empty"));
    }
    geom(op, a, x, f)
}

/// f32 sums of k products: rounding grows like sqrt(k) per partial sum of
/// size ~sqrt(k), so up to ~k ulps of the operands' scale in a long sum.
pub(crate) fn tolerance(op: &Op, x: &[&Tensor]) -> Tol {
    let k = match op {
        Op::Conv2d(_) => numel(&x[1].shape()[..3]),
        Op::Conv2dInputGrad(_, _) => x[1].shape()[0] * x[1].shape()[1] * x[1].shape()[3],
        _ => numel(&x[1].shape()[..3]),
    };
    Tol::new(2e-6 * (k as f64).sqrt().max(1.0) + 2e-7 * k as f64, 1e-5)
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    if x[0].dtype() != x[1].dtype() || !x[0].dtype().is_float() {
        return Err(Error::dtype(
            name,
            &[x[0].dtype(), x[1].dtype()],
            "needs float operands of one dtype",
        ));
    }
    let dt = x[0].dtype();
    match op {
        Op::Conv2d(a) => {
            let g = check_pair(name, a, x[0].shape(), x[1].shape())?;
            Ok((vec![g.n, g.oh, g.ow, g.o], dt))
        }
        Op::Conv2dInputGrad(a, xs) => {
            let g = check_pair(name, a, xs, x[1].shape())?;
            let want = [g.n, g.oh, g.ow, g.o];
            if x[0].shape() != want {
                return Err(Error::shape(
                    name,
                    &[x[0].shape(), x[1].shape(), xs],
                    format!("the output gradient must have shape {want:?}"),
                ));
            }
            Ok((xs.clone(), dt))
        }
        Op::Conv2dFilterGrad(a, fs) => {
            let g = check_pair(name, a, x[0].shape(), fs)?;
            let want = [g.n, g.oh, g.ow, g.o];
            if x[1].shape() != want {
                return Err(Error::shape(
                    name,
                    &[x[0].shape(), x[1].shape(), fs],
                    format!("the output gradient must have shape {want:?}"),
                ));
            }
            Ok((fs.clone(), dt))
        }
        _ => unreachable!(),
    }
}

/// Patch matrix of group `gi`: rows (n, oh, ow), columns (kh, kw, ci).
/// Batch entries in parallel, each filling its own rows.
fn im2col<F: Gemm>(x: &[F], g: &Geom, gi: usize) -> Vec<F> {
    let k = g.kh * g.kw * g.cg;
    let per = g.oh * g.ow * k;
    let mut cols = vec![F::ZERO; g.n * per];
    if per == 0 {
        return cols;
    }
    cols.par_chunks_mut(per).enumerate().for_each(|(n, cn)| {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let row = (oh * g.ow + ow) * k;
                for kh in 0..g.kh {
                    let ih = (oh * g.sh + kh * g.dh) as isize - g.pt as isize;
                    if ih < 0 || ih as usize >= g.h {
                        continue;
                    }
                    for kw in 0..g.kw {
                        let iw = (ow * g.sw + kw * g.dw) as isize - g.pl as isize;
                        if iw < 0 || iw as usize >= g.w {
                            continue;
                        }
                        let src = ((n * g.h + ih as usize) * g.w + iw as usize) * g.c + gi * g.cg;
                        let dst = row + (kh * g.kw + kw) * g.cg;
                        cn[dst..dst + g.cg].copy_from_slice(&x[src..src + g.cg]);
                    }
                }
            }
        }
    });
    cols
}

/// Adds a patch-matrix gradient back onto the input gradient of group `gi`;
/// batch entries in parallel, each adding into its own block of dx.
fn col2im<F: Gemm>(cols: &[F], dx: &mut [F], g: &Geom, gi: usize) {
    let k = g.kh * g.kw * g.cg;
    let per = g.h * g.w * g.c;
    if per == 0 {
        return;
    }
    dx.par_chunks_mut(per).enumerate().for_each(|(n, dn)| {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let row = ((n * g.oh + oh) * g.ow + ow) * k;
                for kh in 0..g.kh {
                    let ih = (oh * g.sh + kh * g.dh) as isize - g.pt as isize;
                    if ih < 0 || ih as usize >= g.h {
                        continue;
                    }
                    for kw in 0..g.kw {
                        let iw = (ow * g.sw + kw * g.dw) as isize - g.pl as isize;
                        if iw < 0 || iw as usize >= g.w {
                            continue;
                        }
                        let d = (ih as usize * g.w + iw as usize) * g.c + gi * g.cg;
                        let s = row + (kh * g.kw + kw) * g.cg;
                        for c in 0..g.cg {
                            dn[d + c] += cols[s + c];
                        }
                    }
                }
            }
        }
    });
}

fn conv_cpu<F: Gemm>(op: &Op, g: &Geom, p: &[F], q: &[F]) -> Vec<F> {
    let m = g.n * g.oh * g.ow;
    let k = g.kh * g.kw * g.cg;
    let o = g.o as isize;
    match op {
        Op::Conv2d(_) => {
            let mut y = vec![F::ZERO; m * g.o];
            for gi in 0..g.g {
                let cols = im2col(p, g, gi);
                // SAFETY: cols is [m, k], f is [k, o] read at column offset
                // gi*og, y is [m, o] written at the same offset.
                unsafe {
                    F::gemm(
                        m,
                        k,
                        g.og,
                        cols.as_ptr(),
                        k as isize,
                        1,
                        q.as_ptr().add(gi * g.og),
                        o,
                        1,
                        F::ZERO,
                        y.as_mut_ptr().add(gi * g.og),
                        o,
                        1,
                    );
                }
            }
            y
        }
        Op::Conv2dInputGrad(..) => {
            // p = dy [m, o], q = f [k, o]
            let mut dx = vec![F::ZERO; g.n * g.h * g.w * g.c];
            let mut cols = vec![F::ZERO; m * k];
            for gi in 0..g.g {
                // SAFETY: dy is [m, o] read at column offset gi*og; f read as
                // its transpose [og, k] at the same offset; cols is [m, k].
                unsafe {
                    F::gemm(
                        m,
                        g.og,
                        k,
                        p.as_ptr().add(gi * g.og),
                        o,
                        1,
                        q.as_ptr().add(gi * g.og),
                        1,
                        o,
                        F::ZERO,
                        cols.as_mut_ptr(),
                        k as isize,
                        1,
                    );
                }
                col2im(&cols, &mut dx, g, gi);
            }
            dx
        }
        Op::Conv2dFilterGrad(..) => {
            // p = x, q = dy [m, o]
            let mut df = vec![F::ZERO; k * g.o];
            for gi in 0..g.g {
                let cols = im2col(p, g, gi);
                // SAFETY: cols read as its transpose [k, m]; dy [m, o] and
                // df [k, o] at column offset gi*og.
                unsafe {
                    F::gemm(
                        k,
                        m,
                        g.og,
                        cols.as_ptr(),
                        1,
                        k as isize,
                        q.as_ptr().add(gi * g.og),
                        o,
                        1,
                        F::ZERO,
                        df.as_mut_ptr().add(gi * g.og),
                        o,
                        1,
                    );
                }
            }
            df
        }
        _ => unreachable!(),
    }
}

/// Gradient rules. The two backprop ops are linear in each operand, so their
/// own gradients are convolutions again.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let run = |o: Op, a: &Tensor, b: &Tensor| exec(o, &[a, b]).map(Some);
    Ok(match op {
        Op::Conv2d(a) => vec![
            run(Op::Conv2dInputGrad(a.clone(), x[0].shape().to_vec()), dy, x[1])?,
            run(Op::Conv2dFilterGrad(a.clone(), x[1].shape().to_vec()), x[0], dy)?,
        ],
        // z = dx(g, f): <dz, z> = <conv(dz, f), g> = <df(dz, g), f>
        Op::Conv2dInputGrad(a, _) => vec![
            run(Op::Conv2d(a.clone()), dy, x[1])?,
            run(Op::Conv2dFilterGrad(a.clone(), x[1].shape().to_vec()), dy, x[0])?,
        ],
        // z = df(x, g): <dz, z> = <dx(g, dz), x> = <conv(x, dz), g>
        Op::Conv2dFilterGrad(a, _) => vec![
            run(Op::Conv2dInputGrad(a.clone(), x[0].shape().to_vec()), x[1], dy)?,
            run(Op::Conv2d(a.clone()), x[0], dy)?,
        ],
        _ => unreachable!(),
    })
}

fn geom_of(op: &Op, x: &[&Tensor]) -> Result<Geom> {
    let name = op.name();
    match op {
        Op::Conv2d(a) => geom(name, a, x[0].shape(), x[1].shape()),
        Op::Conv2dInputGrad(a, xs) => geom(name, a, xs, x[1].shape()),
        Op::Conv2dFilterGrad(a, fs) => geom(name, a, x[0].shape(), fs),
        _ => unreachable!(),
    }
}

pub(crate) fn cpu(op: &Op, x: &[&Tensor], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    let g = geom_of(op, x)?;
    Ok(match (x[0].cpu_data(), x[1].cpu_data()) {
        (CpuData::F32(p), CpuData::F32(q)) => CpuData::F32(conv_cpu(op, &g, p, q)),
        (CpuData::F64(p), CpuData::F64(q)) => CpuData::F64(conv_cpu(op, &g, p, q)),
        _ => unreachable!(),
    })
}

fn params(
    g: &Geom,
    splits: usize,
    kc: usize,
    ktotal: usize,
    gm: usize,
    gn: usize,
    b0: usize,
    mode: usize,
) -> [u32; 24] {
    [
        g.n, g.h, g.w, g.c, g.oh, g.ow, g.o, g.kh, g.kw, g.cg, g.og, splits, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, kc,
        ktotal, gm, gn, b0, mode,
    ]
    .map(|v| v as u32)
}

pub(crate) fn gpu(op: &Op, gd: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let g = geom_of(op, x)?;
    let n_out = numel(out);
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    if n_out == 0 || pix == 0 || kg == 0 {
        return crate::ops::creation::fill_gpu(gd, n_out, 0.0, dtype);
    }
    let cols_bytes = (g.g * pix * kg * dtype.size()) as u64;
    if gd.gemm_register() && cols_bytes <= gd.max_binding() {
        return gpu_im2col(op, gd, x, &g, n_out, dtype);
    }
    let (mode, gm, gn, ktotal) = match op {
        Op::Conv2d(_) => (0, pix, g.og, kg),
        Op::Conv2dInputGrad(..) => (1, g.n * g.h * g.w, g.cg, g.kh * g.kw * g.og),
        _ => (2, kg, g.og, pix),
    };
    // Split long reductions so that enough workgroups run.
    let tiles = gm.div_ceil(64) * gn.div_ceil(64) * g.g;
    let splits = if mode == 2 {
        ktotal.div_ceil(512).min((256 / tiles).max(1)).max(1)
    } else {
        1
    };
    let kc = ktotal.div_ceil(splits);
    let y = gd.alloc(op.name(), (n_out * dtype.size()) as u64)?;
    let partial = if splits > 1 {
        Some(gd.alloc(op.name(), (splits * n_out * dtype.size()) as u64)?)
    } else {
        None
    };
    let dst = partial.as_ref().unwrap_or(&y);
    let batches = g.g * splits;
    let mut b0 = 0;
    while b0 < batches {
        let nz = (batches - b0).min(65535);
        let (entry, groups) = super::matmul::gemm_grid(gd, gm, gn, nz);
        gd.launch(&Launch {
            kernel: &CONV,
            entry,
            ty: super::ktype(dtype),
            consts: &[],
            params: &params(&g, splits, kc, ktotal, gm, gn, b0, mode),
            bufs: &[x[0].gpu_buf(), x[1].gpu_buf(), dst],
            groups,
        })?;
        b0 += nz;
    }
    if let Some(p) = &partial {
        reduce::sum_slices(gd, p, &y, splits, n_out, dtype)?;
    }
    Ok(y)
}

/// Convolutions as explicit patch matrices and strided GEMMs, one batch
/// entry per group: the plan for CPU adapters, whose GEMM kernel is fastest
/// on plain strided operands.
fn gpu_im2col(op: &Op, gd: &GpuDevice, x: &[&Tensor], g: &Geom, n_out: usize, dtype: DType) -> Result<GpuBuf> {
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    let cols = gd.alloc(op.name(), (g.g * pix * kg * dtype.size()) as u64)?;
    let p = params(g, 1, 0, 0, 0, 0, 0, 0);
    let launch = |entry: &'static str, n: usize, bufs: &[&GpuBuf]| {
        gd.launch(&Launch {
            kernel: &CONV,
            entry,
            ty: super::ktype(dtype),
            consts: &[],
            params: &p,
            bufs,
            groups: crate::device::gpu::grid(n, 256),
        })
    };
    let y = gd.alloc(op.name(), (n_out * dtype.size()) as u64)?;
    // One GEMM per group: C_g = A_g x B_g with the given strides.
    #[allow(clippy::too_many_arguments)]
    let gemm = |a: &GpuBuf,
                b: &GpuBuf,
                c: &GpuBuf,
                (m, n, k): (usize, usize, usize),
                (ta, tb): (bool, bool),
                (lda, ldb, ldc): (usize, usize, usize),
                (sa, sb, sc): (usize, usize, usize)| {
        super::matmul::GemmLaunch {
            a,
            b,
            c,
            m,
            n,
            k,
            batch: g.g,
            ta,
            tb,
            lda,
            ldb,
            ldc,
            sa,
            sb,
            sc,
        }
        .launch(gd, dtype)
    };
    match op {
        Op::Conv2d(_) => {
            // y[pix, g*og + o] = cols_g [pix, kg] x f[kg, g*og + o]
            launch("im2col", g.g * pix * kg, &[x[0].gpu_buf(), &cols])?;
            gemm(
                &cols,
                x[1].gpu_buf(),
                &y,
                (pix, g.og, kg),
                (false, false),
                (kg, g.o, g.o),
                (pix * kg, g.og, g.og),
            )?;
        }
        Op::Conv2dInputGrad(..) => {
            // cols_g [pix, kg] = dy[pix, g*og..] x f_g^T, then summed back onto dx.
            gemm(
                x[0].gpu_buf(),
                x[1].gpu_buf(),
                &cols,
                (pix, kg, g.og),
                (false, true),
                (g.o, g.o, kg),
                (g.og, g.og, pix * kg),
            )?;
            launch("col2im", n_out, &[&cols, &y])?;
        }
        _ => {
            // df[kg, g*og + o] = cols_g^T [kg, pix] x dy[pix, g*og + o]
            launch("im2col", g.g * pix * kg, &[x[0].gpu_buf(), &cols])?;
            gemm(
                &cols,
                x[1].gpu_buf(),
                &y,
                (kg, g.og, pix),
                (true, false),
                (kg, g.o, g.o),
                (pix * kg, g.og, g.og),
            )?;
        }
    }
    Ok(y)
}

// ---- public API ----------------------------------------------------------

fn groups_of(op: &'static str, x: &[usize], f: &[usize]) -> Result<usize> {
    if x.len() != 4 || f.len() != 4 || f[2] == 0 || x[3] % f[2] != 0 {
        return Err(Error::shape(
            op,
            &[x, f],
            "input channels must be a multiple of the filter's in-channels",
        ));
    }
    Ok(x[3] / f[2])
}

/// `tf.nn.conv2d(input, filters, strides, padding, dilations)`, NHWC / HWIO.
/// Grouped when the input has a multiple of the filter's in-channels.
pub fn conv2d(
    x: &Tensor,
    filters: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d", x.shape(), filters.shape())?;
    exec(
        Op::Conv2d(Conv2d {
            strides,
            padding,
            dilations,
            groups,
        }),
        &[x, filters],
    )
}

/// `tf.nn.depthwise_conv2d`: filter [kh, kw, channels, multiplier]; output
/// channel c * multiplier + m.
pub fn depthwise_conv2d(
    x: &Tensor,
    filter: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let f = filter.shape();
    if f.len() != 4 || x.rank() != 4 || f[2] != x.shape()[3] {
        return Err(Error::shape(
            "depthwise_conv2d",
            &[x.shape(), f],
            "needs input [n,h,w,c] and filter [kh,kw,c,multiplier]",
        ));
    }
    let fr = filter.reshape(&[f[0] as isize, f[1] as isize, 1, (f[2] * f[3]) as isize])?;
    exec(
        Op::Conv2d(Conv2d {
            strides,
            padding,
            dilations,
            groups: f[2],
        }),
        &[x, &fr],
    )
}

/// `tf.nn.conv2d_backprop_input`: d loss / d input of shape `input_shape`.
pub fn conv2d_backprop_input(
    input_shape: &[usize],
    filters: &Tensor,
    dy: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d_backprop_input", input_shape, filters.shape())?;
    exec(
        Op::Conv2dInputGrad(
            Conv2d {
                strides,
                padding,
                dilations,
                groups,
            },
            input_shape.to_vec(),
        ),
        &[dy, filters],
    )
}

/// `tf.nn.conv2d_backprop_filter`: d loss / d filter of shape `filter_shape`.
pub fn conv2d_backprop_filter(
    x: &Tensor,
    filter_shape: &[usize],
    dy: &Tensor,
    strides: [usize; 2],
    padding: Padding,
    dilations: [usize; 2],
) -> Result<Tensor> {
    let groups = groups_of("conv2d_backprop_filter", x.shape(), filter_shape)?;
    exec(
        Op::Conv2dFilterGrad(
            Conv2d {
                strides,
                padding,
                dilations,
                groups,
            },
            filter_shape.to_vec(),
        ),
        &[x, dy],
    )
}
