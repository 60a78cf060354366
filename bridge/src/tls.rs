//! TLS for a bridge that other machines reach. The request signature proves who sent a request,
//! but the chat text inside it would cross the network in the clear, so `serve` listens beyond
//! loopback only with TLS. The certificate is self-signed (`rlclaw tls init`); clients pin the
//! SHA-256 of its DER encoding instead of trusting a certificate authority.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::datadir::{DataDir, write_private};

pub const CERT_FILE: &str = "tls/cert.pem";
pub const KEY_FILE: &str = "tls/key.pem";

/// The certificate and key `serve` uses beyond loopback.
pub struct Paths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Paths {
    pub fn of(dir: &DataDir) -> Paths {
        Paths {
            cert: dir.path(CERT_FILE),
            key: dir.path(KEY_FILE),
        }
    }

    pub fn exist(&self) -> bool {
        self.cert.is_file() && self.key.is_file()
    }
}

/// Makes a self-signed certificate for these names (and localhost) and returns its pin.
/// An existing certificate is kept unless `replace`: clients pinned it.
pub fn init(dir: &DataDir, names: &[String], replace: bool) -> Result<String> {
    let paths = Paths::of(dir);
    if paths.exist() && !replace {
        bail!(
            "a certificate already exists in {} (pin {}); clients have pinned it, so it is kept. \
             Pass --force to make a new one, then give clients the new pin.",
            paths.cert.display(),
            pin(dir)?
        );
    }
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            bail!("a certificate name must not be empty");
        }
        if !sans.iter().any(|s| s == name) {
            sans.push(name.to_string());
        }
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(sans).context("cannot generate the certificate")?;
    let folder = dir.path("tls");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    write_private(&paths.key, signing_key.serialize_pem().as_bytes())?;
    write_private(&paths.cert, cert.pem().as_bytes())?;
    Ok(pin_of(cert.der()))
}

/// The pin clients check: `sha256:` and the lowercase hex SHA-256 of the certificate's DER.
pub fn pin(dir: &DataDir) -> Result<String> {
    let paths = Paths::of(dir);
    let cert = read_cert(&paths)?;
    Ok(pin_of(&cert))
}

fn pin_of(der: &[u8]) -> String {
    format!("sha256:{}", crate::keys::sha256_hex(der))
}

fn read_cert(paths: &Paths) -> Result<CertificateDer<'static>> {
    if !paths.cert.is_file() {
        bail!(
            "there is no certificate at {}; run `rlclaw tls init` first",
            paths.cert.display()
        );
    }
    CertificateDer::from_pem_file(&paths.cert)
        .with_context(|| format!("cannot read the certificate {}", paths.cert.display()))
}

/// The TLS acceptor for a listener beyond loopback.
pub fn acceptor(dir: &DataDir) -> Result<TlsAcceptor> {
    let paths = Paths::of(dir);
    let cert = read_cert(&paths)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .with_context(|| format!("cannot read the TLS key {}", paths.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("no TLS protocol version is available")?
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .with_context(|| {
        format!(
            "the certificate {} and key {} do not form a usable pair",
            paths.cert.display(),
            paths.key.display()
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
