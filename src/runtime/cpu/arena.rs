//! The CPU device's memory plan for traced steps: a graph's host buffers
//! are recycled from one op to the next and from one replay to the next.
//!
//! A graph replay on the CPU device serves its kernels from an [`Arena`]:
//! when a result dies (its last reader has run, or a variable's old value
//! is replaced) and nothing else holds its buffer, the buffer goes back to
//! the arena, and the next kernel that asks for an output of that dtype
//! and length gets it instead of new memory. Every replay of a graph asks
//! for the same outputs in the same order, so from the second replay on
//! its results come from the buffers the previous replays left. Kernels
//! ask through [`output`] (every element will be written) or [`zeros`]
//! (they accumulate); outside a replay both simply allocate. (An eager op
//! that runs on the replaying thread meanwhile, say in a callback that
//! reads an output, is served and recycled by the arena too.) Scratch
//! memory inside a kernel comes from [`with_scratch`], one buffer per
//! thread, kept between calls.

use super::CpuData;
use crate::core::dtype::DType;
use half::{bf16, f16};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// Host buffers a graph keeps between its ops and replays, by dtype and
/// length, with counts of how its kernels' outputs were served.
#[derive(Default)]
pub(crate) struct Arena {
    free: HashMap<(DType, usize), Vec<CpuData>>,
    /// Outputs asked for per dtype and length since the last reset: what
    /// [`Arena::trim`] keeps.
    demand: HashMap<(DType, usize), usize>,
    /// Outputs served from recycled buffers since the last [`Arena::reset_counts`].
    pub(crate) reused: usize,
    /// Outputs that needed new memory since then.
    pub(crate) fresh: usize,
    /// Bytes of every output served since then.
    pub(crate) served_bytes: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Arena>> = const { RefCell::new(None) };
}

impl Arena {
    /// Runs `f` with this arena serving the CPU kernels' outputs on this
    /// thread (the one that launches them; a kernel's own worker threads
    /// only fill what it was given).
    pub(crate) fn serve<R>(&mut self, f: impl FnOnce() -> R) -> R {
        struct Back<'a> {
            arena: &'a mut Arena,
            prev: Option<Arena>,
        }
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                // Also on unwinding: the buffers stay with their graph.
                let prev = self.prev.take();
                if let Some(a) = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev)) {
                    *self.arena = a;
                }
            }
        }
        let mine = std::mem::take(self);
        let prev = CURRENT.with(|c| c.borrow_mut().replace(mine));
        let _back = Back { arena: self, prev };
        f()
    }

    /// Buffers held for reuse.
    pub(crate) fn buffers(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }

    /// Bytes of the buffers held for reuse.
    pub(crate) fn bytes(&self) -> u64 {
        let each = |(k, v): (&(DType, usize), &Vec<CpuData>)| (host_size(k.0) * k.1 * v.len()) as u64;
        self.free.iter().map(each).sum()
    }

    /// Starts the counts of a new replay.
    pub(crate) fn reset_counts(&mut self) {
        (self.reused, self.fresh, self.served_bytes) = (0, 0, 0);
        self.demand.clear();
    }

    /// Keeps, of each dtype and length, at most as many buffers as the
    /// replay just run asked for: what the next one will ask for again.
    /// Buffers nothing asks for (a host input's, released every replay)
    /// are freed, so the arena does not grow from replay to replay.
    pub(crate) fn trim(&mut self) {
        let demand = &self.demand;
        self.free.retain(|k, v| {
            v.truncate(demand.get(k).copied().unwrap_or(0));
            !v.is_empty()
        });
    }

    fn take<T: 'static>(&mut self, n: usize) -> Option<Vec<T>> {
        let dtype = dtype_of::<T>()?;
        self.served_bytes += (n * host_size(dtype)) as u64;
        *self.demand.entry((dtype, n)).or_default() += 1;
        let got = self
            .free
            .get_mut(&(dtype, n))
            .and_then(Vec::pop)
            .map(poison)
            .and_then(|d| unwrap::<T>(d).ok())
            .filter(|v| v.len() == n);
        match got {
            Some(_) => self.reused += 1,
            None => self.fresh += 1,
        }
        got
    }
}

/// Gives `data` back to the arena serving this thread, if any, for the next
/// output of its dtype and length; without one it is freed.
pub(crate) fn recycle(data: CpuData) {
    if data.is_empty() {
        return;
    }
    CURRENT.with(|c| {
        if let Some(a) = c.borrow_mut().as_mut() {
            a.free.entry((data.dtype(), data.len())).or_default().push(data);
        }
    });
}

/// [`recycle`] for a typed vector (a kernel's temporary taken with
/// [`output`] or [`zeros`]).
pub(crate) fn give_back<T: 'static>(v: Vec<T>) {
    if let Some(d) = wrap(v) {
        recycle(d);
    }
}

/// `n` values for a kernel that writes every one of them: a recycled
/// buffer (holding an earlier result's values) during a graph replay,
/// else new zeros.
pub(crate) fn output<T: Copy + Default + 'static>(n: usize) -> Vec<T> {
    let got = CURRENT.with(|c| c.borrow_mut().as_mut().and_then(|a| a.take::<T>(n)));
    got.unwrap_or_else(|| vec![T::default(); n])
}

/// [`output`] for a kernel that fills it through `fill`, so that new memory
/// (outside a replay) is not zeroed first: an eager elementwise op would
/// write its output twice, and at memory speed that is twice the time.
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn output_filled<T: Copy + Default + 'static>(
    n: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    match CURRENT.with(|c| c.borrow_mut().as_mut().and_then(|a| a.take::<T>(n))) {
        Some(mut v) => {
            // SAFETY: MaybeUninit<T> has T's layout, and v's n elements are
            // initialized; `fill` writes initialized values over them.
            let s = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<MaybeUninit<T>>(), v.len()) };
            fill(s);
            v
        }
        None => {
            let mut v = Vec::with_capacity(n);
            if cfg!(debug_assertions) {
                // All ones: NaN as a float, so that an element `fill`
                // missed shows in tests, as a recycled buffer's poison.
                // SAFETY: the n elements lie inside the capacity; any bytes
                // are a valid MaybeUninit.
                unsafe { std::ptr::write_bytes(v.as_mut_ptr(), 0xFF, n) };
            }
            fill(&mut v.spare_capacity_mut()[..n]);
            // SAFETY: `fill` wrote all n elements (the caller's promise).
            unsafe { v.set_len(n) };
            v
        }
    }
}

/// `n` zeros (`T::default()`) for a kernel that accumulates into them.
pub(crate) fn zeros<T: Copy + Default + 'static>(n: usize) -> Vec<T> {
    let got = CURRENT.with(|c| c.borrow_mut().as_mut().and_then(|a| a.take::<T>(n)));
    match got {
        Some(mut v) => {
            v.fill(T::default());
            v
        }
        None => vec![T::default(); n],
    }
}

/// `v` rounded to `dtype` ([`CpuData::from_f64`]) in an [`output`] buffer.
pub(crate) fn from_f64(dtype: DType, v: &[f64]) -> CpuData {
    fn each<T: Copy + Default + 'static>(v: &[f64], f: impl Fn(f64) -> T) -> Vec<T> {
        // SAFETY: the loop writes all v.len() elements.
        unsafe {
            output_filled(v.len(), |o| {
                for (o, &x) in o.iter_mut().zip(v) {
                    o.write(f(x));
                }
            })
        }
    }
    match dtype {
        DType::F32 => CpuData::F32(each(v, |x| x as f32)),
        // Through f32 (as the GPU fill, and Eigen's half(double)).
        DType::F16 => CpuData::F16(each(v, |x| f16::from_f32(x as f32))),
        // Through f32, as TensorFlow converts (Eigen's bfloat16(double)).
        DType::BF16 => CpuData::BF16(each(v, |x| bf16_nearest(x as f32))),
        DType::F64 => CpuData::F64(each(v, |x| x)),
        DType::I32 => CpuData::I32(each(v, |x| x as i32)),
        DType::Bool => CpuData::Bool(each(v, |x| x != 0.0)),
    }
}

/// Runs `f` on `n` zeros of scratch memory: one of this thread's buffers
/// of `T`, grown when needed and kept for the next call (convolutions'
/// patch matrices, per block, on rayon's threads; f64 accumulators). A
/// nested call gets another buffer, also kept.
pub(crate) fn with_scratch<T: Copy + Default + 'static, R>(n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    scratch(n, true, f)
}

/// [`with_scratch`] for a caller that writes every element before reading
/// it: the values are an earlier call's (not zeroed first).
pub(crate) fn with_scratch_unzeroed<T: Copy + Default + 'static, R>(n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    scratch(n, false, f)
}

/// Scratch buffers larger than this go back to the allocator after the
/// call instead of staying with their thread (a one-off large reduction
/// must not pin its size on every worker for the life of the process).
const SCRATCH_KEPT: usize = 16 << 20;

fn scratch<T: Copy + Default + 'static, R>(n: usize, zero: bool, f: impl FnOnce(&mut [T]) -> R) -> R {
    use std::any::TypeId;
    thread_local! {
        static SCRATCH: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
    }
    // Each type's free buffers: a stack, so that nested calls reuse theirs too.
    let mut buf: Vec<T> = SCRATCH
        .with(|s| {
            let mut s = s.borrow_mut();
            let stack = s.get_mut(&TypeId::of::<T>())?.downcast_mut::<Vec<Vec<T>>>()?;
            stack.pop()
        })
        .unwrap_or_default();
    if zero {
        buf.clear();
    }
    if buf.len() < n {
        buf.resize(n, T::default());
    }
    if !zero {
        poison_first(&mut buf, n);
    }
    let r = f(&mut buf[..n]);
    if buf.capacity().saturating_mul(size_of::<T>()) > SCRATCH_KEPT {
        return r;
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let stack = s
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(Vec::<Vec<T>>::new()));
        if let Some(stack) = stack.downcast_mut::<Vec<Vec<T>>>() {
            stack.push(buf);
        }
    });
    r
}

/// f32 to f16 (to nearest, ties to even) in an [`output`] buffer, eight at
/// a time with the CPU's F16C instructions where it has them (a scalar
/// conversion tests for them per element: a mixed_float16 step spent
/// most of its time there).
fn to_f16(v: &[f32]) -> Vec<f16> {
    // SAFETY: both paths write all v.len() elements.
    unsafe {
        output_filled(v.len(), |o| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
                return f16c::to_f16(v, o);
            }
            for (o, &x) in o.iter_mut().zip(v) {
                o.write(f16::from_f32(x));
            }
        })
    }
}

/// f16 to f32 (exact), as [`to_f16`].
fn from_f16(v: &[f16]) -> Vec<f32> {
    // SAFETY: both paths write all v.len() elements.
    unsafe {
        output_filled(v.len(), |o| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
                return f16c::from_f16(v, o);
            }
            for (o, &x) in o.iter_mut().zip(v) {
                o.write(x.to_f32());
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use half::f16;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Round to nearest even (`_MM_FROUND_TO_NEAREST_INT`, not MXCSR's mode).
    const NEAREST: i32 = 0x00;

    /// # Safety
    /// The CPU has AVX and F16C; `o` is as long as `v`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn to_f16(v: &[f32], o: &mut [MaybeUninit<f16>]) {
        let n = v.len().min(o.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: elements i..i + 8 are inside both slices; unaligned
            // loads and stores; f16 is 16 bits.
            unsafe {
                let x = _mm256_loadu_ps(v.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<NEAREST>(x);
                _mm_storeu_si128(o.as_mut_ptr().add(i).cast::<__m128i>(), h);
            }
            i += 8;
        }
        for j in i..n {
            o[j].write(f16::from_f32(v[j]));
        }
    }

    /// # Safety
    /// The CPU has AVX and F16C; `o` is as long as `v`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn from_f16(v: &[f16], o: &mut [MaybeUninit<f32>]) {
        let n = v.len().min(o.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: as in to_f16.
            unsafe {
                let h = _mm_loadu_si128(v.as_ptr().add(i).cast::<__m128i>());
                _mm256_storeu_ps(o.as_mut_ptr().add(i).cast::<f32>(), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            o[j].write(v[j].to_f32());
        }
    }
}

/// `x` rounded to bf16 (to nearest, ties to even; NaN quieted, sign
/// kept), as `bf16::from_f32` but with a select instead of a branch.
fn bf16_nearest(x: f32) -> bf16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let nan = ((b >> 16) | 0x40) as u16;
    bf16::from_bits(if b & 0x7fff_ffff > 0x7f80_0000 { nan } else { rounded })
}

/// A float as TensorFlow's x86 kernel converts it to int32: truncated
/// toward zero; NaN, infinities and values beyond int32 give `i32::MIN`
/// (the hardware's "integer indefinite").
fn to_i32(x: f64) -> i32 {
    let t = x.trunc();
    if (-2147483648.0..2147483648.0).contains(&t) {
        t as i32
    } else {
        i32::MIN
    }
}

/// `d` as `to` ([`CpuData::cast`]) in an [`output`] buffer.
pub(crate) fn cast(d: &CpuData, to: DType) -> CpuData {
    fn each<A: Copy, T: Copy + Default + 'static>(v: &[A], f: impl Fn(A) -> T) -> Vec<T> {
        // SAFETY: the loop writes all v.len() elements.
        unsafe {
            output_filled(v.len(), |o| {
                for (o, &x) in o.iter_mut().zip(v) {
                    o.write(f(x));
                }
            })
        }
    }
    match (d, to) {
        (CpuData::F32(v), DType::F32) => CpuData::F32(each(v, |x| x)),
        (CpuData::F16(v), DType::F16) => CpuData::F16(each(v, |x| x)),
        (CpuData::BF16(v), DType::BF16) => CpuData::BF16(each(v, |x| x)),
        (CpuData::F64(v), DType::F64) => CpuData::F64(each(v, |x| x)),
        (CpuData::I32(v), DType::I32) => CpuData::I32(each(v, |x| x)),
        (CpuData::Bool(v), DType::Bool) => CpuData::Bool(each(v, |x| x)),
        (CpuData::F16(v), DType::F32) => CpuData::F32(from_f16(v)),
        (CpuData::F32(v), DType::F16) => CpuData::F16(to_f16(v)),
        (CpuData::I32(v), DType::F16) => CpuData::F16(each(v, |x| f16::from_f32(x as f32))),
        (CpuData::I32(v), DType::F32) => CpuData::F32(each(v, |x| x as f32)),
        // Bit operations without branches, so that the loops vectorize.
        (CpuData::BF16(v), DType::F32) => CpuData::F32(each(v, |x| f32::from_bits(u32::from(x.to_bits()) << 16))),
        (CpuData::F32(v), DType::BF16) => CpuData::BF16(each(v, bf16_nearest)),
        (CpuData::I32(v), DType::BF16) => CpuData::BF16(each(v, |x| bf16_nearest(x as f32))),
        _ => with_scratch(d.len(), |w: &mut [f64]| {
            d.write_f64(w);
            match to {
                DType::I32 => CpuData::I32(each(w, to_i32)),
                _ => from_f64(to, w),
            }
        }),
    }
}

/// In debug builds (the tests), a recycled buffer is filled with NaN
/// (`i32::MIN`, `true`) first, so that a kernel that leaves an element of
/// its output unwritten shows it instead of an earlier result's value.
fn poison(mut d: CpuData) -> CpuData {
    if cfg!(debug_assertions) {
        match &mut d {
            CpuData::F32(v) => v.fill(f32::NAN),
            CpuData::F16(v) => v.fill(f16::NAN),
            CpuData::BF16(v) => v.fill(bf16::NAN),
            CpuData::F64(v) => v.fill(f64::NAN),
            CpuData::I32(v) => v.fill(i32::MIN),
            CpuData::Bool(v) => v.fill(true),
        }
    }
    d
}

/// Bytes of one element in host memory (a bool is one byte here, a word on
/// a GPU).
fn host_size(dtype: DType) -> usize {
    match dtype {
        DType::Bool => 1,
        d => d.size(),
    }
}

/// [`poison`] for the first `n` values of a scratch buffer of any element
/// type (debug builds only).
fn poison_first<T: 'static>(v: &mut Vec<T>, n: usize) {
    if cfg!(debug_assertions) {
        let v = v as &mut dyn Any;
        if let Some(v) = v.downcast_mut::<Vec<f32>>() {
            v[..n].fill(f32::NAN);
        } else if let Some(v) = v.downcast_mut::<Vec<f64>>() {
            v[..n].fill(f64::NAN);
        } else if let Some(v) = v.downcast_mut::<Vec<f16>>() {
            v[..n].fill(f16::NAN);
        } else if let Some(v) = v.downcast_mut::<Vec<bf16>>() {
            v[..n].fill(bf16::NAN);
        } else if let Some(v) = v.downcast_mut::<Vec<i32>>() {
            v[..n].fill(i32::MIN);
        }
    }
}

/// The dtype whose host vectors hold `T`.
fn dtype_of<T: 'static>() -> Option<DType> {
    let id = std::any::TypeId::of::<T>();
    [
        (std::any::TypeId::of::<f32>(), DType::F32),
        (std::any::TypeId::of::<f16>(), DType::F16),
        (std::any::TypeId::of::<bf16>(), DType::BF16),
        (std::any::TypeId::of::<f64>(), DType::F64),
        (std::any::TypeId::of::<i32>(), DType::I32),
        (std::any::TypeId::of::<bool>(), DType::Bool),
    ]
    .into_iter()
    .find_map(|(t, d)| (t == id).then_some(d))
}

/// `v` as host data, when `T` is one of its element types.
fn wrap<T: 'static>(v: Vec<T>) -> Option<CpuData> {
    fn cast<A: 'static, B: 'static>(v: Vec<A>) -> Option<Vec<B>> {
        let mut slot = Some(v);
        (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<Vec<B>>>()
            .and_then(Option::take)
    }
    match dtype_of::<T>()? {
        DType::F32 => cast(v).map(CpuData::F32),
        DType::F16 => cast(v).map(CpuData::F16),
        DType::BF16 => cast(v).map(CpuData::BF16),
        DType::F64 => cast(v).map(CpuData::F64),
        DType::I32 => cast(v).map(CpuData::I32),
        DType::Bool => cast(v).map(CpuData::Bool),
    }
}

/// The vector inside `d` when it holds `T`s.
fn unwrap<T: 'static>(d: CpuData) -> Result<Vec<T>, CpuData> {
    fn cast<A: 'static, B: 'static>(v: Vec<A>) -> Result<Vec<B>, Vec<A>> {
        let mut slot = Some(v);
        let got = (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<Vec<B>>>()
            .and_then(Option::take);
        match (got, slot) {
            (Some(b), _) => Ok(b),
            (None, Some(a)) => Err(a),
            (None, None) => Ok(Vec::new()),
        }
    }
    match d {
        CpuData::F32(v) => cast(v).map_err(CpuData::F32),
        CpuData::F16(v) => cast(v).map_err(CpuData::F16),
        CpuData::F64(v) => cast(v).map_err(CpuData::F64),
        CpuData::BF16(v) => cast(v).map_err(CpuData::BF16),
        CpuData::I32(v) => cast(v).map_err(CpuData::I32),
        CpuData::Bool(v) => cast(v).map_err(CpuData::Bool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_reuses_what_died() {
        let mut a = Arena::default();
        a.serve(|| {
            let v: Vec<f32> = output(1000);
            assert_eq!(v.len(), 1000);
            let p = v.as_ptr();
            recycle(CpuData::F32(v));
            // Another dtype or length does not take it.
            assert_eq!(output::<i32>(1000).len(), 1000);
            assert_eq!(output::<f32>(999).len(), 999);
            let w: Vec<f32> = zeros(1000);
            assert_eq!(w.as_ptr(), p);
            assert!(w.iter().all(|&x| x == 0.0));
        });
        assert_eq!((a.reused, a.fresh), (1, 3));
        // Trimmed to what the replay asked for: one f32 buffer of 1000.
        a.reset_counts();
        a.serve(|| {
            drop(output::<f32>(1000));
            recycle(CpuData::F32(vec![0.0; 1000]));
            recycle(CpuData::F32(vec![0.0; 1000]));
            recycle(CpuData::F64(vec![0.0; 7]));
        });
        a.trim();
        assert_eq!((a.buffers(), a.bytes()), (1, 4000));
        // Outside a replay nothing is kept.
        recycle(CpuData::F32(vec![1.0; 1000]));
        assert_eq!(a.buffers(), 1);
    }

    #[test]
    fn unzeroed_scratch_keeps_its_buffer() {
        let p = with_scratch_unzeroed::<i32, _>(8, |s| {
            s.fill(5);
            s.as_ptr()
        });
        with_scratch_unzeroed::<i32, _>(4, |s| {
            assert_eq!(s.as_ptr(), p);
            // Debug builds poison it, so that a caller that reads before
            // writing shows in the tests.
            let want = if cfg!(debug_assertions) { i32::MIN } else { 5 };
            assert_eq!(s, [want; 4]);
        });
        // A buffer over the cap is not kept.
        let big = SCRATCH_KEPT / 4 + 1;
        let p = with_scratch_unzeroed::<f32, _>(big, |s| s.as_ptr() as usize);
        let q = with_scratch_unzeroed::<f32, _>(16, |s| s.as_ptr() as usize);
        assert_ne!(p, q);
    }

    #[test]
    fn scratch_is_zeroed_and_nests() {
        with_scratch::<f32, _>(8, |s| {
            s.fill(3.0);
            with_scratch::<f32, _>(4, |t| assert!(t.iter().all(|&x| x == 0.0)));
        });
        with_scratch::<f32, _>(8, |s| assert!(s.iter().all(|&x| x == 0.0)));
    }
}
