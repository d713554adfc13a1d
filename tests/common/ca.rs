//! A test certificate authority: leaf certificates for any names, signed at test time with rcgen.

use arc_gateway::proxy::tls::{CertOrigin, LoadedCert};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

pub struct TestCa {
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Arc test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    /// A leaf for `names` with a fresh key of `alg`; returns (cert PEM, PKCS#8 key PEM, key).
    pub fn leaf_with(
        &self,
        names: &[&str],
        key: rcgen::KeyPair,
        not_after: Option<(i32, u8, u8)>,
    ) -> (String, String, rcgen::KeyPair) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("leaf"),
        );
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), key)
    }

    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (cert, key, _) = self.leaf_with(names, key, None);
        (cert, key)
    }

    pub fn loaded(&self, names: &[&str]) -> LoadedCert {
        let (cert, key) = self.leaf(names);
        LoadedCert::from_pem(
            CertOrigin::Other(format!("test {}", names.join(","))),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap()
    }
}
