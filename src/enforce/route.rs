//! The null-route backend: `ip route replace blackhole ADDR` (replies to a
//! banned client go nowhere, as in the torrent write-up). Routes carry no
//! timeout, so the daemon lifts them when the ledger says they expire; they
//! are tagged with their own routing protocol number so webfence only ever
//! lists and removes its own.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Backend, BanEntry, EnforceError, KernelBan, run};
use crate::detect::addr::Subject;

/// The `proto` of webfence's routes (a number unused by routing daemons).
pub const PROTO: &str = "252";

pub struct Route {
    /// Leading arguments (e.g. `ip netns exec NS` in tests); empty in
    /// production.
    pub prefix: Vec<String>,
}

impl Route {
    pub fn new(prefix: Vec<String>) -> Route {
        Route { prefix }
    }

    fn ip(&self, args: &[&str], input: Option<&str>) -> Result<String, EnforceError> {
        let mut argv = self.prefix.clone();
        argv.push("ip".into());
        argv.extend(args.iter().map(|s| s.to_string()));
        run(&argv, input)
    }

    /// The family is taken from each address. Routes are added, never
    /// replaced, so a real route of the same prefix is never clobbered;
    /// `apply` leaves out adds of routes already there and removals of
    /// routes that are not.
    pub fn apply_script(add: &[BanEntry], remove: &[Subject]) -> String {
        let mut out = String::new();
        for s in remove {
            let _ = writeln!(
                out,
                "route del blackhole {}/{} proto {PROTO}",
                s.addr(),
                s.family_prefix()
            );
        }
        for b in add {
            let s = b.subject;
            let _ = writeln!(
                out,
                "route add blackhole {}/{} proto {PROTO}",
                s.addr(),
                s.family_prefix()
            );
        }
        out
    }
}

fn parse_routes(json: &str) -> Vec<Subject> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("blackhole"))
        .filter_map(|r| r.get("dst")?.as_str()?.parse::<Subject>().ok())
        .collect()
}

impl Backend for Route {
    fn name(&self) -> &str {
        "route"
    }

    fn expires_itself(&self) -> bool {
        false
    }

    fn setup(&mut self) -> Result<(), EnforceError> {
        self.ip(&["-V"], None).map(|_| ())
    }

    fn apply(&mut self, add: &[BanEntry], remove: &[Subject]) -> Result<(), EnforceError> {
        let present: crate::stats::Map<Subject, ()> =
            self.list()?.into_iter().map(|b| (b.subject, ())).collect();
        let remove: Vec<Subject> = remove
            .iter()
            .copied()
            .filter(|s| present.contains_key(s))
            .collect();
        let add: Vec<BanEntry> = add
            .iter()
            .copied()
            .filter(|b| !present.contains_key(&b.subject))
            .collect();
        let script = Route::apply_script(&add, &remove);
        if script.is_empty() {
            return Ok(());
        }
        self.ip(&["-batch", "-"], Some(&script)).map(|_| ())
    }

    fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let json = self.ip(&["-j", fam, "route", "show", "proto", PROTO], None)?;
            out.extend(parse_routes(&json).into_iter().map(|subject| KernelBan {
                subject,
                expires_s: 0,
            }));
        }
        out.sort();
        Ok(out)
    }

    fn teardown(&mut self) -> Result<(), EnforceError> {
        let all: Vec<Subject> = self.list()?.into_iter().map(|b| b.subject).collect();
        self.apply(&[], &all)
    }
}

/// `backend = "none"`: decisions are recorded in the ledger only.
pub struct NoBackend;

impl Backend for NoBackend {
    fn name(&self) -> &str {
        "none"
    }
    fn setup(&mut self) -> Result<(), EnforceError> {
        Ok(())
    }
    fn apply(&mut self, _: &[BanEntry], _: &[Subject]) -> Result<(), EnforceError> {
        Ok(())
    }
    fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        Ok(Vec::new())
    }
    fn teardown(&mut self) -> Result<(), EnforceError> {
        Ok(())
    }
    fn reconciles(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::addr::to_bits;

    #[test]
    fn script_names_prefixes_and_protocol() {
        let add = [BanEntry {
            subject: Subject::host(to_bits("2001:db8::1".parse().unwrap())),
            timeout_s: 60,
        }];
        let remove = ["10.0.0.0/8".parse::<Subject>().unwrap()];
        assert_eq!(
            Route::apply_script(&add, &remove),
            "route del blackhole 10.0.0.0/8 proto 252\nroute add blackhole 2001:db8::1/128 proto 252\n"
        );
    }

    #[test]
    fn reads_ip_json_routes() {
        let v = parse_routes(
            r#"[{"type":"blackhole","dst":"1.2.3.4","flags":[]},{"type":"blackhole","dst":"10.0.0.0/8","flags":[]},{"type":"unicast","dst":"9.9.9.9"}]"#,
        );
        let shown: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["1.2.3.4", "10.0.0.0/8"]);
        assert!(parse_routes("not json").is_empty());
    }
}
