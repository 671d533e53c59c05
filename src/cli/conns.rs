//! `webfence conns`: the connection table per client, busiest first.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{ConnsArgs, emit};
use crate::source::conns::{KernelConns, TcpState};
use crate::stats::conns::{ConnFilter, ConnTable};

pub fn conns(args: ConnsArgs) -> Result<ExitCode> {
    let mut states = Vec::new();
    for s in args.state.iter().flat_map(|s| s.split(',')) {
        let s = s.trim();
        if s == "all" {
            states.extend(TcpState::ALL.into_iter().filter(|s| *s != TcpState::Listen));
            continue;
        }
        match crate::detect::connrules::parse_state(s) {
            Ok(st) => states.push(st),
            Err(_) if s.eq_ignore_ascii_case("listen") => {
                bail!("--state listen: listening sockets are not connections; 'ss -ltn' lists them")
            }
            Err(e) => bail!("--state: {e}, or all"),
        }
    }
    let filter = ConnFilter {
        states: (!states.is_empty()).then_some(states),
        ports: args.port.clone(),
        group: args.group.then_some((24, 64)),
    };
    let mut source = KernelConns {
        proc_only: args.proc,
    };
    let table = ConnTable::read(&mut source, &filter).context(
        "cannot read the kernel's connection table (netlink sock_diag and /proc/net/tcp)",
    )?;
    if args.json {
        let mut doc = serde_json::to_vec_pretty(&serde_json::json!({
            "via": table.via,
            "listening": table.listening,
            "total": table.total,
            "established": table.established,
            "syn_recv": table.syn_recv,
            "clients": table.clients.iter().take(args.top).collect::<Vec<_>>(),
            "clients_total": table.clients.len(),
        }))?;
        doc.push(b'\n');
        emit(&doc)?;
    } else {
        emit(crate::report::conns::render(&table, args.top, args.group).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
