//! Bad input answers INVALID_ARGUMENT, names the field, and stores nothing.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use tonic::Code;
use vault_e2e::{TestVault, odoo};
use vault_proto::v1::{self, vault_client::VaultClient as Stub};

fn request_fields(url: &str, database: &str, username: &str) -> Option<v1::CredentialFields> {
    Some(v1::CredentialFields {
        kind: Some(v1::credential_fields::Kind::Odoo(v1::OdooConnection {
            url: url.into(),
            database: database.into(),
            username: username.into(),
        })),
    })
}

fn store_request(
    user_id: &str,
    fields: Option<v1::CredentialFields>,
    secret: &[u8],
) -> v1::StoreCredentialRequest {
    v1::StoreCredentialRequest {
        user_id: user_id.into(),
        fields,
        secret: secret.to_vec(),
    }
}

fn assert_invalid(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message {:?} should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn bad_stores_are_refused_naming_the_field_and_store_nothing() {
    let server = TestVault::start();
    let mut stub = Stub::new(server.channel_as("api").await);
    let good = || request_fields("https://odoo.example.com", "prod", "sync");
    let long = "x".repeat(256);
    let long_url = format!("https://odoo.example.com/{}", "p".repeat(2048));

    let cases = [
        (store_request("", good(), b"pw"), "user_id"),
        (store_request("not allowed", good(), b"pw"), "user_id"),
        (store_request(&"u".repeat(129), good(), b"pw"), "user_id"),
        (store_request("ivan", None, b"pw"), "fields"),
        (
            store_request("ivan", Some(v1::CredentialFields { kind: None }), b"pw"),
            "fields",
        ),
        (
            store_request("ivan", request_fields("", "prod", "sync"), b"pw"),
            "fields.odoo.url",
        ),
        (
            store_request(
                "ivan",
                request_fields("ftp://odoo.example.com", "prod", "sync"),
                b"pw",
            ),
            "fields.odoo.url",
        ),
        (
            store_request(
                "ivan",
                request_fields("file:///etc/passwd", "prod", "sync"),
                b"pw",
            ),
            "fields.odoo.url",
        ),
        (
            store_request(
                "ivan",
                request_fields("odoo.example.com", "prod", "sync"),
                b"pw",
            ),
            "fields.odoo.url",
        ),
        (
            store_request("ivan", request_fields(&long_url, "prod", "sync"), b"pw"),
            "fields.odoo.url",
        ),
        (
            store_request(
                "ivan",
                request_fields("https://odoo.example.com", "", "sync"),
                b"pw",
            ),
            "fields.odoo.database",
        ),
        (
            store_request(
                "ivan",
                request_fields("https://odoo.example.com", &long, "sync"),
                b"pw",
            ),
            "fields.odoo.database",
        ),
        (
            store_request(
                "ivan",
                request_fields("https://odoo.example.com", "prod", ""),
                b"pw",
            ),
            "fields.odoo.username",
        ),
        (
            store_request(
                "ivan",
                request_fields("https://odoo.example.com", "prod", "a\u{7}b"),
                b"pw",
            ),
            "fields.odoo.username",
        ),
        (store_request("ivan", good(), b""), "secret"),
        (store_request("ivan", good(), &[b's'; 4097]), "secret"),
    ];
    for (request, field) in cases {
        let status = stub.store_credential(request).await.unwrap_err();
        assert_invalid(status, field);
    }

    // The largest allowed secret is fine, and nothing refused was stored.
    let listed = stub
        .list_credentials(v1::ListCredentialsRequest {
            user_id: "ivan".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.credentials.is_empty(),
        "a refused store left a record"
    );
    stub.store_credential(store_request("ivan", good(), &[b's'; 4096]))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_ids_purposes_and_pages_are_refused_and_change_nothing() {
    let server = TestVault::start();
    let vault = server.client().await;
    let stored = vault.store("judy", odoo(1), b"judy-secret").await.unwrap();
    let mut stub = Stub::new(server.channel_as("api").await);

    for bad_id in [
        "",
        "xyz",
        "0123456789ABCDEF0123456789ABCDEF",
        &format!("{}0", stored.id),
    ] {
        let get = v1::GetCredentialRequest {
            user_id: "judy".into(),
            credential_id: bad_id.into(),
        };
        assert_invalid(stub.get_credential(get).await.unwrap_err(), "credential_id");
        let delete = v1::DeleteCredentialRequest {
            user_id: "judy".into(),
            credential_id: bad_id.into(),
        };
        assert_invalid(
            stub.delete_credential(delete).await.unwrap_err(),
            "credential_id",
        );
    }

    for purpose in [0, 3, -1, 99] {
        let decrypt = v1::DecryptCredentialRequest {
            user_id: "judy".into(),
            credential_id: stored.id.clone(),
            purpose,
        };
        assert_invalid(
            stub.decrypt_credential(decrypt).await.unwrap_err(),
            "purpose",
        );
    }

    let list = |page_size, page_token: &str| v1::ListCredentialsRequest {
        user_id: "judy".into(),
        page_size,
        page_token: page_token.into(),
    };
    assert_invalid(
        stub.list_credentials(list(1001, "")).await.unwrap_err(),
        "page_size",
    );
    assert_invalid(
        stub.list_credentials(list(10, "garbage"))
            .await
            .unwrap_err(),
        "page_token",
    );

    let update = |fields, secret| v1::UpdateCredentialRequest {
        user_id: "judy".into(),
        credential_id: stored.id.clone(),
        fields,
        secret,
    };
    assert_invalid(
        stub.update_credential(update(None, None))
            .await
            .unwrap_err(),
        "fields, secret",
    );
    assert_invalid(
        stub.update_credential(update(None, Some(vec![])))
            .await
            .unwrap_err(),
        "secret",
    );
    let bad_url = request_fields("gopher://odoo.example.com", "prod", "sync");
    assert_invalid(
        stub.update_credential(update(bad_url, Some(b"new".to_vec())))
            .await
            .unwrap_err(),
        "fields.odoo.url",
    );

    // Nothing changed: same fields, same secret.
    let after = vault.get("judy", &stored.id).await.unwrap();
    assert_eq!(after, stored);
    let secret = vault
        .decrypt("judy", &stored.id, vault_client::Purpose::ConnectionTest)
        .await
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&secret),
        b"judy-secret"
    );
}

/// Sends bytes as they are, and takes the reply as bytes: for requests that
/// no well-behaved client could encode.
#[derive(Debug, Default, Clone)]
struct RawCodec;

#[derive(Debug, Default)]
struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn undecodable_messages_are_invalid_arguments_not_internal_errors() {
    let server = TestVault::start();
    let mut grpc = tonic::client::Grpc::new(server.channel_as("api").await);
    let path = http::uri::PathAndQuery::from_static("/vault.v1.Vault/StoreCredential");

    let cases: [(&str, Vec<u8>); 3] = [
        // user_id (field 1, length-delimited) holding invalid UTF-8
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        // field 1 sent as a varint: the wrong wire type for a string
        ("wrong wire type", vec![0x08, 0x01]),
        // a length prefix running past the end of the message
        ("truncated", vec![0x0a, 0x10, b'a']),
    ];
    for (what, body) in cases {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(tonic::Request::new(body), path.clone(), RawCodec)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with("malformed message"),
            "{what}: {status:?}"
        );
    }

    // Nothing was stored, and the server still serves.
    let vault = server.client().await;
    assert!(vault.list("anyone").await.unwrap().is_empty());
}
