//! LVM2's metadata text format (the "config tree" syntax of
//! `lib/config/config.c`): `name = value` assignments and `name { ... }`
//! sections, values being quoted strings, integers, or `[ ... ]` arrays of
//! those; `#` starts a comment.
//!
//! Hand-written because no maintained crate parses this format, and the
//! subset LVM writes is small. It is parsed here into a [`Node`] tree with
//! limits on nesting, item count and string length, since the text comes
//! from an untrusted disk.

/// Deepest section nesting accepted (LVM writes 5 levels).
const MAX_DEPTH: usize = 16;
/// Most items (assignments + sections + array elements) in one text.
const MAX_ITEMS: usize = 200_000;

/// A value of an assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string, unescaped.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float (LVM writes none in VG metadata; kept for completeness).
    Float(f64),
    /// An array.
    Array(Vec<Value>),
}

/// A section: its assignments and subsections, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// `name = value` items.
    pub values: Vec<(String, Value)>,
    /// `name { ... }` items.
    pub sections: Vec<(String, Section)>,
}

impl Section {
    /// The value assigned to `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The integer assigned to `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The string assigned to `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The subsection `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, s)| s)
    }
}

/// A syntax error at a byte position of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte position.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

struct Parser<'a> {
    s: &'a [u8],
    p: usize,
    items: usize,
}

/// Parses a whole metadata text.
pub fn parse(text: &[u8]) -> Result<Section, SyntaxError> {
    let mut p = Parser {
        s: text,
        p: 0,
        items: 0,
    };
    let root = p.section_body(0)?;
    p.skip_ws();
    if p.p < p.s.len() {
        return Err(p.err("unexpected '}' at the top level"));
    }
    Ok(root)
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.p, what }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.p).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.p += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.p += 1;
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<(), SyntaxError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.err("too many items"));
        }
        Ok(())
    }

    fn ident(&mut self) -> Result<String, SyntaxError> {
        let start = self.p;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"_.+-/".contains(&c) {
                self.p += 1;
            } else {
                break;
            }
        }
        if start == self.p {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.p]).into_owned())
    }

    /// Items up to a closing '}' (not consumed) or the end of the text.
    fn section_body(&mut self, depth: usize) -> Result<Section, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err("sections nested too deeply"));
        }
        let mut sec = Section::default();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(b'}') => return Ok(sec),
                _ => {}
            }
            self.count()?;
            let name = self.ident()?;
            self.skip_ws();
            match self.peek() {
                Some(b'=') => {
                    self.p += 1;
                    let v = self.value(depth)?;
                    sec.values.push((name, v));
                }
                Some(b'{') => {
                    self.p += 1;
                    let sub = self.section_body(depth + 1)?;
                    if self.peek() != Some(b'}') {
                        return Err(self.err("section not closed"));
                    }
                    self.p += 1;
                    sec.sections.push((name, sub));
                }
                _ => return Err(self.err("expected '=' or '{' after a name")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return Err(self.err("arrays nested too deeply"));
                }
                self.p += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.p += 1;
                            return Ok(Value::Array(items));
                        }
                        Some(b',') => self.p += 1,
                        None => return Err(self.err("array not closed")),
                        _ => {
                            self.count()?;
                            items.push(self.value(depth + 1)?);
                        }
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.p += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("string not closed")),
                Some(b'"') => {
                    self.p += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.p += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err(self.err("string not closed")),
                    }
                    self.p += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.p += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.p;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || c == b'-' || c == b'.' {
                self.p += 1;
            } else {
                break;
            }
        }
        let t = std::str::from_utf8(&self.s[start..self.p]).unwrap_or("");
        if let Ok(i) = t.parse::<i64>() {
            Ok(Value::Int(i))
        } else if let Ok(f) = t.parse::<f64>() {
            Ok(Value::Float(f))
        } else {
            Err(SyntaxError {
                at: start,
                what: "bad number",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_shapes() {
        let t = br#"vg0 {
    id = "abc-def"   # comment
    extent_size = 8192
    status = ["READ", "WRITE"]
    logical_volumes {
        root { segment1 { stripes = [ "pv0", 6 ] } }
    }
}
contents = "Text Format Volume Group"
"#;
        let s = parse(t).unwrap();
        let vg = s.section("vg0").unwrap();
        assert_eq!(vg.str("id"), Some("abc-def"));
        assert_eq!(vg.int("extent_size"), Some(8192));
        let seg = vg
            .section("logical_volumes")
            .and_then(|l| l.section("root"))
            .and_then(|r| r.section("segment1"))
            .unwrap();
        assert_eq!(
            seg.get("stripes"),
            Some(&Value::Array(vec![Value::Str("pv0".into()), Value::Int(6)]))
        );
        assert_eq!(s.str("contents"), Some("Text Format Volume Group"));
    }

    #[test]
    fn hostile_text_is_an_error_not_a_panic() {
        for t in [
            &b"a {"[..],
            b"a = ",
            b"a = [1,",
            b"a = \"x",
            b"}",
            b"= 3",
            b"a = -",
        ] {
            assert!(parse(t).is_err(), "{:?}", String::from_utf8_lossy(t));
        }
        let deep = "a {".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        let deep = format!("a = {}", "[".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
