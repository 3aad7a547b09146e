//! NumPy's `.npy` files (`np.save` / `np.load`), read and written.
//!
//! A file is the magic string `\x93NUMPY`, a format version, the length of
//! a header (a little-endian u16 in version 1.0, u32 in 2.0 and 3.0), the
//! header itself, a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded
//! with spaces and ended by a newline, then the elements' raw bytes.
//!
//! [`read`] and [`parse`] accept versions 1.0, 2.0 and 3.0, either byte
//! order, `fortran_order: True` arrays (returned in C order), 0-d and
//! zero-size arrays, for booleans, signed and unsigned integers of 1 to 8
//! bytes and floats of 2, 4 and 8 bytes. [`write()`] and [`to_bytes`] write
//! what `np.save` writes for those dtypes: version 1.0 (2.0 only when the
//! header needs it), little-endian, C order, the header padded so the data
//! starts at a multiple of 64 bytes, byte for byte as NumPy does.
//!
//! Parsing never panics and never allocates more than the input's length:
//! every problem is an [`Error::Io`] naming the file and what is wrong.

use crate::core::error::{Error, Result};
use crate::io::write_atomic;
use std::path::Path;

/// An array read from or written to a `.npy` file: its shape (empty for a
/// 0-d array) and its elements in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Dimensions; `[]` for a 0-d array.
    pub shape: Vec<usize>,
    /// The elements, in C order; as many as the shape's product.
    pub data: NpyData,
}

/// The elements of an [`NpyArray`], by dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// `float16` (`<f2`).
    F16(Vec<half::f16>),
    /// `float32` (`<f4`).
    F32(Vec<f32>),
    /// `float64` (`<f8`).
    F64(Vec<f64>),
    /// `int8` (`|i1`).
    I8(Vec<i8>),
    /// `int16` (`<i2`).
    I16(Vec<i16>),
    /// `int32` (`<i4`).
    I32(Vec<i32>),
    /// `int64` (`<i8`).
    I64(Vec<i64>),
    /// `uint8` (`|u1`).
    U8(Vec<u8>),
    /// `uint16` (`<u2`).
    U16(Vec<u16>),
    /// `uint32` (`<u4`).
    U32(Vec<u32>),
    /// `uint64` (`<u8`).
    U64(Vec<u64>),
    /// `bool` (`|b1`); any nonzero byte reads as `true`.
    Bool(Vec<bool>),
}

impl NpyData {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F16(v) => v.len(),
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I8(v) => v.len(),
            NpyData::I16(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::U16(v) => v.len(),
            NpyData::U32(v) => v.len(),
            NpyData::U64(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NumPy's little-endian type string for these elements (`"<f4"`), as
    /// the header's `descr` holds it.
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F16(_) => "<f2",
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I8(_) => "|i1",
            NpyData::I16(_) => "<i2",
            NpyData::I32(_) => "<i4",
            NpyData::I64(_) => "<i8",
            NpyData::U8(_) => "|u1",
            NpyData::U16(_) => "<u2",
            NpyData::U32(_) => "<u4",
            NpyData::U64(_) => "<u8",
            NpyData::Bool(_) => "|b1",
        }
    }

    /// Bytes per element.
    fn itemsize(&self) -> usize {
        match self {
            NpyData::I8(_) | NpyData::U8(_) | NpyData::Bool(_) => 1,
            NpyData::F16(_) | NpyData::I16(_) | NpyData::U16(_) => 2,
            NpyData::F32(_) | NpyData::I32(_) | NpyData::U32(_) => 4,
            NpyData::F64(_) | NpyData::I64(_) | NpyData::U64(_) => 8,
        }
    }

    /// The elements' bytes, little-endian.
    fn to_le_bytes(&self) -> Vec<u8> {
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        match self {
            NpyData::F16(v) => le(v, half::f16::to_le_bytes),
            NpyData::F32(v) => le(v, f32::to_le_bytes),
            NpyData::F64(v) => le(v, f64::to_le_bytes),
            NpyData::I8(v) => le(v, i8::to_le_bytes),
            NpyData::I16(v) => le(v, i16::to_le_bytes),
            NpyData::I32(v) => le(v, i32::to_le_bytes),
            NpyData::I64(v) => le(v, i64::to_le_bytes),
            NpyData::U8(v) => v.clone(),
            NpyData::U16(v) => le(v, u16::to_le_bytes),
            NpyData::U32(v) => le(v, u32::to_le_bytes),
            NpyData::U64(v) => le(v, u64::to_le_bytes),
            NpyData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        }
    }
}

impl NpyArray {
    /// An array of `shape` holding `data`, checked: the shape's product
    /// must be the number of elements.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<NpyArray> {
        let a = NpyArray { shape, data };
        a.check("NpyArray::new")?;
        Ok(a)
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if num_elements(&self.shape, self.data.itemsize()) != Some(self.data.len()) {
            return Err(Error::arg(
                op,
                format!(
                    "shape {:?} does not hold {} elements of '{}'",
                    self.shape,
                    self.data.len(),
                    self.data.descr()
                ),
            ));
        }
        Ok(())
    }
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the data to this many bytes (`ARRAY_ALIGN`).
const ALIGN: usize = 64;
/// Room NumPy leaves in the header to rewrite the first dimension in place
/// (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// The number of elements of `shape`, under NumPy's rule for arrays of
/// `itemsize`-byte elements: every dimension, and the product of the
/// non-zero ones times the item size, must fit in `isize` ("array is too
/// big"), even when a zero dimension makes the array empty.
fn num_elements(shape: &[usize], itemsize: usize) -> Option<usize> {
    let mut bytes = itemsize.max(1);
    for &d in shape.iter().filter(|&&d| d != 0) {
        bytes = bytes.checked_mul(d).filter(|&b| b <= isize::MAX as usize)?;
    }
    Some(if shape.contains(&0) { 0 } else { bytes / itemsize.max(1) })
}

/// Reads the `.npy` file at `path` (`np.load`).
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_file(path, &bytes)
}

/// Parses the contents of a `.npy` file (errors name the file `<npy bytes>`).
pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    parse_file(Path::new("<npy bytes>"), bytes)
}

/// Writes `array` to `path` as `np.save` does, through a temporary file and
/// a rename. Fails, writing nothing, when the shape's product is not the
/// number of elements.
pub fn write(path: impl AsRef<Path>, array: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(array)?;
    write_atomic(path, &bytes)
}

/// The bytes of a `.npy` file holding `array`, as `np.save` writes them.
/// Fails when the shape's product is not the number of elements.
pub fn to_bytes(array: &NpyArray) -> Result<Vec<u8>> {
    array.check("npy::to_bytes")?;
    let shape = match array.shape.as_slice() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        array.data.descr()
    );
    if let Some(first) = array.shape.first() {
        let digits = first.to_string().len();
        header.extend(std::iter::repeat_n(' ', GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // Magic, two version bytes, the length field, the header, its newline;
    // then between 1 and ALIGN spaces (never none), as NumPy pads.
    let layout = |len_field: usize| {
        let unpadded = MAGIC.len() + 2 + len_field + header.len() + 1;
        let pad = ALIGN - unpadded % ALIGN;
        (pad, header.len() + pad + 1)
    };
    let (pad, header_len) = layout(2);
    let (version, pad, header_len) = match u16::try_from(header_len) {
        Ok(_) => (1u8, pad, header_len),
        Err(_) => {
            let (pad, header_len) = layout(4);
            (2u8, pad, header_len)
        }
    };
    let mut out = Vec::with_capacity((12 + header_len).saturating_add(array.data.len().saturating_mul(8)));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out.extend_from_slice(&array.data.to_le_bytes());
    Ok(out)
}

/// An element type the reader knows: its kind, size and byte order.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dtype {
    kind: u8,
    size: usize,
    big_endian: bool,
}

fn parse_descr(descr: &str) -> std::result::Result<Dtype, String> {
    let unsupported = || format!("unsupported dtype '{descr}'");
    let (order, rest) = match descr.as_bytes().first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (Some(c), &descr[1..]),
        _ => (None, descr),
    };
    let (kind, size) = match rest {
        "?" => (b'b', 1),
        _ => {
            let mut chars = rest.bytes();
            let kind = chars.next().ok_or_else(unsupported)?;
            let digits = rest
                .get(1..)
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()));
            let size: usize = digits.and_then(|d| d.parse().ok()).ok_or_else(unsupported)?;
            (kind, size)
        }
    };
    let ok = matches!(
        (kind, size),
        (b'b', 1) | (b'i' | b'u', 1 | 2 | 4 | 8) | (b'f', 2 | 4 | 8)
    );
    if !ok {
        return Err(unsupported());
    }
    // '|' (no byte order) only fits one-byte types.
    if order == Some(b'|') && size != 1 {
        return Err(unsupported());
    }
    Ok(Dtype {
        kind,
        size,
        big_endian: order == Some(b'>'),
    })
}

/// A value of the header's dict literal.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A parser of the Python literals NumPy writes in headers: a dict of
/// string keys whose values are strings, `True`/`False` and tuples of
/// integers.
struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self
            .b
            .get(self.pos)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        match self.peek() {
            Some(got) if got == c => {
                self.pos += 1;
                Ok(())
            }
            Some(got) => Err(format!(
                "header: expected '{}' at byte {}, found '{}'",
                c as char,
                self.pos,
                got.escape_ascii()
            )),
            None => Err(format!("header: expected '{}', found the end", c as char)),
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("header: expected a string at byte {}", self.pos)),
        };
        let start = self.pos + 1;
        let len = self.b.get(start..).and_then(|s| s.iter().position(|&c| c == quote));
        let Some(len) = len else {
            return Err("header: unterminated string".into());
        };
        let s = &self.b[start..start + len];
        if s.iter().any(|&c| c == b'\\' || !c.is_ascii()) {
            return Err(format!("header: unsupported string '{}'", s.escape_ascii()));
        }
        self.pos = start + len + 1;
        // ASCII, so valid UTF-8.
        Ok(s.iter().map(|&c| c as char).collect())
    }

    fn int(&mut self) -> std::result::Result<usize, String> {
        self.skip_ws();
        let start = self.pos;
        let mut v: usize = 0;
        while let Some(&c) = self.b.get(self.pos).filter(|c| c.is_ascii_digit()) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(c - b'0')))
                .ok_or_else(|| format!("header: dimension at byte {start} overflows"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(format!("header: expected a dimension at byte {start}"));
        }
        // Python 2's long suffix, in files NumPy wrote under Python 2.
        if self.b.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        Ok(v)
    }

    fn value(&mut self) -> std::result::Result<Lit, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    dims.push(self.int()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err(format!("header: bad shape tuple at byte {}", self.pos)),
                    }
                }
                Ok(Lit::Tuple(dims))
            }
            Some(b'[') => Err("header: structured dtypes are not supported".into()),
            Some(_) => {
                let rest = &self.b[self.pos..];
                for (word, v) in [(&b"True"[..], true), (b"False", false)] {
                    if rest.starts_with(word) {
                        self.pos += word.len();
                        return Ok(Lit::Bool(v));
                    }
                }
                Err(format!("header: unsupported value at byte {}", self.pos))
            }
            None => Err("header: expected a value, found the end".into()),
        }
    }

    /// The dict's `descr`, `fortran_order` and `shape`.
    fn header(&mut self) -> std::result::Result<(String, bool, Vec<usize>), String> {
        self.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            let key = self.string()?;
            if !matches!(key.as_str(), "descr" | "fortran_order" | "shape") {
                return Err(format!("header: unexpected key '{key}'"));
            }
            self.expect(b':')?;
            let value = self.value()?;
            let slot_taken = match (key.as_str(), value) {
                ("descr", Lit::Str(s)) => descr.replace(s).is_some(),
                ("fortran_order", Lit::Bool(b)) => fortran.replace(b).is_some(),
                ("shape", Lit::Tuple(t)) => shape.replace(t).is_some(),
                (_, v) => return Err(format!("header: '{key}' has an unsupported value {v:?}")),
            };
            if slot_taken {
                return Err(format!("header: duplicate key '{key}'"));
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(format!("header: expected ',' or '}}' at byte {}", self.pos)),
            }
        }
        if self.peek().is_some() {
            return Err(format!("header: unexpected bytes after the dict at byte {}", self.pos));
        }
        match (descr, fortran, shape) {
            (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
            _ => Err("header: missing one of 'descr', 'fortran_order', 'shape'".into()),
        }
    }
}

/// `src`, the elements of a Fortran-order array of `shape`, in C order.
fn fortran_to_c<T: Copy + Default>(src: Vec<T>, shape: &[usize]) -> Vec<T> {
    let n = src.len();
    if shape.len() < 2 || n == 0 {
        return src;
    }
    // Fortran strides: the first axis varies fastest.
    let mut strides = Vec::with_capacity(shape.len());
    let mut acc = 1usize;
    for &d in shape {
        strides.push(acc);
        acc = acc.saturating_mul(d);
    }
    let mut idx = vec![0usize; shape.len()];
    let mut off = 0usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(src.get(off).copied().unwrap_or_default());
        // Step the C-order index: the last axis varies fastest.
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            off += strides[k];
            if idx[k] < shape[k] {
                break;
            }
            off -= strides[k] * shape[k];
            idx[k] = 0;
        }
    }
    out
}

fn parse_file(path: &Path, bytes: &[u8]) -> Result<NpyArray> {
    let bad = |msg: String| Error::format(path, msg);
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad(if bytes.starts_with(MAGIC) || MAGIC.starts_with(bytes) {
            format!("file of {} bytes is too short for a .npy preamble", bytes.len())
        } else {
            "not a .npy file (no \\x93NUMPY magic string)".into()
        }));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match (major, minor) {
        (1, 0) => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10usize),
        (2 | 3, 0) => {
            let b = bytes.get(8..12).ok_or_else(|| {
                bad(format!(
                    "file of {} bytes is too short for a .npy preamble",
                    bytes.len()
                ))
            })?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(len).unwrap_or(usize::MAX), 12)
        }
        _ => return Err(bad(format!("unsupported .npy format version {major}.{minor}"))),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {header_len} bytes runs past the end of the file ({} bytes)",
                bytes.len()
            ))
        })?;
    let header = &bytes[header_start..data_start];
    let (descr, fortran, shape) = Lexer { b: header, pos: 0 }.header().map_err(bad)?;
    let dtype = parse_descr(&descr).map_err(bad)?;
    let data = &bytes[data_start..];
    let Some(n) = num_elements(&shape, dtype.size) else {
        return Err(bad(format!(
            "array is too big: shape {shape:?} of '{descr}' needs more than isize::MAX bytes"
        )));
    };
    let need = n * dtype.size;
    if need != data.len() {
        return Err(bad(format!(
            "data has {} bytes, shape {shape:?} of '{descr}' needs {need}",
            data.len(),
        )));
    }
    fn decode<T: Copy + Default, const N: usize>(
        data: &[u8],
        big_endian: bool,
        shape: &[usize],
        fortran: bool,
        f: impl Fn([u8; N], bool) -> T,
    ) -> Vec<T> {
        let v: Vec<T> = data
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a, big_endian)
            })
            .collect();
        if fortran { fortran_to_c(v, shape) } else { v }
    }
    macro_rules! num {
        ($variant:ident, $t:ty, $n:literal) => {
            NpyData::$variant(decode::<$t, $n>(
                data,
                dtype.big_endian,
                &shape,
                fortran,
                |a, be| {
                    if be {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }
                },
            ))
        };
    }
    let values = match (dtype.kind, dtype.size) {
        (b'b', _) => NpyData::Bool(decode::<bool, 1>(data, false, &shape, fortran, |a, _| a[0] != 0)),
        (b'f', 2) => num!(F16, half::f16, 2),
        (b'f', 4) => num!(F32, f32, 4),
        (b'f', 8) => num!(F64, f64, 8),
        (b'i', 1) => num!(I8, i8, 1),
        (b'i', 2) => num!(I16, i16, 2),
        (b'i', 4) => num!(I32, i32, 4),
        (b'i', 8) => num!(I64, i64, 8),
        (b'u', 1) => num!(U8, u8, 1),
        (b'u', 2) => num!(U16, u16, 2),
        (b'u', 4) => num!(U32, u32, 4),
        (b'u', 8) => num!(U64, u64, 8),
        _ => return Err(bad(format!("unsupported dtype '{descr}'"))),
    };
    Ok(NpyArray { shape, data: values })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file with this header text and data, as NumPy lays it out.
    fn file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn samples() -> Vec<NpyArray> {
        vec![
            NpyArray::new(vec![3, 4], NpyData::F32((0..12).map(|i| i as f32 * 0.5).collect())).unwrap(),
            NpyArray::new(vec![], NpyData::F64(vec![std::f64::consts::E])).unwrap(),
            NpyArray::new(vec![0, 5], NpyData::I64(vec![])).unwrap(),
            NpyArray::new(vec![2], NpyData::F16(vec![half::f16::from_f32(1.5), half::f16::MAX])).unwrap(),
            NpyArray::new(vec![2, 1, 2], NpyData::I32(vec![1, -2, i32::MIN, i32::MAX])).unwrap(),
            NpyArray::new(vec![3], NpyData::U8(vec![0, 128, 255])).unwrap(),
            NpyArray::new(vec![3], NpyData::Bool(vec![true, false, true])).unwrap(),
            NpyArray::new(vec![2], NpyData::I8(vec![-128, 127])).unwrap(),
            NpyArray::new(vec![1], NpyData::I16(vec![-300])).unwrap(),
            NpyArray::new(vec![1], NpyData::U16(vec![65535])).unwrap(),
            NpyArray::new(vec![1], NpyData::U32(vec![u32::MAX])).unwrap(),
            NpyArray::new(vec![1], NpyData::U64(vec![u64::MAX])).unwrap(),
            NpyArray::new(vec![1234567, 0], NpyData::F32(vec![])).unwrap(),
        ]
    }

    #[test]
    fn round_trip_and_layout() {
        for a in samples() {
            let b = to_bytes(&a).unwrap();
            assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
            let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
            assert_eq!((10 + hlen) % 64, 0, "data aligned to 64");
            assert_eq!(b[9 + hlen], b'\n');
            assert_eq!(parse(&b).unwrap(), a);
        }
        // Exactly what NumPy 2 writes for np.save(f, np.arange(3, dtype='<f4')).
        let a = NpyArray::new(vec![3], NpyData::F32(vec![0.0, 1.0, 2.0])).unwrap();
        let b = to_bytes(&a).unwrap();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
        assert!(b[10..].starts_with(header.as_bytes()));
        assert_eq!(b.len(), 128 + 12);
        assert!(b[10 + header.len()..127].iter().all(|&c| c == b' '));
        // A mismatched shape is refused.
        let bad = NpyArray {
            shape: vec![2, 2],
            data: NpyData::F32(vec![1.0]),
        };
        assert!(to_bytes(&bad).is_err());
        assert!(NpyArray::new(vec![2], NpyData::U8(vec![1])).is_err());
    }

    #[test]
    fn write_and_read_a_file() {
        let p = std::env::temp_dir().join(format!("wgflow-npy-{}.npy", std::process::id()));
        let a = samples().remove(0);
        write(&p, &a).unwrap();
        assert_eq!(read(&p).unwrap(), a);
        std::fs::remove_file(&p).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains("wgflow-npy-"), "{err}");
    }

    #[test]
    fn versions_orders_and_layouts() {
        let be: Vec<u8> = [1.0f32, -2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n";
        for v in [1, 2, 3] {
            assert_eq!(parse(&file(v, h, &be)).unwrap().data, NpyData::F32(vec![1.0, -2.0]));
        }
        // Fortran order: columns first. [[0, 1, 2], [3, 4, 5]] is stored 0 3 1 4 2 5.
        let f: Vec<u8> = [0i64, 3, 1, 4, 2, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        let h = "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }";
        let a = parse(&file(1, h, &f)).unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 3], NpyData::I64(vec![0, 1, 2, 3, 4, 5])));
        // 3-d Fortran: element (i, j, k) at i + 2j + 4k.
        let f: Vec<u8> = (0..8u8).collect();
        let h = "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 2, 2), }";
        let a = parse(&file(1, h, &f)).unwrap();
        assert_eq!(a.data, NpyData::U8(vec![0, 4, 2, 6, 1, 5, 3, 7]));
        // 0-d, Python 2 longs, double quotes, other key order, '?' bool.
        let h = "{\"shape\": (), \"fortran_order\": False, \"descr\": '|b1'}";
        assert_eq!(parse(&file(1, h, &[2])).unwrap().data, NpyData::Bool(vec![true]));
        let h = "{'descr': '?', 'fortran_order': False, 'shape': (1L, 2L), }";
        let a = parse(&file(1, h, &[0, 1])).unwrap();
        assert_eq!((a.shape, a.data), (vec![1, 2], NpyData::Bool(vec![false, true])));
        // Zero-size with other dimensions that fit.
        let h = "{'descr': '<f8', 'fortran_order': True, 'shape': (0, 1152921504606846975), }";
        assert_eq!(parse(&file(1, h, &[])).unwrap().data, NpyData::F64(vec![]));
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |b: &[u8]| parse(b).unwrap_err().to_string();
        let h = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
        assert!(msg(&file(1, h, &[0; 8])).contains("unsupported dtype '<c8'"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        assert!(msg(&file(1, h, &[0; 40])).contains("data has 40 bytes, shape [3, 4] of '<f4' needs 48"));
        assert!(msg(&file(1, h, &[0; 52])).contains("needs 48"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999999), }";
        assert!(msg(&file(1, h, &[])).contains("array is too big"));
        // NumPy refuses these too, although a 0 leaves no elements.
        for shape in [
            "(0, 18446744073709551615)",
            "(0, 4294967296, 4294967296)",
            "(3, 0, 1152921504606846976)",
        ] {
            let h = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
            assert!(msg(&file(1, &h, &[])).contains("array is too big"), "{shape}");
        }
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999999999,), }";
        assert!(msg(&file(1, h, &[])).contains("overflows"));
        let h = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }";
        assert!(msg(&file(1, h, &[0; 4])).contains("structured"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}";
        assert!(msg(&file(1, h, &[0; 4])).contains("unexpected key 'x'"));
        let h = "{'descr': '<f4', 'shape': (1,), }";
        assert!(msg(&file(1, h, &[0; 4])).contains("missing"));
        let h = "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }";
        assert!(msg(&file(1, h, &[0; 4])).contains("unsupported dtype '|f4'"));
        assert!(msg(&file(4, "{}", &[])).contains("version 4.0"));
        assert!(msg(b"PK\x03\x04 zip file").contains("not a .npy file"));
        assert!(msg(b"\x93NUM").contains("too short"));
        let mut f = file(2, "{}", &[]);
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(msg(&f).contains("runs past the end"));
    }

    #[test]
    fn every_truncation_and_random_flips_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for a in samples() {
            let b = to_bytes(&a).unwrap();
            for len in 0..b.len() {
                assert!(parse(&b[..len]).is_err(), "{a:?} truncated to {len}");
            }
            for _ in 0..2000 {
                let mut c = b.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % c.len();
                    c[i] ^= 1 << (next() % 8);
                }
                if let Ok(got) = parse(&c) {
                    // A flip in the data or the padding changes at most the values.
                    assert_eq!(got.data.len(), num_elements(&got.shape, got.data.itemsize()).unwrap());
                }
            }
        }
        // Flips of a Fortran-order header's text.
        let h = "{'descr': '<i2', 'fortran_order': True, 'shape': (3, 2, 4), }";
        let f = file(1, h, &[7; 48]);
        for bit in 0..f.len() * 8 {
            let mut c = f.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            let _ = parse(&c);
        }
    }
}
