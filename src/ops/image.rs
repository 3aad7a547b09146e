//! Image ops composed of the primitive ops (so they run, trace and export
//! on every device without kernels of their own): `affine_transform`,
//! TensorFlow's `ImageProjectiveTransformV3` as `keras.ops.image` calls it.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

/// How `affine_transform` reads points outside the image (Keras'
/// `fill_mode`; TensorFlow's `FILL_*` modes, after SciPy's `ndimage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillMode {
    /// `dcba|abcd|dcba`: the image mirrored about its edges.
    Reflect,
    /// `abcd|abcd|abcd`: the image repeated.
    Wrap,
    /// `kkkk|abcd|kkkk`: the fill value.
    Constant,
    /// `aaaa|abcd|dddd`: the nearest edge pixel.
    Nearest,
}

impl FillMode {
    /// The mode of a Keras name (`reflect`, `wrap`, `constant`, `nearest`).
    pub fn from_name(name: &str) -> Result<FillMode> {
        match name {
            "reflect" => Ok(FillMode::Reflect),
            "wrap" => Ok(FillMode::Wrap),
            "constant" => Ok(FillMode::Constant),
            "nearest" => Ok(FillMode::Nearest),
            m => Err(Error::arg(
                "affine_transform",
                format!("fill_mode {m:?} is not reflect, wrap, constant or nearest"),
            )),
        }
    }
}

/// `in` mapped into `[0, len - 1]` by `mode` (TensorFlow's
/// `MapCoordinate`; `Constant` leaves it as it is).
fn map_coordinate(c: &Tensor, len: usize, mode: FillMode) -> Result<Tensor> {
    let last = len as f64 - 1.0;
    let clamp = |t: Tensor| -> Result<Tensor> { t.maximum(&t.scalar_like(0.0)?)?.minimum(&t.scalar_like(last)?) };
    if mode == FillMode::Constant {
        return Ok(c.clone());
    }
    if len <= 1 && mode != FillMode::Nearest {
        return c.zeros_like();
    }
    let below = c.less(&c.scalar_like(0.0)?)?;
    let above = c.greater(&c.scalar_like(last)?)?;
    let mapped = match mode {
        FillMode::Reflect => {
            let sz2 = 2.0 * len as f64;
            // Below 0: shift by whole periods, then mirror.
            let a = c.neg()?.div_scalar(sz2)?.floor()?.mul_scalar(sz2)?.add(c)?;
            let a = a
                .less(&a.scalar_like(-(len as f64))?)?
                .where_(&a.add_scalar(sz2)?, &a.neg()?.sub_scalar(1.0)?)?;
            // Above len - 1: the same from the other side.
            let b = c.sub(&c.div_scalar(sz2)?.floor()?.mul_scalar(sz2)?)?;
            let b = b
                .greater_equal(&b.scalar_like(len as f64)?)?
                .where_(&b.neg()?.add_scalar(sz2 - 1.0)?, &b)?;
            below.where_(&a, &above.where_(&b, c)?)?
        }
        FillMode::Wrap => {
            let (n, sz) = (len as f64, last);
            let a = c
                .neg()?
                .div_scalar(sz)?
                .floor()?
                .add_scalar(1.0)?
                .mul_scalar(n)?
                .add(c)?;
            let b = c.sub(&c.div_scalar(sz)?.floor()?.mul_scalar(n)?)?;
            below.where_(&a, &above.where_(&b, c)?)?
        }
        FillMode::Nearest | FillMode::Constant => c.clone(),
    };
    clamp(mapped)
}

/// `keras.ops.image.affine_transform(images, transforms, interpolation,
/// fill_mode, fill_value)` for `[batch, height, width, channels]` float
/// images: each output pixel `(x, y)` reads the input at `((a0 x + a1 y +
/// a2) / k, (b0 x + b1 y + b2) / k)`, `k = c0 x + c1 y + 1`, from the rows
/// `[a0, a1, a2, b0, b1, b2, c0, c1]` of `transforms` (`[batch, 8]`, or
/// `[1, 8]` for every image), bilinearly or at the nearest pixel, with
/// points outside the image read by `fill_mode` (TensorFlow's
/// `ImageProjectiveTransformV3`, whose arithmetic it follows).
///
/// Returns [`Error::Shape`] for other shapes and [`Error::InvalidArgument`]
/// for integer images or more pixels than int32 indices reach.
pub fn affine_transform(
    images: &Tensor,
    transforms: &Tensor,
    bilinear: bool,
    fill_mode: FillMode,
    fill_value: f64,
) -> Result<Tensor> {
    const OP: &str = "affine_transform";
    let &[n, h, w, ch] = images.shape() else {
        return Err(Error::shape(
            OP,
            &[images.shape()],
            "expects images [batch, height, width, channels]",
        ));
    };
    match transforms.shape() {
        &[m, 8] if m == n || m == 1 => {}
        s => {
            return Err(Error::shape(
                OP,
                &[images.shape(), s],
                "expects transforms [batch, 8] or [1, 8]",
            ));
        }
    }
    if !images.dtype().is_float() {
        return Err(Error::arg(
            OP,
            format!("images must be floats, not {:?}", images.dtype()),
        ));
    }
    let pixels = n
        .checked_mul(h)
        .and_then(|p| p.checked_mul(w))
        .filter(|&p| i32::try_from(p).is_ok())
        .ok_or_else(|| Error::arg(OP, format!("{n}x{h}x{w} pixels are more than int32 indices reach")))?;
    let dev = images.device();
    let t = transforms.cast(DType::F32)?;
    let col = |k: usize| -> Result<Tensor> { t.slice(&[0, k], &[t.shape()[0], 1])?.reshape(&[-1, 1, 1]) };
    let xs = crate::ops::creation::arange(0.0, w as f64, 1.0, DType::F32, dev)?.reshape(&[1, 1, w as isize])?;
    let ys = crate::ops::creation::arange(0.0, h as f64, 1.0, DType::F32, dev)?.reshape(&[1, h as isize, 1])?;
    let lin =
        |a: usize, b: usize, c: usize| -> Result<Tensor> { col(a)?.mul(&xs)?.add(&col(b)?.mul(&ys)?)?.add(&col(c)?) };
    // Broadcast to [n, h, w] (transforms may be one row for every image),
    // so every later op is of one shape.
    let ones = Tensor::full(&[n, h, w], 1.0, DType::F32, dev)?;
    let k = col(6)?.mul(&xs)?.add(&col(7)?.mul(&ys)?)?.add_scalar(1.0)?.mul(&ones)?;
    let in_x = lin(0, 1, 2)?.div(&k)?;
    let in_y = lin(3, 4, 5)?.div(&k)?;
    let x = map_coordinate(&in_x, w, fill_mode)?;
    let y = map_coordinate(&in_y, h, fill_mode)?;
    let inside = |v: &Tensor, len: usize| -> Result<Tensor> {
        v.greater_equal(&v.scalar_like(0.0)?)?
            .logical_and(&v.less_equal(&v.scalar_like(len as f64 - 1.0)?)?)
    };
    // A zero projection is a point at infinity: the fill value. Other
    // points outside the image (`Constant` only) read the fill value
    // corner by corner, as TensorFlow 2.21 does.
    let valid = k.not_equal(&k.scalar_like(0.0)?)?;
    let zero = x.scalar_like(0.0)?;
    let (x, y) = (valid.where_(&x, &zero)?, valid.where_(&y, &zero)?);
    let flat = images.reshape(&[pixels as isize, ch as isize])?;
    let fill = images.scalar_like(fill_value)?;
    let base = crate::ops::creation::arange(0.0, n as f64, 1.0, DType::I32, dev)?
        .mul_scalar((h * w) as f64)?
        .reshape(&[n as isize, 1, 1])?;
    // The pixel at integer coordinates (yi, xi), or the fill value outside.
    let read = |yi: &Tensor, xi: &Tensor| -> Result<Tensor> {
        let ok = inside(yi, h)?.logical_and(&inside(xi, w)?)?;
        // Coordinates that read the fill value (NaN among them) index pixel 0.
        let zero = yi.scalar_like(0.0)?;
        let (yi, xi) = (&ok.where_(yi, &zero)?, &ok.where_(xi, &zero)?);
        let clampi = |v: &Tensor, len: usize| -> Result<Tensor> {
            v.maximum(&v.scalar_like(0.0)?)?
                .minimum(&v.scalar_like(len as f64 - 1.0)?)?
                .cast(DType::I32)
        };
        let idx = clampi(yi, h)?
            .mul_scalar(w as f64)?
            .add(&clampi(xi, w)?)?
            .add(&base)?
            .reshape(&[pixels as isize])?;
        let v = flat
            .gather(&idx, 0)?
            .reshape(&[n as isize, h as isize, w as isize, ch as isize])?;
        ok.reshape(&[n as isize, h as isize, w as isize, 1])?.where_(&v, &fill)
    };
    let wt = |v: Tensor| -> Result<Tensor> {
        v.cast(images.dtype())?
            .reshape(&[n as isize, h as isize, w as isize, 1])
    };
    let out = if bilinear {
        let (xf, yf) = (x.floor()?, y.floor()?);
        let (xc, yc) = (xf.add_scalar(1.0)?, yf.add_scalar(1.0)?);
        let (wx0, wx1) = (wt(xc.sub(&x)?)?, wt(x.sub(&xf)?)?);
        let (wy0, wy1) = (wt(yc.sub(&y)?)?, wt(y.sub(&yf)?)?);
        let top = wx0.mul(&read(&yf, &xf)?)?.add(&wx1.mul(&read(&yf, &xc)?)?)?;
        let bottom = wx0.mul(&read(&yc, &xf)?)?.add(&wx1.mul(&read(&yc, &xc)?)?)?;
        wy0.mul(&top)?.add(&wy1.mul(&bottom)?)?
    } else {
        // std::round: halves away from zero.
        let round = |v: &Tensor| -> Result<Tensor> { v.abs()?.add_scalar(0.5)?.floor()?.mul(&v.sign()?) };
        read(&round(&y)?, &round(&x)?)?
    };
    valid
        .reshape(&[n as isize, h as isize, w as isize, 1])?
        .where_(&out, &fill)
}

/// For each of `out` positions along an axis of `len`: the lower and upper
/// source index and the weight of the upper (`tf.image.resize`'s
/// half-pixel centers; nearest: one index, weight 0).
fn resize_axis(len: usize, out: usize, bilinear: bool) -> Result<(Vec<i32>, Vec<i32>, Vec<f32>)> {
    let too_large = |what: &str| Error::arg("resize", format!("{what} is more than int32 indices reach"));
    let top = i32::try_from(len.saturating_sub(1)).map_err(|_| too_large("the image"))?;
    i32::try_from(out).map_err(|_| too_large("the size"))?;
    let scale = len as f32 / out as f32;
    let (mut lo, mut hi, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let oom = |_| Error::OutOfMemory {
        device: "cpu".into(),
        requested: (out as u64).saturating_mul(4),
        in_use: 0,
        limit: 0,
    };
    lo.try_reserve_exact(out).map_err(oom)?;
    hi.try_reserve_exact(out).map_err(oom)?;
    t.try_reserve_exact(out).map_err(oom)?;
    for i in 0..out {
        if bilinear {
            let at = (i as f32 + 0.5) * scale - 0.5;
            let f = at.floor();
            lo.push((f as i32).clamp(0, top));
            hi.push((at.ceil() as i32).clamp(0, top));
            t.push(at - f);
        } else {
            let at = ((i as f32 + 0.5) * scale).floor() as i32;
            lo.push(at.clamp(0, top));
            hi.push(at.clamp(0, top));
            t.push(0.0);
        }
    }
    Ok((lo, hi, t))
}

/// `tf.image.resize(images, [height, width], "bilinear" | "nearest")`
/// (no antialiasing; TensorFlow's `ResizeBilinear` and
/// `ResizeNearestNeighbor` with half-pixel centers, whose arithmetic it
/// follows) for float images `[batch, height, width, channels]`, as
/// gathers of constant indices along each axis.
///
/// Returns [`Error::Shape`] for other shapes or an empty size and
/// [`Error::InvalidArgument`] for integer images.
pub fn resize(images: &Tensor, size: [usize; 2], bilinear: bool) -> Result<Tensor> {
    const OP: &str = "resize";
    let &[_, h, w, _] = images.shape() else {
        return Err(Error::shape(
            OP,
            &[images.shape()],
            "expects images [batch, height, width, channels]",
        ));
    };
    let [oh, ow] = size;
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        return Err(Error::shape(
            OP,
            &[images.shape(), &size],
            "images and sizes must have at least one row and one column",
        ));
    }
    if !images.dtype().is_float() {
        return Err(Error::arg(
            OP,
            format!("images must be floats, not {:?}", images.dtype()),
        ));
    }
    let dev = images.device();
    let along = |x: &Tensor, axis: usize, len: usize, out: usize| -> Result<Tensor> {
        let (lo, hi, t) = resize_axis(len, out, bilinear)?;
        let lower = x.gather(&Tensor::from_vec(lo, &[out], dev)?, axis as isize)?;
        if !bilinear {
            return Ok(lower);
        }
        let upper = x.gather(&Tensor::from_vec(hi, &[out], dev)?, axis as isize)?;
        let mut shape = [1usize; 4];
        shape[axis] = out;
        let t = Tensor::from_vec(t, &shape, dev)?.cast(x.dtype())?;
        // lower + (upper - lower) * t, in TensorFlow's order.
        lower.add(&upper.sub(&lower)?.mul(&t)?)
    };
    let across = along(images, 2, w, ow)?;
    along(&across, 1, h, oh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    #[test]
    fn nan_points_and_huge_sizes_are_values_or_errors() {
        let d = Device::cpu();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 2, 2, 1], &d).unwrap();
        let t = Tensor::from_vec(vec![f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[1, 8], &d).unwrap();
        // TensorFlow: NaN when bilinear, the fill value when nearest.
        let y = affine_transform(&x, &t, true, FillMode::Reflect, 7.0).unwrap();
        assert!(y.to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
        let y = affine_transform(&x, &t, false, FillMode::Constant, 7.0).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), [7.0; 4]);
        let inf = Tensor::from_vec(vec![1.0f32, 0.0, f32::INFINITY, 0.0, 1.0, 0.0, 0.0, 0.0], &[1, 8], &d).unwrap();
        assert!(affine_transform(&x, &inf, true, FillMode::Wrap, 0.0).is_ok());
        assert!(resize(&x, [1, 1 << 40], true).is_err());
        assert!(resize(&x, [0, 3], true).is_err());
        let ints = Tensor::from_vec(vec![1i32, 2, 3, 4], &[1, 2, 2, 1], &d).unwrap();
        assert!(resize(&ints, [3, 3], false).is_err());
    }
}
