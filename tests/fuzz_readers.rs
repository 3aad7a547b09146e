//! Mutation fuzzing of every file reader (issue 9): checkpoints
//! (`Checkpoint::restore`), MNIST IDX files raw and gzip (`read_idx`,
//! `read_pair`) and CSV (`read_csv`). Each starts from a valid file written
//! by the library, applies seeded mutations (truncation, bit and byte flips,
//! inserted and deleted runs, header size fields set to huge values) and
//! requires: no panic (each call runs under `catch_unwind`, so a failure
//! names the input), a result that is `Ok` or a typed `wgflow::Error`, and
//! for checkpoints, a failed restore that leaves the model's variables, the
//! optimizer's slots and its step count as they were.
//!
//! wgflow has no reader for TensorBoard event files (`io::summary` only
//! writes), so their write path is fuzzed with odd inputs instead, and the
//! file written is checked record by record (TFRecord framing, masked CRCs).
//!
//! Bounded: a few hundred mutations per reader, deterministic seeds;
//! `WGFLOW_FUZZ_CASES=n` raises the count. Files live in a `TempDir`.

mod common;
use common::TempDir;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use wgflow::data::{csv, mnist};
use wgflow::io::checkpoint::{Checkpoint, OptimizerState};
use wgflow::io::summary::{self, masked_crc32c};
use wgflow::nn::layers::Dense;
use wgflow::nn::losses::MeanSquaredError;
use wgflow::nn::optimizers::Adam;
use wgflow::nn::{Activation, Model, Sequential, set_random_seed};
use wgflow::{DType, Device, Tensor, Variable, ops};

fn cases() -> usize {
    std::env::var("WGFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (0 for n = 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const HUGE32: [u32; 5] = [u32::MAX, u32::MAX - 1, 0x8000_0000, 0x7fff_ffff, 0x0100_0000];
const HUGE64: [u64; 5] = [u64::MAX, u64::MAX - 7, 1 << 63, u32::MAX as u64, 1 << 40];

/// One generic mutation of `b`; returns its description.
fn mutate(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    let n = b.len();
    match rng.below(9) {
        0 => {
            let at = rng.below(n + 1);
            b.truncate(at);
            format!("truncate at {at}")
        }
        1 => {
            let k = 1 + rng.below(8);
            for _ in 0..k.min(n) {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            format!("flip {k} bits")
        }
        2 => {
            let k = 1 + rng.below(4);
            for _ in 0..k.min(n) {
                let i = rng.below(n);
                b[i] = *rng.pick(&[0x00, 0xff, 0x7f, 0x80, b'9', b'-', b',', b'"', b'\n']);
            }
            format!("set {k} bytes")
        }
        3 => {
            let at = rng.below(n + 1);
            let len = 1 + rng.below(64);
            let run: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            b.splice(at..at, run);
            format!("insert {len} random bytes at {at}")
        }
        4 => {
            let at = rng.below(n + 1);
            let len = (1 + rng.below(32)).min(n - at);
            b.drain(at..at + len);
            format!("delete {len} bytes at {at}")
        }
        5 => {
            if n < 4 {
                return "none".into();
            }
            let at = rng.below(n - 3);
            let v = *rng.pick(&HUGE32);
            let bytes = if rng.below(2) == 0 {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            b[at..at + 4].copy_from_slice(&bytes);
            format!("u32 {v:#x} at {at}")
        }
        6 => {
            if n < 8 {
                return "none".into();
            }
            let at = rng.below(n - 7);
            let v = *rng.pick(&HUGE64);
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            format!("u64 {v:#x} at {at}")
        }
        7 => {
            // Duplicate a chunk.
            let at = rng.below(n + 1);
            let len = rng.below(n - at + 1).min(256);
            let chunk = b[at..at + len].to_vec();
            let to = rng.below(n + 1);
            b.splice(to..to, chunk);
            format!("duplicate {len} bytes from {at} to {to}")
        }
        _ => {
            let a = rng.below(n + 1);
            let c = rng.below(n + 1);
            let (lo, hi) = (a.min(c), a.max(c));
            b.truncate(hi);
            b.drain(..lo);
            format!("keep {lo}..{hi}")
        }
    }
}

/// Calls `f` under `catch_unwind`; a panic fails the test naming `what`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("PANIC on {what}: {msg}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    let head: String = b.iter().take(64).map(|x| format!("{x:02x}")).collect();
    format!("{} bytes: {head}{}", b.len(), if b.len() > 64 { "..." } else { "" })
}

// ---- checkpoints -----------------------------------------------------------

fn model(seed: u64) -> Sequential {
    set_random_seed(seed);
    let mut m = Sequential::new()
        .add(Dense::new(4).activation(Activation::Tanh))
        .add(Dense::new(2));
    m.build(&[3], &Device::Cpu).unwrap();
    m.compile(Adam::new(0.01), MeanSquaredError, vec![]);
    let x = ops::random_normal(&[6, 3], 0.0, 1.0, DType::F32, seed, &Device::Cpu).unwrap();
    let y = ops::random_normal(&[6, 2], 0.0, 1.0, DType::F32, seed + 1, &Device::Cpu).unwrap();
    for _ in 0..seed as usize % 3 + 1 {
        m.train_step(&x, &y).unwrap();
    }
    m
}

/// Variables of the other dtypes, so every decoding path is fuzzed.
fn extras(seed: u64) -> Vec<(String, Variable)> {
    let cpu = Device::Cpu;
    let s = seed as i32;
    let i = Tensor::from_vec(vec![s, -s, 7, i32::MAX, i32::MIN], &[5], &cpu).unwrap();
    let h = Tensor::from_vec(vec![0.5f32 * s as f32, -1.0, f32::NAN, f32::INFINITY], &[2, 2], &cpu)
        .unwrap()
        .cast(DType::F16)
        .unwrap();
    let b = Tensor::from_vec(vec![seed % 2 == 0, true, false], &[3], &cpu).unwrap();
    let d = Tensor::from_vec(vec![seed as f64, -0.0], &[2], &cpu).unwrap();
    let z = Tensor::from_vec(Vec::<f32>::new(), &[0, 3], &cpu).unwrap();
    vec![
        ("i".into(), Variable::new(i, "i")),
        ("h".into(), Variable::new(h, "h")),
        ("b".into(), Variable::new(b, "b")),
        ("d".into(), Variable::new(d, "d")),
        ("z".into(), Variable::new(z, "z")),
    ]
}

fn ckpt(m: &Sequential, extra: &[(String, Variable)]) -> Checkpoint {
    Checkpoint::new()
        .track("model", m.named_variables())
        .track("extra", extra.to_vec())
}

/// Every variable's and slot's bits, and the step count.
fn snapshot(m: &mut Sequential, extra: &[(String, Variable)]) -> (Vec<Vec<u64>>, u64) {
    let bits = |v: &Variable| -> Vec<u64> { v.value().to_f64_vec().unwrap().iter().map(|x| x.to_bits()).collect() };
    let mut out: Vec<Vec<u64>> = m.variables().iter().map(bits).collect();
    out.extend(extra.iter().map(|(_, v)| bits(v)));
    let vars = m.variables();
    let opt = &m.compiled().as_ref().unwrap().optimizer;
    for v in vars {
        if let Some(slots) = opt.existing_slots(&v) {
            out.extend(slots.iter().map(bits));
        }
    }
    (out, opt.iterations())
}

/// JSON-aware mutations of a safetensors header: a number or a dtype
/// replaced, the 8-byte length prefix fixed up afterwards (or not).
fn mutate_header(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    if b.len() < 8 {
        return "none".into();
    }
    let hlen = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let end = (8 + hlen).min(b.len());
    let mut header = b[8..end].to_vec();
    let what;
    if rng.below(3) == 0 {
        let dtypes: [&[u8]; 6] = [b"F32", b"F16", b"I32", b"BOOL", b"F64", b"I64"];
        let from = *rng.pick(&dtypes);
        let to = *rng.pick(&[b"I64" as &[u8], b"BF16", b"U8", b"F32", b"BOOL", b"F8_E4M3", b"X"]);
        match header.windows(from.len()).position(|w| w == from) {
            Some(p) => {
                header.splice(p..p + from.len(), to.iter().copied());
                what = format!(
                    "dtype {} -> {}",
                    String::from_utf8_lossy(from),
                    String::from_utf8_lossy(to)
                );
            }
            None => return "none".into(),
        }
    } else {
        // The k-th run of digits (shapes, offsets, metadata values).
        let runs: Vec<(usize, usize)> = {
            let mut v = Vec::new();
            let mut i = 0;
            while i < header.len() {
                if header[i].is_ascii_digit() {
                    let s = i;
                    while i < header.len() && header[i].is_ascii_digit() {
                        i += 1;
                    }
                    v.push((s, i));
                } else {
                    i += 1;
                }
            }
            v
        };
        if runs.is_empty() {
            return "none".into();
        }
        let (s, e) = *rng.pick(&runs);
        let to = *rng.pick(&[
            "0",
            "1",
            "3",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "18446744073709551615",
            "99999999999999999999999",
            "-1",
            "1e3",
        ]);
        what = format!("number {} -> {to}", String::from_utf8_lossy(&header[s..e]));
        header.splice(s..e, to.bytes());
    }
    let keep_len = rng.below(4) == 0;
    let mut out = if keep_len {
        b[..8].to_vec()
    } else {
        (header.len() as u64).to_le_bytes().to_vec()
    };
    out.extend_from_slice(&header);
    out.extend_from_slice(&b[end..]);
    *b = out;
    format!("{what}{}", if keep_len { " (length prefix kept)" } else { "" })
}

#[test]
fn checkpoint_restore_survives_mutations() {
    let dir = TempDir::new("fuzz-ckpt");
    let mut src = model(1);
    let src_extra = extras(1);
    let good = dir.join("good.safetensors");
    {
        let c = ckpt(&src, &src_extra);
        let opt = &src.compiled().as_ref().unwrap().optimizer;
        c.save(&good, 7, Some(opt)).unwrap();
    }
    let valid = std::fs::read(&good).unwrap();
    let mut dst = model(2);
    let dst_extra = extras(2);
    let names = ckpt(&dst, &dst_extra);
    let bad = dir.join("bad.safetensors");
    let mut rng = Rng(0x5eed_c4ec);
    let (mut ok, mut err) = (0, 0);
    let n = cases();
    // Every truncation of the header region, then random mutations.
    let header_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let mut inputs: Vec<(String, Vec<u8>)> = (0..header_end.min(valid.len()))
        .step_by(1 + header_end / 64)
        .map(|k| (format!("truncate at {k}"), valid[..k].to_vec()))
        .collect();
    for v in HUGE64 {
        let mut b = valid.clone();
        b[..8].copy_from_slice(&v.to_le_bytes());
        inputs.push((format!("header length {v:#x}"), b));
    }
    for _ in 0..n {
        let mut b = valid.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            what.push(if rng.below(2) == 0 {
                mutate_header(&mut b, &mut rng)
            } else {
                mutate(&mut b, &mut rng)
            });
        }
        inputs.push((what.join(", "), b));
    }
    for (what, b) in &inputs {
        std::fs::write(&bad, b).unwrap();
        let before = snapshot(&mut dst, &dst_extra);
        let r = {
            let opt = &mut dst.compiled().as_mut().unwrap().optimizer;
            no_panic(&format!("checkpoint [{what}] {}", hex(b)), || {
                names.restore(&bad, Some(opt as &mut dyn OptimizerState))
            })
        };
        match r {
            // A restore that succeeds took the file's values; each case
            // snapshots afresh.
            Ok(_) => ok += 1,
            Err(e) => {
                err += 1;
                let after = snapshot(&mut dst, &dst_extra);
                assert!(
                    before == after,
                    "a failed restore ({e}) changed variables or optimizer state; input [{what}] {}",
                    hex(b)
                );
            }
        }
    }
    eprintln!("checkpoint: {} inputs, {ok} restored, {err} typed errors", inputs.len());
    assert!(err > inputs.len() / 2, "most mutations should be rejected");
}

// ---- IDX -------------------------------------------------------------------

fn idx_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let images: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = vec![3, 9];
    for (name, dims, data) in [
        ("images", vec![2usize, 3, 4], &images),
        ("labels", vec![2usize], &labels),
    ] {
        for gz in [false, true] {
            let p = dir.join(format!("{name}{}", if gz { ".gz" } else { "" }));
            mnist::write_idx(&p, &dims, data, gz).unwrap();
            assert_eq!(mnist::read_idx(&p).unwrap(), (dims.clone(), data.clone()));
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).unwrap();
    enc.finish().unwrap()
}

fn check_idx(path: &Path, what: &str, b: &[u8]) {
    std::fs::write(path, b).unwrap();
    let r = no_panic(&format!("read_idx [{what}] {}", hex(b)), || mnist::read_idx(path));
    if let Ok((dims, data)) = r {
        let n: usize = dims.iter().product();
        assert_eq!(
            n,
            data.len(),
            "read_idx [{what}]: dims {dims:?} but {} bytes",
            data.len()
        );
    }
}

#[test]
fn idx_reader_survives_mutations() {
    let dir = TempDir::new("fuzz-idx");
    let files = idx_files(&dir);
    let bad = dir.join("bad");
    let mut rng = Rng(0x1d8);
    let n = cases();
    for (name, valid) in &files {
        // Every truncation (the files are small).
        for k in 0..valid.len() {
            check_idx(&bad, &format!("{name} truncated at {k}"), &valid[..k]);
        }
        // Each header field huge, raw and re-compressed.
        if !name.ends_with(".gz") {
            let rank = valid[3] as usize;
            for i in 0..rank {
                for v in HUGE32 {
                    let mut b = valid.clone();
                    b[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_be_bytes());
                    check_idx(&bad, &format!("{name} dim {i} = {v:#x}"), &b);
                    check_idx(&bad, &format!("{name} dim {i} = {v:#x}, gzipped"), &gzip(&b));
                    // Every dimension huge.
                    let mut all = valid.clone();
                    for j in 0..rank {
                        all[4 + 4 * j..8 + 4 * j].copy_from_slice(&v.to_be_bytes());
                    }
                    check_idx(&bad, &format!("{name} all dims = {v:#x}"), &all);
                }
            }
            for rank in [0u8, 1, 2, 3, 4, 17, 255] {
                let mut b = valid.clone();
                b[3] = rank;
                check_idx(&bad, &format!("{name} rank byte {rank}"), &b);
            }
        }
        for _ in 0..n {
            let mut b = valid.clone();
            let what: Vec<String> = (0..1 + rng.below(3)).map(|_| mutate(&mut b, &mut rng)).collect();
            check_idx(&bad, &format!("{name}: {}", what.join(", ")), &b);
            if !name.ends_with(".gz") && rng.below(3) == 0 {
                check_idx(&bad, &format!("{name}: {}, gzipped", what.join(", ")), &gzip(&b));
            }
        }
    }
    // read_pair on a mutated image file and a valid label file, and back.
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    let (img, lab) = (std::fs::read(&images).unwrap(), std::fs::read(&labels).unwrap());
    let (bi, bl) = (dir.join("bad-images"), dir.join("bad-labels"));
    std::fs::write(&bi, &img).unwrap();
    std::fs::write(&bl, &lab).unwrap();
    no_panic("read_pair of valid files", || mnist::read_pair(&bi, &bl)).unwrap();
    for _ in 0..n / 2 {
        let (mut i2, mut l2) = (img.clone(), lab.clone());
        let w1 = mutate(&mut i2, &mut rng);
        let w2 = mutate(&mut l2, &mut rng);
        std::fs::write(&bi, &i2).unwrap();
        std::fs::write(&bl, &l2).unwrap();
        let what = format!("read_pair [images: {w1}] {} [labels: {w2}] {}", hex(&i2), hex(&l2));
        let _ = no_panic(&what, || mnist::read_pair(&bi, &bl));
    }
}

// ---- CSV -------------------------------------------------------------------

const CSV_TOKENS: [&str; 18] = [
    ",", "\n", "\r\n", "\r", "inf", "-inf", "NaN", "1e999", "-", ".", "\"", " ", "\u{feff}", "0x10", "1,2", "\u{e9}",
    "\0", "\t",
];

#[test]
fn csv_reader_survives_mutations() {
    let dir = TempDir::new("fuzz-csv");
    let valid = b"a, b ,c\n1,2,3\n4.5,-6e3,nan\n\n-0,inf,1e-3\n7,8,9\n".to_vec();
    let path = dir.join("x.csv");
    std::fs::write(&path, &valid).unwrap();
    let (names, t) = csv::read_csv(&path, true).unwrap();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(t.shape(), &[4, 3]);
    let mut rng = Rng(0xc5f);
    let mut inputs: Vec<(String, Vec<u8>)> = (0..=valid.len())
        .map(|k| (format!("truncate at {k}"), valid[..k].to_vec()))
        .collect();
    for _ in 0..cases() {
        let mut b = valid.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(4) {
            if rng.below(2) == 0 {
                let tok = *rng.pick(&CSV_TOKENS);
                let at = rng.below(b.len() + 1);
                b.splice(at..at, tok.bytes());
                what.push(format!("insert {tok:?} at {at}"));
            } else {
                what.push(mutate(&mut b, &mut rng));
            }
        }
        inputs.push((what.join(", "), b));
    }
    let (mut ok, mut err) = (0, 0);
    for (what, b) in &inputs {
        std::fs::write(&path, b).unwrap();
        for header in [true, false] {
            let r = no_panic(&format!("read_csv(header {header}) [{what}] {b:?}"), || {
                csv::read_csv(&path, header)
            });
            match r {
                Ok((names, t)) => {
                    ok += 1;
                    assert_eq!(t.rank(), 2);
                    assert_eq!(names.len(), t.shape()[1], "[{what}]");
                    assert_eq!(t.to_vec::<f32>().unwrap().len(), t.numel());
                }
                Err(e) => {
                    err += 1;
                    assert!(matches!(e, wgflow::Error::Io { .. }), "[{what}]: {e}");
                }
            }
        }
    }
    eprintln!("csv: {} inputs, {ok} read, {err} typed errors", inputs.len());
}

// ---- event files (write path) ----------------------------------------------

/// Splits a TFRecord file into its records, checking both masked CRCs of each.
fn records(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        assert!(i + 12 <= b.len(), "truncated record header at {i}");
        let len_bytes = &b[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap());
        assert_eq!(crc, masked_crc32c(len_bytes), "length CRC of the record at {i}");
        let data = &b[i + 12..i + 12 + len];
        let dcrc = u32::from_le_bytes(b[i + 12 + len..i + 16 + len].try_into().unwrap());
        assert_eq!(dcrc, masked_crc32c(data), "data CRC of the record at {i}");
        out.push(data.to_vec());
        i += 16 + len;
    }
    out
}

#[test]
fn event_writer_survives_odd_inputs() {
    let dir = TempDir::new("fuzz-events");
    let mut rng = Rng(0xe7e);
    let cpu = Device::Cpu;
    let long = "x".repeat(10_000);
    let tags = ["", "loss", "a/b/c", "ünï/cødé", "nul\0tag", long.as_str(), "/", "  "];
    let values = [
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
        1e300,
        -3.5,
    ];
    let steps = [0i64, 1, -1, i64::MAX, i64::MIN];
    let mut w = no_panic("create_file_writer", || summary::create_file_writer(&*dir)).unwrap();
    let mut written = 1; // the file-version event
    let n = cases();
    for case in 0..n {
        let tag = *rng.pick(&tags);
        let step = *rng.pick(&steps);
        let r = match rng.below(3) {
            0 => {
                let v = *rng.pick(&values);
                no_panic(&format!("scalar({tag:?}, {v}, {step})"), || w.scalar(tag, v, step)).map(|_| 1)
            }
            1 => {
                let shape: Vec<usize> = (0..rng.below(3)).map(|_| rng.below(6)).collect();
                let numel: usize = shape.iter().product();
                let vals: Vec<f32> = (0..numel).map(|_| *rng.pick(&values) as f32).collect();
                let dt = *rng.pick(&[DType::F32, DType::F16, DType::I32, DType::Bool, DType::F64]);
                let t = Tensor::from_vec(vals, &shape, &cpu).unwrap().cast(dt).unwrap();
                let buckets = *rng.pick(&[0usize, 1, 2, 30, 1000]);
                no_panic(
                    &format!("histogram({tag:?}, {dt:?} {shape:?}, {step}, {buckets})"),
                    || w.histogram(tag, &t, step, buckets),
                )
                .map(|_| 1)
            }
            _ => {
                let rank = if rng.below(6) == 0 { rng.below(6) } else { 4 };
                let shape: Vec<usize> = (0..rank)
                    .map(|i| {
                        if i == 3 {
                            *rng.pick(&[0, 1, 2, 3, 4, 5])
                        } else {
                            rng.below(4)
                        }
                    })
                    .collect();
                let numel: usize = shape.iter().product();
                let vals: Vec<f32> = (0..numel)
                    .map(|_| {
                        if rng.below(3) == 0 {
                            *rng.pick(&values) as f32
                        } else {
                            (rng.below(1000) as f32) / 999.0
                        }
                    })
                    .collect();
                let dt = *rng.pick(&[DType::F32, DType::F32, DType::F16, DType::I32]);
                let t = Tensor::from_vec(vals, &shape, &cpu).unwrap().cast(dt).unwrap();
                let k = shape.first().copied().unwrap_or(0);
                no_panic(&format!("image({tag:?}, {dt:?} {shape:?}, {step})"), || {
                    w.image(tag, &t, step)
                })
                .map(|_| k)
            }
        };
        match r {
            Ok(k) => written += k,
            Err(e) => assert!(
                matches!(
                    e,
                    wgflow::Error::Shape { .. } | wgflow::Error::DType { .. } | wgflow::Error::InvalidArgument { .. }
                ),
                "case {case}: unexpected error {e}"
            ),
        }
    }
    no_panic("flush", || w.flush()).unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    let recs = records(&std::fs::read(&path).unwrap());
    assert_eq!(recs.len(), written, "one record per event written");
    // PNG encoding with odd sizes and pixel counts.
    for (wd, ht, ch, len) in [
        (0usize, 1usize, 1usize, 0usize),
        (1, 0, 3, 0),
        (1, 1, 0, 0),
        (1, 1, 5, 5),
        (2, 2, 2, 8),
        (2, 2, 4, 3),
        (i32::MAX as usize, i32::MAX as usize, 4, 0),
        (i32::MAX as usize + 1, 1, 1, 0),
        (usize::MAX, usize::MAX, 4, 0),
        (1 << 20, 1 << 20, 4, 16),
    ] {
        let px = vec![7u8; len];
        let r = no_panic(&format!("encode_png({wd}, {ht}, {ch}, {len} bytes)"), || {
            summary::encode_png(wd, ht, ch, &px)
        });
        if let Ok(png) = r {
            assert_eq!(&png[1..4], b"PNG");
        }
    }
}

/// `.npy` headers whose shapes NumPy refuses ("array is too big": the
/// product of the non-zero dimensions times the item size past isize::MAX)
/// are errors, even when a zero dimension leaves no elements.
#[test]
fn npy_shapes_numpy_refuses_are_errors() {
    use wgflow::io::npy;
    let file = |shape: &str| {
        let header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header}\n");
        b.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        b.extend_from_slice(padded.as_bytes());
        b
    };
    for shape in [
        "(0, 18446744073709551615)",
        "(0, 4294967296, 4294967296)",
        "(3, 0, 1152921504606846976)",
    ] {
        let e = no_panic(shape, || npy::parse(&file(shape))).unwrap_err();
        assert!(e.to_string().contains("array is too big"), "{shape}: {e}");
    }
    // NumPy makes these (empty) arrays.
    for shape in ["(0, 1152921504606846975)", "(0,)", "(5, 0, 7)"] {
        let a = no_panic(shape, || npy::parse(&file(shape))).unwrap();
        assert!(a.data.is_empty(), "{shape}");
    }
}
