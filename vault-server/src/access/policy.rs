//! The access policy: identities to roles, roles to permissions.
//!
//! The policy is a TOML file:
//!
//! ```toml
//! [roles.api]
//! operations = ["store", "update", "get", "list", "delete", "erase", "decrypt"]
//! decrypt_purposes = ["connection-test"]
//!
//! [roles.sync]
//! operations = ["list", "decrypt"]
//! decrypt_purposes = ["sync"]
//!
//! [roles.ops]
//! operations = ["keys", "rotate", "import", "audit", "backup"]
//!
//! [callers]
//! "spiffe://example.com/api" = "api"
//! "spiffe://example.com/sync" = "sync"
//! "spiffe://example.com/ops" = "ops"
//! ```
//!
//! Loading checks the whole file and refuses it if anything is off: unknown
//! keys, operations or purposes, a caller naming a missing role, `decrypt`
//! without purposes or purposes without `decrypt`. One rule holds whatever
//! the file says: a role that may use an administrative operation (keys,
//! rotation, import, audit, backup) may never decrypt, so no operator identity can
//! ever be shown a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::Caller;
use crate::credential::Purpose;

/// Something a caller asks the vault to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// StoreCredential.
    Store,
    /// UpdateCredential.
    Update,
    /// GetCredential.
    Get,
    /// ListCredentials.
    List,
    /// DecryptCredential.
    Decrypt,
    /// DeleteCredential.
    Delete,
    /// EraseUser.
    Erase,
    /// Key management: list key versions, reload the keyring.
    Keys,
    /// Re-encrypting records under the primary key.
    Rotate,
    /// Importing credentials sealed by another application's Fernet key.
    Import,
    /// Reading and verifying the audit trail.
    Audit,
    /// Taking a backup of the whole store (ciphertext, never a key).
    Backup,
}

impl Operation {
    /// Every operation, in the order the policy documents them.
    pub const ALL: [Operation; 12] = [
        Operation::Store,
        Operation::Update,
        Operation::Get,
        Operation::List,
        Operation::Decrypt,
        Operation::Delete,
        Operation::Erase,
        Operation::Keys,
        Operation::Rotate,
        Operation::Import,
        Operation::Audit,
        Operation::Backup,
    ];

    /// The operation's name in the policy file and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Store => "store",
            Operation::Update => "update",
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Decrypt => "decrypt",
            Operation::Delete => "delete",
            Operation::Erase => "erase",
            Operation::Keys => "keys",
            Operation::Rotate => "rotate",
            Operation::Import => "import",
            Operation::Audit => "audit",
            Operation::Backup => "backup",
        }
    }

    /// Whether this is an operator's task rather than a data operation.
    pub fn is_administrative(self) -> bool {
        matches!(
            self,
            Operation::Keys
                | Operation::Rotate
                | Operation::Import
                | Operation::Audit
                | Operation::Backup
        )
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused call: who asked for what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The identity is not in the policy.
    #[error(
        "caller {caller} is not allowed to {operation}: the identity has no role in the policy"
    )]
    UnknownCaller {
        /// Who called.
        caller: Caller,
        /// What they asked.
        operation: Operation,
    },
    /// The caller's role lacks the operation.
    #[error("caller {caller} (role {role}) is not allowed to {operation}")]
    Operation {
        /// Who called.
        caller: Caller,
        /// Their role.
        role: String,
        /// What they asked.
        operation: Operation,
    },
    /// The caller's role may decrypt, but not for this purpose.
    #[error("caller {caller} (role {role}) is not allowed to decrypt for {}", purpose.as_str())]
    Purpose {
        /// Who called.
        caller: Caller,
        /// Their role.
        role: String,
        /// The purpose they stated.
        purpose: Purpose,
    },
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("policy is not valid: {0}")]
    Syntax(String),
    /// The file defines no role or no caller: most likely an empty or cut
    /// off file, which would lock every caller out.
    #[error("policy is not valid: it defines no {0}; refusing an empty or truncated policy")]
    Empty(&'static str),
    /// The file is well-formed but says something the vault will not do.
    #[error("policy is not valid: {0}")]
    Invalid(String),
}

/// What one role may do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Role {
    operations: BTreeSet<Operation>,
    purposes: BTreeSet<Purpose>,
}

/// A loaded, checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    roles: BTreeMap<String, Role>,
    callers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, RoleFile>,
    #[serde(default)]
    callers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    operations: Vec<String>,
    #[serde(default)]
    decrypt_purposes: Vec<String>,
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and checks policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|err| PolicyError::Syntax(err.to_string()))?;

        if file.roles.is_empty() {
            return Err(PolicyError::Empty("role"));
        }
        if file.callers.is_empty() {
            return Err(PolicyError::Empty("caller"));
        }
        let mut roles = BTreeMap::new();
        for (name, role) in file.roles {
            roles.insert(name.clone(), check_role(&name, role)?);
        }
        for (caller, role) in &file.callers {
            if !roles.contains_key(role) {
                return Err(PolicyError::Invalid(format!(
                    "caller {caller:?} has role {role:?}, which is not defined"
                )));
            }
        }
        Ok(Self {
            roles,
            callers: file.callers,
        })
    }

    /// Allows or refuses `caller` doing `operation`. For a decrypt, pass the
    /// purpose once it is known; `None` checks the operation alone.
    pub fn authorize(
        &self,
        caller: &Caller,
        operation: Operation,
        purpose: Option<Purpose>,
    ) -> Result<(), Denied> {
        let Some((role_name, role)) = self
            .callers
            .get(caller.as_str())
            .and_then(|name| self.roles.get_key_value(name))
        else {
            return Err(Denied::UnknownCaller {
                caller: caller.clone(),
                operation,
            });
        };
        if !role.operations.contains(&operation) {
            return Err(Denied::Operation {
                caller: caller.clone(),
                role: role_name.clone(),
                operation,
            });
        }
        match purpose {
            Some(purpose) if !role.purposes.contains(&purpose) => Err(Denied::Purpose {
                caller: caller.clone(),
                role: role_name.clone(),
                purpose,
            }),
            _ => Ok(()),
        }
    }

    /// A one-line description for logs and the audit trail.
    pub fn summary(&self) -> String {
        format!("roles={} callers={}", self.roles.len(), self.callers.len())
    }
}

fn check_role(name: &str, role: RoleFile) -> Result<Role, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid(format!("role {name:?}: {message}"));

    let mut operations = BTreeSet::new();
    for op in &role.operations {
        let parsed = Operation::parse(op).ok_or_else(|| {
            let known: Vec<_> = Operation::ALL.iter().map(|op| op.as_str()).collect();
            invalid(format!(
                "unknown operation {op:?} (known: {})",
                known.join(", ")
            ))
        })?;
        operations.insert(parsed);
    }
    let mut purposes = BTreeSet::new();
    for purpose in &role.decrypt_purposes {
        let parsed = match purpose.as_str() {
            "connection-test" => Purpose::ConnectionTest,
            "sync" => Purpose::Sync,
            _ => {
                return Err(invalid(format!(
                    "unknown decrypt purpose {purpose:?} (known: connection-test, sync)"
                )));
            }
        };
        purposes.insert(parsed);
    }

    let decrypts = operations.contains(&Operation::Decrypt);
    if decrypts && purposes.is_empty() {
        return Err(invalid(
            "allows decrypt but names no decrypt_purposes".into(),
        ));
    }
    if !decrypts && !purposes.is_empty() {
        return Err(invalid(
            "names decrypt_purposes but does not allow decrypt".into(),
        ));
    }
    if decrypts && let Some(admin) = operations.iter().find(|op| op.is_administrative()) {
        return Err(invalid(format!(
            "allows both decrypt and the administrative operation {admin}; an operator role \
             may never decrypt"
        )));
    }
    Ok(Role {
        operations,
        purposes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../deploy/policy.toml");

    fn caller(name: &str) -> Caller {
        let der = {
            let mut params = rcgen::CertificateParams::default();
            params.subject_alt_names = vec![rcgen::SanType::URI(name.try_into().unwrap())];
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        Caller::from_certificate(&der).unwrap()
    }

    #[test]
    fn the_shipped_policy_gives_each_role_exactly_its_job() {
        let policy = Policy::parse(SHIPPED).unwrap();
        let (api, sync, ops) = (
            caller("spiffe://example.com/odoo-sync/api"),
            caller("spiffe://example.com/odoo-sync/sync"),
            caller("spiffe://example.com/odoo-sync/ops"),
        );
        for op in Operation::ALL {
            let api_allowed = !op.is_administrative();
            let sync_allowed = matches!(op, Operation::List | Operation::Decrypt);
            assert_eq!(
                policy.authorize(&api, op, None).is_ok(),
                api_allowed,
                "api {op}"
            );
            assert_eq!(
                policy.authorize(&sync, op, None).is_ok(),
                sync_allowed,
                "sync {op}"
            );
            assert_eq!(
                policy.authorize(&ops, op, None).is_ok(),
                op.is_administrative(),
                "ops {op}"
            );
        }
        let decrypt = |who, purpose| policy.authorize(who, Operation::Decrypt, Some(purpose));
        assert!(decrypt(&api, Purpose::ConnectionTest).is_ok());
        assert!(matches!(
            decrypt(&api, Purpose::Sync),
            Err(Denied::Purpose { .. })
        ));
        assert!(decrypt(&sync, Purpose::Sync).is_ok());
        assert!(matches!(
            decrypt(&sync, Purpose::ConnectionTest),
            Err(Denied::Purpose { .. })
        ));
        assert!(matches!(
            decrypt(&ops, Purpose::Sync),
            Err(Denied::Operation { .. })
        ));
    }

    #[test]
    fn refusals_name_the_operation_and_the_identity() {
        let policy = Policy::parse(SHIPPED).unwrap();
        let stranger = caller("spiffe://elsewhere/x");
        let message = policy
            .authorize(&stranger, Operation::Get, None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("spiffe://elsewhere/x") && message.contains("get"),
            "{message}"
        );
        let sync = caller("spiffe://example.com/odoo-sync/sync");
        let message = policy
            .authorize(&sync, Operation::Store, None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("odoo-sync/sync") && message.contains("store"),
            "{message}"
        );
    }

    #[test]
    fn an_operator_role_can_never_decrypt() {
        let text = r#"
            [roles.ops]
            operations = ["audit", "decrypt"]
            decrypt_purposes = ["sync"]
            [callers]
            x = "ops"
        "#;
        let message = Policy::parse(text).unwrap_err().to_string();
        assert!(message.contains("may never decrypt"), "{message}");
    }

    #[test]
    fn a_role_that_may_take_backups_can_never_decrypt() {
        let text = r#"
            [roles.backups]
            operations = ["backup", "decrypt"]
            decrypt_purposes = ["sync"]
            [callers]
            x = "backups"
        "#;
        let message = Policy::parse(text).unwrap_err().to_string();
        assert!(
            message.contains("administrative operation backup"),
            "{message}"
        );
    }

    #[test]
    fn inconsistent_policies_are_refused() {
        let with_caller = |role: &str| format!("{role}\n[callers]\nx = \"a\"");
        let cases = [
            (
                with_caller("[roles.a]\noperations = [\"fly\"]"),
                "unknown operation",
            ),
            (
                with_caller("[roles.a]\noperations = [\"decrypt\"]"),
                "no decrypt_purposes",
            ),
            (
                with_caller("[roles.a]\noperations = [\"get\"]\ndecrypt_purposes = [\"sync\"]"),
                "does not allow",
            ),
            (
                with_caller("[roles.a]\noperations = [\"decrypt\"]\ndecrypt_purposes = [\"fun\"]"),
                "unknown decrypt purpose",
            ),
            (
                "[roles.a]\noperations = [\"get\"]\n[callers]\nx = \"nobody\"".into(),
                "not defined",
            ),
            (String::new(), "defines no role"),
            (
                "[roles.a]\noperations = [\"get\"]".into(),
                "defines no caller",
            ),
            (
                "[roles.a]\noperations = []\nextra = 1".into(),
                "unknown field",
            ),
            ("not toml at all [".into(), "not valid"),
        ];
        for (text, expected) in cases {
            let message = Policy::parse(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }
}
