//! Harness of the end-to-end tests: starts the real `vault-server` binary on
//! an ephemeral loopback port in a temporary data folder, and hands out
//! clients connected to it over real gRPC.
//!
//! The binary is the one cargo built next to the test executable
//! (`target/<profile>/vault-server`); `cargo test --workspace` builds it.
//! Set `VAULT_SERVER_BIN` to test another build.

pub mod hostile;
pub mod soak;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use std::{env, fs, thread};

use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vault_client::{TlsFiles, VaultClient};
use vault_server::dev::DevLayout;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `vault-server --dev` and the folder it keeps its data in.
#[derive(Debug)]
pub struct TestVault {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl TestVault {
    /// Starts a server in a new temporary folder.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_logging("debug", extra_args)
    }

    /// Starts a server whose log is filtered by `filter` (a `RUST_LOG`
    /// value) instead of the tests' `debug`: benchmarks run it at the
    /// production default, `info`.
    pub fn start_logging(filter: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        Self::start_in(dir, extra_args, &[("RUST_LOG", filter)])
    }

    /// Starts a server with its data in `dir/data` (which the caller may
    /// have prepared, say as a small file system of its own), extra
    /// command-line arguments and extra environment variables.
    pub fn start_in(dir: TempDir, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let (child, addr) = spawn(dir.path(), &extra_args, &extra_env);
        Self {
            child: Some(child),
            addr,
            dir,
            extra_args,
            extra_env,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The server's resident memory in KiB, from `/proc/PID/status`.
    pub fn resident_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// Restarts the server with other extra arguments and environment.
    pub fn restart_with(&mut self, extra_args: &[&str], extra_env: &[(&str, &str)]) {
        self.extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
        self.extra_env = extra_env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        self.restart();
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's data folder (database and keyring).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything the server has logged so far, across restarts.
    pub fn log(&self) -> Vec<u8> {
        fs::read(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The files `--dev` generated: keyring, policy, certificates.
    pub fn dev_layout(&self) -> DevLayout {
        DevLayout::new(&self.data_dir())
    }

    /// The client TLS files of a development role (`api`, `sync`, `ops`).
    pub fn tls_files(&self, role: &str) -> TlsFiles {
        let layout = self.dev_layout();
        TlsFiles {
            ca: layout.tls_file("ca", "pem"),
            cert: layout.tls_file(role, "pem"),
            key: layout.tls_file(role, "key"),
            server_name: None,
        }
    }

    /// A client of the `api` role: it stores, reads, deletes, and decrypts
    /// for connection tests.
    pub async fn client(&self) -> VaultClient {
        self.client_as("api").await
    }

    /// A client of the `sync` role: it lists and decrypts for syncs.
    pub async fn sync_client(&self) -> VaultClient {
        self.client_as("sync").await
    }

    /// A client with the certificate of a development role.
    pub async fn client_as(&self, role: &str) -> VaultClient {
        VaultClient::connect(&self.addr.to_string(), Some(&self.tls_files(role)))
            .await
            .expect("connect to the test server")
    }

    /// A raw gRPC channel with the certificate of a development role, for
    /// tests that send requests the typed client cannot express.
    pub async fn channel_as(&self, role: &str) -> Channel {
        let files = self.tls_files(role);
        let read = |path: &Path| fs::read(path).expect("read a TLS file");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&files.ca)))
            .identity(Identity::from_pem(read(&files.cert), read(&files.key)));
        Endpoint::from_shared(format!("https://{}", self.addr))
            .expect("a valid address")
            .tls_config(tls)
            .expect("a valid TLS configuration")
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// Runs `vaultctl` against this server with the certificate of `role`.
    pub fn vaultctl(&self, role: &str, args: &[&str]) -> Output {
        let files = self.tls_files(role);
        Command::new(sibling_binary("vaultctl"))
            .args(args)
            .env("VAULT_ADDR", self.addr.to_string())
            .env("VAULT_CA", &files.ca)
            .env("VAULT_CERT", &files.cert)
            .env("VAULT_KEY", &files.key)
            .stdin(Stdio::null())
            .output()
            .expect("run vaultctl")
    }

    /// The keyring file of this server.
    pub fn keyring_path(&self) -> PathBuf {
        self.dev_layout().keyring()
    }

    /// Adds a new random master key of `version` to the keyring file and
    /// makes it the primary. The server sees it after a reload or restart.
    pub fn add_primary_key(&self, version: u32) {
        let path = self.keyring_path();
        let text = fs::read_to_string(&path).expect("read the keyring");
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("primary"))
            .collect();
        let key = vault_server::crypto::fernet::generate_key_base64();
        let line = format!(
            "key {version} {}",
            secrecy::ExposeSecret::expose_secret(&key)
        );
        kept.push(&line);
        let primary = format!("primary {version}");
        kept.push(&primary);
        fs::write(&path, kept.join("\n") + "\n").expect("write the keyring");
    }

    /// Starts the binary on this server's data folder while the server is
    /// stopped, expecting it to refuse; returns what it printed on stderr.
    pub fn start_refused(&self) -> String {
        assert!(self.child.is_none(), "stop the server first");
        let output = Command::new(server_binary())
            .args(["--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .output()
            .expect("run vault-server");
        assert!(!output.status.success(), "the server started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Sends SIGHUP: the server re-reads its policy and certificates.
    pub fn hang_up(&self) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Kills the server with SIGKILL: no shutdown, no final flush. Whatever
    /// it acknowledged must already be on disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the server");
            child.wait().expect("reap the server");
        }
    }

    /// Asks the server to stop with SIGTERM and waits for it to exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
            let exit = child.wait().expect("reap the server");
            assert!(exit.success(), "server exited with {exit} after SIGTERM");
        }
    }

    /// Starts the server again on the same data folder (after [`kill`] or
    /// [`stop`]); it gets a new port.
    ///
    /// [`kill`]: TestVault::kill
    /// [`stop`]: TestVault::stop
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(self.dir.path(), &self.extra_args, &self.extra_env);
        self.child = Some(child);
        self.addr = addr;
    }
}

impl Drop for TestVault {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // For a post-mortem: VAULT_E2E_KEEP=1 leaves the data and the log.
        if env::var_os("VAULT_E2E_KEEP").is_some() {
            eprintln!(
                "kept the test server's folder {}",
                self.dir.path().display()
            );
            self.dir.disable_cleanup(true);
        }
    }
}

/// The `vault-server` binary under test.
pub fn server_binary() -> PathBuf {
    match env::var_os("VAULT_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => sibling_binary("vault-server"),
    }
}

/// A binary of the workspace, built next to the running executable: a test
/// runs from target/<profile>/deps, a benchmark binary from target/<profile>.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = env::current_exe().expect("find the running executable");
    let file = format!("{name}{}", env::consts::EXE_SUFFIX);
    let here = exe.parent().expect("an executable lives in a folder");
    let candidates = [Some(here), here.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&file))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "{file} is missing next to {}: build it with `cargo build --workspace --bins` \
                 (cargo test --workspace does this)",
                exe.display()
            )
        })
}

/// Runs a Python script (with `cryptography` installed) and returns what it
/// printed. `VAULT_TEST_PYTHON` names the interpreter; `python3` by default.
pub fn python(script: &str, args: &[&str]) -> String {
    let interpreter = env::var("VAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&interpreter)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {interpreter}: {err}"));
    assert!(
        output.status.success(),
        "{interpreter} failed (is `cryptography` installed? python3 -m pip install \
         cryptography):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("python printed text")
}

/// Starts `vault-server --dev` with its data under `root/data` and its log
/// appended to `root/server.log`, and waits for the address it bound.
fn spawn(
    root: &Path,
    extra_args: &[String],
    extra_env: &[(String, String)],
) -> (Child, SocketAddr) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("server.log"))
        .expect("open the server log");
    let mut child = Command::new(server_binary())
        .args(["--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.join("data"))
        .args(extra_args)
        .env("RUST_LOG", "debug")
        .env_remove("VAULT_KEYRING")
        .envs(extra_env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start vault-server");

    let stdout = child.stdout.take().expect("stdout is piped");
    let (found, address) = mpsc::channel();
    thread::spawn(move || {
        // Keep draining stdout after the address so the server never blocks
        // writing to a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // "vault-server: listening on ADDR (MODE)"
            if let Some(rest) = line.strip_prefix("vault-server: listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = found.send(addr.parse::<SocketAddr>());
            }
        }
    });

    match address.recv_timeout(START_TIMEOUT) {
        Ok(Ok(addr)) => (child, addr),
        Ok(Err(err)) => panic!("server printed an unparsable address: {err}"),
        Err(_) => {
            let _ = child.kill();
            let log = fs::read_to_string(root.join("server.log")).unwrap_or_default();
            panic!("server did not start within {START_TIMEOUT:?}; log:\n{log}");
        }
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmLck`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read a data folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The first of `passwords` (all made by [`unique_password`]) that occurs in
/// `haystack`, in one pass over it: every candidate starts with `pw-`.
pub fn find_password<'a>(haystack: &[u8], passwords: &'a [String]) -> Option<&'a str> {
    let wanted: std::collections::HashSet<&[u8]> = passwords
        .iter()
        .map(|password| password.as_bytes())
        .collect();
    let is_password_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-';
    let mut at = 0;
    while let Some(offset) = haystack[at..]
        .windows(3)
        .position(|window| window == b"pw-")
    {
        let start = at + offset;
        let len = haystack[start..]
            .iter()
            .take_while(|b| is_password_byte(b))
            .count();
        // A password may be followed by more password-like bytes; try every
        // length that could be one.
        for end in (start + 3..=start + len).rev() {
            if let Some(found) = wanted.get(&haystack[start..end]) {
                let index = passwords.iter().position(|p| p.as_bytes() == *found)?;
                return Some(&passwords[index]);
            }
        }
        at = start + 3;
    }
    None
}

/// An Odoo connection with plausible fields.
pub fn odoo(n: usize) -> vault_client::OdooConnection {
    vault_client::OdooConnection {
        url: format!("https://tenant{n}.odoo.example.com"),
        database: format!("db{n}"),
        username: format!("sync{n}@example.com"),
    }
}

/// A distinctive password that cannot occur by chance in any file.
pub fn unique_password(label: &str) -> String {
    let mut salt = [0u8; 8];
    rand::fill(&mut salt);
    let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    format!("pw-{label}-{salt}")
}
