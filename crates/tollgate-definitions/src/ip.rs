//! IP allow- and block-list entries (Tyk's `allowed_ips` / `blacklisted_ips`), parsed once
//! when a definition loads into a matcher that allocates nothing per request.
//!
//! An entry is a single IPv4 or IPv6 address or a CIDR (`10.0.0.0/8`, `2001:db8::/32`).
//! Tyk silently ignores an entry it cannot parse; Tollgate refuses the definition instead,
//! naming the entry (`allowed_ips[2]`), so a typo never opens an allow-list's API wider (or a
//! block-list's narrower) than written. IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`), both as
//! entries and as clients, count as IPv4, as in Go's `net` package.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::DefinitionError;

/// One IPv4 network: address bits already masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V4Net {
    addr: u32,
    mask: u32,
}

/// One IPv6 network: address bits already masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V6Net {
    addr: u128,
    mask: u128,
}

/// A compiled list of addresses and networks, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    v4: Box<[V4Net]>,
    v6: Box<[V6Net]>,
}

const fn mask4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

const fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

/// An address or network parsed from one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4(V4Net),
    V6(V6Net),
}

fn v4(addr: Ipv4Addr, prefix: u8) -> Net {
    let mask = mask4(prefix);
    Net::V4(V4Net {
        addr: u32::from(addr) & mask,
        mask,
    })
}

/// Parses `1.2.3.4`, `1.2.3.0/24`, `::1`, `2001:db8::/32`; `None` when it is neither.
fn parse_entry(text: &str) -> Option<Net> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => {
            // Digits only: `u8::from_str` would also take `+8`.
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?))
        }
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    match addr {
        IpAddr::V4(a) => {
            let prefix = prefix.unwrap_or(32);
            (prefix <= 32).then(|| v4(a, prefix))
        }
        IpAddr::V6(a) => {
            let prefix = prefix.unwrap_or(128);
            if prefix > 128 {
                return None;
            }
            match a.to_ipv4_mapped() {
                // Go treats a mapped address as IPv4 (its prefix counts within the last 32 bits).
                Some(m) if prefix >= 96 => Some(v4(m, prefix - 96)),
                _ => {
                    let mask = mask6(prefix);
                    Some(Net::V6(V6Net {
                        addr: u128::from(a) & mask,
                        mask,
                    }))
                }
            }
        }
    }
}

impl IpList {
    /// Compiles the raw JSON list of definition field `field`.
    ///
    /// # Errors
    /// The first entry that is not an address or CIDR (`allowed_ips[2]`), or a value that is
    /// not a list of strings.
    pub fn from_json(field: &str, raw: &Value) -> Result<Self, DefinitionError> {
        let Value::Array(entries) = raw else {
            return Err(DefinitionError::new(field, "must be a list of strings"));
        };
        let mut v4s = Vec::new();
        let mut v6s = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = || format!("{field}[{i}]");
            let Value::String(text) = entry else {
                return Err(DefinitionError::new(at(), "must be a string"));
            };
            match parse_entry(text) {
                Some(Net::V4(n)) => v4s.push(n),
                Some(Net::V6(n)) => v6s.push(n),
                None => {
                    return Err(DefinitionError::new(
                        at(),
                        format!("not an IP address or CIDR: {text}"),
                    ));
                }
            }
        }
        Ok(Self {
            v4: v4s.into_boxed_slice(),
            v6: v6s.into_boxed_slice(),
        })
    }

    /// Whether `ip` is one of the addresses or inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.contains_v4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => self.contains_v4(m),
                None => self.contains_v6(a),
            },
        }
    }

    fn contains_v4(&self, a: Ipv4Addr) -> bool {
        let bits = u32::from(a);
        self.v4.iter().any(|n| bits & n.mask == n.addr)
    }

    fn contains_v6(&self, a: Ipv6Addr) -> bool {
        let bits = u128::from(a);
        self.v6.iter().any(|n| bits & n.mask == n.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(entries: &[&str]) -> IpList {
        IpList::from_json("allowed_ips", &json!(entries)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(addr: u32, mask: u32) -> Option<Net> {
        Some(Net::V4(V4Net { addr, mask }))
    }

    fn v6(addr: u128, mask: u128) -> Option<Net> {
        Some(Net::V6(V6Net { addr, mask }))
    }

    #[test]
    fn parses_addresses_and_cidrs() {
        let table: &[(&str, Option<Net>)] = &[
            ("10.1.2.3", v4(0x0a01_0203, u32::MAX)),
            ("10.1.2.3/8", v4(0x0a00_0000, 0xff00_0000)),
            ("10.1.2.3/32", v4(0x0a01_0203, u32::MAX)),
            ("1.2.3.4/0", v4(0, 0)),
            (" 127.0.0.1 ", v4(0x7f00_0001, u32::MAX)),
            ("::1", v6(1, u128::MAX)),
            ("::1/128", v6(1, u128::MAX)),
            ("2001:db8::1/32", v6(0x2001_0db8 << 96, u128::MAX << 96)),
            ("::/0", v6(0, 0)),
            ("::ffff:1.2.3.4", v4(0x0102_0304, u32::MAX)),
            ("::ffff:1.2.3.0/120", v4(0x0102_0300, 0xffff_ff00)),
            ("bob", None),
            ("", None),
            ("10.0.0.300", None),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/-1", None),
            ("10.0.0.0/8/8", None),
            ("10.0.0.0/x", None),
            ("10.0.0.0/0008", None),
            ("bob/8", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_entry(text), *want, "{text:?}");
        }
    }

    #[test]
    fn a_bad_entry_names_its_index() {
        let err = IpList::from_json("allowed_ips", &json!(["127.0.0.1", "10.0.0.0/8", "bob"]))
            .unwrap_err();
        assert_eq!(err.field, "allowed_ips[2]");
        assert_eq!(err.message, "not an IP address or CIDR: bob");
        let err = IpList::from_json("blacklisted_ips", &json!(["1.2.3.4/40"])).unwrap_err();
        assert_eq!(err.field, "blacklisted_ips[0]");
        let err = IpList::from_json("blacklisted_ips", &json!([1])).unwrap_err();
        assert_eq!(err.field, "blacklisted_ips[0]");
        let err = IpList::from_json("blacklisted_ips", &json!("1.2.3.4")).unwrap_err();
        assert_eq!(err.field, "blacklisted_ips");
    }

    #[test]
    fn matches_addresses_networks_and_mapped_v4() {
        let l = list(&["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "::1"]);
        for yes in [
            "127.0.0.1",
            "10.0.0.0",
            "10.255.255.255",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "2001:db8::1",
            "2001:db8:ffff::",
            "::1",
        ] {
            assert!(l.contains(ip(yes)), "{yes}");
        }
        for no in [
            "127.0.0.2",
            "11.0.0.0",
            "9.255.255.255",
            "::ffff:11.0.0.1",
            "2001:db9::",
            "::2",
            // A v4 entry does not match an IPv6 address that merely ends in the same bits.
            "::10.1.2.3",
        ] {
            assert!(!l.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn zero_prefixes_match_their_whole_family() {
        let l = list(&["0.0.0.0/0"]);
        assert!(l.contains(ip("203.0.113.9")));
        assert!(l.contains(ip("::ffff:203.0.113.9")));
        assert!(!l.contains(ip("2001:db8::1")));
        let l = list(&["::/0"]);
        assert!(l.contains(ip("2001:db8::1")));
        assert!(!l.contains(ip("203.0.113.9")));
        assert!(!list(&[]).contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_entry_matches_plain_v4_client() {
        let l = list(&["::ffff:192.168.0.0/112"]);
        assert!(l.contains(ip("192.168.4.5")));
        assert!(!l.contains(ip("192.169.0.1")));
    }
}
