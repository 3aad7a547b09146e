//! Protocol Buffers' text format, as TF Serving reads its
//! `--model_config_file`, `--batching_parameters_file` and
//! `--monitoring_config_file`: `name: value`, `name { ... }` (or `name: {`,
//! `<...>`), `[a, b]` lists, `'single'` / `"double"` quoted strings with C
//! escapes, `#` comments, optional `,` / `;` separators. The parse is
//! schema-free; `config.rs` maps the fields and rejects unknown ones.

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number, identifier (enum, `true`) or string, as text.
    Scalar {
        /// The text (strings unescaped).
        text: String,
        /// Whether it was quoted.
        quoted: bool,
    },
    /// A nested message.
    Msg(Vec<Field>),
}

/// One `name: value` of a message, with its line for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// Its value.
    pub value: Value,
    /// 1-based line.
    pub line: usize,
}

/// Parses a whole message; errors name the line.
pub fn parse(text: &str) -> Result<Vec<Field>, String> {
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
        line: 1,
    };
    let fields = p.fields(None, 0)?;
    Ok(fields)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

const MAX_DEPTH: usize = 64;

impl P<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("line {}: {msg}", self.line)
    }

    fn skip(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'#' => {
                    while let Some(&c) = self.s.get(self.i) {
                        if c == b'\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.i).copied()
    }

    fn ident(&mut self) -> Option<String> {
        self.skip();
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-' || c == b'+' {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn fields(&mut self, close: Option<u8>, depth: usize) -> Result<Vec<Field>, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("messages nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return match close {
                        None => Ok(out),
                        Some(c) => Err(self.err(format!("expected '{}' before the end", c as char))),
                    };
                }
                Some(c) if Some(c) == close => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b',' | b';') => self.i += 1,
                Some(_) => {
                    let line = self.line;
                    let name = self.ident().ok_or_else(|| self.err("expected a field name"))?;
                    let colon = self.peek() == Some(b':');
                    if colon {
                        self.i += 1;
                    }
                    match self.peek() {
                        Some(b'[') => {
                            self.i += 1;
                            loop {
                                match self.peek() {
                                    Some(b']') => {
                                        self.i += 1;
                                        break;
                                    }
                                    Some(b',') => self.i += 1,
                                    _ => {
                                        let value = self.value(depth)?;
                                        out.push(Field {
                                            name: name.clone(),
                                            value,
                                            line,
                                        });
                                    }
                                }
                            }
                        }
                        Some(b'{' | b'<') => {
                            let value = self.value(depth)?;
                            out.push(Field { name, value, line });
                        }
                        _ if colon => {
                            let value = self.value(depth)?;
                            out.push(Field { name, value, line });
                        }
                        _ => return Err(self.err(format!("expected ':' or '{{' after '{name}'"))),
                    }
                }
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                Ok(Value::Msg(self.fields(Some(b'}'), depth + 1)?))
            }
            Some(b'<') => {
                self.i += 1;
                Ok(Value::Msg(self.fields(Some(b'>'), depth + 1)?))
            }
            Some(b'"' | b'\'') => {
                // Adjacent literals concatenate.
                let mut text = Vec::new();
                while let Some(q @ (b'"' | b'\'')) = self.peek() {
                    self.i += 1;
                    loop {
                        let c = *self.s.get(self.i).ok_or_else(|| self.err("unterminated string"))?;
                        self.i += 1;
                        match c {
                            b'\n' => return Err(self.err("unterminated string")),
                            c if c == q => break,
                            b'\\' => {
                                let e = *self.s.get(self.i).ok_or_else(|| self.err("unterminated string"))?;
                                self.i += 1;
                                text.push(match e {
                                    b'n' => b'\n',
                                    b't' => b'\t',
                                    b'r' => b'\r',
                                    b'0'..=b'7' => {
                                        let mut v = (e - b'0') as u32;
                                        for _ in 0..2 {
                                            match self.s.get(self.i) {
                                                Some(&d @ b'0'..=b'7') => {
                                                    v = v * 8 + (d - b'0') as u32;
                                                    self.i += 1;
                                                }
                                                _ => break,
                                            }
                                        }
                                        (v & 0xff) as u8
                                    }
                                    other => other,
                                });
                            }
                            c => text.push(c),
                        }
                    }
                }
                let text = String::from_utf8(text).map_err(|_| self.err("a string that is not UTF-8"))?;
                Ok(Value::Scalar { text, quoted: true })
            }
            _ => {
                let text = self.ident().ok_or_else(|| self.err("expected a value"))?;
                Ok(Value::Scalar { text, quoted: false })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_list() {
        let f = parse(
            r#"model_config_list {
  config {
    name: 'half' # comment
    base_path: "/m/h"
    model_version_policy: { specific { versions: 1, versions: [2, 3] } }
    version_labels { key: 'stable' value: 1 }
  }
}"#,
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        let Value::Msg(list) = &f[0].value else { panic!() };
        let Value::Msg(cfg) = &list[0].value else { panic!() };
        assert_eq!(
            cfg[0].value,
            Value::Scalar {
                text: "half".into(),
                quoted: true
            }
        );
        let Value::Msg(pol) = &cfg[2].value else { panic!() };
        let Value::Msg(spec) = &pol[0].value else { panic!() };
        assert_eq!(spec.len(), 3);
        assert!(parse("a {").is_err());
        assert!(parse("a: 'x").is_err());
        assert!(parse(&"a {".repeat(1000)).is_err());
    }
}
