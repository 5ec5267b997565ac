//! The GSLB in the demo: real DNS clients (hickory over UDP and TCP, `dig`, hickory-resolver),
//! bad packets, edges dying and filling up, the HTTP fallback, prefix database reloads.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use livesky_tests::{demo_with_gslb, get, get_text, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const ZONE: &str = "livesky.test.";

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

fn query(qname: &str, t: RecordType, ecs: Option<(&str, u8)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(name(qname), t));
    if let Some((addr, len)) = ecs {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(addr.parse().expect("ip"), len, 0)));
        m.set_edns(e);
    }
    m
}

/// A real DNS client on either transport.
struct Dns(Client<TokioRuntimeProvider>);

impl Dns {
    async fn udp(addr: SocketAddr) -> Dns {
        let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(3)))
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        Dns(client)
    }

    async fn tcp(addr: SocketAddr) -> Dns {
        let (fut, sender) =
            TcpClientStream::new(addr, None, Some(Duration::from_secs(3)), TokioRuntimeProvider::default());
        let stream = fut.await.expect("TCP connects");
        let (client, bg) = Client::<TokioRuntimeProvider>::with_timeout(stream, sender, Duration::from_secs(3));
        tokio::spawn(bg);
        Dns(client)
    }

    async fn send(&self, m: Message) -> Message {
        let resp = self.0.send(DnsRequest::new(m, DnsRequestOptions::default())).first_answer().await;
        resp.expect("an answer").into_message()
    }

    async fn ask(&self, qname: &str, t: RecordType, ecs: Option<(&str, u8)>) -> Message {
        self.send(query(qname, t, ecs)).await
    }
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn ecs_scope(m: &Message) -> Option<u8> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(cs) => Some(cs.scope_prefix()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_over_udp_and_tcp_get_their_regions_edge_and_proper_rcodes() {
    let (mc, cluster, gslb, _) = demo_with_gslb("rcodes").await;
    for (proto, dns) in [("udp", Dns::udp(gslb.dns_addr).await), ("tcp", Dns::tcp(gslb.dns_addr).await)] {
        // The resolver's own address (127.0.0.1: north) without a Client Subnet.
        let m = dns.ask("demo.livesky.test.", RecordType::A, None).await;
        assert_eq!((m.response_code, m.authoritative), (ResponseCode::NoError, true), "{proto}");
        assert_eq!(addrs(&m), ["127.0.0.2"], "{proto}");
        assert_eq!(m.answers[0].ttl, 20);
        for (subnet, edge) in [("198.51.100.0", "127.0.0.2"), ("203.0.113.0", "127.0.0.3")] {
            let m = dns.ask("DEMO.livesky.test.", RecordType::A, Some((subnet, 24))).await;
            assert_eq!(addrs(&m), [edge], "{proto} {subnet}");
            assert_eq!(ecs_scope(&m), Some(24), "{proto}: the scope is echoed");
            assert_eq!(m.answers[0].name.to_ascii(), "DEMO.livesky.test.", "the client's spelling is kept");
        }
        let m = dns.ask("demo.livesky.test.", RecordType::AAAA, None).await;
        assert!(m.response_code == ResponseCode::NoError && m.answers.is_empty(), "{proto}: NODATA");
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(dns.ask(ZONE, RecordType::SOA, None).await.answers[0].record_type(), RecordType::SOA);
        let ns = dns.ask(ZONE, RecordType::NS, None).await;
        assert_eq!(ns.answers[0].data.to_string(), "ns1.livesky.test.");
        assert_eq!(addrs(&dns.ask("ns1.livesky.test.", RecordType::A, None).await), ["127.0.0.1"]);
        let nx = dns.ask("nosuch.livesky.test.", RecordType::A, None).await;
        assert_eq!(nx.response_code, ResponseCode::NXDomain, "{proto}");
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA, "{proto}: negative answers carry the SOA");
        let foreign = dns.ask("demo.example.com.", RecordType::A, None).await;
        assert_eq!((foreign.response_code, foreign.authoritative), (ResponseCode::Refused, false));
        let mut chaos = query("demo.livesky.test.", RecordType::A, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(dns.send(chaos).await.response_code, ResponseCode::Refused, "{proto}: class CH");
        // RFC 7871: a query's SCOPE must be 0.
        let mut bad_ecs = query("demo.livesky.test.", RecordType::A, None);
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new("198.51.100.0".parse().expect("ip"), 24, 8)));
        bad_ecs.set_edns(e);
        assert_eq!(dns.send(bad_ecs.clone()).await.response_code, ResponseCode::FormErr, "{proto}: scope set");
        if let Some(e) = bad_ecs.edns.as_mut() {
            e.set_version(1);
        }
        // BADVERS is 16, which hickory decodes under the name BADSIG (they share the value).
        assert_eq!(u16::from(dns.send(bad_ecs).await.response_code), 16, "{proto}: BADVERS");
    }
    // The resolver the players use.
    let ips = livesky_gslb::client::lookup(gslb.dns_addr, "demo.livesky.test.", Duration::from_secs(2))
        .await
        .expect("hickory-resolver finds the edge");
    assert_eq!(ips, [IpAddr::from([127, 0, 0, 2])]);
    let m = gslb.metrics();
    assert!(m.contains("livesky_gslb_queries_total{proto=\"tcp\",type=\"A\"}"), "{m}");
    assert!(m.contains("livesky_gslb_match_total{level=\"isp_region\"}"), "{m}");
    assert!(m.contains("livesky_gslb_responses_total{rcode=\"FORMERR\"} 2"), "{m}");
    stop(mc, cluster, gslb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_each_regions_edge() {
    if !livesky_tests::tool_available("dig", "-v") {
        assert!(std::env::var_os("CI").is_none(), "CI must install dig (dnsutils, see .ci/run)");
        eprintln!("dig not installed: skipping");
        return;
    }
    let (mc, cluster, gslb, _) = demo_with_gslb("dig").await;
    let (host, port) = (gslb.dns_addr.ip().to_string(), gslb.dns_addr.port().to_string());
    let dig = |extra: &[&str]| {
        let mut args = vec![format!("@{host}"), "-p".into(), port.clone(), "demo.livesky.test".into(), "A".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let out = tokio::process::Command::new("dig").args(&args).output().await.expect("dig runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(dig(&["+short"]).await.trim(), "127.0.0.2");
    assert_eq!(dig(&["+short", "+tcp"]).await.trim(), "127.0.0.2");
    for (subnet, edge) in [("198.51.100.0/24", "127.0.0.2"), ("203.0.113.0/24", "127.0.0.3")] {
        let out = dig(&[&format!("+subnet={subnet}")]).await;
        assert!(out.contains("status: NOERROR") && out.contains("flags: qr aa"), "{out}");
        assert!(out.contains(&format!("CLIENT-SUBNET: {subnet}/24")), "{out}");
        assert!(out.lines().any(|l| l.starts_with("demo.livesky.test.") && l.ends_with(edge)), "{subnet}: {out}");
    }
    stop(mc, cluster, gslb).await;
}

/// Sends `bytes` and waits (500 ms) for the reply with the same id, skipping late replies to
/// earlier packets.
async fn udp_exchange(sock: &UdpSocket, bytes: &[u8]) -> Option<Message> {
    sock.send(bytes).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.ok()?.ok()?;
        if n >= 2 && bytes.len() >= 2 && buf[..2] == bytes[..2] {
            return Message::from_vec(&buf[..n]).ok();
        }
    }
}

/// A query for `labels` joined under the zone, built by hand: lengths the encoder would refuse.
fn raw_query(id: u16, labels: &[Vec<u8>], qdcount: u16, opcode: u8) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[opcode << 3, 0]);
    b.extend_from_slice(&qdcount.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for l in labels {
        b.push(l.len() as u8);
        b.extend_from_slice(l);
    }
    for l in ["livesky", "test"] {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_get_error_rcodes_and_never_stop_the_server() {
    let (mc, cluster, gslb, _) = demo_with_gslb("malformed").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.connect(gslb.dns_addr).await.expect("connect");
    let good = raw_query(7, &[b"demo".to_vec()], 1, 0);
    let ok = udp_exchange(&sock, &good).await.expect("a normal query is answered");
    assert_eq!(addrs(&ok), ["127.0.0.2"]);
    let rcode = |m: Option<Message>| m.map(|m| m.response_code);
    // Shorter than a header: nothing to answer to.
    assert_eq!(rcode(udp_exchange(&sock, &[1, 2, 3, 4, 5]).await), None);
    // Cut in the middle of the question.
    assert_eq!(rcode(udp_exchange(&sock, &good[..good.len() - 3]).await), Some(ResponseCode::FormErr));
    // A 64-byte label, and a name past 255 bytes.
    let long_label = raw_query(8, &[vec![b'a'; 64]], 1, 0);
    assert_eq!(rcode(udp_exchange(&sock, &long_label).await), Some(ResponseCode::FormErr));
    let huge = raw_query(9, &vec![vec![b'b'; 63]; 5], 1, 0);
    assert_eq!(rcode(udp_exchange(&sock, &huge).await), Some(ResponseCode::FormErr));
    // Two questions; no question; an opcode we do not do (NOTIFY).
    let mut two = raw_query(10, &[b"demo".to_vec()], 2, 0);
    two.extend_from_slice(&good[12..]);
    assert_eq!(rcode(udp_exchange(&sock, &two).await), Some(ResponseCode::FormErr));
    let mut none = good[..12].to_vec();
    none[5] = 0;
    assert_eq!(rcode(udp_exchange(&sock, &none).await), Some(ResponseCode::FormErr));
    let notify = raw_query(11, &[b"demo".to_vec()], 1, u8::from(OpCode::Notify));
    assert_eq!(rcode(udp_exchange(&sock, &notify).await), Some(ResponseCode::NotImp));
    // A Client Subnet with address bits past its source prefix (/20 of 198.51.100).
    let mut ecs = good.clone();
    ecs[11] = 1;
    ecs.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 20, 0, 198, 51, 100]);
    assert_eq!(rcode(udp_exchange(&sock, &ecs).await), Some(ResponseCode::FormErr));
    if let Some(last) = ecs.last_mut() {
        *last = 96;
    }
    assert_eq!(rcode(udp_exchange(&sock, &ecs).await), Some(ResponseCode::NoError), "the same, well formed");
    // A compression pointer to itself.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode(udp_exchange(&sock, &looped).await), Some(ResponseCode::FormErr));
    // Seeded garbage after a valid header.
    let mut s = 0x6a5b_u64;
    for i in 0..500u16 {
        let mut g = raw_query(i, &[], 1, 0)[..12].to_vec();
        for _ in 0..(i % 300) {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            g.push((s >> 56) as u8);
        }
        sock.send(&g).await.expect("send");
    }
    // TCP: a frame longer than what follows, then the connection closes; a garbage frame.
    let mut t = TcpStream::connect(gslb.dns_addr).await.expect("tcp");
    t.write_all(&[0xff, 0xff, 1, 2, 3]).await.expect("write");
    drop(t);
    let mut t = TcpStream::connect(gslb.dns_addr).await.expect("tcp");
    t.write_all(&[0, 20]).await.expect("write");
    t.write_all(&[0xab; 20]).await.expect("write");
    let mut len = [0u8; 2];
    if tokio::time::timeout(Duration::from_secs(2), t.read_exact(&mut len)).await.is_ok_and(|r| r.is_ok()) {
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        t.read_exact(&mut body).await.expect("body");
        let m = Message::from_vec(&body).expect("a DNS message");
        assert_eq!(m.response_code, ResponseCode::FormErr);
    }
    // Still serving, on both transports.
    // After the flood the replies to it may have filled our socket's buffer and dropped the
    // answer: ask as a resolver would, up to three times.
    let mut again = None;
    for _ in 0..3 {
        again = udp_exchange(&sock, &raw_query(60_000, &[b"demo".to_vec()], 1, 0)).await;
        if again.is_some() {
            break;
        }
    }
    let again = again.expect("still answering");
    assert_eq!(addrs(&again), ["127.0.0.2"], "{again:?}");
    assert_eq!(
        addrs(&Dns::tcp(gslb.dns_addr).await.ask("demo.livesky.test.", RecordType::A, None).await),
        ["127.0.0.2"]
    );
    stop(mc, cluster, gslb).await;
}

/// The first address answered for a client in `subnet`.
async fn first_edge(dns: &Dns, subnet: &str) -> Option<String> {
    addrs(&dns.ask("demo.livesky.test.", RecordType::A, Some((subnet, 24))).await).into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_leaves_the_answers_within_5_s() {
    let (mc, cluster, gslb, _) = demo_with_gslb("kill").await;
    let dns = Dns::udp(gslb.dns_addr).await;
    assert_eq!(first_edge(&dns, "198.51.100.0").await.as_deref(), Some("127.0.0.2"));
    let edge1 = cluster.get("edge1").expect("edge1");
    let t0 = Instant::now();
    edge1.node.shutdown();
    loop {
        let e = first_edge(&dns, "198.51.100.0").await;
        if e.as_deref() == Some("127.0.0.3") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "edge1 still answered after {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("edge1 left the answers {:?} after it stopped", t0.elapsed());
    stop(mc, cluster, gslb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_edge_loses_new_clients_to_its_sibling() {
    let (mc, cluster, gslb, topo) = demo_with_gslb("load").await;
    // Both edges in region north: siblings for north's clients (the MC pushes the change).
    let text = std::fs::read_to_string(&topo).expect("topology");
    std::fs::write(&topo, text.replace("region = \"south\"", "region = \"north\"")).expect("write");
    let dns = Dns::udp(gslb.dns_addr).await;
    // Loopback is north: 127.0.X.0/24 are 40 different north clients.
    let spread = || async {
        let mut firsts = Vec::new();
        for x in 0..40 {
            firsts.push(first_edge(&dns, &format!("127.0.{x}.0")).await.unwrap_or_default());
        }
        firsts
    };
    wait_until(Duration::from_secs(10), "both north edges to share new clients", || async {
        let f = spread().await;
        f.iter().any(|e| e == "127.0.0.2") && f.iter().any(|e| e == "127.0.0.3")
    })
    .await;
    // Three viewers on edge1: load 3 / N*c (5000 / 500 = 10) = 0.3.
    let url = format!("{}/live/demo.ts", cluster.get("edge1").expect("edge1").url(""));
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(get(&url).await);
    }
    wait_until(Duration::from_secs(10), "every new north client to go to edge2", || async {
        spread().await.iter().all(|e| e == "127.0.0.3")
    })
    .await;
    // The busier edge is still the second answer, as a fallback.
    let m = dns.ask("demo.livesky.test.", RecordType::A, Some(("127.0.9.0", 24))).await;
    assert_eq!(addrs(&m), ["127.0.0.3", "127.0.0.2"]);
    drop(viewers);
    stop(mc, cluster, gslb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_fallback_redirects_and_players_resolve_through_it() {
    let (mc, cluster, gslb, _) = demo_with_gslb("http").await;
    let base = format!("http://{}", gslb.http_addr);
    let resp = get(&format!("{base}/demo")).await;
    assert_eq!(resp.status(), 302);
    let edge1 = cluster.get("edge1").expect("edge1");
    let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(loc, format!("{}/live/demo.ts", edge1.url("")));
    assert_eq!(get_text(&format!("{base}/nosuch")).await.0, 404);
    assert_eq!(get_text(&format!("{base}/demo?format=flv")).await.0, 400);
    // A player that cannot use the CDN's DNS: the nameserver does not answer, HTTP does.
    let how = livesky_gslb::client::Lookup {
        nameserver: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
        http: Some(base.clone()),
        timeout: Duration::from_secs(1),
    };
    let r = livesky_gslb::client::resolve_edge("livesky.test", 7600, "demo", &how).await.expect("resolves");
    assert_eq!(r.via, livesky_gslb::client::Via::Http);
    assert_eq!(Some(r.edges[0]), edge1.client);
    if livesky_tests::require_ffmpeg() {
        // ffmpeg follows the 302 like any legacy player.
        let errors = livesky_tests::ffmpeg_check(&format!("{base}/demo"), 4).await;
        assert!(errors.is_empty(), "{errors}");
    }
    stop(mc, cluster, gslb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_prefix_database_is_used_within_seconds_and_a_broken_one_is_refused() {
    let (mc, cluster, gslb, topo) = demo_with_gslb("geo").await;
    let geo = topo.with_file_name("geo.csv");
    let dns = Dns::udp(gslb.dns_addr).await;
    assert_eq!(first_edge(&dns, "203.0.113.0").await.as_deref(), Some("127.0.0.3"));
    let broken = format!("{}\nnot-a-prefix,x,y\n", livesky::DEMO_GEO);
    let tmp = geo.with_extension("new");
    std::fs::write(&tmp, broken).expect("write");
    std::fs::rename(&tmp, &geo).expect("rename");
    wait_until(Duration::from_secs(5), "the broken file to be refused", || async {
        gslb.metrics().contains("livesky_gslb_geo_reloads_total{result=\"rejected\"} 1")
    })
    .await;
    assert_eq!(first_edge(&dns, "203.0.113.0").await.as_deref(), Some("127.0.0.3"), "the old database stays");
    let moved = livesky::DEMO_GEO.replace("203.0.113.0/24,south", "203.0.113.0/24,north");
    std::fs::write(&tmp, moved).expect("write");
    std::fs::rename(&tmp, &geo).expect("rename");
    wait_until(Duration::from_secs(5), "203.0.113.0/24 to be north", || async {
        first_edge(&dns, "203.0.113.0").await.as_deref() == Some("127.0.0.2")
    })
    .await;
    stop(mc, cluster, gslb).await;
}

async fn stop(mc: livesky_mgmt_center::McServer, cluster: livesky::launch::Cluster, gslb: livesky_gslb::Gslb) {
    gslb.shutdown();
    assert!(gslb.stopped(Duration::from_secs(5)).await, "the GSLB stops");
    cluster.shutdown().await;
    mc.shutdown();
    mc.stopped(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_edge_dies_rejoins_through_the_gslb() {
    // Edges report every second, and so does the peer: the move must not lose a report.
    let every = Duration::from_secs(1);
    let (mc, cluster, path, _) = livesky_tests::with_mc("rejoin", livesky::DEMO_TOPOLOGY, every).await;
    let gslb = livesky_tests::gslb_over(&mc, &path).await;
    let (edge1, edge2) = (cluster.get("edge1").expect("edge1"), cluster.get("edge2").expect("edge2"));
    let client_port = edge1.client.expect("client port").port();
    let relookup = livesky::peer_cmd::Relookup {
        domain: "livesky.test".into(),
        port: client_port,
        lookup: livesky_gslb::client::Lookup {
            nameserver: Some(gslb.dns_addr),
            http: None,
            timeout: Duration::from_secs(1),
        },
    };
    // As `livesky peer play livesky://livesky.test:PORT/demo --dns GSLB` does.
    let first = livesky_gslb::client::resolve_edge("livesky.test", client_port, "demo", &relookup.lookup)
        .await
        .expect("the GSLB answers");
    assert_eq!(Some(first.edges[0]), edge1.client, "a client on loopback is in the north: edge1");
    let channel = proto::ChannelId::new("demo").expect("channel");
    let cancel = tokio_util::sync::CancellationToken::new();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let net = livesky_peer::driver::Net {
        edge: first.edges[0],
        listen: any,
        transport: livesky_peer::driver::Transport::Tcp,
    };
    let mut cfg = livesky_peer::core::PeerConfig::new(channel.clone());
    cfg.report_interval = every;
    let player = livesky::peer_cmd::start_player_with(net, channel, cfg, any, false, cancel.clone(), Some(relookup))
        .await
        .expect("player starts");
    // What the viewer's player gets, as it gets it, from the start: a player that started over on
    // the new edge would replay old chunks, and one that lost its buffer would go quiet.
    let mut played = player.output.subscribe();
    let done = cancel.clone();
    let watched = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                _ = done.cancelled() => return seen,
                c = played.recv() => match c {
                    Ok(c) => seen.push((Instant::now(), c.header.seq)),
                    Err(_) => return seen,
                },
            }
        }
    });
    wait_until(Duration::from_secs(15), "the peer playing from edge1, its buffer filled", || async {
        livesky_tests::p2p_status(edge1).await["p0"].as_u64() == Some(1) && {
            let st = *player.stats.borrow();
            // It joined as the source started, so it plays start_ms (2 s) behind live.
            st.play.played_ms > 0 && st.buffered_ms >= 1_500
        }
    })
    .await;
    let before = player.stats.borrow().play;
    let t0 = Instant::now();
    edge1.node.shutdown();
    wait_until(Duration::from_secs(15), "the peer on edge2", || async {
        livesky_tests::p2p_status(edge2).await["p0"].as_u64() == Some(1)
    })
    .await;
    let moved = t0.elapsed();
    let between = player.stats.borrow().play;
    wait_until(Duration::from_secs(10), "the peer playing on from edge2", || async {
        player.stats.borrow().play.played_ms > between.played_ms + 2_000
    })
    .await;
    let after = player.stats.borrow().play;
    assert!(!player.task.is_finished(), "the player is still running");
    cancel.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), player.task).await.expect("the player stops");
    assert!(matches!(ended, Ok(Ok(livesky_peer::driver::Ended::Left))), "{ended:?}");
    let seen = tokio::time::timeout(Duration::from_secs(5), watched).await.expect("the output ends").expect("watcher");
    // The longest wait for a chunk from the moment edge1 died, the wait across that moment included.
    let gap = seen.windows(2).filter(|w| w[1].0 >= t0).map(|w| w[1].0 - w[0].0).max().unwrap_or_default();
    let after_t0 = seen.iter().filter(|(t, _)| *t >= t0).count();
    eprintln!(
        "edge lost: moved in {moved:?}; played {} ms meanwhile; stalled {} ms; longest gap in the output {gap:?}; {} chunks played",
        between.played_ms - before.played_ms,
        after.stalled_ms - before.stalled_ms,
        after_t0,
    );
    // The buffer carried playback across the move: the player got every chunk once, in order,
    // with no pause longer than a few frames, and playing went on while no edge was there.
    assert!(after_t0 > 50, "{after_t0} chunks after edge1 died");
    let holes: Vec<_> = seen.windows(2).filter(|w| w[1].1 != w[0].1 + 1).map(|w| (w[0].1, w[1].1)).collect();
    assert!(holes.is_empty(), "the output jumped (from, to): {holes:?}");
    assert!(gap < Duration::from_millis(400), "the viewer waited {gap:?} for the next chunk");
    assert_eq!(after.stalls, before.stalls, "the viewer saw a stall while its peer moved");
    let meanwhile = between.played_ms - before.played_ms;
    assert!(meanwhile as u128 >= moved.as_millis() / 2, "played {meanwhile} ms in the {moved:?} between the edges");
    // Everything played from the moment edge1 died (and more: the counts not yet reported to
    // edge1) reached the MC through edge2, the last of it in the report sent on leaving.
    wait_until(Duration::from_secs(5), "edge2 to see the peer leave", || async {
        livesky_tests::p2p_status(edge2).await["p0"].as_u64() == Some(0)
    })
    .await;
    let rows = livesky_tests::assert_no_report_lost(&path, &["edge2"]).await;
    let reported: u64 = rows.iter().filter(|r| r.channel == "demo").map(|r| r.played_ms).sum();
    let played = player.output.stats().play.played_ms;
    eprintln!("played {} ms after edge1 died; edge2 reported {reported} ms", played - before.played_ms);
    assert!(reported >= played - before.played_ms, "edge2 reported {reported} ms played");
    eprintln!("the peer re-joined through the GSLB {moved:?} after its edge stopped");
    stop(mc, cluster, gslb).await;
}
