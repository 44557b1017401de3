//! The certificate an etcd member serves, read from a TLS handshake with it
//! (not from a file: a member serves what it was started with, which a
//! renewal in the secrets tree does not change until it restarts).
//!
//! The handshake checks the member's certificate as every call does (the
//! CA, the name) and presents the caller's client certificate; the verifier
//! keeps the certificate the member sent before it judges it, so the end
//! date is known even when the handshake fails because that end has passed.
//! That failure is told apart from the others (`Refusal`): a member whose
//! certificate ended answers TLS, it is not down.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
};

use super::{EtcdClientError, TlsFiles};

/// What a member sent and how the handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The end (notAfter) of the member's certificate, Unix seconds.
    pub not_after: i64,
    /// Its subject (`CN=prod-etcd-0`).
    pub subject: String,
    /// Why the connection failed after the certificate came; `None` when
    /// the member answered a request over it.
    pub refused: Option<Refusal>,
}

/// Why a handshake that reached the member's certificate failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The member's certificate has ended (or has not begun).
    ServedExpired,
    /// The member refused the caller's certificate because it ended.
    ClientExpired,
    /// Anything else (another CA, a wrong name, a refused client certificate).
    Other(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ServedExpired => f.write_str("the member's certificate has ended"),
            Refusal::ClientExpired => f.write_str("the member refuses our client certificate: it has ended"),
            Refusal::Other(why) => f.write_str(why),
        }
    }
}

/// Keeps the end-entity certificate, then lets webpki judge it.
#[derive(Debug)]
struct Keep {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Keep {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tls_error(path: &std::path::Path, detail: impl ToString) -> EtcdClientError {
    EtcdClientError::Tls {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Pure: what a failed connection means, from rustls' error.
pub fn refusal(e: &rustls::Error) -> Refusal {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => Refusal::ServedExpired,
        E::AlertReceived(AlertDescription::CertificateExpired) => Refusal::ClientExpired,
        other => Refusal::Other(other.to_string()),
    }
}

/// The certificate the member at `endpoint` (`https://host:port`) serves,
/// through one handshake with `tls` and one `GET /version` (with TLS 1.3 a
/// member refuses a client certificate only after the handshake).
/// Fails when no certificate came: unreachable, not TLS, a bad local file.
pub fn served_certificate(endpoint: &str, tls: &TlsFiles, timeout: Duration) -> Result<Served, EtcdClientError> {
    let unreachable = |detail: String| EtcdClientError::Unreachable {
        endpoint: endpoint.to_string(),
        detail,
    };
    let authority = endpoint
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .ok_or_else(|| unreachable("not an https:// URL".into()))?;
    let (host, _) = authority
        .rsplit_once(':')
        .ok_or_else(|| unreachable("no port in the URL".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| unreachable(e.to_string()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca).map_err(|e| tls_error(&tls.ca, e))? {
        roots
            .add(cert.map_err(|e| tls_error(&tls.ca, e))?)
            .map_err(|e| tls_error(&tls.ca, e))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error(&tls.ca, e))?;
    let keep = Arc::new(Keep {
        inner,
        seen: Mutex::new(None),
    });
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| tls_error(&tls.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(&tls.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| tls_error(&tls.key, e))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&tls.cert, e))?
        .dangerous()
        .with_custom_certificate_verifier(keep.clone())
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls_error(&tls.key, e))?;

    let address = authority
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut socket = TcpStream::connect_timeout(&address, timeout).map_err(|e| unreachable(e.to_string()))?;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(|e| unreachable(e.to_string()))?;
    let mut conn = ClientConnection::new(Arc::new(config), server_name).map_err(|e| unreachable(e.to_string()))?;
    let outcome = exchange(&mut conn, &mut socket, authority);
    let seen = keep.seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(der) = seen else {
        return Err(unreachable(match outcome {
            Err(e) => format!("no certificate came: {e}"),
            Ok(()) => "no certificate came".into(),
        }));
    };
    let (not_after, subject) = describe(&der).map_err(|detail| EtcdClientError::Bad {
        endpoint: endpoint.to_string(),
        call: "TLS handshake".into(),
        detail,
    })?;
    let refused = match outcome {
        Ok(()) => None,
        Err(e) => Some(
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls) => refusal(tls),
                None => Refusal::Other(e.to_string()),
            },
        ),
    };
    Ok(Served {
        not_after,
        subject,
        refused,
    })
}

/// The handshake and one small request, so a refusal that comes after the
/// handshake (TLS 1.3 client certificates) is seen too.
fn exchange(conn: &mut ClientConnection, socket: &mut TcpStream, authority: &str) -> std::io::Result<()> {
    let mut stream = rustls::Stream::new(conn, socket);
    write!(
        stream,
        "GET /version HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;
    let mut first = [0u8; 12];
    stream.read_exact(&mut first)?;
    if first.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the member answered {}",
            String::from_utf8_lossy(&first)
        )))
    }
}

/// `(notAfter in Unix seconds, subject)` of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(i64, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("not a certificate: {e}"))?;
    Ok((cert.validity().not_after.timestamp(), cert.subject().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_certificate_is_told_apart_from_other_failures() {
        let ended = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(refusal(&ended), Refusal::ServedExpired);
        let not_yet = rustls::Error::InvalidCertificate(CertificateError::NotValidYet);
        assert_eq!(refusal(&not_yet), Refusal::ServedExpired);
        let client = rustls::Error::AlertReceived(AlertDescription::CertificateExpired);
        assert_eq!(refusal(&client), Refusal::ClientExpired);
        let other_ca = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(matches!(refusal(&other_ca), Refusal::Other(_)));
        let bad_client = rustls::Error::AlertReceived(AlertDescription::BadCertificate);
        assert!(matches!(refusal(&bad_client), Refusal::Other(_)));
    }
}
