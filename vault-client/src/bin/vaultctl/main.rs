//! `vaultctl`: the operator's and developer's command line for the vault.
//!
//! One subcommand per API call, plus `gen-key`. Secrets are never taken as
//! arguments (they would show in `ps` and shell history): `store` and
//! `update --secret` read them from standard input, or prompt without echo on
//! a terminal.

mod admin;

use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret as _;
use vault_client::{Credential, OdooConnection, Purpose, TlsFiles, VaultClient};
use vault_proto::v1::credential_fields::Kind;
use zeroize::Zeroizing;

/// Command line of the credential vault.
#[derive(Debug, Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Command line of the credential vault: store, list, decrypt and delete credentials, \
             and generate keys",
    after_help = "Exit status: 0 done; 1 failed (the reason is on standard error, with the \
                  gRPC code in parentheses); 2 bad command line; 3 import rows rejected; 4 audit \
                  trail broken."
)]
struct Cli {
    /// Print results as JSON for scripts (one object, or one per line for
    /// `audit list`) instead of tables. `decrypt` always prints the bare
    /// secret.
    #[arg(long, global = true)]
    json: bool,

    /// Address of the vault server (host:port).
    #[arg(
        long,
        global = true,
        env = "VAULT_ADDR",
        default_value = "127.0.0.1:7400"
    )]
    addr: String,

    #[command(flatten)]
    tls: TlsArgs,

    #[command(subcommand)]
    command: Command,
}

/// How vaultctl proves who it is: the files of one caller role.
#[derive(Debug, Args)]
struct TlsArgs {
    /// CA certificate the server's certificate must chain to (PEM).
    #[arg(long, global = true, env = "VAULT_CA")]
    ca: Option<PathBuf>,
    /// This caller's client certificate (PEM); it names the caller's identity.
    #[arg(long, global = true, env = "VAULT_CERT")]
    cert: Option<PathBuf>,
    /// This caller's private key (PEM).
    #[arg(long, global = true, env = "VAULT_KEY")]
    key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the
    /// address's host.
    #[arg(long, global = true, env = "VAULT_SERVER_NAME")]
    server_name: Option<String>,
    /// Talk plaintext to a server started with --insecure-plaintext.
    #[arg(long, global = true)]
    insecure_plaintext: bool,
}

impl TlsArgs {
    fn to_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: self.server_name.clone(),
            })),
            _ => anyhow::bail!(
                "the vault needs a client certificate: pass --ca, --cert and --key (or set \
                 VAULT_CA, VAULT_CERT and VAULT_KEY). `vault-server --dev` prints where its \
                 files are: ca.pem, and ROLE.pem with ROLE.key for the roles api, sync and ops"
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random key in Fernet's format (what Python's
    /// `Fernet.generate_key()` prints), or a whole keyring file with --keyring.
    GenKey {
        /// Print a complete one-key keyring file instead of a bare key.
        #[arg(long)]
        keyring: bool,
        /// Write to this new file, readable by its owner only, instead of
        /// standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Store a new Odoo connection; the password is read from standard input.
    Store {
        #[command(flatten)]
        user: UserArg,
        #[command(flatten)]
        odoo: OdooArgs,
    },
    /// Change a credential's connection fields and/or its password.
    Update {
        #[command(flatten)]
        target: TargetArgs,
        /// New base URL (give all three connection fields to change them).
        #[arg(long, requires_all = ["database", "username"])]
        url: Option<String>,
        /// New database name.
        #[arg(long, requires_all = ["url", "username"])]
        database: Option<String>,
        /// New login.
        #[arg(long, requires_all = ["url", "database"])]
        username: Option<String>,
        /// Also replace the password, read from standard input.
        #[arg(long)]
        secret: bool,
    },
    /// Show one credential (never its password).
    Get {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// List a user's credentials (never their passwords).
    List {
        #[command(flatten)]
        user: UserArg,
    },
    /// Decrypt a credential's password and print it on standard output.
    Decrypt {
        #[command(flatten)]
        target: TargetArgs,
        /// Why the password is needed.
        #[arg(long, value_enum)]
        purpose: PurposeArg,
    },
    /// Delete one credential for good.
    Delete {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Delete every credential of a user.
    Erase {
        #[command(flatten)]
        user: UserArg,
    },
    /// Show the key versions (fingerprints, never keys), which one is
    /// primary, and how many records each seals. Role ops.
    Keys,
    /// Make the server re-read its keyring file (also done on SIGHUP). It is
    /// refused, and the old keyring kept, if a key still in use is missing.
    /// Role ops.
    ReloadKeys,
    /// Re-seal every record under the primary key, with a progress bar.
    /// Safe to interrupt and run again. Role ops.
    Rotate {
        /// Records per durable batch (1 to 10000; the server's default if 0).
        #[arg(long, default_value_t = 0)]
        batch_size: u32,
    },
    /// Import rows another application exported (JSON lines, or CSV with a
    /// header when the file ends in .csv): user_id, url, database, username
    /// and token, the password as a Fernet token under that application's key.
    /// The key must be in the server's keyring as a `legacy` key; it is never
    /// given to vaultctl. Exits with status 3 if any row was rejected. Role ops.
    Import {
        /// The exported file.
        file: PathBuf,
    },
    /// Read or verify the audit trail. Role ops.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Write a backup of the whole store, as it was at one moment, to FILE
    /// (readable by its owner only) while the vault keeps serving. It holds
    /// the ciphertext of every secret and the non-secret fields, never a key:
    /// keep the keyring in your secret store. Restore with `vault-server
    /// restore`. Role ops.
    Backup {
        /// The backup file to write; an existing file is refused unless
        /// --force.
        file: PathBuf,
        /// Replace FILE if it exists (only once the new backup is complete).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
struct UserArg {
    /// The user that owns the credentials.
    #[arg(long = "user")]
    user_id: String,
}

#[derive(Debug, Args)]
struct TargetArgs {
    #[command(flatten)]
    user: UserArg,
    /// The credential's id, as `store` or `list` printed it.
    #[arg(long = "id")]
    credential_id: String,
}

#[derive(Debug, Args)]
struct OdooArgs {
    /// Base URL of the Odoo instance (http or https).
    #[arg(long)]
    url: String,
    /// Odoo database name.
    #[arg(long)]
    database: String,
    /// Odoo login.
    #[arg(long)]
    username: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PurposeArg {
    /// Testing a newly entered connection once.
    ConnectionTest,
    /// A synchronisation run.
    Sync,
}

impl From<PurposeArg> for Purpose {
    fn from(purpose: PurposeArg) -> Self {
        match purpose {
            PurposeArg::ConnectionTest => Purpose::ConnectionTest,
            PurposeArg::Sync => Purpose::Sync,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(Done::Completely) => ExitCode::SUCCESS,
        Ok(Done::WithRejections) => ExitCode::from(admin::EXIT_ROWS_REJECTED),
        Ok(Done::AuditBroken) => ExitCode::from(admin::EXIT_AUDIT_BROKEN),
        // A reader that went away (`vaultctl audit list | head`) is not an
        // error of ours.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vaultctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// How a command that did not fail ended.
enum Done {
    Completely,
    WithRejections,
    AuditBroken,
}

async fn run(cli: Cli) -> anyhow::Result<Done> {
    if let Command::GenKey { keyring, out } = &cli.command {
        gen_key(*keyring, out.as_deref())?;
        return Ok(Done::Completely);
    }
    let tls = cli.tls.to_files()?;
    let vault = VaultClient::connect(&cli.addr, tls.as_ref()).await?;

    match cli.command {
        Command::GenKey { .. } => unreachable!("handled before connecting"),
        Command::Store { user, odoo } => {
            let secret = read_secret()?;
            let odoo = OdooConnection {
                url: odoo.url,
                database: odoo.database,
                username: odoo.username,
            };
            let stored = vault.store(&user.user_id, odoo, &secret).await?;
            print_credential(&stored, cli.json)?;
        }
        Command::Update {
            target,
            url,
            database,
            username,
            secret,
        } => {
            let odoo = match (url, database, username) {
                (Some(url), Some(database), Some(username)) => Some(OdooConnection {
                    url,
                    database,
                    username,
                }),
                _ => None,
            };
            let secret = if secret { Some(read_secret()?) } else { None };
            let updated = vault
                .update(
                    &target.user.user_id,
                    &target.credential_id,
                    odoo,
                    secret.as_ref().map(|s| s.as_slice()),
                )
                .await?;
            print_credential(&updated, cli.json)?;
        }
        Command::Get { target } => {
            let credential = vault
                .get(&target.user.user_id, &target.credential_id)
                .await?;
            print_credential(&credential, cli.json)?;
        }
        Command::List { user } => {
            let credentials = vault.list(&user.user_id).await?;
            print_list(&credentials, cli.json)?;
        }
        Command::Decrypt { target, purpose } => {
            let secret = vault
                .decrypt(&target.user.user_id, &target.credential_id, purpose.into())
                .await?;
            let mut out = io::stdout().lock();
            out.write_all(secret.expose_secret())?;
            if out.is_terminal() {
                writeln!(out)?;
            }
            out.flush()?;
        }
        Command::Delete { target } => {
            vault
                .delete(&target.user.user_id, &target.credential_id)
                .await?;
            if cli.json {
                print_json(&serde_json::json!({ "deleted": target.credential_id }))?;
            } else {
                println!("deleted {}", target.credential_id);
            }
        }
        Command::Erase { user } => {
            let deleted = vault.erase(&user.user_id).await?;
            if cli.json {
                print_json(&serde_json::json!({ "user_id": user.user_id, "erased": deleted }))?;
            } else {
                println!("erased {deleted} credential(s) of {}", user.user_id);
            }
        }
        Command::Keys => admin::print_keys(&vault.list_keys().await?, cli.json)?,
        Command::ReloadKeys => {
            let keys = vault.reload_keyring().await?;
            if !cli.json {
                println!("keyring reloaded");
            }
            admin::print_keys(&keys, cli.json)?;
        }
        Command::Rotate { batch_size } => admin::rotate(&vault, batch_size, cli.json).await?,
        Command::Import { file } => {
            if !admin::import(&vault, &file, cli.json).await? {
                return Ok(Done::WithRejections);
            }
        }
        Command::Audit(command) => {
            if !admin::audit(&vault, command, cli.json).await? {
                return Ok(Done::AuditBroken);
            }
        }
        Command::Backup { file, force } => admin::backup(&vault, &file, force, cli.json).await?,
    }
    Ok(Done::Completely)
}

/// Prints a new Fernet key, or a keyring file holding one as version 1, to
/// standard output or to a new owner-only file.
fn gen_key(keyring: bool, out: Option<&Path>) -> anyhow::Result<()> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|err| anyhow::anyhow!("no randomness from the operating system: {err}"))?;
    let key = Zeroizing::new(base64::engine::general_purpose::URL_SAFE.encode(bytes.as_slice()));
    let text = Zeroizing::new(if keyring {
        format!(
            "# Vault keyring. Keep it secret: it opens every stored credential.\n\
             key 1 {}\nprimary 1\n",
            key.as_str()
        )
    } else {
        format!("{}\n", key.as_str())
    });

    match out {
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// Reads a secret: without echo from a terminal, otherwise all of standard
/// input with one trailing newline removed.
fn read_secret() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let stdin = io::stdin();
    let mut secret = if stdin.is_terminal() {
        let typed = rpassword::prompt_password("password: ").context("cannot read password")?;
        Zeroizing::new(typed.into_bytes())
    } else {
        let mut buffer = Zeroizing::new(Vec::new());
        stdin
            .lock()
            .read_to_end(&mut buffer)
            .context("cannot read the secret from standard input")?;
        buffer
    };
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    Ok(secret)
}

/// Prints one value as a line of JSON.
pub(crate) fn print_json(value: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

fn credential_json(credential: &Credential) -> serde_json::Value {
    let mut value = serde_json::json!({
        "id": credential.id,
        "user_id": credential.user_id,
        "created_at": time_text(credential.created_at.as_ref()),
        "updated_at": time_text(credential.updated_at.as_ref()),
    });
    if let Some(Kind::Odoo(odoo)) = credential.fields.as_ref().and_then(|f| f.kind.as_ref()) {
        value["kind"] = "odoo".into();
        value["url"] = odoo.url.clone().into();
        value["database"] = odoo.database.clone().into();
        value["username"] = odoo.username.clone().into();
    }
    value
}

fn print_credential(credential: &Credential, json: bool) -> io::Result<()> {
    if json {
        return print_json(&credential_json(credential));
    }
    let mut out = io::stdout().lock();
    writeln!(out, "id        {}", credential.id)?;
    writeln!(out, "user      {}", credential.user_id)?;
    if let Some(Kind::Odoo(odoo)) = credential.fields.as_ref().and_then(|f| f.kind.as_ref()) {
        writeln!(out, "kind      odoo")?;
        writeln!(out, "url       {}", odoo.url)?;
        writeln!(out, "database  {}", odoo.database)?;
        writeln!(out, "username  {}", odoo.username)?;
    }
    writeln!(
        out,
        "created   {}",
        time_text(credential.created_at.as_ref())
    )?;
    writeln!(
        out,
        "updated   {}",
        time_text(credential.updated_at.as_ref())
    )?;
    out.flush()
}

fn print_list(credentials: &[Credential], json: bool) -> io::Result<()> {
    if json {
        let all: Vec<serde_json::Value> = credentials.iter().map(credential_json).collect();
        return print_json(&serde_json::Value::Array(all));
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<32}  {:<5}  {:<20}  {:<20}  URL",
        "ID", "KIND", "DATABASE", "USERNAME"
    )?;
    for credential in credentials {
        if let Some(Kind::Odoo(odoo)) = credential.fields.as_ref().and_then(|f| f.kind.as_ref()) {
            writeln!(
                out,
                "{:<32}  {:<5}  {:<20}  {:<20}  {}",
                credential.id, "odoo", odoo.database, odoo.username, odoo.url
            )?;
        }
    }
    out.flush()
}

fn time_text(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|at| {
        let seconds = u64::try_from(at.seconds).ok()?;
        let at = UNIX_EPOCH + Duration::from_secs(seconds);
        Some(humantime::format_rfc3339_seconds(at).to_string())
    })
    .unwrap_or_else(|| "-".into())
}
