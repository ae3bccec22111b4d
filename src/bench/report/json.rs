//! The report's JSON, both ways: a minimal writer ([`Json`]: objects, numbers, strings,
//! lists, latency percentiles, number pairs) and a minimal reader ([`parse`] into a
//! [`Value`]) for the subcommands that read reports back (`plot`, `compare`). Written
//! by hand: the report's shape is small and fixed, and one module owning both sides
//! keeps them in step (see the round-trip test).

use std::fmt::Write as _;

use super::Latency;

/// Builds one JSON text in `out`.
#[derive(Default)]
pub(crate) struct Json {
    pub(crate) out: String,
    /// Whether the current object already has a member (a comma is due).
    comma: Vec<bool>,
}

impl Json {
    pub(crate) fn open(&mut self) {
        self.out.push('{');
        self.comma.push(false);
    }
    pub(crate) fn close(&mut self) {
        self.out.push('}');
        self.comma.pop();
    }
    pub(crate) fn key(&mut self, k: &str) {
        if let Some(c) = self.comma.last_mut() {
            if *c {
                self.out.push(',');
            }
            *c = true;
        }
        self.string(k);
        self.out.push(':');
    }
    pub(crate) fn raw(&mut self, v: &str) {
        self.out.push_str(v);
    }
    pub(crate) fn null(&mut self) {
        self.out.push_str("null");
    }
    pub(crate) fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        self.number(v);
    }
    fn number(&mut self, v: f64) {
        if !v.is_finite() {
            self.null();
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = write!(self.out, "{}", v as i64);
        } else {
            let _ = write!(self.out, "{v:.6}");
        }
    }
    pub(crate) fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.null();
            }
        }
    }
    /// Percentiles as an object, or `null`.
    pub(crate) fn latency(&mut self, l: Option<&Latency>) {
        let Some(l) = l else {
            self.null();
            return;
        };
        self.open();
        self.num("count", l.count as f64);
        self.num("mean", l.mean_us);
        self.num("p50", l.p50_us as f64);
        self.num("p90", l.p90_us as f64);
        self.num("p99", l.p99_us as f64);
        self.num("p99.9", l.p999_us as f64);
        self.num("max", l.max_us as f64);
        self.close();
    }
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.string(v);
    }
    /// A list of `[a, b]` number pairs.
    pub(crate) fn pairs(&mut self, items: &[(f64, f64)]) {
        self.out.push('[');
        for (i, &(a, b)) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push('[');
            self.number(a);
            self.out.push(',');
            self.number(b);
            self.out.push(']');
        }
        self.out.push(']');
    }
    /// A list of numbers.
    pub(crate) fn numbers(&mut self, items: &[f64]) {
        self.out.push('[');
        for (i, &v) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.number(v);
        }
        self.out.push(']');
    }
    pub(crate) fn list(&mut self, items: &[String]) {
        self.out.push('[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.string(s);
        }
        self.out.push(']');
    }
    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// A parsed JSON value. Objects keep their members in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Value>),
    /// An object.
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// Member `key` of an object (`None` for a missing key or a non-object).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn num(&self) -> Option<f64> {
        match self {
            Value::Num(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn arr(&self) -> Option<&[Value]> {
        match self {
            Value::Arr(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn members(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Obj(members) => Some(members),
            _ => None,
        }
    }
}

/// Deepest nesting the reader follows: a report nests four deep; this only stops a
/// hostile file from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Parses one JSON text (RFC 8259; surrounding white space allowed). The error says
/// what was expected and at which byte.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut r = Reader {
        s: text.as_bytes(),
        at: 0,
    };
    let v = r.value(0)?;
    r.ws();
    if r.at != r.s.len() {
        return Err(r.error("end of input"));
    }
    Ok(v)
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, expected: &str) -> String {
        format!("expected {expected} at byte {}", self.at)
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value, String> {
        if self.s[self.at..].starts_with(w.as_bytes()) {
            self.at += w.len();
            Ok(v)
        } else {
            Err(self.error("a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("less nesting"));
        }
        self.ws();
        match self.s.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Ok(Value::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if !self.eat(b':') {
                        return Err(self.error("`:`"));
                    }
                    members.push((k, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Ok(Value::Obj(members));
                    }
                    if !self.eat(b',') {
                        return Err(self.error("`,` or `}`"));
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Value::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Value::Arr(items));
                    }
                    if !self.eat(b',') {
                        return Err(self.error("`,` or `]`"));
                    }
                }
            }
            Some(b'"') => self.string().map(Value::Str),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a value")),
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.s[start..self.at])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .map(Value::Num)
            .ok_or_else(|| format!("bad number at byte {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.at) != Some(&b'"') {
            return Err(self.error("a string"));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.at) else {
                return Err(self.error("the string's closing `\"`"));
            };
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return Err(self.error("an escape"));
                    };
                    self.at += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.at..self.at + 4);
                            let code = hex
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.error("four hex digits"))?;
                            self.at += 4;
                            // Surrogate pairs are not needed for reports: replaced.
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(self.error("a valid escape")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("UTF-8 in the string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nests() {
        let mut j = Json::default();
        j.open();
        j.str("a", "x\"y\n");
        j.num("n", 2.0);
        j.num("f", 0.5);
        j.key("o");
        j.open();
        j.opt("none", None);
        j.close();
        j.key("l");
        j.list(&["p".into(), "q".into()]);
        j.close();
        assert_eq!(
            j.out,
            r#"{"a":"x\"y\n","n":2,"f":0.500000,"o":{"none":null},"l":["p","q"]}"#
        );
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let mut j = Json::default();
        j.open();
        j.str("s", "tab\there \"q\" \\ é \u{1}");
        j.num("i", -3.0);
        j.num("f", 1.25);
        j.key("p");
        j.pairs(&[(50.0, 0.5), (99.9, 12.125)]);
        j.key("v");
        j.numbers(&[1.0, 2.5]);
        j.key("o");
        j.open();
        j.key("t");
        j.raw("true");
        j.opt("n", None);
        j.close();
        j.key("l");
        j.list(&["x".into()]);
        j.close();
        let v = parse(&j.out).unwrap();
        assert_eq!(
            v.get("s").and_then(Value::str),
            Some("tab\there \"q\" \\ é \u{1}")
        );
        assert_eq!(v.get("i").and_then(Value::num), Some(-3.0));
        assert_eq!(v.get("f").and_then(Value::num), Some(1.25));
        let p = v.get("p").and_then(Value::arr).unwrap();
        assert_eq!(p[1], Value::Arr(vec![Value::Num(99.9), Value::Num(12.125)]));
        assert_eq!(v.get("v").and_then(Value::arr).map(<[Value]>::len), Some(2));
        let o = v.get("o").unwrap();
        assert_eq!(o.get("t"), Some(&Value::Bool(true)));
        assert_eq!(o.get("n"), Some(&Value::Null));
        assert_eq!(v.get("l"), Some(&Value::Arr(vec![Value::Str("x".into())])));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn the_reader_says_where_a_text_is_broken() {
        assert!(parse("{\"a\":1,}").unwrap_err().contains("byte 7"));
        assert!(parse("[1 2]").is_err());
        assert!(parse("{\"a\":1} x").unwrap_err().contains("end of input"));
        assert!(parse("\"open").is_err());
        assert!(parse(&"[".repeat(100)).unwrap_err().contains("nesting"));
        assert_eq!(parse(" [] ").unwrap(), Value::Arr(vec![]));
        assert_eq!(parse("\"\\u00e9\"").unwrap(), Value::Str("é".into()));
    }
}
