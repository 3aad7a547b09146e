//! TensorFlow's tensor bundle (`variables/variables.index` + `.data-*`),
//! the checkpoint V2 format of `tf.train.Checkpoint` and SavedModel
//! variables (`tensorflow/core/util/tensor_bundle/tensor_bundle.cc`).
//!
//! `<prefix>.index` is a LevelDB table (keys sorted bytewise): the empty key
//! holds a [`BundleHeaderProto`], every other key a tensor's
//! [`BundleEntryProto`] (dtype, shape, shard, offset, size, masked CRC32C).
//! `<prefix>.data-<shard>-of-<num_shards>` (`%05d`) holds the tensors' bytes,
//! little-endian, unaligned, at their entries' offsets. [`write()`] writes one
//! shard; [`BundleReader`] reads any number, and big-endian bundles too.
//!
//! A `DT_STRING` tensor of `n` elements is stored as `n` varint64 lengths,
//! a fixed32 masked CRC32C of those lengths *each taken as a little-endian
//! u32* (u64 for lengths past `u32::MAX`), not of their varint bytes, then
//! the strings' bytes. The entry's CRC32C covers the same lengths (as u32),
//! the four raw bytes of the length checksum, then the strings: not the
//! region's bytes as they lie in the file. A [`BundleTensor`] of
//! `DT_STRING` holds that encoded region as its `data`
//! ([`BundleTensor::from_strings`] builds it, [`BundleReader::read_string`]
//! decodes it).
//!
//! Partitioned variables (entries with slices) are not supported: reading
//! one is an error, and their slice entries (keys starting with a NUL byte)
//! are left out of [`BundleReader::keys`].

use super::proto::{BundleEntryProto, BundleHeaderProto, TensorShapeProto, VersionDef, dt, tensor_shape_proto};
use super::table;
use crate::core::error::{Error, Result};
use crate::io::summary::masked_crc32c;
use crate::io::write_atomic;
use prost::Message;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The bundle format version wgflow writes and reads (`kTensorBundleVersion`).
const VERSION: i32 = 1;

/// One tensor of a bundle: TensorFlow dtype code ([`dt`]),
/// shape, and raw little-endian bytes in C order (for `DT_STRING`, the
/// encoded region described in the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct BundleTensor {
    /// TensorFlow `DataType` code (`dt::FLOAT`...).
    pub dtype: i32,
    /// Dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements' bytes, little-endian, C order.
    pub data: Vec<u8>,
}

impl BundleTensor {
    /// A `DT_STRING` tensor of `shape` holding `elems` (as many as the
    /// shape has elements), encoded as a bundle stores it.
    pub fn from_strings(shape: Vec<usize>, elems: &[impl AsRef<[u8]>]) -> Result<BundleTensor> {
        let n = num_elements(&shape);
        if n != Some(elems.len()) {
            return Err(Error::arg(
                "BundleTensor::from_strings",
                format!("shape {shape:?} does not hold {} strings", elems.len()),
            ));
        }
        Ok(BundleTensor {
            dtype: dt::STRING,
            shape,
            data: encode_strings(elems).0,
        })
    }
}

/// Bytes per element of a fixed-width TensorFlow dtype; `None` for
/// `DT_STRING`, `DT_RESOURCE`, `DT_VARIANT` and codes wgflow does not know.
pub fn dtype_size(dtype: i32) -> Option<usize> {
    Some(match dtype {
        // uint8, int8, bool, qint8, quint8
        4 | 6 | 10 | 11 | 12 => 1,
        // int16, bfloat16, qint16, quint16, uint16, half
        5 | 14 | 15 | 16 | 17 | 19 => 2,
        // float, int32, qint32, uint32
        1 | 3 | 13 | 22 => 4,
        // double, complex64, int64, uint64
        2 | 8 | 9 | 23 => 8,
        // complex128
        18 => 16,
        _ => return None,
    })
}

/// The unit a big-endian bundle's bytes are swapped in: the element, or
/// each half of a complex number.
fn swap_unit(dtype: i32) -> Option<usize> {
    match dtype {
        8 => Some(4),
        18 => Some(8),
        d => dtype_size(d),
    }
}

fn num_elements(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<prefix>.index`.
pub fn index_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".index")
}

/// `<prefix>.data-<shard>-of-<num_shards>`, both `%05d`.
pub fn data_path(prefix: &Path, shard: i32, num_shards: i32) -> PathBuf {
    with_suffix(prefix, &format!(".data-{shard:05}-of-{num_shards:05}"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Extends `crc` by a string length as TensorFlow checksums it: a u32 where
/// it fits (as older checkpoints did), else a u64, in the bundle's byte
/// order.
fn crc_length(crc: u32, len: u64, big_endian: bool) -> u32 {
    match (u32::try_from(len), big_endian) {
        (Ok(l), false) => crc32c::crc32c_append(crc, &l.to_le_bytes()),
        (Ok(l), true) => crc32c::crc32c_append(crc, &l.to_be_bytes()),
        (Err(_), false) => crc32c::crc32c_append(crc, &len.to_le_bytes()),
        (Err(_), true) => crc32c::crc32c_append(crc, &len.to_be_bytes()),
    }
}

/// The region and masked entry CRC32C of a string tensor (`WriteStringTensor`).
fn encode_strings(elems: &[impl AsRef<[u8]>]) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let mut crc = 0u32;
    for e in elems {
        let len = e.as_ref().len() as u64;
        put_varint(&mut out, len);
        crc = crc_length(crc, len, false);
    }
    let length_checksum = mask(crc).to_le_bytes();
    out.extend_from_slice(&length_checksum);
    crc = crc32c::crc32c_append(crc, &length_checksum);
    for e in elems {
        out.extend_from_slice(e.as_ref());
        crc = crc32c::crc32c_append(crc, e.as_ref());
    }
    (out, mask(crc))
}

fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Decodes a string tensor's region of `n` elements (`ReadStringTensor`):
/// the strings and the masked CRC32C an entry holds for them. Errors are
/// messages, for the caller to put a path and entry name on.
fn decode_strings(region: &[u8], n: usize, big_endian: bool) -> std::result::Result<(Vec<Vec<u8>>, u32), String> {
    // Each length takes at least one byte: a larger count is corrupt, and
    // must not size an allocation.
    if n > region.len() {
        return Err(format!("{n} string lengths cannot fit in {} bytes", region.len()));
    }
    let mut pos = 0usize;
    let mut crc = 0u32;
    let mut lengths = Vec::with_capacity(n);
    for i in 0..n {
        let len = table::get_varint(region, &mut pos, 64)
            .ok_or_else(|| format!("bad or truncated varint length of string {i}"))?;
        crc = crc_length(crc, len, big_endian);
        lengths.push(len);
    }
    let raw = region
        .get(pos..pos.saturating_add(4))
        .ok_or_else(|| "string lengths run past the end of the tensor's region".to_string())?;
    let raw: [u8; 4] = [raw[0], raw[1], raw[2], raw[3]];
    pos += 4;
    let stored = if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    };
    if stored != mask(crc) {
        return Err(format!(
            "string length checksum mismatch (expected {stored:#010x}, got {:#010x})",
            mask(crc)
        ));
    }
    crc = crc32c::crc32c_append(crc, &raw);
    let total = lengths.iter().try_fold(0u64, |t, &l| t.checked_add(l));
    let rest = region.len() - pos;
    if total != Some(rest as u64) {
        return Err(format!(
            "string lengths add up to {}, but {rest} bytes of strings follow them",
            total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string())
        ));
    }
    let mut out = Vec::with_capacity(n);
    for len in lengths {
        // The lengths add up to `rest`, so each fits.
        let end = pos + len as usize;
        let s = region.get(pos..end).ok_or_else(|| "string out of bounds".to_string())?;
        crc = crc32c::crc32c_append(crc, s);
        out.push(s.to_vec());
        pos = end;
    }
    Ok((out, mask(crc)))
}

/// Writes `<prefix>.index` and `<prefix>.data-00000-of-00001` holding
/// `tensors`, as TensorFlow's `BundleWriter` does (sorted by name here;
/// names must be unique and non-empty, and may not start with a NUL byte).
/// Creates `prefix`'s directory if needed.
///
/// Each file is written through a temporary file and a rename, the data
/// file first, so the index never names data that is not there.
/// `DT_STRING` tensors hold their encoded region
/// ([`BundleTensor::from_strings`]); `DT_RESOURCE` and `DT_VARIANT` are
/// refused.
pub fn write(prefix: &Path, tensors: &[(String, BundleTensor)]) -> Result<()> {
    const OP: &str = "bundle::write";
    let mut sorted: Vec<&(String, BundleTensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::arg(OP, format!("duplicate tensor name '{}'", w[0].0)));
    }
    let mut data = Vec::new();
    let mut entries = Vec::with_capacity(sorted.len());
    for (name, t) in sorted {
        if name.is_empty() || name.starts_with('\0') {
            return Err(Error::arg(
                OP,
                format!("tensor name {name:?} is empty or starts with NUL"),
            ));
        }
        let n = num_elements(&t.shape)
            .ok_or_else(|| Error::arg(OP, format!("tensor '{name}': shape {:?} overflows", t.shape)))?;
        let crc = if t.dtype == dt::STRING {
            decode_strings(&t.data, n, false)
                .map_err(|e| Error::arg(OP, format!("tensor '{name}': not an encoded string tensor: {e}")))?
                .1
        } else {
            let size = dtype_size(t.dtype).ok_or_else(|| {
                Error::arg(
                    OP,
                    format!("tensor '{name}': dtype {} cannot be stored", dt::name(t.dtype)),
                )
            })?;
            if n.checked_mul(size) != Some(t.data.len()) {
                return Err(Error::arg(
                    OP,
                    format!(
                        "tensor '{name}': {} bytes of data for shape {:?} of {}",
                        t.data.len(),
                        t.shape,
                        dt::name(t.dtype)
                    ),
                ));
            }
            masked_crc32c(&t.data)
        };
        let dims = t
            .shape
            .iter()
            .map(|&d| {
                Ok(tensor_shape_proto::Dim {
                    size: i64::try_from(d)
                        .map_err(|_| Error::arg(OP, format!("tensor '{name}': dim {d} too large")))?,
                    name: String::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let entry = BundleEntryProto {
            dtype: t.dtype,
            shape: Some(TensorShapeProto {
                dim: dims,
                unknown_rank: false,
            }),
            shard_id: 0,
            offset: data.len() as i64,
            size: t.data.len() as i64,
            crc32c: crc,
            slices: Vec::new(),
        };
        data.extend_from_slice(&t.data);
        entries.push((name.as_bytes(), entry.encode_to_vec()));
    }
    let header = BundleHeaderProto {
        num_shards: 1,
        endianness: 0,
        version: Some(VersionDef {
            producer: VERSION,
            min_consumer: 0,
            bad_consumers: Vec::new(),
        }),
    }
    .encode_to_vec();
    let mut kv: Vec<(&[u8], &[u8])> = Vec::with_capacity(entries.len() + 1);
    kv.push((b"", &header));
    kv.extend(entries.iter().map(|(k, v)| (*k, v.as_slice())));
    let index = table::build(&kv);
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(&data_path(prefix, 0, 1), &data)?;
    write_atomic(&index_path(prefix), &index)
}

/// Reads a tensor bundle: the index is read and checked when opened, each
/// tensor's bytes when asked for (`tf.train.load_checkpoint`).
#[derive(Debug, Clone)]
pub struct BundleReader {
    prefix: PathBuf,
    index_path: PathBuf,
    header: BundleHeaderProto,
    entries: BTreeMap<String, BundleEntryProto>,
}

impl BundleReader {
    /// Reads `<prefix>.index` and checks it: the table's block checksums,
    /// bounds and footer magic, the header (its version, shard count and
    /// byte order), and that every entry parses. Data files are opened by
    /// [`read`](Self::read).
    pub fn open(prefix: &Path) -> Result<BundleReader> {
        let index_path = index_path(prefix);
        let bytes = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let (header, entries) = parse_index(&index_path, &bytes)?;
        Ok(BundleReader {
            prefix: prefix.to_path_buf(),
            index_path,
            header,
            entries,
        })
    }

    /// The bundle's header (shard count, byte order, format version).
    pub fn header(&self) -> &BundleHeaderProto {
        &self.header
    }

    /// The tensors' names, sorted (without the header's empty key).
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The index entry of `name`: dtype, shape, shard, offset, size, CRC.
    pub fn entry(&self, name: &str) -> Option<&BundleEntryProto> {
        self.entries.get(name)
    }

    /// The dtype and shape of `name`, checked: known rank, no negative
    /// dimension, no slices.
    fn checked_entry(&self, name: &str) -> Result<(&BundleEntryProto, Vec<usize>)> {
        let bad = |msg: String| Error::format(&self.index_path, msg);
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| bad(format!("no tensor named '{name}'")))?;
        if !e.slices.is_empty() {
            return Err(bad(format!("sliced (partitioned) tensor '{name}' is not supported")));
        }
        let shape = e.shape.clone().unwrap_or_default();
        if shape.unknown_rank {
            return Err(bad(format!("entry '{name}' has a shape of unknown rank")));
        }
        let dims = shape
            .dim
            .iter()
            .map(|d| usize::try_from(d.size).map_err(|_| bad(format!("entry '{name}' has dimension {}", d.size))))
            .collect::<Result<Vec<_>>>()?;
        Ok((e, dims))
    }

    /// The bytes of `e`'s region in its data file, after checking the shard
    /// and the bounds against the file's length.
    fn region(&self, name: &str, e: &BundleEntryProto) -> Result<(PathBuf, Vec<u8>)> {
        let num_shards = self.header.num_shards;
        if e.shard_id < 0 || e.shard_id >= num_shards {
            return Err(Error::format(
                &self.index_path,
                format!("entry '{name}' has shard_id {} of {num_shards} shards", e.shard_id),
            ));
        }
        let path = data_path(&self.prefix, e.shard_id, num_shards);
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
        let (Ok(offset), Ok(size)) = (u64::try_from(e.offset), u64::try_from(e.size)) else {
            return Err(Error::format(
                &self.index_path,
                format!("entry '{name}' has offset {} and size {}", e.offset, e.size),
            ));
        };
        let end = offset.checked_add(size).filter(|&end| end <= len);
        let (Some(_), Ok(size)) = (end, usize::try_from(size)) else {
            return Err(Error::format(
                &path,
                format!(
                    "entry '{name}' has offset+size {} past the end of the data file ({len} bytes)",
                    offset as u128 + size as u128
                ),
            ));
        };
        let mut buf = vec![0u8; size];
        f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&path, e))?;
        f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
        Ok((path, buf))
    }

    fn big_endian(&self) -> bool {
        self.header.endianness == 1
    }

    /// Reads `name`: checks its size against dtype and shape and its bytes
    /// against the entry's CRC32C. Bytes come back little-endian, swapped
    /// from a big-endian bundle. A `DT_STRING` tensor's `data` is its
    /// encoded region, checked likewise ([`read_string`](Self::read_string)
    /// decodes it).
    pub fn read(&self, name: &str) -> Result<BundleTensor> {
        let (e, shape) = self.checked_entry(name)?;
        let n = num_elements(&shape)
            .ok_or_else(|| Error::format(&self.index_path, format!("entry '{name}': shape {shape:?} overflows")))?;
        if e.dtype == dt::STRING {
            let (path, region) = self.region(name, e)?;
            if !(n == 0 && region.is_empty()) {
                self.decode_checked(name, e, &path, &region, n)?;
            }
            return Ok(BundleTensor {
                dtype: e.dtype,
                shape,
                data: region,
            });
        }
        let elem = dtype_size(e.dtype).ok_or_else(|| {
            Error::format(
                &self.index_path,
                format!("entry '{name}' has unsupported dtype {}", dt::name(e.dtype)),
            )
        })?;
        let want = n.checked_mul(elem);
        if want.map(|w| w as u64) != u64::try_from(e.size).ok() {
            return Err(Error::format(
                &self.index_path,
                format!(
                    "entry '{name}' has size {}, but shape {shape:?} of {} needs {}",
                    e.size,
                    dt::name(e.dtype),
                    want.map_or_else(|| "more than usize::MAX".into(), |w| w.to_string()),
                ),
            ));
        }
        let (path, mut data) = self.region(name, e)?;
        let got = masked_crc32c(&data);
        if got != e.crc32c {
            return Err(crc_error(&path, name, e.crc32c, got));
        }
        if self.big_endian() {
            let unit = swap_unit(e.dtype).unwrap_or(1);
            if unit > 1 {
                data.chunks_exact_mut(unit).for_each(|c| c.reverse());
            }
        }
        Ok(BundleTensor {
            dtype: e.dtype,
            shape,
            data,
        })
    }

    fn decode_checked(
        &self,
        name: &str,
        e: &BundleEntryProto,
        path: &Path,
        region: &[u8],
        n: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let (strings, crc) = decode_strings(region, n, self.big_endian())
            .map_err(|msg| Error::format(path, format!("entry '{name}': {msg}")))?;
        if crc != e.crc32c {
            return Err(crc_error(path, name, e.crc32c, crc));
        }
        Ok(strings)
    }

    /// Reads the `DT_STRING` tensor `name`, its elements in C order,
    /// checked against both of its checksums.
    pub fn read_string(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        let (e, shape) = self.checked_entry(name)?;
        if e.dtype != dt::STRING {
            return Err(Error::format(
                &self.index_path,
                format!("entry '{name}' is {}, not DT_STRING", dt::name(e.dtype)),
            ));
        }
        let n = num_elements(&shape)
            .ok_or_else(|| Error::format(&self.index_path, format!("entry '{name}': shape {shape:?} overflows")))?;
        let (path, region) = self.region(name, e)?;
        if n == 0 && region.is_empty() {
            return Ok(Vec::new());
        }
        self.decode_checked(name, e, &path, &region, n)
    }
}

fn crc_error(path: &Path, name: &str, expected: u32, got: u32) -> Error {
    let file = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
    Error::format(
        path,
        format!("entry '{name}': crc32c mismatch in {file} (expected {expected:#010x}, got {got:#010x})"),
    )
}

/// The header and the tensors' entries of the index file `path`, whose
/// contents are `bytes`.
fn parse_index(path: &Path, bytes: &[u8]) -> Result<(BundleHeaderProto, BTreeMap<String, BundleEntryProto>)> {
    let bad = |msg: String| Error::format(path, msg);
    let kv = table::read(path, bytes)?;
    let mut it = kv.into_iter();
    let header = match it.next() {
        Some((k, v)) if k.is_empty() => {
            BundleHeaderProto::decode(v.as_slice()).map_err(|e| bad(format!("unreadable bundle header: {e}")))?
        }
        _ => return Err(bad("no bundle header (the entry under the empty key)".into())),
    };
    if header.num_shards < 1 {
        return Err(bad(format!("header has num_shards {}", header.num_shards)));
    }
    if header.endianness != 0 && header.endianness != 1 {
        return Err(bad(format!("header has unknown endianness {}", header.endianness)));
    }
    let version = header.version.clone().unwrap_or_default();
    if version.min_consumer > VERSION {
        return Err(bad(format!(
            "bundle needs a reader of format version {} or newer; this one reads version {VERSION}",
            version.min_consumer
        )));
    }
    if version.bad_consumers.contains(&VERSION) {
        return Err(bad(format!("bundle disallows readers of format version {VERSION}")));
    }
    let mut entries = BTreeMap::new();
    for (k, v) in it {
        // Slice entries of partitioned variables (OrderedCode-encoded names).
        if k.first() == Some(&0) {
            continue;
        }
        let name = String::from_utf8(k).map_err(|e| bad(format!("key {:?} is not UTF-8", e.as_bytes())))?;
        let entry = BundleEntryProto::decode(v.as_slice())
            .map_err(|e| bad(format!("entry '{name}' is not a readable BundleEntryProto: {e}")))?;
        entries.insert(name, entry);
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::saved_model::proto;

    fn tmp(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("wgflow-bundle-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn tensor(i: usize) -> BundleTensor {
        let shape = vec![i % 3 + 1, i % 5];
        let n = num_elements(&shape).unwrap();
        let (dtype, data): (i32, Vec<u8>) = match i % 4 {
            0 => (
                dt::FLOAT,
                (0..n).flat_map(|j| (i as f32 + j as f32 * 0.5).to_le_bytes()).collect(),
            ),
            1 => (
                dt::INT32,
                (0..n)
                    .flat_map(|j| (i as i32 * 1000 - j as i32).to_le_bytes())
                    .collect(),
            ),
            2 => (
                dt::INT64,
                (0..n)
                    .flat_map(|j| ((i as i64) << 40 | j as i64).to_le_bytes())
                    .collect(),
            ),
            _ => (
                dt::HALF,
                (0..n)
                    .flat_map(|j| half::f16::from_f32(j as f32 - i as f32).to_le_bytes())
                    .collect(),
            ),
        };
        BundleTensor { dtype, shape, data }
    }

    fn tensors(count: usize) -> Vec<(String, BundleTensor)> {
        (0..count)
            .map(|i| {
                (
                    format!(
                        "model/layer_with_weights-{}/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE",
                        i * 7919 % count
                    ),
                    tensor(i),
                )
            })
            .collect()
    }

    #[test]
    fn round_trip_many() {
        let dir = tmp("many");
        let prefix = dir.join("variables");
        let mut ts = tensors(300);
        let graph = proto::TrackableObjectGraph {
            nodes: vec![proto::TrackableObject::default(); 3],
        };
        ts.push((
            "_CHECKPOINTABLE_OBJECT_GRAPH".into(),
            BundleTensor::from_strings(vec![], &[graph.encode_to_vec()]).unwrap(),
        ));
        ts.push((
            "strings".into(),
            BundleTensor::from_strings(vec![2, 2], &[&b"a"[..], b"", b"hello", &[0xff; 300]]).unwrap(),
        ));
        ts.push((
            "empty".into(),
            BundleTensor::from_strings(vec![0, 3], &[] as &[&[u8]]).unwrap(),
        ));
        write(&prefix, &ts).unwrap();
        let index = std::fs::read(index_path(&prefix)).unwrap();
        assert!(index.len() > 3 * 4096, "several data blocks");
        let r = BundleReader::open(&prefix).unwrap();
        let mut names: Vec<String> = ts.iter().map(|t| t.0.clone()).collect();
        names.sort();
        assert_eq!(r.keys(), names);
        for (name, t) in &ts {
            assert_eq!(&r.read(name).unwrap(), t, "{name}");
            assert_eq!(r.entry(name).unwrap().dtype, t.dtype);
        }
        let g = r.read_string("_CHECKPOINTABLE_OBJECT_GRAPH").unwrap();
        assert_eq!(proto::TrackableObjectGraph::decode(g[0].as_slice()).unwrap(), graph);
        let s = r.read_string("strings").unwrap();
        assert_eq!(s, vec![b"a".to_vec(), vec![], b"hello".to_vec(), vec![0xff; 300]]);
        assert!(r.read_string("empty").unwrap().is_empty());
        let err = r.read_string(&ts[0].0).unwrap_err().to_string();
        assert!(err.contains("not DT_STRING"), "{err}");
        let err = r.read("nope").unwrap_err().to_string();
        assert!(err.contains("no tensor named 'nope'"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_rejects_bad_input() {
        let dir = tmp("bad");
        let p = dir.join("v");
        let t = tensor(1);
        assert!(write(&p, &[("a".into(), t.clone()), ("a".into(), t.clone())]).is_err());
        assert!(write(&p, &[(String::new(), t.clone())]).is_err());
        let mut short = t.clone();
        short.data.pop();
        assert!(write(&p, &[("a".into(), short)]).is_err());
        let s = BundleTensor {
            dtype: dt::STRING,
            shape: vec![1],
            data: vec![5, 0, 0, 0, 0],
        };
        assert!(write(&p, &[("a".into(), s)]).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn every_truncation_of_the_index_errors() {
        let dir = tmp("trunc");
        let prefix = dir.join("v");
        write(&prefix, &tensors(300)).unwrap();
        let index = std::fs::read(index_path(&prefix)).unwrap();
        let path = Path::new("variables.index");
        assert!(parse_index(path, &index).is_ok());
        for len in 0..index.len() {
            assert!(parse_index(path, &index[..len]).is_err(), "truncated to {len}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_bit_flip_of_a_small_index_errors_or_changes_nothing() {
        let dir = tmp("flip");
        let prefix = dir.join("v");
        write(&prefix, &tensors(40)).unwrap();
        let index = std::fs::read(index_path(&prefix)).unwrap();
        let path = Path::new("variables.index");
        let good = parse_index(path, &index).unwrap();
        let mut errors = 0;
        for bit in 0..index.len() * 8 {
            let mut b = index.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match parse_index(path, &b) {
                Ok(got) => assert_eq!(got, good, "bit {bit}"),
                Err(e) => {
                    assert!(e.to_string().starts_with("variables.index: "), "{e}");
                    errors += 1;
                }
            }
        }
        // Only the footer's zero padding is unchecked.
        assert!(errors >= index.len() * 8 - 40 * 8, "{errors}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_garbage_index_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dir = tmp("garbage");
        let prefix = dir.join("v");
        write(&prefix, &tensors(20)).unwrap();
        let index = std::fs::read(index_path(&prefix)).unwrap();
        for _ in 0..3000 {
            let mut b = index.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            let _ = parse_index(Path::new("x.index"), &b);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flipped_data_byte_names_the_tensor() {
        let dir = tmp("data");
        let prefix = dir.join("variables");
        let ts = tensors(20);
        write(&prefix, &ts).unwrap();
        let r = BundleReader::open(&prefix).unwrap();
        let name = &ts[7].0;
        let e = r.entry(name).unwrap().clone();
        let dp = data_path(&prefix, 0, 1);
        let mut data = std::fs::read(&dp).unwrap();
        data[e.offset as usize + 1] ^= 0x10;
        std::fs::write(&dp, &data).unwrap();
        let err = r.read(name).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "entry '{name}': crc32c mismatch in variables.data-00000-of-00001"
            )),
            "{err}"
        );
        // A data file cut short: the bounds check names the entry.
        let last = r.keys().into_iter().max_by_key(|k| r.entry(k).unwrap().offset).unwrap();
        std::fs::write(&dp, &data[..data.len() - 1]).unwrap();
        let err = r.read(&last).unwrap_err().to_string();
        assert!(err.contains("past the end of the data file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A bundle written by hand in another byte order, shard count or with
    /// bad entries: the reader swaps, finds shards, and refuses what it must.
    #[test]
    fn hand_built_bundles() {
        let dir = tmp("hand");
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("ckpt");
        let header = |num_shards: i32, endianness: i32| {
            BundleHeaderProto {
                num_shards,
                endianness,
                version: Some(VersionDef {
                    producer: 1,
                    ..Default::default()
                }),
            }
            .encode_to_vec()
        };
        let entry = |dtype: i32, dims: &[i64], shard_id: i32, offset: i64, data: &[u8]| {
            BundleEntryProto {
                dtype,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&size| tensor_shape_proto::Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                shard_id,
                offset,
                size: data.len() as i64,
                crc32c: masked_crc32c(data),
                slices: Vec::new(),
            }
            .encode_to_vec()
        };
        // Big-endian, two shards.
        let a: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let b: Vec<u8> = [7i64].iter().flat_map(|x| x.to_be_bytes()).collect();
        let h = header(2, 1);
        let ea = entry(dt::FLOAT, &[2], 0, 0, &a);
        let eb = entry(dt::INT64, &[], 1, 3, &b);
        let ec = entry(dt::FLOAT, &[-1], 0, 0, &[]);
        let mut ed = BundleEntryProto::decode(ea.as_slice()).unwrap();
        ed.slices.push(proto::TensorSliceProto::default());
        let ed = ed.encode_to_vec();
        let ee = entry(dt::FLOAT, &[3], 0, 0, &a);
        let ef = entry(dt::FLOAT, &[2], 5, 0, &a);
        let kv: Vec<(&[u8], &[u8])> = vec![
            (b"", &h),
            (b"\0slice", b"junk"),
            (b"a", &ea),
            (b"b", &eb),
            (b"neg", &ec),
            (b"part", &ed),
            (b"shard", &ef),
            (b"short", &ee),
        ];
        std::fs::write(index_path(&prefix), table::build(&kv)).unwrap();
        std::fs::write(data_path(&prefix, 0, 2), &a).unwrap();
        std::fs::write(data_path(&prefix, 1, 2), [&[9u8, 9, 9][..], &b].concat()).unwrap();
        let r = BundleReader::open(&prefix).unwrap();
        assert_eq!(r.keys(), ["a", "b", "neg", "part", "shard", "short"]);
        let ta = r.read("a").unwrap();
        assert_eq!(
            ta.data,
            [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()
        );
        assert_eq!(r.read("b").unwrap().data, 7i64.to_le_bytes());
        let msg = |k: &str| r.read(k).unwrap_err().to_string();
        assert!(msg("neg").contains("dimension -1"), "{}", msg("neg"));
        assert!(msg("part").contains("sliced (partitioned) tensor 'part' is not supported"));
        assert!(msg("short").contains("needs 12"), "{}", msg("short"));
        assert!(msg("shard").contains("shard_id 5 of 2"), "{}", msg("shard"));

        // Headers refused.
        for (h, want) in [
            (header(0, 0), "num_shards 0"),
            (header(1, 3), "endianness 3"),
            (
                BundleHeaderProto {
                    num_shards: 1,
                    endianness: 0,
                    version: Some(VersionDef {
                        producer: 2,
                        min_consumer: 2,
                        bad_consumers: vec![],
                    }),
                }
                .encode_to_vec(),
                "version 2 or newer",
            ),
        ] {
            let err = parse_index(Path::new("i"), &table::build(&[(b"", &h)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = parse_index(Path::new("i"), &table::build(&[(b"a", &ea)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no bundle header"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn string_tensor_layout() {
        // Two strings: varint lengths, masked CRC of the lengths as u32, bytes.
        let t = BundleTensor::from_strings(vec![2], &[&b"ab"[..], b"c"]).unwrap();
        let mut crc = crc32c::crc32c_append(0, &2u32.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &1u32.to_le_bytes());
        let mut want = vec![2u8, 1];
        want.extend_from_slice(&mask(crc).to_le_bytes());
        want.extend_from_slice(b"abc");
        assert_eq!(t.data, want);
        assert!(BundleTensor::from_strings(vec![3], &[&b"ab"[..]]).is_err());
        // Every truncation or flip of the region is an error.
        for len in 0..t.data.len() {
            assert!(decode_strings(&t.data[..len], 2, false).is_err());
        }
        let (_, entry_crc) = decode_strings(&t.data, 2, false).unwrap();
        for bit in 0..t.data.len() * 8 {
            let mut b = t.data.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok((_, c)) = decode_strings(&b, 2, false) {
                assert_ne!(c, entry_crc, "bit {bit}");
            }
        }
        assert!(decode_strings(&[0xff; 64], 1_000_000, false).is_err());
    }
}
