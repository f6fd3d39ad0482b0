//! Request path normalisation, done once per request before any rule sees the path.
//!
//! Rules match on the normalised form so that no encoding trick reaches another API:
//! percent-encoded unreserved characters are decoded (`%2e` is `.`, so `%2e%2e` becomes a real
//! dot segment), other escapes keep their encoding with upper-case hex (`%2F` stays a byte of a
//! segment, never a separator), duplicate slashes collapse, and `.`/`..` segments are resolved
//! (never above the root). The upstream receives the normalised path too, so it sees exactly
//! what was matched.

use std::borrow::Cow;

/// The path cannot be normalised (a `%` not followed by two hex digits, or not absolute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed request path")]
pub struct MalformedPath;

/// Normalises an absolute request path (no query).
///
/// # Errors
/// [`MalformedPath`] for a path not starting with `/` or with a bad percent escape.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, MalformedPath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(MalformedPath);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    Ok(Cow::Owned(resolve_segments(&decoded)))
}

/// The fast path: nothing to decode, no empty or dot segment.
fn is_normal(bytes: &[u8]) -> bool {
    let mut prev_slash = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => return false,
            b'/' if prev_slash => return false,
            b'.' if prev_slash => {
                // `/.` starts a dot segment only when followed by `/`, end, or `./`/`.` end.
                let rest = &bytes[i + 1..];
                if rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
                {
                    return false;
                }
            }
            _ => {}
        }
        prev_slash = b == b'/';
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, MalformedPath> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            // Unlike credentials, a path with a broken escape is refused: rules must never
            // match a path the upstream could read differently.
            let v = crate::percent::escape_at(bytes, i).ok_or(MalformedPath)?;
            if is_unreserved(v) {
                out.push(v);
            } else {
                out.push(b'%');
                out.push(bytes[i + 1].to_ascii_uppercase());
                out.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            // hyper passes UTF-8 in paths through: other bytes are kept as they are.
            out.push(b);
            i += 1;
        }
    }
    // Only ASCII was replaced by ASCII, so the UTF-8 of `path` is intact.
    String::from_utf8(out).map_err(|_| MalformedPath)
}

/// How a lenient upstream might read an already normalised path: every escape decoded (up
/// to three times, for double encodings), `\` taken as `/`, `;params` and trailing dots or
/// spaces of a segment dropped, dot segments resolved again. Borrows when that changes
/// nothing; `None` when the decoded bytes are not UTF-8 (no sensible reading exists).
pub fn loose(path: &str) -> Option<Cow<'_, str>> {
    let needs = path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';'))
        || path
            .split('/')
            .any(|seg| seg.ends_with(['.', ' ']) && seg != "." && seg != "..");
    if !needs {
        return Some(Cow::Borrowed(path));
    }
    let mut text = path.to_owned();
    for _ in 0..3 {
        if !text.contains('%') {
            break;
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match crate::percent::escape_at(bytes, i) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        text = String::from_utf8(out).ok()?;
    }
    let text = text.replace('\\', "/");
    let mut cleaned = String::with_capacity(text.len());
    for (i, seg) in text.split('/').enumerate() {
        if i > 0 {
            cleaned.push('/');
        }
        let seg = seg.split(';').next().unwrap_or("");
        let seg = if seg == "." || seg == ".." {
            seg
        } else {
            seg.trim_end_matches(['.', ' '])
        };
        cleaned.push_str(seg);
    }
    if !cleaned.starts_with('/') {
        cleaned.insert(0, '/');
    }
    let resolved = resolve_segments(&cleaned);
    Some(if resolved == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(resolved)
    })
}

/// Collapses empty segments and resolves dot segments, keeping a trailing slash.
fn resolve_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> String {
        normalise(p).unwrap().into_owned()
    }

    #[test]
    fn table() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../x", "/x"),
            ("/public/%2e%2e/private/x", "/private/x"),
            ("/public/%2E%2E/private", "/private"),
            ("/public/..%2Fprivate/x", "/public/..%2Fprivate/x"),
            ("/public/..%2fprivate", "/public/..%2Fprivate"),
            ("/%7Euser/%61b", "/~user/ab"),
            ("/a%20b", "/a%20b"),
            ("/a.b/.c/..d", "/a.b/.c/..d"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/...", "/a/..."),
        ];
        for (input, want) in cases {
            assert_eq!(n(input), want, "normalise({input})");
        }
    }

    #[test]
    fn loose_readings() {
        let l = |p: &str| loose(p).map(Cow::into_owned);
        let cases = [
            ("/a/b", "/a/b"),
            ("/a/..%2Fadmin", "/admin"),
            ("/a/%252e%252e/admin", "/admin"),
            ("/a%5C..%5Cadmin", "/admin"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/admin./", "/admin/"),
            ("/admin%20", "/admin"),
            ("/a/..;/admin", "/admin"),
            ("/%2561dmin", "/admin"),
        ];
        for (input, want) in cases {
            assert_eq!(l(input).as_deref(), Some(want), "loose({input})");
        }
        assert!(matches!(loose("/a/b.c"), Some(Cow::Borrowed(_))));
        assert_eq!(l("/%C0%AFadmin"), None);
        assert_eq!(l("/%FF"), None);
    }

    #[test]
    fn already_normal_paths_are_borrowed() {
        assert!(matches!(normalise("/a/b.c/d").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed() {
        assert_eq!(normalise("/a%2"), Err(MalformedPath));
        assert_eq!(normalise("/a%zz"), Err(MalformedPath));
        assert_eq!(normalise("a/b"), Err(MalformedPath));
        assert_eq!(normalise("*"), Err(MalformedPath));
    }

    #[test]
    fn non_ascii_bytes_are_kept() {
        // Found by the `router` fuzz target: bytes above 0x7F were re-encoded one by one as
        // Latin-1 characters, so the path changed (and changed again when normalised again).
        assert_eq!(n("/caf\u{e9}//%41"), "/caf\u{e9}/A");
        assert_eq!(n("/pub\u{fffd}lic/a//%2e%0e/."), "/pub\u{fffd}lic/a/.%0E/");
        let once = n("/\u{e9}/%20/..//x");
        assert_eq!(once, "/\u{e9}/x");
        assert_eq!(n(&once), once);
    }

    proptest! {
        #[test]
        fn normalised_paths_are_fixed_points(p in "(/[a-z.%2eE/]{0,6}){1,6}") {
            if let Ok(once) = normalise(&p) {
                let twice = normalise(&once).unwrap().into_owned();
                prop_assert_eq!(once.as_ref(), twice.as_str());
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
