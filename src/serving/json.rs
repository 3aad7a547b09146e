//! JSON as TF Serving's REST API reads and writes it: RapidJSON's grammar
//! with its `kParseNanAndInfFlag` (`NaN`, `Inf`, `Infinity`, `-Inf`,
//! `-Infinity` are numbers), its error messages, and object members kept in
//! document order. Nesting is bounded so that a hostile body cannot exhaust
//! the stack.

use std::fmt::Write as _;

/// Deepest nesting accepted (a rank-100 tensor is far past any model).
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number: its value as a double, and as an integer when the literal
    /// was one (no fraction or exponent) that fits an `i64`.
    Num(f64, Option<i64>),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, members in document order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The first member named `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A parse failure: RapidJSON's message and the byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// RapidJSON's English message (`The document is empty.`).
    pub message: &'static str,
    /// Where in the body.
    pub offset: usize,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JSON Parse error: {} at offset: {}", self.message, self.offset)
    }
}

const EMPTY: &str = "The document is empty.";
const NOT_SINGULAR: &str = "The document root must not be followed by other values.";
const INVALID_VALUE: &str = "Invalid value.";
const MISS_NAME: &str = "Missing a name for object member.";
const MISS_COLON: &str = "Missing a colon after a name of object member.";
const MISS_COMMA_CURLY: &str = "Missing a comma or '}' after an object member.";
const MISS_COMMA_SQUARE: &str = "Missing a comma or ']' after an array element.";
const BAD_HEX: &str = "Incorrect hex digit after \\u escape in string.";
const BAD_SURROGATE: &str = "The surrogate pair in string is invalid.";
const BAD_ESCAPE: &str = "Invalid escape character in string.";
const MISS_QUOTE: &str = "Missing a closing quotation mark in string.";
const BAD_ENCODING: &str = "Invalid encoding in string.";
const TOO_BIG: &str = "Number too big to be stored in double.";
const MISS_FRACTION: &str = "Miss fraction part in number.";
const MISS_EXPONENT: &str = "Miss exponent in number.";
const TOO_DEEP: &str = "Terminate parsing due to Handler error.";

/// Parses one JSON document.
pub fn parse(text: &[u8]) -> Result<Json, ParseError> {
    let mut p = Parser { s: text, i: 0 };
    p.ws();
    if p.i >= p.s.len() {
        return Err(p.err(EMPTY));
    }
    let v = p.value(0)?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err(NOT_SINGULAR));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, message: &'static str) -> ParseError {
        ParseError {
            message,
            offset: self.i,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8]) -> bool {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.err(TOO_DEEP));
        }
        match self.peek() {
            Some(b'n') if self.lit(b"null") => Ok(Json::Null),
            Some(b't') if self.lit(b"true") => Ok(Json::Bool(true)),
            Some(b'f') if self.lit(b"false") => Ok(Json::Bool(false)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                self.ws();
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(self.err(MISS_COMMA_SQUARE)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                self.ws();
                let mut members = Vec::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(self.err(MISS_NAME));
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err(MISS_COLON));
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return Err(self.err(MISS_COMMA_CURLY)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9' | b'N' | b'I') => self.number(),
            _ => Err(self.err(INVALID_VALUE)),
        }
    }

    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.i;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        if self.lit(b"NaN") {
            return Ok(Json::Num(f64::NAN, None));
        }
        if self.lit(b"Inf") {
            // `Inf` or `Infinity`.
            let _ = self.lit(b"inity");
            let v = if neg { f64::NEG_INFINITY } else { f64::INFINITY };
            return Ok(Json::Num(v, None));
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
            }
            _ => {
                self.i = start;
                return Err(self.err(INVALID_VALUE));
            }
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err(MISS_FRACTION));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err(MISS_EXPONENT));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
        }
        // Only ASCII digits, signs, '.', 'e' were consumed.
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err(INVALID_VALUE))?;
        let f: f64 = text.parse().map_err(|_| self.err(INVALID_VALUE))?;
        if f.is_infinite() {
            self.i = start;
            return Err(self.err(TOO_BIG));
        }
        let int = if integral { text.parse::<i64>().ok() } else { None };
        Ok(Json::Num(f, int))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err(BAD_HEX)),
            };
            v = v * 16 + d as u32;
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        // At the opening quote.
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(MISS_QUOTE));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| self.err(BAD_ENCODING));
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or_else(|| self.err(BAD_ESCAPE))?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !(self.lit(b"\\u")) {
                                    return Err(self.err(BAD_SURROGATE));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err(BAD_SURROGATE));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err(BAD_SURROGATE));
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.err(BAD_SURROGATE))?
                        }
                        _ => {
                            self.i -= 1;
                            return Err(self.err(BAD_ESCAPE));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..0x20 => return Err(self.err(MISS_QUOTE)),
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// Appends `s` as a JSON string literal, escaped as RapidJSON escapes.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// C's `%.{prec}g`.
fn fmt_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let x: i32 = exp.parse().unwrap_or(0);
    let strip = |t: &str| -> String {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t.to_string()
        }
    };
    if x < -4 || x >= prec as i32 {
        let sign = if x < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mant), x.abs())
    } else {
        let decimals = (prec as i32 - 1 - x).max(0) as usize;
        strip(&format!("{v:.decimals$}"))
    }
}

/// A float as TF Serving's `WriteDecimal` writes it: `%g` (six digits),
/// or `%.9g` / `%.17g` where six digits do not read back to the same
/// value; `.0` appended to whole numbers; `NaN`, `Infinity`, `-Infinity`.
fn decimal(v: f64, is_f32: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let mut s = fmt_g(v, 6);
    let same = if is_f32 {
        s.parse::<f32>().is_ok_and(|x| x == v as f32)
    } else {
        s.parse::<f64>().is_ok_and(|x| x == v)
    };
    if !same {
        s = fmt_g(v, if is_f32 { 9 } else { 17 });
    }
    if !s.contains('.') && !s.contains('e') {
        s.push_str(".0");
    }
    s
}

/// Appends a float as TF Serving writes one (see `decimal`).
pub fn write_f32(out: &mut String, v: f32) {
    out.push_str(&decimal(v as f64, true));
}

/// [`write_f32`] for doubles.
pub fn write_f64(out: &mut String, v: f64) {
    out.push_str(&decimal(v, false));
}

fn write_num(out: &mut String, f: f64, i: Option<i64>) {
    match i {
        Some(i) => {
            let _ = write!(out, "{i}");
        }
        None => write_f64(out, f),
    }
}

/// RapidJSON's type name of a value (`JsonTypeString`).
pub fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "Null",
        Json::Bool(false) => "False",
        Json::Bool(true) => "True",
        Json::Num(..) => "Number",
        Json::Str(_) => "String",
        Json::Arr(_) => "Array",
        Json::Obj(_) => "Object",
    }
}

/// The most bytes of a value quoted in an error message ([`pretty`]); the
/// quote ends in `...` where it was cut.
pub const MAX_QUOTE: usize = 4 << 10;

/// A value as RapidJSON's `PrettyWriter` writes it (4-space indent), as
/// TF Serving quotes values in its messages, cut after [`MAX_QUOTE`] bytes
/// (a 50 MB body would otherwise be quoted as gigabytes of indentation).
pub fn pretty(v: &Json) -> String {
    pretty_limited(v, MAX_QUOTE)
}

/// [`pretty`] with a budget of `limit` bytes: the text is cut there and
/// `...` appended; the writer stops as soon as the budget is spent.
pub fn pretty_limited(v: &Json, limit: usize) -> String {
    /// A string literal of at most about `room` bytes of `s`.
    fn str_within(out: &mut String, s: &str, limit: usize) {
        let room = limit.saturating_sub(out.len()).saturating_add(1);
        if s.len() <= room {
            write_str(out, s);
        } else {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            write_str(out, &s[..end]);
        }
    }
    /// Writes `v`; `false` once the budget is spent.
    fn go(out: &mut String, v: &Json, indent: usize, limit: usize) -> bool {
        if out.len() > limit {
            return false;
        }
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match v {
            Json::Arr(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    pad(out, indent + 4);
                    if !go(out, x, indent + 4, limit) {
                        return false;
                    }
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(m) if !m.is_empty() => {
                out.push_str("{\n");
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    pad(out, indent + 4);
                    str_within(out, k, limit);
                    out.push_str(": ");
                    if !go(out, x, indent + 4, limit) {
                        return false;
                    }
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
            Json::Str(s) => str_within(out, s, limit),
            other => write(out, other),
        }
        out.len() <= limit
    }
    let mut out = String::new();
    if !go(&mut out, v, 0, limit) || out.len() > limit {
        let mut end = limit.min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

/// Writes a value back as JSON text (compact).
pub fn write(out: &mut String, v: &Json) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(f, i) => write_num(out, *f, *i),
        Json::Str(s) => write_str(out, s),
        Json::Arr(items) => {
            out.push('[');
            for (n, x) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write(out, x);
            }
            out.push(']');
        }
        Json::Obj(m) => {
            out.push('{');
            for (n, (k, x)) in m.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write(out, x);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_and_errors() {
        let v = parse(br#"{"a": [NaN, -Infinity, Inf, 1, 2.5e1, "xA\u00e9"]}"#).unwrap();
        let Some(Json::Arr(a)) = v.get("a") else {
            panic!("{v:?}")
        };
        assert!(matches!(a[0], Json::Num(f, None) if f.is_nan()));
        assert_eq!(a[1], Json::Num(f64::NEG_INFINITY, None));
        assert_eq!(a[2], Json::Num(f64::INFINITY, None));
        assert_eq!(a[3], Json::Num(1.0, Some(1)));
        assert_eq!(a[4], Json::Num(25.0, None));
        assert_eq!(a[5], Json::Str("xAé".into()));
        assert_eq!(parse(b"  ").unwrap_err().message, EMPTY);
        assert_eq!(parse(b"[1,").unwrap_err().message, INVALID_VALUE);
        assert_eq!(parse(b"[1 2]").unwrap_err().message, MISS_COMMA_SQUARE);
        assert_eq!(parse(b"{} x").unwrap_err().message, NOT_SINGULAR);
        assert_eq!(parse(b"1e999").unwrap_err().message, TOO_BIG);
        let deep = "[".repeat(100_000);
        assert_eq!(parse(deep.as_bytes()).unwrap_err().message, TOO_DEEP);
    }

    #[test]
    fn tf_serving_decimals() {
        let f = |v: f32| decimal(v as f64, true);
        assert_eq!(f(3.0), "3.0");
        assert_eq!(f(2.5), "2.5");
        assert_eq!(f(1e-5), "1e-05");
        assert_eq!(f(1e6), "1e+06");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(0.669_074_06), "0.669074059");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(123456.0), "123456.0");
        assert_eq!(decimal(0.1, false), "0.1");
        assert_eq!(decimal(1.0 / 3.0, false), "0.33333333333333331");
        assert_eq!(
            pretty(&parse(b"{\"a\": [1, 2.5], \"b\": {}}").unwrap()),
            "{\n    \"a\": [\n        1,\n        2.5\n    ],\n    \"b\": {}\n}"
        );
    }

    #[test]
    fn quotes_are_bounded() {
        // A 2 MB nest would pretty-print to far more (indentation per level).
        let nest = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let body = format!("[{}]", vec![nest.as_str(); 10_000].join(","));
        let v = parse(body.as_bytes()).unwrap();
        let q = pretty(&v);
        assert!(q.len() <= MAX_QUOTE + 3 && q.ends_with("..."), "{}", q.len());
        let long = Json::Str("\u{e9}".repeat(10_000));
        let q = pretty_limited(&long, 101);
        assert!(q.len() <= 104 && q.starts_with("\"\u{e9}") && q.ends_with("..."), "{q}");
        assert_eq!(pretty_limited(&parse(b"[1, 2]").unwrap(), 100), "[\n    1,\n    2\n]");
    }

    #[test]
    fn floats_round_trip() {
        for v in [2.5f32, 3.0, 1e-10, 1e20, -0.0, 0.1, f32::MAX, f32::MIN_POSITIVE] {
            let mut s = String::new();
            write_f32(&mut s, v);
            let Json::Num(back, _) = parse(s.as_bytes()).unwrap() else {
                panic!()
            };
            assert_eq!((back as f32).to_bits(), v.to_bits(), "{s}");
        }
    }
}
