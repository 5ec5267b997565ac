//! The edge's STUN binding server (UDP): it answers each binding request with the address it came
//! from, so clients learn their public address for ICE and the edge's reports see their NAT.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::Edge;

/// A STUN binding server: answers each binding request with the address it came from.
pub fn start_stun(edge: Arc<Edge>, socket: UdpSocket) {
    let node = edge.node.clone();
    node.spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = tokio::select! {
                _ = edge.node.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let outcome = match stun_response(&buf[..n], from) {
                Some(resp) => {
                    let _ = socket.send_to(&resp, from).await;
                    "answered"
                }
                None => "ignored",
            };
            edge.metrics.stun_requests.with_label_values(&[outcome]).inc();
        }
    });
}

/// The binding success response for a binding request, or None for anything else.
pub fn stun_response(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
    use rtc_stun::xoraddr::XorMappedAddress;
    let mut req = Message::new();
    req.unmarshal_binary(data).ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut resp = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
        Box::new(rtc_stun::fingerprint::FINGERPRINT),
    ];
    resp.build(&setters).ok()?;
    Some(resp.raw)
}
