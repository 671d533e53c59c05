//! The kernel's per-client connection limits as a component: `[limits]`
//! compiled (each error located), installed at start and on reload,
//! checked with the backend's other objects and put back if someone
//! removed them, and their refusal counters read for `status`.

use crate::detect::allow::Allowlist;
use crate::detect::config::{Config, ConfigError};
use crate::enforce::EnforceError;
use crate::enforce::limits::{self, Limits, Refused};

/// Ports limited when `[limits]` names none: the web.
const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Compiles `[limits]`; None when the section is absent or sets no limit.
pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Option<Limits> {
    let (at, raw) = config.limits.as_ref()?;
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let mut count = |v: &Option<crate::detect::config::Sp<i64>>, what: &str| -> Option<u32> {
        let v = v.as_ref()?;
        match u32::try_from(v.value) {
            Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
            _ => {
                err(
                    v.at,
                    format!("invalid {what} {}: expected 1 to 1000000", v.value),
                );
                None
            }
        }
    };
    let max_conns = count(&raw.max_conns, "max_conns");
    let new_per_second = count(&raw.new_per_second, "new_per_second");
    let burst = count(&raw.burst, "burst");
    let mut ports = Vec::new();
    for p in raw.ports.iter().flatten() {
        match u16::try_from(p.value) {
            Ok(port) if port > 0 => ports.push(port),
            _ => err(
                p.at,
                format!("invalid port {}: expected 1 to 65535", p.value),
            ),
        }
    }
    if raw.ports.is_none() {
        ports = DEFAULT_PORTS.to_vec();
    }
    let mut exempt = Vec::new();
    for e in raw.exempt.iter().flatten() {
        match e.value.parse::<crate::detect::addr::Subject>() {
            Ok(s) => exempt.push(s.to_net()),
            Err(why) => err(e.at, format!("invalid exemption: {why}")),
        }
    }
    if max_conns.is_none() && new_per_second.is_none() {
        err(
            *at,
            "[limits] sets no limit: add max_conns (concurrent connections per client) or new_per_second"
                .into(),
        );
        return None;
    }
    Some(Limits {
        max_conns,
        new_per_second,
        burst,
        ports,
        exempt,
    })
}

/// The limits in force and their health.
pub struct KernelLimits {
    nft: Vec<String>,
    table: String,
    pub limits: Option<Limits>,
    /// What was last installed, exemptions included.
    installed: Option<Limits>,
    pub problem: Option<String>,
    pub refused: Refused,
}

impl KernelLimits {
    pub fn new(table: &str) -> KernelLimits {
        KernelLimits {
            nft: vec!["nft".into()],
            table: table.to_string(),
            limits: None,
            installed: None,
            problem: None,
            refused: Refused::default(),
        }
    }

    /// Installs `limits` with the allowlist exempt (or removes them when
    /// None). Failures are kept for `status` and retried by `check`.
    pub fn set(&mut self, limits: Option<Limits>, allow: &Allowlist) {
        self.limits = limits.map(|mut l| {
            l.exempt.extend(allow.subjects().iter().map(|s| s.to_net()));
            l
        });
        let result = match &self.limits {
            Some(l) => limits::apply(&self.nft, &self.table, l),
            None if self.installed.is_some() => limits::remove(&self.nft, &self.table),
            None => Ok(()),
        };
        self.after(result, "installed");
    }

    fn after(&mut self, result: Result<(), EnforceError>, what: &str) {
        match result {
            Ok(()) => {
                if self.problem.take().is_some() || what == "installed" {
                    if let Some(l) = &self.limits {
                        tracing::info!(
                            max_conns = l.max_conns,
                            new_per_second = l.new_per_second,
                            ports = ?l.ports,
                            "kernel connection limits {what}"
                        );
                    }
                }
                self.installed = self.limits.clone();
            }
            Err(e) => {
                let p = format!("kernel connection limits are not in force: {e}");
                if self.problem.as_ref() != Some(&p) {
                    tracing::error!("{p}");
                }
                self.problem = Some(p);
            }
        }
    }

    /// Reads the counters; puts the table back if it is gone.
    pub fn check(&mut self) {
        let Some(l) = self.limits.clone() else {
            return;
        };
        match limits::refused(&self.nft, &self.table) {
            Ok(r) if self.problem.is_none() => self.refused = r,
            _ => {
                if self.problem.is_none() {
                    tracing::warn!("the kernel connection limits' table is gone; putting it back");
                }
                let r = limits::apply(&self.nft, &self.table, &l);
                self.after(r, "put back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (Option<Limits>, String) {
        let config = Config::from_texts(vec![("l.toml".into(), text.into())]).unwrap();
        let mut errors = Vec::new();
        let l = compile(&config, &mut errors);
        (l, crate::detect::ConfigErrors(errors).to_string())
    }

    #[test]
    fn limits_compile_with_web_ports_by_default() {
        let (l, e) = compile_text("[limits]\nmax_conns = 50\nexempt = [\"192.0.2.0/24\"]\n");
        assert!(e.is_empty(), "{e}");
        let l = l.unwrap();
        assert_eq!(l.max_conns, Some(50));
        assert_eq!(l.ports, vec![80, 443]);
        assert_eq!(l.exempt[0].to_string(), "192.0.2.0/24");
    }

    #[test]
    fn bad_limits_are_located() {
        let (_, e) =
            compile_text("[limits]\nmax_conns = 0\nports = [70000]\nexempt = [\"nope\"]\n");
        for want in [
            "l.toml:2:13: invalid max_conns 0",
            "l.toml:3:10: invalid port 70000",
            "l.toml:4:11: invalid exemption",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let (_, e) = compile_text("[limits]\nports = [80]\n");
        assert!(e.contains("[limits] sets no limit"), "{e}");
    }
}
