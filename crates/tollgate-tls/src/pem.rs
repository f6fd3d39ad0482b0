//! Reading certificates and keys from PEM files, with errors that name the field and file.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

fn read(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn bad_pem(field: &str, path: &Path, e: &pem::Error) -> TlsError {
    TlsError::BadPem {
        field: field.to_owned(),
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Every certificate in `path`, leaf first.
pub(crate) fn certificates(
    field: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(field, path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            field: field.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            field: field.to_owned(),
            path: path.to_owned(),
        },
        e => bad_pem(field, path, &e),
    })
}
