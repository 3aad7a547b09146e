//! TensorBoard summaries (`tf.summary`): event files of TFRecord records
//! (length, masked CRC32C of the length, data, masked CRC32C of the data),
//! each an `Event` protobuf; the first carries the file version, the others
//! a `Summary` with scalars (`simple_value`), histograms (`HistogramProto`)
//! or images (PNG). `tensorboard --logdir <dir>` reads them. The protobuf
//! messages are small enough to encode by hand.

use super::io_err;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// TFRecord's CRC mask.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Protobuf wire encoding.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }
    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn packed_doubles(&mut self, field: u32, v: &[f64]) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.bytes(field, &b);
    }
}

/// One `Summary.Value`.
enum Value {
    Scalar(f32),
    Histo(Vec<u8>),
    Image(Vec<u8>),
}

/// `tf.summary.create_file_writer(logdir)`.
pub fn create_file_writer(logdir: impl AsRef<Path>) -> Result<SummaryWriter> {
    SummaryWriter::new(logdir.as_ref())
}

/// Writes one event file in `logdir`. Records are buffered; `flush` (and
/// drop) push them to the file.
pub struct SummaryWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SummaryWriter {
    fn new(logdir: &Path) -> Result<SummaryWriter> {
        std::fs::create_dir_all(logdir).map_err(|e| io_err(logdir, e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let name = format!("events.out.tfevents.{}.{host}.{}.v2", now() as u64, std::process::id());
        let path = logdir.join(name);
        let f = File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut w = SummaryWriter {
            path,
            out: BufWriter::new(f),
        };
        let mut ev = Pb::default();
        ev.double(1, now());
        ev.bytes(3, b"brain.Event:2");
        w.record(&ev.0)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&rec).map_err(|e| io_err(&self.path, e))
    }

    fn event(&mut self, tag: &str, step: i64, value: Value) -> Result<()> {
        let mut v = Pb::default();
        v.bytes(1, tag.as_bytes());
        match value {
            Value::Scalar(x) => v.float(2, x),
            Value::Image(img) => v.bytes(4, &img),
            Value::Histo(h) => v.bytes(5, &h),
        }
        let mut summary = Pb::default();
        summary.bytes(1, &v.0);
        let mut ev = Pb::default();
        ev.double(1, now());
        ev.int(2, step);
        ev.bytes(5, &summary.0);
        self.record(&ev.0)
    }

    /// `tf.summary.scalar(name, value, step)`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        self.event(tag, step, Value::Scalar(value as f32))
    }

    /// `tf.summary.histogram(name, data, step)` with `buckets` equal-width buckets.
    pub fn histogram(&mut self, tag: &str, data: &Tensor, step: i64, buckets: usize) -> Result<()> {
        let v = data.to_f64_vec()?;
        self.event(tag, step, Value::Histo(histogram_proto(&v, buckets.max(1))))
    }

    /// `tf.summary.image(name, data, step)`: data [k, h, w, c] in [0, 1],
    /// c = 1 (gray), 3 (RGB) or 4 (RGBA); one value per image ("tag/image/i").
    pub fn image(&mut self, tag: &str, data: &Tensor, step: i64) -> Result<()> {
        let s = data.shape().to_vec();
        if s.len() != 4 || ![1, 3, 4].contains(&s[3]) {
            return Err(Error::shape(
                "summary.image",
                &[&s],
                "needs images [k, height, width, channels] with 1, 3 or 4 channels",
            ));
        }
        let v = data.to_f64_vec()?;
        let per = s[1] * s[2] * s[3];
        for k in 0..s[0] {
            let px: Vec<u8> = v[k * per..(k + 1) * per]
                .iter()
                .map(|&x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            let png = encode_png(s[2], s[1], s[3], &px).map_err(|e| io_err(&self.path, e))?;
            let mut img = Pb::default();
            img.int(1, s[1] as i64);
            img.int(2, s[2] as i64);
            img.int(3, s[3] as i64);
            img.bytes(4, &png);
            let name = if s[0] == 1 {
                format!("{tag}/image")
            } else {
                format!("{tag}/image/{k}")
            };
            self.event(&name, step, Value::Image(img.0))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| io_err(&self.path, e))?;
        self.out.get_ref().sync_data().map_err(|e| io_err(&self.path, e))
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn histogram_proto(v: &[f64], buckets: usize) -> Vec<u8> {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if finite.is_empty() { (0.0, 0.0) } else { (lo, hi) };
    let width = if hi > lo { (hi - lo) / buckets as f64 } else { 1.0 };
    let mut counts = vec![0.0; buckets];
    for &x in &finite {
        let i = (((x - lo) / width) as usize).min(buckets - 1);
        counts[i] += 1.0;
    }
    let limits: Vec<f64> = (1..=buckets)
        .map(|i| {
            if i == buckets {
                hi.max(lo + width)
            } else {
                lo + width * i as f64
            }
        })
        .collect();
    let mut h = Pb::default();
    h.double(1, lo);
    h.double(2, hi);
    h.double(3, finite.len() as f64);
    h.double(4, finite.iter().sum());
    h.double(5, finite.iter().map(|x| x * x).sum());
    h.packed_doubles(6, &limits);
    h.packed_doubles(7, &counts);
    h.0
}

/// A PNG with 8-bit samples (gray, RGB or RGBA), zlib-compressed.
pub fn encode_png(width: usize, height: usize, channels: usize, px: &[u8]) -> std::io::Result<Vec<u8>> {
    let color = match channels {
        1 => 0u8,
        3 => 2,
        _ => 6,
    };
    let mut raw = Vec::with_capacity(height * (1 + width * channels));
    for row in px.chunks(width * channels) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&h.finalize().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &idat);
    chunk(b"IEND", &[]);
    Ok(out)
}
