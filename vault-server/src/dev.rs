//! `--dev`: everything a local vault needs, generated on first start.
//!
//! In the data folder: a keyring with one fresh key, a local CA, a server
//! certificate for `localhost`, 127.0.0.1 and ::1, one client certificate per
//! role of the shipped policy, and that policy mapping the client
//! certificates' identities to their roles. The server then runs with mutual
//! TLS exactly as in production. Nothing here is fit for real credentials:
//! the CA key sits next to the certificates so tests and developers can
//! issue more.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::crypto::keyring::Keyring;
use crate::files::{create_private_dir, write_private};

/// The roles a development setup issues client certificates for.
pub const DEV_ROLES: [&str; 3] = ["api", "sync", "ops"];

/// The identity of a development client certificate of `role`.
pub fn dev_identity(role: &str) -> String {
    format!("spiffe://vault-dev/{role}")
}

/// Where the development files live, relative to the data folder.
#[derive(Debug, Clone)]
pub struct DevLayout {
    root: PathBuf,
}

impl DevLayout {
    /// The layout inside `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.to_path_buf(),
        }
    }

    /// The keyring file.
    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring")
    }

    /// The policy file.
    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.toml")
    }

    /// The folder of certificates and keys.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// A PEM file in the TLS folder, e.g. `("api", "pem")`.
    pub fn tls_file(&self, name: &str, extension: &str) -> PathBuf {
        self.tls_dir().join(format!("{name}.{extension}"))
    }

    /// Creates whatever is missing; returns a line for each file it made.
    pub fn ensure(&self) -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        create_private_dir(&self.root)?;

        if !self.keyring().exists() {
            let database = self.root.join("db");
            if database.exists() {
                anyhow::bail!(
                    "{} holds a database but its keyring {} is missing; a new key could not \
                     open what is stored. Restore the keyring, or remove the data folder to \
                     start afresh",
                    self.root.display(),
                    self.keyring().display()
                );
            }
            write_private(&self.keyring(), Keyring::generate_text().as_bytes())?;
            made.push(format!(
                "created a development keyring at {}",
                self.keyring().display()
            ));
        }
        if !self.tls_dir().exists() {
            self.issue_certificates()?;
            made.push(format!(
                "created a development CA, a server certificate and client certificates for \
                 roles {} in {}",
                DEV_ROLES.join(", "),
                self.tls_dir().display()
            ));
        }
        if !self.policy().exists() {
            write_private(&self.policy(), dev_policy().as_bytes())?;
            made.push(format!(
                "created a development policy at {}",
                self.policy().display()
            ));
        }
        Ok(made)
    }

    fn issue_certificates(&self) -> anyhow::Result<()> {
        // Write into a sibling folder and rename it into place, so that a
        // crash half-way never leaves a partial set that `ensure` would
        // then take as complete.
        let partial = self.root.join("tls.partial");
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        fs::create_dir_all(&partial)?;
        let write = |name: &str, cert: &str, key: &KeyPair| -> anyhow::Result<()> {
            write_private(&partial.join(format!("{name}.pem")), cert.as_bytes())?;
            write_private(
                &partial.join(format!("{name}.key")),
                key.serialize_pem().as_bytes(),
            )
        };

        let ca_key = KeyPair::generate()?;
        let mut ca = params("vault development CA", Vec::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        write("ca", &ca_cert.pem(), &ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = params(
            "vault development server",
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            ],
        )?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write(
            "server",
            &server.signed_by(&server_key, &issuer)?.pem(),
            &server_key,
        )?;

        for role in DEV_ROLES {
            let key = KeyPair::generate()?;
            let mut client = params(
                &format!("vault development {role} client"),
                vec![SanType::URI(dev_identity(role).as_str().try_into()?)],
            )?;
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            write(role, &client.signed_by(&key, &issuer)?.pem(), &key)?;
        }

        fs::rename(&partial, self.tls_dir())?;
        Ok(())
    }
}

/// Certificate parameters valid from an hour ago for one year.
fn params(common_name: &str, names: Vec<SanType>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = names;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    Ok(params)
}

/// The shipped policy's roles, with the development identities as callers.
fn dev_policy() -> String {
    let mut policy = String::from(
        "# Development policy, generated by `vault-server --dev`.\n\
         # Same roles as deploy/policy.toml; callers are the client certificates in tls/.\n\n\
         [roles.api]\n\
         operations = [\"store\", \"update\", \"get\", \"list\", \"delete\", \"erase\", \"decrypt\"]\n\
         decrypt_purposes = [\"connection-test\"]\n\n\
         [roles.sync]\n\
         operations = [\"list\", \"decrypt\"]\n\
         decrypt_purposes = [\"sync\"]\n\n\
         [roles.ops]\n\
         operations = [\"keys\", \"rotate\", \"import\", \"audit\", \"backup\"]\n\n\
         [callers]\n",
    );
    for role in DEV_ROLES {
        policy.push_str(&format!("\"{}\" = \"{role}\"\n", dev_identity(role)));
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Policy;
    use crate::transport::TlsFiles;

    #[test]
    fn a_dev_setup_is_complete_loadable_and_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DevLayout::new(dir.path());
        assert_eq!(layout.ensure().unwrap().len(), 3);
        Keyring::load(&layout.keyring()).unwrap();
        assert!(
            layout.ensure().unwrap().is_empty(),
            "second start creates nothing"
        );

        Policy::load(&layout.policy()).unwrap();
        TlsFiles {
            cert: layout.tls_file("server", "pem"),
            key: layout.tls_file("server", "key"),
            client_ca: layout.tls_file("ca", "pem"),
        }
        .load()
        .unwrap();
        for role in DEV_ROLES {
            assert!(layout.tls_file(role, "pem").exists() && layout.tls_file(role, "key").exists());
        }
    }

    #[test]
    fn the_dev_roles_allow_exactly_what_the_shipped_roles_allow() {
        use crate::access::{Caller, Operation};
        use crate::credential::Purpose;

        let shipped = Policy::parse(include_str!("../../deploy/policy.toml")).unwrap();
        let dev = Policy::parse(&dev_policy()).unwrap();
        let identity = |name: &str| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(name.try_into().unwrap())];
            let key = KeyPair::generate().unwrap();
            Caller::from_certificate(params.self_signed(&key).unwrap().der()).unwrap()
        };
        for role in DEV_ROLES {
            let shipped_caller = identity(&format!("spiffe://example.com/odoo-sync/{role}"));
            let dev_caller = identity(&dev_identity(role));
            for operation in Operation::ALL {
                for purpose in [None, Some(Purpose::ConnectionTest), Some(Purpose::Sync)] {
                    assert_eq!(
                        dev.authorize(&dev_caller, operation, purpose).is_ok(),
                        shipped
                            .authorize(&shipped_caller, operation, purpose)
                            .is_ok(),
                        "{role} {operation} {purpose:?}"
                    );
                }
            }
        }
    }
}
