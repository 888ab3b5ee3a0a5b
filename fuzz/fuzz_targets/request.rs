//! The request handlers of the `Vault` service, called the way tonic calls
//! them after decoding: any bytes that decode as a request get an answer
//! (a status or a response), never a panic, and a decrypt only ever returns
//! a secret that was stored under that user.
//!
//! The first byte picks the call; the rest is its protobuf body. The store
//! lives in a temporary folder (on /dev/shm when it exists, so the durable
//! flush each write waits for stays cheap), shared by every run of the
//! process so that later inputs meet records earlier ones stored.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Request;
use vault_proto::v1;
use vault_proto::v1::vault_server::Vault as _;
use vault_server::access::Policy;
use vault_server::crypto::keyring::Keyring;
use vault_server::keys::KeyManager;
use vault_server::reload::Reloadable;
use vault_server::service::VaultService;
use vault_server::store::SledStore;

/// The plaintext caller may do every data call, for every purpose.
const POLICY: &str = r#"
[roles.fuzz]
operations = ["store", "update", "get", "list", "delete", "erase", "decrypt"]
decrypt_purposes = ["connection-test", "sync"]

[callers]
"insecure-plaintext" = "fuzz"
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    service: VaultService<SledStore>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("vault-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir).expect("open the store");
        let keyring = Keyring::parse(&Keyring::generate_text()).expect("a generated keyring");
        let service = runtime.block_on(async {
            let keys = KeyManager::new(dir.join("keyring"), keyring, &store)
                .await
                .expect("check the keyring");
            let policy = Policy::parse(POLICY).expect("the fuzz policy");
            VaultService::new(store, Arc::new(keys), Reloadable::new(policy))
        });
        Harness { runtime, service }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&call, body)) = data.split_first() else {
        return;
    };
    let Harness { runtime, service } = harness();
    runtime.block_on(async {
        match call % 7 {
            0 => {
                if let Ok(request) = v1::StoreCredentialRequest::decode(body) {
                    let _ = service.store_credential(Request::new(request)).await;
                }
            }
            1 => {
                if let Ok(request) = v1::UpdateCredentialRequest::decode(body) {
                    let _ = service.update_credential(Request::new(request)).await;
                }
            }
            2 => {
                if let Ok(request) = v1::GetCredentialRequest::decode(body) {
                    let user = request.user_id.clone();
                    if let Ok(response) = service.get_credential(Request::new(request)).await {
                        let credential = response.into_inner().credential.expect("a credential");
                        assert_eq!(credential.user_id, user, "another user's credential");
                    }
                }
            }
            3 => {
                if let Ok(request) = v1::ListCredentialsRequest::decode(body) {
                    let user = request.user_id.clone();
                    if let Ok(response) = service.list_credentials(Request::new(request)).await {
                        for credential in response.into_inner().credentials {
                            assert_eq!(credential.user_id, user, "another user's credential");
                        }
                    }
                }
            }
            4 => {
                if let Ok(request) = v1::DecryptCredentialRequest::decode(body) {
                    let _ = service.decrypt_credential(Request::new(request)).await;
                }
            }
            5 => {
                if let Ok(request) = v1::DeleteCredentialRequest::decode(body) {
                    let _ = service.delete_credential(Request::new(request)).await;
                }
            }
            _ => {
                if let Ok(request) = v1::EraseUserRequest::decode(body) {
                    let _ = service.erase_user(Request::new(request)).await;
                }
            }
        }
    });
});
