//! Building the server from [`Settings`] and running it until shutdown.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::access::Policy;
use crate::audit::AuditEvent;
use crate::audit::sink::Sink;
use crate::config::{Settings, Transport};
use crate::credential::UnixMillis;
use crate::keys::KeyManager;
use crate::limits::{self, CallLimitsLayer, ConnectionSlots};
use crate::reload::Reloadable;
use crate::service::VaultService;
use crate::store::CredentialStore as _;
use crate::store::SledStore;
use crate::transport::{self, TlsFiles};

/// How long calls in flight may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the store, loads the keyring and policy, serves until `shutdown`
/// completes, then flushes the store. SIGHUP re-reads the policy, the
/// keyring and the TLS files.
///
/// Lifecycle lines meant for people and scripts (what `--dev` created, where
/// the data is, the address actually bound) go to standard output; logs go
/// to standard error.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(layout) = &settings.dev {
        for line in layout
            .ensure()
            .context("cannot create the development files")?
        {
            announce(&format!("dev mode: {line}"))?;
        }
    }
    // Everything that can be wrong with the files is found before anything
    // is created on disk.
    let keyring =
        crate::keys::load_keyring(&settings.keyring).context("cannot load the keyring")?;
    let policy = Reloadable::new(Policy::load(&settings.policy).context("cannot load the policy")?);
    let tls = match &settings.transport {
        Transport::Tls(files) => {
            let config = files.load().context("cannot set up TLS")?;
            Some((files.clone(), Reloadable::new(config)))
        }
        Transport::Plaintext => None,
    };
    crate::files::create_private_dir(&settings.data_dir)?;
    let sink = Sink::open(&settings.audit_sink).context("cannot open the audit log")?;
    let store = SledStore::open_with_sink(&settings.database_dir(), sink).with_context(|| {
        format!(
            "cannot open database in {}",
            settings.database_dir().display()
        )
    })?;
    let keys = Arc::new(
        KeyManager::new(settings.keyring.clone(), keyring, &store)
            .await
            .context("cannot use the keyring")?,
    );
    tracing::info!(
        core_dumps_off = crate::hygiene::core_dumps_forbidden(),
        "process hygiene checked"
    );
    let keyring = keys.current();
    tracing::info!(
        keys = keyring.keys().count(),
        primary = keyring.primary().version(),
        fingerprint = %keyring.primary().fingerprint(),
        "keyring loaded"
    );

    if let Some(retention) = settings.audit_retention {
        spawn_audit_pruning(store.clone(), retention);
    }

    if let Some(addr) = settings.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let bound = listener.local_addr()?;
        crate::telemetry::serve(listener)
            .with_context(|| format!("cannot serve metrics on {bound}"))?;
        announce(&format!("metrics on http://{bound}/metrics"))?;
    }
    let health = Health::start(store.clone());
    if let Some(addr) = settings.health_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve health checks on {addr}"))?;
        announce(&format!(
            "health checks (plaintext gRPC) on {}",
            listener.local_addr()?
        ))?;
        health.serve_plaintext(listener, settings.max_call_duration);
    }

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let service = VaultService::new(store.clone(), Arc::clone(&keys), policy.clone())
        .with_disk_reserve(settings.data_dir.clone(), settings.min_free_bytes);
    let serving_tls = tls.as_ref().map(|(_, config)| config.clone());
    on_hangup(Reloads {
        policy_path: settings.policy.clone(),
        policy,
        tls,
        keys,
        store: store.clone(),
    })?;

    let slots = ConnectionSlots::new(settings.max_connections);
    match serving_tls {
        Some(config) => {
            announce_ready(&settings, bound, "mutual TLS")?;
            let incoming = transport::serve_tls(listener, config, slots);
            serve(service, &health, &settings, incoming, shutdown).await?;
        }
        None => {
            announce_ready(&settings, bound, "PLAINTEXT (loopback only)")?;
            let incoming = transport::serve_plaintext(listener, slots);
            serve(service, &health, &settings, incoming, shutdown).await?;
        }
    }

    store.flush().context("final flush failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `incoming` connections until `shutdown`, then lets calls in flight
/// finish for at most [`SHUTDOWN_GRACE`]: a client that never closes its
/// connection must not hold the process forever.
async fn serve<IO>(
    service: VaultService<SledStore>,
    health: &Health,
    settings: &Settings,
    incoming: impl Stream<Item = io::Result<IO>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let (vault, admin) = service.into_servers();
    let serve = limited_server(settings.max_call_duration)
        .add_service(vault.max_decoding_message_size(limits::MAX_REQUEST_BYTES))
        .add_service(admin.max_decoding_message_size(limits::MAX_ADMIN_REQUEST_BYTES))
        .add_service(health.service())
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let grace_expired = async {
        match stopped.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serve => served.context("server failed"),
        () = grace_expired => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
            Ok(())
        }
    }
}

/// gRPC server reflection (`grpc.reflection.v1`), so that tools such as
/// grpcurl can list and describe the API without the proto files.
fn reflection_v1() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    reflection()
        .build_v1()
        .context("cannot build the reflection service")
}

/// The older reflection protocol, which some tools still ask for first.
fn reflection_v1alpha() -> anyhow::Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    reflection()
        .build_v1alpha()
        .context("cannot build the reflection service")
}

/// Reflection over the vault's API and the health service.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vault_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// How often the store's writability is probed for the health service and
/// the metrics sampled.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The gRPC health service (`grpc.health.v1`). It reports SERVING for the
/// server ("") and both services once the store is open and the keyring
/// verified (it is started only then), and NOT_SERVING while the store
/// refuses writes: a probe write and flush every few seconds tells.
struct Health {
    service: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl Health {
    /// Starts reporting on `store`.
    fn start(store: SledStore) -> Self {
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let monitor = reporter.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEALTH_INTERVAL);
            let mut was_writable = None;
            loop {
                ticks.tick().await;
                let probe = {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || store.probe_writable()).await
                };
                let writable = matches!(probe, Ok(Ok(())));
                if was_writable != Some(writable) {
                    let status = if writable {
                        tracing::info!("health: serving");
                        tonic_health::ServingStatus::Serving
                    } else {
                        tracing::error!(?probe, "health: the store refuses writes; not serving");
                        tonic_health::ServingStatus::NotServing
                    };
                    for name in HEALTH_NAMES {
                        monitor.set_service_status(name, status).await;
                    }
                    was_writable = Some(writable);
                }
                crate::telemetry::sample(&store, writable);
            }
        });
        Self { service }
    }

    /// The health service, for a server's router.
    fn service(
        &self,
    ) -> tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> {
        self.service.clone()
    }

    /// Serves only the health service, in plaintext, on `listener`, with
    /// the main port's HTTP/2 limits, few connections, and connections
    /// recycled after a while: the port needs no certificate, so whoever
    /// reaches it must not be able to hold memory or file handles.
    fn serve_plaintext(&self, listener: TcpListener, max_call_duration: Duration) {
        let service = self.service();
        let incoming =
            transport::serve_plaintext(listener, ConnectionSlots::new(HEALTH_CONNECTIONS));
        tokio::spawn(async move {
            let served = limited_server(max_call_duration)
                .max_connection_age(HEALTH_CONNECTION_AGE)
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the health listener failed");
            }
        });
    }
}

/// Connections the plaintext health port serves at once.
const HEALTH_CONNECTIONS: u32 = 16;

/// How long a connection to the health port lives before the server asks
/// the client to reconnect (probes make a connection per check anyway).
const HEALTH_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// A tonic server with the HTTP/2 limits of [`limits`] and the call limits.
fn limited_server(
    max_call_duration: Duration,
) -> tonic::transport::Server<
    tower::layer::util::Stack<CallLimitsLayer, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits::MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(limits::MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(limits::MAX_PENDING_RESETS))
        .http2_keepalive_interval(Some(limits::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(limits::KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
        .layer(CallLimitsLayer::new(max_call_duration))
}

/// The names the health service answers for: the whole server and each
/// service.
const HEALTH_NAMES: [&str; 3] = ["", "vault.v1.Vault", "vault.v1.Admin"];

fn announce_ready(settings: &Settings, bound: std::net::SocketAddr, mode: &str) -> io::Result<()> {
    announce(&format!("data in {}", settings.data_dir.display()))?;
    if let (Some(layout), Transport::Tls(_)) = (&settings.dev, &settings.transport) {
        announce(&format!(
            "dev mode: client certificates in {} (CA ca.pem; roles api, sync, ops: ROLE.pem, \
             ROLE.key)",
            layout.tls_dir().display()
        ))?;
    }
    tracing::info!(addr = %bound, mode, "serving");
    announce(&format!("listening on {bound} ({mode})"))
}

/// Everything SIGHUP re-reads: the policy, the keyring, and the TLS files
/// when serving TLS. A file that fails to load or to check out leaves the
/// previous configuration in force and is logged; established connections
/// keep the TLS configuration they were accepted with.
struct Reloads {
    policy_path: PathBuf,
    policy: Reloadable<Policy>,
    tls: Option<(TlsFiles, Reloadable<rustls::ServerConfig>)>,
    keys: Arc<KeyManager>,
    store: SledStore,
}

impl Reloads {
    async fn reload(&self) {
        let (outcome, detail) = match Policy::load(&self.policy_path) {
            Ok(loaded) => {
                let summary = loaded.summary();
                self.policy.replace(loaded);
                tracing::info!(path = %self.policy_path.display(), summary, "policy reloaded");
                ("Ok", summary)
            }
            Err(err) => {
                tracing::error!(error = %err, "policy reload refused; keeping the previous policy");
                ("FailedPrecondition", err.to_string())
            }
        };
        self.audit("reload.policy", outcome, detail).await;

        let (outcome, detail) = match self.keys.reload(&self.store).await {
            Ok(()) => {
                let keyring = self.keys.current();
                let primary = keyring.primary();
                tracing::info!("keyring reloaded");
                (
                    "Ok",
                    format!(
                        "primary={} fingerprint={}",
                        primary.version(),
                        primary.fingerprint()
                    ),
                )
            }
            Err(err) => {
                tracing::error!(error = %err, "keyring reload refused; keeping the previous keyring");
                ("FailedPrecondition", err.to_string())
            }
        };
        self.audit("keys.reload", outcome, detail).await;

        if let Some((files, config)) = &self.tls {
            let (outcome, detail) = match files.load() {
                Ok(loaded) => {
                    config.replace(loaded);
                    tracing::info!("TLS certificates reloaded");
                    ("Ok", String::new())
                }
                Err(err) => {
                    tracing::error!(
                        error = %err,
                        "TLS reload refused; keeping the previous certificates"
                    );
                    ("FailedPrecondition", err.to_string())
                }
            };
            self.audit("reload.tls", outcome, detail).await;
        }
    }

    /// Records one part of a SIGHUP reload in the audit trail.
    async fn audit(&self, operation: &str, outcome: &str, detail: String) {
        let event = AuditEvent {
            caller: "signal:SIGHUP".into(),
            operation: operation.into(),
            outcome: outcome.into(),
            detail,
            ..AuditEvent::now()
        };
        if let Err(err) = self.store.append_audit(&event).await {
            tracing::error!(error = %err, "cannot write the audit event of a reload");
        }
    }
}

#[cfg(unix)]
fn on_hangup(reloads: Reloads) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            reloads.reload().await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn on_hangup(_reloads: Reloads) -> anyhow::Result<()> {
    Ok(())
}

/// Prunes audit events older than `retention` now and every hour.
fn spawn_audit_pruning(store: SledStore, retention: Duration) {
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(60 * 60));
        loop {
            hourly.tick().await;
            let cutoff = UnixMillis::now()
                .0
                .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
            match store.prune_audit(cutoff).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "old audit events pruned"),
                Err(err) => tracing::error!(error = %err, "audit pruning failed"),
            }
        }
    });
}

fn announce(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "vault-server: {line}")?;
    out.flush()
}
