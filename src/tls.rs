//! TLS set-up, apart from the loop: a server configuration from PEM files, client
//! configurations (system roots, a CA file, or no verification at all), and self-signed
//! certificates for tests, the bench and `loopchat cert`.
//!
//! The crypto provider is *ring*: it builds with the C compiler every Rust toolchain
//! already needs, where the default provider (aws-lc-rs) also wants CMake and, on some
//! machines, NASM, so a fresh machine could not build with the README's two commands.
//! TLS 1.3 and 1.2 are offered.
//!
//! This module holds no connection state. The server drives each `rustls`
//! connection in its own loop (see [`crate::conn`]); the client and the bench wrap
//! theirs in blocking or non-blocking streams of their own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Bytes of plaintext and of TLS records a server connection buffers inside rustls at
/// most. Chat lines are small; what does not fit stays in the connection's own output
/// queue, where the output caps see it.
pub const SERVER_BUFFER_LIMIT: usize = 16 * 1024;

/// A TLS set-up failed; the text names the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1) and builds a server configuration for TLS 1.3 and 1.2.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("cannot read certificate {}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("bad certificate in {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("no certificate in {}", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("cannot read private key {}: {e}", key.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            TlsError(format!(
                "certificate {} and key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    // Chat is a byte stream; nothing to negotiate.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// A client configuration: trusts the certificates in `ca` (a PEM file) if given, else
/// the system's roots; with `insecure`, verifies nothing at all (for testing only).
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up: {e}")))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| TlsError(format!("cannot read CA file {}: {e}", path.display())))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError(format!("bad certificate in {}: {e}", path.display())))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError(format!(
                        "no usable certificate in {}",
                        path.display()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError(
                        "no system root certificates found; pass --ca FILE".into(),
                    ));
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to verify a server's certificate against, from the host part of `addr`
/// (`localhost:8443`, `chat.example.org:6697`, `127.0.0.1:8443`).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError(format!("{host:?} is not a name or address to verify: {e}")))
}

/// A self-signed certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate (an end-entity certificate with the names as subjectAltName).
    pub cert_pem: String,
    /// Its private key (PKCS#8, ECDSA P-256).
    pub key_pem: String,
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses), usable by
/// rustls on both ends: an end-entity certificate with subjectAltNames, ECDSA P-256
/// (cheap handshakes).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    let fail = |e: rcgen::Error| TlsError(format!("cannot make a certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(fail)?;
    // A name of its own, so a client that trusts another self-signed certificate is
    // told "unknown issuer", not a confusing bad signature from a look-alike issuer.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let first = names.first().map_or("loopchat", String::as_str);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{first} (loopchat, {stamp:x})"),
    );
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// `loopchat cert`: writes a self-signed certificate and key for testing.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Names and addresses the certificate is for.
    #[arg(default_values = ["localhost", "127.0.0.1"])]
    pub names: Vec<String>,
    /// Where to write the certificate.
    #[arg(long, default_value = "cert.pem", value_name = "FILE")]
    pub cert: PathBuf,
    /// Where to write the private key (created readable by its owner only).
    #[arg(long, default_value = "key.pem", value_name = "FILE")]
    pub key: PathBuf,
}

/// Runs `loopchat cert`.
pub fn write_self_signed(args: &CertArgs) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pair = self_signed(&args.names)?;
    std::fs::write(&args.cert, &pair.cert_pem)
        .map_err(|e| TlsError(format!("cannot write {}: {e}", args.cert.display())))?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.key)
        .map_err(|e| TlsError(format!("cannot write {}: {e}", args.key.display())))?;
    key.write_all(pair.key_pem.as_bytes())
        .map_err(|e| TlsError(format!("cannot write {}: {e}", args.key.display())))?;
    Ok(())
}

/// Accepts any server certificate: `--insecure`, for testing against a server whose
/// certificate the client cannot verify. Signatures are still checked, so the
/// handshake itself is sound; only the identity is not.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopchat-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_self_signed_pair_loads_as_server_and_as_trusted_ca() {
        let dir = temp_dir("pair");
        let args = CertArgs {
            names: vec!["localhost".into()],
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        write_self_signed(&args).unwrap();
        assert!(server_config(&args.cert, &args.key).is_ok());
        assert!(client_config(Some(&args.cert), false).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_broken_files_are_named_in_the_error() {
        let dir = temp_dir("broken");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let err = server_config(&cert, &key).unwrap_err();
        assert!(err.0.contains("cert.pem"), "{err}");
        let pair = self_signed(&["localhost".into()]).unwrap();
        std::fs::write(&cert, &pair.cert_pem).unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = server_config(&cert, &key).unwrap_err();
        assert!(err.0.contains("key.pem"), "{err}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let err = server_config(&cert, &key).unwrap_err();
        assert!(err.0.contains("no certificate in"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
