//! The running GSLB: DNS on UDP and TCP, the HTTP fallback, the MC feed and the prefix
//! database watch, sharing one state. Answers read snapshots (`Arc`s swapped under a short
//! lock), so a reload or a feed update never blocks a query for longer than a pointer copy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::feed;
use crate::geo::GeoDb;
use crate::settings::GslbSettings;
use crate::zone::{View, Zone};

#[derive(Debug, thiserror::Error)]
pub enum GslbError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Geo(#[from] crate::geo::GeoError),
    #[error("bad zone: {0}")]
    Zone(String),
}

pub(crate) struct Shared {
    pub settings: GslbSettings,
    pub zone: Zone,
    pub metrics: crate::metrics::GslbMetrics,
    view: RwLock<Arc<View>>,
    geo: RwLock<Arc<GeoDb>>,
    /// When the MC last answered.
    fed_at: Mutex<Option<Instant>>,
    pub cancel: CancellationToken,
}

impl Shared {
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn geo(&self) -> Arc<GeoDb> {
        self.geo.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_view(&self, view: View) {
        self.metrics.edges.with_label_values(&[] as &[&str]).set(view.edges.len() as i64);
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
        *self.fed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Seconds since the MC last answered (None: never).
    pub fn feed_age(&self) -> Option<f64> {
        self.fed_at.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed().as_secs_f64())
    }

    fn new(settings: GslbSettings, geo: GeoDb) -> Result<Arc<Shared>, GslbError> {
        let shared = Arc::new(Shared {
            zone: Zone::new(&settings).map_err(GslbError::Zone)?,
            metrics: crate::metrics::GslbMetrics::new(),
            view: RwLock::new(Arc::new(View::default())),
            geo: RwLock::new(Arc::new(GeoDb::default())),
            fed_at: Mutex::new(None),
            cancel: CancellationToken::new(),
            settings,
        });
        shared.set_geo(geo);
        Ok(shared)
    }

    fn set_geo(&self, db: GeoDb) {
        self.metrics.geo_prefixes.with_label_values(&[] as &[&str]).set(db.len() as i64);
        *self.geo.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(db);
    }
}

/// A running GSLB.
#[derive(Clone)]
pub struct Gslb {
    pub(crate) shared: Arc<Shared>,
    pub dns_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: TaskTracker,
}

impl Gslb {
    /// Loads the prefix database, binds UDP, TCP and HTTP, and starts serving. The MC is polled
    /// from then on; until it first answers, channel queries get SERVFAIL.
    pub async fn start(settings: GslbSettings) -> Result<Gslb, GslbError> {
        Zone::new(&settings).map_err(GslbError::Zone)?;
        let started = Instant::now();
        let db = GeoDb::load(&settings.geo)?;
        info!(path = %settings.geo.display(), prefixes = db.len(), ms = started.elapsed().as_millis() as u64, "prefix database loaded");
        let bind = |addr: SocketAddr| move |source| GslbError::Bind { addr, source };
        let (udp, tcp, dns_addr) = bind_dns(settings.dns_listen).await?;
        let http = TcpListener::bind(settings.http_listen).await.map_err(bind(settings.http_listen))?;
        let http_addr = http.local_addr().map_err(bind(settings.http_listen))?;
        let shared = Shared::new(settings, db)?;
        shared.metrics.geo_reloads.with_label_values(&["ok"]).inc();
        let tasks = TaskTracker::new();
        let mut server = hickory_server::Server::new(crate::dns::Handler(shared.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 32);
        let cancel = shared.cancel.clone();
        tasks.spawn(async move {
            cancel.cancelled().await;
            if let Err(e) = server.shutdown_gracefully().await {
                warn!(error = %e, "DNS server stopped with an error");
            }
        });
        tasks.spawn(feed::poll(shared.clone()));
        tasks.spawn(watch_geo(shared.clone()));
        tasks.spawn(crate::http::serve(shared.clone(), http));
        tasks.close();
        info!(zone = %shared.zone.origin(), dns = %dns_addr, http = %http_addr, "GSLB serving");
        Ok(Gslb { shared, dns_addr, http_addr, tasks })
    }

    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// Waits (bounded) for every task to end after [`Gslb::shutdown`].
    pub async fn stopped(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    /// Live edges as the MC last reported them.
    pub fn edges(&self) -> usize {
        self.shared.view().edges.len()
    }

    pub fn metrics(&self) -> String {
        self.shared.metrics.render()
    }
}

/// The DNS path without sockets: raw query bytes in, raw answer bytes out, through hickory's
/// own request decoder, our handler and hickory's response encoder (UDP size rules). The fuzz
/// target and the in-process benchmark drive exactly what the server runs.
#[derive(Clone)]
pub struct Responder {
    shared: Arc<Shared>,
}

impl Responder {
    pub fn new(settings: GslbSettings, geo: GeoDb, view: View) -> Result<Responder, GslbError> {
        let shared = Shared::new(settings, geo)?;
        shared.set_view(view);
        Ok(Responder { shared })
    }

    /// The answer to `raw` from `src` over UDP; None when the server would not answer (not a
    /// request it can decode; hickory then answers FORMERR itself when it can read the header).
    pub async fn answer(&self, raw: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        use hickory_server::net::runtime::TokioTime;
        use hickory_server::server::RequestHandler;
        let request =
            hickory_server::server::Request::from_bytes(raw.to_vec(), src, hickory_server::net::xfer::Protocol::Udp)
                .ok()?;
        let out = crate::dns::Captured::default();
        crate::dns::Handler(self.shared.clone()).handle_request::<_, TokioTime>(&request, out.clone()).await;
        out.take()
    }

    pub fn metrics(&self) -> String {
        self.shared.metrics.render()
    }
}

/// UDP and TCP on one address. With port 0 the OS picks the UDP port, and TCP takes the same
/// one; if TCP has it in use (the two port spaces are separate), another pair is tried.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), GslbError> {
    let err = |addr: SocketAddr| move |source| GslbError::Bind { addr, source };
    let mut tries = if addr.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(err(addr))?;
        let got = udp.local_addr().map_err(err(addr))?;
        match TcpListener::bind(got).await {
            Ok(tcp) => return Ok((udp, tcp, got)),
            Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => tries -= 1,
            Err(e) => return Err(err(got)(e)),
        }
    }
}

/// What the watch compares: size, modification time and inode. The database may be tens of
/// megabytes, too much to hash every second; operators replace it by rename, which changes the
/// inode even within one clock tick.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

async fn watch_geo(shared: Arc<Shared>) {
    let path = shared.settings.geo.clone();
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_millis(shared.settings.watch_ms.max(10)));
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = stamp(&path);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let p = path.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || GeoDb::load(&p)).await {
            Ok(Ok(db)) => {
                info!(path = %path.display(), prefixes = db.len(), ms = started.elapsed().as_millis() as u64, "prefix database reloaded");
                shared.set_geo(db);
                shared.metrics.geo_reloads.with_label_values(&["ok"]).inc();
            }
            Ok(Err(e)) => {
                warn!(error = %e, "prefix database not reloaded; the previous one stays in use");
                shared.metrics.geo_reloads.with_label_values(&["rejected"]).inc();
            }
            Err(e) => warn!(error = %e, "prefix database load task failed"),
        }
    }
}
