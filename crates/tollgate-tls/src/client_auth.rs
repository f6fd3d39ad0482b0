//! Client certificates on the listener, for APIs with mutual TLS (`use_mutual_tls_auth`).
//!
//! As in Tyk, an API allows certificates by their SHA-256, not by a CA: the handshake asks
//! for a certificate (only while some loaded API wants one, so browsers are not prompted
//! otherwise), accepts any whose holder proves the private key, and each API then checks the
//! fingerprint against its own `client_certificates`. The handshake never requires one, so
//! the other APIs on the same port keep working without.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::signatures::HandshakeSignatures;

/// What a client presented, as an API's check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the leaf certificate's DER (Tyk's certificate id, without the org).
    pub fingerprint: [u8; 32],
    /// Unix seconds of its `notAfter`, when it could be read.
    pub not_after: Option<i64>,
}

impl ClientCert {
    /// Reads a leaf certificate.
    pub fn of(der: &[u8]) -> Self {
        Self {
            fingerprint: fingerprint(der),
            not_after: not_after(der),
        }
    }
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of every certificate in a PEM file (`field` names it in errors).
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn file_fingerprints(
    field: &str,
    path: &std::path::Path,
) -> Result<Vec<[u8; 32]>, crate::TlsError> {
    Ok(crate::pem::certificates(field, path)?
        .iter()
        .map(|c| fingerprint(c.as_ref()))
        .collect())
}

/// The client-certificate policy of the listener: asks only while `asking` is on.
#[derive(Debug)]
pub(crate) struct AnyClientCert {
    signatures: HandshakeSignatures,
    pub(crate) asking: AtomicBool,
}

impl AnyClientCert {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            signatures: HandshakeSignatures(provider),
            asking: AtomicBool::new(false),
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        self.asking.load(Ordering::Relaxed)
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    // The certificate is judged per API (its fingerprint), not by a CA here; the handshake
    // signatures below still prove the client holds its key.
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// The `notAfter` of an X.509 certificate, in Unix seconds: `Certificate → tbsCertificate →
/// [version], serialNumber, signature, issuer, validity → notAfter` (UTCTime or
/// GeneralizedTime in UTC). `None` for anything that is not such a certificate.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (cert, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest, 0xA0)?.1;
    }
    rest = tlv(rest, 0x02)?.1; // serialNumber
    rest = tlv(rest, 0x30)?.1; // signature algorithm
    rest = tlv(rest, 0x30)?.1; // issuer
    let (validity, _) = tlv(rest, 0x30)?;
    let after = skip(validity)?; // notBefore
    let tag = *after.first()?;
    let (time, _) = tlv(after, tag)?;
    let text = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => utc_time(text, true),  // UTCTime: YYMMDDHHMMSSZ
        0x18 => utc_time(text, false), // GeneralizedTime: YYYYMMDDHHMMSSZ
        _ => None,
    }
}

/// One DER element of `tag` at the start of `input`: (its content, what follows).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    tlv(input, *input.first()?).map(|(_, rest)| rest)
}

fn utc_time(text: &str, two_digit_year: bool) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = if two_digit_year {
        let yy = num(digits.get(..2)?)?;
        // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
        (
            if yy >= 50 { 1900 + yy } else { 2000 + yy },
            digits.get(2..)?,
        )
    } else {
        (num(digits.get(..4)?)?, digits.get(4..)?)
    };
    if rest.len() != 10 {
        return None;
    }
    let field = |i: usize| num(&rest[i..i + 2]);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn not_after_of_generated_certificates() {
        // 2030-06-15T00:00:00Z (UTCTime) and 2060-01-01 (GeneralizedTime, after 2049).
        assert_eq!(not_after(&cert((2030, 6, 15))), Some(1_907_712_000));
        assert_eq!(not_after(&cert((2060, 1, 1))), Some(2_840_140_800));
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&[]), None);
        let der = cert((2030, 6, 15));
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            let _ = not_after(&der[..cut]);
        }
        assert_ne!(fingerprint(&der), fingerprint(&cert((2030, 6, 15))));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc_time("991231235959Z", true), Some(946_684_799));
        assert_eq!(utc_time("20991301000000Z", false), None);
    }
}
