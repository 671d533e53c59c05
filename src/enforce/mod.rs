//! Enforce stage: decisions become kernel state. A [`Backend`] owns its own
//! table of bans and applies a batch of changes as one transaction. Backends
//! are driven through programs with argument vectors (never a shell), so
//! nothing taken from a log can be interpreted as a command.

pub mod blocklists;
pub mod hooks;
pub mod ipset;
pub mod ledger;
pub mod limits;
pub mod netlink;
pub mod nft;
pub mod route;

use crate::detect::addr::Subject;

/// One ban to put in place: the address or network and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanEntry {
    pub subject: Subject,
    pub timeout_s: u64,
}

/// A ban as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelBan {
    pub subject: Subject,
    /// Seconds until the kernel drops it.
    pub expires_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read the output of {program}: {reason}")]
    Output { program: String, reason: String },
}

/// What the kernel rules of a backend dropped, from its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    pub packets: u64,
    pub bytes: u64,
}

/// A place bans live: nftables sets, an ipset, null routes.
pub trait Backend {
    fn name(&self) -> &str;
    /// Creates what the backend owns (idempotent).
    fn setup(&mut self) -> Result<(), EnforceError>;
    /// Adds (or renews) and removes bans, all in one transaction.
    fn apply(&mut self, add: &[BanEntry], remove: &[Subject]) -> Result<(), EnforceError>;
    /// Adds bans in one transaction, telling apart those that are new
    /// (`fresh`: nothing of theirs should be in the kernel) from renewals,
    /// which some backends must handle more carefully (and slowly).
    fn apply_new(&mut self, fresh: &[BanEntry], renew: &[BanEntry]) -> Result<(), EnforceError> {
        let all: Vec<BanEntry> = fresh.iter().chain(renew).copied().collect();
        self.apply(&all, &[])
    }
    /// The bans in place now.
    fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError>;
    /// Removes everything the backend owns.
    fn teardown(&mut self) -> Result<(), EnforceError>;
    /// Whether the kernel lifts bans on time by itself (set timeouts); if
    /// not, the daemon removes them when they expire.
    fn expires_itself(&self) -> bool {
        true
    }
    /// Cheap proof the backend's objects are still in place (the table was
    /// not removed behind webfence's back).
    fn check(&mut self) -> Result<(), EnforceError> {
        self.list().map(|_| ())
    }
    /// A check cheap enough to run every second: are the backend's table
    /// and chain still there? (A deleted table lets every banned client
    /// through until it is noticed.) Default: nothing to check.
    fn quick_check(&mut self) -> Result<(), EnforceError> {
        Ok(())
    }
    /// The periodic health check: the bans in place, after making sure the
    /// rules that enforce them are there too (an error names what is
    /// missing). Backends that can do both in one read override it.
    fn inspect(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        self.check()?;
        self.list()
    }
    /// What the kernel dropped for webfence, as of the last `inspect`
    /// (reading counters costs as much as listing the bans, so they are
    /// read with them, not on demand). None where there are no counters.
    fn dropped(&self) -> Option<Dropped> {
        None
    }
    /// Whether `list` shows the kernel's state, to reconcile the ledger with.
    fn reconciles(&self) -> bool {
        true
    }
}

/// The backends a configuration can name.
pub const BACKENDS: [&str; 4] = ["nftables", "ipset", "route", "none"];

/// The backend called `name`, owning `table` (nftables table or ipset
/// prefix). `prefix` goes before every program (empty in production).
pub fn backend(name: &str, table: &str, prefix: Vec<String>) -> Option<Box<dyn Backend + Send>> {
    Some(match name {
        "nftables" => {
            let mut command = prefix;
            command.push("nft".into());
            Box::new(nft::Nft::new(command, table))
        }
        "ipset" => Box::new(ipset::Ipset::new(prefix, table)),
        "route" => Box::new(route::Route::new(prefix)),
        "none" => Box::new(route::NoBackend),
        _ => return None,
    })
}

/// The named counters of an nftables table of webfence's (the limits',
/// the blocklists'), by name, in packets; an error when the table is gone.
pub fn table_counters(nft: &[String], table: &str) -> Result<Vec<(String, u64)>, EnforceError> {
    let mut argv = nft.to_vec();
    argv.extend(
        ["-j", "list", "counters", "table", "inet", table]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = run(&argv, None)?;
    parse_counters(&out).ok_or_else(|| EnforceError::Output {
        program: "nft".into(),
        reason: format!("no counters in table {table}"),
    })
}

fn parse_counters(json: &str) -> Option<Vec<(String, u64)>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let counters = v
        .get("nftables")?
        .as_array()?
        .iter()
        .filter_map(|item| {
            let c = item.get("counter")?;
            Some((
                c.get("name")?.as_str()?.to_string(),
                c.get("packets").and_then(|p| p.as_u64()).unwrap_or(0),
            ))
        })
        .collect();
    Some(counters)
}

/// How long a backend program may run before it is killed: a hung `nft`
/// or `ipset` must not stall every later ban (and the control socket,
/// which waits for the same lock) for good.
const PROGRAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `argv` with `input` on stdin; returns stdout.
pub(crate) fn run(argv: &[String], input: Option<&str>) -> Result<String, EnforceError> {
    run_for(argv, input, PROGRAM_TIMEOUT)
}

fn run_for(
    argv: &[String],
    input: Option<&str>,
    limit: std::time::Duration,
) -> Result<String, EnforceError> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let program = argv.first().cloned().unwrap_or_default();
    let spawn_error = |source| EnforceError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = Command::new(&program)
        .args(argv.get(1..).unwrap_or_default())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let started = std::time::Instant::now();
    // Input is written and output read on threads of their own, so a
    // program that stops reading or writing cannot block the timeout.
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let status = std::thread::scope(|scope| {
        if let (Some(text), Some(mut pipe)) = (input, stdin) {
            // A write error shows up as the command's failure below.
            scope.spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            scope.spawn(move || {
                let mut out = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut out);
                }
                out
            })
        };
        let out = read(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
        let err = read(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
        let mut pause = std::time::Duration::from_micros(200);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(EnforceError::Command {
                        program: program.clone(),
                        status: format!("killed after {} s", limit.as_secs_f64()),
                        stderr: "it did not finish in time".into(),
                    });
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(20));
                }
                Err(e) => break Err(spawn_error(e)),
            }
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        status.map(|s| (s, out, err))
    });
    let (status, out, err) = status?;
    if !status.success() {
        return Err(EnforceError::Command {
            program,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_nft_json() {
        let j = r#"{"nftables": [{"metainfo": {}}, {"counter": {"name": "conns_refused", "packets": 7, "bytes": 1}}, {"counter": {"name": "rate_refused", "packets": 3, "bytes": 1}}]}"#;
        assert_eq!(
            parse_counters(j),
            Some(vec![
                ("conns_refused".into(), 7),
                ("rate_refused".into(), 3)
            ])
        );
        assert_eq!(parse_counters("{}"), None);
        assert_eq!(parse_counters("not json"), None);
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn programs_get_input_and_give_output_or_their_error() {
        assert_eq!(run(&argv(&["cat"]), Some("a\nb\n")).unwrap(), "a\nb\n");
        let e = run(&argv(&["sh", "-c", "echo nope >&2; exit 3"]), None).unwrap_err();
        assert!(
            e.to_string().contains("exit status: 3") && e.to_string().contains("nope"),
            "{e}"
        );
        let e = run(&argv(&["/nonexistent/nft"]), None).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run /nonexistent/nft"),
            "{e}"
        );
    }

    #[test]
    fn a_hung_program_is_killed_at_its_time_limit() {
        let started = std::time::Instant::now();
        // sleep never reads its input: the write must not block either.
        let big = "x".repeat(1 << 20);
        let e = run_for(
            &argv(&["sleep", "30"]),
            Some(&big),
            std::time::Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not finish in time"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
