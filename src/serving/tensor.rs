//! Request and response tensors on the host: built from TF Serving's JSON
//! (row `instances` and columnar `inputs` forms) or from a `TensorProto`,
//! checked against the signature's dtype, and written back the same ways.
//! Batching concatenates and splits them here, before the device sees them.

use super::json::{self, Json};
use super::status::{self, Code, Status};
use crate::core::dtype::DType;
use crate::core::error::Result as WgResult;
use crate::io::saved_model::proto::{TensorProto, TensorShapeProto, dt};
use crate::runtime::Device;
use crate::runtime::cpu::CpuData;
use crate::tensor::Tensor;
use base64::Engine as _;

/// The values of a host tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// `DT_FLOAT`, `DT_HALF`, `DT_BFLOAT16`.
    F32(Vec<f32>),
    /// `DT_DOUBLE`.
    F64(Vec<f64>),
    /// Every integer dtype.
    I64(Vec<i64>),
    /// `DT_BOOL`.
    Bool(Vec<bool>),
    /// `DT_STRING`.
    Bytes(Vec<Vec<u8>>),
}

impl HostData {
    fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::Bool(v) => v.len(),
            HostData::Bytes(v) => v.len(),
        }
    }

    fn empty_like(&self) -> HostData {
        match self {
            HostData::F32(_) => HostData::F32(Vec::new()),
            HostData::F64(_) => HostData::F64(Vec::new()),
            HostData::I64(_) => HostData::I64(Vec::new()),
            HostData::Bool(_) => HostData::Bool(Vec::new()),
            HostData::Bytes(_) => HostData::Bytes(Vec::new()),
        }
    }

    /// Appends `other[lo..hi]` (nothing where the range is out of bounds
    /// or the kinds differ; callers check shapes first).
    fn extend_range(&mut self, other: &HostData, lo: usize, hi: usize) {
        fn ext<T: Clone>(a: &mut Vec<T>, b: &[T], lo: usize, hi: usize) {
            if let Some(part) = b.get(lo..hi) {
                a.extend_from_slice(part);
            }
        }
        match (self, other) {
            (HostData::F32(a), HostData::F32(b)) => ext(a, b, lo, hi),
            (HostData::F64(a), HostData::F64(b)) => ext(a, b, lo, hi),
            (HostData::I64(a), HostData::I64(b)) => ext(a, b, lo, hi),
            (HostData::Bool(a), HostData::Bool(b)) => ext(a, b, lo, hi),
            (HostData::Bytes(a), HostData::Bytes(b)) => ext(a, b, lo, hi),
            _ => {}
        }
    }
}

/// A tensor on the host with its TensorFlow dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// TensorFlow's `DataType` number (`dt::FLOAT`).
    pub dtype: i32,
    /// The shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: HostData,
}

/// Most dimensions a request tensor may have (TensorFlow's
/// `TensorShape::MaxDimensions()`).
pub const MAX_RANK: usize = 254;

/// Dimensions as `[a,b,c]` for a message: at most 16 of them, then
/// `,...` and how many there are.
pub fn show_dims<T: std::fmt::Display>(dims: &[T]) -> String {
    use std::fmt::Write as _;
    const SHOWN: usize = 16;
    let mut s = String::from("[");
    for (i, d) in dims.iter().take(SHOWN).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{d}");
    }
    if dims.len() > SHOWN {
        let _ = write!(s, ",... ({} dimensions)", dims.len());
    }
    s.push(']');
    s
}

/// The host memory a request's tensors may take once decoded, shared by
/// all of its inputs: a `TensorProto` of 10 bytes may declare a shape of
/// billions of elements (its last value repeats), so each input is charged
/// before anything is allocated.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    /// A budget of `limit` bytes (`--rest_api_max_request_bytes`).
    pub fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    /// The whole budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Charges `bytes` (`None`: more than a `usize` holds) for input `name`.
    fn take(&mut self, name: &str, elements: usize, bytes: Option<usize>) -> Result<(), Status> {
        match bytes
            .and_then(|b| self.used.checked_add(b))
            .filter(|&t| t <= self.limit)
        {
            Some(total) => {
                self.used = total;
                Ok(())
            }
            None => Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "input '{name}': its {elements} elements need {} bytes once decoded; with the {} bytes of the \
                     inputs before it that is more than the request's limit of {} bytes \
                     (--rest_api_max_request_bytes)",
                    bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
                    self.used,
                    self.limit
                ),
            )),
        }
    }
}

/// The TensorFlow dtype's name as TF Serving's messages print it (`float`).
pub fn dtype_name(t: i32) -> &'static str {
    match t {
        dt::FLOAT => "float",
        dt::DOUBLE => "double",
        dt::INT32 => "int32",
        dt::UINT8 => "uint8",
        dt::INT16 => "int16",
        dt::INT8 => "int8",
        dt::STRING => "string",
        dt::INT64 => "int64",
        dt::BOOL => "bool",
        dt::BFLOAT16 => "bfloat16",
        dt::HALF => "half",
        _ => "unsupported type",
    }
}

fn int_range(t: i32) -> Option<(i64, i64)> {
    match t {
        dt::INT32 => Some((i32::MIN as i64, i32::MAX as i64)),
        dt::INT64 => Some((i64::MIN, i64::MAX)),
        dt::INT16 => Some((i16::MIN as i64, i16::MAX as i64)),
        dt::INT8 => Some((i8::MIN as i64, i8::MAX as i64)),
        dt::UINT8 => Some((0, u8::MAX as i64)),
        _ => None,
    }
}

fn empty(t: i32) -> Result<HostData, Status> {
    Ok(match t {
        dt::FLOAT | dt::HALF | dt::BFLOAT16 => HostData::F32(Vec::new()),
        dt::DOUBLE => HostData::F64(Vec::new()),
        dt::BOOL => HostData::Bool(Vec::new()),
        dt::STRING => HostData::Bytes(Vec::new()),
        t if int_range(t).is_some() => HostData::I64(Vec::new()),
        t => {
            return Err(Status::invalid(format!(
                "tensors of {} are not served",
                crate::io::saved_model::proto::dt::name(t)
            )));
        }
    })
}

fn type_error(v: &Json, t: i32) -> Status {
    Status::invalid(format!(
        "JSON Value: {} Type: {} is not of expected type: {}",
        json::pretty(v),
        json::type_name(v),
        dtype_name(t)
    ))
}

/// TF Serving's `IsLosslessDecimal`: integers up to 2^digits - 1, other
/// values within the type's range; NaN and infinities always.
fn lossless(f: f64, int: Option<i64>, is_f32: bool) -> bool {
    if !f.is_finite() {
        return true;
    }
    match int {
        Some(i) => i.unsigned_abs() < if is_f32 { 1u64 << 24 } else { 1u64 << 53 },
        None => !is_f32 || f.abs() <= f32::MAX as f64,
    }
}

/// Appends one JSON leaf as a value of dtype `t`.
fn push_leaf(data: &mut HostData, t: i32, v: &Json) -> Result<(), Status> {
    match (data, v) {
        (HostData::F32(out), Json::Num(f, i)) => {
            if !lossless(*f, *i, true) {
                return Err(Status::invalid(format!(
                    "Cannot convert JSON value: {} to {} without loss of precision.",
                    json::pretty(v),
                    dtype_name(t)
                )));
            }
            out.push(*f as f32);
        }
        (HostData::F64(out), Json::Num(f, i)) => {
            if !lossless(*f, *i, false) {
                return Err(Status::invalid(format!(
                    "Cannot convert JSON value: {} to double without loss of precision.",
                    json::pretty(v)
                )));
            }
            out.push(*f);
        }
        (HostData::I64(out), Json::Num(_, Some(i))) => {
            let (lo, hi) = if t == dt::INT64 {
                (i64::MIN, i64::MAX)
            } else {
                (i32::MIN as i64, i32::MAX as i64)
            };
            if !(lo..=hi).contains(i) {
                return Err(type_error(v, t));
            }
            out.push(*i);
        }
        (HostData::Bool(out), Json::Bool(b)) => out.push(*b),
        (HostData::Bytes(out), Json::Str(s)) => out.push(s.as_bytes().to_vec()),
        (HostData::Bytes(out), Json::Obj(_)) => match b64(v)? {
            Some(bytes) => out.push(bytes),
            None => {
                return Err(Status::invalid(format!(
                    "JSON Value: {} not formatted correctly for base64 data",
                    json::pretty(v)
                )));
            }
        },
        _ => return Err(type_error(v, t)),
    }
    Ok(())
}

/// `{"b64": "..."}`: its bytes; `None` when `v` is not such an object.
pub fn b64(v: &Json) -> Result<Option<Vec<u8>>, Status> {
    match v {
        Json::Obj(m) if m.len() == 1 && m[0].0 == "b64" => match &m[0].1 {
            Json::Str(s) => {
                let s = s.trim_end_matches('=');
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(s.as_bytes())
                    .map(Some)
                    .map_err(|_| Status::invalid("Unable to base64 decode"))
            }
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Whether `v` is a `{"b64": "..."}` object.
pub fn is_b64(v: &Json) -> bool {
    matches!(v, Json::Obj(m) if m.len() == 1 && m[0].0 == "b64" && matches!(m[0].1, Json::Str(_)))
}

/// The shape of a JSON nest, from its first elements (`GetDenseTensorShape`).
fn nest_shape(v: &Json) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Json::Arr(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(x) => cur = x,
            None => break,
        }
    }
    shape
}

/// Flattens `v` at nesting `level`, checking it against `shape`.
fn flatten(v: &Json, shape: &[usize], level: usize, t: i32, data: &mut HostData) -> Result<(), Status> {
    let rank = shape.len();
    match v {
        Json::Arr(items) => {
            if level >= rank {
                return Err(Status::invalid(format!(
                    "Encountered list at unexpected level: {level} expected < {rank}"
                )));
            }
            if items.len() != shape[level] {
                return Err(Status::invalid(format!(
                    "Encountered list at unexpected size: {} at level: {level} expected size: {}",
                    items.len(),
                    shape[level]
                )));
            }
            for x in items {
                flatten(x, shape, level + 1, t, data)?;
            }
            Ok(())
        }
        leaf => {
            if level != rank {
                return Err(Status::invalid(format!(
                    "JSON Value: {} found at incorrect level: {} in the JSON DOM. Expected at level: {rank}",
                    json::pretty(leaf),
                    level + 1
                )));
            }
            push_leaf(data, t, leaf)
        }
    }
}

/// A tensor from a JSON value (a nest of lists), typed by the signature.
pub fn from_json(v: &Json, t: i32) -> Result<HostTensor, Status> {
    let shape = nest_shape(v);
    let mut data = empty(t)?;
    flatten(v, &shape, 0, t, &mut data)?;
    Ok(HostTensor { dtype: t, shape, data })
}

impl HostTensor {
    /// Elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Rows along axis 0 (`None` for a scalar).
    pub fn batch(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// Stacks same-shaped tensors along a new axis 0 (the row format's
    /// instances), or concatenates along axis 0 when `concat`.
    pub fn stack(parts: &[HostTensor], concat: bool) -> Result<HostTensor, Status> {
        let first = parts.first().ok_or_else(|| Status::invalid("no tensors to stack"))?;
        let inner: &[usize] = if concat {
            first.shape.get(1..).unwrap_or(&[])
        } else {
            &first.shape
        };
        let mut rows = 0usize;
        let mut data = first.data.empty_like();
        for p in parts {
            let pin: &[usize] = if concat {
                p.shape.get(1..).unwrap_or(&[])
            } else {
                &p.shape
            };
            if p.dtype != first.dtype || pin != inner || (concat && p.shape.is_empty()) {
                return Err(Status::invalid(format!(
                    "cannot batch tensors of shapes {:?} and {:?}",
                    first.shape, p.shape
                )));
            }
            rows += if concat { p.shape[0] } else { 1 };
            data.extend_range(&p.data, 0, p.data.len());
        }
        let mut shape = vec![rows];
        shape.extend_from_slice(inner);
        Ok(HostTensor {
            dtype: first.dtype,
            shape,
            data,
        })
    }

    /// Rows `lo..hi` along axis 0.
    pub fn rows(&self, lo: usize, hi: usize) -> HostTensor {
        let row: usize = self.shape.iter().skip(1).product();
        let mut data = self.data.empty_like();
        data.extend_range(&self.data, lo.saturating_mul(row), hi.saturating_mul(row));
        let mut shape = self.shape.clone();
        if let Some(s) = shape.first_mut() {
            *s = hi.saturating_sub(lo);
        }
        HostTensor {
            dtype: self.dtype,
            shape,
            data,
        }
    }

    /// Pads axis 0 to `rows` by repeating the first row.
    pub fn pad_rows(&self, rows: usize) -> HostTensor {
        let n = self.shape.first().copied().unwrap_or(0);
        if rows <= n || n == 0 {
            return self.clone();
        }
        let row: usize = self.shape.iter().skip(1).product();
        let mut data = self.data.clone();
        for _ in n..rows {
            data.extend_range(&self.data, 0, row);
        }
        let mut shape = self.shape.clone();
        shape[0] = rows;
        HostTensor {
            dtype: self.dtype,
            shape,
            data,
        }
    }

    /// Uploads to `device` as the wgflow dtype that holds `self.dtype`.
    pub fn to_device(&self, device: &Device) -> Result<Tensor, Status> {
        let t = match &self.data {
            HostData::F32(v) if self.dtype == dt::HALF => Tensor::from_data(
                CpuData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
                &self.shape,
                device,
            ),
            HostData::F32(v) if self.dtype == dt::BFLOAT16 => Tensor::from_data(
                CpuData::BF16(v.iter().map(|&x| half::bf16::from_f32(x)).collect()),
                &self.shape,
                device,
            ),
            HostData::F32(v) => Tensor::from_slice(v, &self.shape, device),
            HostData::F64(v) => Tensor::from_slice(v, &self.shape, device),
            HostData::I64(v) => {
                let mut w = Vec::with_capacity(v.len());
                for &x in v {
                    // wgflow holds int64 tensors as int32. Requests are
                    // checked before they are batched (`check_device_values`);
                    // this message quotes no value, as the tensor may hold
                    // several requests' rows.
                    w.push(i32::try_from(x).map_err(|_| {
                        Status::invalid("an integer value does not fit the int32 that wgflow computes int64 in")
                    })?);
                }
                Tensor::from_data(CpuData::I32(w), &self.shape, device)
            }
            HostData::Bool(v) => Tensor::from_data(CpuData::Bool(v.clone()), &self.shape, device),
            HostData::Bytes(_) => {
                return Err(Status::new(
                    super::status::Code::Unimplemented,
                    "string tensors cannot be computed on wgflow devices",
                ));
            }
        };
        t.map_err(Status::from)
    }

    /// The checks [`HostTensor::to_device`] makes on the values, made on one
    /// request's tensor before it is batched with others: integers must fit
    /// the int32 that wgflow computes int64 in, and strings are not
    /// computed on wgflow's devices.
    pub fn check_device_values(&self, name: &str) -> Result<(), Status> {
        match &self.data {
            HostData::I64(v) => match v.iter().position(|x| i32::try_from(*x).is_err()) {
                Some(i) => Err(Status::invalid(format!(
                    "input '{}': {} value {} (element {i}) does not fit the int32 that wgflow computes int64 in",
                    status::clip(name, 256),
                    dtype_name(self.dtype),
                    v[i]
                ))),
                None => Ok(()),
            },
            HostData::Bytes(_) => Err(Status::new(
                Code::Unimplemented,
                "string tensors cannot be computed on wgflow devices",
            )),
            _ => Ok(()),
        }
    }

    /// Reads a result back, labelled with the signature's dtype `t` (or the
    /// tensor's own where the signature gives none).
    pub fn from_device(x: &Tensor, t: Option<i32>) -> WgResult<HostTensor> {
        let shape = x.shape().to_vec();
        let own = match x.dtype() {
            DType::F32 => dt::FLOAT,
            DType::F16 => dt::HALF,
            DType::F64 => dt::DOUBLE,
            DType::BF16 => dt::BFLOAT16,
            DType::I32 => dt::INT32,
            DType::Bool => dt::BOOL,
        };
        let data = match x.to_data()? {
            CpuData::F32(v) => HostData::F32(v),
            CpuData::F16(v) => HostData::F32(v.iter().map(|h| h.to_f32()).collect()),
            CpuData::F64(v) => HostData::F64(v),
            CpuData::BF16(v) => HostData::F32(v.iter().map(|h| h.to_f32()).collect()),
            CpuData::I32(v) => HostData::I64(v.into_iter().map(i64::from).collect()),
            CpuData::Bool(v) => HostData::Bool(v),
        };
        let dtype = match (t, &data) {
            (Some(t @ (dt::FLOAT | dt::HALF | dt::BFLOAT16)), HostData::F32(_)) => t,
            (Some(dt::DOUBLE), HostData::F64(_)) => dt::DOUBLE,
            (Some(t), HostData::I64(_)) if int_range(t).is_some() => t,
            _ => own,
        };
        Ok(HostTensor { dtype, shape, data })
    }

    /// Writes element range `lo..hi` of `self` nested by `shape` as JSON.
    /// `bytes_b64`: strings as `{"b64": ...}` (outputs named `*_bytes`).
    fn write_nest(&self, out: &mut String, shape: &[usize], lo: usize, bytes_b64: bool) {
        match shape.split_first() {
            None => self.write_elem(out, lo, bytes_b64),
            Some((&n, rest)) => {
                let stride: usize = rest.iter().product();
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write_nest(out, rest, lo.saturating_add(i.saturating_mul(stride)), bytes_b64);
                }
                out.push(']');
            }
        }
    }

    /// Element `i` as JSON (`null` past the data, which a well-formed
    /// tensor never reaches).
    fn write_elem(&self, out: &mut String, i: usize, bytes_b64: bool) {
        use std::fmt::Write as _;
        let written = match &self.data {
            HostData::F32(v) => v.get(i).map(|&x| json::write_f32(out, x)),
            HostData::F64(v) => v.get(i).map(|&x| json::write_f64(out, x)),
            HostData::I64(v) => v.get(i).map(|x| {
                let _ = write!(out, "{x}");
            }),
            HostData::Bool(v) => v.get(i).map(|&x| out.push_str(if x { "true" } else { "false" })),
            HostData::Bytes(v) => v.get(i).map(|x| {
                if bytes_b64 {
                    out.push_str("{\"b64\":");
                    json::write_str(out, &base64::engine::general_purpose::STANDARD.encode(x));
                    out.push('}');
                } else {
                    json::write_str(out, &String::from_utf8_lossy(x));
                }
            }),
        };
        if written.is_none() {
            out.push_str("null");
        }
    }

    /// The whole tensor as JSON (the columnar form).
    pub fn write_json(&self, out: &mut String, name: &str) {
        self.write_nest(out, &self.shape, 0, name.ends_with("_bytes"));
    }

    /// Row `r` as JSON (the row form: one instance).
    pub fn write_row_json(&self, out: &mut String, r: usize, name: &str) {
        let stride: usize = self.shape.iter().skip(1).product();
        self.write_nest(
            out,
            self.shape.get(1..).unwrap_or(&[]),
            r.saturating_mul(stride),
            name.ends_with("_bytes"),
        );
    }

    /// A `TensorProto` with the values in the typed repeated fields, as TF
    /// Serving answers by default.
    pub fn to_proto(&self) -> TensorProto {
        let mut p = TensorProto {
            dtype: self.dtype,
            tensor_shape: Some(TensorShapeProto::from_dims(
                &self.shape.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )),
            ..Default::default()
        };
        match &self.data {
            HostData::F32(v) => match self.dtype {
                dt::HALF => p.half_val = v.iter().map(|&x| half::f16::from_f32(x).to_bits() as i32).collect(),
                dt::BFLOAT16 => p.half_val = v.iter().map(|&x| half::bf16::from_f32(x).to_bits() as i32).collect(),
                _ => p.float_val = v.clone(),
            },
            HostData::F64(v) => p.double_val = v.clone(),
            HostData::I64(v) => match self.dtype {
                dt::INT64 => p.int64_val = v.clone(),
                _ => p.int_val = v.iter().map(|&x| x as i32).collect(),
            },
            HostData::Bool(v) => p.bool_val = v.clone(),
            HostData::Bytes(v) => p.string_val = v.clone(),
        }
        p
    }

    /// A request's `TensorProto`: `tensor_content` or the typed fields
    /// (fewer values than elements repeat the last, as TensorFlow reads it).
    /// The shape is checked (at most [`MAX_RANK`] dimensions, no negative
    /// sizes, its dimensions with zeros counted as ones multiplying to at
    /// most the budget's limit) and the decoded size charged to `budget`
    /// before anything is allocated.
    pub fn from_proto(p: &TensorProto, name: &str, budget: &mut Budget) -> Result<HostTensor, Status> {
        let name = status::clip(name, 256);
        let bad = |m: String| Status::invalid(format!("input '{name}': {m}"));
        // Bytes per element on the host (`HostData`), and in tensor_content.
        let (width, raw_width) = match p.dtype {
            dt::FLOAT => (4, 4),
            dt::HALF | dt::BFLOAT16 => (4, 2),
            dt::DOUBLE => (8, 8),
            dt::INT64 => (8, 8),
            dt::INT32 => (8, 4),
            dt::INT16 => (8, 2),
            dt::INT8 | dt::UINT8 => (8, 1),
            dt::BOOL => (1, 1),
            dt::STRING => (std::mem::size_of::<Vec<u8>>(), 0),
            t => return Err(bad(format!("{} is not a served dtype", dt::name(t)))),
        };
        let dims: &[_] = p.tensor_shape.as_ref().map_or(&[], |s| s.dim.as_slice());
        if p.tensor_shape.as_ref().is_some_and(|s| s.unknown_rank) {
            return Err(bad("a tensor of unknown rank".into()));
        }
        if dims.len() > MAX_RANK {
            return Err(bad(format!(
                "a shape of {} dimensions; TensorFlow allows at most {MAX_RANK}",
                dims.len()
            )));
        }
        let sizes: Vec<i64> = dims.iter().map(|d| d.size).collect();
        let mut shape = Vec::with_capacity(dims.len());
        for &d in &sizes {
            shape.push(
                usize::try_from(d).map_err(|_| bad(format!("shape {} has a negative dimension", show_dims(&sizes))))?,
            );
        }
        // Zero-sized tensors too: the sizes of their other dimensions feed
        // strides and row sizes later.
        let limit = budget.limit();
        let span = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d.max(1)));
        let n = match (span, shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))) {
            (Some(span), Some(n)) if span <= limit => n,
            _ => {
                return Err(bad(format!(
                    "shape {} is too large: its dimensions (zeros counted as ones) multiply to more than {limit}",
                    show_dims(&shape)
                )));
            }
        };
        let raw = &p.tensor_content;
        if !raw.is_empty() && (raw_width == 0 || Some(raw.len()) != n.checked_mul(raw_width)) {
            return Err(bad(if raw_width == 0 {
                "tensor_content is not read for string tensors; send string_val".into()
            } else {
                format!(
                    "tensor_content has {} bytes for {n} elements of {}",
                    raw.len(),
                    dtype_name(p.dtype)
                )
            }));
        }
        let bytes = if p.dtype == dt::STRING {
            let vals = &p.string_val;
            let given = vals.iter().try_fold(0usize, |a, v| a.checked_add(v.len()));
            let repeated = n
                .checked_sub(vals.len())
                .and_then(|k| k.checked_mul(vals.last().map_or(0, |v| v.len())));
            match (given, repeated) {
                (Some(g), Some(r)) => g.checked_add(r).and_then(|b| b.checked_add(n.checked_mul(width)?)),
                // More values than elements: `fill` says so below.
                (Some(g), None) if vals.len() > n => Some(g),
                _ => None,
            }
        } else {
            n.checked_mul(width)
        };
        budget.take(&name, n, bytes)?;
        /// `v`, its last value repeated up to `n` elements.
        fn fill<T: Clone>(v: &[T], n: usize, what: &str) -> Result<Vec<T>, String> {
            if v.len() > n {
                return Err(format!("{} values for {n} elements", v.len()));
            }
            let Some(last) = v.last() else {
                return if n == 0 {
                    Ok(Vec::new())
                } else {
                    Err(format!("no {what} values for {n} elements"))
                };
            };
            let mut out = Vec::with_capacity(n);
            out.extend_from_slice(v);
            out.resize(n, last.clone());
            Ok(out)
        }
        let data = match p.dtype {
            dt::FLOAT if !raw.is_empty() => HostData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            dt::FLOAT => HostData::F32(fill(&p.float_val, n, "float_val").map_err(bad)?),
            dt::HALF | dt::BFLOAT16 => {
                let bits: Vec<u16> = if !raw.is_empty() {
                    raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
                } else {
                    fill(&p.half_val, n, "half_val")
                        .map_err(bad)?
                        .into_iter()
                        .map(|x| x as u16)
                        .collect()
                };
                HostData::F32(
                    bits.into_iter()
                        .map(|b| {
                            if p.dtype == dt::HALF {
                                half::f16::from_bits(b).to_f32()
                            } else {
                                half::bf16::from_bits(b).to_f32()
                            }
                        })
                        .collect(),
                )
            }
            dt::DOUBLE if !raw.is_empty() => HostData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            dt::DOUBLE => HostData::F64(fill(&p.double_val, n, "double_val").map_err(bad)?),
            dt::INT64 if !raw.is_empty() => HostData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            dt::INT64 => HostData::I64(fill(&p.int64_val, n, "int64_val").map_err(bad)?),
            dt::INT32 if !raw.is_empty() => HostData::I64(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            dt::INT16 if !raw.is_empty() => HostData::I64(
                raw.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            dt::INT8 if !raw.is_empty() => HostData::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
            dt::UINT8 if !raw.is_empty() => HostData::I64(raw.iter().map(|&b| b as i64).collect()),
            dt::INT32 | dt::INT16 | dt::INT8 | dt::UINT8 => {
                let (lo, hi) = int_range(p.dtype).unwrap_or((i64::MIN, i64::MAX));
                if let Some(x) = p.int_val.iter().find(|&&x| !(lo..=hi).contains(&(x as i64))) {
                    return Err(bad(format!("{x} is out of range for {}", dtype_name(p.dtype))));
                }
                let v = fill(&p.int_val, n, "int_val").map_err(bad)?;
                HostData::I64(v.into_iter().map(i64::from).collect())
            }
            dt::BOOL if !raw.is_empty() => HostData::Bool(raw.iter().map(|&b| b != 0).collect()),
            dt::BOOL => HostData::Bool(fill(&p.bool_val, n, "bool_val").map_err(bad)?),
            dt::STRING => HostData::Bytes(fill(&p.string_val, n, "string_val").map_err(bad)?),
            t => return Err(bad(format!("{} is not a served dtype", dt::name(t)))),
        };
        Ok(HostTensor {
            dtype: p.dtype,
            shape,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nests() {
        let v = json::parse(b"[[1, 2.5], [NaN, -Infinity]]").unwrap();
        let t = from_json(&v, dt::FLOAT).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        let mut s = String::new();
        t.write_json(&mut s, "y");
        assert_eq!(s, "[[1.0,2.5],[NaN,-Infinity]]");
        let ragged = json::parse(b"[[1, 2], [3]]").unwrap();
        assert!(from_json(&ragged, dt::FLOAT).is_err());
        let mixed = json::parse(b"[[1, 2], 3]").unwrap();
        assert!(from_json(&mixed, dt::FLOAT).is_err());
        assert!(from_json(&json::parse(b"[1.5]").unwrap(), dt::INT32).is_err());
        assert!(from_json(&json::parse(b"[3000000000]").unwrap(), dt::INT32).is_err());
        assert!(from_json(&json::parse(b"[16777217]").unwrap(), dt::FLOAT).is_err());
        assert_eq!(
            from_json(&json::parse(br#"["x"]"#).unwrap(), dt::FLOAT)
                .unwrap_err()
                .message,
            "JSON Value: \"x\" Type: String is not of expected type: float"
        );
        let b = from_json(&json::parse(br#"[{"b64": "aGk="}]"#).unwrap(), dt::STRING).unwrap();
        assert_eq!(b.data, HostData::Bytes(vec![b"hi".to_vec()]));
    }

    #[test]
    fn proto_round_trip_and_batching() {
        let t = HostTensor {
            dtype: dt::FLOAT,
            shape: vec![2, 3],
            data: HostData::F32(vec![1., 2., 3., 4., 5., 6.]),
        };
        let budget = || Budget::new(1 << 20);
        assert_eq!(HostTensor::from_proto(&t.to_proto(), "x", &mut budget()).unwrap(), t);
        let s = HostTensor::stack(&[t.clone(), t.rows(1, 2)], true).unwrap();
        assert_eq!(s.shape, vec![3, 3]);
        assert_eq!(s.rows(2, 3), t.rows(1, 2));
        assert_eq!(t.rows(0, 1).pad_rows(3).rows(2, 3), t.rows(0, 1));
        let mut p = t.to_proto();
        p.float_val.truncate(1);
        assert_eq!(
            HostTensor::from_proto(&p, "x", &mut budget()).unwrap().data,
            HostData::F32(vec![1.0; 6])
        );
        p.tensor_shape = Some(TensorShapeProto::from_dims(&[Some(1 << 40), Some(1 << 40)]));
        assert!(HostTensor::from_proto(&p, "x", &mut budget()).is_err());
    }

    #[test]
    fn proto_shapes_and_sizes_are_checked_before_decoding() {
        use crate::io::saved_model::proto::dt;
        let proto = |dtype, dims: &[i64]| TensorProto {
            dtype,
            tensor_shape: Some(TensorShapeProto::from_dims(
                &dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Vec<_>>(),
            )),
            ..Default::default()
        };
        // 60M floats from one value: refused before anything is allocated.
        let mut p = proto(dt::FLOAT, &[60_000_000]);
        p.float_val = vec![1.0];
        let e = HostTensor::from_proto(&p, "junk", &mut Budget::new(64 << 20)).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted, "{e}");
        assert!(
            e.message.contains("input 'junk'") && e.message.contains("240000000 bytes"),
            "{e}"
        );
        // The budget is shared: two inputs of 3 MB each do not fit in 5 MB.
        let mut p = proto(dt::FLOAT, &[750_000]);
        p.float_val = vec![1.0];
        let mut b = Budget::new(5 << 20);
        assert!(HostTensor::from_proto(&p, "a", &mut b).is_ok());
        assert_eq!(b.used(), 3_000_000);
        assert_eq!(
            HostTensor::from_proto(&p, "b", &mut b).unwrap_err().code,
            Code::ResourceExhausted
        );
        // A 1 MB string repeated a million times.
        let mut p = proto(dt::STRING, &[1_000_000]);
        p.string_val = vec![vec![b'x'; 1 << 20]];
        let e = HostTensor::from_proto(&p, "s", &mut Budget::new(64 << 20)).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted, "{e}");
        // A zero dimension does not hide the others.
        let mut p = proto(dt::FLOAT, &[0, 1 << 62, 4]);
        let e = HostTensor::from_proto(&p, "z", &mut Budget::new(64 << 20)).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("[0,4611686018427387904,4] is too large"), "{e}");
        p.tensor_shape = Some(TensorShapeProto::from_dims(&[Some(0), Some(1000), Some(4)]));
        let t = HostTensor::from_proto(&p, "z", &mut Budget::new(64 << 20)).unwrap();
        assert_eq!((t.shape.as_slice(), t.numel()), (&[0, 1000, 4][..], 0));
        // Rank 255, quoted briefly.
        let p = proto(dt::FLOAT, &[1; 255]);
        let e = HostTensor::from_proto(&p, "r", &mut Budget::new(64 << 20)).unwrap_err();
        assert!(e.message.contains("255 dimensions"), "{e}");
        let p = proto(dt::FLOAT, &[-1; 200]);
        let e = HostTensor::from_proto(&p, "r", &mut Budget::new(64 << 20)).unwrap_err();
        assert!(e.message.contains("(200 dimensions)") && e.message.len() < 200, "{e}");
        assert_eq!(show_dims(&[1, 2, 3]), "[1,2,3]");
    }
}
