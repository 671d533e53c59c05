//! Which requests a report counts.

use std::ops::RangeInclusive;

use ipnet::IpNet;

use crate::log::Request;
use crate::log::time::EpochMs;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "invalid --ip '{0}': expected an address or CIDR such as 203.0.113.0/24, optionally prefixed with '!'"
    )]
    Ip(String),
    #[error("invalid --status '{0}': expected a code (404), a class (4xx) or a range (500-599)")]
    Status(String),
    #[error("invalid --path regex '{pattern}': {message}")]
    Path { pattern: String, message: String },
}

/// The request filters of `webfence report`. An empty filter keeps all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive lower bound.
    pub since: Option<EpochMs>,
    /// Exclusive upper bound.
    pub until: Option<EpochMs>,
    include: Vec<IpNet>,
    exclude: Vec<IpNet>,
    statuses: Vec<RangeInclusive<u16>>,
    path: Option<regex::bytes::Regex>,
    hosts: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.include.is_empty()
            && self.exclude.is_empty()
            && self.statuses.is_empty()
            && self.path.is_none()
            && self.hosts.is_empty()
    }

    /// Adds `--ip CIDR` or `--ip '!CIDR'`; a bare address is a /32 or /128.
    pub fn add_ip(&mut self, spec: &str) -> Result<(), FilterError> {
        let (negated, text) = match spec.trim().strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, spec.trim()),
        };
        let net =
            crate::log::proxy::parse_cidr(text).ok_or_else(|| FilterError::Ip(spec.to_string()))?;
        if negated {
            self.exclude.push(net);
        } else {
            self.include.push(net);
        }
        Ok(())
    }

    /// Adds `--status`: `404`, `4xx`, `500-599`, or a comma-separated list.
    pub fn add_status(&mut self, spec: &str) -> Result<(), FilterError> {
        let bad = || FilterError::Status(spec.to_string());
        for part in spec.split(',').map(str::trim) {
            let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=999).contains(c));
            let range =
                if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                    let d: u16 = class
                        .parse()
                        .ok()
                        .filter(|d| (1..=9).contains(d))
                        .ok_or_else(bad)?;
                    d * 100..=d * 100 + 99
                } else if let Some((lo, hi)) = part.split_once('-') {
                    let (lo, hi) = (code(lo).ok_or_else(bad)?, code(hi).ok_or_else(bad)?);
                    if lo > hi {
                        return Err(bad());
                    }
                    lo..=hi
                } else {
                    let c = code(part).ok_or_else(bad)?;
                    c..=c
                };
            self.statuses.push(range);
        }
        Ok(())
    }

    pub fn set_path(&mut self, pattern: &str) -> Result<(), FilterError> {
        let re = regex::bytes::Regex::new(pattern).map_err(|e| FilterError::Path {
            pattern: pattern.to_string(),
            message: e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string(),
        })?;
        self.path = Some(re);
        Ok(())
    }

    /// `--host`: exact (case-insensitive) or `*.example.com`.
    pub fn add_host(&mut self, name: &str) {
        self.hosts.push(name.to_ascii_lowercase());
    }

    pub fn matches(&self, r: &Request<'_>) -> bool {
        if self.since.is_some_and(|s| r.time < s) || self.until.is_some_and(|u| r.time >= u) {
            return false;
        }
        if !self.include.is_empty() && !self.include.iter().any(|n| n.contains(&r.client)) {
            return false;
        }
        if self.exclude.iter().any(|n| n.contains(&r.client)) {
            return false;
        }
        if !self.statuses.is_empty() && !self.statuses.iter().any(|s| s.contains(&r.status)) {
            return false;
        }
        if let Some(re) = &self.path {
            if !re.is_match(r.path) {
                return false;
            }
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| host_matches(h, r.host)) {
            return false;
        }
        true
    }
}

fn host_matches(pattern: &str, host: &[u8]) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
                && host[host.len() - suffix.len() - 1] == b'.'
        }
        None => host.eq_ignore_ascii_case(pattern.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn req(
        ip: &str,
        status: u16,
        path: &'static [u8],
        host: &'static [u8],
        time: i64,
    ) -> Request<'static> {
        let ip: IpAddr = ip.parse().unwrap();
        Request {
            client: ip,
            peer: ip,
            time,
            request: b"",
            method: b"GET",
            path,
            query: b"",
            protocol: b"",
            status,
            bytes: 0,
            referer: b"",
            user_agent: b"",
            host,
            forwarded_for: b"",
            request_time_us: None,
            level: b"",
            message: b"",
        }
    }

    #[test]
    fn ip_include_and_exclude() {
        let mut f = Filter::default();
        f.add_ip("203.0.113.0/24").unwrap();
        f.add_ip("!203.0.113.7").unwrap();
        assert!(f.matches(&req("203.0.113.8", 200, b"/", b"", 0)));
        assert!(!f.matches(&req("203.0.113.7", 200, b"/", b"", 0)));
        assert!(!f.matches(&req("198.51.100.1", 200, b"/", b"", 0)));
        assert_eq!(
            f.add_ip("300.1.1.1"),
            Err(FilterError::Ip("300.1.1.1".into()))
        );
    }

    #[test]
    fn status_specs() {
        let mut f = Filter::default();
        f.add_status("4xx,500-502").unwrap();
        assert!(f.matches(&req("192.0.2.1", 404, b"/", b"", 0)));
        assert!(f.matches(&req("192.0.2.1", 502, b"/", b"", 0)));
        assert!(!f.matches(&req("192.0.2.1", 503, b"/", b"", 0)));
        for bad in ["4yy", "600-500", "", "0xx", "99"] {
            assert!(Filter::default().add_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_bounds_are_half_open() {
        let f = Filter {
            since: Some(10),
            until: Some(20),
            ..Filter::default()
        };
        assert!(!f.matches(&req("192.0.2.1", 200, b"/", b"", 9)));
        assert!(f.matches(&req("192.0.2.1", 200, b"/", b"", 10)));
        assert!(!f.matches(&req("192.0.2.1", 200, b"/", b"", 20)));
    }

    #[test]
    fn path_and_host() {
        let mut f = Filter::default();
        f.set_path("^/api/").unwrap();
        f.add_host("*.Example.com");
        assert!(f.matches(&req("192.0.2.1", 200, b"/api/x", b"shop.example.COM", 0)));
        assert!(!f.matches(&req("192.0.2.1", 200, b"/api/x", b"example.com", 0)));
        assert!(!f.matches(&req("192.0.2.1", 200, b"/api/x", b"badexample.com", 0)));
        assert!(!f.matches(&req("192.0.2.1", 200, b"/x", b"a.example.com", 0)));
        let e = Filter::default().set_path("(").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid --path regex '(': "),
            "{e}"
        );
    }
}
