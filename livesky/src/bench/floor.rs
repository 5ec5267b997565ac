//! The floor under any live HTTP-TS server, for `livesky bench fanout`: one thread writing every
//! viewer, once per tick, the stream bytes made since the last tick, straight from one shared
//! buffer. There is no HTTP beyond a fixed response head, no ring, no channel, no metric: what
//! this thread costs is the kernel's part of live delivery at that cadence (a copy-based write
//! per viewer per tick), which no server that writes live bytes as they are made can spend less
//! than. nginx's row, from a static file it may send seconds ahead, is not bound by it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\nconnection: close\r\n\r\n";

/// The floor server, run by the bench in a process of its own (as the edge and nginx are, so
/// its CPU time is its own and it shares no process with the viewers).
#[derive(clap::Args)]
pub struct FloorArgs {
    /// The recording to serve, looped.
    #[arg(long)]
    file: PathBuf,
    /// Bytes per second per viewer.
    #[arg(long)]
    rate: f64,
    /// Milliseconds between writes to a viewer.
    #[arg(long)]
    tick_ms: u64,
}

/// Serves until killed; prints its URL on the first line of stdout.
pub fn floor_serve(args: FloorArgs) -> anyhow::Result<()> {
    let data = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    anyhow::ensure!(!data.is_empty(), "the recording to serve is empty");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    println!("http://{}/stream.ts", listener.local_addr()?);
    std::io::stdout().flush()?;
    serve(listener, &data, args.rate, Duration::from_millis(args.tick_ms.max(1)));
    Ok(())
}

/// Starts the floor server process; returns it and its URL.
pub(super) async fn start(file: &Path, rate: f64, tick_ms: u64) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["bench", "floor-serve", "--rate", &rate.to_string(), "--tick-ms", &tick_ms.to_string(), "--file"])
        .arg(file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the floor server")?;
    let out = child.stdout.take().context("floor server has no stdout")?;
    let mut line = String::new();
    let mut out = BufReader::new(out);
    let read = out.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(10), read).await.context("floor server did not start")??;
    Ok((child, line.trim().to_string()))
}

struct Client {
    stream: TcpStream,
    /// Stream bytes written so far (from the start of the live stream).
    sent: usize,
}

/// How often new viewers are taken in (between ticks, so none waits in a full backlog).
const ACCEPT_EVERY: Duration = Duration::from_millis(10);

fn serve(listener: TcpListener, data: &[u8], rate: f64, tick: Duration) {
    let start = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    let mut next = start + tick;
    let mut scratch = [0u8; 4096];
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(ACCEPT_EVERY));
        let due = (start.elapsed().as_secs_f64() * rate) as usize;
        while let Ok((mut stream, _)) = listener.accept() {
            // The request is read and not looked at; a viewer starts at the live point.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = stream.read(&mut scratch);
            if stream.write_all(HEAD).is_ok() && stream.set_nonblocking(true).is_ok() {
                clients.push(Client { stream, sent: due });
            }
        }
        if Instant::now() >= next {
            next += tick;
            clients.retain_mut(|c| write_due(c, data, due));
        }
    }
}

/// Writes what `c` is owed up to `due`: one write (two where the loop wraps). False if it went.
fn write_due(c: &mut Client, data: &[u8], due: usize) -> bool {
    while c.sent < due {
        let at = c.sent % data.len();
        let n = (due - c.sent).min(data.len() - at);
        match c.stream.write(&data[at..at + n]) {
            Ok(0) => return false,
            Ok(w) => {
                c.sent += w;
                if w < n {
                    // The socket took less than offered: full for now.
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
