//! A keep-alive HTTP/1.1 client for publishing: one request at a time on one connection,
//! responses read by Content-Length or chunked encoding. Enough for nchan's publisher
//! endpoint and edgelive's push API, and cheaper than a general client.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::adapter::Error;

/// The server closed the connection before a whole response.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed before a whole response")
    }
}

impl std::error::Error for Closed {}

pub struct Http {
    stream: TcpStream,
    addr: SocketAddr,
    host: String,
    buf: Vec<u8>,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> Result<Http, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            addr,
            host: addr.to_string(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its response; returns the status.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<u16, Error> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body);
        self.stream.write_all(&req).await?;
        match self.response().await {
            Ok((status, close)) => {
                if close {
                    self.reconnect().await?;
                }
                Ok(status)
            }
            // Closed before answering (a keep-alive limit or timeout reached between two
            // requests): the request was not taken; send it again on a new connection.
            Err(e) if self.buf.is_empty() && e.is::<Closed>() => {
                self.reconnect().await?;
                self.stream.write_all(&req).await?;
                Ok(self.response().await?.0)
            }
            Err(e) => Err(e),
        }
    }

    async fn reconnect(&mut self) -> Result<(), Error> {
        self.stream = TcpStream::connect(self.addr).await?;
        self.stream.set_nodelay(true)?;
        self.buf.clear();
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Closed.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The status, and whether the server closes the connection after this response.
    async fn response(&mut self) -> Result<(u16, bool), Error> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status line")?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let close = header("connection:").is_some_and(|v| v.contains("close"));
        self.buf.drain(..head_end);
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    self.fill().await?;
                }
                self.buf.drain(..need);
                if size == 0 {
                    return Ok((status, close));
                }
            }
        }
        let len: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < len {
            self.fill().await?;
        }
        self.buf.drain(..len);
        Ok((status, close))
    }
}
