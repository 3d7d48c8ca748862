//! TLS, one place for the uplink's `mqtts://`, `status` over TLS and the embedded broker's
//! listener: rustls with the pure-Rust `ring` provider (no C beyond ring, so it cross-compiles
//! for every Pi), server CA from `tls.ca_file` or the system's roots, optional client
//! certificate for mutual TLS (AWS IoT style); and the check of the broker's own certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::schema::Tls;

/// Builds the client configuration; the error is one sentence naming the file at fault.
pub fn client_config(tls: Option<&Tls>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => roots = read_roots(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system CA certificates found (install ca-certificates, or set uplink.tls.ca_file)".into());
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots);
    let config = match tls.and_then(|t| t.cert_file.as_ref().zip(t.key_file.as_ref())) {
        Some((cert_file, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("bad certificate in {}: {e}", cert_file.display()))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                format!("cannot read a private key from {}: {e}", key_file.display())
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "client certificate {} / key {}: {e}",
                    cert_file.display(),
                    key_file.display()
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file; an error names the file.
fn read_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca.display()));
    }
    Ok(roots)
}

/// Checks `broker.tls.client_ca_file` (the CA whose client certificates are logins).
pub fn client_roots(ca: &Path) -> Result<(), String> {
    read_roots(ca).map(|_| ())
}

/// Checks that `cert_file` and `key_file` make a usable TLS server identity (the embedded
/// broker's), so a mistake is a config error at `check`, not a silent failure per connection.
pub fn check_server_identity(cert_file: &Path, key_file: &Path) -> Result<(), String> {
    server_config(cert_file, key_file, None, false).map(|_| ())
}

/// The embedded broker's TLS listener configuration, read from the files now (a renewed
/// certificate is picked up by the next connection). With `client_ca`, clients are asked for
/// a certificate signed by it (and refused without one when `required`).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
    required: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read a certificate from {}: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(read_roots(ca)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "{} and {} do not make a TLS identity: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
}
