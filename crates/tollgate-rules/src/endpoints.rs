//! Tyk's endpoint lists: `white_list`, `black_list` and `ignored` (with `method_actions`
//! replies) of a version, compiled once, and the decision for one request.
//!
//! A `path` is a regular expression in Tyk's dialect: `{name}` stands for one segment,
//! `{name:re}` for `re`, `/*` for anything. By default the expression is unanchored and tested
//! against three readings of the request path (after the listen path, that without the version
//! segment, the full path); `enable_path_prefix_matching` / `enable_path_suffix_matching`
//! anchor it (see [`MatchOptions`]).
//!
//! Where Tyk would serve a path more openly than the lists say, Tollgate is stricter:
//! - the black-list is checked first and always wins (Tyk checks `ignored` first, so a path in
//!   both lists skips authentication there);
//! - the black-list ignores case (an upstream that does not must still not be reachable as
//!   `/ADMIN`);
//! - a request is tested in two readings of its path: the gateway's normalised one, and a
//!   *loose* one as a lenient upstream might read it (every escape decoded, `\` as `/`,
//!   `;params` and trailing dots of segments dropped). The black-list blocks when either
//!   reading matches; the white-list and `ignored` open only when both do. A path that cannot
//!   be read loosely at all (escapes that are not UTF-8) is forbidden on an API with a white-
//!   or black-list.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use crate::RuleError;

/// Gateway-wide matching settings (`http_server_options.enable_path_prefix_matching`,
/// `enable_path_suffix_matching`, `ignore_endpoint_case`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchOptions {
    /// Anchor patterns that start with `/` at the start of the path.
    pub prefix: bool,
    /// Anchor patterns at the end of the path.
    pub suffix: bool,
    /// Match every pattern ignoring case.
    pub ignore_case: bool,
}

/// One compiled endpoint pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    regex: Regex,
}

impl PathPattern {
    /// Compiles Tyk's pattern `source`.
    ///
    /// # Errors
    /// An expression that is not a valid regular expression, or an empty one.
    pub fn compile(
        field: &str,
        source: &str,
        ignore_case: bool,
        opts: MatchOptions,
    ) -> Result<Self, RuleError> {
        if source.trim().is_empty() {
            return Err(RuleError::new(field, "must not be empty"));
        }
        let mut pattern = expand_template(source);
        if pattern.contains("/*") {
            pattern = pattern.replace("/*/", "/[^/]+/").replace("/*", "/.*");
        }
        if opts.prefix && pattern.starts_with('/') {
            pattern.insert(0, '^');
        }
        if opts.suffix && !pattern.ends_with('$') {
            pattern.push('$');
        }
        if ignore_case || opts.ignore_case {
            pattern.insert_str(0, "(?i)");
        }
        let regex = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                RuleError::new(field, format!("`{source}` is not a valid pattern: {e}"))
            })?;
        Ok(Self { regex })
    }

    /// True when any reading in `paths` matches.
    pub fn matches(&self, paths: &Candidates<'_>) -> bool {
        paths.iter().any(|p| self.regex.is_match(p))
    }

    /// The capture groups of the first reading that matches (URL rewrites use them).
    pub fn captures<'p>(&self, path: &'p str) -> Option<regex::Captures<'p>> {
        self.regex.captures(path)
    }
}

/// `{name}` → one segment, `{name:re}` → `(re)`; other braces (regex repetitions such as
/// `a{2,3}`) are left alone.
fn expand_template(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 8);
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        let name_ok = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        match after[name_len..].chars().next() {
            Some('}') if name_ok => {
                out.push_str("([^/]+)");
                rest = &after[name_len + 1..];
            }
            Some(':') if name_ok => {
                // The expression runs to the brace that balances the opening one.
                let body = &after[name_len + 1..];
                let mut depth = 0usize;
                let end = body.char_indices().find_map(|(i, c)| match c {
                    '{' => {
                        depth += 1;
                        None
                    }
                    '}' if depth == 0 => Some(i),
                    '}' => {
                        depth -= 1;
                        None
                    }
                    _ => None,
                });
                if let Some(end) = end {
                    out.push('(');
                    out.push_str(&body[..end]);
                    out.push(')');
                    rest = &body[end + 1..];
                } else {
                    out.push('{');
                    rest = after;
                }
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The readings of one request path a pattern is tested against, as in Tyk.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// The path without the listen path.
    pub stripped: &'a str,
    /// That without the version segment (URL versioning only).
    pub unversioned: Option<&'a str>,
    /// The full request path.
    pub full: &'a str,
}

impl<'a> Candidates<'a> {
    /// A path with no listen path or version segment to strip: every candidate is `path`.
    pub fn of(path: &'a str) -> Self {
        Self {
            stripped: path,
            unversioned: None,
            full: path,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a str> {
        self.unversioned
            .into_iter()
            .chain([self.stripped, self.full])
    }
}

/// A canned answer (`method_actions` `reply`, `mock_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mock {
    /// Status (Tyk's default 200).
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// Headers, in the definition's order.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
}

impl Mock {
    /// Compiles a reply; `field` names the entry for errors.
    ///
    /// # Errors
    /// A status outside 100–999 or a header that is not valid HTTP.
    pub fn compile<'h>(
        field: &str,
        code: u16,
        body: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Result<Self, RuleError> {
        let status = if code == 0 {
            StatusCode::OK
        } else {
            StatusCode::from_u16(code)
                .map_err(|_| RuleError::new(field, format!("{code} is not an HTTP status")))?
        };
        let headers = headers
            .into_iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    RuleError::new(field, format!("`{k}` is not a valid header name"))
                })?;
                // The gateway frames the body itself; a canned length or encoding that does
                // not match it would break the client's connection.
                if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                    return Err(RuleError::new(
                        field,
                        format!("`{k}` is set from the body; remove it"),
                    ));
                }
                let value = HeaderValue::from_str(v).map_err(|_| {
                    RuleError::new(
                        field,
                        format!("the value of `{k}` is not a valid header value"),
                    )
                })?;
                Ok((name, value))
            })
            .collect::<Result<_, RuleError>>()?;
        Ok(Self {
            status,
            body: Bytes::copy_from_slice(body.as_bytes()),
            headers,
        })
    }
}

impl Mock {
    /// A copy that shares no buffer with `self` (see [`crate::version::VersionRules::detached`]).
    pub fn detached(&self) -> Self {
        Self {
            status: self.status,
            body: Bytes::copy_from_slice(&self.body),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (detach_name(n), detach_value(v)))
                .collect(),
        }
    }
}

/// A header name that shares no buffer with `n` (standard names are static anyway).
pub(crate) fn detach_name(n: &HeaderName) -> HeaderName {
    HeaderName::from_bytes(n.as_str().as_bytes()).unwrap_or_else(|_| n.clone())
}

/// A header value that shares no buffer with `v`.
pub(crate) fn detach_value(v: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone())
}

/// What one list entry does for one method.
#[derive(Debug, Clone)]
pub enum Action {
    /// The list's own meaning (`no_action`).
    Listed,
    /// Answer with a canned response.
    Reply(Arc<Mock>),
}

/// One entry of a list: a pattern and the methods it applies to.
#[derive(Debug, Clone)]
pub struct Entry {
    pattern: PathPattern,
    methods: Box<[(Method, Action)]>,
}

impl Entry {
    /// An entry for `methods` (`None` = every method: the simple `paths` lists).
    pub fn new(pattern: PathPattern, methods: Option<Vec<(Method, Action)>>) -> Self {
        Self {
            pattern,
            methods: methods.map_or_else(|| Box::from([]), Vec::into_boxed_slice),
        }
    }

    fn action(&self, method: &Method) -> Option<&Action> {
        if self.methods.is_empty() {
            return Some(&Action::Listed);
        }
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, a)| a)
    }

    fn hit(&self, method: &Method, paths: &Candidates<'_>) -> Option<&Action> {
        self.action(method).filter(|_| self.pattern.matches(paths))
    }
}

/// A per-endpoint rule list (`hard_timeouts`, `size_limits`, `transform_headers`, ...): the
/// first entry, in the definition's order, whose method and pattern match gives the value, as
/// Tyk looks them up.
#[derive(Debug, Clone)]
pub struct EndpointTable<T> {
    rules: Vec<(PathPattern, Method, T)>,
}

impl<T> Default for EndpointTable<T> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<T> EndpointTable<T> {
    /// The same entries with `f` applied to each value (patterns are cloned: a cloned regex
    /// gets its own search cache, so a per-thread copy never waits on another thread).
    pub fn map(&self, f: impl Fn(&T) -> T) -> Self {
        Self {
            rules: self
                .rules
                .iter()
                .map(|(p, m, v)| (p.clone(), m.clone(), f(v)))
                .collect(),
        }
    }

    /// Adds an entry after the others.
    pub fn push(&mut self, pattern: PathPattern, method: Method, value: T) {
        self.rules.push((pattern, method, value));
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The values, in the definition's order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.rules.iter().map(|(_, _, v)| v)
    }

    /// The value of the first entry for `method` whose pattern matches.
    pub fn find(&self, method: &Method, paths: &Candidates<'_>) -> Option<&T> {
        self.find_with_pattern(method, paths).map(|(_, v)| v)
    }

    /// Like [`find`](Self::find), with the entry's pattern (URL rewrites read its groups).
    pub fn find_with_pattern(
        &self,
        method: &Method,
        paths: &Candidates<'_>,
    ) -> Option<(&PathPattern, &T)> {
        self.rules
            .iter()
            .find(|(p, m, _)| m == method && p.matches(paths))
            .map(|(p, _, v)| (p, v))
    }
}

/// The three lists of one version.
#[derive(Debug, Clone, Default)]
pub struct EndpointLists {
    /// `black_list` entries (compiled ignoring case).
    pub black: Vec<Entry>,
    /// `ignored` entries.
    pub ignored: Vec<Entry>,
    /// `white_list` entries.
    pub white: Vec<Entry>,
}

/// How a request path reads to a lenient upstream (see the module docs).
#[derive(Debug, Clone, Copy)]
pub enum Loose<'a> {
    /// The same as the gateway's reading.
    Same,
    /// Another reading.
    Other(Candidates<'a>),
    /// No reading at all.
    Unreadable,
}

/// The lists' decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// 403 `Requested endpoint is forbidden`.
    Forbidden,
    /// Answer with this, without the upstream.
    Reply(&'a Arc<Mock>),
    /// Go on, without authentication or limits.
    Ignored,
    /// Go on.
    Pass,
}

impl EndpointLists {
    /// A copy for one thread: regexes with their own caches, replies sharing no buffer.
    pub fn detached(&self) -> Self {
        let entries = |list: &[Entry]| -> Vec<Entry> {
            list.iter()
                .map(|e| Entry {
                    pattern: e.pattern.clone(),
                    methods: e
                        .methods
                        .iter()
                        .map(|(m, a)| {
                            let a = match a {
                                Action::Listed => Action::Listed,
                                Action::Reply(mock) => Action::Reply(Arc::new(mock.detached())),
                            };
                            (m.clone(), a)
                        })
                        .collect(),
                })
                .collect()
        };
        Self {
            black: entries(&self.black),
            ignored: entries(&self.ignored),
            white: entries(&self.white),
        }
    }

    /// True when no list has an entry.
    pub fn is_empty(&self) -> bool {
        self.black.is_empty() && self.ignored.is_empty() && self.white.is_empty()
    }

    /// Decides one request: `strict` is the gateway's reading of its path, `loose` a lenient
    /// upstream's.
    pub fn decide<'s>(
        &'s self,
        method: &Method,
        strict: &Candidates<'_>,
        loose: Loose<'_>,
    ) -> Verdict<'s> {
        let gated = !self.black.is_empty() || !self.white.is_empty();
        let loose = match loose {
            Loose::Same => None,
            Loose::Other(c) => Some(c),
            Loose::Unreadable if gated => return Verdict::Forbidden,
            Loose::Unreadable => None,
        };
        let blocked = |e: &Entry| {
            e.hit(method, strict).is_some() || loose.is_some_and(|l| e.hit(method, &l).is_some())
        };
        if self.black.iter().any(blocked) {
            return Verdict::Forbidden;
        }
        // A reply answers whatever the list (Tyk checks replies before anything else).
        for e in self.ignored.iter().chain(&self.white) {
            if let Some(Action::Reply(mock)) = e.action(method)
                && e.pattern.matches(strict)
            {
                return Verdict::Reply(mock);
            }
        }
        let opens = |e: &Entry| {
            e.hit(method, strict).is_some() && loose.is_none_or(|l| e.hit(method, &l).is_some())
        };
        if self.ignored.iter().any(opens) {
            return Verdict::Ignored;
        }
        if self.white.is_empty() || self.white.iter().any(opens) {
            Verdict::Pass
        } else {
            Verdict::Forbidden
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> PathPattern {
        PathPattern::compile("p", p, false, MatchOptions::default()).unwrap()
    }

    #[test]
    fn templates_expand_like_tyk() {
        let cases = [
            ("/foo/{id}", "/foo/([^/]+)"),
            ("/foo/{id}/bar/{bar_id}$", "/foo/([^/]+)/bar/([^/]+)$"),
            ("/a/{id:[0-9]+}", "/a/([0-9]+)"),
            ("/a/{id:[0-9]{2}}/b", "/a/([0-9]{2})/b"),
            ("/a{2,3}", "/a{2,3}"),
            ("/{", "/{"),
            ("/{id", "/{id"),
            ("/{1}", "/{1}"),
        ];
        for (src, want) in cases {
            assert_eq!(expand_template(src), want, "{src}");
        }
        assert_eq!(pat("/x/*").regex.as_str(), "/x/.*");
        assert_eq!(pat("/x/*/y").regex.as_str(), "/x/[^/]+/y");
    }

    #[test]
    fn tyks_whitelist_table() {
        // Tyk's TestWhitelist: unanchored unless the pattern says `$`.
        let lists = EndpointLists {
            white: ["/foo/{fooId}$", "/foo/{fooId}/bar/{barId}$", "/baz/{bazId}"]
                .iter()
                .map(|p| Entry::new(pat(p), None))
                .collect(),
            ..EndpointLists::default()
        };
        let get = Method::GET;
        for path in [
            "/foo",
            "/foo/",
            "/foo/1/bar",
            "/foo/1/bar/",
            "/baz",
            "/baz/",
        ] {
            assert_eq!(
                lists.decide(&get, &Candidates::of(path), Loose::Same),
                Verdict::Forbidden,
                "{path}"
            );
        }
        for path in ["/foo/1", "/foo/1/bar/1", "/baz/1", "/baz/1/", "/baz/1/bazz"] {
            assert_eq!(
                lists.decide(&get, &Candidates::of(path), Loose::Same),
                Verdict::Pass,
                "{path}"
            );
        }
    }

    #[test]
    fn anchoring_options() {
        let exact = MatchOptions {
            prefix: true,
            suffix: true,
            ignore_case: false,
        };
        let p = PathPattern::compile("p", "/get", false, exact).unwrap();
        assert!(p.matches(&Candidates::of("/get")));
        assert!(!p.matches(&Candidates::of("/get-all")));
        assert!(!p.matches(&Candidates::of("/x/get")));
        let p = PathPattern::compile("p", "/Get", true, MatchOptions::default()).unwrap();
        assert!(p.matches(&Candidates::of("/x/gET/y")));
        let err = PathPattern::compile("f.path", "/a(", false, exact).unwrap_err();
        assert_eq!(err.field, "f.path");
    }

    #[test]
    fn black_list_wins_and_replies_come_before_lists() {
        let mock = Arc::new(Mock::compile("m", 201, "flump", [("x-a", "1")]).unwrap());
        let lists = EndpointLists {
            black: vec![Entry::new(
                PathPattern::compile("b", "/secret", true, MatchOptions::default()).unwrap(),
                Some(vec![(Method::GET, Action::Listed)]),
            )],
            ignored: vec![
                Entry::new(pat("/secret"), None),
                Entry::new(pat("/health"), Some(vec![(Method::GET, Action::Listed)])),
            ],
            white: vec![Entry::new(
                pat("/reply/{id}"),
                Some(vec![(Method::GET, Action::Reply(Arc::clone(&mock)))]),
            )],
        };
        let d = |m: Method, p: &str| lists.decide(&m, &Candidates::of(p), Loose::Same);
        assert_eq!(d(Method::GET, "/secret"), Verdict::Forbidden);
        assert_eq!(d(Method::GET, "/SECRET"), Verdict::Forbidden);
        // The black-list entry is GET only; the simple ignored entry covers every method.
        assert_eq!(d(Method::POST, "/secret"), Verdict::Ignored);
        assert_eq!(d(Method::GET, "/health"), Verdict::Ignored);
        assert_eq!(d(Method::POST, "/health"), Verdict::Forbidden);
        assert_eq!(d(Method::GET, "/reply/1"), Verdict::Reply(&mock));
        assert_eq!(d(Method::GET, "/reply/"), Verdict::Forbidden);
        assert_eq!(d(Method::GET, "/other"), Verdict::Forbidden);
    }

    #[test]
    fn loose_reading_blocks_and_must_agree_to_open() {
        let lists = EndpointLists {
            black: vec![Entry::new(
                PathPattern::compile("b", "/admin$", true, MatchOptions::default()).unwrap(),
                None,
            )],
            white: vec![Entry::new(pat("^/public/"), None)],
            ..EndpointLists::default()
        };
        let get = Method::GET;
        // `/admin;x` as the gateway reads it; `/admin` as a lenient upstream does.
        let v = lists.decide(
            &get,
            &Candidates::of("/public/../admin;x"),
            Loose::Other(Candidates::of("/admin")),
        );
        assert_eq!(v, Verdict::Forbidden);
        // Allowed as `/public/x%2F..%2Fsecret`, but a decoding upstream reads `/secret`.
        let v = lists.decide(
            &get,
            &Candidates::of("/public/x%2F..%2Fsecret"),
            Loose::Other(Candidates::of("/secret")),
        );
        assert_eq!(v, Verdict::Forbidden);
        let v = lists.decide(
            &get,
            &Candidates::of("/public/a%20b"),
            Loose::Other(Candidates::of("/public/a b")),
        );
        assert_eq!(v, Verdict::Pass);
        assert_eq!(
            lists.decide(&get, &Candidates::of("/public/x"), Loose::Unreadable),
            Verdict::Forbidden
        );
        let open = EndpointLists::default();
        assert_eq!(
            open.decide(&get, &Candidates::of("/x"), Loose::Unreadable),
            Verdict::Pass
        );
    }

    #[test]
    fn mocks_refuse_framing_headers() {
        for name in ["Content-Length", "transfer-encoding"] {
            let err = Mock::compile("m", 200, "hi", [(name, "5")]).unwrap_err();
            assert_eq!(err.field, "m");
            assert!(err.message.contains(name), "{err}");
        }
        let m = Mock::compile("m", 0, "hi", [("Content-Type", "text/plain")]).unwrap();
        assert_eq!(m.status, StatusCode::OK);
        assert_eq!(m.headers[0].0, http::header::CONTENT_TYPE);
    }

    #[test]
    fn tables_give_the_first_entry_for_the_method() {
        let mut t = EndpointTable::default();
        t.push(pat("/a/{id}"), Method::GET, 1);
        t.push(pat("/a/"), Method::GET, 2);
        t.push(pat("/a/"), Method::POST, 3);
        assert_eq!(t.find(&Method::GET, &Candidates::of("/a/1")), Some(&1));
        assert_eq!(t.find(&Method::POST, &Candidates::of("/a/1")), Some(&3));
        assert_eq!(t.find(&Method::PUT, &Candidates::of("/a/1")), None);
        assert_eq!(t.find(&Method::GET, &Candidates::of("/b")), None);
        assert!(EndpointTable::<u8>::default().is_empty());
    }
}
