//! Applying the configuration the management center pushes to a running node: channels fed here
//! start, stop or restart; others keep running untouched; parents and peers change for channels
//! opened from then on. Listen addresses are bound at start and change only with a restart.

use std::sync::Arc;

use tracing::{info, warn};

use crate::node::{Node, SourceChannel};
use proto::mc::SnConfig;

impl Node {
    /// Brings the node in line with `cfg` (already validated and applied as a whole).
    pub fn apply_config(&self, cfg: &SnConfig) {
        let me = self.id().clone();
        if cfg.node.http_listen != self.config().http_listen && self.config().http_listen.port() != 0 {
            info!(node = %me, "listen addresses in the pushed config take effect at the next restart");
        }
        self.set_candidates(cfg.node.parents.clone(), cfg.node.peers.clone());
        self.set_catalog(cfg.channels.keys().cloned());
        self.metrics().config_version.with_label_values::<&str>(&[]).set(cfg.version as i64);
        let wanted: Vec<_> = cfg.channels.values().filter(|c| c.origin.as_ref() == Some(&me)).collect();
        for src in self.sources() {
            if !wanted.iter().any(|c| c.id == src.cfg.id) {
                self.remove_source(&src.cfg.id);
            }
        }
        for c in wanted {
            match self.source(&c.id) {
                Some(old) if old.cfg == *c => {}
                // Same feed, other settings (bitrate, stream key): swap them in, no restart.
                Some(old) if old.cfg.source == c.source && old.cfg.signing_key == c.signing_key => {
                    let src = SourceChannel {
                        cfg: c.clone(),
                        signer: old.signer.clone(),
                        hub: old.hub.clone(),
                        stop: old.stop.clone(),
                    };
                    self.replace_source(Arc::new(src));
                    info!(node = %me, channel = %c.id, "channel settings updated");
                }
                existing => {
                    if existing.is_some() {
                        self.remove_source(&c.id);
                    }
                    match self.add_source(c.clone(), None) {
                        Ok(()) => info!(node = %me, channel = %c.id, source = ?c.source, "channel source started"),
                        Err(e) => warn!(node = %me, channel = %c.id, error = %e, "cannot start the channel's source"),
                    }
                }
            }
        }
    }
}
