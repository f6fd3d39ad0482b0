//! Percent-decoding, once for the whole gateway. Credentials in query strings and cookies,
//! admin API ids and path normalisation all read `%XX` escapes through [`escape_at`]; what
//! differs between them (whether `+` is a space, what a broken escape means) is a parameter
//! here, not a second decoder.

use std::borrow::Cow;

/// What a `+` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plus {
    /// A plus sign (paths, ids).
    Literal,
    /// A space (`application/x-www-form-urlencoded` query strings).
    Space,
}

/// The byte a `%XX` escape starting at `bytes[i]` stands for, if it is one.
pub fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
        (Some(b'%'), Some(&h), Some(&l)) => {
            let v = hex(h)? * 16 + hex(l)?;
            u8::try_from(v).ok()
        }
        _ => None,
    }
}

/// Decodes escapes leniently: a broken escape is kept as it is, and bytes that are not UTF-8
/// become U+FFFD. Borrows when there is nothing to decode.
pub fn decode(s: &str, plus: Plus) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (b == b'+' && plus == Plus::Space))
    {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(v) = escape_at(bytes, i) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(match bytes[i] {
            b'+' if plus == Plus::Space => b' ',
            b => b,
        });
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_plus_and_broken_escapes() {
        assert_eq!(decode("a%2Bb+c", Plus::Space), "a+b c");
        assert_eq!(decode("a%2Bb+c", Plus::Literal), "a+b+c");
        assert_eq!(decode("100%", Plus::Space), "100%");
        assert_eq!(decode("%zz%4", Plus::Literal), "%zz%4");
        assert_eq!(decode("%e2%82%ac", Plus::Literal), "€");
        assert_eq!(decode("%ff", Plus::Literal), "\u{fffd}");
        assert!(matches!(decode("plain", Plus::Space), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_values() {
        assert_eq!(escape_at(b"x%2f", 1), Some(b'/'));
        assert_eq!(escape_at(b"%2", 0), None);
        assert_eq!(escape_at(b"%g0", 0), None);
        assert_eq!(escape_at(b"a", 0), None);
    }
}
