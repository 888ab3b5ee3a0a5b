//! The standard endpoints of the real server: gRPC health (on the mutual-TLS
//! port and on a plaintext probe port), server reflection, Prometheus
//! metrics, and JSON logs carrying the caller's request id.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use vault_client::Purpose;
use vault_e2e::{TestVault, odoo};
use vault_proto::v1;

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn health(channel: tonic::transport::Channel, service: &str) -> ServingStatus {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    reply.into_inner().status()
}

#[tokio::test]
async fn health_is_served_on_both_ports_and_reflection_lists_the_api() {
    let probe_addr = free_port();
    let vault = TestVault::start_with(&["--health-listen", &probe_addr.to_string()]);
    for service in ["", "vault.v1.Vault", "vault.v1.Admin"] {
        assert_eq!(
            health(vault.channel_as("api").await, service).await,
            ServingStatus::Serving
        );
    }
    // The probe port needs no certificate and serves nothing else.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{probe_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(plain.clone(), "").await, ServingStatus::Serving);
    let mut stub = v1::vault_client::VaultClient::new(plain);
    let refused = stub
        .list_credentials(v1::ListCredentialsRequest {
            user_id: "u".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    // Reflection lists the services, as `grpcurl list` would.
    let mut reflection = ServerReflectionClient::new(vault.channel_as("api").await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a list of services: {reply:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in ["vault.v1.Vault", "vault.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|name| name == expected), "{names:?}");
    }
}

fn scrape(addr: SocketAddr) -> String {
    let mut connection = TcpStream::connect(addr).unwrap();
    connection
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    connection.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test]
async fn metrics_count_calls_and_decrypts_without_naming_users() {
    let metrics_addr = free_port();
    let vault = TestVault::start_with(&["--metrics-listen", &metrics_addr.to_string()]);
    let api = vault.client().await;
    let stored = api.store("user-metrics-7", odoo(1), b"pw").await.unwrap();
    vault
        .sync_client()
        .await
        .decrypt("user-metrics-7", &stored.id, Purpose::Sync)
        .await
        .unwrap();
    api.get("user-metrics-7", "0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();

    // The gauges are sampled every few seconds.
    let mut text = String::new();
    for _ in 0..40 {
        text = scrape(metrics_addr);
        if text.contains("vault_records{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for expected in [
        "vault_calls_total{operation=\"store\",outcome=\"Ok\"} 1",
        "vault_calls_total{operation=\"get\",outcome=\"NotFound\"} 1",
        "vault_decrypts_total{purpose=\"sync\",caller=\"spiffe://vault-dev/sync\"} 1",
        "vault_call_duration_seconds_bucket{operation=\"decrypt\"",
        "vault_records{key_version=\"1\"} 1",
        "vault_audit_chain_length",
        "vault_store_writable 1",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
    assert!(
        !text.contains("user-metrics-7") && !text.contains(&stored.id),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_callers_request_id_on_every_line_of_a_call() {
    let vault = TestVault::start_with(&["--log-format", "json"]);
    let mut stub = v1::vault_client::VaultClient::new(vault.channel_as("api").await);
    let mut request = tonic::Request::new(v1::ListCredentialsRequest {
        user_id: "user-1".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-e2e-4711".parse().unwrap());
    stub.list_credentials(request).await.unwrap();

    let log = String::from_utf8(vault.log()).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{log}");
    let of_the_call: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["span"]["op"] == "list")
        .collect();
    assert!(!of_the_call.is_empty(), "{log}");
    for line in of_the_call {
        assert_eq!(line["span"]["request_id"], "req-e2e-4711", "{line}");
    }
}

#[tokio::test]
async fn vaultctl_prints_json_for_scripts_and_exits_with_documented_codes() {
    let vault = TestVault::start();
    let stored = vault
        .client()
        .await
        .store("user-json", odoo(3), b"pw")
        .await
        .unwrap();
    let json = |role: &str, args: &[&str]| {
        let output = vault.vaultctl(role, args);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };

    let got = json(
        "api",
        &["--json", "get", "--user", "user-json", "--id", &stored.id],
    );
    assert_eq!(got["id"], stored.id.as_str());
    assert_eq!(got["database"], "db3");
    let listed = json("api", &["list", "--user", "user-json", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let keys = json("ops", &["--json", "keys"]);
    assert_eq!(keys["keys"][0]["records"], 1);
    assert_eq!(keys["keys"][0]["primary"], true);
    let verify = json("ops", &["--json", "audit", "verify"]);
    assert_eq!(verify["intact"], true);
    let deleted = json(
        "api",
        &[
            "--json",
            "delete",
            "--user",
            "user-json",
            "--id",
            &stored.id,
        ],
    );
    assert_eq!(deleted["deleted"], stored.id.as_str());

    // Failures: exit 1 with the gRPC code on standard error; 2 for usage.
    let missing = vault.vaultctl("api", &["get", "--user", "user-json", "--id", &stored.id]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("(NotFound)"));
    let usage = vault.vaultctl("api", &["get", "--user", "user-json"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn the_side_ports_are_bounded_and_cannot_starve_the_main_port() {
    let (metrics_addr, probe_addr) = (free_port(), free_port());
    let vault = TestVault::start_with(&[
        "--metrics-listen",
        &metrics_addr.to_string(),
        "--health-listen",
        &probe_addr.to_string(),
    ]);

    // Metrics: only GET /metrics.
    let ask = |request: &str| {
        let mut connection = TcpStream::connect(metrics_addr).unwrap();
        connection.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).unwrap();
        response
    };
    assert!(ask("DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(ask("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));

    // Many idle half-requests on the metrics port, and many idle HTTP/2
    // connections on the health port: the main port still answers.
    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut metrics = TcpStream::connect(metrics_addr).unwrap();
        metrics
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(metrics);
        let mut health = TcpStream::connect(probe_addr).unwrap();
        health
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        idle.push(health);
    }
    let started = std::time::Instant::now();
    vault.client().await.list("nobody").await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // The health port advertises the same stream limit as the main port.
    let mut raw = TcpStream::connect_timeout(&probe_addr, std::time::Duration::from_secs(30));
    drop(idle);
    let raw = raw.as_mut().unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut header = [0u8; 9];
    raw.read_exact(&mut header).unwrap();
    assert_eq!(header[3], 4, "the server's first frame is SETTINGS");
    let mut payload = vec![0; usize::from(header[2]) | (usize::from(header[1]) << 8)];
    raw.read_exact(&mut payload).unwrap();
    let streams = payload
        .chunks_exact(6)
        .find(|setting| setting[..2] == [0, 3])
        .map(|setting| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
    assert_eq!(
        streams,
        Some(vault_server::limits::MAX_STREAMS_PER_CONNECTION)
    );
}
