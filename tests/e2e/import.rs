//! Moving another application's Fernet-encrypted passwords into the vault:
//! its key goes to the server as a legacy key, `vaultctl import` sends the
//! rows, and each row is imported, skipped or rejected with a reason.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use secrecy::ExposeSecret as _;
use vault_client::Purpose;
use vault_e2e::{TestVault, python};

/// Makes an export the way an application keeping Fernet tokens would:
/// prints the application's key, then one JSON row a line.
const EXPORT: &str = r#"
import base64, json, sys
from cryptography.fernet import Fernet

app_key, other_key = Fernet.generate_key(), Fernet.generate_key()
app, other = Fernet(app_key), Fernet(other_key)

def row(user, n, token, **drop):
    r = {"user_id": user, "url": f"https://{user}.odoo.example.com",
         "database": f"db{n}", "username": f"sync{n}@example.com", "token": token}
    for field in drop:
        r.pop(field)
    return r

def tampered(token):
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[30] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()

tok = lambda pw: app.encrypt(pw.encode()).decode()
rows = [
    row("alice", 1, tok("alice-pw-1")),
    row("alice", 2, tok("alice-pw-2")),
    row("bob", 1, tok("bob-pw-1")),
    row("bob", 2, tampered(tok("bob-pw-2"))),
    row("bob", 3, other.encrypt(b"bob-pw-3").decode()),
    row("bob", 4, "not-a-fernet-token"),
    row("carol", 1, tok("carol-pw-1"), url=True),
    row("alice", 1, tok("alice-pw-1-again")),
    row("carol", 2, tok("carol-pw-2")),
    row("carol", 3, tok("carol-pw-3")),
]
print(app_key.decode())
for r in rows:
    print(json.dumps(r))
"#;

fn run_import(server: &TestVault, file: &std::path::Path) -> (i32, Vec<String>) {
    let output = server.vaultctl("ops", &["import", file.to_str().unwrap()]);
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (output.status.code().unwrap_or(-1), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_made_by_python_imports_once_with_the_exact_report() {
    let server = TestVault::start();
    let export = python(EXPORT, &[]);
    let (app_key, rows) = export.split_once('\n').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, rows).unwrap();

    // Without the application's key in the keyring, nothing can be imported.
    let (status, lines) = run_import(&server, &file);
    assert_eq!(status, 1, "{lines:?}");

    let keyring = std::fs::read_to_string(server.keyring_path()).unwrap();
    std::fs::write(
        server.keyring_path(),
        format!("{keyring}legacy old-app {app_key}\n"),
    )
    .unwrap();
    let reload = server.vaultctl("ops", &["reload-keys"]);
    assert!(reload.status.success(), "{reload:?}");
    let keys = String::from_utf8_lossy(&reload.stdout);
    assert!(
        keys.contains("legacy key old-app") && !keys.contains(app_key),
        "{keys}"
    );

    let expected_rejections = [
        "line 4: token: does not open under any legacy key (wrong key, or tampered with)",
        "line 5: token: does not open under any legacy key (wrong key, or tampered with)",
        "line 6: token: malformed (not a Fernet token)",
        "line 7: fields.odoo.url: must not be empty",
    ];
    let (status, lines) = run_import(&server, &file);
    assert_eq!(status, 3, "rows were rejected: {lines:?}");
    assert_eq!(
        lines[0],
        "imported 5, skipped 1 (already present), rejected 4"
    );
    assert_eq!(lines[1..], expected_rejections);

    // The same file again imports nothing new.
    let (status, lines) = run_import(&server, &file);
    assert_eq!(status, 3);
    assert_eq!(
        lines[0],
        "imported 0, skipped 6 (already present), rejected 4"
    );
    assert_eq!(lines[1..], expected_rejections);

    // What was imported decrypts to what Python sealed, for the sync role.
    let sync = server.sync_client().await;
    let mut imported = BTreeMap::new();
    for user in ["alice", "bob", "carol"] {
        for credential in sync.list(user).await.unwrap() {
            let secret = sync
                .decrypt(user, &credential.id, Purpose::Sync)
                .await
                .unwrap();
            let text = String::from_utf8(secret.expose_secret().to_vec()).unwrap();
            assert!(text.starts_with(&format!("{user}-pw-")), "{text}");
            assert!(!text.ends_with("again"), "the duplicate row was skipped");
            *imported.entry(user).or_insert(0) += 1;
        }
    }
    assert_eq!(
        imported,
        BTreeMap::from([("alice", 2), ("bob", 1), ("carol", 2)])
    );

    // The import is done: the legacy key can go.
    std::fs::write(server.keyring_path(), keyring).unwrap();
    let reload = server.vaultctl("ops", &["reload-keys"]);
    assert!(reload.status.success(), "{reload:?}");
    assert!(!String::from_utf8_lossy(&reload.stdout).contains("legacy"));
}

#[tokio::test]
async fn csv_exports_import_too_and_only_ops_may_import() {
    let server = TestVault::start();
    let script = r#"
from cryptography.fernet import Fernet
key = Fernet.generate_key(); f = Fernet(key)
print(key.decode())
print("user_id,url,database,username,token")
for n in (1, 2):
    print(f"dave,https://dave.odoo.example.com,db{n},sync{n},{f.encrypt(f'dave-pw-{n}'.encode()).decode()}")
"#;
    let export = python(script, &[]);
    let (app_key, csv) = export.split_once('\n').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    std::fs::write(&file, csv).unwrap();
    let keyring = std::fs::read_to_string(server.keyring_path()).unwrap();
    std::fs::write(
        server.keyring_path(),
        format!("{keyring}legacy app {app_key}\n"),
    )
    .unwrap();
    assert!(server.vaultctl("ops", &["reload-keys"]).status.success());

    let denied = server.vaultctl("api", &["import", file.to_str().unwrap()]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("not allowed to import"));

    // Four imports of the same file at once still store each row once.
    let runs: Vec<(i32, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| run_import(&server, &file)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let mut imported = 0;
    for (status, lines) in &runs {
        assert_eq!(*status, 0, "{lines:?}");
        let count = lines[0]
            .trim_start_matches("imported ")
            .split(',')
            .next()
            .unwrap();
        imported += count.parse::<u32>().unwrap();
    }
    assert_eq!(imported, 2, "{runs:?}");
    let sync = server.sync_client().await;
    let listed = sync.list("dave").await.unwrap();
    assert_eq!(listed.len(), 2);
}
