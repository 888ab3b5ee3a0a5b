//! Limits on what a caller controls, against the real server: oversized
//! messages, requests that never finish, HTTP/2 floods, too many streams and
//! too many connections. Each overflow gets a clear answer or a closed
//! connection, the server keeps serving everyone else, and its memory stays
//! bounded.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use vault_e2e::hostile::{self, Closed, RawH2, frame};
use vault_e2e::{TestVault, odoo, unique_password};
use vault_proto::v1;
use vault_proto::v1::vault_client::VaultClient as Stub;

/// Memory a flood may add to the server before we call it unbounded.
const FLOOD_MEMORY_KIB: u64 = 64 * 1024;

/// The server still answers a normal call, and has stored what it had.
async fn still_serving(vault: &TestVault, user: &str, expected: usize) {
    let client = vault.client().await;
    let listed = client.list(user).await.expect("list after the attack");
    assert_eq!(listed.len(), expected, "the store changed under attack");
}

/// An HTTP/2 client (the h2 crate) over mutual TLS as `role`.
async fn h2_client(vault: &TestVault, role: &str) -> h2::client::SendRequest<Bytes> {
    let tls = hostile::tls_connect(vault, role).await.unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(String, String)> {
    let status = headers.get("grpc-status")?.to_str().ok()?.to_owned();
    let message = headers
        .get("grpc-message")
        .map(|message| percent_decode(message.as_bytes()))
        .unwrap_or_default();
    Some((status, message))
}

/// `grpc-message` is percent-encoded.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_messages_are_refused_as_resource_exhausted_before_being_read() {
    let vault = TestVault::start();
    let mut stub = Stub::new(vault.channel_as("api").await);

    // A whole message over the limit, sent by a well-behaved client.
    let huge = v1::StoreCredentialRequest {
        user_id: "user-1".into(),
        fields: None,
        secret: vec![b'x'; 100 * 1024],
    };
    let status = stub.store_credential(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limit of 65536 bytes"),
        "{status:?}"
    );

    // A length prefix claiming a gigabyte, with almost nothing behind it:
    // refused from the prefix alone, without waiting for (or buffering)
    // the body.
    let client = h2_client(&vault, "api").await;
    let mut client = client.ready().await.unwrap();
    let (response, mut body) = client
        .send_request(grpc_request("/vault.v1.Vault/StoreCredential"), false)
        .unwrap();
    body.send_data(Bytes::from_static(&[0, 0x40, 0, 0, 0, 1, 2, 3]), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("an answer without the rest of the body")
        .unwrap();
    let (status, message) = grpc_status(response.headers()).expect("a trailers-only answer");
    assert_eq!(
        status,
        (Code::ResourceExhausted as i32).to_string(),
        "{message}"
    );

    still_serving(&vault, "user-1", 0).await;
}

#[tokio::test]
async fn a_request_that_never_finishes_is_cut_off_at_the_call_limit() {
    let vault = TestVault::start_with(&["--max-call-duration", "1s"]);
    let client = vault.client().await;
    client
        .store("user-1", odoo(1), unique_password("slow").as_bytes())
        .await
        .unwrap();

    // Many slow requests on a few connections: each sends its headers and
    // half a message prefix, then nothing.
    let mut pending = Vec::new();
    for _ in 0..4 {
        let mut connection = h2_client(&vault, "api").await;
        for _ in 0..50 {
            connection = connection.ready().await.unwrap();
            let (response, mut body) = connection
                .send_request(grpc_request("/vault.v1.Vault/GetCredential"), false)
                .unwrap();
            body.send_data(Bytes::from_static(&[0, 0, 0, 0, 20, 1]), false)
                .unwrap();
            pending.push((response, body));
        }
    }
    let started = Instant::now();

    // Meanwhile everyone else is served.
    still_serving(&vault, "user-1", 1).await;

    for (response, _body) in pending {
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("the server answers a stalled request")
            .unwrap();
        let (status, message) = grpc_status(response.headers()).expect("a trailers-only answer");
        assert_eq!(
            status,
            (Code::DeadlineExceeded as i32).to_string(),
            "{message}"
        );
        assert!(message.contains("limit of 1s"), "{message}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    still_serving(&vault, "user-1", 1).await;
}

#[tokio::test]
async fn a_reset_flood_is_bounded_and_others_are_still_served() {
    let vault = TestVault::start();
    let client = vault.client().await;
    client
        .store("user-1", odoo(1), unique_password("flood").as_bytes())
        .await
        .unwrap();
    let before = vault.resident_kib();

    // Open and cancel streams as fast as the connection takes them, the
    // "rapid reset" pattern.
    let mut raw = RawH2::connect(&vault, "api").await.unwrap();
    let mut sent = 0u32;
    let mut stream = 1u32;
    let mut write_failed = false;
    for _ in 0..20_000 {
        let opened = raw
            .open_stream(stream, "/vault.v1.Vault/ListCredentials", false)
            .await;
        let reset = raw
            .send(frame::RST_STREAM, 0, stream, &8u32.to_be_bytes())
            .await;
        if opened.is_err() || reset.is_err() {
            write_failed = true;
            break;
        }
        sent += 1;
        stream += 2;
    }
    let _ = raw.flush().await;
    let closed = raw.wait_closed(Duration::from_secs(10)).await;
    eprintln!("reset flood: {sent} streams sent, write failed: {write_failed}, server: {closed:?}");

    still_serving(&vault, "user-1", 1).await;
    let after = vault.resident_kib();
    eprintln!("reset flood: resident memory {before} KiB before, {after} KiB after");
    assert!(after < before + FLOOD_MEMORY_KIB, "{before} -> {after} KiB");
}

#[tokio::test]
async fn huge_and_endless_header_blocks_are_refused() {
    let vault = TestVault::start();
    let before = vault.resident_kib();

    // One megabyte of headers in a HEADERS frame and CONTINUATIONs.
    let mut raw = RawH2::connect(&vault, "api").await.unwrap();
    let filler = "x".repeat(16_000);
    let block =
        hostile::request_headers("/vault.v1.Vault/ListCredentials", &[("x-filler", &filler)]);
    raw.send(frame::HEADERS, 0, 1, &block).await.unwrap();
    let mut refused = false;
    for _ in 0..64 {
        let more = hostile::request_headers("/x", &[("x-filler", &filler)]);
        if raw.send(frame::CONTINUATION, 0, 1, &more).await.is_err() {
            refused = true;
            break;
        }
    }
    let closed = raw.wait_closed(Duration::from_secs(10)).await;
    eprintln!("huge header block: write refused: {refused}, server: {closed:?}");
    assert_ne!(
        closed,
        Closed::StillOpen,
        "a 1 MiB header block was accepted"
    );

    // CONTINUATION frames that never end the block, each small.
    let mut raw = RawH2::connect(&vault, "api").await.unwrap();
    raw.send(
        frame::HEADERS,
        0,
        1,
        &hostile::request_headers("/vault.v1.Vault/ListCredentials", &[]),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut frames = 0u32;
    while started.elapsed() < Duration::from_secs(10) {
        let more = hostile::request_headers("/x", &[("x-more", "y")]);
        if raw.send(frame::CONTINUATION, 0, 1, &more).await.is_err() {
            break;
        }
        frames += 1;
    }
    let closed = raw.wait_closed(Duration::from_secs(5)).await;
    eprintln!(
        "endless header block: {frames} CONTINUATION frames in {:?}, server: {closed:?}",
        started.elapsed()
    );
    assert_ne!(
        closed,
        Closed::StillOpen,
        "an endless header block was accepted"
    );

    still_serving(&vault, "nobody", 0).await;
    let after = vault.resident_kib();
    eprintln!("header floods: resident memory {before} KiB before, {after} KiB after");
    assert!(after < before + FLOOD_MEMORY_KIB, "{before} -> {after} KiB");
}

#[tokio::test]
async fn streams_beyond_the_per_connection_limit_are_refused() {
    let vault = TestVault::start();
    let mut raw = RawH2::connect(&vault, "api").await.unwrap();
    // Open 200 streams at once, ignoring the server's advertised limit;
    // none sends its body, so none finishes.
    for n in 0..200u32 {
        raw.open_stream(1 + 2 * n, "/vault.v1.Vault/ListCredentials", false)
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    let mut advertised = None;
    let mut refused = 0;
    while let Some((kind, flags, stream, payload)) = raw.next_frame(Duration::from_secs(3)).await {
        if kind == frame::SETTINGS && flags == 0 {
            for setting in payload.chunks_exact(6) {
                if setting[..2] == [0, 3] {
                    advertised = Some(u32::from_be_bytes([
                        setting[2], setting[3], setting[4], setting[5],
                    ]));
                }
            }
        }
        // RST_STREAM with REFUSED_STREAM (7).
        if kind == frame::RST_STREAM && payload == 7u32.to_be_bytes() && stream > 0 {
            refused += 1;
        }
        if kind == frame::GOAWAY {
            break;
        }
    }
    assert_eq!(
        advertised,
        Some(vault_server::limits::MAX_STREAMS_PER_CONNECTION)
    );
    eprintln!("200 streams opened, {refused} refused");
    assert!(
        refused >= 200 - 64,
        "only {refused} of the streams over the limit were refused"
    );
    still_serving(&vault, "nobody", 0).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let vault = TestVault::start_with(&["--max-connections", "2"]);
    let first = hostile::tls_connect(&vault, "api").await.unwrap();
    let _second = hostile::tls_connect(&vault, "api").await.unwrap();

    // A third connection waits: its handshake does not complete.
    let third = tokio::spawn({
        let vault_addr = vault.addr();
        let files = vault.tls_files("api");
        async move {
            let started = Instant::now();
            let client = vault_client::VaultClient::connect(&vault_addr.to_string(), Some(&files))
                .await
                .unwrap();
            (
                started.elapsed(),
                client.list("nobody").await.map(|page| page.len()),
            )
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a connection over the limit was served"
    );

    // Closing one frees its slot for the waiting one.
    drop(first);
    let (waited, listed) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert_eq!(listed.unwrap(), 0);
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}
