//! A minimal JSON writer for the report: objects, numbers, strings, lists of strings
//! and latency percentiles. Written by hand: the report's shape is small and fixed.

use std::fmt::Write as _;

use super::Latency;

/// Builds one JSON text in `out`.
#[derive(Default)]
pub(super) struct Json {
    pub(super) out: String,
    /// Whether the current object already has a member (a comma is due).
    comma: Vec<bool>,
}

impl Json {
    pub(super) fn open(&mut self) {
        self.out.push('{');
        self.comma.push(false);
    }
    pub(super) fn close(&mut self) {
        self.out.push('}');
        self.comma.pop();
    }
    pub(super) fn key(&mut self, k: &str) {
        if let Some(c) = self.comma.last_mut() {
            if *c {
                self.out.push(',');
            }
            *c = true;
        }
        self.string(k);
        self.out.push(':');
    }
    pub(super) fn raw(&mut self, v: &str) {
        self.out.push_str(v);
    }
    pub(super) fn null(&mut self) {
        self.out.push_str("null");
    }
    pub(super) fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if !v.is_finite() {
            self.null();
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = write!(self.out, "{}", v as i64);
        } else {
            let _ = write!(self.out, "{v:.6}");
        }
    }
    pub(super) fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.null();
            }
        }
    }
    /// Percentiles as an object, or `null`.
    pub(super) fn latency(&mut self, l: Option<&Latency>) {
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
    pub(super) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.string(v);
    }
    pub(super) fn list(&mut self, items: &[String]) {
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
}
