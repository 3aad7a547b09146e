use std::time::Instant;
use wgflow::ops::{conv, conv::Padding, matmul};
use wgflow::{Device, Tensor};
fn t(name: &str, d: &Device, f: impl Fn() -> Tensor) {
    let y = f();
    d.synchronize().unwrap();
    drop(y);
    let mut v = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        let y = f();
        d.synchronize().unwrap();
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name:40} {:8.2} ms  ({:?})", v[2], d);
}
fn main() {
    let d = Device::gpu(0).unwrap();
    let r = |s: &[usize], seed: u64| wgflow::ops::random_normal(s, 0.0, 1.0, wgflow::DType::F32, seed, &d).unwrap();
    let (nb, h, c, o) = (32usize, 32usize, 64usize, 64usize);
    let pix = nb * h * h;
    let k = 9 * c;
    let dy2 = r(&[pix, o], 1);
    let w2 = r(&[k, o], 2);
    let cols = r(&[pix, k], 3);
    let x = r(&[nb, h, h, c], 5);
    let f = r(&[3, 3, c, o], 6);
    let dy = r(&[nb, h, h, o], 7);
    for _ in 0..8 {
        unsafe { std::env::remove_var("X_NO4") };
        t("conv input grad 4", &d, || {
            conv::conv2d(&x, &f, [1, 1], Padding::Same, [1, 1]).unwrap()
        });
        unsafe { std::env::set_var("X_NO4", "1") };
        t("conv input grad 1", &d, || {
            conv::conv2d(&x, &f, [1, 1], Padding::Same, [1, 1]).unwrap()
        });
        unsafe { std::env::remove_var("X_NO4") };
    }
    t("conv fwd", &d, || {
        conv::conv2d(&x, &f, [1, 1], Padding::Same, [1, 1]).unwrap()
    });
    t("conv input grad", &d, || {
        conv::conv2d_backprop_input(&[nb, h, h, c], &f, &dy, [1, 1], Padding::Same, [1, 1]).unwrap()
    });
    t("conv filter grad", &d, || {
        conv::conv2d_backprop_filter(&x, &[3, 3, c, o], &dy, [1, 1], Padding::Same, [1, 1]).unwrap()
    });
}
