//! Blocklists in the kernel: a table of webfence's own (`inet
//! <table>_blocklists`), one interval set per list and family, and a
//! drop rule per set counting what it dropped; allowlisted addresses
//! return first. A list is swapped in one transaction (flush and fill its
//! sets), so there is never a moment with half a list. Entries arrive
//! merged, so the sets need no auto-merge (which costs `nft` twice the
//! time on 100k intervals).

use ipnet::IpNet;

use super::{EnforceError, run};

pub fn table_name(table: &str) -> String {
    format!("{table}_blocklists")
}

/// The set names of a list (its name with what nft does not take made
/// `_`).
fn sets(list: &str) -> (String, String) {
    let clean: String = list
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (format!("bl4_{clean}"), format!("bl6_{clean}"))
}

fn elements(nets: &[IpNet], v4: bool) -> String {
    nets.iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table with its sets (empty) and rules, for these lists.
pub fn setup_script(table: &str, lists: &[String], allow: &[IpNet]) -> String {
    let t = table_name(table);
    let mut s = format!("table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n");
    for (name, v4) in [("allow4", true), ("allow6", false)] {
        let e = elements(allow, v4);
        let family = if v4 { "ipv4_addr" } else { "ipv6_addr" };
        s.push_str(&format!(
            "\tset {name} {{ type {family}; flags interval; auto-merge;{} }}\n",
            if e.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {e} }};")
            }
        ));
    }
    for l in lists {
        let (s4, s6) = sets(l);
        s.push_str(&format!(
            "\tset {s4} {{ type ipv4_addr; flags interval; }}\n\tset {s6} {{ type ipv6_addr; flags interval; }}\n\tcounter {s4} {{ }}\n\tcounter {s6} {{ }}\n"
        ));
    }
    s.push_str("\tchain input {\n\t\ttype filter hook input priority -190; policy accept;\n\t\tip saddr @allow4 return\n\t\tip6 saddr @allow6 return\n");
    for l in lists {
        let (s4, s6) = sets(l);
        s.push_str(&format!(
            "\t\tip saddr @{s4} counter name {s4} drop\n\t\tip6 saddr @{s6} counter name {s6} drop\n"
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

/// Swaps a list's contents in one transaction.
pub fn load_script(table: &str, list: &str, nets: &[IpNet]) -> String {
    let t = table_name(table);
    let (s4, s6) = sets(list);
    let mut s = String::with_capacity(nets.len() * 20 + 200);
    for (set, v4) in [(s4, true), (s6, false)] {
        s.push_str(&format!("flush set inet {t} {set}\n"));
        let e = elements(nets, v4);
        if !e.is_empty() {
            s.push_str(&format!("add element inet {t} {set} {{ {e} }}\n"));
        }
    }
    s
}

fn nft_f(nft: &[String], script: &str) -> Result<(), EnforceError> {
    let mut argv = nft.to_vec();
    argv.extend(["-f".to_string(), "-".to_string()]);
    run(&argv, Some(script)).map(|_| ())
}

pub fn setup(
    nft: &[String],
    table: &str,
    lists: &[String],
    allow: &[IpNet],
) -> Result<(), EnforceError> {
    nft_f(nft, &setup_script(table, lists, allow))
}

pub fn load(nft: &[String], table: &str, list: &str, nets: &[IpNet]) -> Result<(), EnforceError> {
    nft_f(nft, &load_script(table, list, nets))
}

pub fn remove(nft: &[String], table: &str) -> Result<(), EnforceError> {
    let t = table_name(table);
    nft_f(
        nft,
        &format!("table inet {t} {{}}\ndelete table inet {t}\n"),
    )
}

/// Packets a list dropped (both families); an error when the table is
/// gone.
pub fn dropped(nft: &[String], table: &str, list: &str) -> Result<u64, EnforceError> {
    let (s4, s6) = sets(list);
    Ok(super::table_counters(nft, &table_name(table))?
        .iter()
        .filter(|(n, _)| *n == s4 || *n == s6)
        .map(|(_, p)| p)
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_sets_per_list_and_family() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let s = setup_script("webfence", &["drop".into(), "fire-hol.1".into()], &allow);
        assert!(s.contains("set allow4 { type ipv4_addr; flags interval; auto-merge; elements = { 127.0.0.0/8 }; }"), "{s}");
        assert!(
            s.contains("ip saddr @bl4_fire_hol_1 counter name bl4_fire_hol_1 drop"),
            "{s}"
        );
        let nets: Vec<IpNet> = vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let l = load_script("webfence", "drop", &nets);
        assert_eq!(
            l,
            "flush set inet webfence_blocklists bl4_drop\nadd element inet webfence_blocklists bl4_drop { 192.0.2.0/24 }\nflush set inet webfence_blocklists bl6_drop\nadd element inet webfence_blocklists bl6_drop { 2001:db8::/32 }\n"
        );
    }
}
