//! The report store (LiveSky §4.2's log server): edges' per-period summaries in SQLite. A row is
//! keyed by (node, channel, period start), so a report the SN sends again after a lost
//! acknowledgement is stored once. Commits are synchronous: an acknowledged report is on disk.

use std::path::Path;
use std::sync::Mutex;

use proto::NodeId;
use proto::calendar::{civil_from_days, days_from_civil};
use proto::mc::ReportXml;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("report database: {0}")]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    node TEXT NOT NULL,
    channel TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    period_ms INTEGER NOT NULL,
    users INTEGER NOT NULL,
    joins INTEGER NOT NULL,
    leaves INTEGER NOT NULL,
    cdn_bytes INTEGER NOT NULL,
    p2p_bytes INTEGER NOT NULL,
    stalls INTEGER NOT NULL,
    played_ms INTEGER NOT NULL,
    stalled_ms INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    startup_ms TEXT NOT NULL,
    latency TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (node, channel, start_ms)
);
CREATE INDEX IF NOT EXISTS reports_by_channel ON reports (channel, start_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Brings a store written by an older MC up to this schema (columns added since are appended
/// with defaults, so old rows read as "not measured").
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_latency: bool =
        conn.prepare("SELECT 1 FROM pragma_table_info('reports') WHERE name = 'latency'")?.exists([])?;
    if !has_latency {
        conn.execute_batch("ALTER TABLE reports ADD COLUMN latency TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

/// One stored row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub node: String,
    pub channel: String,
    pub start_ms: u64,
    pub period_ms: u64,
    pub users: u64,
    pub joins: u64,
    pub leaves: u64,
    pub cdn_bytes: u64,
    pub p2p_bytes: u64,
    pub stalls: u64,
    pub played_ms: u64,
    pub stalled_ms: u64,
    pub stage: u8,
    /// Startup delays (ms) of the clients that started in the period.
    pub startups: Vec<u32>,
    /// Chunks played in the period by glass-to-glass latency bucket
    /// (`proto::quality::LATENCY_BOUNDS_MS`).
    pub latency: Vec<u64>,
}

impl Row {
    pub fn latency(&self) -> proto::quality::LatencyHistogram {
        let n = self.latency.len().min(proto::quality::LATENCY_BOUNDS_MS.len());
        proto::quality::LatencyHistogram::from_counts(&self.latency[..n]).unwrap_or_default()
    }
}

/// Bytes per channel per edge per hour, for billing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillingRow {
    pub hour_ms: u64,
    pub channel: String,
    pub node: String,
    pub cdn_bytes: u64,
    pub p2p_bytes: u64,
}

pub struct ReportStore {
    conn: Mutex<Connection>,
}

// SQLite stores i64; our counters stay far below 2^63.
fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl ReportStore {
    pub fn open(path: &Path) -> Result<ReportStore, ReportError> {
        let err = |source| ReportError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        Ok(ReportStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `r` from `node`; returns the rows that were new (0 for a report seen before).
    pub fn store(&self, node: &NodeId, r: &ReportXml) -> Result<usize, ReportError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut added = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO reports VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for row in &r.rows {
                added += ins.execute(params![
                    node.as_str(),
                    row.channel,
                    i(r.start_ms),
                    i(r.period_ms),
                    i(row.users),
                    i(row.joins),
                    i(row.leaves),
                    i(row.cdn_bytes),
                    i(row.p2p_bytes),
                    i(row.stalls),
                    i(row.played_ms),
                    i(row.stalled_ms),
                    row.stage,
                    row.startup_ms.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
                    row.latency.iter().map(u64::to_string).collect::<Vec<_>>().join(" "),
                ])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Rows since `since_ms`, of one channel or all, by time then node.
    pub fn rows(&self, channel: Option<&str>, since_ms: u64) -> Result<Vec<Row>, ReportError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT node, channel, start_ms, period_ms, users, joins, leaves, cdn_bytes, p2p_bytes, stalls,
                    played_ms, stalled_ms, stage, startup_ms, latency
             FROM reports WHERE start_ms >= ?1 AND (?2 IS NULL OR channel = ?2)
             ORDER BY start_ms, node, channel",
        )?;
        let rows = q.query_map(params![i(since_ms), channel], |r| {
            let u = |k: usize| r.get::<_, i64>(k).map(|v| v.max(0) as u64);
            Ok(Row {
                node: r.get(0)?,
                channel: r.get(1)?,
                start_ms: u(2)?,
                period_ms: u(3)?,
                users: u(4)?,
                joins: u(5)?,
                leaves: u(6)?,
                cdn_bytes: u(7)?,
                p2p_bytes: u(8)?,
                stalls: u(9)?,
                played_ms: u(10)?,
                stalled_ms: u(11)?,
                stage: r.get(12)?,
                startups: r.get::<_, String>(13)?.split_ascii_whitespace().filter_map(|v| v.parse().ok()).collect(),
                latency: r.get::<_, String>(14)?.split_ascii_whitespace().filter_map(|v| v.parse().ok()).collect(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// CDN and P2P bytes per hour, channel and edge since `since_ms`.
    pub fn billing(&self, since_ms: u64) -> Result<Vec<BillingRow>, ReportError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT (start_ms / 3600000) * 3600000 AS hour, channel, node, SUM(cdn_bytes), SUM(p2p_bytes)
             FROM reports WHERE start_ms >= ?1 GROUP BY hour, channel, node ORDER BY hour, channel, node",
        )?;
        let rows = q.query_map(params![i(since_ms)], |r| {
            Ok(BillingRow {
                hour_ms: r.get::<_, i64>(0)?.max(0) as u64,
                channel: r.get(1)?,
                node: r.get(2)?,
                cdn_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                p2p_bytes: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn meta(&self, key: &str) -> Result<Option<u64>, ReportError> {
        let conn = self.conn();
        let v: Option<i64> =
            conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional()?;
        Ok(v.map(|v| v.max(0) as u64))
    }

    pub fn set_meta(&self, key: &str, value: u64) -> Result<(), ReportError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, i(value)],
        )?;
        Ok(())
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in ms.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses `--since`: `90m`, `2h`, `3d` ago, or `YYYY-MM-DD[THH:MM]` (UTC).
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let ago = |n: &str, unit: u64| n.parse::<u64>().map(|n| now_ms.saturating_sub(n * unit)).ok();
    let rel = match s.char_indices().last() {
        Some((i, 'm')) => ago(&s[..i], 60_000),
        Some((i, 'h')) => ago(&s[..i], 3_600_000),
        Some((i, 'd')) => ago(&s[..i], 86_400_000),
        _ => None,
    };
    if let Some(v) = rel {
        return Ok(v);
    }
    let bad = || format!("`{s}` is not a time: use 90m, 2h, 3d, or YYYY-MM-DD[THH:MM] (UTC)");
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00"));
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ([y, mo, da], [h, mi]) = (d.as_slice(), t.as_slice()) else { return Err(bad()) };
    let (y, mo, da, h, mi) = (num(y)?, num(mo)?, num(da)?, num(h)?, num(mi)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || !(0..24).contains(&h) || !(0..60).contains(&mi) {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, da);
    Ok(((days * 86_400 + h * 3600 + mi * 60) * 1000).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mc::ReportRow;

    fn report(start_ms: u64, cdn: u64) -> ReportXml {
        ReportXml {
            node: NodeId::new("e1").unwrap_or_else(|e| panic!("{e}")),
            id: format!("{start_ms:020}"),
            start_ms,
            period_ms: 60_000,
            rows: vec![
                ReportRow {
                    channel: "demo".into(),
                    cdn_bytes: cdn,
                    p2p_bytes: 5,
                    users: 2,
                    startup_ms: vec![900, 1200].into(),
                    latency: vec![0, 0, 0, 0, 0, 0, 0, 40].into(),
                    ..ReportRow::default()
                },
                ReportRow { channel: "live".into(), cdn_bytes: 1, ..ReportRow::default() },
            ],
        }
    }

    #[test]
    fn a_report_sent_twice_is_stored_once_and_survives_reopening() {
        let path = std::env::temp_dir().join(format!("livesky-reports-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let node = NodeId::new("e1").unwrap_or_else(|e| panic!("{e}"));
        {
            let s = ReportStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.store(&node, &report(3_600_000, 100)).unwrap_or_else(|e| panic!("{e}")), 2);
            assert_eq!(s.store(&node, &report(3_600_000, 100)).unwrap_or_else(|e| panic!("{e}")), 0);
            assert_eq!(s.store(&node, &report(3_660_000, 50)).unwrap_or_else(|e| panic!("{e}")), 2);
            s.set_meta("config_version", 7).unwrap_or_else(|e| panic!("{e}"));
        }
        let s = ReportStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let rows = s.rows(Some("demo"), 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows.iter().map(|r| (r.start_ms, r.cdn_bytes)).collect::<Vec<_>>(),
            [(3_600_000, 100), (3_660_000, 50)]
        );
        assert_eq!(rows[0].startups, [900, 1200], "garbage samples are dropped");
        assert_eq!(rows[0].latency().quantile_ms(0.5), Some(1_875), "40 chunks played 1.75–2 s behind live");
        assert_eq!(s.rows(None, 3_660_000).unwrap_or_else(|e| panic!("{e}")).len(), 2);
        let bill = s.billing(0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            bill[0],
            BillingRow { hour_ms: 3_600_000, channel: "demo".into(), node: "e1".into(), cdn_bytes: 150, p2p_bytes: 10 }
        );
        assert_eq!(s.meta("config_version").unwrap_or_else(|e| panic!("{e}")), Some(7));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_store_from_before_latency_gains_the_column_and_keeps_its_rows() {
        let path = std::env::temp_dir().join(format!("livesky-reports-old-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let old = SCHEMA.replace("    latency TEXT NOT NULL DEFAULT '',\n", "");
            assert!(!old.contains("latency"));
            conn.execute_batch(&old).unwrap_or_else(|e| panic!("{e}"));
            conn.execute(
                "INSERT INTO reports VALUES ('e1', 'demo', 0, 60000, 1, 1, 0, 10, 20, 0, 1000, 0, 2, '700')",
                [],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let s = ReportStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let node = NodeId::new("e1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.store(&node, &report(60_000, 5)).unwrap_or_else(|e| panic!("{e}")), 2);
        let rows = s.rows(Some("demo"), 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].startups.as_slice(), rows[0].latency().total()), (&[700][..], 0), "old row: not measured");
        assert_eq!(rows[1].latency().total(), 40);
        drop(s);
        assert!(ReportStore::open(&path).is_ok(), "migrating twice is harmless");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn times_parse_and_print_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        let t = parse_since("2026-11-23T14:05", 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(utc_time(t), "2026-11-23 14:05:00");
        assert_eq!(utc_time(parse_since("2024-02-29", 0).unwrap_or_else(|e| panic!("{e}"))), "2024-02-29 00:00:00");
        assert_eq!(parse_since("90m", 10_000_000), Ok(10_000_000 - 5_400_000));
        assert_eq!(parse_since("2h", 0), Ok(0));
        for bad in ["", "yesterday", "2026-13-01", "12x", "2026-11-23T25:00"] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
