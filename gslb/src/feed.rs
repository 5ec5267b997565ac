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

/// How long the GSLB keeps answering from its last view while the MC names no edge at all.
const EMPTY_GRACE: Duration = Duration::from_secs(20);

/// Whether to keep the last view rather than take the MC's new one: a management center that just
/// restarted knows no SN until they register again (seconds), and answering from its empty view would
/// send SERVFAIL to every viewer. Kept for [`EMPTY_GRACE`] from the first empty answer (`empty_since`).
fn keep_last_view(
    new_is_empty: bool,
    last_has_edges: bool,
    empty_since: &mut Option<std::time::Instant>,
    now: std::time::Instant,
) -> bool {
    if !(new_is_empty && last_has_edges) {
        *empty_since = None;
        return false;
    }
    let since = *empty_since.get_or_insert(now);
    now.saturating_duration_since(since) < EMPTY_GRACE
}

pub(crate) async fn poll(shared: Arc<Shared>) {
    let client = livesky_net::http::json_client();
    let url = format!("{}/edges", shared.settings.mc.trim_end_matches('/'));
    let mut tick = tokio::time::interval(shared.settings.poll());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Since when the MC has named no edge while the last view had some.
    let mut empty_since: Option<std::time::Instant> = None;
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
                let view = view_of(v);
                let now = std::time::Instant::now();
                if keep_last_view(view.edges.is_empty(), !shared.view().edges.is_empty(), &mut empty_since, now) {
                    if empty_since == Some(now) {
                        warn!(%url, "the management center names no edge (restarted?); answering from the last view for up to {} s", EMPTY_GRACE.as_secs());
                    }
                    continue;
                }
                shared.set_view(view);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_view_replaces_a_full_one_only_after_the_grace() {
        let t0 = std::time::Instant::now();
        let mut since = None;
        assert!(keep_last_view(true, true, &mut since, t0), "a restarted MC's empty view is not taken at once");
        assert!(keep_last_view(true, true, &mut since, t0 + Duration::from_secs(19)));
        assert!(!keep_last_view(true, true, &mut since, t0 + EMPTY_GRACE), "edges really gone: taken after the grace");
        let mut since = None;
        assert!(keep_last_view(true, true, &mut since, t0));
        assert!(!keep_last_view(false, true, &mut since, t0 + Duration::from_secs(5)), "edges named again: taken");
        assert_eq!(since, None, "and the grace starts over next time");
        assert!(!keep_last_view(true, false, &mut None, t0), "nothing to keep");
    }
}
