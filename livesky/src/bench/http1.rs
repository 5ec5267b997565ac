//! A small HTTP/1.1 client for the benches: GETs on one kept-alive connection, of answers that
//! carry a `Content-Length` (what the edge and nginx send for playlists, parts and segments).

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Conn {
    io: BufReader<TcpStream>,
    host: String,
    head: String,
}

impl Conn {
    /// `base` is `http://host:port`.
    pub async fn connect(base: &str) -> anyhow::Result<Conn> {
        let host = base.strip_prefix("http://").context("bench URLs are http://")?.trim_end_matches('/');
        let io = BufReader::new(TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?);
        Ok(Conn { io, host: host.to_string(), head: String::with_capacity(512) })
    }

    /// Status and body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.io.get_mut().write_all(req.as_bytes()).await?;
        let mut status = None;
        let mut length = None;
        loop {
            self.head.clear();
            if self.io.read_line(&mut self.head).await? == 0 {
                bail!("{} closed the connection in a response head", self.host);
            }
            let line = self.head.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let status = status.context("no status line")?;
        let mut body = vec![0; length.with_context(|| format!("{path}: answer without Content-Length"))?];
        self.io.read_exact(&mut body).await?;
        Ok((status, body))
    }
}
