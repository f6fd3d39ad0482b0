//! Tyk's URL rewrites (`extended_paths.url_rewrites`): for an endpoint, `match_pattern` is
//! tested against the request's path and query as the upstream would receive them (after the
//! listen path when it is stripped); when it matches, the path and query become `rewrite_to`
//! with `$1`… replaced by the match's groups and `$tyk_meta` / `$tyk_context` values
//! substituted (those URL-escaped, as Tyk does).
//!
//! Triggers choose another `rewrite_to`: each tests the request's headers, query values, path
//! segments, the key's metadata or context variables against regexes, `on: any` (one match
//! is enough) or `all` (every kind must match); the first trigger that fires wins, as in
//! current Tyk. What a trigger matched is available to its `rewrite_to` as
//! `$tyk_context.trigger-<n>-<name>-<i>` (and `-<i>-<group>`), as in Tyk.
//!
//! A rewrite may change the host only when `rewrite_to` itself starts with `http://` and
//! spells the host out: no variable can pick where the request goes (a client header
//! substituted into the host would make the gateway a proxy to anywhere).

use std::fmt::Write as _;

use http::HeaderMap;
use regex::Regex;

use crate::RuleError;
use crate::percent::{Plus, decode};
use crate::template::{Template, Vars};

/// A regex test of one value (Tyk's `StringRegexMap`).
#[derive(Debug, Clone)]
pub struct Matcher {
    rx: Regex,
    reverse: bool,
}

impl Matcher {
    /// `match_rx`, inverted when `reverse`.
    ///
    /// # Errors
    /// An invalid regex.
    pub fn compile(field: &str, match_rx: &str, reverse: bool) -> Result<Self, RuleError> {
        let rx = compile_regex(&format!("{field}.match_rx"), match_rx)?;
        Ok(Self { rx, reverse })
    }

    /// The full match and its groups (empty for a reversed matcher), when it matches.
    fn test<'v>(&self, value: &'v str) -> Option<Vec<&'v str>> {
        match (self.rx.captures(value), self.reverse) {
            (Some(c), false) => Some(c.iter().map(|m| m.map_or("", |m| m.as_str())).collect()),
            (None, true) => Some(Vec::new()),
            _ => None,
        }
    }
}

fn compile_regex(field: &str, source: &str) -> Result<Regex, RuleError> {
    regex::RegexBuilder::new(source)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| RuleError::new(field, format!("`{source}` is not a valid pattern: {e}")))
}

/// What one trigger tests.
#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    /// Header name → matcher (every value of the header is tested).
    pub headers: Vec<(http::HeaderName, Matcher)>,
    /// Query parameter → matcher (every value, decoded).
    pub query: Vec<(String, Matcher)>,
    /// Name → matcher tested against every path segment.
    pub path_parts: Vec<(String, Matcher)>,
    /// Key `meta_data` field → matcher (string values only).
    pub session_meta: Vec<(String, Matcher)>,
    /// Context variable → matcher.
    pub context: Vec<(String, Matcher)>,
}

impl TriggerOptions {
    fn kinds(&self) -> usize {
        [
            self.headers.is_empty(),
            self.query.is_empty(),
            self.path_parts.is_empty(),
            self.session_meta.is_empty(),
            self.context.is_empty(),
        ]
        .iter()
        .filter(|empty| !**empty)
        .count()
    }
}

/// One entry of `triggers`.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `on: any` (else `all`).
    pub any: bool,
    /// The tests.
    pub options: TriggerOptions,
    /// The rewrite when it fires.
    pub rewrite_to: Target,
}

/// A compiled `rewrite_to`.
#[derive(Debug, Clone)]
pub struct Target {
    template: Template,
    /// The template starts with `http://` or `https://`: the host may change.
    absolute: bool,
    /// It starts with `https://`.
    https: bool,
}

impl Target {
    /// Compiles `rewrite_to`.
    ///
    /// # Errors
    /// `tyk://` (looping to another API), not supported yet; a URL whose host is not written
    /// out; a `$secret_*` variable.
    pub fn compile(field: &str, source: &str) -> Result<Self, RuleError> {
        let lower = source.trim_start().to_ascii_lowercase();
        if lower.starts_with("tyk://") {
            return Err(RuleError::new(
                field,
                "looping to another API (`tyk://`) is not supported yet",
            ));
        }
        let template = Template::compile(field, source.trim_start(), true)?;
        let absolute = lower.starts_with("http://") || lower.starts_with("https://");
        if absolute && !template.literal_authority() {
            return Err(RuleError::new(
                field,
                "the host of a rewrite_to URL must be written out: variables there would let \
                 a request choose where it is sent",
            ));
        }
        let https = lower.starts_with("https://");
        Ok(Self {
            template,
            absolute,
            https,
        })
    }
}

/// One compiled `url_rewrites` entry.
#[derive(Debug, Clone)]
pub struct UrlRewrite {
    pattern: Regex,
    rewrite_to: Target,
    triggers: Box<[Trigger]>,
}

/// The request a rewrite reads.
#[derive(Debug, Clone, Copy)]
pub struct RewriteInput<'a> {
    /// Path and query as the upstream would receive them.
    pub path_and_query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The key's `meta_data`, when there is a key.
    pub meta: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A rewrite's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// A new path and query on the same upstream.
    Path(String),
    /// A full `http://` or `https://` URL: another upstream.
    Url(String),
}

impl UrlRewrite {
    /// Whether this entry (its `rewrite_to` or a trigger's) can send requests to another host
    /// over TLS.
    pub fn reaches_https(&self) -> bool {
        self.rewrite_to.https || self.triggers.iter().any(|t| t.rewrite_to.https)
    }

    /// Compiles an entry.
    ///
    /// # Errors
    /// An invalid `match_pattern`.
    pub fn compile(
        field: &str,
        match_pattern: &str,
        rewrite_to: Target,
        triggers: Vec<Trigger>,
    ) -> Result<Self, RuleError> {
        Ok(Self {
            pattern: compile_regex(&format!("{field}.match_pattern"), match_pattern)?,
            rewrite_to,
            triggers: triggers.into_boxed_slice(),
        })
    }

    /// The rewritten path and query (or URL), or `None` when `match_pattern` does not match.
    pub fn apply(&self, input: &RewriteInput<'_>, vars: &dyn Vars) -> Option<Rewritten> {
        let mut captured = Vec::new();
        let mut target = &self.rewrite_to;
        for (n, trigger) in self.triggers.iter().enumerate() {
            let fired = fire(n, trigger, input, vars, &mut captured);
            if fired {
                target = &trigger.rewrite_to;
                break;
            }
        }
        let groups = self.pattern.captures(input.path_and_query)?;
        let vars = RewriteVars {
            base: vars,
            groups: &groups,
            captured: &captured,
        };
        let out = target.template.render(&vars);
        Some(if target.absolute {
            Rewritten::Url(out)
        } else {
            Rewritten::Path(out)
        })
    }
}

/// Runs one trigger; what it matched goes to `captured`.
fn fire(
    n: usize,
    trigger: &Trigger,
    input: &RewriteInput<'_>,
    vars: &dyn Vars,
    captured: &mut Vec<(String, String)>,
) -> bool {
    let o = &trigger.options;
    let mut passed = 0;
    let mut check = |found: usize, wanted: usize| {
        let ok = found > 0 && (trigger.any || found >= wanted);
        if ok {
            passed += 1;
        }
        ok
    };
    let mut record = |name: &str, index: Option<usize>, m: &[&str]| {
        let mut key = format!("trigger-{n}-{name}");
        if let Some(i) = index {
            let _ = write!(key, "-{i}");
        }
        if let Some(full) = m.first() {
            for (g, v) in m.iter().enumerate().skip(1) {
                captured.push((format!("{key}-{}", g - 1), (*v).to_owned()));
            }
            captured.push((key, (*full).to_owned()));
        }
    };
    // `any` stops at the first kind that fires.
    let go_on = |fired: bool| !trigger.any || !fired;
    let mut any_fired = false;
    if !o.headers.is_empty() {
        let mut found = 0;
        for (name, m) in &o.headers {
            let canonical = canonical_header(name.as_str());
            for (i, v) in input.headers.get_all(name).iter().enumerate() {
                if let Some(hit) = v.to_str().ok().and_then(|v| m.test(v)) {
                    record(&canonical, Some(i), &hit);
                    found += 1;
                }
            }
        }
        any_fired |= check(found, o.headers.len());
    }
    if !o.query.is_empty() && go_on(any_fired) {
        let query = input.path_and_query.split_once('?').map_or("", |(_, q)| q);
        let mut found = 0;
        for (name, m) in &o.query {
            let values = query.split('&').filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k, Plus::Space) == name.as_str()).then(|| decode(v, Plus::Space))
            });
            for (i, v) in values.enumerate() {
                if let Some(hit) = m.test(&v) {
                    record(name, Some(i), &hit);
                    found += 1;
                }
            }
        }
        any_fired |= check(found, o.query.len());
    }
    if !o.path_parts.is_empty() && go_on(any_fired) {
        let path = input.path_and_query.split('?').next().unwrap_or("");
        let mut found = 0;
        for (name, m) in &o.path_parts {
            for part in path.split('/') {
                if let Some(hit) = m.test(part) {
                    record(name, Some(found), &hit);
                    found += 1;
                }
            }
        }
        any_fired |= check(found, o.path_parts.len());
    }
    if !o.session_meta.is_empty() && go_on(any_fired) {
        let mut found = 0;
        if let Some(meta) = input.meta {
            for (name, m) in &o.session_meta {
                if let Some(hit) = meta
                    .get(name)
                    .and_then(|v| v.as_str())
                    .and_then(|v| m.test(v))
                {
                    record(name, None, &hit);
                    found += 1;
                }
            }
        }
        any_fired |= check(found, o.session_meta.len());
    }
    if !o.context.is_empty() && go_on(any_fired) {
        let mut found = 0;
        let mut value = String::new();
        for (name, m) in &o.context {
            value.clear();
            vars.context(name, &mut value);
            if value.is_empty() {
                continue;
            }
            if let Some(hit) = m.test(&value) {
                record(name, None, &hit);
                found += 1;
            }
        }
        any_fired |= check(found, o.context.len());
    }
    if trigger.any {
        any_fired
    } else {
        passed == o.kinds()
    }
}

/// Go's canonical form of a header name (`x-api-key` → `X-Api-Key`), which Tyk's capture
/// names use.
fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// Go's `url.QueryEscape` of `s`, appended to `out`.
fn push_query_escaped(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// The variables of a rewrite target: the match's groups, what the triggers captured, and
/// the request's own, URL-escaped unless the value is itself a URL (Tyk's rule).
struct RewriteVars<'a> {
    base: &'a dyn Vars,
    groups: &'a regex::Captures<'a>,
    captured: &'a [(String, String)],
}

impl RewriteVars<'_> {
    fn escaped(&self, out: &mut String, fill: impl FnOnce(&mut String)) {
        let mut raw = String::new();
        fill(&mut raw);
        if raw.starts_with("http") {
            out.push_str(&raw);
        } else {
            push_query_escaped(&raw, out);
        }
    }
}

impl Vars for RewriteVars<'_> {
    fn meta(&self, key: &str, out: &mut String) {
        self.escaped(out, |raw| self.base.meta(key, raw));
    }

    fn context(&self, key: &str, out: &mut String) {
        if let Some((_, v)) = self.captured.iter().find(|(k, _)| k == key) {
            self.escaped(out, |raw| raw.push_str(v));
        } else {
            self.escaped(out, |raw| self.base.context(key, raw));
        }
    }

    fn group(&self, n: usize, out: &mut String) {
        if let Some(m) = self.groups.get(n) {
            out.push_str(m.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    struct NoVars;

    impl Vars for NoVars {
        fn meta(&self, _: &str, _: &mut String) {}
        fn context(&self, key: &str, out: &mut String) {
            if key == "path" {
                out.push_str("/a b");
            }
        }
    }

    fn rule(pattern: &str, to: &str, triggers: Vec<Trigger>) -> UrlRewrite {
        UrlRewrite::compile("r", pattern, Target::compile("r.to", to).unwrap(), triggers).unwrap()
    }

    fn input<'a>(pq: &'a str, headers: &'a HeaderMap) -> RewriteInput<'a> {
        RewriteInput {
            path_and_query: pq,
            headers,
            meta: None,
        }
    }

    #[test]
    fn basic_rewrite_with_groups_as_in_tyks_docs() {
        let h = HeaderMap::new();
        let r = rule(
            r"(\w+)/(\w+)",
            "library/service?value1=$1&value2=$2",
            vec![],
        );
        assert_eq!(
            r.apply(&input("/books/author", &h), &NoVars),
            Some(Rewritten::Path(
                "library/service?value1=books&value2=author".into()
            ))
        );
        assert_eq!(r.apply(&input("/", &h), &NoVars), None);
        let r = rule(
            "^/old/(.*)",
            "http://other:8080/new/$1?p=$tyk_context.path",
            vec![],
        );
        assert_eq!(
            r.apply(&input("/old/x?y=1", &h), &NoVars),
            Some(Rewritten::Url(
                "http://other:8080/new/x?y=1?p=%2Fa+b".into()
            ))
        );
    }

    #[test]
    fn triggers_pick_the_target_and_expose_their_matches() {
        let mut h = HeaderMap::new();
        h.insert("x-beta", HeaderValue::from_static("user-42"));
        let header_trigger = Trigger {
            any: true,
            options: TriggerOptions {
                headers: vec![(
                    http::HeaderName::from_static("x-beta"),
                    Matcher::compile("t", r"user-(\d+)", false).unwrap(),
                )],
                ..TriggerOptions::default()
            },
            rewrite_to: Target::compile("t", "/beta/$tyk_context.trigger-0-X-Beta-0-0").unwrap(),
        };
        let all_trigger = Trigger {
            any: false,
            options: TriggerOptions {
                query: vec![("v".into(), Matcher::compile("t", "^2$", false).unwrap())],
                path_parts: vec![("p".into(), Matcher::compile("t", "^items$", false).unwrap())],
                ..TriggerOptions::default()
            },
            rewrite_to: Target::compile("t", "/v2/$1").unwrap(),
        };
        let r = rule("^/(.*)", "/plain/$1", vec![header_trigger, all_trigger]);
        assert_eq!(
            r.apply(&input("/items?v=2", &h), &NoVars),
            Some(Rewritten::Path("/beta/42".into()))
        );
        let none = HeaderMap::new();
        assert_eq!(
            r.apply(&input("/items?v=2", &none), &NoVars),
            Some(Rewritten::Path("/v2/items?v=2".into()))
        );
        // `all`: the query alone is not enough.
        assert_eq!(
            r.apply(&input("/other?v=2", &none), &NoVars),
            Some(Rewritten::Path("/plain/other?v=2".into()))
        );
        // A reversed matcher fires when the value does not match.
        let reversed = Trigger {
            any: true,
            options: TriggerOptions {
                query: vec![("v".into(), Matcher::compile("t", "^2$", true).unwrap())],
                ..TriggerOptions::default()
            },
            rewrite_to: Target::compile("t", "/not-two").unwrap(),
        };
        let r = rule("^/", "/plain", vec![reversed]);
        assert_eq!(
            r.apply(&input("/?v=3", &none), &NoVars),
            Some(Rewritten::Path("/not-two".into()))
        );
    }

    #[test]
    fn looping_and_variable_hosts_are_refused() {
        assert!(Target::compile("f", "http://$tyk_meta.host/x").is_err());
        assert!(Target::compile("f", "http://a$1:80").is_err());
        assert!(Target::compile("f", "http://a:80/$1").is_ok());
        assert!(Target::compile("f", "http://a:80?q=$1").is_ok());
        assert!(Target::compile("f", "tyk://other/path").is_err());
        assert!(Target::compile("f", "HTTPS://x/").is_ok_and(|t| t.absolute && t.https));
        assert!(Target::compile("f", "https://$1/").is_err());
        assert!(Target::compile("f", "http://x/").is_ok_and(|t| !t.https));
        assert!(Target::compile("f", "$tyk_context.path").is_ok_and(|t| !t.absolute));
    }

    #[test]
    fn helpers_follow_go() {
        assert_eq!(canonical_header("x-api-KEY"), "X-Api-Key");
        let mut s = String::new();
        push_query_escaped("a b/é", &mut s);
        assert_eq!(s, "a+b%2F%C3%A9");
    }
}
