//! The emulator's identity: a freshly generated CA, a server certificate for 127.0.0.1 and
//! localhost signed by it, the rustls server config, and the kubeconfig clients use unchanged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors building the TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS server config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// CA and server certificate for one emulator.
pub struct Identity {
    /// PEM of the CA certificate (what the kubeconfig trusts).
    pub ca_pem: String,
    /// Server configuration for the HTTPS listener.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// Generates a CA and a server certificate valid for 127.0.0.1, ::1 and localhost.
pub fn generate() -> Result<Identity, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "arc-kube-emulator-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.subject_alt_names.push(SanType::IpAddress(
        "::1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = params.signed_by(&server_key, &ca)?;

    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    })
}

/// A kubeconfig (YAML) pointing at `addr` with the CA and bearer token.
pub fn kubeconfig(addr: SocketAddr, ca_pem: &str, token: &str, namespace: &str) -> String {
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: arc-emulator
  cluster:
    server: https://{addr}
    certificate-authority-data: {ca_b64}
users:
- name: arc-emulator
  user:
    token: {token}
contexts:
- name: arc-emulator
  context:
    cluster: arc-emulator
    user: arc-emulator
    namespace: {namespace}
current-context: arc-emulator
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_kubeconfig() {
        let id = generate().unwrap_or_else(|e| panic!("{e}"));
        assert!(id.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let addr: SocketAddr = "127.0.0.1:6443".parse().unwrap_or_else(|e| panic!("{e}"));
        let kc = kubeconfig(addr, &id.ca_pem, "tok", "default");
        let parsed: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&kc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(parsed["users"][0]["user"]["token"].as_str(), Some("tok"));
    }
}
