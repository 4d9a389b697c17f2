//! Mutual TLS between the processes (rustls with ring, through tonic).
//!
//! Every component has one certificate, used both ways: as a server it proves to its callers
//! that it is the service they meant to call, as a client it proves who is calling. A
//! component's certificate carries the name `payouts-<component>` (`payouts-gateway`,
//! `payouts-limits`, ...) as a DNS subject alternative name; clients verify a server against
//! the name of the service they call, not the URL's host, so a URL can be any address of the
//! pod or Service. The platform's own services carry the names listed in
//! `GRPC_PLATFORM_IDENTITIES` (see [`crate::authz`]).
//!
//! The certificate, key and CA come from files (`GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`,
//! `GRPC_TLS_CA_FILE`, as cert-manager mounts them) and are read again every
//! [`RELOAD_INTERVAL`]: a renewed certificate is used for new connections without a restart.
//! A file that has become unreadable or invalid keeps the last good configuration (and says
//! so in the log).
//!
//! The server asks for a client certificate but lets a connection without one complete its
//! handshake, so that health checks stay open and every other call is refused with a gRPC
//! status (UNAUTHENTICATED) that says why, rather than a bare handshake failure. A
//! certificate that is offered must chain to the CA.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsFiles;
use crate::shutdown::Shutdown;

/// How often the certificate files are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The certificate name of a component (`gateway` or a service name).
pub fn component_identity(component: &str) -> String {
    format!("payouts-{component}")
}

/// Which CA may prove which kind of caller. With one CA for everyone (`GRPC_TLS_CA_FILE`
/// alone), any certificate it signed may carry any name. With the platform's own CA
/// (`GRPC_TLS_PLATFORM_CA_FILE`), a component's name (`payouts-*`) counts only on a
/// certificate our CA signed, and a platform identity only on one the platform's CA signed:
/// whoever can get certificates from the platform's issuer cannot become the webhooks
/// service, and a leaked component issuer cannot mint platform callers.
enum Vouchers {
    Shared,
    Separate {
        components: Arc<dyn ClientCertVerifier>,
        platform: Arc<dyn ClientCertVerifier>,
    },
}

/// Which kinds of name a peer's certificate may prove (see [`Vouchers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vouched {
    /// The certificate chains to the components' CA: `payouts-*` names count.
    pub component: bool,
    /// The certificate chains to the platform's CA: `GRPC_PLATFORM_IDENTITIES` count.
    pub platform: bool,
}

impl Vouched {
    /// One CA for everyone: every name counts.
    pub const ANY: Vouched = Vouched {
        component: true,
        platform: true,
    };
}

impl Vouchers {
    fn vouch(&self, chain: &[CertificateDer<'_>]) -> Vouched {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Vouched::default();
        };
        let verifies = |verifier: &Arc<dyn ClientCertVerifier>| {
            verifier
                .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
                .is_ok()
        };
        match self {
            Vouchers::Shared => Vouched::ANY,
            Vouchers::Separate {
                components,
                platform,
            } => Vouched {
                component: verifies(components),
                platform: verifies(platform),
            },
        }
    }
}

/// A component's mutual-TLS configuration, reloaded from its files when they change.
pub struct MutualTls {
    files: TlsFiles,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls")
            .field("files", &self.files)
            .field("names", &self.read().names)
            .finish()
    }
}

struct Loaded {
    /// The files' bytes, to tell whether they changed.
    source: Source,
    /// Which CA may prove which kind of name.
    vouchers: Vouchers,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The names of this component's own certificate.
    names: Vec<String>,
}

impl MutualTls {
    /// Reads and checks the files; an error names the setting at fault.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<Self>> {
        let loaded = build(files, read_all(files)?)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            loaded: RwLock::new(loaded),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The names (DNS and URI SANs) of this component's own certificate.
    pub fn own_names(&self) -> Vec<String> {
        self.read().names.clone()
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.read().server)
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.read().client)
    }

    /// Reads the files again; swaps the configuration when they changed and are valid.
    /// `Ok(true)` when a new configuration is in use.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let source = read_all(&self.files)?;
        if source == self.read().source {
            return Ok(false);
        }
        let loaded = build(&self.files, source)?;
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded;
        Ok(true)
    }

    /// Reloads every [`RELOAD_INTERVAL`] until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, shutdown: Shutdown) {
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.tick().await;
            let stop = shutdown.requested();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = &mut stop => return,
                }
                match tls.reload() {
                    Ok(true) => {
                        tracing::info!(names = ?tls.own_names(), "gRPC TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "gRPC TLS files unusable; keeping the last good ones")
                    }
                }
            }
        });
    }

    /// The accepted connections of `listener`, each after a successful handshake, with the
    /// caller's certificate names. Ends at `shutdown`. A failed handshake is logged and
    /// dropped; it never stops the server.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
        budget: Arc<crate::peers::PeerBudget>,
        shutdown: Shutdown,
    ) -> ReceiverStream<io::Result<TlsConnection>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            let stop = shutdown.requested();
            tokio::pin!(stop);
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = &mut stop => return,
                };
                let (mut stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over its budget, a peer's new connection is closed before any work.
                let Ok(mut slot) = budget.admit(remote.ip()) else {
                    continue;
                };
                crate::grpc::set_nodelay(&mut stream);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                let tls_now = Arc::clone(&tls);
                let sender = sender.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    slot.handshake_done();
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::info!(%remote, %error, "gRPC TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%remote, "gRPC TLS handshake timed out");
                            return;
                        }
                    };
                    let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
                    let names = chain.first().map(certificate_names).unwrap_or_default();
                    let vouched = tls_now.read().vouchers.vouch(chain);
                    let peer = PeerIdentity {
                        remote: Some(remote),
                        names: names.into(),
                        vouched,
                    };
                    let connection = TlsConnection {
                        stream,
                        peer,
                        _slot: slot,
                    };
                    let _ = sender.send(Ok(connection)).await;
                });
            }
        });
        ReceiverStream::new(receiver)
    }

    /// A connector for tonic channels to `service`: TCP, then TLS with this component's
    /// certificate, verifying that the server is `payouts-<service>`.
    pub fn connector(self: &Arc<Self>, server_identity: &str) -> anyhow::Result<TlsConnector> {
        let server_name = ServerName::try_from(server_identity.to_owned()).map_err(|error| {
            anyhow::anyhow!("{server_identity:?} is not a certificate name: {error}")
        })?;
        Ok(TlsConnector {
            tls: Arc::clone(self),
            server_name,
        })
    }
}

fn read_file(variable: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        anyhow::anyhow!(
            "invalid setting {variable}: cannot read {}: {error}",
            path.display()
        )
    })
}

/// The files as read: certificate, key, CA, and the platform's CA when it is separate.
#[derive(PartialEq, Eq)]
struct Source {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    platform_ca: Option<Vec<u8>>,
}

fn read_all(files: &TlsFiles) -> anyhow::Result<Source> {
    Ok(Source {
        cert: read_file("GRPC_TLS_CERT_FILE", &files.cert)?,
        key: read_file("GRPC_TLS_KEY_FILE", &files.key)?,
        ca: read_file("GRPC_TLS_CA_FILE", &files.ca)?,
        platform_ca: files
            .platform_ca
            .as_deref()
            .map(|path| read_file("GRPC_TLS_PLATFORM_CA_FILE", path))
            .transpose()?,
    })
}

/// The CA certificates of a PEM file, refused (naming `variable`) when there are none.
fn roots_of(
    variable: &str,
    path: &std::path::Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let invalid =
        |what: String| anyhow::anyhow!("invalid setting {variable}: {} {what}", path.display());
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| invalid(format!("is not PEM: {error}")))?;
    let mut check = RootCertStore::empty();
    for certificate in &certificates {
        check
            .add(certificate.clone())
            .map_err(|error| invalid(format!("holds an unusable CA: {error}")))?;
    }
    if certificates.is_empty() {
        return Err(invalid("holds no certificate".to_owned()));
    }
    Ok(certificates)
}

/// The platform's CA must not be one of ours (the same certificate, or the same key under
/// another certificate): then every certificate would count as both kinds of caller and the
/// binding of names to CAs would be gone.
fn refuse_shared_roots(
    components: &[CertificateDer<'static>],
    platform: &[CertificateDer<'static>],
) -> Result<(), String> {
    let key_of = |certificate: &CertificateDer<'_>| {
        webpki::anchor_from_trusted_cert(certificate)
            .map(|anchor| anchor.subject_public_key_info.as_ref().to_vec())
            .ok()
    };
    for theirs in platform {
        for ours in components {
            let same_key = key_of(theirs).is_some() && key_of(theirs) == key_of(ours);
            if theirs == ours || same_key {
                return Err("holds a CA that GRPC_TLS_CA_FILE holds too: the platform's callers must come from their own CA, or a certificate from it could carry a component's name (leave GRPC_TLS_PLATFORM_CA_FILE unset for one CA for everyone)".to_owned());
            }
        }
    }
    Ok(())
}

/// A client-certificate verifier that trusts exactly `roots`.
fn verifier_of(
    roots: &[CertificateDer<'static>],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
            .allow_unauthenticated()
            .build()?,
    )
}

fn build(files: &TlsFiles, source: Source) -> anyhow::Result<Loaded> {
    let invalid = |variable: &str, path: &std::path::Path, what: String| {
        anyhow::anyhow!("invalid setting {variable}: {} {what}", path.display())
    };
    let (cert_pem, key_pem, ca_pem) = (&source.cert, &source.key, &source.ca);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            invalid(
                "GRPC_TLS_CERT_FILE",
                &files.cert,
                format!("is not PEM: {error}"),
            )
        })?;
    let leaf = chain.first().ok_or_else(|| {
        invalid(
            "GRPC_TLS_CERT_FILE",
            &files.cert,
            "holds no certificate".to_owned(),
        )
    })?;
    let names = certificate_names(leaf);
    if names.is_empty() {
        return Err(invalid(
            "GRPC_TLS_CERT_FILE",
            &files.cert,
            "has no DNS or URI subject alternative name to identify this component by".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| {
        invalid(
            "GRPC_TLS_KEY_FILE",
            &files.key,
            format!("holds no private key: {error}"),
        )
    })?;
    let component_roots = roots_of("GRPC_TLS_CA_FILE", &files.ca, ca_pem)?;
    let platform_roots = match (&files.platform_ca, &source.platform_ca) {
        (Some(path), Some(pem)) => Some(roots_of("GRPC_TLS_PLATFORM_CA_FILE", path, pem)?),
        _ => None,
    };
    if let (Some(path), Some(platform_roots)) = (&files.platform_ca, &platform_roots) {
        refuse_shared_roots(&component_roots, platform_roots)
            .map_err(|what| invalid("GRPC_TLS_PLATFORM_CA_FILE", path, what))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The handshake admits a certificate from either CA; which names it may prove is decided
    // after, by which CA vouches for it ([`Vouchers`]).
    let all_roots: Vec<CertificateDer<'static>> = component_roots
        .iter()
        .chain(platform_roots.iter().flatten())
        .cloned()
        .collect();
    let verifier = verifier_of(&all_roots, &provider)
        .map_err(|error| invalid("GRPC_TLS_CA_FILE", &files.ca, error.to_string()))?;
    let vouchers = match &platform_roots {
        None => Vouchers::Shared,
        Some(platform_roots) => Vouchers::Separate {
            components: verifier_of(&component_roots, &provider)?,
            platform: verifier_of(platform_roots, &provider)?,
        },
    };
    let mut roots = RootCertStore::empty();
    for root in component_roots {
        roots.add(root)?;
    }
    let roots = Arc::new(roots);
    let key_mismatch = |error: rustls::Error| {
        invalid(
            "GRPC_TLS_KEY_FILE",
            &files.key,
            format!("does not go with GRPC_TLS_CERT_FILE: {error}"),
        )
    };
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(key_mismatch)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(key_mismatch)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        source,
        vouchers,
        server: Arc::new(server),
        client: Arc::new(client),
        names,
    })
}

/// The DNS and URI subject alternative names of a certificate (none when it cannot be read).
pub fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(certificate) {
        Ok(parsed) => parsed
            .valid_dns_names()
            .chain(parsed.valid_uri_names())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Who is at the other end of a server connection: the names of the client certificate it
/// presented (empty: none).
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    pub remote: Option<SocketAddr>,
    pub names: Arc<[String]>,
    /// Which kinds of name the certificate's CA may prove.
    pub vouched: Vouched,
}

/// An accepted connection after its TLS handshake.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerIdentity,
    /// The connection's place in its peer's budget, given back when it closes.
    _slot: crate::peers::PeerSlot,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Dials a gRPC server over TLS with the current client configuration (see
/// [`MutualTls::connector`]).
#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<MutualTls>,
    server_name: ServerName<'static>,
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.tls.client_config());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("gRPC URL {uri} has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            let stream = connector.connect(server_name, stream).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tls")
            .join(name)
    }

    /// A component's files copied into a directory of their own (so they can be replaced).
    #[test]
    fn the_platforms_ca_must_not_be_ours() {
        let (_dir, mut files) = files_of("gateway");
        files.platform_ca = Some(files.ca.clone());
        let error = MutualTls::load(&files).unwrap_err();
        assert!(
            format!("{error:#}").contains("GRPC_TLS_PLATFORM_CA_FILE"),
            "{error:#}"
        );
        files.platform_ca = Some(fixture("platform-ca.crt"));
        assert!(MutualTls::load(&files).is_ok());
    }

    fn files_of(component: &str) -> (std::path::PathBuf, TlsFiles) {
        let dir = std::env::temp_dir().join(format!("payouts-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
            platform_ca: None,
        };
        replace(&files, component);
        std::fs::copy(fixture("ca.crt"), &files.ca).unwrap();
        (dir, files)
    }

    fn replace(files: &TlsFiles, component: &str) {
        std::fs::copy(fixture(&format!("{component}.crt")), &files.cert).unwrap();
        std::fs::copy(fixture(&format!("{component}.key")), &files.key).unwrap();
    }

    #[test]
    fn a_renewed_certificate_is_used_without_a_restart_and_a_bad_one_is_not() {
        let (dir, files) = files_of("limits");
        let tls = MutualTls::load(&files).unwrap();
        assert_eq!(tls.own_names(), vec!["payouts-limits".to_owned()]);
        assert!(!tls.reload().unwrap(), "nothing changed");

        replace(&files, "balance");
        assert!(tls.reload().unwrap());
        assert_eq!(tls.own_names(), vec!["payouts-balance".to_owned()]);

        // A half-written or broken file keeps the last good configuration.
        std::fs::write(&files.cert, b"-----BEGIN CERTIFICATE-----\nnot base64").unwrap();
        let error = tls.reload().unwrap_err();
        assert!(
            format!("{error:#}").contains("GRPC_TLS_CERT_FILE"),
            "{error:#}"
        );
        assert_eq!(tls.own_names(), vec!["payouts-balance".to_owned()]);
        // The key of another certificate.
        replace(&files, "balance");
        std::fs::copy(fixture("limits.key"), &files.key).unwrap();
        let error = tls.reload().unwrap_err();
        assert!(
            format!("{error:#}").contains("GRPC_TLS_KEY_FILE"),
            "{error:#}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_or_empty_files_are_reported_by_their_setting() {
        let (dir, files) = files_of("limits");
        std::fs::write(&files.ca, b"").unwrap();
        let error = MutualTls::load(&files).unwrap_err();
        assert!(
            format!("{error:#}").contains("GRPC_TLS_CA_FILE"),
            "{error:#}"
        );
        std::fs::remove_file(&files.key).unwrap();
        let error = MutualTls::load(&files).unwrap_err();
        assert!(
            format!("{error:#}").contains("GRPC_TLS_KEY_FILE"),
            "{error:#}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
