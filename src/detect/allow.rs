//! The allowlist: clients no rule decides against. Addresses and CIDRs from
//! the config, host names resolved now and again (an admin on a dynamic
//! address), and by default loopback and this machine's own addresses.
//!
//! Name resolution and interface listing sit behind [`HostEnv`] so the
//! logic is tested without DNS.

use std::net::{IpAddr, ToSocketAddrs};

use super::addr::{NetSet, Subject, to_bits};
use super::rules::AllowSpec;

/// The OS services the allowlist needs.
pub trait HostEnv {
    fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
    fn local_addresses(&self) -> Vec<IpAddr>;
}

/// The real thing: getaddrinfo and getifaddrs.
pub struct SystemHost;

impl HostEnv for SystemHost {
    fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }

    fn local_addresses(&self) -> Vec<IpAddr> {
        if_addrs::get_if_addrs()
            .map(|v| v.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    fixed: NetSet,
    resolved: NetSet,
    pub hosts: Vec<String>,
    pub resolve_every_s: u64,
}

impl Allowlist {
    /// Builds the list; problems resolving names are returned as warnings
    /// (the rest of the list still applies).
    pub fn build(spec: &AllowSpec, env: &dyn HostEnv) -> (Allowlist, Vec<String>) {
        let mut fixed = NetSet::default();
        for n in &spec.nets {
            fixed.insert(*n);
        }
        if spec.local {
            for net in ["127.0.0.0/8", "::1/128"] {
                if let Ok(n) = net.parse() {
                    fixed.insert(Subject::from_net(n));
                }
            }
            for ip in env.local_addresses() {
                fixed.insert(Subject::host(to_bits(ip)));
            }
        }
        let mut list = Allowlist {
            fixed,
            resolved: NetSet::default(),
            hosts: spec.hosts.clone(),
            resolve_every_s: spec.resolve_every_s,
        };
        let warnings = list.refresh(env);
        (list, warnings)
    }

    /// Resolves the host names again. A name that fails keeps its last
    /// addresses, so a DNS hiccup does not expose the admin to a ban.
    pub fn refresh(&mut self, env: &dyn HostEnv) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut next = NetSet::default();
        let mut failed = false;
        for h in &self.hosts {
            match env.resolve(h) {
                Ok(ips) if !ips.is_empty() => {
                    for ip in ips {
                        next.insert(Subject::host(to_bits(ip)));
                    }
                }
                Ok(_) => {
                    failed = true;
                    warnings.push(format!("allowlist host '{h}' resolves to no address"));
                }
                Err(e) => {
                    failed = true;
                    warnings.push(format!("cannot resolve allowlist host '{h}': {e}"));
                }
            }
        }
        if failed {
            // Keep the old addresses alongside the new ones.
            for s in self.resolved.iter() {
                next.insert(s);
            }
        }
        self.resolved = next;
        warnings
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A client logged by host name has no address to decide on.
        if ip == crate::log::parse::UNRESOLVED {
            return true;
        }
        let b = to_bits(ip);
        self.fixed.contains(b) || self.resolved.contains(b)
    }

    /// An allowlisted address or network that `subject` covers or is
    /// covered by: banning it would fence off someone allowed.
    pub fn overlapping(&self, subject: Subject) -> Option<Subject> {
        self.fixed.iter().chain(self.resolved.iter()).find(|a| {
            (a.prefix <= subject.prefix && a.contains(subject.bits))
                || (subject.prefix <= a.prefix && subject.contains(a.bits))
        })
    }

    /// Every allowlisted address and network (fixed and resolved), for
    /// exemptions the kernel applies itself.
    pub fn subjects(&self) -> Vec<Subject> {
        self.fixed.iter().chain(self.resolved.iter()).collect()
    }

    pub fn len(&self) -> usize {
        self.fixed.len() + self.resolved.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct FakeHost {
        answers: RefCell<Vec<std::io::Result<Vec<IpAddr>>>>,
    }

    impl HostEnv for FakeHost {
        fn resolve(&self, _: &str) -> std::io::Result<Vec<IpAddr>> {
            self.answers.borrow_mut().remove(0)
        }
        fn local_addresses(&self) -> Vec<IpAddr> {
            vec!["192.0.2.1".parse().unwrap()]
        }
    }

    fn spec(local: bool) -> AllowSpec {
        AllowSpec {
            nets: vec![Subject::from_net("198.51.100.0/24".parse().unwrap())],
            hosts: vec!["admin.example".into()],
            resolve_every_s: 600,
            local,
        }
    }

    #[test]
    fn local_fixed_and_resolved_addresses() {
        let env = FakeHost {
            answers: RefCell::new(vec![
                Ok(vec!["203.0.113.5".parse().unwrap()]),
                Ok(vec!["203.0.113.9".parse().unwrap()]),
                Err(std::io::Error::other("SERVFAIL")),
            ]),
        };
        let (mut list, warnings) = Allowlist::build(&spec(true), &env);
        assert!(warnings.is_empty());
        for ip in [
            "127.0.0.1",
            "::1",
            "192.0.2.1",
            "198.51.100.77",
            "203.0.113.5",
        ] {
            assert!(list.contains(ip.parse().unwrap()), "{ip}");
        }
        assert!(!list.contains("203.0.113.6".parse().unwrap()));
        // The admin's address moved: the new one is in, the old one out.
        assert!(list.refresh(&env).is_empty());
        assert!(list.contains("203.0.113.9".parse().unwrap()));
        assert!(!list.contains("203.0.113.5".parse().unwrap()));
        // DNS fails: the last known address stays allowed.
        let w = list.refresh(&env);
        assert!(w[0].contains("SERVFAIL"), "{w:?}");
        assert!(list.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn local_can_be_turned_off() {
        let env = FakeHost {
            answers: RefCell::new(vec![Ok(vec![])]),
        };
        let (list, warnings) = Allowlist::build(&spec(false), &env);
        assert!(!list.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(warnings.len(), 1);
    }
}
