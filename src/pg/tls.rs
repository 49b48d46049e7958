//! TLS to Postgres with rustls (no OpenSSL), with libpq's `sslmode`
//! meanings: `prefer` and `require` encrypt without checking who answers,
//! `verify-ca` checks the certificate chain, `verify-full` the chain and
//! the host name. Roots: `sslrootcert` (or
//! `ELECTRIC_DATABASE_CA_CERTIFICATE_FILE`), else the system's. As in
//! libpq, `require` with a root file given verifies the chain.

// PgError carries a server's full error; these are cold paths.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use futures_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::connstr::{ConnConfig, SslMode};
use super::error::PgError;

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn check_for(cfg: &ConnConfig) -> Check {
    match cfg.sslmode {
        SslMode::VerifyFull => Check::ChainAndName,
        SslMode::VerifyCa => Check::Chain,
        SslMode::Require if cfg.sslrootcert.is_some() => Check::Chain,
        _ => Check::Nothing,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(cfg: &ConnConfig) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    match &cfg.sslrootcert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                PgError::Tls(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| PgError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                store
                    .add(cert)
                    .map_err(|e| PgError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                found += 1;
            }
            if found == 0 {
                return Err(PgError::Tls(format!(
                    "sslrootcert {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(PgError::Tls(
                    "no system root certificates found: give the CA with sslrootcert or ELECTRIC_DATABASE_CA_CERTIFICATE_FILE".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// The client configuration for `cfg`'s mode.
pub fn client_config(cfg: &ConnConfig) -> Result<Arc<rustls::ClientConfig>, PgError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?;
    let config = match check_for(cfg) {
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
        Check::ChainAndName => builder
            .with_root_certificates(roots(cfg)?)
            .with_no_client_auth(),
        Check::Chain => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(cfg)?),
                provider(),
            )
            .build()
            .map_err(|e| PgError::Tls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate is checked against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, PgError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| PgError::Tls(format!("{host:?} is not a valid TLS server name: {e}")))
}

/// Accepts any certificate (`prefer`, `require`): the connection is
/// encrypted, but who answers is not checked, as libpq does.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
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
    ) -> Result<HandshakeSignatureValid, Error> {
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

/// The chain is checked, the host name not (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The chain verified; only the name did not match.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
