//! TLS for a service's server and for its calls to peers, through tonic's
//! rustls, and the identity a verified client certificate carries.
//!
//! A server given a certificate and key serves TLS only. Given a client CA
//! as well, it also asks callers for a certificate: one that CA signed
//! identifies its caller by the certificate's subject common name, which
//! the keyring gives a role as it does a token's identity (mTLS). A caller
//! without a certificate still gets in with a bearer token; a certificate
//! the CA did not sign fails the handshake.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// A server's TLS: its certificate chain and key (PEM files), and the CA
/// whose client certificates identify callers (mTLS), if any.
pub fn server(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTlsConfig> {
    let identity = Identity::from_pem(read(cert, "TLS certificate")?, read(key, "TLS key")?);
    let mut config = ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?)).client_auth_optional(true);
    }
    Ok(config)
}

/// A client's TLS: the CA its servers' certificates must chain to (the
/// public web roots when none is given), and the certificate and key it
/// presents as its identity (mTLS), if any.
pub fn client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> anyhow::Result<ClientTlsConfig> {
    let mut config = match ca {
        Some(ca) => ClientTlsConfig::new()
            .timeout(HANDSHAKE_TIMEOUT)
            .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?)),
        None => client_with_web_roots(),
    };
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(read(cert, "TLS certificate")?, read(key, "TLS key")?));
    }
    Ok(config)
}

/// A client's TLS trusting the public web roots, with no certificate of its own.
pub fn client_with_web_roots() -> ClientTlsConfig {
    ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT).with_webpki_roots()
}

/// The identity of a call's verified client certificate: the subject
/// common name of the first certificate the caller presented. `None` for
/// a call without TLS or without a client certificate. Only a server with
/// a client CA asks for certificates, and rustls has verified the chain
/// before any call arrives.
pub fn client_identity<B>(req: &http::Request<B>) -> Option<String> {
    let certs: Arc<Vec<_>> = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    common_name(certs.first()?.as_ref())
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let subject = &cert.tbs_certificate.subject;
    subject.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN).and_then(
        |atv| {
            let value = &atv.value;
            Utf8StringRef::try_from(value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| PrintableStringRef::try_from(value).map(|s| s.as_str().to_owned()))
                .ok()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme");
        params.distinguished_name.push(rcgen::DnType::CommonName, "marketing-service");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        assert_eq!(common_name(cert.der()).as_deref(), Some("marketing-service"));

        let mut unnamed_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        unnamed_params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = unnamed_params.self_signed(&key).expect("certificate");
        assert_eq!(common_name(cert.der()), None);
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
