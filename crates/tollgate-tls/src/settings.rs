//! Tyk's TLS setting values in rustls terms.
//!
//! Tyk takes Go's values: versions as `uint16` (769 = TLS 1.0 … 772 = TLS 1.3, 0 = default)
//! and cipher suites by Go's names. rustls speaks TLS 1.2 and 1.3 only and offers no CBC, RC4,
//! 3DES or static-RSA suites; asking for less than it offers is honoured as "the least rustls
//! offers", which is never more open than what was asked.

use rustls::SupportedCipherSuite;
use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;

use crate::TlsError;

const TLS10: u16 = 769;
const TLS11: u16 = 770;
const TLS12: u16 = 771;
const TLS13: u16 = 772;

/// The protocol versions between `min` and `max` (Go's numbers, 0 = no bound).
///
/// # Errors
/// A number that is no TLS version, or `min` above `max`.
pub fn protocol_versions(
    min_field: &str,
    min: u16,
    max_field: &str,
    max: u16,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let check = |field: &str, v: u16| match v {
        0 | TLS10 | TLS11 | TLS12 | TLS13 => Ok(()),
        other => Err(TlsError::setting(
            field,
            format!(
                "{other} is not a TLS version (771 = TLS 1.2, 772 = TLS 1.3; 769 and 770 mean \
                 TLS 1.0 and 1.1, which are not offered)"
            ),
        )),
    };
    check(min_field, min)?;
    check(max_field, max)?;
    if max != 0 && max < TLS12 {
        return Err(TlsError::setting(
            max_field,
            "TLS 1.0 and 1.1 are not offered: the highest version must be 771 (TLS 1.2) or 772 \
             (TLS 1.3)",
        ));
    }
    if min != 0 && max != 0 && min > max {
        return Err(TlsError::setting(
            min_field,
            format!("{min} is above the highest version {max}"),
        ));
    }
    let mut out = Vec::with_capacity(2);
    if min != TLS13 {
        out.push(&rustls::version::TLS12);
    }
    if max == 0 || max == TLS13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

/// Whether `min` asks for versions below TLS 1.2, which rustls does not speak (the caller logs
/// that those clients will be refused).
pub fn below_tls12(min: u16) -> bool {
    matches!(min, TLS10 | TLS11)
}

/// Go's names of the suites rustls does not implement. Listed so that a Tyk configuration
/// naming them is read (they are left out, with a warning) rather than refused as a typo.
const NOT_OFFERED: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// TLS 1.3 suites by Go's names: Go (and so Tyk) does not let them be chosen.
const TLS13_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The provider's suites restricted to the TLS 1.2 suites `names` lists (Go's names); every
/// TLS 1.3 suite stays, as in Go. An empty list keeps them all. Names of suites rustls does not
/// implement are returned in the second part for the caller to warn about.
///
/// # Errors
/// A name that is no cipher suite Go knows, or a list that leaves TLS 1.2 with no suite while
/// only TLS 1.2 is allowed (checked by the caller building the configuration).
pub fn cipher_suites(
    field: &str,
    names: &[String],
    provider: &CryptoProvider,
) -> Result<(Vec<SupportedCipherSuite>, Vec<String>), TlsError> {
    if names.is_empty() {
        return Ok((provider.cipher_suites.clone(), Vec::new()));
    }
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .copied()
        .collect();
    let mut not_offered = Vec::new();
    for (i, raw) in names.iter().enumerate() {
        let name = raw.trim().to_ascii_uppercase();
        // Go accepts the CHACHA20 suites without their hash too.
        let full = if name.ends_with("_CHACHA20_POLY1305") {
            format!("{name}_SHA256")
        } else {
            name.clone()
        };
        if TLS13_NAMES.contains(&full.as_str()) {
            continue;
        }
        let found = provider.cipher_suites.iter().find(|s| {
            matches!(s, SupportedCipherSuite::Tls12(_)) && format!("{:?}", s.suite()) == full
        });
        match found {
            Some(s) => {
                if !chosen.contains(s) {
                    chosen.push(*s);
                }
            }
            None if NOT_OFFERED.contains(&full.as_str()) => not_offered.push(name),
            None => {
                return Err(TlsError::setting(
                    format!("{field}[{i}]"),
                    format!("`{raw}` is not a cipher suite name"),
                ));
            }
        }
    }
    Ok((chosen, not_offered))
}

/// The crypto provider the gateway builds every TLS configuration with.
pub fn default_provider() -> std::sync::Arc<CryptoProvider> {
    crate::provider()
}

/// A provider offering only `suites`.
pub(crate) fn provider_with(suites: Vec<SupportedCipherSuite>) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: suites,
        ..(*crate::provider()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&'static SupportedProtocolVersion]) -> Vec<String> {
        v.iter().map(|v| format!("{:?}", v.version)).collect()
    }

    #[test]
    fn versions_from_go_numbers() {
        let all = protocol_versions("min", 0, "max", 0).unwrap();
        assert_eq!(names(&all), ["TLSv1_2", "TLSv1_3"]);
        let only13 = protocol_versions("min", 772, "max", 0).unwrap();
        assert_eq!(names(&only13), ["TLSv1_3"]);
        let only12 = protocol_versions("min", 771, "max", 771).unwrap();
        assert_eq!(names(&only12), ["TLSv1_2"]);
        // Below 1.2 is read as 1.2: stricter than asked, never more open.
        let old = protocol_versions("min", 769, "max", 0).unwrap();
        assert_eq!(names(&old), ["TLSv1_2", "TLSv1_3"]);
        assert!(below_tls12(769) && below_tls12(770) && !below_tls12(771));
    }

    #[test]
    fn bad_versions_name_their_field() {
        let e = protocol_versions("http_server_options.min_version", 12, "max", 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("http_server_options.min_version: 12 ")
        );
        let e = protocol_versions("min", 0, "max_v", 770).unwrap_err();
        assert!(e.to_string().starts_with("max_v: "));
        let e = protocol_versions("min_v", 772, "max", 771).unwrap_err();
        assert!(e.to_string().contains("above"));
    }

    #[test]
    fn ciphers_from_go_names() {
        let p = crate::provider();
        let (all, none) = cipher_suites("c", &[], &p).unwrap();
        assert_eq!(all.len(), p.cipher_suites.len());
        assert!(none.is_empty());

        let list = vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned(),
            "tls_ecdhe_ecdsa_with_chacha20_poly1305".to_owned(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".to_owned(),
            "TLS_AES_128_GCM_SHA256".to_owned(),
        ];
        let (chosen, skipped) = cipher_suites("c", &list, &p).unwrap();
        let tls12: Vec<String> = chosen
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert!(
            chosen
                .iter()
                .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        );
        assert_eq!(skipped, ["TLS_RSA_WITH_AES_128_CBC_SHA"]);

        let e = cipher_suites("proxy_ssl_ciphers", &["TLS_NOPE".into()], &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy_ssl_ciphers[0]: `TLS_NOPE` is not a cipher suite name"
        );
    }
}
