//! The prefix database: CIDR → (region, ISP), longest prefix wins, IPv4 and IPv6.
//!
//! Prefixes are flattened at load into sorted, disjoint address ranges, each carrying the
//! location of the longest prefix covering it; a lookup is one binary search (about 20 probes
//! for a million prefixes) with no allocation. Nested prefixes (a /24 inside a /16) are what
//! make the flattening necessary: the /16's range is split around the /24.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// Where a client is, as the operator's database says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub region: String,
    pub isp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read the prefix database {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {what} (expected `cidr,region,isp`, e.g. `198.51.100.0/24,north,telecom`)")]
    Line { path: String, line: usize, what: String },
}

/// An address family's flattened table.
#[derive(Debug, Default)]
struct Table<A> {
    starts: Vec<A>,
    ends: Vec<A>,
    locs: Vec<u32>,
    /// `first[h]`: how many ranges start below the addresses whose top 16 bits are `h`. A
    /// lookup searches only between `first[h]` and `first[h + 1]`: a few entries in cache
    /// instead of twenty probes across megabytes.
    first: Vec<u32>,
}

/// What the table needs of an address type (u32 for IPv4, u128 for IPv6).
trait Addr: Copy + Ord + Default {
    const BITS: u8;
    fn top16(self) -> usize;
    fn range(self, len: u8) -> (Self, Self);
    fn next(self) -> Option<Self>;
    fn prev(self) -> Self;
}

macro_rules! addr_impl {
    ($t:ty) => {
        impl Addr for $t {
            const BITS: u8 = <$t>::BITS as u8;
            fn top16(self) -> usize {
                (self >> (<Self as Addr>::BITS - 16)) as usize
            }
            fn range(self, len: u8) -> (Self, Self) {
                let host: $t = if len == 0 { <$t>::MAX } else { (1 << u32::from(<Self as Addr>::BITS - len)) - 1 };
                (self & !host, self | host)
            }
            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn prev(self) -> Self {
                self - 1
            }
        }
    };
}
addr_impl!(u32);
addr_impl!(u128);

impl<A: Addr> Table<A> {
    /// `prefixes`: (network, length, location index), in file order; a later duplicate wins.
    fn build(mut prefixes: Vec<(A, u8, u32)>) -> Self {
        // Widest first at equal starts, so containers open before what they contain; the sort
        // is stable, so among equal prefixes file order stays and the last one wins below.
        prefixes.sort_by_key(|&(net, len, _)| (net, len));
        let mut t = Table { starts: Vec::new(), ends: Vec::new(), locs: Vec::new(), first: Vec::new() };
        // Open ranges, innermost last: (end, location).
        let mut stack: Vec<(A, u32)> = Vec::new();
        // First address not yet emitted; None once the top of the space is passed.
        let mut cursor = Some(A::default());
        let mut i = 0;
        while i < prefixes.len() {
            let (net, len, _) = prefixes[i];
            // The last of a run of identical prefixes.
            let mut loc = prefixes[i].2;
            while i + 1 < prefixes.len() && (prefixes[i + 1].0, prefixes[i + 1].1) == (net, len) {
                i += 1;
                loc = prefixes[i].2;
            }
            i += 1;
            let (start, end) = net.range(len);
            while let Some(&(top_end, top_loc)) = stack.last() {
                if top_end >= start {
                    break;
                }
                t.emit(&mut cursor, top_end, top_loc);
                stack.pop();
            }
            if let (Some(&(_, top_loc)), Some(c)) = (stack.last(), cursor)
                && c < start
            {
                t.push(c, start.prev(), top_loc);
            }
            cursor = Some(start);
            stack.push((end, loc));
        }
        while let Some((end, loc)) = stack.pop() {
            t.emit(&mut cursor, end, loc);
        }
        t.first = vec![0; (1 << 16) + 1];
        for s in &t.starts {
            t.first[s.top16() + 1] += 1;
        }
        for h in 1..t.first.len() {
            t.first[h] += t.first[h - 1];
        }
        t
    }

    /// Emits `[cursor, end]` for a closing range and moves the cursor past it.
    fn emit(&mut self, cursor: &mut Option<A>, end: A, loc: u32) {
        if let Some(c) = *cursor
            && c <= end
        {
            self.push(c, end, loc);
            *cursor = end.next();
        }
    }

    fn push(&mut self, start: A, end: A, loc: u32) {
        // Adjacent pieces of one location merge (a container split around a same-place child).
        if let (Some(e), Some(&l)) = (self.ends.last_mut(), self.locs.last())
            && l == loc
            && e.next() == Some(start)
        {
            *e = end;
            return;
        }
        self.starts.push(start);
        self.ends.push(end);
        self.locs.push(loc);
    }

    fn get(&self, a: A) -> Option<u32> {
        let h = a.top16();
        let (lo, hi) = (*self.first.get(h)? as usize, *self.first.get(h + 1)? as usize);
        let i = (lo + self.starts.get(lo..hi)?.partition_point(|&s| s <= a)).checked_sub(1)?;
        (a <= self.ends[i]).then(|| self.locs[i])
    }
}

/// The loaded database.
#[derive(Debug, Default)]
pub struct GeoDb {
    v4: Table<u32>,
    v6: Table<u128>,
    locations: Vec<Location>,
    prefixes: usize,
}

impl GeoDb {
    pub fn load(path: &Path) -> Result<GeoDb, GeoError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GeoError::Read { path: name.clone(), source })?;
        Self::parse(&text, &name)
    }

    /// Parses `cidr,region,isp` lines; `#` starts a comment, blank lines are skipped. `origin`
    /// names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<GeoDb, GeoError> {
        let mut interned: HashMap<(&str, &str), u32> = HashMap::new();
        let mut locations = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: String| GeoError::Line { path: origin.to_string(), line: n + 1, what };
            let mut fields = line.split(',').map(str::trim);
            let (Some(cidr), Some(region), Some(isp), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(format!("`{line}` does not have three fields")));
            };
            if region.is_empty() || isp.is_empty() {
                return Err(bad("empty region or ISP".into()));
            }
            let (ip, len) = parse_cidr(cidr).map_err(bad)?;
            let loc = *interned.entry((region, isp)).or_insert_with(|| {
                locations.push(Location { region: region.to_string(), isp: isp.to_string() });
                (locations.len() - 1) as u32
            });
            match ip {
                IpAddr::V4(a) => v4.push((u32::from(a), len, loc)),
                IpAddr::V6(a) => v6.push((u128::from(a), len, loc)),
            }
        }
        let prefixes = v4.len() + v6.len();
        Ok(GeoDb { v4: Table::build(v4), v6: Table::build(v6), locations, prefixes })
    }

    /// The location of the longest prefix holding `ip`. IPv4-mapped IPv6 addresses are looked
    /// up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Location> {
        let loc = match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => self.v6.get(u128::from(a)),
            },
        }?;
        self.locations.get(loc as usize)
    }

    /// Lines loaded.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Disjoint ranges after flattening (what a lookup searches).
    pub fn ranges(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

/// `a.b.c.d/len` or `v6/len`; a bare address is a host prefix. Host bits must be zero, so a
/// typo such as `10.1.2.3/16` is refused rather than silently widened.
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("bad prefix length `/{l}`"))?,
        None => max,
    };
    let host_bits_set = match ip {
        IpAddr::V4(a) => u32::from(a).range(len).0 != u32::from(a),
        IpAddr::V6(a) => u128::from(a).range(len).0 != u128::from(a),
    };
    if host_bits_set {
        return Err(format!("`{s}` has host bits set"));
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests;
