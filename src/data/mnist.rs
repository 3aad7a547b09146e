//! MNIST in its IDX files, raw or gzip-compressed: `train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`
//! (each optionally with `.gz`). Images become f32 in \[0, 1\] shaped
//! `[n, 28, 28, 1]` (NHWC, as `keras.datasets.mnist` plus a channel axis);
//! labels int32 `[n]`. Everything is read on the CPU; feed it to
//! [`crate::data::Dataset`] or `nn::model::Model::fit`. Without the
//! files, [`crate::data::synthetic`] generates look-alike digits.

use crate::core::error::{Error, IoSource, Result};
use crate::runtime::cpu::CpuData;
use crate::tensor::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};

fn io_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::format(path, msg)
}

/// Reads a whole IDX file, raw or gzip (ubyte data only); returns (dims, bytes).
///
/// Returns [`Error::Io`] for an unreadable file, bad gzip data, a bad magic
/// number, a non-ubyte type, or a size that does not match the header.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Io {
                path: path.display().to_string(),
                msg: format!("bad gzip data: {e}"),
                source: Some(IoSource::new(e)),
            })?;
        out
    } else {
        raw
    };
    if data.len() < 4 || data[0] != 0 || data[1] != 0 {
        return Err(io_err(path, "not an IDX file (bad magic number)"));
    }
    if data[2] != 0x08 {
        return Err(io_err(
            path,
            format!("IDX type 0x{:02x} is not unsigned bytes (0x08)", data[2]),
        ));
    }
    let rank = data[3] as usize;
    let head = 4 + 4 * rank;
    if rank == 0 || data.len() < head {
        return Err(io_err(path, format!("truncated IDX header (rank {rank})")));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes([data[4 + 4 * i], data[5 + 4 * i], data[6 + 4 * i], data[7 + 4 * i]]) as usize)
        .collect();
    let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if n != Some(data.len() - head) {
        let n = n.map_or("more than fit in memory".to_string(), |n| n.to_string());
        return Err(io_err(
            path,
            format!(
                "header promises {dims:?} = {n} bytes but the file holds {}",
                data.len() - head
            ),
        ));
    }
    Ok((dims, data[head..].to_vec()))
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(io_err(&dir.join(stem), "missing (looked for the raw and .gz file)"))
}

/// Images `[n, rows, cols, 1]` in \[0, 1\] and labels `[n]` from an
/// images/labels pair of IDX files.
///
/// Returns [`Error::Io`] when either file is unreadable, the counts differ,
/// or a label is not a digit 0–9.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(Tensor, Tensor)> {
    let (idims, ibytes) = read_idx(images)?;
    let (ldims, lbytes) = read_idx(labels)?;
    if idims.len() != 3 {
        return Err(io_err(
            images,
            format!("image file has dims {idims:?}, not [n, rows, cols]"),
        ));
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(io_err(
            labels,
            format!("label file has dims {ldims:?} for {} images", idims[0]),
        ));
    }
    if let Some(&l) = lbytes.iter().find(|&&l| l > 9) {
        return Err(io_err(labels, format!("label {l} is not a digit")));
    }
    let x = CpuData::F32(ibytes.iter().map(|&b| b as f32 / 255.0).collect());
    let y = CpuData::I32(lbytes.iter().map(|&b| b as i32).collect());
    Ok((
        Tensor::from_data(x, &[idims[0], idims[1], idims[2], 1], &crate::runtime::Device::Cpu)?,
        Tensor::from_data(y, &[ldims[0]], &crate::runtime::Device::Cpu)?,
    ))
}

/// `keras.datasets.mnist.load_data()` from a local directory: (train_x,
/// train_y, test_x, test_y), 60 000 and 10 000 examples for the real set.
///
/// Returns [`Error::Io`] naming the first file missing (raw or `.gz`) or bad.
pub fn load(dir: &Path) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let (tx, ty) = read_pair(
        &find(dir, "train-images-idx3-ubyte")?,
        &find(dir, "train-labels-idx1-ubyte")?,
    )?;
    let (vx, vy) = read_pair(
        &find(dir, "t10k-images-idx3-ubyte")?,
        &find(dir, "t10k-labels-idx1-ubyte")?,
    )?;
    Ok((tx, ty, vx, vy))
}

/// Writes an IDX ubyte file (used by tests and to export the synthetic set).
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let out = if gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).map_err(|e| Error::io(path, e))?;
        enc.finish().map_err(|e| Error::io(path, e))?
    } else {
        bytes
    };
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}
