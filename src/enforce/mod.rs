//! Enforce stage: decisions become kernel state. A [`Backend`] owns its own
//! table of bans and applies a batch of changes as one transaction. Backends
//! are driven through programs with argument vectors (never a shell), so
//! nothing taken from a log can be interpreted as a command.

pub mod hooks;
pub mod ipset;
pub mod ledger;
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

/// Runs `argv` with `input` on stdin; returns stdout.
pub(crate) fn run(argv: &[String], input: Option<&str>) -> Result<String, EnforceError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(&argv[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| EnforceError::Spawn {
            program: program.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error shows up as the command's failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| EnforceError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(EnforceError::Command {
            program,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
