//! Man pages and shell completions, generated from the same clap
//! definitions that parse the arguments, so they cannot drift from them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// `webfence completions SHELL`: the script on standard output.
pub(super) fn completions(shell: Shell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "webfence", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `man/webfence.1`, one `man/webfence-COMMAND.1` per command, and
/// the bash, zsh and fish completions under `dir` (what the Debian
/// package ships).
pub(super) fn write_assets(dir: &Path) -> Result<ExitCode> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = Cli::command();
    let mut pages = vec![(man.join("webfence.1"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("webfence-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .display_name(name.clone())
            .bin_name(format!("webfence {}", sub.get_name()));
        pages.push((man.join(format!("{name}.1")), page));
    }
    for (path, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "webfence", &comp)
            .with_context(|| format!("cannot write the {shell} completions"))?;
    }
    Ok(ExitCode::SUCCESS)
}
