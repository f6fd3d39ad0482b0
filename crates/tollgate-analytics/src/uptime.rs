//! Uptime analytics (`uptime_tests.config.enable_uptime_analytics`): one record per uptime
//! check, in Tyk's `UptimeReportData` shape, for Tyk Pump's uptime pumps.

use std::time::Duration;

use serde::Serialize;

use crate::{Calendar, Timestamp};

/// Tyk's list of uptime records in Redis (`host-checker:` prefix + `tyk-uptime-analytics`).
pub const UPTIME_REDIS_LIST: &str = tollgate_session::keyspace::UPTIME_ANALYTICS_LIST;

/// The status Tyk records for a check that got no HTTP answer (refused, reset, timed out).
pub const TCP_ERROR_CODE: i64 = 521;

/// Tyk keeps an uptime record "forever" (100 years) when the API sets no expiry.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One check's result, as Tyk records it.
#[derive(Debug, Clone, Serialize)]
pub struct UptimeRecord {
    /// The check's URL as written.
    #[serde(rename = "URL")]
    pub url: String,
    /// How long the check took, in milliseconds.
    #[serde(rename = "RequestTime")]
    pub request_time: i64,
    /// The upstream's status, or [`TCP_ERROR_CODE`].
    #[serde(rename = "ResponseCode")]
    pub response_code: i64,
    /// No HTTP answer.
    #[serde(rename = "TCPError")]
    pub tcp_error: bool,
    /// A status above 200.
    #[serde(rename = "ServerError")]
    pub server_error: bool,
    /// The calendar of `timestamp`.
    #[serde(flatten)]
    pub calendar: Calendar,
    /// Minute (UTC).
    #[serde(rename = "Minute")]
    pub minute: i64,
    /// When the check ran.
    #[serde(rename = "TimeStamp")]
    pub timestamp: Timestamp,
    /// When the record may be purged.
    #[serde(rename = "ExpireAt")]
    pub expire_at: Timestamp,
    /// The API whose check it was.
    #[serde(rename = "APIID")]
    pub api_id: String,
    /// Its organisation.
    #[serde(rename = "OrgID")]
    pub org_id: String,
}

impl UptimeRecord {
    /// The record of a check that ran at `at` for `latency`: `status` is the upstream's
    /// answer, `None` when there was none. `expiry` is the API's `expire_utime_after`.
    pub fn new(
        url: &str,
        (api_id, org_id): (&str, &str),
        status: Option<u16>,
        (at, latency): (Timestamp, Duration),
        expiry: Option<Duration>,
    ) -> Self {
        let keep = i64::try_from(expiry.unwrap_or(DEFAULT_EXPIRY).as_secs()).unwrap_or(i64::MAX);
        Self {
            url: url.to_owned(),
            request_time: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
            response_code: status.map_or(TCP_ERROR_CODE, i64::from),
            tcp_error: status.is_none(),
            server_error: status.is_some_and(|s| s > 200),
            calendar: Calendar::utc(at.secs),
            minute: at.secs.rem_euclid(3600) / 60,
            timestamp: at,
            expire_at: Timestamp {
                secs: at.secs.saturating_add(keep),
                nanos: at.nanos,
            },
            api_id: api_id.to_owned(),
            org_id: org_id.to_owned(),
        }
    }

    /// The msgpack bytes Tyk Pump reads.
    ///
    /// # Errors
    /// Encoding failed (it does not for well-formed records).
    pub fn to_msgpack(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(map: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
        map.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {map}"))
    }

    #[test]
    fn records_use_tyks_field_names() {
        // 2024-03-05 14:07:09 UTC.
        let at = Timestamp {
            secs: 1_709_647_629,
            nanos: 5,
        };
        let r = UptimeRecord::new(
            "http://up/health",
            ("api", "org"),
            Some(503),
            (at, Duration::from_millis(12)),
            Some(Duration::from_secs(60)),
        );
        let v = rmpv::decode::read_value(&mut &r.to_msgpack().unwrap()[..]).unwrap();
        assert_eq!(field(&v, "URL").as_str(), Some("http://up/health"));
        assert_eq!(field(&v, "ResponseCode").as_i64(), Some(503));
        assert_eq!(field(&v, "ServerError").as_bool(), Some(true));
        assert_eq!(field(&v, "TCPError").as_bool(), Some(false));
        assert_eq!(field(&v, "RequestTime").as_i64(), Some(12));
        assert_eq!(
            (field(&v, "Year").as_i64(), field(&v, "Month").as_i64()),
            (Some(2024), Some(3))
        );
        assert_eq!(field(&v, "Day").as_i64(), Some(5));
        assert_eq!(field(&v, "Hour").as_i64(), Some(14));
        assert_eq!(field(&v, "Minute").as_i64(), Some(7));
        assert_eq!(field(&v, "APIID").as_str(), Some("api"));
        assert_eq!(field(&v, "OrgID").as_str(), Some("org"));
        assert_eq!(r.expire_at.secs, at.secs + 60);
        let down = UptimeRecord::new("u", ("a", "o"), None, (at, Duration::ZERO), None);
        assert_eq!((down.response_code, down.tcp_error), (521, true));
        assert!(!down.server_error);
        assert!(down.expire_at.secs > at.secs + 99 * 365 * 24 * 3600);
        assert!(
            !UptimeRecord::new("u", ("a", "o"), Some(200), (at, Duration::ZERO), None).server_error
        );
    }
}
