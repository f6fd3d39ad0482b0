//! Small encoders and parsers the tests need for credentials in headers,
//! query strings and cookies (the testkit has no base64 or URL crate).

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn b64decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

/// `Basic <base64 of creds>`.
pub fn basic(creds: &str) -> String {
    format!("Basic {}", b64encode(creds.as_bytes()))
}

/// Percent-encodes everything but unreserved characters.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query component (`+` is a space).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The non-empty `parts` as `(name, value)` pairs (value empty when there
/// is no `=`), each side mapped through `decode`.
fn pairs<'a>(
    parts: impl Iterator<Item = &'a str>,
    decode: fn(&str) -> String,
) -> Vec<(String, String)> {
    parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A query string as sorted, decoded `(name, value)` pairs.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let mut v = pairs(q.unwrap_or("").split('&'), pct_decode);
    v.sort();
    v
}

/// The cookies of a Cookie header as `(name, value)` pairs, in order.
pub fn cookie_pairs(header: Option<&str>) -> Vec<(String, String)> {
    pairs(
        header.unwrap_or("").split(';').map(str::trim),
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_roundtrip() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "user:password",
            "{\"org\":\"default\"}",
        ] {
            assert_eq!(b64decode(&b64encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(b64encode(b"user:password"), "dXNlcjpwYXNzd29yZA==");
        assert_eq!(pct_decode(&pct_encode("a+b/c=d ")), "a+b/c=d ");
        assert_eq!(
            query_pairs(Some("b=2&a=%2B1")),
            vec![("a".into(), "+1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            cookie_pairs(Some("a=1; b ;c=")),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), String::new())
            ]
        );
    }
}
