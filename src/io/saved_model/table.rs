//! LevelDB's table format (an SSTable), as TensorFlow writes it for a tensor
//! bundle's `.index` file (`tensorflow/core/lib/io/table_builder.cc`,
//! `block_builder.cc`, `format.cc`), uncompressed.
//!
//! A table is a run of data blocks, a metaindex block, an index block and a
//! 48-byte footer. A block holds prefix-compressed entries
//! (`varint32 shared, varint32 unshared, varint32 value_len, key delta,
//! value`), then the fixed32 offsets of its restart points and their
//! fixed32 count; a 5-byte trailer follows it on disk: the compression type
//! (0: none) and the masked CRC32C of the contents and that type byte. The
//! index block maps the last key of each data block to the block's handle
//! (varint64 offset, varint64 size without the trailer); the footer holds the
//! metaindex and index handles, zero padding to 40 bytes, and the magic
//! number as a little-endian fixed64.
//!
//! The reader checks every checksum, bound and varint, and that keys are
//! strictly increasing: no byte sequence makes it panic or allocate more
//! than a bounded multiple of the file's length.

use crate::core::error::{Error, Result};
use crate::io::summary::masked_crc32c;
use std::path::Path;

/// `kTableMagicNumber`, little-endian in the footer's last 8 bytes.
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Footer size: two handles padded to 40 bytes, then the magic number.
const FOOTER_LEN: usize = 48;
/// Where the footer's padding ends and the magic number starts.
const HANDLES_LEN: usize = 40;
/// Compression type byte and masked CRC32C after each block.
const TRAILER_LEN: usize = 5;
/// Entries between restart points in data blocks (LevelDB's default).
const RESTART_INTERVAL: usize = 16;
/// A data block is closed once its contents reach this size.
const BLOCK_SIZE: usize = 4096;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint of at most `max_bits` bits at `*pos`, advancing `*pos`;
/// `None` when it is truncated, longer than the type allows or overflows it.
pub(super) fn get_varint(bytes: &[u8], pos: &mut usize, max_bits: u32) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        let low = u64::from(b & 0x7f);
        // Bits that would land at or past `max_bits` make it overflow.
        let room = max_bits.checked_sub(shift).filter(|&r| r > 0)?;
        if room < 7 && low >> room != 0 {
            return None;
        }
        v |= low << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn get_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let b = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A block's place in the file: offset and size of its contents (the
/// trailer follows).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Handle {
    offset: u64,
    size: u64,
}

impl Handle {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.offset);
        put_varint(out, self.size);
    }

    fn decode(bytes: &[u8], pos: &mut usize) -> Option<Handle> {
        let offset = get_varint(bytes, pos, 64)?;
        let size = get_varint(bytes, pos, 64)?;
        Some(Handle { offset, size })
    }
}

/// Accumulates one block's entries (`BlockBuilder`).
struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    fn new(interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            since_restart: 0,
            interval,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.since_restart < self.interval {
            key.iter().zip(&self.last_key).take_while(|(a, b)| a == b).count()
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart += 1;
        self.entries += 1;
    }

    fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// The block's contents; the builder starts over empty.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        *self = BlockBuilder::new(self.interval);
        out
    }
}

/// Appends `contents` and its trailer to `file`; returns its handle.
fn write_block(file: &mut Vec<u8>, contents: &[u8]) -> Handle {
    let handle = Handle {
        offset: file.len() as u64,
        size: contents.len() as u64,
    };
    file.extend_from_slice(contents);
    file.push(0); // kNoCompression
    let crc = masked_crc32c(&file[file.len() - contents.len() - 1..]);
    file.extend_from_slice(&crc.to_le_bytes());
    handle
}

/// The table holding `entries`, which must be sorted bytewise, without
/// duplicates.
pub(super) fn build(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    let mut file = Vec::new();
    let mut data = BlockBuilder::new(RESTART_INTERVAL);
    // The index block restarts at every entry, as TensorFlow's does.
    let mut index = BlockBuilder::new(1);
    // Closes the data block; the index maps its last key to its handle.
    let flush = |data: &mut BlockBuilder, file: &mut Vec<u8>, index: &mut BlockBuilder| {
        let last = std::mem::take(&mut data.last_key);
        let handle = write_block(file, &data.finish());
        let mut h = Vec::new();
        handle.encode(&mut h);
        index.add(&last, &h);
    };
    for (k, v) in entries {
        data.add(k, v);
        if data.estimated_size() >= BLOCK_SIZE {
            flush(&mut data, &mut file, &mut index);
        }
    }
    if data.entries > 0 {
        flush(&mut data, &mut file, &mut index);
    }
    let metaindex = write_block(&mut file, &BlockBuilder::new(RESTART_INTERVAL).finish());
    let index = write_block(&mut file, &index.finish());
    let start = file.len();
    metaindex.encode(&mut file);
    index.encode(&mut file);
    file.resize(start + HANDLES_LEN, 0);
    file.extend_from_slice(&MAGIC.to_le_bytes());
    file
}

/// The contents of the block at `h`, after checking its bounds, trailer and
/// checksum.
fn read_block<'a>(path: &Path, file: &'a [u8], h: Handle, what: &str) -> Result<&'a [u8]> {
    let bad = |msg: String| Error::format(path, msg);
    let end = h
        .offset
        .checked_add(h.size)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64))
        .filter(|&e| e <= file.len() as u64)
        .ok_or_else(|| {
            bad(format!(
                "{what} at offset {} with size {} runs past the end of the file ({} bytes)",
                h.offset,
                h.size,
                file.len()
            ))
        })?;
    // In bounds of `file`, so these fit in usize.
    let (start, end) = (h.offset as usize, end as usize);
    let block = file
        .get(start..end)
        .ok_or_else(|| bad(format!("{what} at offset {start} is out of bounds")))?;
    let n = block.len() - TRAILER_LEN;
    let stored = get_u32(block, n + 1).ok_or_else(|| bad(format!("{what} at offset {start} is truncated")))?;
    if masked_crc32c(&block[..n + 1]) != stored {
        return Err(bad(format!("block checksum mismatch at offset {start} ({what})")));
    }
    match block[n] {
        0 => Ok(&block[..n]),
        1 => Err(bad(format!(
            "{what} at offset {start}: unsupported compression type 1 (snappy)"
        ))),
        t => Err(bad(format!("{what} at offset {start}: unknown compression type {t}"))),
    }
}

/// Caps the bytes of keys decoded from the file: prefix compression lets a
/// short entry stand for a long key, so a corrupt file could otherwise ask
/// for far more memory than it holds.
struct KeyBudget {
    left: usize,
}

/// Decodes the entries of a block's contents, in order; calls `f` with each
/// key and value.
fn parse_block(
    path: &Path,
    contents: &[u8],
    offset: u64,
    what: &str,
    budget: &mut KeyBudget,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let bad = |msg: String| Error::format(path, format!("{what} at offset {offset}: {msg}"));
    let len = contents.len();
    if len < 4 {
        return Err(bad(format!("block of {len} bytes is too short for its restart count")));
    }
    let num_restarts = get_u32(contents, len - 4).ok_or_else(|| bad("truncated block".into()))? as usize;
    let max_restarts = (len - 4) / 4;
    if num_restarts > max_restarts {
        return Err(bad(format!(
            "{num_restarts} restart points do not fit in a block of {len} bytes"
        )));
    }
    let entries_end = len - 4 - 4 * num_restarts;
    let restarts: Vec<usize> = (0..num_restarts)
        .filter_map(|i| get_u32(contents, entries_end + 4 * i).map(|r| r as usize))
        .collect();
    if entries_end == 0 {
        // An empty block (the metaindex): its restart array is [0].
        return match restarts.iter().all(|&r| r == 0) {
            true => Ok(()),
            false => Err(bad("restart point out of range in an empty block".into())),
        };
    }
    if restarts.first() != Some(&0) || restarts.iter().any(|&r| r >= entries_end) {
        return Err(bad("restart point out of range".into()));
    }
    let entries = &contents[..entries_end];
    let mut pos = 0usize;
    let mut key: Vec<u8> = Vec::new();
    let mut next_restart = 0usize;
    while pos < entries.len() {
        let entry_start = pos;
        let mut field = |name: &str| {
            get_varint(entries, &mut pos, 32)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("bad {name} varint in the entry at block offset {entry_start}")))
        };
        let shared = field("shared key length")?;
        let unshared = field("key length")?;
        let value_len = field("value length")?;
        let is_restart = restarts.get(next_restart) == Some(&entry_start);
        if is_restart {
            next_restart += 1;
            if shared != 0 {
                return Err(bad(format!(
                    "the entry at restart point {entry_start} shares {shared} key bytes"
                )));
            }
        }
        if shared > key.len() {
            return Err(bad(format!(
                "the entry at block offset {entry_start} shares {shared} bytes of a {}-byte previous key",
                key.len()
            )));
        }
        let delta_end = pos.checked_add(unshared).filter(|&e| e <= entries.len());
        let value_end = delta_end
            .and_then(|d| d.checked_add(value_len))
            .filter(|&e| e <= entries.len());
        let (Some(delta_end), Some(value_end)) = (delta_end, value_end) else {
            return Err(bad(format!(
                "the entry at block offset {entry_start} runs past the end of the block"
            )));
        };
        // `shared` is at most the previous key's length, `unshared` the block's.
        let new_len = shared.saturating_add(unshared);
        budget.left = budget.left.checked_sub(new_len).ok_or_else(|| {
            bad("keys decode to far more bytes than the file holds (corrupt shared-prefix lengths)".into())
        })?;
        let prev = std::mem::take(&mut key);
        key.reserve(new_len);
        key.extend_from_slice(&prev[..shared]);
        key.extend_from_slice(&entries[pos..delta_end]);
        if entry_start > 0 && key <= prev {
            return Err(bad(format!("keys out of order at block offset {entry_start}")));
        }
        f(&key, &entries[delta_end..value_end])?;
        pos = value_end;
    }
    if next_restart != restarts.len() {
        return Err(bad("a restart point is not at an entry's start".into()));
    }
    Ok(())
}

/// Reads the table in `file` (the contents of `path`, named in errors):
/// every key and value, in order.
pub(super) fn read(path: &Path, file: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = |msg: String| Error::format(path, msg);
    let footer_start = file.len().checked_sub(FOOTER_LEN).ok_or_else(|| {
        bad(format!(
            "file of {} bytes is shorter than the {FOOTER_LEN}-byte table footer",
            file.len()
        ))
    })?;
    let footer = &file[footer_start..];
    let magic_bytes = &footer[HANDLES_LEN..];
    let mut m = [0u8; 8];
    m.copy_from_slice(magic_bytes);
    let magic = u64::from_le_bytes(m);
    if magic != MAGIC {
        return Err(bad(format!(
            "bad magic number {magic:#018x} (expected {MAGIC:#018x}): not a TensorFlow table"
        )));
    }
    let handles = &footer[..HANDLES_LEN];
    let mut pos = 0;
    let (Some(metaindex), Some(index)) = (Handle::decode(handles, &mut pos), Handle::decode(handles, &mut pos)) else {
        return Err(bad("bad block handle in the footer".into()));
    };
    // The metaindex block is unused (no filters) but must be intact.
    read_block(path, file, metaindex, "metaindex block")?;
    let index_contents = read_block(path, file, index, "index block")?;
    let mut budget = KeyBudget {
        left: file.len().saturating_mul(64).saturating_add(64 << 20),
    };
    let mut handles = Vec::new();
    parse_block(
        path,
        index_contents,
        index.offset,
        "index block",
        &mut budget,
        |_, v| {
            let mut p = 0;
            let h = Handle::decode(v, &mut p)
                .filter(|_| p == v.len())
                .ok_or_else(|| bad("bad block handle in the index block".into()))?;
            handles.push(h);
            Ok(())
        },
    )?;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut prev_end = 0u64;
    for h in handles {
        // Data blocks lie one after another: reading each once bounds the
        // work by the file's length.
        if h.offset < prev_end {
            return Err(bad(format!(
                "data block at offset {} overlaps the previous one (which ends at {prev_end})",
                h.offset
            )));
        }
        let contents = read_block(path, file, h, "data block")?;
        prev_end = h.offset + h.size + TRAILER_LEN as u64; // checked by read_block
        parse_block(path, contents, h.offset, "data block", &mut budget, |k, v| {
            if out.last().is_some_and(|(last, _)| k <= last.as_slice()) {
                return Err(bad(format!(
                    "keys out of order in the data block at offset {}",
                    h.offset
                )));
            }
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(get_varint(&b, &mut p, 64), Some(v));
            assert_eq!(p, b.len());
            let mut p = 0;
            let want32 = u32::try_from(v).ok().map(u64::from);
            assert_eq!(get_varint(&b, &mut p, 32), want32, "{v}");
        }
        // Too long, truncated, overflowing.
        let mut p = 0;
        assert_eq!(get_varint(&[0x80; 11], &mut p, 64), None);
        let mut p = 0;
        assert_eq!(get_varint(&[0x80, 0x80], &mut p, 64), None);
        let mut p = 0;
        assert_eq!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut p, 32), None);
        let mut p = 0;
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f], &mut p, 32),
            Some(u32::MAX as u64)
        );
        let mut p = 0;
        let mut max = vec![0xff; 9];
        max.push(0x02);
        assert_eq!(get_varint(&max, &mut p, 64), None);
    }

    #[test]
    fn round_trip_and_empty() {
        let path = Path::new("t.index");
        let keys: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("some/long/shared/prefix/{i:05}").into_bytes())
            .collect();
        let vals: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; i % 37]).collect();
        let entries: Vec<(&[u8], &[u8])> = keys.iter().zip(&vals).map(|(k, v)| (&k[..], &v[..])).collect();
        let file = build(&entries);
        let back = read(path, &file).unwrap();
        assert_eq!(back.len(), 1000);
        for ((k, v), (k2, v2)) in back.iter().zip(&entries) {
            assert_eq!((&k[..], &v[..]), (*k2, *v2));
        }
        assert!(read(path, &build(&[])).unwrap().is_empty());
    }
}
