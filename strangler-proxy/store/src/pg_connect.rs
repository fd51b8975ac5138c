//! How the toolkit reaches a PostgreSQL server from a URL: the driver's configuration, in
//! the clear or over TLS when the URL says `sslmode=require` (rustls; the server's
//! certificate always verified, against the web's root authorities and the URL's
//! `sslrootcert`). The state store and the sync relay's PostgreSQL endpoints both connect
//! through a [`PgConnector`], so a URL means the same to each.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A server's connection settings, read from a URL.
#[derive(Clone)]
pub struct PgConnector {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Tls,
    /// The URL without its password, for messages.
    shown: String,
}

/// How connections to the server are made.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl PgConnector {
    /// Reads `url` (`postgres://user:pass@host:5432/db?sslmode=require&sslrootcert=PATH`):
    /// connect timeout, TCP keepalives (a vanished server is noticed within seconds) and the
    /// application name `strangler` unless the URL sets one. The error never shows the
    /// password.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let shown = strangler_plan::location::redact(url);
        let (url, root_cert) = split_root_cert(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|err| format!("not a PostgreSQL URL: {err}"))?;
        let tls = Tls::for_config(&config, root_cert.as_deref())?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("strangler");
        }
        Ok(Self { config, tls, shown })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The database the URL names (the driver's default, the user's name, when it names
    /// none).
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname().or(self.config.get_user())
    }

    /// Opens a connection driven by a task on the current runtime. The task hands every
    /// notification to `on_notification` and ends when the connection does (await the
    /// handle to know when).
    pub async fn connect(
        &self,
        on_notification: impl Fn(Notification) + Send + Sync + 'static,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let on_notification = Arc::new(on_notification);
        match &self.tls {
            Tls::Plain => {
                let (client, connection) = self.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(connection, on_notification))))
            }
            Tls::Rustls(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(drive(connection, on_notification))))
            }
        }
    }
}

/// Polls a connection until it closes, passing notifications on.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    on_notification: Arc<impl Fn(Notification) + Send + Sync>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
        if let AsyncMessage::Notification(notification) = message {
            on_notification(notification);
        }
    }
}

impl Tls {
    /// TLS when the URL asks for it (`sslmode=require`); `disable` and `prefer` (the
    /// driver's default) connect in the clear. Unlike libpq's `require`, the certificate is
    /// always verified.
    fn for_config(
        config: &tokio_postgres::Config,
        root_cert: Option<&str>,
    ) -> Result<Self, String> {
        use tokio_postgres::config::SslMode;
        if !matches!(config.get_ssl_mode(), SslMode::Require) {
            if root_cert.is_some() {
                return Err("sslrootcert is given but sslmode is not require".to_string());
            }
            return Ok(Tls::Plain);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = root_cert {
            use rustls::pki_types::pem::PemObject;
            let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|err| format!("sslrootcert {path}: {err}"))?;
            for certificate in certificates {
                let certificate =
                    certificate.map_err(|err| format!("sslrootcert {path}: {err}"))?;
                roots
                    .add(certificate)
                    .map_err(|err| format!("sslrootcert {path}: {err}"))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            tls,
        )))
    }
}

/// Takes `sslrootcert=PATH` out of a URL's query (the driver does not know it).
fn split_root_cert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root_cert = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("sslrootcert=") {
            Some(path) => {
                root_cert = Some(path.to_string());
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), root_cert)
    } else {
        (format!("{base}?{}", kept.join("&")), root_cert)
    }
}
