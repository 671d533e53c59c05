//! JSON-lines access logs (nginx `escape=json` templates, Caddy, Traefik).

use serde_json::Value;

/// Which JSON keys hold each field. Each field has candidates tried in order;
/// a dotted name (`request.remote_ip`) walks nested objects, and an array
/// (Caddy's header lists) yields its first element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    pub client: Vec<String>,
    pub time: Vec<String>,
    pub request: Vec<String>,
    pub method: Vec<String>,
    pub uri: Vec<String>,
    pub protocol: Vec<String>,
    pub status: Vec<String>,
    pub bytes: Vec<String>,
    pub referer: Vec<String>,
    pub user_agent: Vec<String>,
    pub host: Vec<String>,
    pub forwarded_for: Vec<String>,
    pub request_time: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Default for JsonFields {
    /// Defaults that fit common nginx `escape=json` templates (named after
    /// the nginx variables), Caddy's structured access log and Traefik's
    /// JSON access log (`ClientHost`, `StartUTC`, `DownstreamStatus`…, with
    /// headers kept as `request_User-Agent`). Traefik's `Duration` is in
    /// nanoseconds and is not read as a request time.
    fn default() -> Self {
        JsonFields {
            client: names(&[
                "remote_addr",
                "request.remote_ip",
                "client_ip",
                "remote_ip",
                "ip",
                "ClientHost",
            ]),
            time: names(&[
                "time_iso8601",
                "time_local",
                "time",
                "ts",
                "timestamp",
                "@timestamp",
                "msec",
                "StartUTC",
                "StartLocal",
            ]),
            request: names(&["request"]),
            method: names(&[
                "request_method",
                "method",
                "request.method",
                "RequestMethod",
            ]),
            uri: names(&["request_uri", "uri", "request.uri", "url", "RequestPath"]),
            protocol: names(&[
                "server_protocol",
                "protocol",
                "request.proto",
                "RequestProtocol",
            ]),
            status: names(&["status", "status_code", "DownstreamStatus"]),
            bytes: names(&[
                "body_bytes_sent",
                "bytes_sent",
                "size",
                "bytes",
                "DownstreamContentSize",
            ]),
            referer: names(&[
                "http_referer",
                "referer",
                "referrer",
                "request.headers.Referer",
                "request_Referer",
            ]),
            user_agent: names(&[
                "http_user_agent",
                "user_agent",
                "request.headers.User-Agent",
                "request_User-Agent",
            ]),
            host: names(&[
                "host",
                "http_host",
                "server_name",
                "request.host",
                "RequestHost",
            ]),
            forwarded_for: names(&[
                "http_x_forwarded_for",
                "request.headers.X-Forwarded-For",
                "request_X-Forwarded-For",
            ]),
            request_time: names(&["request_time", "duration"]),
        }
    }
}

/// The names accepted by `--json-field NAME=KEY`.
pub const FIELD_NAMES: &[&str] = &[
    "client",
    "time",
    "request",
    "method",
    "uri",
    "protocol",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "host",
    "forwarded_for",
    "request_time",
];

/// A `--json-field` name that is not a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown JSON field '{0}' (expected one of {names})", names = FIELD_NAMES.join(", "))]
pub struct UnknownJsonField(pub String);

impl JsonFields {
    /// Points one field at one key, replacing its default candidates.
    pub fn set(&mut self, name: &str, key: &str) -> Result<(), UnknownJsonField> {
        let slot = match name {
            "client" => &mut self.client,
            "time" => &mut self.time,
            "request" => &mut self.request,
            "method" => &mut self.method,
            "uri" => &mut self.uri,
            "protocol" => &mut self.protocol,
            "status" => &mut self.status,
            "bytes" => &mut self.bytes,
            "referer" => &mut self.referer,
            "user_agent" => &mut self.user_agent,
            "host" => &mut self.host,
            "forwarded_for" => &mut self.forwarded_for,
            "request_time" => &mut self.request_time,
            _ => return Err(UnknownJsonField(name.to_string())),
        };
        *slot = vec![key.to_string()];
        Ok(())
    }
}

/// Finds the first candidate key present in `root`.
pub fn lookup<'v>(root: &'v Value, candidates: &[String]) -> Option<&'v Value> {
    candidates.iter().find_map(|key| {
        let v = root.get(key.as_str()).or_else(|| {
            if !key.contains('.') {
                return None;
            }
            key.split('.').try_fold(root, |v, part| v.get(part))
        })?;
        let v = match v {
            Value::Array(items) => items.first()?,
            other => other,
        };
        (!v.is_null()).then_some(v)
    })
}

/// A JSON value as log text; only strings carry text.
pub fn text(v: Option<&Value>) -> &[u8] {
    match v {
        Some(Value::String(s)) => s.as_bytes(),
        _ => b"",
    }
}

/// A JSON number or numeric string as an unsigned integer.
pub fn unsigned(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s == "-" => Some(0),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A JSON duration in seconds (number or string) as microseconds.
pub fn seconds_as_us(v: &Value) -> Option<u64> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    super::time::seconds_to_us(secs)
}

/// A JSON timestamp: epoch number (seconds, fractional, or milliseconds) or
/// any textual layout webfence knows.
pub fn timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // Ten digits of seconds cover 1970..2286; beyond are millis.
                return Some(if i.abs() >= 100_000_000_000 {
                    i
                } else {
                    i.checked_mul(1000)?
                });
            }
            let f = n.as_f64()?;
            (f.is_finite() && f.abs() < 1e12).then(|| (f * 1000.0).round() as i64)
        }
        Value::String(s) => super::time::parse_any(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_and_header_arrays() {
        let v: Value = serde_json::from_str(
            r#"{"request":{"remote_ip":"192.0.2.1","headers":{"User-Agent":["curl/8"]}},"a.b":1}"#,
        )
        .unwrap();
        let f = JsonFields::default();
        assert_eq!(text(lookup(&v, &f.client)), b"192.0.2.1");
        assert_eq!(text(lookup(&v, &f.user_agent)), b"curl/8");
        // A literal dotted key wins over walking.
        assert_eq!(lookup(&v, &["a.b".to_string()]), Some(&Value::from(1)));
        // Caddy's `request` is an object, not a request line.
        assert_eq!(text(lookup(&v, &f.request)), b"");
    }

    #[test]
    fn timestamps_in_every_shape() {
        let t = |s: &str| timestamp(&serde_json::from_str(s).unwrap());
        assert_eq!(t("1700000000"), Some(1_700_000_000_000));
        assert_eq!(t("1700000000.25"), Some(1_700_000_000_250));
        assert_eq!(t("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(t(r#""2023-11-14T22:13:20+00:00""#), Some(1_700_000_000_000));
        assert_eq!(
            t(r#""14/Nov/2023:22:13:20 +0000""#),
            Some(1_700_000_000_000)
        );
        assert_eq!(t("true"), None);
        assert_eq!(t("1e300"), None);
    }

    #[test]
    fn set_rejects_unknown_names() {
        let mut f = JsonFields::default();
        f.set("client", "peer").unwrap();
        assert_eq!(f.client, vec!["peer".to_string()]);
        assert!(
            f.set("nope", "x")
                .unwrap_err()
                .to_string()
                .starts_with("unknown JSON field 'nope' (expected one of client, time, ")
        );
    }
}
