//! Numeric CSV files: one record per line, comma-separated, an optional
//! header line. Every field must parse as a number. The values come back as
//! one host tensor, ready for [`crate::data::Dataset::from_tensor_slices`].
//! See [`crate::data::mnist`] for image files.

use crate::core::error::{Error, Result};
use crate::runtime::cpu::CpuData;
use crate::tensor::Tensor;
use std::path::Path;

/// Reads `path` into (column names, values `[rows, cols]` as f32 on the CPU).
/// With `header = false` the names are "c0", "c1", ... Blank lines are
/// skipped; fields are trimmed.
///
/// Returns [`Error::Io`] naming the line for an unreadable file, a record
/// with the wrong number of fields, a field that is not a number, or a file
/// without records.
pub fn read_csv(path: &Path, header: bool) -> Result<(Vec<String>, Tensor)> {
    let err = |line: usize, msg: String| Error::format(path, format!("line {line}: {msg}"));
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut cols: Option<usize> = None;
    let mut rows = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if header && names.is_empty() && rows == 0 && cols.is_none() {
            names = fields.iter().map(|s| s.to_string()).collect();
            cols = Some(fields.len());
            continue;
        }
        match cols {
            Some(c) if c != fields.len() => {
                return Err(err(i + 1, format!("{} fields, expected {c}", fields.len())));
            }
            None => cols = Some(fields.len()),
            _ => {}
        }
        for (j, f) in fields.iter().enumerate() {
            let v: f32 = f
                .parse()
                .map_err(|_| err(i + 1, format!("field {} ({f:?}) is not a number", j + 1)))?;
            values.push(v);
        }
        rows += 1;
    }
    let c = cols.ok_or_else(|| err(0, "the file has no records".into()))?;
    if names.is_empty() {
        names = (0..c).map(|j| format!("c{j}")).collect();
    }
    Ok((
        names,
        Tensor::from_data(CpuData::F32(values), &[rows, c], &crate::runtime::Device::Cpu)?,
    ))
}
