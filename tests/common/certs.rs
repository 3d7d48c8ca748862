//! Test certificates: a CA, a server certificate for `localhost`, and client certificates
//! whose CN is their name, as PEM files.

use std::path::Path;

/// Writes `{prefix}ca.pem`, `{prefix}server.pem/.key` (for `localhost`) and
/// `{prefix}<cn>.pem/.key` for each client CN, all signed by the CA.
pub fn certificates(dir: &Path, prefix: &str, clients: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("serial2mqtt test CA {prefix}"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca.pem()).unwrap();
    let server = std::iter::once(("server", vec!["localhost".to_owned()]));
    let clients = clients.iter().map(|cn| (*cn, Vec::new()));
    for (name, sans) in server.chain(clients) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.key")), key.serialize_pem()).unwrap();
    }
}
