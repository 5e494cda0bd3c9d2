//! What the service's two TLS clients share — the connection to PostgreSQL
//! (sqlx) and the one to the SMTP relay (lettre), both rustls on ring: reading
//! a CA file given as an extra trust root, and putting a TLS failure into
//! words an operator can act on.
//!
//! Trust roots: Mozilla's list compiled in (webpki-roots) plus the CA file
//! configured for each connection (`sslrootcert` in the database URL,
//! `smtp.ca_file`). Not the system's store: the runtime image carries no CA
//! bundle, and what the service trusts does not change with the host it
//! runs on.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::CertificateError;

/// `localhost` or a loopback address: traffic that never leaves the machine
/// (or the pod, for a relay in a sidecar).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The certificates of a PEM file meant as extra trust roots: at least one,
/// each usable as a trust anchor. Anything else in the file (a key) is skipped.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            format!(
                "{}: a certificate in it cannot be a trust root: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// The rustls error somewhere in `error`'s chain (also inside an I/O error,
/// where the TLS libraries put handshake failures).
pub fn rustls_error_in<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = error;
    loop {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // `io::Error::source` skips the error it wraps: look inside it.
        let next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
        current = next?;
    }
}

/// What to tell an operator about a failed handshake with `host`.
/// `ca_hint` says how to give this connection the CA it lacks.
pub fn explain(error: &rustls::Error, host: &str, ca_hint: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("the certificate of {host} is not signed by a trusted CA ({error}); {ca_hint}")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            format!("the certificate of {host} is not valid for the name `{host}` ({error})")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!("the certificate of {host} is outside its validity period ({error})"),
        rustls::Error::InvalidCertificate(_) => {
            format!("the certificate of {host} was refused ({error})")
        }
        _ => format!("the TLS handshake with {host} failed ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(read_ca_file(&missing).unwrap_err().contains("cannot read"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(read_ca_file(&empty)
            .unwrap_err()
            .contains("holds no certificate"));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca_file(&garbage).is_err());
    }

    #[test]
    fn a_handshake_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let found = rustls_error_in(&io).unwrap();
        let text = explain(found, "db.internal", "give its CA with sslrootcert=PATH");
        assert!(
            text.contains("not signed by a trusted CA") && text.contains("sslrootcert"),
            "{text}"
        );
    }
}
