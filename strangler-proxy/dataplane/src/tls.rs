//! TLS at the edge: the listener's certificate (read from the plan's PEM files, swapped
//! whole when either file changes, a bad new pair leaving the old one serving) and the trust
//! the proxy puts in `h2` services' certificates.
//!
//! The certificate is found per handshake by one atomic load ([`CertResolver`]); reading the
//! files happens on the reload thread, never on a connection's path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use strangler_plan::{ServiceSpec, TlsFiles, UpstreamProtocol};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// ALPN protocols the listener offers, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key {key} does not belong to the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The provider every TLS setting here uses (ring, as the PostgreSQL connections do).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_error(
    what: &'static str,
    path: &Path,
) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError {
    move |err| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: match err {
            rustls_pki_types::pem::Error::Io(io) => io.to_string(),
            rustls_pki_types::pem::Error::NoItemsFound => "no PEM item in it".to_string(),
            other => other.to_string(),
        },
    }
}

/// Every certificate in a PEM file.
fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error(what, path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error(what, path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads a certificate chain and its private key, and checks that they belong together.
pub fn load_pair(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(read_error("key", &files.key))?;
    let mismatch = |reason: String| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| mismatch(err.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(err) => Err(mismatch(err.to_string())),
    }
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct CertResolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS on the data-plane listener: the acceptor every worker shares and the certificate it
/// serves, reloaded when its files change.
pub struct TlsTermination {
    files: TlsFiles,
    current: Arc<ArcSwap<CertifiedKey>>,
    acceptor: TlsAcceptor,
    /// The files' modification times when last read.
    stamp: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    /// New pairs put in service since start.
    pub reloads: AtomicU64,
    /// Changed files that could not be used (the old pair kept serving).
    pub reload_failures: AtomicU64,
}

impl std::fmt::Debug for TlsTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTermination")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl TlsTermination {
    /// Reads the pair (an unreadable or mismatched pair is an error: the proxy does not
    /// start) and builds the listener's TLS settings: TLS 1.2 and 1.3 with rustls' default
    /// suites, ALPN `h2` then `http/1.1`.
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = (modified(&files.cert), modified(&files.key));
        let current = Arc::new(ArcSwap::from_pointee(load_pair(files)?));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CertResolver(Arc::clone(&current))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(Self {
            files: files.clone(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            stamp: std::sync::Mutex::new(stamp),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the pair again if either file changed since it was last read; a pair that
    /// cannot be used is logged and counted, and the one in service stays.
    pub fn reload_if_changed(&self) {
        let now = (modified(&self.files.cert), modified(&self.files.key));
        {
            let Ok(mut stamp) = self.stamp.lock() else {
                return;
            };
            if *stamp == now {
                return;
            }
            *stamp = now;
        }
        match load_pair(&self.files) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "TLS certificate not reloaded; the previous one stays in service");
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK`] on a thread of its own until `stop` turns
    /// true.
    pub fn watch(self: &Arc<Self>, stop: watch::Receiver<bool>) -> std::io::Result<()> {
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("strangler-tls-reload".into())
            .spawn(move || {
                while !*stop.borrow() {
                    std::thread::sleep(RELOAD_CHECK);
                    this.reload_if_changed();
                }
            })
            .map(drop)
    }
}

/// The client settings for `h2` services: the webpki roots, plus every `ca` file the plan's
/// services name; ALPN is set by the connector.
pub fn upstream_client_config<'a>(
    services: impl IntoIterator<Item = &'a ServiceSpec>,
) -> Result<ClientConfig, TlsError> {
    client_config(
        services
            .into_iter()
            .filter(|service| service.protocol == UpstreamProtocol::H2)
            .filter_map(|service| service.ca.as_deref()),
    )
}

/// Client settings trusting the webpki roots and the certificates in the `cas` PEM files.
pub fn client_config<'a>(
    cas: impl IntoIterator<Item = &'a Path>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for ca in cas {
        for cert in certificates(ca, "CA certificate")? {
            roots.add(cert).map_err(|err| TlsError::Read {
                what: "CA certificate",
                path: ca.to_path_buf(),
                reason: err.to_string(),
            })?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn write(files: &TlsFiles, cert: &str, key: &str) {
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    }

    /// The certificate the listener serves now (DER).
    fn served(tls: &TlsTermination) -> Vec<u8> {
        tls.current.load().end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn a_pair_that_cannot_serve_is_refused_naming_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let err = TlsTermination::load(&files).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read the certificate") && err.contains("cert.pem"),
            "{err}"
        );
        let (cert, _) = pair("one.test");
        let (_, other_key) = pair("two.test");
        write(&files, &cert, &other_key);
        let err = TlsTermination::load(&files).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("key.pem"), "{err}");
        write(&files, "not PEM at all", &other_key);
        let err = TlsTermination::load(&files).unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
    }

    #[test]
    fn a_changed_pair_is_served_and_a_bad_one_leaves_the_old_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let (cert, key) = pair("one.test");
        write(&files, &cert, &key);
        let tls = TlsTermination::load(&files).unwrap();
        let first = served(&tls);
        tls.reload_if_changed();
        assert_eq!(tls.reloads.load(Ordering::Relaxed), 0, "nothing changed");

        let (cert, key) = pair("two.test");
        write(&files, &cert, &key);
        tls.reload_if_changed();
        assert_eq!(tls.reloads.load(Ordering::Relaxed), 1);
        let second = served(&tls);
        assert_ne!(first, second);

        // A new certificate whose key has not arrived yet: the old pair keeps serving.
        let (cert, _) = pair("three.test");
        std::fs::write(&files.cert, cert).unwrap();
        tls.reload_if_changed();
        assert_eq!(tls.reload_failures.load(Ordering::Relaxed), 1);
        assert_eq!(served(&tls), second);
    }
}
