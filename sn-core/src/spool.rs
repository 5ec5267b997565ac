//! Reports waiting for the management center: one file per report in the SN's spool directory,
//! written atomically (temp file, fsync, rename) and removed only when the MC acknowledges it. An
//! SN that restarts, or an MC that is down for a while, loses nothing; the MC stores each report
//! id once, so a report sent twice is not counted twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use proto::mc::ReportXml;

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// Report ids are digits only (zero-padded period starts): safe as file names, sortable by time.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_digit())
}

impl Spool {
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.xml"))
    }

    pub fn put(&self, r: &ReportXml) -> std::io::Result<()> {
        if !valid_id(&r.id) {
            return Err(std::io::Error::other(format!("report id `{}` is not digits", r.id)));
        }
        let xml = quick_xml::se::to_string(r).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{}.tmp", r.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(xml.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path(&r.id))
    }

    /// Ids waiting, oldest first.
    pub fn pending(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".xml").map(str::to_string))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids
    }

    pub fn load(&self, id: &str) -> Result<ReportXml, String> {
        let text = std::fs::read_to_string(self.path(id)).map_err(|e| e.to_string())?;
        quick_xml::de::from_str(&text).map_err(|e| e.to_string())
    }

    /// Moves an unreadable report aside (kept for a human, never resent).
    pub fn quarantine(&self, id: &str) {
        let _ = std::fs::rename(self.path(id), self.dir.join(format!("{id}.bad")));
    }

    pub fn remove(&self, id: &str) {
        if valid_id(id) {
            let _ = std::fs::remove_file(self.path(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_wait_in_order_until_removed_and_ids_cannot_escape() {
        let dir = std::env::temp_dir().join(format!("livesky-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Spool::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let node = proto::NodeId::new("e1").unwrap_or_else(|e| panic!("{e}"));
        for start in [3u64, 1, 2] {
            let r = ReportXml {
                node: node.clone(),
                id: format!("{start:020}"),
                start_ms: start,
                period_ms: 1,
                rows: vec![],
            };
            s.put(&r).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(s.pending(), [1, 2, 3].map(|i: u64| format!("{i:020}")));
        assert_eq!(s.load(&format!("{:020}", 2)).map(|r| r.start_ms), Ok(2));
        s.remove(&format!("{:020}", 1));
        s.remove("../../etc/passwd");
        assert_eq!(s.pending().len(), 2);
        let bad = ReportXml { node, id: "../x".into(), start_ms: 0, period_ms: 1, rows: vec![] };
        assert!(s.put(&bad).is_err());
        std::fs::write(dir.join(format!("{:020}.xml", 9)), "not xml").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.load(&format!("{:020}", 9)).is_err());
        s.quarantine(&format!("{:020}", 9));
        assert_eq!(s.pending().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
