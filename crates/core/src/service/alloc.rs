//! The pools Service cluster IPs and node ports come from, with the rules of kube-apiserver's
//! allocators: which addresses of `--service-cluster-ip-range` are usable, the range size limit
//! for IPv6, and the "static band" at the start of each range that random allocation leaves for
//! explicit requests while the rest has room (KEP-3070 for IPs, KEP-3668 for node ports).
//!
//! Pure data: the caller keeps a pool behind its lock and passes the randomness in.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a requested address or port cannot be had, or why none is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// Outside the configured range (or one of its unusable addresses).
    NotInRange,
    /// Held by another Service.
    Allocated,
    /// Every slot is taken.
    Full,
}

/// `size` numbered slots, of which the first `static_band` are handed out at random only when
/// every other slot is taken.
#[derive(Debug, Clone)]
pub struct Pool {
    size: u128,
    static_band: u128,
    used: BTreeSet<u128>,
}

impl Pool {
    pub fn new(size: u128, static_band: u128) -> Pool {
        Pool {
            size,
            static_band: static_band.min(size),
            used: BTreeSet::new(),
        }
    }

    /// Takes one given slot.
    pub fn allocate(&mut self, slot: u128) -> Result<(), AllocError> {
        if slot >= self.size {
            return Err(AllocError::NotInRange);
        }
        if !self.used.insert(slot) {
            return Err(AllocError::Allocated);
        }
        Ok(())
    }

    /// Takes a free slot: a random one above the static band, else a random one inside it.
    /// `random` is any random number; the search probes forward from it.
    pub fn allocate_next(&mut self, random: u64) -> Result<u128, AllocError> {
        let upper = self.size - self.static_band;
        let pick = self
            .probe(self.static_band, upper, u128::from(random))
            .or_else(|| self.probe(0, self.static_band, u128::from(random.rotate_left(32))))
            .ok_or(AllocError::Full)?;
        self.used.insert(pick);
        Ok(pick)
    }

    /// The first free slot of `[start, start + len)` at or after a random point, wrapping.
    fn probe(&self, start: u128, len: u128, random: u128) -> Option<u128> {
        if len == 0 {
            return None;
        }
        let first = random % len;
        // Free slots after the random point, then from the start of the band.
        let after = (first..len).find(|i| !self.used.contains(&(start + i)));
        after
            .or_else(|| (0..first).find(|i| !self.used.contains(&(start + i))))
            .map(|i| start + i)
    }

    /// Gives a slot back; false if it was not taken.
    pub fn release(&mut self, slot: u128) -> bool {
        self.used.remove(&slot)
    }

    pub fn is_used(&self, slot: u128) -> bool {
        self.used.contains(&slot)
    }

    pub fn used(&self) -> usize {
        self.used.len()
    }

    pub fn size(&self) -> u128 {
        self.size
    }
}

/// `min(max(lo, size / step), hi)`, or 0 for ranges of at most `lo` entries: the size of a
/// range's static band.
fn static_band(size: u128, lo: u128, hi: u128, step: u128) -> u128 {
    if size <= lo {
        return 0;
    }
    (size / step).clamp(lo, hi)
}

/// An IPv6 range is limited to its first 65536 addresses, as upstream's bitmap is.
const MAX_IPV6_SLOTS: u128 = 65536;

/// `--service-cluster-ip-range`: a CIDR. Slot 0 is the address after the network address (the
/// `kubernetes` Service's); an IPv4 range's broadcast address is never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn new(ip: IpAddr, prefix: u8) -> Result<IpRange, String> {
        let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
        if u32::from(prefix) > bits {
            return Err(format!("invalid CIDR address: {ip}/{prefix}"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (bits - u32::from(prefix))
        };
        let network = from_num(to_num(ip) & mask & width_mask(ip), ip.is_ipv4());
        Ok(IpRange { network, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// `IPv4` or `IPv6`, as Services name families.
    pub fn family(&self) -> &'static str {
        if self.is_ipv4() { "IPv4" } else { "IPv6" }
    }

    fn host_bits(&self) -> u32 {
        let bits = if self.is_ipv4() { 32 } else { 128 };
        bits - u32::from(self.prefix)
    }

    /// Every address of the CIDR (saturating at `u128::MAX` for a /0 IPv6 range).
    fn cidr_size(&self) -> u128 {
        1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX)
    }

    /// How many addresses may be allocated.
    pub fn slots(&self) -> u128 {
        if self.is_ipv4() {
            self.cidr_size().saturating_sub(2)
        } else {
            self.cidr_size().min(MAX_IPV6_SLOTS).saturating_sub(1)
        }
    }

    /// The static band: `min(max(16, size/16), 256)` addresses.
    pub fn static_band(&self) -> u128 {
        static_band(self.cidr_size(), 16, 256, 16)
    }

    /// An empty pool over this range.
    pub fn pool(&self) -> Pool {
        Pool::new(self.slots(), self.static_band())
    }

    /// The slot of `ip`, or None when it is not an allocatable address of the range.
    pub fn slot_of(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv4() != self.is_ipv4() {
            return None;
        }
        let base = to_num(self.network) + 1;
        let n = to_num(ip);
        (n >= base && n - base < self.slots()).then(|| n - base)
    }

    /// The address of a slot.
    pub fn ip_at(&self, slot: u128) -> IpAddr {
        from_num(to_num(self.network) + 1 + slot, self.is_ipv4())
    }

    /// The first usable address: the `kubernetes` Service's cluster IP.
    pub fn first(&self) -> IpAddr {
        self.ip_at(0)
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<IpRange, String> {
        let bad = || format!("invalid CIDR address: {s}");
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        IpRange::new(ip, prefix)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn width_mask(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_num(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// `--service-node-port-range`: `30000-32767` (both ends included), or a single port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    base: u16,
    size: u32,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<PortRange, String> {
        if last < first {
            return Err(format!("invalid port range {first}-{last}"));
        }
        Ok(PortRange {
            base: first,
            size: u32::from(last - first) + 1,
        })
    }

    pub fn contains(&self, port: i64) -> bool {
        self.slot_of(port).is_some()
    }

    pub fn slot_of(&self, port: i64) -> Option<u128> {
        let off = port - i64::from(self.base);
        (off >= 0 && off < i64::from(self.size)).then_some(off as u128)
    }

    pub fn port_at(&self, slot: u128) -> u16 {
        self.base + slot as u16
    }

    /// The static band: `min(max(16, size/32), 128)` ports.
    pub fn static_band(&self) -> u128 {
        static_band(u128::from(self.size), 16, 128, 32)
    }

    pub fn pool(&self) -> Pool {
        Pool::new(u128::from(self.size), self.static_band())
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<PortRange, String> {
        let bad = || format!("unable to parse port range: {s}");
        let s = s.trim();
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 {
            return Err(bad());
        }
        PortRange::new(lo, hi)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base, u32::from(self.base) + self.size - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_ip_range() {
        let r: IpRange = "10.96.0.0/12".parse().unwrap();
        assert_eq!(r.to_string(), "10.96.0.0/12");
        assert_eq!(r.first().to_string(), "10.96.0.1");
        assert_eq!(r.family(), "IPv4");
        assert_eq!(r.slots(), (1 << 20) - 2);
        assert_eq!(r.static_band(), 256);
        assert_eq!(r.slot_of("10.96.0.1".parse().unwrap()), Some(0));
        assert_eq!(r.slot_of("10.96.0.0".parse().unwrap()), None);
        assert_eq!(r.slot_of("10.111.255.255".parse().unwrap()), None);
        assert_eq!(
            r.slot_of("10.111.255.254".parse().unwrap()),
            Some(r.slots() - 1)
        );
        assert_eq!(r.slot_of("10.0.0.1".parse().unwrap()), None);
        assert_eq!(r.slot_of("fd00::1".parse().unwrap()), None);
        assert_eq!(r.ip_at(9).to_string(), "10.96.0.10");
        // Host bits are masked, as Go's ParseCIDR does.
        assert_eq!(
            "10.96.3.4/12".parse::<IpRange>().unwrap().to_string(),
            "10.96.0.0/12"
        );
        assert!("10.96.0.0".parse::<IpRange>().is_err());
        assert!("10.96.0.0/33".parse::<IpRange>().is_err());
    }

    #[test]
    fn small_and_ipv6_ranges() {
        let r: IpRange = "10.0.0.0/28".parse().unwrap();
        assert_eq!((r.slots(), r.static_band()), (14, 0));
        let r: IpRange = "10.0.0.0/24".parse().unwrap();
        assert_eq!((r.slots(), r.static_band()), (254, 16));
        let r: IpRange = "fd00:10:96::/112".parse().unwrap();
        assert_eq!(r.family(), "IPv6");
        assert_eq!(r.slots(), 65535);
        assert_eq!(r.first().to_string(), "fd00:10:96::1");
        let big: IpRange = "fd00::/64".parse().unwrap();
        assert_eq!(big.slots(), 65535);
        assert_eq!(big.static_band(), 256);
    }

    #[test]
    fn node_port_range() {
        let p: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(p.to_string(), "30000-32767");
        assert_eq!(p.static_band(), 86);
        assert!(p.contains(30000) && p.contains(32767));
        assert!(!p.contains(29999) && !p.contains(32768) && !p.contains(80));
        assert_eq!(p.port_at(p.slot_of(31234).unwrap()), 31234);
        assert_eq!(
            "8080".parse::<PortRange>().unwrap().to_string(),
            "8080-8080"
        );
        assert!("2-1".parse::<PortRange>().is_err());
        assert!("x-1".parse::<PortRange>().is_err());
    }

    #[test]
    fn random_allocation_prefers_the_upper_band() {
        let mut pool = Pool::new(40, 16);
        for r in 0..24u64 {
            let slot = pool.allocate_next(r * 7919).unwrap();
            assert!(slot >= 16, "slot {slot} in the static band");
        }
        // The upper band is full: the static band is used next.
        let slot = pool.allocate_next(3).unwrap();
        assert!(slot < 16);
        assert_eq!(pool.allocate(slot), Err(AllocError::Allocated));
        assert_eq!(pool.allocate(40), Err(AllocError::NotInRange));
        for r in 0..15u64 {
            pool.allocate_next(r).unwrap();
        }
        assert_eq!(pool.used(), 40);
        assert_eq!(pool.allocate_next(1), Err(AllocError::Full));
        assert!(pool.release(slot));
        assert!(!pool.release(slot));
        assert_eq!(pool.allocate_next(99).unwrap(), slot);
    }

    #[test]
    fn explicit_requests_and_release() {
        let mut pool = Pool::new(10, 0);
        assert_eq!(pool.allocate(3), Ok(()));
        assert!(pool.is_used(3));
        assert_eq!(pool.allocate(3), Err(AllocError::Allocated));
        pool.release(3);
        assert_eq!(pool.allocate(3), Ok(()));
        // A pool of nothing is always full.
        assert_eq!(Pool::new(0, 0).allocate_next(5), Err(AllocError::Full));
    }
}
