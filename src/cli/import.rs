//! `webfence import sysfence FILE...`: another tool's configuration as
//! webfence TOML, printed for the admin to review and keep.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{ImportArgs, emit};
use crate::detect::guard::sysfence;

pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let mut out = String::new();
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        match sysfence::to_toml(&name, &text) {
            Ok(toml) => out.push_str(&toml),
            Err(errors) => {
                failed = true;
                for e in errors {
                    eprintln!(
                        "webfence: error: {name}:{}:{}: {}",
                        e.line, e.column, e.message
                    );
                }
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    emit(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
