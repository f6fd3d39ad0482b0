//! Header names the gateway reads or writes, and the header rewriting of forwarding.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// Marks gateway-generated errors, as Tyk does.
pub const X_GENERATOR: HeaderName = HeaderName::from_static("x-generator");
/// Client address chain.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Client address set by a fronting proxy.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// When the API stops being served (Tyk's `expiration`).
pub const X_TYK_API_EXPIRES: HeaderName = HeaderName::from_static("x-tyk-api-expires");
/// Correlates a request across gateway logs and the upstream.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The admin API secret header.
pub const X_TYK_AUTHORIZATION: HeaderName = HeaderName::from_static("x-tyk-authorization");
/// Non-standard hop-by-hop header some clients still send.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Keep-Alive parameters (hop-by-hop).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The values of the `X-RateLimit-*` headers for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `X-RateLimit-Limit`.
    pub limit: i64,
    /// `X-RateLimit-Remaining`.
    pub remaining: i64,
    /// `X-RateLimit-Reset` (Unix seconds).
    pub reset: i64,
}

impl RateHeaders {
    /// Sets the three headers, replacing any the upstream sent.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(self.reset));
    }
}

const HOPS: usize = 8;

/// Headers that describe one hop of a connection and must never be forwarded (RFC 9110 §7.6.1).
/// `Connection` first: [`remove_hop_by_hop`] relies on it.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The trimmed, non-empty items of every `name` header, split at `sep` (a `Connection` list
/// at `,`, cookies at `;`).
pub(crate) fn list_items<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    sep: char,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| v.split(sep))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: the fixed list, every header the `Connection` header names,
/// and `Upgrade` unless this message is an upgrade being tunnelled.
///
/// Runs twice per proxied request, so it looks at the names present once instead of making a
/// hashed lookup per hop-by-hop name: most messages carry none, or only `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = [false; HOPS];
    let mut upgrade = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
    }
    // HOP_BY_HOP[0] is `Connection`.
    if present[0] {
        // Only the named headers present are collected (no allocation for the usual `close`
        // and `keep-alive`); names of the fixed list are removed below anyway.
        let named: Vec<HeaderName> = list_items(headers, &header::CONNECTION, ',')
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
                    && headers.contains_key(*t)
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// An HTTP/2 request names its host in `:authority`, which hyper puts in the URI: give it the
/// `Host` header routing, the admin hostname check and the upstream request read, as an
/// HTTP/1.1 request would have carried.
pub fn host_from_authority<B>(req: &mut http::Request<B>) {
    if req.headers().contains_key(http::header::HOST) {
        return;
    }
    if let Some(host) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
}

/// True when the request asks to switch to WebSocket (`Connection: upgrade` + `Upgrade:
/// websocket`), the one protocol switch the gateway tunnels.
///
/// Any other `Upgrade` (`h2c` above all) is dropped as a hop-by-hop header instead: a tunnel
/// to an upstream that switches to HTTP/2 would let the client send it further requests that
/// no rule of the gateway ever sees ("h2c smuggling").
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    let mut upgrade = list_items(headers, &header::UPGRADE, ',').peekable();
    upgrade.peek().is_some()
        && upgrade.all(|p| p.eq_ignore_ascii_case("websocket"))
        && list_items(headers, &header::CONNECTION, ',').any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// True when the client takes trailers (`TE: trailers`).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    list_items(headers, &header::TE, ',').any(|t| {
        let name = t.split(';').next().unwrap_or(t).trim();
        name.eq_ignore_ascii_case("trailers")
    })
}

/// Appends the client address to `X-Forwarded-For` (joining earlier values with `, `).
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter();
    let Some(first) = existing.next() else {
        headers.insert(X_FORWARDED_FOR, peer.clone());
        return;
    };
    let mut joined = Vec::with_capacity(first.len() + peer.len() + 2);
    joined.extend_from_slice(first.as_bytes());
    for v in existing {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(peer.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn headers_named_by_connection_go_even_when_not_in_the_fixed_list() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive , x-a,x-b"),
        );
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert(
            "close",
            HeaderValue::from_static("kept: an option, not a header"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-length"], "{h:?}");
    }

    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        let with = |connection: &str, upgrade: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONNECTION,
                HeaderValue::from_str(connection).unwrap(),
            );
            h.insert(header::UPGRADE, HeaderValue::from_str(upgrade).unwrap());
            wants_websocket(&h)
        };
        assert!(with("Upgrade", "websocket"));
        assert!(with("keep-alive, upgrade", "WebSocket"));
        assert!(!with("Upgrade, HTTP2-Settings", "h2c"));
        assert!(!with("Upgrade", "websocket, h2c"));
        assert!(!with("Upgrade", ""));
        assert!(!with("keep-alive", "websocket"));
    }

    #[test]
    fn trailers_taken() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        assert!(accepts_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5"));
        assert!(!accepts_trailers(&h));
    }

    #[test]
    fn upgrade_is_kept_for_tunnels() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_websocket(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let peer = HeaderValue::from_static("127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &peer);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        append_forwarded_for(&mut h, &peer);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 127.0.0.1");
    }
}
