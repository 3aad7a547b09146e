//! A synthetic handwritten-digit set, generated in code so that the MNIST
//! example runs on a machine without the MNIST files: each digit is a few
//! pen strokes, drawn at 28x28 with a random slant, scale, shift, stroke
//! width and noise. Deterministic for a seed; shaped like MNIST
//! (f32 `[n, 28, 28, 1]` in \[0, 1\], int32 labels `[n]`), so it is a
//! drop-in for [`crate::data::mnist::load`]'s tensors.

use super::Rng;
use crate::core::error::Result;
use crate::runtime::cpu::CpuData;
use crate::tensor::Tensor;
use rayon::prelude::*;

type Stroke = &'static [(f32, f32)];

/// Pen strokes of each digit in a unit box (x right, y down).
fn strokes(d: usize) -> &'static [Stroke] {
    const ZERO: &[Stroke] = &[&[
        (0.5, 0.12),
        (0.68, 0.18),
        (0.78, 0.35),
        (0.78, 0.65),
        (0.68, 0.82),
        (0.5, 0.88),
        (0.32, 0.82),
        (0.22, 0.65),
        (0.22, 0.35),
        (0.32, 0.18),
        (0.5, 0.12),
    ]];
    const ONE: &[Stroke] = &[
        &[(0.35, 0.28), (0.52, 0.12), (0.52, 0.88)],
        &[(0.38, 0.88), (0.66, 0.88)],
    ];
    const TWO: &[Stroke] = &[&[
        (0.25, 0.3),
        (0.35, 0.16),
        (0.52, 0.12),
        (0.7, 0.2),
        (0.74, 0.35),
        (0.65, 0.52),
        (0.25, 0.86),
        (0.78, 0.86),
    ]];
    const THREE: &[Stroke] = &[&[
        (0.25, 0.18),
        (0.5, 0.12),
        (0.72, 0.22),
        (0.7, 0.4),
        (0.45, 0.5),
        (0.72, 0.6),
        (0.74, 0.78),
        (0.52, 0.88),
        (0.25, 0.82),
    ]];
    const FOUR: &[Stroke] = &[&[(0.62, 0.88), (0.62, 0.12), (0.22, 0.62), (0.8, 0.62)]];
    const FIVE: &[Stroke] = &[&[
        (0.74, 0.14),
        (0.34, 0.14),
        (0.3, 0.46),
        (0.52, 0.42),
        (0.72, 0.52),
        (0.74, 0.72),
        (0.58, 0.87),
        (0.26, 0.84),
    ]];
    const SIX: &[Stroke] = &[&[
        (0.7, 0.15),
        (0.48, 0.16),
        (0.3, 0.36),
        (0.25, 0.62),
        (0.35, 0.84),
        (0.55, 0.88),
        (0.72, 0.74),
        (0.7, 0.56),
        (0.5, 0.48),
        (0.3, 0.58),
    ]];
    const SEVEN: &[Stroke] = &[&[(0.24, 0.14), (0.78, 0.14), (0.5, 0.5), (0.4, 0.88)]];
    const EIGHT: &[Stroke] = &[&[
        (0.5, 0.48),
        (0.3, 0.36),
        (0.33, 0.18),
        (0.5, 0.12),
        (0.67, 0.18),
        (0.7, 0.36),
        (0.5, 0.48),
        (0.27, 0.62),
        (0.3, 0.82),
        (0.5, 0.88),
        (0.7, 0.82),
        (0.73, 0.62),
        (0.5, 0.48),
    ]];
    const NINE: &[Stroke] = &[&[
        (0.7, 0.42),
        (0.5, 0.5),
        (0.3, 0.4),
        (0.3, 0.22),
        (0.5, 0.12),
        (0.7, 0.2),
        (0.72, 0.42),
        (0.66, 0.7),
        (0.58, 0.88),
    ]];
    [ZERO, ONE, TWO, THREE, FOUR, FIVE, SIX, SEVEN, EIGHT, NINE][d]
}

fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let (wx, wy) = (p.0 - a.0, p.1 - a.1);
    let l = vx * vx + vy * vy;
    let t = if l > 0.0 {
        ((wx * vx + wy * vy) / l).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (wx - t * vx, wy - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// One 28x28 image of digit `d`.
fn draw(d: usize, rng: &mut Rng) -> Vec<f32> {
    let u = |rng: &mut Rng, lo: f64, hi: f64| (lo + (hi - lo) * rng.unit()) as f32;
    let angle = u(rng, -0.22, 0.22);
    let shear = u(rng, -0.25, 0.25);
    let sx = u(rng, 15.0, 21.0);
    let sy = u(rng, 17.0, 22.0);
    let (cx, cy) = (14.0 + u(rng, -2.0, 2.0), 14.0 + u(rng, -2.0, 2.0));
    let width = u(rng, 0.9, 1.7);
    let (s, c) = angle.sin_cos();
    let place = |(x, y): (f32, f32)| {
        let (x, y) = (x - 0.5 + shear * (y - 0.5), y - 0.5);
        let (x, y) = (x * sx, y * sy);
        (c * x - s * y + cx, s * x + c * y + cy)
    };
    let segs: Vec<((f32, f32), (f32, f32))> = strokes(d)
        .iter()
        .flat_map(|st| st.windows(2).map(|w| (place(w[0]), place(w[1]))).collect::<Vec<_>>())
        .collect();
    let mut img = vec![0f32; 28 * 28];
    for y in 0..28 {
        for x in 0..28 {
            let p = (x as f32 + 0.5, y as f32 + 0.5);
            let dist = segs
                .iter()
                .map(|&(a, b)| seg_dist(p, a, b))
                .fold(f32::INFINITY, f32::min);
            let ink = (1.0 - (dist - width) / 1.2).clamp(0.0, 1.0);
            let noise = u(rng, -0.08, 0.08);
            img[y * 28 + x] = (ink + noise * (0.3 + ink)).clamp(0.0, 1.0);
        }
    }
    img
}

/// `n` images `[n, 28, 28, 1]` and labels `[n]`, each label drawn uniformly
/// from 0–9; the same `seed` gives the same set on every machine (images are
/// drawn in parallel, each from its own seed).
pub fn digits(n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let labels: Vec<i32> = {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.below(10) as i32).collect()
    };
    let pixels: Vec<f32> = labels
        .par_iter()
        .enumerate()
        .flat_map_iter(|(i, &l)| {
            draw(
                l as usize,
                &mut Rng::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1)),
            )
        })
        .collect();
    Ok((
        Tensor::from_data(CpuData::F32(pixels), &[n, 28, 28, 1], &crate::runtime::Device::Cpu)?,
        Tensor::from_data(CpuData::I32(labels), &[n], &crate::runtime::Device::Cpu)?,
    ))
}
