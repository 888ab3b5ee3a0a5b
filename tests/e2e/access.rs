//! Callers prove who they are with client certificates, and each may do only
//! its role's job. Every test talks to the real server over real TLS.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vault_client::{ClientError, Purpose, VaultClient};
use vault_e2e::{TestVault, contains, odoo};
use vault_proto::v1::{self, vault_client::VaultClient as Stub};

/// Makes one gRPC call over a connection set up with `tls` (or plaintext
/// when `None`). Returns whether the call reached the service at all.
async fn call_reaches_service(server: &TestVault, tls: Option<ClientTlsConfig>) -> bool {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", server.addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let request = v1::ListCredentialsRequest {
        user_id: "anyone".into(),
        ..Default::default()
    };
    match Stub::new(channel).list_credentials(request).await {
        Ok(_) => true,
        // A status the service itself produced would mean a handler ran.
        Err(status) => matches!(
            status.code(),
            Code::PermissionDenied | Code::InvalidArgument | Code::NotFound | Code::Unauthenticated
        ),
    }
}

fn ca_certificate(server: &TestVault) -> Certificate {
    Certificate::from_pem(fs::read(server.dev_layout().tls_file("ca", "pem")).unwrap())
}

/// A client certificate for the dev `api` identity, signed by `issuer`,
/// valid between the two offsets from now (in days).
fn client_identity(issuer: &Issuer<'_, KeyPair>, from_days: i64, to_days: i64) -> Identity {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI("spiffe://vault-dev/api".try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

fn dev_issuer(server: &TestVault) -> Issuer<'static, KeyPair> {
    let layout = server.dev_layout();
    let key =
        KeyPair::from_pem(&fs::read_to_string(layout.tls_file("ca", "key")).unwrap()).unwrap();
    Issuer::from_ca_cert_pem(
        &fs::read_to_string(layout.tls_file("ca", "pem")).unwrap(),
        key,
    )
    .unwrap()
}

#[tokio::test]
async fn connections_without_a_valid_client_certificate_never_reach_a_handler() {
    let server = TestVault::start();
    let ca = ca_certificate(&server);

    let other_ca_key = KeyPair::generate().unwrap();
    let mut other_ca = CertificateParams::default();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_ca, other_ca_key);

    let refused = [
        (
            "no client certificate",
            Some(ClientTlsConfig::new().ca_certificate(ca.clone())),
        ),
        (
            "a certificate from another CA",
            Some(
                ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(client_identity(&other_issuer, -2, 30)),
            ),
        ),
        (
            "an expired certificate",
            Some(
                ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(client_identity(&dev_issuer(&server), -30, -1)),
            ),
        ),
        ("a plaintext HTTP/2 client", None),
    ];
    for (what, tls) in refused {
        assert!(
            !call_reaches_service(&server, tls).await,
            "{what} reached the service"
        );
    }

    // The control: the same call with the dev CA's valid api certificate.
    let valid = ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(client_identity(&dev_issuer(&server), -1, 30));
    assert!(call_reaches_service(&server, Some(valid)).await);

    let log = String::from_utf8_lossy(&server.log()).into_owned();
    assert!(log.matches("TLS handshake failed").count() >= 3, "{log}");
    assert_eq!(
        log.matches("call finished").count(),
        1,
        "only the valid call ran: {log}"
    );
    assert!(!log.contains("call refused"), "{log}");
}

/// A TLS 1.1 ClientHello, written out byte by byte: rustls cannot even
/// produce one, so the test speaks the old protocol itself.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    // Suites the server does implement (ECDHE with AES-GCM), so that the
    // version is the only thing it can object to.
    let suites: [u8; 8] = [0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null only
    // The extensions a modern server needs to pick a certificate and a key
    // exchange, so that again only the version is left to object to.
    let extensions: &[u8] = &[
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04, // signature_algorithms
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02]; // handshake record, TLS 1.1
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn rustls_client(
    server: &TestVault,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ClientConfig {
    let layout = server.dev_layout();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(layout.tls_file("ca", "pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(layout.tls_file("api", "pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(layout.tls_file("api", "key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let server = TestVault::start();

    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = [0u8; 7];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply))
        .await
        .expect("the server answers at once");
    let read = read.unwrap_or(0);
    // Either a fatal alert record (content type 21) saying protocol_version
    // (70), or a closed connection; never a ServerHello.
    if read > 0 {
        assert_eq!(reply[0], 21, "expected an alert, got {:?}", &reply[..read]);
        assert_eq!(
            reply[6],
            70,
            "expected protocol_version, got {:?}",
            &reply[..read]
        );
    }

    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(rustls_client(&server, version)));
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let name = ServerName::IpAddress(server.addr().ip().into());
        let tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
    }
}

fn denied(result: Result<impl std::fmt::Debug, ClientError>, operation: &str, role: &str) {
    match result {
        Err(ClientError::Status(status)) if status.code() == Code::PermissionDenied => {
            let message = status.message();
            assert!(
                message.contains(operation),
                "{message} should name {operation}"
            );
            assert!(
                message.contains(&format!("spiffe://vault-dev/{role}")),
                "{message}"
            );
        }
        other => panic!("{role} {operation}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[tokio::test]
async fn each_role_does_only_its_own_job_and_refusals_change_nothing() {
    let server = TestVault::start();
    let (api, sync, ops) = (
        server.client().await,
        server.sync_client().await,
        server.client_as("ops").await,
    );
    let stored = api.store("kim", odoo(1), b"kim-secret").await.unwrap();
    let id = stored.id.as_str();

    denied(sync.store("kim", odoo(2), b"x").await, "store", "sync");
    denied(
        sync.update("kim", id, Some(odoo(3)), None).await,
        "update",
        "sync",
    );
    denied(sync.delete("kim", id).await, "delete", "sync");
    denied(sync.erase("kim").await, "erase", "sync");
    denied(sync.get("kim", id).await, "get", "sync");
    denied(
        sync.decrypt("kim", id, Purpose::ConnectionTest).await,
        "connection-test",
        "sync",
    );

    for purpose in [Purpose::Sync, Purpose::ConnectionTest] {
        denied(ops.decrypt("kim", id, purpose).await, "decrypt", "ops");
    }
    denied(ops.get("kim", id).await, "get", "ops");
    denied(ops.list("kim").await, "list", "ops");
    denied(ops.store("kim", odoo(4), b"x").await, "store", "ops");

    denied(api.decrypt("kim", id, Purpose::Sync).await, "sync", "api");

    // What each role may do, it can; and nothing refused changed anything.
    assert_eq!(api.get("kim", id).await.unwrap(), stored);
    assert_eq!(sync.list("kim").await.unwrap(), vec![stored.clone()]);
    for (client, purpose) in [(&api, Purpose::ConnectionTest), (&sync, Purpose::Sync)] {
        let secret = client.decrypt("kim", id, purpose).await.unwrap();
        assert_eq!(secret.expose_secret(), b"kim-secret");
    }
}

/// Retries `check` for up to ten seconds: a reload happens asynchronously
/// after SIGHUP.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

async fn sync_may_decrypt(sync: &VaultClient, id: &str) -> bool {
    match sync.decrypt("lee", id, Purpose::Sync).await {
        Ok(_) => true,
        Err(err) if err.code() == Some(Code::PermissionDenied) => false,
        Err(err) => panic!("unexpected {err}"),
    }
}

#[tokio::test]
async fn a_policy_change_holds_after_sighup_and_established_connections_keep_working() {
    let server = TestVault::start();
    let api = server.client().await;
    let sync = server.sync_client().await;
    let id = api.store("lee", odoo(1), b"lee-secret").await.unwrap().id;
    assert!(sync_may_decrypt(&sync, &id).await);

    // Take decrypt away from the sync role.
    let policy_path = server.dev_layout().policy();
    let original = fs::read_to_string(&policy_path).unwrap();
    let revoked = original.replace(
        "operations = [\"list\", \"decrypt\"]\ndecrypt_purposes = [\"sync\"]",
        "operations = [\"list\"]",
    );
    assert_ne!(
        original, revoked,
        "the dev policy has the expected sync role"
    );
    fs::write(&policy_path, &revoked).unwrap();
    server.hang_up();
    eventually("the new policy", async || {
        !sync_may_decrypt(&sync, &id).await
    })
    .await;

    // The connections made before the reload still carry calls.
    assert_eq!(sync.list("lee").await.unwrap().len(), 1);
    assert_eq!(api.get("lee", &id).await.unwrap().id, id);
    // And a new connection gets the new rule too.
    assert!(!sync_may_decrypt(&server.sync_client().await, &id).await);

    // A broken policy file is refused and the last good one stays.
    fs::write(&policy_path, "this is [not a policy").unwrap();
    server.hang_up();
    eventually("the refusal in the log", async || {
        contains(&server.log(), b"policy reload refused")
    })
    .await;
    assert!(!sync_may_decrypt(&sync, &id).await);
    assert_eq!(sync.list("lee").await.unwrap().len(), 1);

    // Restoring the file and hanging up again restores the permission.
    fs::write(&policy_path, &original).unwrap();
    server.hang_up();
    eventually("the restored policy", async || {
        sync_may_decrypt(&sync, &id).await
    })
    .await;

    // Each reload, accepted or refused, is in the audit trail.
    let ops = server.client_as("ops").await;
    let filter = vault_client::ListAuditEventsRequest {
        operation: "reload.policy".into(),
        ..Default::default()
    };
    let (reloads, _) = ops.list_audit(filter).await.unwrap();
    let outcomes: Vec<&str> = reloads.iter().map(|event| event.outcome.as_str()).collect();
    assert_eq!(outcomes, ["Ok", "FailedPrecondition", "Ok"]);
    assert!(reloads.iter().all(|event| event.caller == "signal:SIGHUP"));
}

#[tokio::test]
async fn new_server_certificates_are_served_after_sighup() {
    let server = TestVault::start();
    let api = server.client().await;
    let id = api.store("mia", odoo(1), b"mia-secret").await.unwrap().id;

    let layout = server.dev_layout();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let renewed = params.signed_by(&key, &dev_issuer(&server)).unwrap();
    fs::write(layout.tls_file("server", "pem"), renewed.pem()).unwrap();
    fs::write(layout.tls_file("server", "key"), key.serialize_pem()).unwrap();
    server.hang_up();

    let config = Arc::new(rustls_client(&server, &rustls::version::TLS13));
    eventually("the renewed certificate", async || {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let name = ServerName::IpAddress(server.addr().ip().into());
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        served.as_ref() == renewed.der().as_ref()
    })
    .await;

    // The connection made with the old certificate keeps working.
    let secret = api
        .decrypt("mia", &id, Purpose::ConnectionTest)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), b"mia-secret");
}

#[tokio::test]
async fn plaintext_is_loopback_only_and_gets_no_permission_by_default() {
    let refused = std::process::Command::new(vault_e2e::server_binary())
        .args([
            "--dev",
            "--insecure-plaintext",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("loopback"), "{message}");

    let server = TestVault::start_with(&["--insecure-plaintext"]);
    let vault = VaultClient::connect(&server.addr().to_string(), None)
        .await
        .unwrap();
    match vault.list("nina").await {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::PermissionDenied);
            assert!(
                status.message().contains("insecure-plaintext"),
                "{}",
                status.message()
            );
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}
