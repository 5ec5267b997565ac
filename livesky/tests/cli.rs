//! The `livesky` binary as operators run it: separate processes per role, the demo's endpoints
//! file, clean shutdown on Ctrl-C (SIGINT), and config errors that name the file and key.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_livesky");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("livesky-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A role whose stdout and stderr go to `log`.
fn spawn_logged(args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let out = Stdio::from(file.try_clone().unwrap());
    Command::new(BIN).args(args).env("RUST_LOG", "warn").stdout(out).stderr(Stdio::from(file)).spawn().unwrap()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Minimal HTTP GET: status and up to `max` body bytes (enough for streaming endpoints).
fn http_get(addr: &str, path: &str, max: usize) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    while data.len() < max + 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body_at = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..body_at]).to_ascii_lowercase();
    let body = &data[body_at..];
    Some((status, if head.contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_vec() }))
}

/// Decodes a (possibly cut-off) chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16) else { break };
        b = &b[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(b.len());
        out.extend_from_slice(&b[..take]);
        if take < size || b.len() < size + 2 {
            break;
        }
        b = &b[size + 2..];
    }
    out
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGINT (what Ctrl-C sends) and expects a clean exit within `limit`.
fn interrupt_and_wait(child: &mut Child, limit: Duration) {
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -INT failed");
    let status = wait_for(limit, "a clean exit after SIGINT", || child.try_wait().unwrap());
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_lists_every_role() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for cmd in ["demo", "sn", "edge", "bench"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn each_role_runs_as_its_own_process() {
    let dir = tmpdir("roles");
    let [t0_sn, t0_http, c1_sn, c1_http, e1_http] = [free_port(), free_port(), free_port(), free_port(), free_port()];
    let topo = format!(
        r#"
[[channel]]
id = "demo"
source = {{ kind = "loop", path = "builtin:demo" }}
[[node]]
id = "tier0"
tier = 0
sn_listen = "127.0.0.1:{t0_sn}"
http_listen = "127.0.0.1:{t0_http}"
identity_key = "{k0}"
[[node]]
id = "core1"
tier = 1
sn_listen = "127.0.0.1:{c1_sn}"
http_listen = "127.0.0.1:{c1_http}"
parents = ["tier0"]
identity_key = "{k1}"
[[node]]
id = "edge1"
tier = 2
role = "edge"
http_listen = "127.0.0.1:{e1_http}"
parents = ["core1"]
identity_key = "{k2}"
"#,
        k0 = key(1).public_hex(),
        k1 = key(2).public_hex(),
        k2 = key(3).public_hex(),
    );
    let cfg = dir.join("topology.toml");
    std::fs::write(&cfg, topo).unwrap();
    let cfg = cfg.to_str().unwrap();
    // Each node proves itself with its own key; the others' public keys are in the topology.
    let key_file = |i: u8| {
        let path = dir.join(format!("node{i}.key"));
        std::fs::write(&path, proto::sign::to_hex(&[i; 32])).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (f0, f1, f2) = (key_file(1), key_file(2), key_file(3));
    // Logs go to files: a pipe nobody reads fills up and blocks the role that writes to it.
    let logs = [dir.join("tier0.log"), dir.join("core1.log"), dir.join("edge1.log")];
    let mut procs = [
        spawn_logged(&["sn", "--config", cfg, "--node", "tier0", "--key-file", &f0], &logs[0]),
        spawn_logged(&["sn", "--config", cfg, "--node", "core1", "--key-file", &f1], &logs[1]),
        spawn_logged(&["edge", "--config", cfg, "--node", "edge1", "--key-file", &f2], &logs[2]),
    ];
    let edge = format!("127.0.0.1:{e1_http}");
    let t0 = Instant::now();
    let body = loop {
        if let Some(got) = http_get(&edge, "/live/demo.ts", 100_000).filter(|(s, b)| *s == 200 && b.len() >= 100_000) {
            break got;
        }
        // A role that exited (a port taken since `free_port`, say) or a slow start under CI's
        // load: either way the roles' own logs say which, so the failure shows them.
        let exited = procs.iter_mut().any(|p| !matches!(p.try_wait(), Ok(None)));
        if exited || t0.elapsed() > Duration::from_secs(40) {
            panic!(
                "the edge did not serve the stream (a role exited: {exited}):\n{}",
                stop_and_collect(&mut procs, &logs)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.1.len() >= 100_000);
    let (_, metrics) = http_get(&format!("127.0.0.1:{c1_http}"), "/metrics", 1 << 20).unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(r#"livesky_relay_chunks_total{channel="demo""#), "core1 relays: {metrics}");
    for p in procs.iter_mut().rev() {
        interrupt_and_wait(p, Duration::from_secs(10));
    }
}

#[test]
fn demo_writes_endpoints_and_stops_on_ctrl_c() {
    let dir = tmpdir("demo");
    let ep = dir.join("endpoints.json");
    let args = ["demo", "--ephemeral-ports", "--endpoints-file", ep.to_str().unwrap(), "--duration", "60"];
    let mut child = spawn_logged(&args, &dir.join("demo.log"));
    let text = wait_for(Duration::from_secs(20), "the endpoints file", || std::fs::read_to_string(&ep).ok());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ingest = v["ingest"].as_str().unwrap();
    assert!(ingest.starts_with("http://127.0.0.1:") && ingest.ends_with("/ingest"), "{ingest}");
    let edges = v["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    for e in edges {
        let http = e["http"].as_str().unwrap().trim_start_matches("http://");
        let (status, body) = http_get(http, "/live/demo.ts", 50_000).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body[0], 0x47);
        assert!(e["metrics"].as_str().unwrap().ends_with("/metrics"));
    }
    interrupt_and_wait(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stops every process and returns what each wrote to stderr.
fn stop_and_collect(procs: &mut [Child], logs: &[PathBuf]) -> String {
    let mut text = String::new();
    for (p, log) in procs.iter_mut().zip(logs) {
        let _ = p.kill();
        let _ = p.wait();
        let err = std::fs::read_to_string(log).unwrap_or_default();
        text.push_str(&format!("--- {}:\n{err}\n", log.display()));
    }
    text
}

fn key(i: u8) -> proto::NodeKey {
    proto::NodeKey::from_seed([i; 32])
}

fn run_expect_failure(args: &[&str]) -> String {
    let child = spawn(args);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "expected failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tmpdir("badcfg");
    let bad = dir.join("bad.toml");
    let base = crate_demo_config();
    std::fs::write(
        &bad,
        base.replace(
            r#"parents = ["core1", "tier0"]"#,
            r#"parents = ["core1"]
peers = ["edge2"]"#,
        ),
    )
    .unwrap();
    let err = run_expect_failure(&["edge", "--config", bad.to_str().unwrap(), "--node", "edge1"]);
    assert!(err.contains("bad.toml") && err.contains("node[edge1].peers"), "{err}");

    let good = dir.join("demo.toml");
    std::fs::write(&good, &base).unwrap();
    let err = run_expect_failure(&["sn", "--config", good.to_str().unwrap()]);
    assert!(err.contains("--node") && err.contains("tier0") && err.contains("edge2"), "{err}");
    let err = run_expect_failure(&["sn", "--config", good.to_str().unwrap(), "--node", "edge1"]);
    assert!(err.contains("livesky edge"), "{err}");
    let err = run_expect_failure(&["sn", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert!(err.contains("missing.toml"), "{err}");
    // A port already taken is reported as such, not as a crash.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let clash = dir.join("clash.toml");
    std::fs::write(&clash, base.replace("127.0.0.1:7480", &format!("127.0.0.1:{port}"))).unwrap();
    let err = run_expect_failure(&["sn", "--config", clash.to_str().unwrap(), "--node", "tier0", "--insecure-dev"]);
    assert!(err.contains(&port.to_string()) && err.contains("in use"), "{err}");
    assert!(!err.contains("backtrace"), "users get the message, not a backtrace: {err}");
    // Issue 20: no identity key, the published example key, an MC without its pinned key.
    let good = good.to_str().unwrap();
    let err = run_expect_failure(&["sn", "--config", good, "--node", "tier0"]);
    assert!(err.contains("--key-file") && err.contains("--insecure-dev"), "{err}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/keys/tier0.key");
    let example = example.to_str().unwrap();
    let err = run_expect_failure(&["sn", "--config", good, "--node", "tier0", "--key-file", example]);
    assert!(err.contains("example"), "{err}");
    let mine = dir.join("mine.key");
    std::fs::write(&mine, proto::sign::to_hex(&[5; 32])).unwrap();
    let mine = mine.to_str().unwrap();
    let err =
        run_expect_failure(&["sn", "--config", good, "--node", "tier0", "--key-file", mine, "--mc", "127.0.0.1:9"]);
    assert!(err.contains("--mc-public-key"), "{err}");
    let mc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/mc.toml");
    let err = run_expect_failure(&["mc", "run", "--config", mc.to_str().unwrap()]);
    assert!(err.contains("mc.key") && err.contains("example"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn crate_demo_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml")).unwrap()
}

#[test]
fn sim_writes_csvs_and_a_summary_and_rejects_a_bad_scenario() {
    let dir = tmpdir("sim");
    let scenario = dir.join("one-edge.toml");
    std::fs::write(
        &scenario,
        "name = \"one-edge\"\nminutes = 2\n[edges]\ndistricts = 1\nisps = 1\nper_district_isp = 1\nn1c = 5\n\
         [clients]\narrivals = [[0, 60], [2, 60]]\nupload = [{ share = 1.0, kbps = 600 }]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let run =
        Command::new(BIN).args(["sim", scenario.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| peak clients | > 145,000 |"), "{summary}");
    let minutes = std::fs::read_to_string(out.join("minutes.csv")).unwrap();
    assert_eq!(minutes.lines().count(), 3, "a header and one row per minute: {minutes}");
    assert!(std::fs::read_to_string(out.join("sessions.csv")).unwrap().lines().count() > 20);

    std::fs::write(
        &scenario,
        "name = \"x\"\nminutes = 0\n[clients]\narrivals = [[0, 1]]\nupload = [{ share = 1.0, kbps = 1 }]\n",
    )
    .unwrap();
    let bad =
        Command::new(BIN).args(["sim", scenario.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("one-edge.toml") && err.contains("`minutes`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
