//! Every access leaves a trace that no one can quietly edit: calls and
//! events match one to one, tampering is found where it happened, crashes
//! never split a change from its event, and no secret reaches the trail.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tonic::Code;
use vault_client::{AuditEvent, ClientError, ListAuditEventsRequest, Purpose, VaultClient};
use vault_e2e::{TestVault, files_below, find_password, odoo, unique_password};

/// (caller role, operation, outcome) → how many calls.
type Tally = BTreeMap<(String, String, String), u64>;

fn role_of(identity: &str) -> String {
    identity.rsplit('/').next().unwrap_or(identity).to_owned()
}

async fn all_events(ops: &VaultClient) -> Vec<AuditEvent> {
    let mut filter = ListAuditEventsRequest {
        page_size: 1000,
        ..Default::default()
    };
    let mut events = Vec::new();
    loop {
        let (page, next) = ops.list_audit(filter.clone()).await.unwrap();
        events.extend(page);
        if next == 0 {
            return events;
        }
        filter.after_seq = next;
    }
}

fn outcome<T>(result: &Result<T, ClientError>) -> String {
    match result {
        Ok(_) => "Ok".into(),
        Err(err) => format!("{:?}", err.code().unwrap_or(Code::Unknown)),
    }
}

/// One worker's share of the mixed load: it makes `calls` calls, mostly
/// reads, and tallies each by role, operation and outcome.
async fn mixed_calls(
    server_clients: [VaultClient; 3],
    worker: usize,
    calls: usize,
) -> (Tally, Vec<String>) {
    let [api, sync, ops] = server_clients;
    let user = format!("load-user-{worker}");
    let mut tally = Tally::new();
    let mut passwords = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut count = |role: &str, op: &str, outcome: String| {
        *tally.entry((role.into(), op.into(), outcome)).or_default() += 1;
    };

    for n in 0..calls {
        match n % 20 {
            0 | 1 => {
                let password = unique_password(&format!("w{worker}n{n}"));
                let result = api.store(&user, odoo(n), password.as_bytes()).await;
                count("api", "store", outcome(&result));
                ids.push(result.unwrap().id);
                passwords.push(password);
            }
            2 if ids.len() > 2 => {
                let id = ids.remove(0);
                count("api", "delete", outcome(&api.delete(&user, &id).await));
            }
            3 => count(
                "sync",
                "store",
                outcome(&sync.store(&user, odoo(n), b"x").await),
            ),
            4 => count(
                "api",
                "get",
                outcome(&api.get(&user, "0123456789abcdef0123456789abcdef").await),
            ),
            5 => count("api", "get", outcome(&api.get(&user, "not-an-id").await)),
            6 if !ids.is_empty() => {
                let result = ops.decrypt(&user, &ids[0], Purpose::Sync).await;
                count("ops", "decrypt", outcome(&result));
            }
            7..=9 if !ids.is_empty() => {
                let result = sync
                    .decrypt(&user, &ids[ids.len() - 1], Purpose::Sync)
                    .await;
                count("sync", "decrypt", outcome(&result));
            }
            10 if !ids.is_empty() => {
                let result = api.decrypt(&user, &ids[0], Purpose::ConnectionTest).await;
                count("api", "decrypt", outcome(&result));
            }
            _ if n % 2 == 0 => count(
                "sync",
                "list",
                outcome(&sync.list_page(&user, 10, "").await),
            ),
            _ if !ids.is_empty() => count("api", "get", outcome(&api.get(&user, &ids[0]).await)),
            _ => count("api", "list", outcome(&api.list_page(&user, 10, "").await)),
        }
    }
    (tally, passwords)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_calls_match_their_events_one_to_one() {
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("audit.jsonl");
    let server = TestVault::start_with(&["--audit-log", copy.to_str().unwrap()]);
    let clients = || async {
        [
            server.client().await,
            server.sync_client().await,
            server.client_as("ops").await,
        ]
    };

    let mut workers = Vec::new();
    for worker in 0..8 {
        let clients = clients().await;
        workers.push(tokio::spawn(mixed_calls(clients, worker, 1250)));
    }
    let mut expected = Tally::new();
    let mut passwords = Vec::new();
    for worker in workers {
        let (tally, stored) = worker.await.unwrap();
        for (key, count) in tally {
            *expected.entry(key).or_default() += count;
        }
        passwords.extend(stored);
    }
    assert_eq!(expected.values().sum::<u64>(), 10_000);

    let ops = server.client_as("ops").await;
    let verified = ops.verify_audit().await.unwrap();
    assert!(verified.intact, "{verified:?}");

    let events = all_events(&ops).await;
    let mut seen = Tally::new();
    for event in events.iter().filter(|e| !e.operation.starts_with("audit.")) {
        let key = (
            role_of(&event.caller),
            event.operation.clone(),
            event.outcome.clone(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let differences: Vec<_> = expected
        .iter()
        .filter(|(key, count)| seen.get(*key) != Some(count))
        .map(|(key, count)| (key, count, seen.get(key)))
        .collect();
    assert!(
        differences.is_empty(),
        "calls and events differ: {differences:?}"
    );
    assert_eq!(seen, expected);
    assert_eq!(verified.checked, 10_000);
    let request_ids: BTreeSet<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(
        request_ids.len(),
        events.len(),
        "every call has its own request id"
    );

    // The JSON-lines copy holds the same events, digests and all.
    let lines = std::fs::read_to_string(&copy).unwrap();
    let copied: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(copied.len() >= 10_001, "{}", copied.len());
    for (event, line) in events.iter().zip(&copied) {
        assert_eq!(line["seq"], event.seq);
        assert_eq!(line["digest"], event.digest.as_str());
    }

    // No secret in the audit store (the whole database) or its copy.
    drop(ops);
    let files = files_below(&server.data_dir());
    let copy_bytes = std::fs::read(&copy).unwrap();
    assert_eq!(
        find_password(&copy_bytes, &passwords),
        None,
        "a password in the audit copy"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let found = find_password(&bytes, &passwords);
        assert_eq!(found, None, "plaintext in {}", file.display());
    }
    // The search itself works: it finds a password where there is one.
    let planted = format!("xx{}yy", passwords[17]);
    assert_eq!(
        find_password(planted.as_bytes(), &passwords),
        Some(passwords[17].as_str())
    );
}

/// Runs `vaultctl audit verify` and returns its exit status and output.
fn verify_with_vaultctl(server: &TestVault) -> (i32, String) {
    let output = server.vaultctl("ops", &["audit", "verify"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_deleting_or_swapping_an_event_is_reported_at_that_event() {
    let mut server = TestVault::start();
    let api = server.client().await;
    for n in 0..12 {
        api.store("tess", odoo(n), b"pw").await.unwrap();
    }
    drop(api);
    let (status, text) = verify_with_vaultctl(&server);
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    server.stop();

    type Edit = fn(&sled::Tree);
    let edits: [(&str, Edit, u64, &str); 3] = [
        (
            "edit one byte of event 7",
            |audit| {
                let key = 7u64.to_be_bytes();
                let mut value = audit.get(key).unwrap().unwrap().to_vec();
                let last = value.len() - 3;
                value[last] ^= 0x20;
                audit.insert(key, value).unwrap();
            },
            7,
            "altered",
        ),
        (
            "delete event 5",
            |audit| {
                audit.remove(5u64.to_be_bytes()).unwrap();
            },
            5,
            "missing",
        ),
        (
            "swap events 3 and 4",
            |audit| {
                let (three, four) = (3u64.to_be_bytes(), 4u64.to_be_bytes());
                let a = audit.get(three).unwrap().unwrap();
                let b = audit.get(four).unwrap().unwrap();
                audit.insert(three, b).unwrap();
                audit.insert(four, a).unwrap();
            },
            3,
            "does not follow",
        ),
    ];

    for (what, edit, seq, reason) in edits {
        let db_dir = server.data_dir().join("db");
        let original: Vec<(sled::IVec, sled::IVec)> = {
            let db = sled::open(&db_dir).unwrap();
            let audit = db.open_tree("audit").unwrap();
            let original = audit.iter().map(Result::unwrap).collect();
            edit(&audit);
            db.flush().unwrap();
            original
        };

        server.restart();
        let (status, text) = verify_with_vaultctl(&server);
        assert_eq!(status, 4, "{what}: {text}");
        assert!(
            text.contains(&format!("BROKEN at event {seq}:")),
            "{what}: {text}"
        );
        assert!(text.contains(reason), "{what}: {text}");
        server.stop();

        // Put the trail back as it was (minus what the verify calls added).
        let db = sled::open(&db_dir).unwrap();
        let audit = db.open_tree("audit").unwrap();
        audit.clear().unwrap();
        for (key, value) in original {
            audit.insert(key, value).unwrap();
        }
        db.flush().unwrap();
    }
    server.restart();
    assert_eq!(verify_with_vaultctl(&server).0, 0);

    // Cutting events off the end leaves a valid chain; only an event known
    // from elsewhere (the JSON-lines copy) shows the cut.
    server.stop();
    let expect = {
        let db = sled::open(server.data_dir().join("db")).unwrap();
        let audit = db.open_tree("audit").unwrap();
        let (key, value) = audit.last().unwrap().unwrap();
        let last = vault_server::audit::decode(&key, &value).unwrap();
        audit.remove(last.seq.to_be_bytes()).unwrap();
        audit.remove((last.seq - 1).to_be_bytes()).unwrap();
        db.flush().unwrap();
        format!("{}:{}", last.seq, vault_server::audit::hex(&last.digest))
    };
    server.restart();
    let (status, text) = verify_with_vaultctl(&server);
    assert_eq!(status, 0, "the chain alone cannot see a cut end: {text}");
    let output = server.vaultctl("ops", &["audit", "verify", "--expect", &expect]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{text}");
    assert!(text.contains("BROKEN"), "{text}");

    // A mistyped digest is a usage error, not a broken trail.
    for typo in ["3:zzzz", "3:abc", "0:00"] {
        let output = server.vaultctl("ops", &["audit", "verify", "--expect", typo]);
        assert_eq!(output.status.code(), Some(1), "{typo}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("64 hex digits"),
            "{typo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_acknowledged_change_has_exactly_one_event() {
    let mut server = TestVault::start();
    let mut stored = BTreeSet::new();
    let mut deleted = BTreeSet::new();

    for round in 0..20 {
        let api = server.client().await;
        let writes = async {
            let mut acked_stores = Vec::new();
            let mut acked_deletes = Vec::new();
            let mut acked_decrypts = Vec::new();
            for n in 0.. {
                match api.store("kai", odoo(n), b"pw").await {
                    Ok(credential) => acked_stores.push(credential.id),
                    Err(_) => break,
                }
                // A secret handed out is an access that must be on record.
                let latest = acked_stores.last().cloned().unwrap_or_default();
                match api.decrypt("kai", &latest, Purpose::ConnectionTest).await {
                    Ok(_) => acked_decrypts.push(latest),
                    Err(_) => break,
                }
                if n % 3 == 0
                    && let Some(id) = acked_stores.first().cloned()
                {
                    match api.delete("kai", &id).await {
                        Ok(()) => {
                            acked_deletes.push(id.clone());
                            acked_stores.retain(|kept| *kept != id);
                        }
                        Err(_) => break,
                    }
                }
            }
            (acked_stores, acked_deletes, acked_decrypts)
        };
        let kill_after = Duration::from_millis(rand::random_range(30..250));
        let (acked_stores, acked_deletes, acked_decrypts) = tokio::select! {
            acked = writes => acked,
            () = async {
                tokio::time::sleep(kill_after).await;
                server.kill();
                std::future::pending::<()>().await;
            } => unreachable!(),
        };
        // The server died under the writer; what it acknowledged is known.
        stored.extend(acked_stores.iter().cloned());
        deleted.extend(acked_deletes.iter().cloned());
        stored.retain(|id| !deleted.contains(id));

        server.restart();
        let ops = server.client_as("ops").await;
        let verified = ops.verify_audit().await.unwrap();
        assert!(verified.intact, "round {round}: {verified:?}");

        let events = all_events(&ops).await;
        let ok = |op: &str| {
            let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
            for event in events
                .iter()
                .filter(|e| e.operation == op && e.outcome == "Ok")
            {
                *by_id.entry(event.credential_id.clone()).or_default() += 1;
            }
            by_id
        };
        let (store_events, delete_events) = (ok("store"), ok("delete"));
        let decrypt_events = ok("decrypt");
        for id in &acked_decrypts {
            assert!(
                decrypt_events.contains_key(id),
                "round {round}: decrypt of {id} unaudited"
            );
        }
        for id in &stored {
            assert_eq!(
                store_events.get(id),
                Some(&1),
                "round {round}: store of {id}"
            );
        }
        for id in &deleted {
            assert_eq!(
                store_events.get(id),
                Some(&1),
                "round {round}: store of {id}"
            );
            assert_eq!(
                delete_events.get(id),
                Some(&1),
                "round {round}: delete of {id}"
            );
        }
        // No event for a change that did not happen: every stored event's
        // credential exists, unless a delete event says it went.
        let api = server.client().await;
        for id in store_events.keys() {
            let exists = api.get("kai", id).await.is_ok();
            assert!(
                exists || delete_events.contains_key(id),
                "round {round}: {id}"
            );
        }
        for id in delete_events.keys() {
            assert!(
                api.get("kai", id).await.is_err(),
                "round {round}: {id} is back"
            );
        }
    }
}
