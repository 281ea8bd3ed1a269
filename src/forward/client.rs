//! The HTTP/1.1 connection a target's sender posts batches on: hyper's client connection over
//! TCP or rustls (ring, as MQTT and Redis use), kept open between requests. One request at a
//! time: the sender waits for each answer before it removes the batch and sends the next.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::spec::TargetSpec;

/// The part of an answer's body kept for the log.
const ANSWER_KEPT: usize = 512;
/// Most of an answer's body read (the rest closes the connection).
const ANSWER_READ: usize = 64 << 10;

/// The far side's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `Retry-After`, as a delay.
    pub retry_after: Option<Duration>,
    /// The start of the body, for logs.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(String),
    /// The connection closed before the answer came (an idle keep-alive connection the far
    /// side had closed, usually).
    #[error("connection closed: {0}")]
    Closed(String),
}

pub struct Client {
    spec: Arc<TargetSpec>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<SendRequest<Full<Bytes>>>,
    host_header: HeaderValue,
    user_agent: HeaderValue,
}

/// rustls' client settings: the CA file's certificates, or the system's roots (read from
/// disk: call it off the event loop).
pub fn tls_config(ca: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca_file holds no certificate".into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found (set ca_file)".into());
            }
        }
    }
    // ring, as the MQTT bridges use (see `mqtt::bridge::run` on why not aws-lc).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    /// `tls` from `tls_config` for an https target.
    pub fn new(spec: Arc<TargetSpec>, tls: Option<rustls::ClientConfig>) -> Result<Client, String> {
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(spec.url.host.clone())
                    .map_err(|e| format!("host {:?}: {e}", spec.url.host))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        let default_port = if spec.url.tls { 443 } else { 80 };
        let host = if spec.url.host.contains(':') {
            format!("[{}]", spec.url.host)
        } else {
            spec.url.host.clone()
        };
        let host = match spec.url.port {
            p if p == default_port => host,
            p => format!("{host}:{p}"),
        };
        Ok(Client {
            host_header: HeaderValue::from_str(&host).map_err(|e| e.to_string())?,
            user_agent: HeaderValue::from_static(concat!("edgelive/", env!("CARGO_PKG_VERSION"))),
            spec,
            tls,
            conn: None,
        })
    }

    /// POSTs a batch; the whole exchange within the target's timeout. A failed or timed-out
    /// exchange closes the connection (the next one opens a new one).
    pub async fn post(
        &mut self,
        path: &str,
        body: Bytes,
        gzip: bool,
        token: Option<&str>,
    ) -> Result<Answer, SendError> {
        let timeout = self.spec.timeout;
        let attempt = async {
            let reused = self.conn.is_some();
            match self.exchange(path, body.clone(), gzip, token).await {
                // A kept-alive connection the far side closed meanwhile: once more on a new
                // one, at once (a retry after a back-off would log a failure for nothing).
                Err(SendError::Closed(_)) if reused => {
                    self.conn = None;
                    self.exchange(path, body, gzip, token).await
                }
                r => r,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(SendError::Timeout(timeout))
            }
        }
    }

    async fn exchange(
        &mut self,
        path: &str,
        body: Bytes,
        gzip: bool,
        token: Option<&str>,
    ) -> Result<Answer, SendError> {
        let mut req = Request::post(path)
            .body(Full::new(body))
            .map_err(|e| SendError::Http(e.to_string()))?;
        let h = req.headers_mut();
        h.insert(HOST, self.host_header.clone());
        h.insert(USER_AGENT, self.user_agent.clone());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| SendError::Http("the token is not a valid header value".into()))?;
            h.insert(AUTHORIZATION, v);
        }
        let conn = self.connection().await?;
        let resp = conn.send_request(req).await.map_err(|e| {
            if e.is_canceled() || e.is_incomplete_message() {
                SendError::Closed(e.to_string())
            } else {
                SendError::Http(e.to_string())
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = match Limited::new(resp.into_body(), ANSWER_READ).collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                String::from_utf8_lossy(&b[..b.len().min(ANSWER_KEPT)]).into_owned()
            }
            Err(_) => {
                self.conn = None;
                String::new()
            }
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// The open connection, or a new one.
    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, SendError> {
        if let Some(c) = &mut self.conn {
            if c.ready().await.is_err() {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            let addr = (self.spec.url.host.as_str(), self.spec.url.port);
            let tcp = TcpStream::connect(addr).await.map_err(|e| {
                SendError::Connect(format!(
                    "{}:{}: {e}",
                    self.spec.url.host, self.spec.url.port
                ))
            })?;
            let _ = tcp.set_nodelay(true);
            let sender = match &self.tls {
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| SendError::Tls(e.to_string()))?;
                    handshake(stream).await?
                }
                None => handshake(tcp).await?,
            };
            self.conn = Some(sender);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }
}

/// An HTTP/1.1 client connection over `io`; its driver runs as a task that ends when the
/// connection closes or the sender is dropped.
async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let d = retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600));
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(tls_config(Some(b"not pem")).is_err());
    }
}
