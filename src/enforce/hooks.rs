//! Hooks: programs the admin configures to run on a ban or an unban, and
//! named actions. The facts (address, rule, reason, a log line…) reach them
//! as environment variables; validated values (address, rule, duration)
//! can also fill placeholders inside single arguments. Nothing runs through
//! a shell and no text from a log reaches an argument, so a User-Agent such
//! as `$(touch /tmp/pwned)` stays text (the class of fail2ban's
//! CVE-2021-32749) whatever program the admin names. They run on a thread of their own, one at a time with a
//! time limit, so a slow hook never delays a ban.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::detect::addr::Subject;

/// The facts of one ban or unban.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// "ban", "unban" or a named action's name.
    pub event: String,
    pub subject: Subject,
    pub rule: String,
    pub action: String,
    pub duration_s: Option<u64>,
    pub reason: String,
    /// One of the log lines that led to the decision, if any.
    pub sample: Option<String>,
}

/// A program ready to run: plain data, so it can be checked in tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Placeholders a hook argument may hold. Each stands for a value webfence
/// has validated: an address or CIDR, a name from the configuration (rule
/// and action names are letters, digits, '.', '_' and '-'), a number. Text
/// that comes from a log line or a socket request (the reason, a sample
/// line) is never substituted into an argument: a program that interprets
/// its arguments (`sh -c`, `env bash -c`, `python3 -c`, `sudo`, `timeout`,
/// `perl -e`, …) would run it, and no list of such programs is complete. It
/// reaches hooks only as WEBFENCE_* environment variables.
pub const PLACEHOLDERS: [&str; 5] = ["{ip}", "{rule}", "{action}", "{duration}", "{event}"];

/// Facts that carry outside text, and the variable that holds each.
const TEXT_FACTS: [(&str, &str); 6] = [
    ("{reason}", "WEBFENCE_REASON"),
    ("{sample}", "WEBFENCE_SAMPLE"),
    ("{line}", "WEBFENCE_SAMPLE"),
    ("{path}", "WEBFENCE_SAMPLE"),
    ("{user_agent}", "WEBFENCE_SAMPLE"),
    ("{message}", "WEBFENCE_SAMPLE"),
];

/// What is wrong with a hook's argument vector: the index of the argument
/// and why. Every `{word}` in an argument must be one of `PLACEHOLDERS`.
pub fn check_argv(argv: &[String]) -> Option<(usize, String)> {
    for (i, arg) in argv.iter().enumerate() {
        let mut rest = arg.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let word = &after[..close];
            rest = &after[close + 1..];
            if word.is_empty() || !word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let placeholder = format!("{{{word}}}");
            if PLACEHOLDERS.contains(&placeholder.as_str()) {
                continue;
            }
            if let Some((_, var)) = TEXT_FACTS.iter().find(|(p, _)| *p == placeholder) {
                return Some((
                    i,
                    format!(
                        "the placeholder {placeholder} would put text from the logs into an argument, where a program such as sh -c could run it; read ${var} in the program instead (placeholders: {})",
                        PLACEHOLDERS.join(" ")
                    ),
                ));
            }
            return Some((
                i,
                format!(
                    "unknown placeholder {placeholder} (expected one of {})",
                    PLACEHOLDERS.join(" ")
                ),
            ));
        }
    }
    None
}

impl Facts {
    fn value(&self, placeholder: &str) -> String {
        match placeholder {
            "{ip}" => self.subject.to_string(),
            "{rule}" => self.rule.clone(),
            "{action}" => self.action.clone(),
            "{duration}" => self.duration_s.map(|s| s.to_string()).unwrap_or_default(),
            "{event}" => self.event.clone(),
            _ => String::new(),
        }
    }

    /// `argv` with placeholders replaced in each argument (one pass, so a
    /// value that itself contains "{ip}" is not expanded again), and the
    /// facts as WEBFENCE_* variables.
    pub fn invocation(&self, argv: &[String]) -> Invocation {
        let argv = argv
            .iter()
            .map(|arg| {
                let mut out = String::new();
                let mut rest = arg.as_str();
                'scan: while !rest.is_empty() {
                    if rest.starts_with('{') {
                        for p in PLACEHOLDERS {
                            if let Some(after) = rest.strip_prefix(p) {
                                out.push_str(&self.value(p));
                                rest = after;
                                continue 'scan;
                            }
                        }
                    }
                    let mut chars = rest.chars();
                    if let Some(c) = chars.next() {
                        out.push(c);
                    }
                    rest = chars.as_str();
                }
                out
            })
            .collect();
        let mut env = vec![
            ("WEBFENCE_EVENT".to_string(), self.event.clone()),
            ("WEBFENCE_IP".to_string(), self.subject.to_string()),
            ("WEBFENCE_RULE".to_string(), self.rule.clone()),
            ("WEBFENCE_ACTION".to_string(), self.action.clone()),
            ("WEBFENCE_REASON".to_string(), self.reason.clone()),
        ];
        if let Some(d) = self.duration_s {
            env.push(("WEBFENCE_DURATION".into(), d.to_string()));
        }
        if let Some(s) = &self.sample {
            env.push(("WEBFENCE_SAMPLE".into(), s.clone()));
        }
        Invocation { argv, env }
    }
}

/// How long a hook may run before it is killed.
const HOOK_TIME_LIMIT: Duration = Duration::from_secs(30);
/// Hooks waiting to run; beyond this (a flood of bans) they are dropped and
/// counted rather than piling up without bound.
const QUEUE: usize = 4096;

/// Runs invocations on a thread of its own.
pub struct HookRunner {
    tx: SyncSender<Invocation>,
    pub dropped: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl HookRunner {
    pub fn start() -> HookRunner {
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let f = failed.clone();
        // If the thread cannot start, hooks are counted as dropped below.
        let _ = std::thread::Builder::new()
            .name("hooks".into())
            .spawn(move || run_all(rx, &f));
        HookRunner {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            failed,
        }
    }

    pub fn submit(&self, inv: Invocation) {
        match self.tx.try_send(inv) {
            Ok(()) => {}
            Err(TrySendError::Full(inv)) | Err(TrySendError::Disconnected(inv)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(program = %inv.argv.first().map_or("", |s| s), "hook queue full; dropping hooks until it drains");
                }
            }
        }
    }
}

fn run_all(rx: Receiver<Invocation>, failed: &AtomicU64) {
    for inv in rx {
        if let Err(e) = run_one(&inv) {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %inv.argv.first().map_or("", |s| s), error = %e, "hook failed");
        }
    }
}

/// Starts an invocation: its argument vector and environment, no stdin,
/// stdout discarded, stderr kept for the error message.
pub fn spawn(inv: &Invocation) -> Result<std::process::Child, String> {
    let program = inv
        .argv
        .first()
        .ok_or_else(|| "no program to run".to_string())?;
    Command::new(program)
        .args(&inv.argv[1..])
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// Runs one invocation to completion (or its time limit).
pub fn run_one(inv: &Invocation) -> Result<(), String> {
    let Some(program) = inv.argv.first() else {
        return Ok(());
    };
    let mut child = spawn(inv)?;
    wait_with_limit(&mut child, program, HOOK_TIME_LIMIT)
}

/// Waits for a program, killing it at `limit`; a failure says how it
/// ended, with the start of its standard error when that was kept.
pub fn wait_with_limit(
    child: &mut std::process::Child,
    program: &str,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = (&mut e).take(2000).read_to_string(&mut err);
                }
                let err = err.trim();
                return Err(if err.is_empty() {
                    format!("{program} exited with {status}")
                } else {
                    format!("{program} exited with {status}: {err}")
                });
            }
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} ran over {}s and was killed",
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(reason: &str) -> Facts {
        Facts {
            event: "ban".into(),
            subject: "203.0.113.7".parse().unwrap(),
            rule: "bad-agent".into(),
            action: "ban".into(),
            duration_s: Some(3600),
            reason: reason.into(),
            sample: Some("203.0.113.7 - - \"GET / HTTP/1.1\" 200 1 \"-\" \"`id`\"".into()),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn placeholders_fill_single_arguments_once() {
        let inv = facts("agent {ip} $(touch /tmp/x)").invocation(&s(&[
            "/usr/local/bin/notify",
            "--ip={ip}",
            "{rule}/{action}",
            "{duration}s",
        ]));
        assert_eq!(
            inv.argv,
            s(&[
                "/usr/local/bin/notify",
                "--ip=203.0.113.7",
                "bad-agent/ban",
                "3600s"
            ])
        );
        assert!(
            inv.env
                .contains(&("WEBFENCE_IP".into(), "203.0.113.7".into()))
        );
        assert!(inv.env.contains(&(
            "WEBFENCE_REASON".into(),
            "agent {ip} $(touch /tmp/x)".into()
        )));
        assert!(
            inv.env
                .iter()
                .any(|(k, v)| k == "WEBFENCE_SAMPLE" && v.contains("`id`"))
        );
    }

    /// Every way around the old check (which looked at argv[0] and the
    /// first dash argument) that an audit found, and then some: log text
    /// never reaches an argument, whatever program comes first.
    #[test]
    fn text_placeholders_are_refused_in_every_position() {
        let bypasses: &[&[&str]] = &[
            &["bash", "--norc", "-c", "echo {reason} >> /tmp/out"],
            &["env", "sh", "-c", "echo {reason}"],
            &["/usr/bin/env", "bash", "-c", "echo {reason}"],
            &["sudo", "sh", "-c", "echo {reason}"],
            &["timeout", "5", "sh", "-c", "echo {reason}"],
            &["sh", "-c", "--", "echo {reason}"],
            &["bash", "--rcfile", "/etc/x", "-c", "echo {reason}"],
            &["python3", "-c", "print('{reason}')"],
            &["perl", "-e", "print '{reason}'"],
            &["/usr/local/bin/notify", "{reason}"],
            &["/usr/local/bin/notify", "--text={sample}"],
            &["logger", "{user_agent}"],
            &["logger", "{path}"],
        ];
        for argv in bypasses {
            let (i, why) = check_argv(&s(argv)).unwrap_or_else(|| panic!("accepted {argv:?}"));
            assert!(argv[i].contains('{'), "{argv:?} -> {i}");
            assert!(why.contains("$WEBFENCE_"), "{why}");
        }
        let (_, why) = check_argv(&s(&["notify", "{adress}"])).unwrap();
        assert!(why.contains("unknown placeholder {adress}"), "{why}");
        for fine in [
            &["sh", "-c", "echo {ip} {rule} {duration}"][..],
            &["sh", "-c", "echo \"$WEBFENCE_REASON\""][..],
            &["awk", "{ print $1 }"][..],
            &["jq", "{}"][..],
        ] {
            assert_eq!(check_argv(&s(fine)), None, "{fine:?}");
        }
    }

    #[test]
    fn payloads_stay_inert_when_run() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let out = dir.path().join("out");
        let reason = format!("$(touch {}) `touch {}`", pwned.display(), pwned.display());
        let argv = s(&[
            "sh",
            "-c",
            "printf '%s|%s\\n' \"$1\" \"$WEBFENCE_REASON\" > \"$0\"",
            &out.display().to_string(),
            "{ip}",
        ]);
        run_one(&facts(&reason).invocation(&argv)).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert_eq!(written, format!("203.0.113.7|{reason}\n"));
        assert!(!pwned.exists());
    }

    #[test]
    fn failures_and_missing_programs_are_reported() {
        let e = run_one(&Invocation {
            argv: s(&["sh", "-c", "echo oops >&2; exit 3"]),
            env: vec![],
        })
        .unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");
        let e = run_one(&Invocation {
            argv: s(&["/nonexistent/hook"]),
            env: vec![],
        })
        .unwrap_err();
        assert!(e.contains("cannot run /nonexistent/hook"), "{e}");
    }
}
