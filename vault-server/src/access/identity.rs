//! A caller's identity, taken from its verified client certificate.
//!
//! The identity is the certificate's URI subject alternative name (for
//! example `spiffe://example.com/odoo-sync/api`). A certificate must carry
//! at most one URI, and it must be absolute (`scheme:…`): with two, which
//! one names the caller would depend on their order. A certificate without a
//! URI is named by its first DNS name, written `dns:NAME`, so a DNS name can
//! never pose as a URI identity, and no certificate can claim the plaintext
//! listener's identity. The common name is never used. By the time a
//! certificate reaches this code, rustls has verified it against the
//! configured client CA bundle.

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
    /// The certificate names more than one URI.
    #[error("client certificate has more than one URI subject alternative name")]
    SeveralUris,
    /// The URI is not absolute.
    #[error("client certificate's URI subject alternative name is not an absolute URI")]
    RelativeUri,
    /// The name holds spaces, control or non-ASCII characters, which no URI
    /// or DNS name has and which could forge lines in logs and audit
    /// listings.
    #[error("client certificate's name holds characters no URI or DNS name has")]
    BadCharacters,
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

        let mut uris = names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        if let Some(uri) = uris.next() {
            if uris.next().is_some() {
                return Err(IdentityError::SeveralUris);
            }
            let scheme = uri.split_once(':').map_or("", |(scheme, _)| scheme);
            let absolute = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !absolute {
                return Err(IdentityError::RelativeUri);
            }
            return Self::checked(uri.to_owned());
        }
        names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(dns) if !dns.is_empty() => Some(format!("dns:{dns}")),
                _ => None,
            })
            .ok_or(IdentityError::NoName)
            .and_then(Self::checked)
    }

    /// An identity made only of printable ASCII without spaces.
    fn checked(identity: String) -> Result<Self, IdentityError> {
        if identity.chars().all(|c| c.is_ascii_graphic()) {
            Ok(Self(identity))
        } else {
            Err(IdentityError::BadCharacters)
        }
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
    fn a_dns_name_is_used_when_there_is_no_uri_and_marked_as_one() {
        let der = certificate(vec![SanType::DnsName(
            "api.example.com".try_into().unwrap(),
        )]);
        assert_eq!(
            Caller::from_certificate(&der).unwrap().as_str(),
            "dns:api.example.com"
        );
        // A DNS name spelled like a URI identity is still only a DNS name.
        let der = certificate(vec![SanType::DnsName(
            "spiffe://vault-dev/ops".try_into().unwrap(),
        )]);
        assert_eq!(
            Caller::from_certificate(&der).unwrap().as_str(),
            "dns:spiffe://vault-dev/ops"
        );
    }

    #[test]
    fn names_that_could_forge_log_lines_are_refused() {
        for name in [
            "spiffe://vault-dev/x\n2026-12-04 INFO call finished caller=spiffe://vault-dev/ops",
            "spiffe://vault-dev/a b",
            "spiffe://vault-dev/\u{1b}[2J",
        ] {
            let der = certificate(vec![SanType::URI(name.try_into().unwrap())]);
            assert_eq!(
                Caller::from_certificate(&der),
                Err(IdentityError::BadCharacters),
                "{name:?}"
            );
        }
    }

    #[test]
    fn several_or_relative_uris_are_refused() {
        let der = certificate(vec![
            SanType::URI("spiffe://vault-dev/sync".try_into().unwrap()),
            SanType::URI("spiffe://vault-dev/ops".try_into().unwrap()),
        ]);
        assert_eq!(
            Caller::from_certificate(&der),
            Err(IdentityError::SeveralUris)
        );
        let der = certificate(vec![SanType::URI(PLAINTEXT_CALLER.try_into().unwrap())]);
        assert_eq!(
            Caller::from_certificate(&der),
            Err(IdentityError::RelativeUri)
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
