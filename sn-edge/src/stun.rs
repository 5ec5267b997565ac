//! The edge's STUN server (UDP): it answers each binding request with the address it came from,
//! so clients learn their public address for ICE, and it answers on two ports so they can test
//! their NAT (RFC 5780, with one address): every answer names the other port (OTHER-ADDRESS), and
//! a request whose CHANGE-REQUEST asks for another port is answered from the other socket.

use std::net::SocketAddr;
use std::sync::Arc;

use rtc_stun::addr::MappedAddress;
use rtc_stun::attributes::{ATTR_CHANGE_REQUEST, ATTR_OTHER_ADDRESS, ATTR_RESPONSE_ORIGIN};
use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use rtc_stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

use crate::Edge;

/// CHANGE-REQUEST flags (RFC 5780 §7.2).
const CHANGE_IP: u32 = 0x04;
const CHANGE_PORT: u32 = 0x02;

/// The STUN server on its two sockets: `primary` (what the welcome names) and `other`.
pub fn start_stun(edge: Arc<Edge>, primary: UdpSocket, other: UdpSocket) {
    let socks = [Arc::new(primary), Arc::new(other)];
    for me in 0..2 {
        let (edge, socks) = (edge.clone(), socks.clone());
        edge.node.clone().spawn(async move { serve(edge, &socks[me], &socks[1 - me]).await });
    }
}

async fn serve(edge: Arc<Edge>, sock: &UdpSocket, other: &UdpSocket) {
    let (Ok(here), Ok(there)) = (sock.local_addr(), other.local_addr()) else { return };
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = tokio::select! {
            _ = edge.node.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let outcome = match answer(&buf[..n], from, here, there) {
            Answer::From(resp, Origin::Here) => {
                let _ = sock.send_to(&resp, from).await;
                "answered"
            }
            Answer::From(resp, Origin::OtherPort) => {
                let _ = other.send_to(&resp, from).await;
                "answered-other-port"
            }
            Answer::None => "ignored",
        };
        edge.metrics.stun_requests.with_label_values(&[outcome]).inc();
    }
}

/// Which of the server's sockets sends an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Here,
    OtherPort,
}

#[derive(Debug)]
pub enum Answer {
    From(Vec<u8>, Origin),
    /// Not a binding request, malformed, or asking for another IP address (the edge has one).
    None,
}

/// What to send for `data`, received on `here` from `from`; `there` is the other socket.
pub fn answer(data: &[u8], from: SocketAddr, here: SocketAddr, there: SocketAddr) -> Answer {
    let mut req = Message::new();
    if req.unmarshal_binary(data).is_err() || req.typ != BINDING_REQUEST {
        return Answer::None;
    }
    let change = match req.get(ATTR_CHANGE_REQUEST) {
        Ok(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Ok(_) => return Answer::None,
        Err(_) => 0,
    };
    if change & CHANGE_IP != 0 {
        return Answer::None;
    }
    let origin = if change & CHANGE_PORT != 0 { Origin::OtherPort } else { Origin::Here };
    let sent_from = if origin == Origin::Here { here } else { there };
    let other = if origin == Origin::Here { there } else { here };
    match response(&req, from, sent_from, other) {
        Some(r) => Answer::From(r, origin),
        None => Answer::None,
    }
}

fn response(req: &Message, from: SocketAddr, origin: SocketAddr, other: SocketAddr) -> Option<Vec<u8>> {
    let mut resp = Message::new();
    let setters: [Box<dyn Setter>; 3] = [
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
    ];
    resp.build(&setters).ok()?;
    MappedAddress { ip: other.ip(), port: other.port() }.add_to_as(&mut resp, ATTR_OTHER_ADDRESS).ok()?;
    MappedAddress { ip: origin.ip(), port: origin.port() }.add_to_as(&mut resp, ATTR_RESPONSE_ORIGIN).ok()?;
    rtc_stun::fingerprint::FINGERPRINT.add_to(&mut resp).ok()?;
    Some(resp.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::{Getter, TransactionId};

    fn request(change: Option<u32>) -> Vec<u8> {
        let mut m = Message::new();
        let setters: [Box<dyn Setter>; 2] = [Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)];
        m.build(&setters).unwrap();
        if let Some(c) = change {
            m.add(ATTR_CHANGE_REQUEST, &c.to_be_bytes());
        }
        m.raw
    }

    fn addr_of(resp: &[u8], t: Option<rtc_stun::attributes::AttrType>) -> SocketAddr {
        let mut m = Message::new();
        m.unmarshal_binary(resp).unwrap();
        match t {
            None => {
                let mut x = XorMappedAddress::default();
                x.get_from(&m).unwrap();
                SocketAddr::new(x.ip, x.port)
            }
            Some(t) => {
                let mut a = MappedAddress::default();
                a.get_from_as(&m, t).unwrap();
                SocketAddr::new(a.ip, a.port)
            }
        }
    }

    #[test]
    fn answers_name_the_client_and_the_other_port_and_change_port_moves_the_answer() {
        let (client, here, there): (SocketAddr, SocketAddr, SocketAddr) = (
            "203.0.113.9:41000".parse().unwrap(),
            "192.0.2.1:3478".parse().unwrap(),
            "192.0.2.1:3479".parse().unwrap(),
        );
        let Answer::From(r, Origin::Here) = answer(&request(None), client, here, there) else {
            panic!("plain binding")
        };
        assert_eq!(addr_of(&r, None), client);
        assert_eq!(addr_of(&r, Some(ATTR_OTHER_ADDRESS)), there);
        assert_eq!(addr_of(&r, Some(ATTR_RESPONSE_ORIGIN)), here);
        let Answer::From(r, Origin::OtherPort) = answer(&request(Some(CHANGE_PORT)), client, here, there) else {
            panic!("change port")
        };
        assert_eq!(addr_of(&r, None), client);
        assert_eq!(addr_of(&r, Some(ATTR_RESPONSE_ORIGIN)), there);
        assert_eq!(addr_of(&r, Some(ATTR_OTHER_ADDRESS)), here);
        // One address only: a change of IP is not answered (the client must not take silence
        // from a NAT for it), nor is anything that is not a binding request.
        assert!(matches!(answer(&request(Some(CHANGE_IP | CHANGE_PORT)), client, here, there), Answer::None));
        assert!(matches!(answer(b"GET / HTTP/1.1", client, here, there), Answer::None));
        let mut bad = request(None);
        bad.truncate(bad.len() - 3);
        assert!(matches!(answer(&bad, client, here, there), Answer::None));
    }
}
