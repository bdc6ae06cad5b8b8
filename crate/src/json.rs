//! A flat JSON object — strings, numbers, booleans, null — written and read back, for the run logs'
//! `run.json` (no nesting is needed, so no JSON library either).

use crate::error::{Error, Result};

/// One value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(x) => Some(*x),
            _ => None,
        }
    }

    /// The value as text (strings without quotes; null as the empty string).
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Num(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        if x.is_finite() { Value::Num(x) } else { Value::Null }
    }
}
impl From<usize> for Value {
    fn from(x: usize) -> Self {
        Value::Num(x as f64)
    }
}
impl From<u64> for Value {
    fn from(x: u64) -> Self {
        Value::Num(x as f64)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `{"key": value, …}`, one pair per line.
pub fn write_object(pairs: &[(String, Value)]) -> String {
    let mut out = String::from("{\n");
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push_str("  ");
        quote(&mut out, k);
        out.push_str(": ");
        match v {
            Value::Str(s) => quote(&mut out, s),
            Value::Num(x) => out.push_str(&x.to_string()),
            Value::Bool(b) => out.push_str(&b.to_string()),
            Value::Null => out.push_str("null"),
        }
        out.push_str(if i + 1 < pairs.len() { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    out
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses a flat object as [`write_object`] writes it (any JSON whitespace; no nesting).
pub fn parse_object(text: &str) -> Result<Vec<(String, Value)>> {
    let bad = |what: &str| Error::InvalidArgument(format!("run.json: {what}; the file is damaged — delete the run's folder"));
    let mut p = Parser { s: text.as_bytes(), at: 0 };
    p.ws();
    p.eat(b'{').ok_or_else(|| bad("expected `{`"))?;
    let mut pairs = Vec::new();
    p.ws();
    if p.eat(b'}').is_some() {
        return Ok(pairs);
    }
    loop {
        p.ws();
        let key = p.string().ok_or_else(|| bad("expected a key"))?;
        p.ws();
        p.eat(b':').ok_or_else(|| bad("expected `:`"))?;
        p.ws();
        let value = p.value().ok_or_else(|| bad(&format!("bad value for `{key}`")))?;
        pairs.push((key, value));
        p.ws();
        if p.eat(b',').is_some() {
            continue;
        }
        p.eat(b'}').ok_or_else(|| bad("expected `,` or `}`"))?;
        return Ok(pairs);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        let rest = std::str::from_utf8(&self.s[self.at..]).ok()?;
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Some(out);
                }
                '\\' => match chars.next()?.1 {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
        None
    }

    fn value(&mut self) -> Option<Value> {
        match self.s.get(self.at)? {
            b'"' => self.string().map(Value::Str),
            b'n' => self.word("null", Value::Null),
            b't' => self.word("true", Value::Bool(true)),
            b'f' => self.word("false", Value::Bool(false)),
            _ => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(|c| b"+-.eE0123456789".contains(c)) {
                    self.at += 1;
                }
                std::str::from_utf8(&self.s[start..self.at]).ok()?.parse().ok().map(Value::Num)
            }
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Option<Value> {
        self.s[self.at..].starts_with(w.as_bytes()).then(|| {
            self.at += w.len();
            v
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs: Vec<(String, Value)> = vec![
            ("network".into(), "(Flatten<784>, Linear<784, 10>)".into()),
            ("quote \"and\" \\ \n".into(), "é\u{1}".into()),
            ("lr".into(), 1e-3.into()),
            ("n".into(), 60000usize.into()),
            ("shuffle".into(), true.into()),
            ("val".into(), Value::Null),
            ("nan".into(), f64::NAN.into()),
        ];
        let text = write_object(&pairs);
        let back = parse_object(&text).unwrap();
        assert_eq!(back.len(), pairs.len());
        assert_eq!(back[..6], pairs[..6]);
        assert_eq!(back[6].1, Value::Null);
        assert_eq!(parse_object("{}").unwrap(), vec![]);
        for bad in ["", "{", "{\"a\" 1}", "{\"a\": }", "[1]", "{\"a\": 1,}"] {
            assert!(parse_object(bad).is_err(), "{bad}");
        }
    }
}
