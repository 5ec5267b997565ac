#!/usr/bin/env python3
"""The LiveSky testbed: every role on a host of its own (a Linux network namespace), peers in home
networks behind real NAT routers (iptables) with real uplink limits (tc tbf). Roles run the command
lines of deploy/systemd/*.service with configs/testbed/ as their /etc/livesky (docs/deploy.md).

    sudo tests/testbed/testbed.py configs/testbed/small.toml [--binary target/release/livesky] [--json out.json]

Hosts: an "internet" namespace holding a bridge (10.200.0.0/16); Tier 0, the core SN and the edges as in the
topology file, each the real `livesky sn` / `livesky edge` with its own key, as an operator runs them; for
each home a router namespace (WAN 10.200.1.N, LAN 192.168.N.0/24, NAT and the uplink limit on its WAN) and
one namespace per peer running `livesky peer play`. Measures each peer's /status and each edge's /p2p,
prints a table and writes JSON. Tears everything down on exit and on Ctrl-C: no namespace is left behind.
Needs root, ip (iproute2), iptables, tc, curl; stdlib Python 3.11.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tomllib

PREFIX = "lsb-"
INET = PREFIX + "inet"
SERVERS = {"mc": ("10.200.0.5", "mc"), "gslb": ("10.200.0.6", "gslb"),
           "tier0": ("10.200.0.10", "sn"), "core1": ("10.200.0.11", "sn"),
           "edge1": ("10.200.0.21", "edge"), "edge2": ("10.200.0.22", "edge")}
EDGES = {"north": "edge1", "south": "edge2"}
NATS = ("full-cone", "port-restricted", "symmetric")
STATUS_PORT = 9000

procs = []


def sh(*cmd, check=True, ns=None, capture=False):
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    r = subprocess.run(full, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"testbed: `{' '.join(full)}` failed: {r.stderr.strip()}")
    return r.stdout if capture else r.returncode


def teardown():
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def netns(name):
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)


def wire(a, a_if, b, b_if):
    """A veth pair between namespaces a and b, named a_if in a and b_if in b."""
    tmp_a, tmp_b = f"v{os.getpid() % 10000}a{wire.n}", f"v{os.getpid() % 10000}b{wire.n}"
    wire.n += 1
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_a, "netns", a)
    sh("ip", "link", "set", tmp_b, "netns", b)
    sh("ip", "link", "set", tmp_a, "name", a_if, ns=a)
    sh("ip", "link", "set", tmp_b, "name", b_if, ns=b)
    sh("ip", "link", "set", a_if, "up", ns=a)
    sh("ip", "link", "set", b_if, "up", ns=b)


wire.n = 0


def to_internet(name, addr, n):
    """Host `name` on the internet bridge at addr/16."""
    wire(name, "eth0", INET, f"p{n}")
    sh("ip", "link", "set", f"p{n}", "master", "br0", ns=INET)
    sh("ip", "addr", "add", f"{addr}/16", "dev", "eth0", ns=name)


def build_home(i, home, port_no):
    """Router hN and its peers hN-pM; returns the peers' (namespace, LAN address). The router's public
    address places it in its region for the GSLB (configs/testbed/geo.csv: .1–63 north, .65–127 south)."""
    router = f"{PREFIX}h{i}"
    netns(router)
    wan = f"10.200.1.{i + (64 if home.get('region', 'north') == 'south' else 0)}"
    to_internet(router, wan, port_no)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
    sh("ip", "link", "add", "lan0", "type", "bridge", ns=router)
    sh("ip", "addr", "add", f"192.168.{i}.1/24", "dev", "lan0", ns=router)
    sh("ip", "link", "set", "lan0", "up", ns=router)
    peers = []
    for m in range(1, home["peers"] + 1):
        name = f"{router}-p{m}"
        netns(name)
        wire(name, "eth0", router, f"l{m}")
        sh("ip", "link", "set", f"l{m}", "master", "lan0", ns=router)
        addr = f"192.168.{i}.{10 + m}"
        sh("ip", "addr", "add", f"{addr}/24", "dev", "eth0", ns=name)
        sh("ip", "route", "add", "default", "via", f"192.168.{i}.1", ns=name)
        peers.append((name, addr))
    nat = home["nat"]
    masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"]
    if nat == "symmetric":
        masq += ["--random-fully"]
    sh(*masq, ns=router)
    # A home router's firewall drops what nobody inside asked for. Without it the kernel answers such a
    # packet (ICMP) and keeps a conntrack entry for it, whose tuple then collides with the mapping the peer
    # inside makes towards that sender: the router picks another public port, and hole punching fails.
    sh("iptables", "-A", "INPUT", "-i", "eth0", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP", ns=router)
    if nat == "full-cone":
        # Endpoint-independent filtering: whatever reaches the WAN address on UDP goes to the peer.
        sh("iptables", "-t", "nat", "-A", "PREROUTING", "-i", "eth0", "-p", "udp", "-j", "DNAT",
           "--to-destination", peers[0][1], ns=router)
    kbps = int(home["uplink_kbps"])
    # The uplink: what leaves the router towards the internet.
    sh("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", f"{kbps}kbit", "burst", "32kbit",
       "latency", "400ms", ns=router)
    return router, wan, peers


running = {}


def spawn(ns, args, log):
    f = open(log, "a")
    p = subprocess.Popen(["ip", "netns", "exec", ns] + [str(a) for a in args], stdout=f, stderr=subprocess.STDOUT,
                         env={**os.environ, "RUST_BACKTRACE": "0"})
    procs.append(p)
    running[ns] = (p, args, log)
    return p


FAULTS = ("cut-home", "saturate-uplink", "kill-edge", "restart-mc")


class Fault:
    """One fault of the run: started at `at` s, ended `seconds` later (kill-edge: never)."""

    def __init__(self, spec, built):
        self.spec = spec
        self.kind = spec["kind"]
        if self.kind not in FAULTS:
            raise SystemExit(f"testbed: fault kind {self.kind!r}: use one of {', '.join(FAULTS)}")
        self.at = float(spec.get("at", 20))
        self.seconds = float(spec.get("seconds", 10))
        self.started = self.ended = False
        self.home = None
        if self.kind in ("cut-home", "saturate-uplink"):
            n = int(spec["home"])
            if not 1 <= n <= len(built):
                raise SystemExit(f"testbed: fault {self.kind} names home {n}; there are {len(built)}")
            self.home = built[n - 1]
        self.blaster = None

    def describe(self):
        where = {"cut-home": lambda: f"home {self.spec['home']}'s link down for {self.seconds:.0f} s",
                 "saturate-uplink": lambda: f"home {self.spec['home']}'s uplink saturated for {self.seconds:.0f} s",
                 "kill-edge": lambda: f"{self.spec.get('edge', 'edge1')} killed",
                 "restart-mc": lambda: "the MC restarted"}[self.kind]()
        return f"at {self.at:.0f} s: {where}"

    def start(self, binary):
        self.started = True
        if self.kind == "cut-home":
            sh("ip", "link", "set", "eth0", "down", ns=self.home[1])
        elif self.kind == "saturate-uplink":
            ns = self.home[3][0][0]
            code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nb=bytes(1200)\n"
                    f"end=time.time()+{self.seconds}\nwhile time.time()<end:\n"
                    "  try: s.sendto(b,('10.200.0.10',9))\n  except OSError: time.sleep(0.001)\n")
            self.blaster = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code])
            procs.append(self.blaster)
        elif self.kind == "kill-edge":
            p, _, _ = running[PREFIX + self.spec.get("edge", "edge1")]
            p.kill()
        elif self.kind == "restart-mc":
            p, args, log = running[PREFIX + "mc"]
            p.terminate()
            p.wait(10)
            time.sleep(2)
            spawn(PREFIX + "mc", args, log)

    def end(self):
        self.ended = True
        if self.kind == "cut-home":
            sh("ip", "link", "set", "eth0", "up", ns=self.home[1])
        elif self.blaster is not None:
            self.blaster.wait(10)

    def affected(self, peers):
        if self.home is not None:
            return [p for p in peers if p["router"] == self.home[2]]
        if self.kind == "kill-edge":
            edge = self.spec.get("edge", "edge1")
            return [p for p in peers if p.get("edge_at_fault") == edge]
        return peers


UNITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "systemd")


def unit_command(unit, instance, env, binary):
    """The ExecStart of deploy/systemd/UNIT, as systemd would run it: %i, ${VAR} and $VAR (split into
    words) from `env`, the binary where the unit has /usr/local/bin/livesky. The testbed runs exactly
    what an operator's units run."""
    with open(os.path.join(UNITS, unit)) as f:
        line = next(l for l in f if l.startswith("ExecStart="))
    out = []
    for word in line[len("ExecStart="):].split():
        word = word.replace("%i", instance)
        if word == "/usr/local/bin/livesky":
            out.append(binary)
        elif word.startswith("$") and not word.startswith("${"):
            out.extend(env.get(word[1:], "").split())
        else:
            for k, v in env.items():
                word = word.replace("${" + k + "}", v)
            out.append(word)
    return out


def get_json(ns, url):
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "3", url], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return None


def wait_for(what, limit, cond):
    end = time.time() + limit
    while time.time() < end:
        if cond():
            return
        time.sleep(0.5)
    raise SystemExit(f"testbed: timed out after {limit} s waiting for {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--binary", default="target/release/livesky")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--logs", default="target/testbed-logs")
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--max-stalled-ms", type=int, default=0,
                    help="with --check: stall time a player may have in all (default 0: no stall at all)")
    ap.add_argument("--check", action="store_true",
                    help="exit 2 unless every peer played without a stall (outside cut homes), measured its NAT and "
                         "public address right, cone parents have children from other homes, and P2P share >= min_p2p_share")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("testbed: needs root (network namespaces, iptables, tc)")
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    homes = cfg.get("home", [])
    for h in homes:
        if h.get("nat") not in NATS:
            raise SystemExit(f"testbed: home nat {h.get('nat')!r}: use one of {', '.join(NATS)}")
        if h["nat"] == "full-cone" and h.get("peers", 1) != 1:
            raise SystemExit("testbed: a full-cone home holds one peer (its router forwards all inbound UDP to it)")
    seconds = args.seconds or cfg.get("seconds", 60)
    binary = os.path.abspath(args.binary)
    topo = os.path.abspath(cfg["topology"])
    os.makedirs(args.logs, exist_ok=True)
    for old in os.listdir(args.logs):
        if old.endswith(".log"):
            os.remove(os.path.join(args.logs, old))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    teardown()  # what a killed earlier run left
    try:
        run(cfg, homes, seconds, binary, topo, args)
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
    finally:
        teardown()


def run(cfg, homes, seconds, binary, topo, args):
    netns(INET)
    sh("ip", "link", "add", "br0", "type", "bridge", ns=INET)
    sh("ip", "link", "set", "br0", "up", ns=INET)
    port_no = 0
    for node, (addr, _) in SERVERS.items():
        netns(PREFIX + node)
        port_no += 1
        to_internet(PREFIX + node, addr, port_no)
    built = []
    for i, h in enumerate(homes, start=1):
        port_no += 1
        built.append((h,) + build_home(i, h, port_no))
    conf = os.path.dirname(topo)
    keys = os.path.join(conf, "..", "keys")
    db = os.path.join(conf, "..", "..", "target", "testbed-mc.sqlite")
    if os.path.exists(db):
        os.remove(db)
    mc_addr = SERVERS["mc"][0]
    # What /etc/livesky/livesky.env holds on a real host (deploy/systemd/livesky.env.example).
    env = {"LIVESKY_ETC": conf, "LIVESKY_KEYS": os.path.abspath(keys), "MC_ADDR": f"{mc_addr}:7700",
           "MC_PUBLIC_KEY": cfg["mc_public_key"], "LIVESKY_EXTRA_ARGS": "--insecure-dev"}
    spawn(PREFIX + "mc", unit_command("livesky-mc.service", "", env, binary), f"{args.logs}/mc.log")
    wait_for("the MC to serve", 30, lambda: get_json(PREFIX + "mc", f"http://{mc_addr}:7780/members") is not None)
    for node, (addr, role) in SERVERS.items():
        if role in ("sn", "edge"):
            spawn(PREFIX + node, unit_command(f"livesky-{role}@.service", node, env, binary), f"{args.logs}/{node}.log")
    spawn(PREFIX + "gslb", unit_command("livesky-gslb.service", "", env, binary), f"{args.logs}/gslb.log")
    for node, (addr, role) in SERVERS.items():
        if role == "edge":
            wait_for(f"{node} to serve", 30,
                     lambda a=addr, n=node: get_json(PREFIX + n, f"http://{a}:8080/p2p") is not None)
    channel = cfg.get("channel", "demo")
    peers = []
    gslb = SERVERS["gslb"][0]
    for h, router, wan, members in built:
        for ns, addr in members:
            # As a viewer would: the GSLB picks the edge (by the router's public address).
            spawn(ns, [binary, "peer", "play", f"livesky://{cfg.get('zone', 'livesky.test')}/{channel}",
                       "--dns", f"{gslb}:53", "--http",
                       f"127.0.0.1:{STATUS_PORT}", "--upload-kbps", h.get("upload_kbps", h["uplink_kbps"] // len(members))],
                  f"{args.logs}/{ns}.log")
            peers.append({"ns": ns, "nat": h["nat"], "router": wan, "lan": addr,
                          "region": h.get("region", "north"), "uplink_kbps": h["uplink_kbps"],
                          "upload_kbps": h.get("upload_kbps", h["uplink_kbps"] // len(members))})
            time.sleep(0.3)
    print(f"testbed: {len(SERVERS)} servers, {len(built)} homes, {len(peers)} peers; playing {seconds} s",
          file=sys.stderr)
    faults = [Fault(f, built) for f in cfg.get("fault", [])]
    start = time.time()
    snaps = {}
    next_print = 10
    while time.time() - start < seconds:
        time.sleep(0.5)
        t = time.time() - start
        for i, f in enumerate(faults):
            if not f.started and t >= f.at:
                snaps[i] = (status_all(peers), edge_of_all(peers))
                for p in peers:
                    p["edge_at_fault"] = snaps[i][1].get(p["ns"])
                print(f"testbed: {t:4.0f} s: fault {f.describe()}", file=sys.stderr)
                f.start(binary)
            if f.started and not f.ended and f.kind != "kill-edge" and t >= f.at + f.seconds:
                f.end()
        if t >= next_print:
            next_print += 10
            playing = sum(1 for st in status_all(peers).values() if st.get("startup_ms") is not None)
            print(f"testbed: {t:4.0f} s: {playing}/{len(peers)} peers playing", file=sys.stderr)
    for f in faults:
        if f.started and not f.ended:
            f.end()
    report = measure(peers, seconds)
    final = status_all(peers)
    report["faults"] = []
    for i, f in enumerate(faults):
        if i not in snaps:
            continue
        # Each fault's window runs to the next fault (or the end): what the viewers saw of it.
        before, end = snaps[i][0], snaps[i + 1][0] if i + 1 in snaps else final
        hit = f.affected(peers)
        stalls = sum((end.get(p["ns"], {}).get("stalls") or 0) - (before.get(p["ns"], {}).get("stalls") or 0)
                     for p in hit)
        stalled = sum((end.get(p["ns"], {}).get("stalled_ms") or 0) - (before.get(p["ns"], {}).get("stalled_ms") or 0)
                      for p in hit)
        others = [p for p in peers if p not in hit]
        other_stalls = sum((end.get(p["ns"], {}).get("stalls") or 0) - (before.get(p["ns"], {}).get("stalls") or 0)
                           for p in others)
        # Playing when the window ends: media in the buffer (a stalled player has none).
        playing = sum(1 for p in hit if (end.get(p["ns"], {}).get("buffer_ms") or 0) > 0)
        report["faults"].append({"fault": f.describe(), "window_s": (faults[i + 1].at if i + 1 in snaps else seconds) - f.at,
                                 "affected_peers": len(hit), "their_stalls": stalls,
                                 "their_stalled_ms": stalled, "still_playing": playing,
                                 "stalls_elsewhere": other_stalls})
    cut = {f.home[2] for f in faults if f.kind in ("cut-home", "saturate-uplink") and f.started}
    report["failures"] = check(report, cut, cfg.get("min_p2p_share", 0.5), args.max_stalled_ms)
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.check and report["failures"]:
        raise SystemExit(2)


def status_all(peers):
    return {p["ns"]: get_json(p["ns"], f"http://127.0.0.1:{STATUS_PORT}/status") or {} for p in peers}


def edge_of_all(peers):
    """Which edge each peer is on now (its connection to an edge's client port, from /proc/net/tcp)."""
    ports = {"1DB0": None}  # 7600, the client port
    edges = {a: n for n, (a, r) in SERVERS.items() if r == "edge"}
    out = {}
    for p in peers:
        tcp = subprocess.run(["ip", "netns", "exec", p["ns"], "cat", "/proc/net/tcp"], capture_output=True,
                             text=True).stdout
        for line in tcp.splitlines()[1:]:
            f = line.split()
            rem, state = f[2], f[3]
            ip_hex, port_hex = rem.split(":")
            if port_hex in ports and state == "01":
                ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
                out[p["ns"]] = edges.get(ip)
    return out


EXPECTED_CLASS = {"full-cone": "open", "port-restricted": "restricted", "symmetric": "symmetric"}


def measure(peers, seconds):
    rows = []
    on_edge = edge_of_all(peers)
    trees = {}
    for node, (addr, role) in SERVERS.items():
        if role == "edge":
            listing = get_json(PREFIX + node, f"http://{addr}:8080/p2p/clients") or {}
            trees[node] = {c["peer"]: c for ch in listing.get("channels") or [] for c in ch.get("clients") or []}
    for p in peers:
        st = get_json(p["ns"], f"http://127.0.0.1:{STATUS_PORT}/status") or {}
        down = (st.get("bytes_from_edge") or 0) + (st.get("bytes_from_peers") or 0)
        edge, me = on_edge.get(p["ns"]), st.get("peer_id")
        # Its children as the edge's tracker holds them, and the homes they connect from.
        kids = [c for c in trees.get(edge, {}).values() if me is not None and me in (c.get("feeds") or [])]
        kid_homes = {c["from"].split(":")[0] for c in kids}
        rows.append({**p, "edge": edge, "playing": st.get("startup_ms") is not None, "startup_ms": st.get("startup_ms"),
                     "stalls": st.get("stalls"), "stalled_ms": st.get("stalled_ms"),
                     "detected_nat": st.get("nat"), "stun_addr": st.get("stun_addr"),
                     "parent": len(kids) > 0, "children": len(kids),
                     "children_other_homes": len([h for h in kid_homes if h != p["router"]]),
                     "p2p_share": (st.get("bytes_from_peers") or 0) / down if down else 0,
                     "bytes_down": down, "bytes_from_peers": st.get("bytes_from_peers") or 0,
                     "played_ms": st.get("played_ms") or 0,
                     "bytes_up": st.get("bytes_up"), "latency_p50_ms": st.get("latency_p50_ms")})
    edges = {}
    for node, (addr, role) in SERVERS.items():
        if role == "edge":
            ch = ((get_json(PREFIX + node, f"http://{addr}:8080/p2p") or {}).get("channels") or [{}])[0]
            edges[node] = {k: ch.get(k) for k in ("stage", "p0", "nc", "natted_clients", "nat_classes", "signals_relayed")}
    down = sum(r["bytes_down"] for r in rows)
    from_peers = sum(r["bytes_from_peers"] for r in rows)
    # The upload ceiling: what the homes' links let their peers send, against what all peers take.
    played_s = sum(r["played_ms"] for r in rows) / 1000
    stream_kbps = down * 8 / 1000 / played_s if played_s else 0
    homes = {}
    for p in peers:
        homes.setdefault(p["router"], (p["uplink_kbps"], []))[1].append(p)
    allowed = sum(min(up, sum(int(q["upload_kbps"]) for q in members)) for up, members in homes.values())
    ceiling = min(1.0, allowed / (stream_kbps * len(rows))) if stream_kbps and rows else 0
    return {"peers": rows, "edges": edges, "seconds": seconds, "trees": trees,
            "p2p_share": from_peers / down if down else 0,
            "p2p_share_mean": sum(r["p2p_share"] for r in rows) / len(rows) if rows else 0,
            "stream_kbps": stream_kbps, "upload_allowed_kbps": allowed, "p2p_ceiling": ceiling}


def check(rep, cut_homes, min_share, max_stalled_ms=0):
    """The issue's "done means" on this run; returns what failed. `max_stalled_ms` lets a player stall
    that long in all (the issue: none at all; see --max-stalled-ms)."""
    bad = []
    for r in rep["peers"]:
        name = r["ns"][len(PREFIX):]
        if not r["playing"]:
            bad.append(f"{name} never played")
        if (r["stalls"] or 0) > 0 and (r["stalled_ms"] or 0) > max_stalled_ms and r["router"] not in cut_homes:
            bad.append(f"{name} ({r['nat']}) stalled {r['stalls']} times ({r['stalled_ms']} ms)")
        if r["detected_nat"] != EXPECTED_CLASS[r["nat"]]:
            bad.append(f"{name} behind a {r['nat']} NAT measured {r['detected_nat']}")
        if (r["stun_addr"] or "").split(":")[0] != r["router"]:
            bad.append(f"{name}: STUN saw {r['stun_addr']}, not its router's {r['router']}")
        if r["nat"] != "symmetric" and r["parent"] and r["children_other_homes"] == 0:
            bad.append(f"{name} ({r['nat']}) is a parent with children from its own home only")
    if rep["p2p_share"] < min_share:
        bad.append(f"P2P share {rep['p2p_share'] * 100:.1f} % < {min_share * 100:.0f} %")
    return bad


def print_table(rep):
    print(f"{'peer':<10} {'nat':<16} {'measured':<10} {'edge':<6} {'startup':>7} {'stalls':>6} {'children':>8} "
          f"{'other homes':>11} {'P2P':>6} {'up kB':>7} {'latency p50':>11}")
    for r in rep["peers"]:
        print(f"{r['ns'][len(PREFIX):]:<10} {r['nat']:<16} {str(r['detected_nat']):<10} {str(r['edge']):<6} "
              f"{str(r['startup_ms']):>7} {str(r['stalls']):>6} {r['children']:>8} {r['children_other_homes']:>11} "
              f"{r['p2p_share'] * 100:5.1f}% {(r['bytes_up'] or 0) / 1000:7.0f} {str(r['latency_p50_ms']):>11}")
    for e, v in rep["edges"].items():
        print(f"{e}: {v}")
    print(f"P2P share {rep['p2p_share'] * 100:.1f} % of all bytes (mean per peer {rep['p2p_share_mean'] * 100:.1f} %); "
          f"the homes' uplinks allow {rep['upload_allowed_kbps']} kbit/s for {len(rep['peers'])} peers at "
          f"{rep['stream_kbps']:.0f} kbit/s: ceiling {rep['p2p_ceiling'] * 100:.0f} %")
    for f in rep.get("faults", []):
        print(f"fault {f['fault']} (next {f['window_s']:.0f} s): {f['affected_peers']} peers hit, {f['their_stalls']} stalls "
              f"({f['their_stalled_ms']} ms), {f['still_playing']} playing when it ends; "
              f"{f['stalls_elsewhere']} stalls elsewhere")
    for b in rep.get("failures", []):
        print(f"FAILED: {b}")
    if not rep.get("failures"):
        print("every check passed")


if __name__ == "__main__":
    main()
