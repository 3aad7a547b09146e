//! TF Serving's REST API: the routes, the JSON request forms (row
//! `instances`, columnar `inputs`) and the answers, as its HTTP handler
//! gives them. `handle` is the whole API as a plain function of method,
//! path and body; `http.rs` puts it on a socket.

use super::json::{self, Json};
use super::manager::{Manager, Want};
use super::servable::{Named, Servable};
use super::status::{Code, Status};
use super::tensor::{self, HostTensor};
use crate::io::saved_model::proto::{SignatureDef, TensorInfo, dt};
use std::fmt::Write as _;

/// The default signature key.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// An answer: HTTP status, content type, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The model named by the request (for the metrics).
    pub model: String,
    /// The API (`predict`, `GetModelStatus`, ...), for the metrics.
    pub api: &'static str,
    /// The status code name.
    pub code: &'static str,
}

const JSON_TYPE: &str = "application/json";

fn ok(body: String, model: &str, api: &'static str) -> Reply {
    Reply {
        status: 200,
        content_type: JSON_TYPE,
        body,
        model: model.to_string(),
        api,
        code: Code::Ok.name(),
    }
}

/// TF Serving's error body (RapidJSON's pretty writer):
/// `{\n    "error": "..."\n}`.
pub fn error(s: &Status, model: &str, api: &'static str) -> Reply {
    let mut body = String::from("{\n    \"error\": ");
    json::write_str(&mut body, &s.message);
    body.push_str("\n}");
    Reply {
        status: s.code.http(),
        content_type: JSON_TYPE,
        body,
        model: model.to_string(),
        api,
        code: s.code.name(),
    }
}

/// A request target, parsed as TF Serving's URL patterns parse it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    model: String,
    want: Want,
    /// `metadata` (GET) or `predict` / `classify` / `regress` (POST); empty for status.
    verb: String,
}

/// `%XX` decoding (libcurl's: `+` stays `+`); `None` for bad UTF-8.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// TF Serving's two URL patterns (case-insensitive words, as its `(?i)`
/// regexes; the verb and `metadata` compared exactly, as its code does):
/// POST `/v1/models/NAME[/versions/N|/labels/L]:VERB` and
/// GET `/v1/models[/NAME][/versions/N|/labels/L][/metadata]`.
/// `Ok(None)`: no match; `Err`: a match with a bad part.
fn parse_target(method: &str, path: &str) -> Result<Option<Target>, Status> {
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("/v1/models") {
        return Ok(None);
    }
    let rest = &path["/v1/models".len()..];
    if rest.is_empty() && method == "GET" {
        return Err(Status::invalid("Missing model name in request."));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    let (rest, verb) = match (method, rest.rsplit_once(':')) {
        ("POST", Some((r, v))) if !v.contains('/') => (r, Some(v)),
        ("POST", _) => return Ok(None),
        (_, _) if rest.contains(':') => return Ok(None),
        _ => (rest, None),
    };
    let mut parts: Vec<&str> = rest.split('/').collect();
    let mut sub = String::new();
    if verb.is_none() && parts.len() > 1 && parts.last().is_some_and(|p| p.eq_ignore_ascii_case("metadata")) {
        sub = parts.pop().unwrap_or_default().to_string();
    }
    let Some(&name) = parts.first() else { return Ok(None) };
    if name.is_empty() {
        return Ok(None);
    }
    let model = unescape(name).ok_or_else(|| Status::invalid(format!("Failed to decode model name:{name}")))?;
    let want = match parts.as_slice() {
        [_] => Want::Latest,
        [_, v_word, v]
            if v_word.eq_ignore_ascii_case("versions") && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Want::Version(
                v.parse()
                    .map_err(|_| Status::invalid(format!("Failed to convert version: {v} to numeric.")))?,
            )
        }
        [_, l_word, l] if l_word.eq_ignore_ascii_case("labels") && !l.is_empty() => Want::Label(
            unescape(l).ok_or_else(|| Status::invalid(format!("Failed to decode model version label:{l}")))?,
        ),
        _ => return Ok(None),
    };
    let verb = match verb {
        Some(v) => v.to_string(),
        // `/METADATA` matches the pattern but not the code's exact compare:
        // it is a status request there.
        None if sub == "metadata" => sub,
        None => String::new(),
    };
    Ok(Some(Target { model, want, verb }))
}

/// libevent's page for a path outside `/v1/`.
const NOT_FOUND_PAGE: &str =
    "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n";

/// The REST API: `method` and `path` (no query), the body as received.
pub fn handle(manager: &Manager, method: &str, path: &str, body: &[u8]) -> Reply {
    if !path.to_ascii_lowercase().starts_with("/v1/") {
        return Reply {
            status: 404,
            content_type: "text/html",
            body: NOT_FOUND_PAGE.into(),
            model: String::new(),
            api: "unknown",
            code: Code::NotFound.name(),
        };
    }
    let malformed = || {
        error(
            &Status::invalid(format!("Malformed request: {method} {path}")),
            "",
            "unknown",
        )
    };
    if method != "GET" && method != "POST" {
        return malformed();
    }
    let t = match parse_target(method, path) {
        Ok(Some(t)) => t,
        Ok(None) => return malformed(),
        Err(e) => return error(&e, "", "unknown"),
    };
    match (method, t.verb.as_str()) {
        ("GET", "") => model_status(manager, &t),
        ("GET", "metadata") => metadata(manager, &t),
        ("POST", "predict") => predict(manager, &t, body),
        ("POST", "classify" | "regress") => {
            let api = if t.verb == "classify" { "Classify" } else { "Regress" };
            // Classify and Regress read tf.Example protos, string tensors
            // that wgflow's devices do not compute.
            let s = match manager.resolve(&t.model, &t.want) {
                Err(e) => e,
                Ok(_) => Status::new(
                    Code::Unimplemented,
                    format!(
                        "{} is not implemented by wgflow_model_server: it parses tf.Example strings; use :predict",
                        t.verb
                    ),
                ),
            };
            error(&s, &t.model, api)
        }
        _ => malformed(),
    }
}

fn version_json(out: &mut String, v: &super::manager::VersionStatus) {
    let _ = write!(
        out,
        "{{\"version\":\"{}\",\"state\":\"{}\",\"status\":{{\"error_code\":\"{}\",\"error_message\":",
        v.version,
        v.state.name(),
        v.status.code.name()
    );
    json::write_str(out, &v.status.message);
    out.push_str("}}");
}

fn model_status(manager: &Manager, t: &Target) -> Reply {
    const API: &str = "GetModelStatus";
    match manager.status(&t.model, &t.want) {
        Err(e) => error(&e, &t.model, API),
        Ok(vs) => {
            let mut out = String::from("{\"model_version_status\":[");
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                version_json(&mut out, v);
            }
            out.push_str("]}");
            ok(out, &t.model, API)
        }
    }
}

/// A `TensorInfo` as protobuf's JSON writes it (int64 sizes as strings).
fn tensor_info_json(out: &mut String, info: &TensorInfo) {
    out.push_str("{\"dtype\":");
    json::write_str(out, &dt::name(info.dtype));
    out.push_str(",\"tensor_shape\":{\"dim\":[");
    let shape = info.tensor_shape.clone().unwrap_or_default();
    for (i, d) in shape.dim.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"size\":\"{}\",\"name\":", d.size);
        json::write_str(out, &d.name);
        out.push('}');
    }
    let _ = write!(out, "],\"unknown_rank\":{}}},\"name\":", shape.unknown_rank);
    json::write_str(out, &info.name);
    out.push('}');
}

fn signature_json(out: &mut String, sig: &SignatureDef) {
    for (i, (field, map)) in [("inputs", &sig.inputs), ("outputs", &sig.outputs)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{field}\":{{");
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for (j, k) in keys.into_iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            json::write_str(out, k);
            out.push(':');
            tensor_info_json(out, &map[k]);
        }
        out.push('}');
    }
    out.push_str(",\"method_name\":");
    json::write_str(out, &sig.method_name);
}

fn metadata(manager: &Manager, t: &Target) -> Reply {
    const API: &str = "GetModelMetadata";
    let s = match manager.resolve(&t.model, &t.want) {
        Ok(s) => s,
        Err(e) => return error(&e, &t.model, API),
    };
    let mut out = String::from("{\"model_spec\":{\"name\":");
    json::write_str(&mut out, &t.model);
    let _ = write!(
        out,
        ",\"signature_name\":\"\",\"version\":\"{}\"}},\"metadata\":{{\"signature_def\":{{\"signature_def\":{{",
        s.core.version
    );
    for (i, (k, sig)) in s.core.signatures.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, k);
        out.push_str(":{");
        signature_json(&mut out, sig);
        out.push('}');
    }
    out.push_str("}}}}");
    ok(out, &t.model, API)
}

fn names_of(sig: &SignatureDef) -> Vec<&String> {
    let mut names: Vec<&String> = sig.inputs.keys().collect();
    names.sort();
    names
}

/// One instance's value for input `name`, checked against the first's.
fn add_instance(
    sig: &SignatureDef,
    name: &str,
    v: &Json,
    parts: &mut std::collections::BTreeMap<String, Vec<HostTensor>>,
) -> Result<(), Status> {
    let info = sig
        .inputs
        .get(name)
        .ok_or_else(|| Status::invalid(format!("JSON object: does not have named input: {name}")))?;
    let t = tensor::from_json(v, info.dtype)?;
    let list = parts.entry(name.to_string()).or_default();
    if let Some(first) = list.first() {
        if first.numel() != t.numel() {
            return Err(Status::invalid(format!(
                "Expecting tensor size: {} but got: {}",
                first.numel(),
                t.numel()
            )));
        }
        if first.shape != t.shape {
            return Err(Status::invalid(format!(
                "Expecting shape {} but got: {}",
                tensor::show_dims(&first.shape),
                tensor::show_dims(&t.shape)
            )));
        }
    }
    list.push(t);
    Ok(())
}

fn is_object(v: &Json) -> bool {
    matches!(v, Json::Obj(_)) && !tensor::is_b64(v)
}

/// The inputs of a row-format request (`FillTensorMapFromInstancesList`).
fn from_instances(sig: &SignatureDef, items: &[Json]) -> Result<Named, Status> {
    let names = names_of(sig);
    let objects = is_object(&items[0]);
    if names.len() > 1 && !objects {
        return Err(Status::invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per \
             tensorinfo_map",
        ));
    }
    let mut parts = std::collections::BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if is_object(item) {
            if !objects {
                return Err(Status::invalid(format!(
                    "Expecting value/list but got object at item {i} of input list"
                )));
            }
            let Json::Obj(members) = item else { continue };
            // A key given twice would add a second row for one instance
            // (TF Serving appends both values too, and then fails to parse
            // the tensor): refused, naming the key.
            let mut seen = std::collections::BTreeSet::new();
            if let Some((k, _)) = members.iter().find(|(k, _)| !seen.insert(k.as_str())) {
                return Err(Status::invalid(format!(
                    "Failed to process element: {i} key: {} of 'instances' list. Error: the key is given more than \
                     once in the object",
                    super::status::clip(k, 256)
                )));
            }
            for (k, v) in members {
                add_instance(sig, k, v, &mut parts).map_err(|e| {
                    Status::invalid(format!(
                        "Failed to process element: {i} key: {k} of 'instances' list. Error: {e}"
                    ))
                })?;
            }
            let mut keys: Vec<&String> = members.iter().map(|(k, _)| k).collect();
            keys.sort();
            keys.dedup();
            if keys != names {
                return Err(Status::invalid(format!(
                    "Failed to process element: {i} of 'instances' list. JSON object: {} must only have keys: {}",
                    json::pretty(item),
                    names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                )));
            }
        } else {
            if objects {
                return Err(Status::invalid(format!(
                    "Expecting object but got list at item {i} of input list"
                )));
            }
            add_instance(sig, names[0], item, &mut parts).map_err(|e| {
                Status::invalid(format!(
                    "Failed to process element: {i} of 'instances' list. Error: {e}"
                ))
            })?;
        }
    }
    let mut out = Vec::with_capacity(parts.len());
    for (n, p) in parts {
        out.push((n, HostTensor::stack(&p, false)?));
    }
    Ok(out)
}

/// The inputs of a columnar request (`FillTensorMapFromInputsMap`); keys
/// that are not inputs are ignored, as TF Serving ignores them.
fn from_columns(sig: &SignatureDef, inputs: &Json) -> Result<Named, Status> {
    let names = names_of(sig);
    if is_object(inputs) {
        let mut out = Vec::new();
        for n in names {
            let v = inputs
                .get(n)
                .ok_or_else(|| Status::invalid(format!("Missing named input: {n} in 'inputs' object.")))?;
            out.push((n.clone(), tensor::from_json(v, sig.inputs[n].dtype)?));
        }
        return Ok(out);
    }
    if names.len() > 1 {
        return Err(Status::invalid(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per \
             tensorinfo_map",
        ));
    }
    let n = names[0];
    Ok(vec![(n.clone(), tensor::from_json(inputs, sig.inputs[n].dtype)?)])
}

/// A predict body, checked in TF Serving's order: the JSON, the
/// signature name's type, the model, the signature, the input keys.
/// Returns the servable, the signature key, the inputs, and whether the
/// request was in the row format.
pub fn parse_predict(
    manager: &Manager,
    model: &str,
    want: &Want,
    body: &[u8],
) -> Result<(std::sync::Arc<Servable>, String, Named, bool), Status> {
    if body.is_empty() {
        return Err(Status::invalid("JSON Parse error: The document is empty"));
    }
    let doc = json::parse(body).map_err(|e| Status::invalid(e.to_string()))?;
    if !matches!(doc, Json::Obj(_)) {
        return Err(Status::invalid(format!(
            "JSON Value: {} Is not object",
            json::pretty(&doc)
        )));
    }
    let key = match doc.get("signature_name") {
        None => DEFAULT_SIGNATURE.to_string(),
        Some(Json::Str(k)) if k.is_empty() => DEFAULT_SIGNATURE.to_string(),
        Some(Json::Str(k)) => k.clone(),
        Some(_) => {
            return Err(Status::invalid(format!(
                "JSON Value: {} not formatted correctly. 'signature_name' key must be a string value.",
                json::pretty(&doc)
            )));
        }
    };
    let s = manager.resolve(model, want)?;
    let sig = s.core.signature(&key)?;
    if sig.inputs.is_empty() {
        return Err(Status::invalid(format!("Failed to get input map for signature: {key}")));
    }
    let (inputs, rows) = match (doc.get("instances"), doc.get("inputs")) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid(format!(
                "JSON Value: {} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
                json::pretty(&doc)
            )));
        }
        (Some(Json::Arr(items)), None) if !items.is_empty() => (from_instances(sig, items)?, true),
        (Some(Json::Arr(_)), None) => {
            return Err(Status::invalid(format!(
                "JSON Value: {} No values in 'instances' array",
                json::pretty(&doc)
            )));
        }
        (Some(_), None) => {
            return Err(Status::invalid(format!(
                "JSON Value: {} Excepting 'instances' to be an list/array",
                json::pretty(&doc)
            )));
        }
        (None, Some(i)) => (from_columns(sig, i)?, false),
        (None, None) => return Err(Status::invalid("Missing 'inputs' or 'instances' key")),
    };
    Ok((s, key, inputs, rows))
}

/// One output's value alone, several as an object by name (TF Serving's
/// rule for both forms).
fn write_outputs(out: &mut String, outputs: &Named, value: impl Fn(&mut String, &str, &HostTensor)) {
    if let [(name, t)] = outputs.as_slice() {
        value(out, name, t);
        return;
    }
    out.push('{');
    for (i, (name, t)) in outputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json::write_str(out, name);
        out.push_str(": ");
        value(out, name, t);
    }
    out.push('}');
}

/// Formats predict outputs: `predictions` (row) or `outputs` (columnar).
pub fn format_predict(outputs: &Named, rows: bool) -> Result<String, Status> {
    if outputs.is_empty() {
        return Err(Status::invalid("Cannot convert empty tensor map to JSON"));
    }
    let mut out = String::new();
    if rows {
        let mut n = None;
        for (name, t) in outputs {
            let b = t
                .batch()
                .ok_or_else(|| Status::invalid(format!("Tensor name: {name} has no shape information ")))?;
            if b < 1 {
                return Err(Status::invalid(format!(
                    "Tensor name: {name} has invalid batch size: {b}"
                )));
            }
            match n {
                None => n = Some(b),
                Some(n) if n != b => {
                    return Err(Status::invalid(format!(
                        "Tensor name: {name} has inconsistent batch size: {b} expecting: {n}"
                    )));
                }
                _ => {}
            }
        }
        out.push_str("{\n    \"predictions\": [");
        for r in 0..n.unwrap_or(0) {
            if r > 0 {
                out.push_str(", ");
            }
            write_outputs(&mut out, outputs, |out, name, t| t.write_row_json(out, r, name));
        }
        out.push_str("\n    ]\n}");
    } else {
        out.push_str("{\n    \"outputs\": ");
        write_outputs(&mut out, outputs, |out, name, t| t.write_json(out, name));
        out.push_str("\n}");
    }
    Ok(out)
}

fn predict(manager: &Manager, t: &Target, body: &[u8]) -> Reply {
    const API: &str = "Predict";
    let run = || -> Result<String, Status> {
        let (s, key, inputs, rows) = parse_predict(manager, &t.model, &t.want, body)?;
        let outputs = s.predict(&key, inputs, &[])?;
        format_predict(&outputs, rows)
    };
    match run() {
        Ok(body) => ok(body, &t.model, API),
        Err(e) => error(&e, &t.model, API),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let p = |m, s| parse_target(m, s).unwrap();
        assert_eq!(
            p("GET", "/v1/models/m"),
            Some(Target {
                model: "m".into(),
                want: Want::Latest,
                verb: String::new()
            })
        );
        assert_eq!(
            p("POST", "/v1/models/m/versions/12:predict").map(|t| (t.want, t.verb)),
            Some((Want::Version(12), "predict".into()))
        );
        assert_eq!(
            p("GET", "/v1/models/m/labels/stable/metadata").map(|t| (t.want, t.verb)),
            Some((Want::Label("stable".into()), "metadata".into()))
        );
        assert_eq!(p("GET", "/v1/models/m%20x").map(|t| t.model), Some("m x".into()));
        assert_eq!(p("GET", "/v1/models/m/versions/x"), None);
        assert_eq!(p("GET", "/v1/models/"), None);
        assert_eq!(p("GET", "/v1/models/m/extra/1"), None);
        assert_eq!(p("GET", "/v1/models/m:predict"), None);
        assert_eq!(p("POST", "/v1/models/m"), None);
        assert_eq!(p("POST", "/v1/models/m/metadata"), None);
        assert!(parse_target("GET", "/v1/models").is_err());
        assert!(parse_target("GET", "/v1/models/m/versions/99999999999999999999999").is_err());
    }

    #[test]
    fn several_outputs_are_objects_by_name() {
        use super::super::tensor::HostData;
        let a = HostTensor {
            dtype: dt::FLOAT,
            shape: vec![2, 1],
            data: HostData::F32(vec![1.0, 2.5]),
        };
        let b = HostTensor {
            dtype: dt::INT64,
            shape: vec![2],
            data: HostData::I64(vec![3, -4]),
        };
        let two = vec![("a".to_string(), a.clone()), ("b".to_string(), b)];
        let rows = json::parse(format_predict(&two, true).unwrap().as_bytes()).unwrap();
        let mut compact = String::new();
        json::write(&mut compact, &rows);
        assert_eq!(compact, r#"{"predictions":[{"a":[1.0],"b":3},{"a":[2.5],"b":-4}]}"#);
        let cols = json::parse(format_predict(&two, false).unwrap().as_bytes()).unwrap();
        let mut compact = String::new();
        json::write(&mut compact, &cols);
        assert_eq!(compact, r#"{"outputs":{"a":[[1.0],[2.5]],"b":[3,-4]}}"#);
        let one = vec![("a".to_string(), a.clone())];
        let mut compact = String::new();
        json::write(
            &mut compact,
            &json::parse(format_predict(&one, true).unwrap().as_bytes()).unwrap(),
        );
        assert_eq!(compact, r#"{"predictions":[[1.0],[2.5]]}"#);
        let bad = vec![
            ("a".to_string(), a),
            (
                "c".to_string(),
                HostTensor {
                    dtype: dt::FLOAT,
                    shape: vec![3],
                    data: HostData::F32(vec![0.0; 3]),
                },
            ),
        ];
        assert_eq!(
            format_predict(&bad, true).unwrap_err().message,
            "Tensor name: c has inconsistent batch size: 3 expecting: 2"
        );
    }
}
