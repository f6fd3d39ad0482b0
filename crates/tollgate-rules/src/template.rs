//! Tyk's value templates: `$tyk_meta.<field>` (the key's `meta_data`), `$tyk_context.<name>`
//! (the request's context variables) and, in URL rewrites, `$1`… (the match's groups).
//!
//! A template is split into pieces once at load; rendering appends literal text and looked-up
//! values to one buffer. Values are substituted in a single pass, so a value that itself
//! contains `$tyk_meta.x` or `$1` is copied as text, never expanded again (Tyk replaces each
//! kind in turn, so a header value a client sends can pull in a key's metadata).
//!
//! A variable with no value renders as nothing, as in Tyk. The `$secret_*` stores (env,
//! conf, Vault, Consul) are refused at load: Tollgate has none of them, and sending an empty
//! secret upstream would be a silent change of what the upstream receives.

use std::fmt::Write as _;

use crate::RuleError;

/// Where a template's variables are looked up, for one request.
pub trait Vars {
    /// Appends the key's `meta_data.<key>` to `out` (nothing when absent or keyless).
    fn meta(&self, key: &str, out: &mut String);
    /// Appends the context variable `key` to `out` (nothing when unknown or when the API
    /// does not enable context variables).
    fn context(&self, key: &str, out: &mut String);
    /// Appends the URL rewrite match's group `n` to `out` (nothing outside rewrites).
    fn group(&self, _n: usize, _out: &mut String) {}
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Meta(Box<str>),
    Context(Box<str>),
    Group(usize),
}

/// A compiled value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Box<[Piece]>,
}

const META: &str = "$tyk_meta.";
const CONTEXT: &str = "$tyk_context.";
const SECRETS: [&str; 4] = [
    "$secret_env.",
    "$secret_conf.",
    "$secret_vault.",
    "$secret_consul.",
];

/// Tyk's variable name characters (`[A-Za-z0-9_\-.]+`).
fn name_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .unwrap_or(s.len())
}

impl Template {
    /// Splits `source` into text and variables; `groups` also reads `$1`… (URL rewrites).
    ///
    /// # Errors
    /// A `$secret_*` variable, which Tollgate cannot resolve.
    pub fn compile(field: &str, source: &str, groups: bool) -> Result<Self, RuleError> {
        if let Some(label) = SECRETS.iter().find(|l| source.contains(*l)) {
            return Err(RuleError::new(
                field,
                format!("`{label}…` variables (secret stores) are not supported yet"),
            ));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let tail = &rest[at..];
            let var = if let Some(after) = tail.strip_prefix(META) {
                let n = name_len(after);
                (n > 0).then(|| (Piece::Meta(after[..n].into()), META.len() + n))
            } else if let Some(after) = tail.strip_prefix(CONTEXT) {
                let n = name_len(after);
                (n > 0).then(|| (Piece::Context(after[..n].into()), CONTEXT.len() + n))
            } else if groups {
                let digits = tail[1..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(tail.len() - 1);
                tail[1..=digits]
                    .parse()
                    .ok()
                    .map(|n| (Piece::Group(n), 1 + digits))
            } else {
                None
            };
            match var {
                Some((piece, len)) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text).into()));
                    }
                    pieces.push(piece);
                    rest = &tail[len..];
                }
                None => {
                    text.push('$');
                    rest = &tail[1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into()));
        }
        Ok(Self {
            pieces: pieces.into_boxed_slice(),
        })
    }

    /// The text when the template has no variable.
    pub fn literal(&self) -> Option<&str> {
        match &*self.pieces {
            [] => Some(""),
            [Piece::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// True when the text before the first variable holds a whole URL authority: a
    /// `scheme://` followed by a host that ends (at `/`, `?` or `#`) before any variable.
    pub fn literal_authority(&self) -> bool {
        let (first, more) = match &*self.pieces {
            [Piece::Text(t), rest @ ..] => (t, !rest.is_empty()),
            _ => return false,
        };
        let Some((_, after)) = first.split_once("://") else {
            return false;
        };
        !more || after.contains(['/', '?', '#'])
    }

    /// True when it reads a context variable.
    pub fn uses_context(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Context(_)))
    }

    /// Appends the rendered value to `out`.
    pub fn render_into(&self, vars: &dyn Vars, out: &mut String) {
        for piece in &*self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Meta(k) => vars.meta(k, out),
                Piece::Context(k) => vars.context(k, out),
                Piece::Group(n) => vars.group(*n, out),
            }
        }
    }

    /// The rendered value.
    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::new();
        self.render_into(vars, &mut out);
        out
    }
}

/// Appends a JSON value as Tyk prints a variable: strings as they are, numbers in their
/// shortest form, lists joined with `,`; anything else (objects, null) as nothing.
pub fn push_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => out.push_str(s),
        serde_json::Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        serde_json::Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        serde_json::Value::Array(items) => {
            let mut first = true;
            for item in items {
                let start = out.len();
                if !first {
                    out.push(',');
                }
                let before = out.len();
                push_json(item, out);
                if out.len() == before {
                    out.truncate(start);
                } else {
                    first = false;
                }
            }
        }
        serde_json::Value::Null | serde_json::Value::Object(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Vars for Fixed {
        fn meta(&self, key: &str, out: &mut String) {
            if key == "user" {
                out.push_str("alice$tyk_meta.secret$1");
            }
        }
        fn context(&self, key: &str, out: &mut String) {
            if key == "remote_addr" {
                out.push_str("10.0.0.1");
            }
        }
        fn group(&self, n: usize, out: &mut String) {
            if n == 1 {
                out.push_str("books");
            }
        }
    }

    fn render(src: &str, groups: bool) -> String {
        Template::compile("f", src, groups).unwrap().render(&Fixed)
    }

    #[test]
    fn variables_render_once() {
        assert_eq!(
            render("id=$tyk_meta.user", false),
            "id=alice$tyk_meta.secret$1"
        );
        assert_eq!(render("$tyk_context.remote_addr,x", false), "10.0.0.1,x");
        assert_eq!(render("$tyk_meta.missing!", false), "!");
        assert_eq!(render("/lib/$1/$2?$", true), "/lib/books/?$");
        assert_eq!(render("cost $5", false), "cost $5");
        assert_eq!(render("$tyk_meta.", false), "$tyk_meta.");
        let t = Template::compile("f", "plain", false).unwrap();
        assert_eq!(t.literal(), Some("plain"));
        assert!(!t.uses_context());
        assert!(
            Template::compile("f", "a$tyk_context.path", false)
                .unwrap()
                .uses_context()
        );
    }

    #[test]
    fn secret_stores_are_refused() {
        let err = Template::compile("x.add_headers.k", "$secret_env.TOKEN", false).unwrap_err();
        assert_eq!(err.field, "x.add_headers.k");
    }

    #[test]
    fn json_values_print_as_tyk() {
        let mut s = String::new();
        push_json(&serde_json::json!(["a", null, 2, "b"]), &mut s);
        assert_eq!(s, "a,2,b");
        s.clear();
        push_json(&serde_json::json!(1.5), &mut s);
        assert_eq!(s, "1.5");
    }
}
