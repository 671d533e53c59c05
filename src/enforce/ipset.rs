//! The ipset backend, for hosts that filter with iptables: one `hash:net`
//! set per family with per-element timeouts (so the kernel lifts bans on
//! time without webfence), filled in batches through `ipset restore`, and
//! one iptables (and ip6tables) rule that drops what the set holds.

use std::fmt::Write as _;

use super::{Backend, BanEntry, EnforceError, KernelBan, run};
use crate::detect::addr::{Subject, is_v4};

/// ipset stores timeouts as 32-bit milliseconds internally; longer ones are
/// refused, so they are clamped (about 24.8 days). The ledger still holds
/// the real expiry and the daemon re-adds a ban that outlives its element.
pub const MAX_TIMEOUT_S: u64 = 2_147_483;

/// Enough for a large DDoS; the default (65536) is not.
const MAX_ELEMENTS: u32 = 4_194_304;

pub struct Ipset {
    /// Leading arguments for every program (e.g. `ip netns exec NS` in
    /// tests); empty in production.
    pub prefix: Vec<String>,
    /// Set names are `{name}4` and `{name}6`.
    pub name: String,
}

impl Ipset {
    pub fn new(prefix: Vec<String>, name: &str) -> Ipset {
        Ipset {
            prefix,
            name: name.to_string(),
        }
    }

    fn set_of(&self, s: &Subject) -> String {
        format!("{}{}", self.name, if is_v4(s.bits) { 4 } else { 6 })
    }

    fn exec(&self, argv: &[&str], input: Option<&str>) -> Result<String, EnforceError> {
        let mut full = self.prefix.clone();
        full.extend(argv.iter().map(|s| s.to_string()));
        run(&full, input)
    }

    pub fn setup_script(&self) -> String {
        let n = &self.name;
        format!(
            "create {n}4 hash:net family inet timeout 0 maxelem {MAX_ELEMENTS}\n\
             create {n}6 hash:net family inet6 timeout 0 maxelem {MAX_ELEMENTS}\n"
        )
    }

    /// `-exist` makes add renew an element's timeout and del ignore a
    /// missing one, so the batch applies whatever the set holds.
    pub fn apply_script(&self, add: &[BanEntry], remove: &[Subject]) -> String {
        let mut out = String::new();
        for s in remove {
            let _ = writeln!(out, "del {} {}", self.set_of(s), s);
        }
        for b in add {
            let t = b.timeout_s.clamp(1, MAX_TIMEOUT_S);
            let _ = writeln!(
                out,
                "add {} {} timeout {t}",
                self.set_of(&b.subject),
                b.subject
            );
        }
        out
    }

    fn drop_rule(&self, tool: &str, set: &str, op: &str) -> Result<String, EnforceError> {
        let mut argv = vec![tool, "-w", op, "INPUT"];
        if op == "-I" {
            argv.push("1");
        }
        argv.extend(["-m", "set", "--match-set", set, "src", "-j", "DROP"]);
        self.exec(&argv, None)
    }
}

/// One `add SET ADDR timeout N` line of `ipset save`.
fn parse_save_line(line: &str) -> Option<KernelBan> {
    let mut words = line.split_whitespace();
    if words.next()? != "add" {
        return None;
    }
    words.next()?;
    let addr = words.next()?;
    let net: ipnet::IpNet = match addr.parse() {
        Ok(n) => n,
        Err(_) => addr.parse::<std::net::IpAddr>().ok()?.into(),
    };
    let mut expires_s = 0;
    while let Some(w) = words.next() {
        if w == "timeout" {
            expires_s = words.next()?.parse().ok()?;
        }
    }
    Some(KernelBan {
        subject: Subject::from_net(net),
        expires_s,
    })
}

impl Backend for Ipset {
    fn name(&self) -> &str {
        "ipset"
    }

    fn setup(&mut self) -> Result<(), EnforceError> {
        self.exec(&["ipset", "-exist", "restore"], Some(&self.setup_script()))?;
        for (tool, fam) in [("iptables", 4), ("ip6tables", 6)] {
            let set = format!("{}{fam}", self.name);
            if self.drop_rule(tool, &set, "-C").is_err() {
                self.drop_rule(tool, &set, "-I")?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, add: &[BanEntry], remove: &[Subject]) -> Result<(), EnforceError> {
        let script = self.apply_script(add, remove);
        if script.is_empty() {
            return Ok(());
        }
        self.exec(&["ipset", "-exist", "restore"], Some(&script))
            .map(|_| ())
    }

    fn check(&mut self) -> Result<(), EnforceError> {
        for (tool, fam) in [("iptables", 4), ("ip6tables", 6)] {
            let set = format!("{}{fam}", self.name);
            self.exec(&["ipset", "-terse", "list", &set], None)?;
            self.drop_rule(tool, &set, "-C")?;
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        let mut out = Vec::new();
        for fam in [4, 6] {
            let text = self.exec(&["ipset", "save", &format!("{}{fam}", self.name)], None)?;
            out.extend(text.lines().filter_map(parse_save_line));
        }
        out.sort();
        Ok(out)
    }

    fn teardown(&mut self) -> Result<(), EnforceError> {
        for (tool, fam) in [("iptables", 4), ("ip6tables", 6)] {
            let set = format!("{}{fam}", self.name);
            while self.drop_rule(tool, &set, "-D").is_ok() {}
            let _ = self.exec(&["ipset", "destroy", &set], None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::addr::to_bits;

    fn host(s: &str) -> Subject {
        Subject::host(to_bits(s.parse().unwrap()))
    }

    #[test]
    fn batches_by_family_and_clamps_timeouts() {
        let s = Ipset::new(vec![], "wf");
        let script = s.apply_script(
            &[
                BanEntry {
                    subject: host("203.0.113.7"),
                    timeout_s: 10_000_000,
                },
                BanEntry {
                    subject: host("2001:db8::1"),
                    timeout_s: 0,
                },
            ],
            &[Subject::from_net("10.0.0.0/8".parse().unwrap())],
        );
        assert_eq!(
            script,
            "del wf4 10.0.0.0/8\nadd wf4 203.0.113.7 timeout 2147483\nadd wf6 2001:db8::1 timeout 1\n"
        );
    }

    #[test]
    fn reads_ipset_save() {
        assert_eq!(
            parse_save_line("add wf4 1.2.3.4 timeout 89"),
            Some(KernelBan {
                subject: host("1.2.3.4"),
                expires_s: 89
            })
        );
        let b = parse_save_line("add wf6 2001:db8::/64 timeout 5").unwrap();
        assert_eq!(b.subject.to_string(), "2001:db8::/64");
        assert_eq!(parse_save_line("create wf4 hash:net family inet"), None);
        assert_eq!(parse_save_line("add wf4 not-an-ip timeout 1"), None);
    }
}
