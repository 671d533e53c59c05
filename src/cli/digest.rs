//! `webfence digest`: the summary a `[digest.NAME]` sends, on demand, from
//! the logs and the ledger (and the running daemon's guard episodes and
//! connection peaks, when it answers), so a cron job can mail it too.

use std::process::ExitCode;

use anyhow::Result;

use super::{DigestArgs, emit};
use crate::daemon::actions::digest::gather;
use crate::daemon::actions::enforcer::wall_ms;
use crate::daemon::control::{Request, request};
use crate::daemon::runtime::{load_settings, socket_path};
use crate::report::digest::Episode;

pub fn digest(args: DigestArgs) -> Result<ExitCode> {
    let mut settings = load_settings(&args.socket.config.config)?;
    if !args.files.is_empty() {
        settings.logs = args.files.clone();
    }
    if let Some(d) = &args.state_dir {
        settings.state_dir = d.clone();
    }
    let period_s =
        crate::units::parse_duration(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let to = wall_ms();
    let from = to - period_s as i64 * 1000;
    // What only the daemon knows; without it the digest has the rest.
    let (episodes, peak) = match socket_path(&args.socket.socket, &args.socket.config.config)
        .ok()
        .and_then(|p| request(&p, &Request::Status).ok())
    {
        Some(answer) => {
            let lp = answer.get("loop").cloned().unwrap_or_default();
            let episodes: Vec<Episode> = lp
                .get("guard_episodes")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let peaks: Vec<(i64, u64, i64)> = lp
                .get("conn_peaks")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let peak = peaks
                .into_iter()
                .filter(|(_, _, at)| (from..to).contains(at))
                .map(|(_, n, at)| (n, at))
                .max_by_key(|(n, _)| *n);
            (episodes, peak)
        }
        None => (Vec::new(), None),
    };
    let ledger = settings.state_dir.join("ledger.db");
    let d = gather(&settings, Some(&ledger), from, to, episodes, peak)?;
    if args.json {
        let mut doc = serde_json::to_vec_pretty(&d)?;
        doc.push(b'\n');
        emit(&doc)?;
    } else {
        let text = format!("{}\n\n{}", d.subject(), d.text());
        emit(text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
