//! Headless Chromium driven over the DevTools protocol: pages opened in one browser, and
//! JavaScript evaluated in each (what the browser tests read a page's state with).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
];

/// WebRTC between a page and loopback peers: host candidates on loopback, and real addresses
/// rather than mDNS names (which webrtc-rs does not resolve).
pub const WEBRTC_FLAGS: &[&str] = &[
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    // Every page plays as if in front: the test's tabs must not be throttled as background ones.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-background-media-suspend",
];

pub struct Browser {
    child: tokio::process::Child,
    profile: PathBuf,
    port: u16,
}

impl Browser {
    /// Starts Chromium on `url` with `extra` flags and waits for its DevTools port.
    pub async fn launch(url: &str, extra: &[&str]) -> Browser {
        let profile = std::env::temp_dir().join(format!("livesky-cdp-{}-{}", std::process::id(), rand_suffix()));
        let child = tokio::process::Command::new("chromium")
            .args(FLAGS)
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let file = profile.join("DevToolsActivePort");
        let mut port = None;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&file).ok().and_then(|s| s.lines().next()?.trim().parse().ok()) {
                port = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Browser { child, profile, port: port.expect("chromium opened its DevTools port within 20 s") }
    }

    async fn targets(&self) -> Vec<Value> {
        let (status, body) = crate::get_text(&format!("http://127.0.0.1:{}/json/list", self.port)).await;
        assert_eq!(status, 200, "DevTools target list");
        let all: Vec<Value> = serde_json::from_str(&body).expect("DevTools JSON");
        all.into_iter().filter(|t| t["type"] == "page").collect()
    }

    /// Opens another tab on `url`.
    pub async fn open(&self, url: &str) {
        let first = self.targets().await;
        let ws = first[0]["webSocketDebuggerUrl"].as_str().expect("a page target").to_string();
        call(&ws, "Target.createTarget", json!({ "url": url, "newWindow": true, "background": false })).await;
    }

    /// Evaluates `expr` (which must give JSON-able data) in every page, in target order.
    pub async fn eval_all(&self, expr: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for t in self.targets().await {
            let ws = t["webSocketDebuggerUrl"].as_str().unwrap_or_default().to_string();
            let r = call(&ws, "Runtime.evaluate", json!({ "expression": expr, "returnByValue": true })).await;
            out.push(r["result"]["value"].clone());
        }
        out
    }

    /// CPU seconds Chromium's process tree (browser, renderers, GPU, utilities) has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Some(root) = self.child.id() else { return 0.0 };
        let tick = 100.0; // USER_HZ on Linux
        let mut procs: Vec<(u32, u32, f64)> = Vec::new();
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else { continue };
            let Some((_, rest)) = stat.rsplit_once(')') else { continue };
            // After the name: state ppid … utime (12th) stime (13th).
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            procs.push((pid, num(1) as u32, (num(11) + num(12)) / tick));
        }
        let mut tree = vec![root];
        let mut total = 0.0;
        while let Some(pid) = tree.pop() {
            for &(child, parent, cpu) in &procs {
                if child == pid {
                    total += cpu;
                }
                if parent == pid {
                    tree.push(child);
                }
            }
        }
        total
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}

/// One DevTools call on the target at `ws`; its `result`.
async fn call(ws: &str, method: &str, params: Value) -> Value {
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(ws))
        .await
        .expect("DevTools connects in time")
        .expect("DevTools connects");
    let req = json!({ "id": 1, "method": method, "params": params }).to_string();
    sock.send(Message::Text(req.into())).await.expect("DevTools request");
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = sock.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                if v["id"] == 1 {
                    return v["result"].clone();
                }
            }
        }
        Value::Null
    })
    .await
    .expect("DevTools answers in time");
    let _ = sock.close(None).await;
    reply
}
