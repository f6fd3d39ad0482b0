//! Credential parsing: basic auth values, finding a credential in a request head (header,
//! query parameter, cookie) and stripping it, and percent-decoding.
//!
//! Input: fields separated by `\n`: request URI, header name, header value, cookie header,
//! query parameter name, cookie name, then the rest (basic auth value and decode input).
//! Invariants:
//! - nothing panics;
//! - `parse_basic` results survive re-encoding (the user has no `:`);
//! - a found credential's value is trimmed and non-empty raw; after stripping it from where
//!   it was found, it is not found there again;
//! - `percent::decode` leaves a string without `%` unchanged (except `+` as a space).
#![no_main]

use http::header::{COOKIE, HeaderName, HeaderValue};
use http::{Request, Uri};
use libfuzzer_sys::fuzz_target;
use tollgate_definitions::CredentialSource;
use tollgate_proxy::fuzzing::{find_and_strip_credential, parse_basic};
use tollgate_proxy::percent::{Plus, decode};

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn check_basic(value: &str) {
    if let Some((user, password)) = parse_basic(value) {
        assert!(!user.contains(':'), "user split after a colon");
        let again = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        assert_eq!(
            parse_basic(&again),
            Some((user, password)),
            "re-encoded basic auth"
        );
    }
}

fn check_decode(s: &str) {
    let literal = decode(s, Plus::Literal);
    let space = decode(s, Plus::Space);
    if !s.contains('%') {
        assert_eq!(literal, s, "decoded a string without escapes");
        assert_eq!(
            space,
            s.replace('+', " "),
            "`+` is a space and nothing else"
        );
    }
    // Escapes only shrink the text; U+FFFD (3 bytes) stands for at most one escape (3 bytes).
    assert!(literal.len() <= s.len() && space.len() <= s.len());
}

fn check_credential(fields: &[&[u8]]) {
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let Ok(uri) = Uri::try_from(field(0)) else {
        return;
    };
    let mut builder = Request::get(uri);
    let header = HeaderName::from_bytes(field(1)).ok();
    if let (Some(name), Ok(value)) = (&header, HeaderValue::from_bytes(field(2))) {
        builder = builder.header(name, value);
    }
    for cookie in field(3).split(|&b| b == b'|') {
        if let Ok(value) = HeaderValue::from_bytes(cookie) {
            builder = builder.header(COOKIE, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (head, ()) = request.into_parts();
    let text = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
    let source = CredentialSource {
        header,
        param: text(field(4)),
        cookie: text(field(5)),
    };

    let mut stripped = head.clone();
    let Some((value, raw, location)) = find_and_strip_credential(&mut stripped, &source) else {
        return;
    };
    assert!(!raw.is_empty(), "an empty credential was found");
    assert_eq!(value, value.trim(), "the value is not trimmed");
    check_basic(&raw);
    let mut again = stripped.clone();
    if let Some((_, _, where_again)) = find_and_strip_credential(&mut again, &source) {
        assert_ne!(
            where_again, location,
            "still found in the {location} after stripping it"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.splitn(7, |&b| b == b'\n').collect();
    check_credential(&fields);
    let last = String::from_utf8_lossy(fields.last().copied().unwrap_or_default());
    check_basic(&last);
    check_basic(&format!("Basic {last}"));
    check_decode(&last);
    for f in &fields {
        check_decode(&String::from_utf8_lossy(f));
    }
});
