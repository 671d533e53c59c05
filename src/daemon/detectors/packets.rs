//! `[packets]` compiled (the source's schedule, interface and local
//! networks), its status, and the "LAN abusers" list. The rules over its
//! counts are `kind = "packets"` rules (`detect/packetrules.rs`).

use ipnet::IpNet;
use serde::Serialize;

use crate::detect::config::{Config, ConfigError};
use crate::source::packets::bpf::{MAX_SKIPPED, Skip};
use crate::stats::lan::LocalRow;

#[derive(Debug, Clone, PartialEq)]
pub struct PacketSettings {
    /// None: the default route's interface, found when a sample starts.
    pub interface: Option<String>,
    /// Empty: the private ranges.
    pub locals: Vec<IpNet>,
    pub sample_s: u64,
    pub every_s: u64,
    pub skip: Skip,
    pub report_to: Vec<String>,
    pub report_over: u64,
}

/// `[packets]` checked; `None` when disabled.
pub fn compile(
    config: &Config,
    channels: &[String],
    errors: &mut Vec<ConfigError>,
) -> Option<PacketSettings> {
    let (at, p) = config.packets.as_ref()?;
    if p.enabled != Some(true) {
        return None;
    }
    let before = errors.len();
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    // The error names the value already: prefixed with the setting, as
    // every other section says it (it once said the value twice).
    let duration =
        |what: &str,
         v: &Option<crate::detect::config::Sp<String>>,
         default: u64,
         err: &mut dyn FnMut(crate::detect::config::Origin, String)| match v {
            Some(d) => crate::units::parse_duration(&d.value).unwrap_or_else(|e| {
                err(d.at, format!("{what}: {e}"));
                default
            }),
            None => default,
        };
    let sample_s = duration("sample", &p.sample, 10, &mut err).max(1);
    let every_s = duration("every", &p.every, 300, &mut err).max(1);
    if every_s < sample_s {
        err(
            *at,
            format!(
                "[packets] every ({every_s} s) is shorter than sample ({sample_s} s): a sample cannot start before the last one ends"
            ),
        );
    }
    let mut locals = Vec::new();
    for l in p.local.iter().flatten() {
        match l
            .value
            .parse::<IpNet>()
            .or_else(|_| l.value.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => locals.push(n),
            Err(_) => err(
                l.at,
                format!(
                    "invalid local network '{}': expected a CIDR such as 192.168.1.0/24",
                    l.value
                ),
            ),
        }
    }
    let mut skip = Skip::default();
    if let Some(t) = &p.skip_tcp {
        skip.tcp = t.clone();
    }
    if let Some(u) = &p.skip_udp {
        skip.udp = u.clone();
    }
    if skip.tcp.len() > MAX_SKIPPED || skip.udp.len() > MAX_SKIPPED {
        err(
            *at,
            format!("[packets] skips at most {MAX_SKIPPED} ports per protocol"),
        );
    }
    let mut report_to = Vec::new();
    for c in p.report_to.iter().flatten() {
        if channels.contains(&c.value) {
            report_to.push(c.value.clone());
        } else {
            err(
                c.at,
                format!(
                    "no [notify.{}] channel to report to (channels: {})",
                    c.value,
                    channels.join(", ")
                ),
            );
        }
    }
    (errors.len() == before).then_some(PacketSettings {
        interface: p.interface.as_ref().map(|i| i.value.clone()),
        locals,
        sample_s,
        every_s,
        skip,
        report_to,
        report_over: p.report_over.unwrap_or(100),
    })
}

/// What the daemon shows of the packet source in `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PacketStatus {
    pub interface: String,
    pub last_sample_ms: Option<i64>,
    pub samples: u64,
    pub packets: u64,
    pub kernel_dropped: u64,
    /// The last sample's busiest local addresses by BitTorrent packets.
    pub top: Vec<LocalRow>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
}

/// The "LAN abusers" list: addresses with `over` BitTorrent packets or
/// more, as text.
pub fn abusers_text(
    rows: &[LocalRow],
    over: u64,
    interface: &str,
    sample_s: u64,
) -> Option<String> {
    let listed: Vec<&LocalRow> = rows.iter().filter(|r| r.p2p_packets >= over).collect();
    if listed.is_empty() {
        return None;
    }
    let mut t = format!("BitTorrent on {interface} in a {sample_s} s sample:\n");
    for r in listed {
        t.push_str(&format!(
            "  {}: {} packets ({} bittorrent, {} utp, {} dht, {} tracker), {} remote peers, {} packets in all\n",
            r.address, r.p2p_packets, r.bittorrent.packets, r.utp.packets, r.dht.packets, r.tracker.packets, r.p2p_peers, r.all_packets
        ));
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::lan::dht_sample;

    #[test]
    fn the_abusers_list_names_who_is_over() {
        let s = dht_sample("10.0.0.5", 30);
        let text = abusers_text(&s.rows(0), 10, "eth1", 10).unwrap();
        assert!(text.contains("10.0.0.5: 30 packets"), "{text}");
        assert_eq!(abusers_text(&s.rows(0), 31, "eth1", 10), None);
    }
}
