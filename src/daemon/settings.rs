//! `[daemon]` → [`Settings`]: every check serde cannot do, each error
//! located in its file.

use std::path::PathBuf;

use crate::detect::config::{Config, ConfigError, ConfigErrors, RawDaemon, Sp};
use crate::enforce::{BACKENDS, hooks};
use crate::log::{Dialect, FormatSpec, TrustedProxies};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/webfence";
pub const DEFAULT_SOCKET: &str = "/run/webfence/webfence.sock";

#[derive(Debug, Clone)]
pub struct Settings {
    pub logs: Vec<String>,
    pub format: FormatSpec,
    pub proxies: TrustedProxies,
    pub backend: String,
    pub table: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub kill_connections: bool,
    pub on_ban: Option<Vec<String>>,
    pub on_unban: Option<Vec<String>>,
    pub retry_s: u64,
    pub check_every_s: u64,
    /// `[guards.NAME]`, enabled ones.
    pub guards: Vec<crate::detect::guard::Guard>,
    /// `[limits]`, when it sets one.
    pub limits: Option<crate::enforce::limits::Limits>,
    /// `[notify.NAME]` channels.
    pub notify: Vec<crate::notify::channel::ChannelSpec>,
    /// `[metrics] listen`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[web]`, when enabled; served on the metrics listener.
    pub web: Option<super::actions::web::WebSettings>,
    /// `[packets]`, when enabled.
    pub packets: Option<super::detectors::packets::PacketSettings>,
    /// `[farm]`, when set.
    pub farm: Option<super::actions::farm::FarmSettings>,
    /// `[digest.NAME]`.
    pub digests: Vec<super::actions::digest::DigestSpec>,
    /// `[blocklists.NAME]`.
    pub blocklists: Vec<super::actions::blocklists::BlocklistSpec>,
    /// `[crawlers] verify`.
    pub verify_crawlers: bool,
}

impl Settings {
    pub fn compile(config: &Config) -> Result<Settings, ConfigErrors> {
        let d: &RawDaemon = &config.daemon;
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));

        let mut format = FormatSpec::Auto;
        if let Some(f) = &d.format {
            match FormatSpec::from_name(&f.value) {
                Ok(spec) => format = spec,
                Err(e) => err(f.at, e.to_string()),
            }
        }
        for (custom, dialect) in [
            (&d.nginx_format, Dialect::Nginx),
            (&d.apache_format, Dialect::Apache),
        ] {
            if let Some(f) = custom {
                format = FormatSpec::Custom {
                    dialect,
                    format: f.value.clone(),
                    date_format: None,
                    time_format: None,
                };
            }
        }
        if d.nginx_format.is_some() && d.apache_format.is_some() {
            if let Some(f) = &d.apache_format {
                err(f.at, "set nginx_format or apache_format, not both".into());
            }
        }

        let mut nets = Vec::new();
        for p in d.trusted_proxies.iter().flatten() {
            match crate::log::proxy::parse_cidr(&p.value) {
                Some(n) => nets.push(n),
                None => err(
                    p.at,
                    format!(
                        "invalid trusted proxy '{}': expected an address or CIDR such as 10.0.0.0/8",
                        p.value
                    ),
                ),
            }
        }

        let backend = d.backend.as_ref().map_or("nftables", |b| b.value.as_str());
        if let Some(b) = &d.backend {
            if !BACKENDS.contains(&b.value.as_str()) {
                err(
                    b.at,
                    format!(
                        "unknown backend '{}' (expected one of {})",
                        b.value,
                        BACKENDS.join(", ")
                    ),
                );
            }
        }

        let table = d.table.as_ref().map_or("webfence", |t| t.value.as_str());
        if let Some(t) = &d.table {
            let ok = !t.value.is_empty()
                && t.value.len() <= 24
                && t.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                err(
                    t.at,
                    format!(
                        "invalid table name '{}': use up to 24 letters, digits, '-' or '_'",
                        t.value
                    ),
                );
            }
        }

        let mut seconds = |v: &Option<Sp<String>>, name: &str, default: u64| match v {
            None => default,
            Some(r) => match crate::units::parse_duration(&r.value) {
                Ok(0) => {
                    err(r.at, format!("{name} must be at least 1s"));
                    default
                }
                Ok(s) => s,
                Err(e) => {
                    err(r.at, format!("{name}: {e}"));
                    default
                }
            },
        };
        let retry_s = seconds(&d.retry, "retry", 5);
        let check_every_s = seconds(&d.check_every, "check_every", 30);

        let mut hook = |h: &Option<Vec<Sp<String>>>| -> Option<Vec<String>> {
            let h = h.as_ref()?;
            let argv: Vec<String> = h.iter().map(|a| a.value.clone()).collect();
            if argv.first().is_none_or(|p| p.is_empty()) {
                if let Some(first) = h.first() {
                    err(first.at, "a hook needs a program to run".into());
                }
                return None;
            }
            if let Some((i, why)) = hooks::check_argv(&argv) {
                err(h[i].at, why);
                return None;
            }
            Some(argv)
        };
        let on_ban = hook(&d.on_ban);
        let on_unban = hook(&d.on_unban);

        let guards = super::detectors::guards::compile(config, &mut errors);
        let limits = super::actions::limits::compile(config, &mut errors);
        let notify = super::actions::notify::compile(config, &mut errors);
        let channel_names: Vec<String> = notify.iter().map(|c| c.name.clone()).collect();
        let digests = super::actions::digest::compile(config, &channel_names, &mut errors);
        let blocklists = super::actions::blocklists::compile(config, &mut errors);
        let metrics = config.metrics.as_ref().and_then(|(at, m)| {
            let l = m.listen.as_ref()?;
            match l.value.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.push(config.sources.error(
                        l.at,
                        format!("invalid listen address '{}': expected an address and port such as 127.0.0.1:9736", l.value),
                    ));
                    let _ = at;
                    None
                }
            }
        });
        let web = super::actions::web::compile(config, metrics, &mut errors);
        let packets = super::detectors::packets::compile(config, &channel_names, &mut errors);
        let farm = super::actions::farm::compile(config, &mut errors);
        let path = |v: &Option<Sp<String>>, default: &str| match v {
            Some(p) => config.relative_path(p.at, &p.value),
            None => PathBuf::from(default),
        };
        let settings = Settings {
            logs: d.logs.iter().flatten().map(|l| l.value.clone()).collect(),
            format,
            proxies: TrustedProxies::new(nets),
            backend: backend.to_string(),
            table: table.to_string(),
            state_dir: path(&d.state_dir, DEFAULT_STATE_DIR),
            socket: path(&d.socket, DEFAULT_SOCKET),
            kill_connections: d.kill_connections.unwrap_or(false),
            on_ban,
            on_unban,
            retry_s,
            check_every_s,
            guards,
            limits,
            notify,
            metrics,
            web,
            packets,
            farm,
            digests,
            blocklists,
            verify_crawlers: config.crawlers.verify.unwrap_or(true),
        };
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Settings, String> {
        let config =
            Config::from_texts(vec![("t.toml".into(), text.into())]).map_err(|e| e.to_string())?;
        Settings::compile(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_without_a_daemon_section() {
        let s = compile("").unwrap();
        assert_eq!(s.backend, "nftables");
        assert_eq!(s.table, "webfence");
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(s.retry_s, 5);
        assert!(s.logs.is_empty() && s.on_ban.is_none());
    }

    #[test]
    fn every_bad_value_is_located() {
        let e = compile(
            "[daemon]\nbackend = \"iptables\"\nretry = \"soon\"\ntable = \"a b\"\nformat = \"nginx\"\ntrusted_proxies = [\"10.0.0.300\"]\non_ban = [\"sh\", \"-c\", \"echo {reason}\"]\n",
        )
        .unwrap_err();
        for want in [
            "t.toml:2:11: unknown backend 'iptables' (expected one of nftables, ipset, route, none)",
            "t.toml:3:9: retry:",
            "t.toml:4:9: invalid table name 'a b'",
            "t.toml:5:10: unknown format 'nginx'",
            "t.toml:6:20: invalid trusted proxy '10.0.0.300'",
            "t.toml:7:23: the placeholder {reason} would put text from the logs into an argument",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = compile("[daemon]\nlog = [\"/var/log/x\"]\n").unwrap_err();
        assert!(
            e.contains("t.toml:2:1: unknown key 'log' (did you mean 'logs'?)"),
            "{e}"
        );
    }
}
