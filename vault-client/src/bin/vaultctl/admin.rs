//! The operators' subcommands: keys, reload-keys, rotate, import, audit,
//! backup.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use vault_client::{ImportRow, ListKeysResponse, OdooConnection, VaultClient};

/// Rows sent to the server per call.
const IMPORT_BATCH: usize = 500;

/// Exit status of an import that finished but rejected rows.
pub const EXIT_ROWS_REJECTED: u8 = 3;
/// Exit status of `audit verify` when the chain is broken.
pub const EXIT_AUDIT_BROKEN: u8 = 4;

/// `vaultctl audit …`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain; exit status 4 and the first broken event if it
    /// was tampered with.
    Verify {
        /// An event known from a copy kept elsewhere (the JSON-lines audit
        /// log), as SEQ:DIGEST: the trail must still reach it and hold it
        /// unchanged. Catches events cut from the end of the trail, which
        /// the chain alone cannot show.
        #[arg(long, value_name = "SEQ:DIGEST")]
        expect: Option<String>,
    },
    /// List events, oldest first, filtered.
    List {
        /// Only events at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only events about this user.
        #[arg(long)]
        user: Option<String>,
        /// Only events about this credential.
        #[arg(long = "id")]
        credential: Option<String>,
        /// Only events of this caller identity.
        #[arg(long)]
        caller: Option<String>,
        /// Only events of this operation (store, decrypt, …).
        #[arg(long)]
        operation: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Runs an audit command. Returns false when `verify` found the chain broken.
pub async fn audit(vault: &VaultClient, command: AuditCommand, json: bool) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify { expect } => {
            let report = vault.verify_audit().await?;
            let mut problem = (!report.intact).then(|| {
                format!(
                    "audit trail BROKEN at event {}: {}",
                    report.broken_seq, report.broken_reason
                )
            });
            if problem.is_none()
                && let Some(expect) = expect
                && let Some(missing) = check_expected(vault, &expect, report.head_seq).await?
            {
                problem = Some(format!("audit trail BROKEN: {missing}"));
            }
            if json {
                crate::print_json(&serde_json::json!({
                    "intact": problem.is_none(),
                    "checked": report.checked,
                    "head_seq": report.head_seq,
                    "head_digest": report.head_digest,
                    "pruned_through": report.pruned_through,
                    "problem": problem,
                }))?;
                return Ok(problem.is_none());
            }
            if report.pruned_through > 0 {
                println!(
                    "events 1 to {} were pruned under the retention setting",
                    report.pruned_through
                );
            }
            if let Some(problem) = problem {
                println!("{problem}");
                return Ok(false);
            }
            println!(
                "audit trail intact: {} event(s) checked, head #{} {}",
                report.checked, report.head_seq, report.head_digest
            );
            Ok(true)
        }
        AuditCommand::List {
            since,
            until,
            user,
            credential,
            caller,
            operation,
            limit,
        } => {
            let time = |text: Option<String>| -> anyhow::Result<Option<prost_types::Timestamp>> {
                text.map(|text| {
                    let at = humantime::parse_rfc3339_weak(&text)
                        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
                    Ok(prost_types::Timestamp::from(at))
                })
                .transpose()
            };
            let mut filter = vault_client::ListAuditEventsRequest {
                since: time(since)?,
                until: time(until)?,
                user_id: user.unwrap_or_default(),
                credential_id: credential.unwrap_or_default(),
                caller: caller.unwrap_or_default(),
                operation: operation.unwrap_or_default(),
                ..Default::default()
            };
            let mut out = io::stdout().lock();
            if !json {
                writeln!(
                    out,
                    "{:>6}  {:<24}  {:<28}  {:<12}  {:<16}  {:<12}  {:<32}  OUTCOME",
                    "SEQ", "TIME", "CALLER", "OPERATION", "PURPOSE", "USER", "CREDENTIAL"
                )?;
            }
            let mut shown = 0;
            let mut more = false;
            loop {
                let (events, next) = vault.list_audit(filter.clone()).await?;
                for event in &events {
                    if shown == limit {
                        more = true;
                        break;
                    }
                    print_event(&mut out, event, json)?;
                    shown += 1;
                }
                if more || next == 0 {
                    break;
                }
                filter.after_seq = next;
            }
            out.flush()?;
            if more {
                eprintln!(
                    "vaultctl: stopped after {limit} event(s); more match (raise --limit, or \
                     narrow with --since)"
                );
            }
            Ok(true)
        }
    }
}

/// Checks that the event `SEQ:DIGEST` is still in the trail, unchanged.
/// Returns what is wrong, if anything.
async fn check_expected(
    vault: &VaultClient,
    expect: &str,
    head_seq: u64,
) -> anyhow::Result<Option<String>> {
    let (seq, digest) = expect
        .split_once(':')
        .and_then(|(seq, digest)| Some((seq.parse::<u64>().ok()?, digest.to_ascii_lowercase())))
        .filter(|(seq, digest)| {
            *seq > 0 && digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit())
        })
        .context(
            "--expect takes SEQ:DIGEST, SEQ from 1 and DIGEST the event's 64 hex digits, as in \
             the audit log's \"seq\" and \"digest\"",
        )?;
    if seq > head_seq {
        return Ok(Some(format!(
            "the trail ends at event {head_seq}, but event {seq} was seen before: events were \
             removed from its end"
        )));
    }
    let filter = vault_client::ListAuditEventsRequest {
        after_seq: seq - 1,
        page_size: 1,
        ..Default::default()
    };
    let (events, _) = vault.list_audit(filter).await?;
    Ok(match events.first() {
        Some(event) if event.seq == seq && event.digest == digest.as_str() => None,
        Some(event) if event.seq == seq => Some(format!(
            "event {seq} has digest {}, not the expected {digest}",
            event.digest
        )),
        _ => Some(format!("event {seq} is no longer in the trail")),
    })
}

fn print_event(
    out: &mut impl io::Write,
    event: &vault_client::AuditEvent,
    json: bool,
) -> io::Result<()> {
    let time = event
        .time
        .and_then(|at| std::time::SystemTime::try_from(at).ok())
        .map(|at| humantime::format_rfc3339_millis(at).to_string())
        .unwrap_or_default();
    if json {
        let line = serde_json::json!({
            "seq": event.seq, "time": time, "caller": event.caller,
            "operation": event.operation, "purpose": event.purpose, "user_id": event.user_id,
            "credential_id": event.credential_id, "outcome": event.outcome,
            "request_id": event.request_id, "detail": event.detail, "digest": event.digest,
        });
        writeln!(out, "{line}")
    } else {
        writeln!(
            out,
            "{:>6}  {:<24}  {:<28}  {:<12}  {:<16}  {:<12}  {:<32}  {}",
            event.seq,
            time,
            event.caller,
            event.operation,
            event.purpose,
            event.user_id,
            event.credential_id,
            event.outcome
        )
    }
}

/// Prints the key versions and legacy keys.
pub fn print_keys(keys: &ListKeysResponse, json: bool) -> io::Result<()> {
    if json {
        let versions: Vec<serde_json::Value> = keys
            .keys
            .iter()
            .map(|key| {
                serde_json::json!({
                    "version": key.version, "fingerprint": key.fingerprint,
                    "primary": key.primary, "records": key.records,
                })
            })
            .collect();
        let legacy: Vec<serde_json::Value> = keys
            .legacy_keys
            .iter()
            .map(|key| serde_json::json!({ "name": key.name, "fingerprint": key.fingerprint }))
            .collect();
        return crate::print_json(&serde_json::json!({ "keys": versions, "legacy_keys": legacy }));
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:>7}  {:<16}  {:<7}  RECORDS",
        "VERSION", "FINGERPRINT", "PRIMARY"
    )?;
    for key in &keys.keys {
        let primary = if key.primary { "yes" } else { "" };
        writeln!(
            out,
            "{:>7}  {:<16}  {:<7}  {}",
            key.version, key.fingerprint, primary, key.records
        )?;
    }
    for legacy in &keys.legacy_keys {
        writeln!(
            out,
            "legacy key {} ({}), decrypt-only for imports",
            legacy.name, legacy.fingerprint
        )?;
    }
    out.flush()
}

/// Runs a rotation, drawing its progress, and prints a summary.
pub async fn rotate(vault: &VaultClient, batch_size: u32, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut progress = vault.rotate(batch_size).await?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {pos}/{len} records  {per_sec}  eta {eta}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));

    let mut last = None;
    while let Some(report) = progress.message().await? {
        bar.set_length(report.total);
        bar.set_position(report.done + report.failed);
        let finished = report.finished;
        last = Some(report);
        if finished {
            break;
        }
    }
    bar.finish_and_clear();

    let report = last.context("the server ended the rotation without a report")?;
    anyhow::ensure!(
        report.finished,
        "the rotation stopped before it finished ({} of {} re-sealed); run it again",
        report.done,
        report.total
    );
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        report.done as f64 / seconds
    } else {
        0.0
    };
    if json {
        crate::print_json(&serde_json::json!({
            "target_version": report.target_version, "done": report.done,
            "failed": report.failed, "seconds": seconds,
        }))?;
    } else {
        println!(
            "rotated {} record(s) to key version {} in {seconds:.1}s ({rate:.0}/s); {} could \
             not be opened",
            report.done, report.target_version, report.failed
        );
    }
    anyhow::ensure!(
        report.failed == 0,
        "{} record(s) could not be opened and stay under their old key; see the server log",
        report.failed
    );
    Ok(())
}

/// A row refused, by line number, with the reason.
type Rejection = (u64, String);

/// One exported row, as JSON lines or CSV with a header. Every field is
/// optional here so that a row missing one is reported by the server with
/// the field's name rather than failing the whole file.
#[derive(Debug, Default, Deserialize)]
struct ExportedRow {
    user_id: Option<String>,
    url: Option<String>,
    database: Option<String>,
    username: Option<String>,
    token: Option<String>,
}

impl ExportedRow {
    fn into_import(self, line: u64) -> ImportRow {
        ImportRow {
            line,
            user_id: self.user_id.unwrap_or_default(),
            odoo: Some(OdooConnection {
                url: self.url.unwrap_or_default(),
                database: self.database.unwrap_or_default(),
                username: self.username.unwrap_or_default(),
            }),
            token: self.token.unwrap_or_default(),
        }
    }
}

/// Reads the rows of `file`: CSV when its name ends in `.csv`, JSON lines
/// otherwise. Lines that cannot be read at all come back as rejections.
fn read_rows(file: &Path) -> anyhow::Result<(Vec<ImportRow>, Vec<Rejection>)> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();

    if file
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"))
    {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for (index, record) in reader.deserialize::<ExportedRow>().enumerate() {
            let line = index as u64 + 2; // after the header, counting from 1
            match record {
                Ok(row) => rows.push(row.into_import(line)),
                Err(err) => unreadable.push((line, format!("not a valid CSV row: {err}"))),
            }
        }
    } else {
        for (index, text) in text.lines().enumerate() {
            let line = index as u64 + 1;
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ExportedRow>(text) {
                Ok(row) => rows.push(row.into_import(line)),
                Err(err) => unreadable.push((line, format!("not a valid JSON object: {err}"))),
            }
        }
    }
    Ok((rows, unreadable))
}

/// Imports `file` and prints the report. Returns whether every row was
/// imported or skipped.
pub async fn import(vault: &VaultClient, file: &Path, json: bool) -> anyhow::Result<bool> {
    let (rows, mut rejected) = read_rows(file)?;
    let (mut imported, mut skipped) = (0, 0);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<_> = rows.by_ref().take(IMPORT_BATCH).collect();
        let report = vault.import(batch).await?;
        imported += report.imported;
        skipped += report.skipped;
        rejected.extend(report.rejected.into_iter().map(|r| (r.line, r.reason)));
    }
    rejected.sort();

    if json {
        let rejected_rows: Vec<serde_json::Value> = rejected
            .iter()
            .map(|(line, reason)| serde_json::json!({ "line": line, "reason": reason }))
            .collect();
        crate::print_json(&serde_json::json!({
            "imported": imported, "skipped": skipped, "rejected": rejected_rows,
        }))?;
        return Ok(rejected.is_empty());
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "imported {imported}, skipped {skipped} (already present), rejected {}",
        rejected.len()
    )?;
    for (line, reason) in &rejected {
        writeln!(out, "line {line}: {reason}")?;
    }
    out.flush()?;
    Ok(rejected.is_empty())
}

/// Length of the SHA-256 digest that ends every backup file.
const BACKUP_DIGEST_LEN: u64 = 32;

/// Streams a backup into a temporary file beside `file`, checks it, and
/// renames it into place; prints a summary. Nothing is left at `file`
/// unless the whole backup arrived and its checksum matches.
pub async fn backup(
    vault: &VaultClient,
    file: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !force && fs::symlink_metadata(file).is_ok() {
        anyhow::bail!(
            "{} exists; pass --force to replace it with the new backup",
            file.display()
        );
    }
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Created readable by its owner only, and removed if anything fails.
    let mut partial = tempfile::Builder::new()
        .prefix(".vaultctl-backup-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;

    let mut chunks = vault.backup().await?;
    let mut summary = None;
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.message().await? {
        if summary.is_none() {
            summary = chunk.summary;
        }
        partial.write_all(&chunk.data)?;
        bytes += chunk.data.len() as u64;
    }
    let summary = summary.context("the server sent no backup summary")?;
    partial.as_file().sync_all()?;
    check_backup_digest(partial.path())
        .with_context(|| "the backup that arrived is incomplete or damaged; nothing was written")?;

    let persisted = if force {
        partial.persist(file).map(drop)
    } else {
        partial.persist_noclobber(file).map(drop)
    };
    persisted.with_context(|| format!("cannot write {}", file.display()))?;
    if let Ok(dir) = fs::File::open(dir) {
        // Makes the rename itself durable; not every system allows it.
        let _ = dir.sync_all();
    }
    print_backup(file, &summary, bytes, json)?;
    Ok(())
}

/// Checks the trailing SHA-256 of a backup file against the bytes before it.
fn check_backup_digest(path: &Path) -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;

    let mut file = io::BufReader::new(fs::File::open(path)?);
    let len = file.get_ref().metadata()?.len();
    anyhow::ensure!(
        len > BACKUP_DIGEST_LEN,
        "the file is too short to be a backup"
    );
    let mut hasher = Sha256::new();
    let mut body = (&mut file).take(len - BACKUP_DIGEST_LEN);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = body.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let mut stored = [0u8; 32];
    file.read_exact(&mut stored)?;
    anyhow::ensure!(
        hasher.finalize().as_slice() == stored.as_slice(),
        "its checksum does not match"
    );
    Ok(())
}

fn print_backup(
    file: &Path,
    summary: &vault_client::BackupSummary,
    bytes: u64,
    json: bool,
) -> io::Result<()> {
    let taken_at = summary
        .taken_at
        .and_then(|at| std::time::SystemTime::try_from(at).ok())
        .map(|at| humantime::format_rfc3339_seconds(at).to_string())
        .unwrap_or_default();
    if json {
        return crate::print_json(&serde_json::json!({
            "file": file.display().to_string(), "taken_at": taken_at,
            "credentials": summary.credentials, "canaries": summary.canaries,
            "audit_events": summary.audit_events, "audit_head_seq": summary.audit_head_seq,
            "audit_head_digest": summary.audit_head_digest, "bytes": bytes,
        }));
    }
    let mut out = io::stdout().lock();
    writeln!(out, "backup written to {}", file.display())?;
    writeln!(out, "taken at      {taken_at}")?;
    writeln!(out, "credentials   {}", summary.credentials)?;
    writeln!(out, "canaries      {}", summary.canaries)?;
    writeln!(
        out,
        "audit events  {} (through #{} {})",
        summary.audit_events, summary.audit_head_seq, summary.audit_head_digest
    )?;
    writeln!(out, "bytes         {bytes}")?;
    out.flush()
}
