//! A caller's identity, taken from its verified client certificate.
//!
//! The identity is the certificate's first URI subject alternative name
//! (for example `spiffe://example.com/odoo-sync/api`); a certificate without
//! one is named by its first DNS subject alternative name instead. The
//! common name is never used. By the time a certificate reaches this code,
//! rustls has verified it against the configured client CA bundle.

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The identity of the party making a call.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Caller(String);

/// Identity of every caller on the plaintext listener, which has no client
/// certificates. It gets no permission unless the policy names it.
pub const PLAINTEXT_CALLER: &str = "insecure-plaintext";

/// Why no identity could be read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate could not be parsed.
    #[error("client certificate cannot be parsed")]
    Malformed,
    /// The certificate names no URI or DNS subject alternative name.
    #[error("client certificate has no URI or DNS subject alternative name")]
    NoName,
}

impl Caller {
    /// Reads the identity from a DER-encoded client certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|_| IdentityError::Malformed)?
            .map(|extension| extension.value.general_names.clone())
            .unwrap_or_default();

        let uri = names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let dns = names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        });
        uri.or(dns)
            .filter(|name| !name.is_empty())
            .map(|name| Self(name.to_owned()))
            .ok_or(IdentityError::NoName)
    }

    /// The identity of callers on the plaintext listener.
    pub fn plaintext() -> Self {
        Self(PLAINTEXT_CALLER.to_owned())
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Caller({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn certificate(names: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_uri_name_wins_over_dns_names() {
        let der = certificate(vec![
            SanType::DnsName("sync.example.com".try_into().unwrap()),
            SanType::URI("spiffe://example.com/sync".try_into().unwrap()),
        ]);
        assert_eq!(
            Caller::from_certificate(&der).unwrap().as_str(),
            "spiffe://example.com/sync"
        );
    }

    #[test]
    fn a_dns_name_is_used_when_there_is_no_uri() {
        let der = certificate(vec![SanType::DnsName(
            "api.example.com".try_into().unwrap(),
        )]);
        assert_eq!(
            Caller::from_certificate(&der).unwrap().as_str(),
            "api.example.com"
        );
    }

    #[test]
    fn certificates_without_names_or_garbage_have_no_identity() {
        let der = certificate(vec![SanType::IpAddress([127, 0, 0, 1].into())]);
        assert_eq!(Caller::from_certificate(&der), Err(IdentityError::NoName));
        assert_eq!(
            Caller::from_certificate(b"not a certificate"),
            Err(IdentityError::Malformed)
        );
    }
}
