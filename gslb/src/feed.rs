//! The management center's view of the edges, polled from `GET /edges` every `poll_ms` (at most
//! 2 s, so loads are never older than that plus one poll). When the MC cannot be reached the
//! last view stays in use: edges keep serving without the MC, and so does the GSLB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proto::mc_api::EdgesView;
use tracing::{info, warn};

use crate::choose::EdgeInfo;
use crate::server::Shared;
use crate::zone::View;

/// The MC's answer as the zone uses it: channel ids lowercased (DNS names are case-blind).
pub fn view_of(v: EdgesView) -> View {
    let edges: Vec<EdgeInfo> = v
        .edges
        .into_iter()
        .map(|e| EdgeInfo {
            id: e.id,
            region: e.region,
            isp: e.isp,
            addrs: e.addrs,
            http: Some(e.http),
            clients: e.clients,
            users: e.users,
            capacity_kbps: e.capacity_kbps,
            full: e.full.iter().map(|c| c.to_ascii_lowercase()).collect(),
        })
        .collect();
    let channels: HashMap<String, u32> =
        v.channels.into_iter().map(|c| (c.id.to_ascii_lowercase(), c.bitrate_kbps)).collect();
    View { edges: crate::choose::Edges::new(edges), channels }
}

pub(crate) async fn poll(shared: Arc<Shared>) {
    let client = livesky_net::http::json_client();
    let url = format!("{}/edges", shared.settings.mc.trim_end_matches('/'));
    let mut tick = tokio::time::interval(shared.settings.poll());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match livesky_net::http::get_json::<EdgesView>(&client, &url, Duration::from_secs(2)).await {
            Ok(v) => {
                if failing {
                    info!(%url, "the management center answers again");
                    failing = false;
                }
                shared.set_view(view_of(v));
            }
            Err(e) => {
                shared.metrics.feed_errors.with_label_values(&[] as &[&str]).inc();
                if !failing {
                    warn!(%url, error = %e, "cannot read edges from the management center; answering from the last view");
                    failing = true;
                }
            }
        }
        if let Some(age) = shared.feed_age() {
            shared.metrics.feed_age.with_label_values(&[] as &[&str]).set(age);
        }
    }
}
