//! Tyk's HMAC request signatures (`enable_signature_checking`), the HTTP Signatures draft:
//! `Authorization: Signature keyId="…",algorithm="hmac-sha256",headers="(request-target) date",
//! signature="…"`, where the signature is the base64 HMAC, with the key's `hmac_string`, of
//! the listed headers as `name: value` lines (`(request-target)` is the lower-case method and
//! the path). The comparison is constant-time (ring's `hmac::verify`), and an algorithm the
//! draft does not name is refused, where Tyk falls back to SHA-1.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

/// A signing algorithm of the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `hmac-sha1`.
    Sha1,
    /// `hmac-sha256`.
    Sha256,
    /// `hmac-sha384`.
    Sha384,
    /// `hmac-sha512`.
    Sha512,
}

impl Algorithm {
    /// The draft's name (`hmac-sha256`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hmac-sha1" => Some(Self::Sha1),
            "hmac-sha256" => Some(Self::Sha256),
            "hmac-sha384" => Some(Self::Sha384),
            "hmac-sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn ring(self) -> ring::hmac::Algorithm {
        match self {
            Self::Sha1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => ring::hmac::HMAC_SHA256,
            Self::Sha384 => ring::hmac::HMAC_SHA384,
            Self::Sha512 => ring::hmac::HMAC_SHA512,
        }
    }
}

/// Why a signature was refused (all answered alike, as Tyk does; the kind is for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HmacError {
    /// Not `key="value"` pairs, or a field the draft does not have.
    #[error("malformed signature header")]
    Malformed,
    /// No `keyId` or no `signature`.
    #[error("incomplete signature header")]
    Incomplete,
    /// An algorithm the draft does not name, or one the API does not allow.
    #[error("algorithm not allowed")]
    Algorithm,
    /// The signature does not verify.
    #[error("signature does not match")]
    Mismatch,
    /// No parseable `Date` (or `X-Aux-Date`), or one outside the allowed skew.
    #[error("date missing or outside the allowed clock skew")]
    Date,
}

/// What the `Authorization: Signature ...` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    /// `keyId`: the key whose `hmac_string` signed the request.
    pub key_id: String,
    /// `algorithm`.
    pub algorithm: Algorithm,
    /// `headers`, lower-case, in order (`date` when absent).
    pub headers: Vec<String>,
    /// `signature` as sent (base64, usually percent-escaped).
    pub signature: String,
}

impl SignatureParams {
    /// Parses the header value, with or without its `Signature ` prefix.
    ///
    /// # Errors
    /// See [`HmacError`].
    pub fn parse(value: &str) -> Result<Self, HmacError> {
        let mut rest = value.trim();
        for prefix in ["Signature", "signature"] {
            if let Some(r) = rest.strip_prefix(prefix) {
                rest = r.trim_start();
            }
        }
        let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
        for pair in split_pairs(rest)? {
            let (name, value) = pair;
            let slot = match name.to_ascii_lowercase().as_str() {
                "keyid" => &mut key_id,
                "algorithm" => &mut algorithm,
                "headers" => &mut headers,
                "signature" => &mut signature,
                _ => return Err(HmacError::Malformed),
            };
            *slot = Some(value);
        }
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(HmacError::Incomplete);
        };
        let algorithm = Algorithm::from_name(algorithm.as_deref().unwrap_or("hmac-sha1"))
            .ok_or(HmacError::Algorithm)?;
        let headers = match headers {
            Some(h) if !h.trim().is_empty() => {
                h.split_whitespace().map(str::to_ascii_lowercase).collect()
            }
            _ => vec!["date".to_owned()],
        };
        Ok(Self {
            key_id,
            algorithm,
            headers,
            signature,
        })
    }
}

/// `name="value"` (or `name=value`) pairs separated by commas; quotes may hold commas.
fn split_pairs(s: &str) -> Result<Vec<(String, String)>, HmacError> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or(HmacError::Malformed)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(HmacError::Malformed);
        }
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or(HmacError::Malformed)?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((name.to_owned(), value.trim().to_owned()));
        rest = tail.trim_start();
        if let Some(t) = rest.strip_prefix(',') {
            rest = t.trim_start();
        } else if !rest.is_empty() {
            return Err(HmacError::Malformed);
        }
    }
    Ok(out)
}

/// The string the client signed: one `name: value` line per listed header (`date` read from
/// `X-Aux-Date` when the request has one, as in Tyk), `(request-target): <method> <path>`.
pub fn signing_string(
    params: &SignatureParams,
    method: &str,
    path: &str,
    headers: &HeaderMap,
) -> String {
    let mut out = String::new();
    for (i, name) in params.headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if name == "(request-target)" {
            out.push_str("(request-target): ");
            out.push_str(&method.to_ascii_lowercase());
            out.push(' ');
            out.push_str(path);
            continue;
        }
        let (name, value) = if name == "date" {
            date_header(headers).unwrap_or(("date", ""))
        } else {
            (name.as_str(), header_str(headers, name))
        };
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value.trim());
    }
    out
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The date a signature is checked against: `X-Aux-Date`, else `Date`.
pub fn date_header(headers: &HeaderMap) -> Option<(&'static str, &str)> {
    [("x-aux-date", "x-aux-date"), ("date", "date")]
        .into_iter()
        .find_map(|(name, shown)| {
            let v = header_str(headers, name);
            (!v.is_empty()).then_some((shown, v))
        })
}

/// The signature a client sends for `signed`: base64 of the HMAC under `secret` (to be
/// query-escaped in the header, as Tyk's clients do).
pub fn sign(algorithm: Algorithm, secret: &[u8], signed: &str) -> String {
    let key = ring::hmac::Key::new(algorithm.ring(), secret);
    STANDARD.encode(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
}

/// Whether `signature` (base64, already percent-decoded) is the HMAC of `signed` under
/// `secret`, compared in constant time.
pub fn verify(algorithm: Algorithm, secret: &[u8], signed: &str, signature: &str) -> bool {
    let Ok(tag) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let key = ring::hmac::Key::new(algorithm.ring(), secret);
    ring::hmac::verify(&key, signed.as_bytes(), &tag).is_ok()
}

/// Whether the request's date (`X-Aux-Date` or `Date`, RFC 1123 in GMT) is within `skew_ms`
/// of `now_ms` either way; `skew_ms` ≤ 0 accepts any date, but one must be there, as in Tyk.
pub fn date_within(headers: &HeaderMap, now_ms: i64, skew_ms: f64) -> bool {
    let Some((_, value)) = date_header(headers) else {
        return false;
    };
    let value = value.trim().replace(" UTC", " GMT");
    let Ok(at) = httpdate::parse_http_date(&value) else {
        return false;
    };
    if skew_ms <= 0.0 {
        return true;
    }
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    (now_ms.saturating_sub(at_ms)).unsigned_abs() as f64 <= skew_ms
}

/// A new `hmac_string`: base64 of 16 random bytes in hex, the shape of Tyk's secrets.
///
/// # Errors
/// The system's random source failed: no secret rather than a guessable one.
pub fn new_secret() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(STANDARD.encode(tollgate_session::hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn a_known_hmac_sha256_vector() {
        let sig = sign(
            Algorithm::Sha256,
            b"key",
            "The quick brown fox jumps over the lazy dog",
        );
        let hex: String = STANDARD
            .decode(sig)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn headers_parse_as_tyk_reads_them() {
        let p = SignatureParams::parse(
            r#"Signature keyId="k1",algorithm="hmac-sha256",headers="(request-target) Date X-Test",signature="abc%3D""#,
        )
        .unwrap();
        assert_eq!(p.key_id, "k1");
        assert_eq!(p.algorithm, Algorithm::Sha256);
        assert_eq!(p.headers, ["(request-target)", "date", "x-test"]);
        assert_eq!(p.signature, "abc%3D");
        let minimal = SignatureParams::parse(r#"keyId="k",signature="s""#).unwrap();
        assert_eq!(
            (minimal.algorithm, minimal.headers),
            (Algorithm::Sha1, vec!["date".to_owned()])
        );
        for bad in [
            r#"keyId="k",signature="s",extra="x""#,
            r#"keyId="k",signature="s"#,
            r#"keyId="k" signature="s""#,
            "=x",
            "garbage",
        ] {
            assert_eq!(
                SignatureParams::parse(bad),
                Err(HmacError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            SignatureParams::parse(r#"keyId="k""#),
            Err(HmacError::Incomplete)
        );
        assert_eq!(
            SignatureParams::parse(r#"keyId="k",algorithm="hmac-md5",signature="s""#),
            Err(HmacError::Algorithm)
        );
    }

    #[test]
    fn signatures_verify_only_for_the_same_string_and_secret() {
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT"),
        );
        h.insert("x-test", HeaderValue::from_static(" v "));
        let p = SignatureParams::parse(
            r#"keyId="k",algorithm="hmac-sha512",headers="(request-target) date x-test",signature="s""#,
        )
        .unwrap();
        let signed = signing_string(&p, "GET", "/api/x", &h);
        assert_eq!(
            signed,
            "(request-target): get /api/x\ndate: Tue, 01 Dec 2026 10:00:00 GMT\nx-test: v"
        );
        let sig = sign(Algorithm::Sha512, b"secret", &signed);
        assert!(verify(Algorithm::Sha512, b"secret", &signed, &sig));
        assert!(!verify(Algorithm::Sha512, b"other", &signed, &sig));
        assert!(!verify(Algorithm::Sha256, b"secret", &signed, &sig));
        assert!(!verify(
            Algorithm::Sha512,
            b"secret",
            &format!("{signed}x"),
            &sig
        ));
        assert!(!verify(
            Algorithm::Sha512,
            b"secret",
            &signed,
            "not base64!"
        ));
        // X-Aux-Date stands in for Date.
        h.insert(
            "x-aux-date",
            HeaderValue::from_static("Tue, 01 Dec 2026 10:00:05 GMT"),
        );
        assert!(
            signing_string(&p, "GET", "/api/x", &h)
                .contains("x-aux-date: Tue, 01 Dec 2026 10:00:05 GMT")
        );
    }

    #[test]
    fn dates_within_the_skew() {
        let mut h = HeaderMap::new();
        assert!(!date_within(&h, 0, 0.0), "a date is required");
        h.insert(
            "date",
            HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT"),
        );
        let at = 1_796_119_200_000_i64; // 2026-12-01T10:00:00Z
        assert!(date_within(&h, at + 1_000, 1_000.0));
        assert!(!date_within(&h, at + 1_001, 1_000.0));
        assert!(!date_within(&h, at - 1_001, 1_000.0));
        assert!(date_within(&h, at + 10_000_000, 0.0));
        h.insert("date", HeaderValue::from_static("yesterday"));
        assert!(!date_within(&h, at, 0.0));
        assert_eq!(STANDARD.decode(new_secret().unwrap()).unwrap().len(), 32);
    }
}
