//! The player's NAT tests (RFC 5780) against its edge's STUN server, which answers on two ports:
//! test I asks the first port for our mapped address (and learns the other port); then, at once,
//! the other port is asked for our mapping (a different one: endpoint-dependent mapping, i.e.
//! symmetric), and — from a second socket, which has sent nothing to the other port, so nothing
//! opened our router for it — the first port is asked to answer from the other one (the answer
//! gets through: endpoint-independent filtering). [`proto::nat::classify`] turns what came back into a class.
//! The whole test takes a few round trips, at most [`TEST_TIME`] when answers are lost or filtered.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proto::nat::NatProbe;
use rtc_stun::addr::MappedAddress;
use rtc_stun::attributes::{ATTR_CHANGE_REQUEST, ATTR_OTHER_ADDRESS};
use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, TransactionId};
use rtc_stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// How long each phase waits for its answers, resending every [`RESEND`].
pub const TEST_TIME: Duration = Duration::from_millis(600);
const RESEND: Duration = Duration::from_millis(150);
/// RFC 5780 §7.2: "change port".
const CHANGE_PORT: u32 = 0x02;

/// Runs the tests from a socket on `bind_ip` (the address ICE uses) against `server`.
pub async fn probe(server: SocketAddr, bind_ip: IpAddr) -> NatProbe {
    let bind = || UdpSocket::bind(SocketAddr::new(bind_ip, 0));
    let (Ok(sock), Ok(fresh)) = (bind().await, bind().await) else { return NatProbe::default() };
    let first = Request::new(server, false);
    let Some(answer) = exchange(&sock, &[first]).await.into_iter().next().flatten() else {
        return NatProbe::default();
    };
    let mut probe = NatProbe { mapped: Some(answer.mapped), ..Default::default() };
    let Some(mut other) = answer.other else { return probe };
    if other.ip().is_unspecified() {
        other.set_ip(server.ip());
    }
    let (to_other, change_port) = ([Request::new(other, false)], [Request::new(server, true)]);
    let (mapping, filtering) = tokio::join!(exchange(&sock, &to_other), exchange(&fresh, &change_port));
    probe.mapped_other = mapping.into_iter().next().flatten().map(|a| a.mapped);
    probe.other_port_answered = filtering.into_iter().next().flatten().is_some();
    probe
}

struct Request {
    to: SocketAddr,
    id: TransactionId,
    raw: Vec<u8>,
}

impl Request {
    fn new(to: SocketAddr, change_port: bool) -> Request {
        let id = TransactionId::new();
        let mut m = Message::new();
        let setters: [Box<dyn Setter>; 2] = [Box::new(id), Box::new(BINDING_REQUEST)];
        // Building a binding request from constants cannot fail; an empty message would only go
        // unanswered.
        let _ = m.build(&setters);
        if change_port {
            m.add(ATTR_CHANGE_REQUEST, &CHANGE_PORT.to_be_bytes());
        }
        Request { to, id, raw: m.raw }
    }
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    mapped: SocketAddr,
    other: Option<SocketAddr>,
}

/// Sends every request (again every [`RESEND`]) until each is answered or [`TEST_TIME`] ends.
async fn exchange(sock: &UdpSocket, reqs: &[Request]) -> Vec<Option<Answer>> {
    let mut answers: Vec<Option<Answer>> = vec![None; reqs.len()];
    let end = Instant::now() + TEST_TIME;
    let mut buf = [0u8; 1500];
    while Instant::now() < end && answers.iter().any(Option::is_none) {
        for (r, a) in reqs.iter().zip(&answers) {
            if a.is_none() {
                let _ = sock.send_to(&r.raw, r.to).await;
            }
        }
        let resend = (Instant::now() + RESEND).min(end);
        while let Ok(Ok((n, _))) = timeout_at(resend, sock.recv_from(&mut buf)).await {
            if let Some((id, ans)) = parse(&buf[..n])
                && let Some(i) = reqs.iter().position(|r| r.id == id)
            {
                answers[i] = Some(ans);
                if answers.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    }
    answers
}

/// A binding success: its transaction, the mapped address, and the server's other port.
fn parse(data: &[u8]) -> Option<(TransactionId, Answer)> {
    let mut m = Message::new();
    m.unmarshal_binary(data).ok()?;
    if m.typ != BINDING_SUCCESS {
        return None;
    }
    let mut x = XorMappedAddress::default();
    x.get_from(&m).ok()?;
    let mut o = MappedAddress::default();
    let other = o.get_from_as(&m, ATTR_OTHER_ADDRESS).ok().map(|_| SocketAddr::new(o.ip, o.port));
    Some((m.transaction_id, Answer { mapped: SocketAddr::new(x.ip, x.port), other }))
}
