//! Tyk's IP allow- and block-lists (`allowed_ips`, `blacklisted_ips`): the first stage of the
//! chain, before the body limit and auth, as Tyk's IP middleware runs before auth.
//!
//! The lists themselves are parsed and validated when the definition loads
//! ([`tollgate_definitions::IpList`]); this stage picks the client's address the way Tyk does
//! behind a proxy and refuses with 403 `access from this IP has been disallowed`:
//!
//! 1. `X-Real-IP`, when it parses as an IP address;
//! 2. else the `X-Forwarded-For` entry chosen by `http_server_options.xff_depth` (0 = the
//!    first, n = the n-th from the right), when it exists and parses;
//! 3. else the socket peer.
//!
//! A gateway reachable directly lets its clients choose those headers: operators strip them at
//! their edge, as with Tyk.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use tollgate_definitions::{ApiSpec, IpList};

use crate::ctx::StageRequest;
use crate::headers::{X_FORWARDED_FOR, X_REAL_IP};
use crate::refusal::{Refusal, RefusalKind};

/// The IP lists of one API.
#[derive(Debug)]
pub(crate) struct IpRules {
    allow: Option<Arc<IpList>>,
    block: Option<Arc<IpList>>,
    xff_depth: usize,
}

impl IpRules {
    /// The stage for `spec`, or `None` when neither list is enforced.
    pub(crate) fn compile(spec: &ApiSpec, xff_depth: usize) -> Option<Self> {
        (spec.allowed_ips.is_some() || spec.blacklisted_ips.is_some()).then(|| Self {
            allow: spec.allowed_ips.clone(),
            block: spec.blacklisted_ips.clone(),
            xff_depth,
        })
    }

    /// Refuses a client outside the allow-list or inside the block-list.
    pub(crate) fn on_request(&self, req: &StageRequest<'_>) -> Result<(), Refusal> {
        let ip = client_ip(&req.head.headers, req.peer, self.xff_depth);
        if self.allow.as_ref().is_some_and(|l| !l.contains(ip))
            || self.block.as_ref().is_some_and(|l| l.contains(ip))
        {
            return Err(RefusalKind::IpDisallowed.into());
        }
        Ok(())
    }
}

/// The client's address as Tyk reads it (see the module docs). Only the first value of each
/// header counts, as in Go's `Header.Get`.
pub(crate) fn client_ip(headers: &HeaderMap, peer: IpAddr, xff_depth: usize) -> IpAddr {
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok();
    if let Some(ip) = headers
        .get(X_REAL_IP)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
    {
        return ip;
    }
    if let Some(xff) = headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        let entry = if xff_depth == 0 {
            xff.split(',').next()
        } else {
            xff.rsplit(',').nth(xff_depth - 1)
        };
        if let Some(ip) = entry.and_then(parse) {
            return ip;
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const PEER: &str = "192.0.2.7";

    /// Request headers, `xff_depth`, the address expected.
    type Case<'a> = (&'a [(&'a str, &'a str)], usize, &'a str);

    fn pick(headers: &[(&str, &str)], depth: usize) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        client_ip(&map, PEER.parse().unwrap(), depth).to_string()
    }

    #[test]
    fn client_ip_follows_tyks_order() {
        let xff = ("X-Forwarded-For", "5.6.7.8, 10.0.0.1, 10.0.0.2");
        let table: &[Case<'_>] = &[
            (&[], 0, PEER),
            (&[("X-Real-IP", "1.2.3.4")], 0, "1.2.3.4"),
            (&[("X-Real-IP", " 2001:db8::1 ")], 0, "2001:db8::1"),
            (&[("X-Real-IP", "1.2.3.4"), xff], 0, "1.2.3.4"),
            // An unparsable X-Real-IP falls through to X-Forwarded-For, then the peer.
            (&[("X-Real-IP", "bob"), xff], 0, "5.6.7.8"),
            (&[("X-Real-IP", "bob")], 0, PEER),
            (&[xff], 0, "5.6.7.8"),
            (&[xff], 1, "10.0.0.2"),
            (&[xff], 2, "10.0.0.1"),
            (&[xff], 3, "5.6.7.8"),
            (&[xff], 4, PEER),
            (&[("X-Forwarded-For", "5.6.7.8")], 1, "5.6.7.8"),
            (&[("X-Forwarded-For", "proxy-a, 5.6.7.8")], 0, PEER),
            (&[("X-Forwarded-For", "")], 0, PEER),
            // Only the first header counts.
            (
                &[
                    ("X-Forwarded-For", "5.6.7.8"),
                    ("X-Forwarded-For", "9.9.9.9"),
                ],
                1,
                "5.6.7.8",
            ),
        ];
        for (headers, depth, want) in table {
            assert_eq!(pick(headers, *depth), *want, "{headers:?} depth {depth}");
        }
    }
}
