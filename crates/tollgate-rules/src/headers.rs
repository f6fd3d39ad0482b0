//! Header transforms: `global_headers` / `global_headers_remove`, `transform_headers`, and
//! their response counterparts. Each is a list of names to delete and of names to set
//! (overwriting any value already there), deletes first, as Tyk applies them.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::RuleError;
use crate::endpoints::{detach_name, detach_value};
use crate::template::{Template, Vars};

#[derive(Debug, Clone)]
enum Value {
    /// No variable: made once at load.
    Fixed(HeaderValue),
    Template(Template),
}

/// One edit recorded for later (response headers are rendered while the request is at hand
/// and applied when the upstream answers): `None` deletes the name.
pub type HeaderEdit = (HeaderName, Option<HeaderValue>);

/// Applies recorded edits in order.
pub fn apply_edits(edits: &[HeaderEdit], headers: &mut HeaderMap) {
    for (n, v) in edits {
        match v {
            Some(v) => {
                headers.insert(n.clone(), v.clone());
            }
            None => {
                headers.remove(n);
            }
        }
    }
}

/// One set of header edits.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, Value)]>,
}

fn name(field: &str, raw: &str) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(raw.trim().as_bytes())
        .map_err(|_| RuleError::new(field, format!("`{raw}` is not a valid header name")))
}

impl HeaderOps {
    /// Compiles the names in `remove` and the `(name, template)` pairs in `set`; `field`
    /// names the rule for errors (`{field}.{remove_key}[i]`, `{field}.{set_key}.{name}`).
    ///
    /// `Host` is left out of both: the upstream's Host comes from the target (or the client,
    /// with `preserve_host_header`), and Tyk's transforms do not change it either.
    ///
    /// # Errors
    /// An invalid header name or literal value, or a `$secret_*` variable.
    pub fn compile<'a>(
        field: &str,
        (remove_key, remove): (&str, impl IntoIterator<Item = &'a str>),
        (set_key, set): (&str, impl IntoIterator<Item = (&'a str, &'a str)>),
    ) -> Result<Self, RuleError> {
        let mut removes = Vec::new();
        for (i, raw) in remove.into_iter().enumerate() {
            let n = name(&format!("{field}.{remove_key}[{i}]"), raw)?;
            if n != header::HOST {
                removes.push(n);
            }
        }
        let mut sets = Vec::new();
        for (raw_name, raw_value) in set {
            let at = format!("{field}.{set_key}.{raw_name}");
            let n = name(&at, raw_name)?;
            if n == header::HOST {
                continue;
            }
            let template = Template::compile(&at, raw_value, false)?;
            let value = match template.literal() {
                Some(text) => Value::Fixed(HeaderValue::from_str(text).map_err(|_| {
                    RuleError::new(&at, "is not a valid header value (control characters)")
                })?),
                None => Value::Template(template),
            };
            sets.push((n, value));
        }
        Ok(Self {
            remove: removes.into_boxed_slice(),
            set: sets.into_boxed_slice(),
        })
    }

    /// A copy that shares no buffer with `self`, for one thread.
    pub fn detached(&self) -> Self {
        Self {
            remove: self.remove.iter().map(detach_name).collect(),
            set: self
                .set
                .iter()
                .map(|(n, v)| {
                    let v = match v {
                        Value::Fixed(h) => Value::Fixed(detach_value(h)),
                        Value::Template(t) => Value::Template(t.clone()),
                    };
                    (detach_name(n), v)
                })
                .collect(),
        }
    }

    /// True when it edits nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// True when `name` is deleted (and not set again).
    pub fn removes(&self, name: &HeaderName) -> bool {
        self.remove.contains(name) && !self.set.iter().any(|(n, _)| n == name)
    }

    /// True when a value reads a context variable.
    pub fn uses_context(&self) -> bool {
        self.set
            .iter()
            .any(|(_, v)| matches!(v, Value::Template(t) if t.uses_context()))
    }

    /// Records the edits, rendered now, for [`apply_edits`] later.
    pub fn record(&self, vars: &dyn Vars, out: &mut Vec<HeaderEdit>) {
        out.extend(self.remove.iter().map(|n| (n.clone(), None)));
        let mut buf = String::new();
        for (n, v) in &*self.set {
            let value = match v {
                Value::Fixed(h) => Some(h.clone()),
                Value::Template(t) => {
                    buf.clear();
                    t.render_into(vars, &mut buf);
                    HeaderValue::from_str(&buf).ok()
                }
            };
            out.push((n.clone(), value));
        }
    }

    /// Applies the edits: deletes, then sets. A rendered value that is not a valid header
    /// value (a key's metadata with a line break) is not sent at all rather than sent cut.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &dyn Vars) {
        for n in &*self.remove {
            headers.remove(n);
        }
        let mut buf = String::new();
        for (n, v) in &*self.set {
            let value = match v {
                Value::Fixed(h) => h.clone(),
                Value::Template(t) => {
                    buf.clear();
                    t.render_into(vars, &mut buf);
                    match HeaderValue::from_str(&buf) {
                        Ok(h) => h,
                        Err(_) => {
                            headers.remove(n);
                            continue;
                        }
                    }
                }
            };
            headers.insert(n.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Meta;

    impl Vars for Meta {
        fn meta(&self, key: &str, out: &mut String) {
            match key {
                "org" => out.push_str("acme"),
                "evil" => out.push_str("a\r\nx-injected: 1"),
                _ => {}
            }
        }
        fn context(&self, _: &str, _: &mut String) {}
    }

    #[test]
    fn deletes_then_sets_and_skips_host() {
        let ops = HeaderOps::compile(
            "v.global",
            ("remove", ["X-Drop", "host"]),
            (
                "add",
                [
                    ("x-org", "org=$tyk_meta.org"),
                    ("X-Fixed", "1"),
                    ("x-evil", "$tyk_meta.evil"),
                    ("host", "elsewhere"),
                ],
            ),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("a"));
        h.insert("x-fixed", HeaderValue::from_static("old"));
        h.insert("x-evil", HeaderValue::from_static("old"));
        h.insert("host", HeaderValue::from_static("client"));
        ops.apply(&mut h, &Meta);
        assert!(h.get("x-drop").is_none());
        assert_eq!(h["x-org"], "org=acme");
        assert_eq!(h["x-fixed"], "1");
        assert!(h.get("x-evil").is_none() && h.get("x-injected").is_none());
        assert_eq!(h["host"], "client");
        assert!(ops.removes(&HeaderName::from_static("x-drop")));
        assert!(!ops.removes(&HeaderName::from_static("x-fixed")));
    }

    #[test]
    fn bad_names_and_values_name_the_field() {
        let err = HeaderOps::compile(
            "v",
            ("delete_headers", ["ok", "bad name"]),
            ("add_headers", []),
        )
        .unwrap_err();
        assert_eq!(err.field, "v.delete_headers[1]");
        let err = HeaderOps::compile("v", ("d", []), ("add_headers", [("x", "a\nb")])).unwrap_err();
        assert_eq!(err.field, "v.add_headers.x");
    }
}
