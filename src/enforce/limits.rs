//! Kernel connection limits (`[limits]`): per-client limits nftables
//! enforces before any request reaches the server, in a table of
//! webfence's own (`inet <table>_limits`, beside the bans' table, so a
//! reload of the limits never touches a ban):
//!
//! - new connections per second per client address, a meter (`add @rate4
//!   { ip saddr limit rate over N/second burst B packets }`): past it the
//!   SYN is dropped, and the client's TCP retries later;
//! - concurrent connections per client address (`ct count over N`): the
//!   next one is refused with a TCP reset.
//!
//! Allowlisted addresses and `exempt` networks are never limited. The
//! named counters say how many packets each refused, for `status`.

use ipnet::IpNet;

use super::{EnforceError, run};

/// The compiled `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub max_conns: Option<u32>,
    pub new_per_second: Option<u32>,
    pub burst: Option<u32>,
    pub ports: Vec<u16>,
    pub exempt: Vec<IpNet>,
}

/// Packets each limit refused since it was installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    pub conns: u64,
    pub rate: u64,
}

pub fn table_name(table: &str) -> String {
    format!("{table}_limits")
}

/// The whole table as one `nft -f` script: created and replaced in one
/// transaction, so there is no moment without limits on a reload.
pub fn script(table: &str, l: &Limits) -> String {
    let t = table_name(table);
    let ports = l
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
        l.exempt.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let elements = |nets: &[&IpNet]| {
        if nets.is_empty() {
            String::new()
        } else {
            format!(
                " elements = {{ {} }};",
                nets.iter()
                    .map(|n| n.trunc().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let mut s = format!(
        "table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n\
         \tset exempt4 {{ type ipv4_addr; flags interval; auto-merge;{} }}\n\
         \tset exempt6 {{ type ipv6_addr; flags interval; auto-merge;{} }}\n\
         \tset conn4 {{ type ipv4_addr; size 262144; flags dynamic; }}\n\
         \tset conn6 {{ type ipv6_addr; size 262144; flags dynamic; }}\n\
         \tset rate4 {{ type ipv4_addr; size 262144; flags dynamic,timeout; timeout 1m; }}\n\
         \tset rate6 {{ type ipv6_addr; size 262144; flags dynamic,timeout; timeout 1m; }}\n\
         \tcounter conns_refused {{ }}\n\
         \tcounter rate_refused {{ }}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -150; policy accept;\n\
         \t\tip saddr @exempt4 return\n\
         \t\tip6 saddr @exempt6 return\n",
        elements(&v4),
        elements(&v6),
    );
    let scope = if ports.is_empty() {
        "meta l4proto tcp".to_string()
    } else {
        format!("tcp dport {{ {ports} }}")
    };
    // The rate comes first: a SYN it drops is not counted as a connection.
    if let Some(rate) = l.new_per_second {
        let burst = l.burst.unwrap_or(rate);
        for (set, key) in [("rate4", "ip saddr"), ("rate6", "ip6 saddr")] {
            s.push_str(&format!(
                "\t\t{scope} ct state new add @{set} {{ {key} limit rate over {rate}/second burst {burst} packets }} counter name rate_refused drop\n"
            ));
        }
    }
    if let Some(max) = l.max_conns {
        for (set, key) in [("conn4", "ip saddr"), ("conn6", "ip6 saddr")] {
            s.push_str(&format!(
                "\t\t{scope} ct state new add @{set} {{ {key} ct count over {max} }} counter name conns_refused reject with tcp reset\n"
            ));
        }
    }
    s.push_str("\t}\n}\n");
    s
}

/// Installs (or replaces) the limits.
pub fn apply(nft: &[String], table: &str, l: &Limits) -> Result<(), EnforceError> {
    let mut argv = nft.to_vec();
    argv.extend(["-f".to_string(), "-".to_string()]);
    run(&argv, Some(&script(table, l))).map(|_| ())
}

/// Removes the limits' table, if it is there.
pub fn remove(nft: &[String], table: &str) -> Result<(), EnforceError> {
    let t = table_name(table);
    let mut argv = nft.to_vec();
    argv.extend(["-f".to_string(), "-".to_string()]);
    run(
        &argv,
        Some(&format!("table inet {t} {{}}\ndelete table inet {t}\n")),
    )
    .map(|_| ())
}

/// Reads the counters; an error when the table is gone.
pub fn refused(nft: &[String], table: &str) -> Result<Refused, EnforceError> {
    let counters = super::table_counters(nft, &table_name(table))?;
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
    match (get("conns_refused"), get("rate_refused")) {
        (None, None) => Err(EnforceError::Output {
            program: "nft".into(),
            reason: "no counters in the limits table".into(),
        }),
        (c, r) => Ok(Refused {
            conns: c.unwrap_or(0),
            rate: r.unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_scopes_ports_exempts_and_orders_rate_first() {
        let l = Limits {
            max_conns: Some(20),
            new_per_second: Some(10),
            burst: None,
            ports: vec![80, 443],
            exempt: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        };
        let s = script("webfence", &l);
        assert!(
            s.starts_with("table inet webfence_limits {}\ndelete table inet webfence_limits\n")
        );
        assert!(s.contains("set exempt4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.0.0.0/8 }; }"), "{s}");
        assert!(s.contains("elements = { 2001:db8::/32 }"));
        let rate = s
            .find("limit rate over 10/second burst 10 packets")
            .unwrap();
        let count = s.find("ct count over 20").unwrap();
        assert!(rate < count);
        assert!(s.contains("tcp dport { 80, 443 } ct state new add @conn6 { ip6 saddr ct count over 20 } counter name conns_refused reject with tcp reset"));
        let only_rate = script(
            "t",
            &Limits {
                new_per_second: Some(5),
                ..Limits::default()
            },
        );
        assert!(only_rate.contains("meta l4proto tcp ct state new add @rate4"));
        assert!(!only_rate.contains("ct count"));
    }
}
