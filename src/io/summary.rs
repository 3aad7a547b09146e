//! TensorBoard summaries (`tf.summary`): event files of TFRecord records
//! (length, masked CRC32C of the length, data, masked CRC32C of the data),
//! each an `Event` protobuf; the first carries the file version, the others
//! a `Summary` with scalars (`simple_value`), histograms (`HistogramProto`)
//! or images (PNG). `tensorboard --logdir <dir>` reads them.
//!
//! The messages are the parts of TensorFlow's `event.proto` and
//! `summary.proto` that the writer uses, declared in [`proto`] with their
//! field numbers and encoded by `prost` (no protoc at build time). Images
//! are encoded by the `png` crate.
//!
//! File names follow TensorFlow 2:
//! `events.out.tfevents.<seconds>.<hostname>.<pid>.<n>.v2`, where `n` counts
//! the writers this process has opened; the file is created exclusively, so
//! two writers in one log directory never share (or truncate) a file.

use crate::core::error::{Error, Result};
use crate::tensor::Tensor;
use prost::Message;
use proto::summary::value::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The messages of TensorFlow's `tensorflow/core/util/event.proto` and
/// `tensorflow/core/framework/summary.proto` that event files here hold,
/// with TensorFlow's field numbers (fields the writer never sets are left
/// out; protobuf readers skip what they do not know, and so do these).
pub mod proto {
    /// `tensorflow.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// `wall_time` (1): seconds since the Unix epoch when the event was
        /// written; TensorBoard's "relative" and "wall" axes use it.
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        /// `step` (2): the global step the values belong to, TensorBoard's
        /// x axis.
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// `oneof what`: of its members the writer uses `file_version` (3)
        /// and `summary` (5), not `graph_def` (4) or the others.
        #[prost(oneof = "event::What", tags = "3, 5")]
        pub what: Option<event::What>,
    }

    /// The nested types of `tensorflow.Event`.
    pub mod event {
        /// `oneof what` of `tensorflow.Event`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum What {
            /// `file_version` (3): "brain.Event:2" in the first record of a
            /// file, which tells readers the format version.
            #[prost(string, tag = "3")]
            FileVersion(String),
            /// `summary` (5): the values logged at this step.
            #[prost(message, tag = "5")]
            Summary(super::Summary),
        }
    }

    /// `tensorflow.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// `value` (1): one entry per tag; the writer puts one in each event.
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<summary::Value>,
    }

    /// The nested types of `tensorflow.Summary`.
    pub mod summary {
        /// `tensorflow.Summary.Value`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Value {
            /// `tag` (1): the series name TensorBoard groups and plots by.
            #[prost(string, tag = "1")]
            pub tag: String,
            /// `oneof value`: `simple_value` (2), `image` (4) or `histo` (5);
            /// `audio`, `tensor` and `metadata` are not written.
            #[prost(oneof = "value::Value", tags = "2, 4, 5")]
            pub value: Option<value::Value>,
        }

        /// The nested types of `tensorflow.Summary.Value`.
        pub mod value {
            /// `oneof value` of `tensorflow.Summary.Value` (a oneof member is
            /// written even when it is zero, so a scalar 0.0 is kept).
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                /// `simple_value` (2): a scalar, shown in the Scalars tab.
                #[prost(float, tag = "2")]
                SimpleValue(f32),
                /// `image` (4): shown in the Images tab.
                #[prost(message, tag = "4")]
                Image(super::Image),
                /// `histo` (5): shown in the Histograms and Distributions tabs.
                #[prost(message, tag = "5")]
                Histo(crate::io::summary::proto::HistogramProto),
            }
        }

        /// `tensorflow.Summary.Image`: an encoded (PNG) image.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Image {
            /// `height` (1), in pixels.
            #[prost(int32, tag = "1")]
            pub height: i32,
            /// `width` (2), in pixels.
            #[prost(int32, tag = "2")]
            pub width: i32,
            /// `colorspace` (3): 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
            #[prost(int32, tag = "3")]
            pub colorspace: i32,
            /// `encoded_image_string` (4): the PNG file's bytes.
            #[prost(bytes = "vec", tag = "4")]
            pub encoded_image_string: Vec<u8>,
        }
    }

    /// `tensorflow.HistogramProto`: `bucket[i]` is the count of bucket `i`,
    /// whose upper edge is `bucket_limit[i]`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramProto {
        /// `min` (1): the smallest value.
        #[prost(double, tag = "1")]
        pub min: f64,
        /// `max` (2): the largest value.
        #[prost(double, tag = "2")]
        pub max: f64,
        /// `num` (3): how many values were counted (the writer leaves
        /// NaN and infinities out of every field).
        #[prost(double, tag = "3")]
        pub num: f64,
        /// `sum` (4): their sum.
        #[prost(double, tag = "4")]
        pub sum: f64,
        /// `sum_squares` (5): the sum of their squares, for the variance.
        #[prost(double, tag = "5")]
        pub sum_squares: f64,
        /// `bucket_limit` (6): each bucket's upper edge, ascending.
        #[prost(double, repeated, packed = "true", tag = "6")]
        pub bucket_limit: Vec<f64>,
        /// `bucket` (7): each bucket's count.
        #[prost(double, repeated, packed = "true", tag = "7")]
        pub bucket: Vec<f64>,
    }
}

/// TFRecord's CRC mask.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\']))
        .unwrap_or_else(|| "localhost".into())
}

/// The writers this process has opened: the last part of each file name.
static WRITERS: AtomicU64 = AtomicU64::new(0);

/// Creates a new event file in `logdir`, never one that exists: a name
/// already taken (by another process, or a clock that stepped back) is
/// retried with the next number.
fn create_event_file(logdir: &Path) -> Result<(PathBuf, File)> {
    let (secs, host, pid) = (now() as u64, hostname(), std::process::id());
    let mut tries = 0;
    loop {
        let n = WRITERS.fetch_add(1, Ordering::Relaxed);
        let path = logdir.join(format!("events.out.tfevents.{secs:010}.{host}.{pid}.{n}.v2"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 1000 => tries += 1,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

impl SummaryWriter {
    fn new(logdir: &Path) -> Result<SummaryWriter> {
        std::fs::create_dir_all(logdir).map_err(|e| Error::io(logdir, e))?;
        let (path, f) = create_event_file(logdir)?;
        let mut w = SummaryWriter {
            path,
            out: BufWriter::new(f),
        };
        w.write_event(proto::Event {
            wall_time: now(),
            step: 0,
            what: Some(proto::event::What::FileVersion("brain.Event:2".into())),
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data.
    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&rec).map_err(|e| Error::io(&self.path, e))
    }

    fn write_event(&mut self, event: proto::Event) -> Result<()> {
        self.record(&event.encode_to_vec())
    }

    fn event(&mut self, tag: &str, step: i64, value: Value) -> Result<()> {
        let summary = proto::Summary {
            value: vec![proto::summary::Value {
                tag: tag.to_string(),
                value: Some(value),
            }],
        };
        self.write_event(proto::Event {
            wall_time: now(),
            step,
            what: Some(proto::event::What::Summary(summary)),
        })
    }

    /// `tf.summary.scalar(name, value, step)`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        self.event(tag, step, Value::SimpleValue(value as f32))
    }

    /// `tf.summary.histogram(name, data, step)` with `buckets` equal-width buckets.
    pub fn histogram(&mut self, tag: &str, data: &Tensor, step: i64, buckets: usize) -> Result<()> {
        // TensorBoard draws tens of buckets (TF's default is 30); a count
        // beyond this is a mistake that would only allocate memory.
        const MAX_BUCKETS: usize = 1 << 16;
        if buckets > MAX_BUCKETS {
            return Err(Error::arg(
                "summary.histogram",
                format!("{buckets} buckets; at most {MAX_BUCKETS} (TensorBoard's default is 30)"),
            ));
        }
        let v = data.to_f64_vec()?;
        self.event(tag, step, Value::Histo(histogram_proto(&v, buckets.max(1))))
    }

    /// `tf.summary.image(name, data, step)`: data [k, h, w, c] in [0, 1],
    /// c = 1 (gray), 3 (RGB) or 4 (RGBA), h and w at least 1; one value per
    /// image ("tag/image", or "tag/image/i" for several).
    pub fn image(&mut self, tag: &str, data: &Tensor, step: i64) -> Result<()> {
        let s = data.shape().to_vec();
        if s.len() != 4 || ![1, 3, 4].contains(&s[3]) {
            return Err(Error::shape(
                "summary.image",
                &[&s],
                "needs images [k, height, width, channels] with 1, 3 or 4 channels",
            ));
        }
        check_image_size("summary.image", &s, s[1], s[2])?;
        let v = data.to_f64_vec()?;
        let per = s[1] * s[2] * s[3];
        for k in 0..s[0] {
            let px: Vec<u8> = v[k * per..(k + 1) * per]
                .iter()
                .map(|&x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            let image = proto::summary::Image {
                height: s[1] as i32,
                width: s[2] as i32,
                colorspace: s[3] as i32,
                encoded_image_string: encode_png(s[2], s[1], s[3], &px)?,
            };
            let name = if s[0] == 1 {
                format!("{tag}/image")
            } else {
                format!("{tag}/image/{k}")
            };
            self.event(&name, step, Value::Image(image))?;
        }
        Ok(())
    }

    /// `tf.summary.SummaryWriter.flush`: writes the buffered records and
    /// syncs the file, so a running TensorBoard sees them.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out.get_ref().sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn histogram_proto(v: &[f64], buckets: usize) -> proto::HistogramProto {
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
    proto::HistogramProto {
        min: lo,
        max: hi,
        num: finite.len() as f64,
        sum: finite.iter().sum(),
        sum_squares: finite.iter().map(|x| x * x).sum(),
        bucket_limit: limits,
        bucket: counts,
    }
}

/// Height and width of an image: at least 1, and within PNG's and
/// `Summary.Image`'s 31-bit sizes.
fn check_image_size(op: &'static str, shape: &[usize], height: usize, width: usize) -> Result<()> {
    const MAX: usize = i32::MAX as usize;
    if height == 0 || width == 0 || height > MAX || width > MAX {
        return Err(Error::shape(
            op,
            &[shape],
            format!("image height and width must be between 1 and {MAX}, got {height} x {width}"),
        ));
    }
    Ok(())
}

/// A PNG with 8-bit samples: `channels` 1 (gray), 2 (gray + alpha), 3 (RGB)
/// or 4 (RGBA); `px` holds `height` rows of `width * channels` bytes.
pub fn encode_png(width: usize, height: usize, channels: usize, px: &[u8]) -> Result<Vec<u8>> {
    let shape = [height, width, channels];
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(Error::shape("encode_png", &[&shape], "needs 1, 2, 3 or 4 channels")),
    };
    check_image_size("encode_png", &shape, height, width)?;
    if px.len() != height * width * channels {
        return Err(Error::shape(
            "encode_png",
            &[&shape, &[px.len()]],
            format!("needs {} bytes of pixels", height * width * channels),
        ));
    }
    let failed = |e: png::EncodingError| Error::arg("encode_png", format!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(failed)?;
    w.write_image_data(px).map_err(failed)?;
    w.finish().map_err(failed)?;
    Ok(out)
}
