//! CPU reference kernel of the unary family: [`UnaryOp::apply`] and
//! [`UnaryOp::derivative`] (for `UnaryGrad`) element by element.

use super::CpuData;
use super::arena::output_filled;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::Float;
use crate::core::op::unary::with_unary;
use crate::core::op::unary::*;
use crate::core::op::*;
use crate::runtime::Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per task of the parallel loops.
const PIECE: usize = 1 << 14;

/// `out[i] = f(a[i], b[i], c[i])` over one piece, compiled for AVX2 and FMA
/// where the CPU has them (the closures inline into it: twice the lanes
/// for arithmetic-bound ops such as `exp`).
#[inline(always)]
fn piece<F: Float>(out: &mut [MaybeUninit<F>], a: &[F], b: &[F], c: &[F], f: &(impl Fn(F, F, F) -> F + Sync)) {
    #[inline(always)]
    fn body<F: Float>(out: &mut [MaybeUninit<F>], a: &[F], b: &[F], c: &[F], f: &impl Fn(F, F, F) -> F) {
        for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
            o.write(f(a, b, c));
        }
    }
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<F: Float>(out: &mut [MaybeUninit<F>], a: &[F], b: &[F], c: &[F], f: &impl Fn(F, F, F) -> F) {
        body(out, a, b, c, f)
    }
    /// # Safety
    /// The CPU has AVX-512F (and AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<F: Float>(out: &mut [MaybeUninit<F>], a: &[F], b: &[F], c: &[F], f: &impl Fn(F, F, F) -> F) {
        body(out, a, b, c, f)
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: checked just above.
        return unsafe { avx512(out, a, b, c, f) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: checked just above.
        return unsafe { avx2(out, a, b, c, f) };
    }
    body(out, a, b, c, f)
}

/// `out[i] = f(a[i], b[i], c[i])` over the shortest of them, on this
/// thread, in [`piece`]'s AVX2 build where the CPU has it (the fused
/// kernels' CPU twin evaluates its ops with it; `f` should be
/// `#[inline(always)]`).
pub(crate) fn apply3<F: Float>(out: &mut [F], a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> F + Sync) {
    // SAFETY: MaybeUninit<F> has F's layout, and `piece` only writes
    // initialized values through the view.
    let out = unsafe { &mut *(out as *mut [F] as *mut [MaybeUninit<F>]) };
    piece(out, a, b, c, &f);
}

/// `f(a[i], b[i], c[i])` for every i (b and c as long as a; a unary op
/// passes its operand thrice), large arrays on every core.
fn map3<F: Float>(a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> F + Sync + Send) -> Vec<F> {
    // SAFETY: b and c are as long as a (infer), so the pieces zip whole and
    // write every element.
    unsafe {
        output_filled(a.len(), |out| {
            if a.len() > 1 << 16 {
                out.par_chunks_mut(PIECE)
                    .zip(a.par_chunks(PIECE).zip(b.par_chunks(PIECE)).zip(c.par_chunks(PIECE)))
                    .for_each(|(o, ((a, b), c))| piece(o, a, b, c, &f));
            } else {
                piece(out, a, b, c, &f);
            }
        })
    }
}

pub(crate) fn cpu(op: &Op, x: &[Operand], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    // The closures are always inlined: LLVM's size threshold would leave
    // a large op's (softplus: exp and ln1p) a call per element, which
    // neither vectorizes nor gets the AVX2 build.
    fn grad<F: Float>(x: &[F], y: &[F], dy: &[F], d: impl Fn(F, F) -> F + Sync + Send) -> Vec<F> {
        map3(
            x,
            y,
            dy,
            #[inline(always)]
            move |v, r, g| g * d(v, r),
        )
    }
    /// The op on every element (the operand passed thrice: one loop form).
    fn map<F: Float>(v: &[F], f: impl Fn(F) -> F + Sync + Send) -> Vec<F> {
        map3(
            v,
            v,
            v,
            #[inline(always)]
            move |e, _, _| f(e),
        )
    }
    Ok(match (op, x[0].cpu_data()) {
        (Op::Unary(u), CpuData::F32(v)) => with_unary!(*u, |k| CpuData::F32(map(
            v,
            #[inline(always)]
            |e| k.apply(e)
        ))),
        (Op::Unary(u), CpuData::F64(v)) => CpuData::F64(map(v, |e| u.apply(e))),
        (Op::UnaryGrad(u), d) => match (d, x[1].cpu_data(), x[2].cpu_data()) {
            (CpuData::F32(a), CpuData::F32(b), CpuData::F32(c)) => {
                with_unary!(*u, |k| CpuData::F32(grad(
                    a,
                    b,
                    c,
                    #[inline(always)]
                    |v, r| k.derivative(v, r)
                )))
            }
            (CpuData::F64(a), CpuData::F64(b), CpuData::F64(c)) => {
                CpuData::F64(grad(a, b, c, |v, r| u.derivative(v, r)))
            }
            _ => unreachable!(),
        },
        _ => unreachable!("f16 runs through f32; ints are rejected by infer"),
    })
}
