//! The machine's state for guards: load, memory, swap, pressure (PSI) and
//! processes by name, read from /proc. Each read is one small file (a few
//! microseconds); processes are counted only when a guard asks.
//!
//! Hand-written rather than `procfs`: the guards need five files, each a
//! line or two, and `procfs` would be the heaviest dependency for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One reading of the machine. Absent values are ones this kernel does
/// not give (PSI needs 4.20 and `psi=1`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSample {
    pub la1: f64,
    pub la5: f64,
    pub la15: f64,
    pub mem_total: u64,
    pub mem_free: u64,
    pub mem_avail: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub cpu_pressure: Option<f64>,
    pub io_pressure: Option<f64>,
    pub mem_pressure: Option<f64>,
    /// Processes per name, for the names asked.
    pub procs: BTreeMap<String, u64>,
}

/// Where system readings come from; a fake in tests.
pub trait SystemProbe: Send {
    /// Reads the machine; `procs` are the process names to count.
    fn sample(&mut self, procs: &[String]) -> std::io::Result<SystemSample>;
}

/// The real machine, through a /proc root (another one in tests).
pub struct ProcProbe {
    root: PathBuf,
}

impl Default for ProcProbe {
    fn default() -> Self {
        ProcProbe {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcProbe {
    pub fn at(root: &Path) -> ProcProbe {
        ProcProbe {
            root: root.to_path_buf(),
        }
    }
}

impl SystemProbe for ProcProbe {
    fn sample(&mut self, procs: &[String]) -> std::io::Result<SystemSample> {
        let mut s = SystemSample::default();
        let load = std::fs::read_to_string(self.root.join("loadavg"))?;
        (s.la1, s.la5, s.la15) = parse_loadavg(&load);
        let mem = std::fs::read_to_string(self.root.join("meminfo"))?;
        parse_meminfo(&mem, &mut s);
        for (file, slot) in [
            ("cpu", &mut s.cpu_pressure),
            ("io", &mut s.io_pressure),
            ("memory", &mut s.mem_pressure),
        ] {
            *slot = std::fs::read_to_string(self.root.join("pressure").join(file))
                .ok()
                .and_then(|t| parse_psi_some_avg10(&t));
        }
        if !procs.is_empty() {
            s.procs = count_processes(&self.root, procs);
        }
        Ok(s)
    }
}

/// `0.52 0.58 0.59 1/389 12345`.
pub fn parse_loadavg(text: &str) -> (f64, f64, f64) {
    let mut it = text
        .split_ascii_whitespace()
        .map(|w| w.parse::<f64>().unwrap_or(0.0));
    (
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    )
}

/// `MemTotal:  16303692 kB` lines; missing keys stay 0.
pub fn parse_meminfo(text: &str, s: &mut SystemSample) {
    let mut avail = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kb: u64 = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let bytes = kb.saturating_mul(1024);
        match key {
            "MemTotal" => s.mem_total = bytes,
            "MemFree" => s.mem_free = bytes,
            "MemAvailable" => avail = Some(bytes),
            "SwapTotal" => s.swap_total = bytes,
            "SwapFree" => s.swap_free = bytes,
            _ => {}
        }
    }
    // Kernels before 3.14 have no MemAvailable: free is the best guess.
    s.mem_avail = avail.unwrap_or(s.mem_free);
}

/// `some avg10=1.23 avg60=...` → 1.23.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("avg10="))
        .and_then(|v| v.parse().ok())
}

/// Counts processes by their name (`comm`, as `ps -e` and `pgrep -x`
/// show it), for the names asked only.
pub fn count_processes(root: &Path, names: &[String]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = names.iter().map(|n| (n.clone(), 0)).collect();
    let Ok(dir) = std::fs::read_dir(root) else {
        return counts;
    };
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between the listing and the read.
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if let Some(c) = counts.get_mut(comm.trim_end_matches('\n')) {
            *c += 1;
        }
    }
    counts
}

impl SystemSample {
    pub fn mem_used(&self) -> u64 {
        self.mem_total.saturating_sub(self.mem_avail)
    }

    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("loadavg"), "10.50 6.25 1.00 2/300 999\n").unwrap();
        std::fs::write(
            root.join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\nSwapTotal:       50 kB\nSwapFree:         20 kB\n",
        )
        .unwrap();
        std::fs::create_dir(root.join("pressure")).unwrap();
        std::fs::write(
            root.join("pressure/cpu"),
            "some avg10=12.50 avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        for (pid, comm) in [
            ("1", "systemd"),
            ("20", "nginx"),
            ("21", "nginx"),
            ("30", "php-fpm"),
        ] {
            std::fs::create_dir(root.join(pid)).unwrap();
            std::fs::write(root.join(pid).join("comm"), format!("{comm}\n")).unwrap();
        }
        let s = ProcProbe::at(root)
            .sample(&["nginx".into(), "apache2".into()])
            .unwrap();
        assert_eq!((s.la1, s.la5, s.la15), (10.5, 6.25, 1.0));
        assert_eq!(s.mem_avail, 400 * 1024);
        assert_eq!(s.mem_used(), 600 * 1024);
        assert_eq!(s.swap_used(), 30 * 1024);
        assert_eq!(s.cpu_pressure, Some(12.5));
        assert_eq!(s.io_pressure, None);
        assert_eq!(s.procs["nginx"], 2);
        assert_eq!(s.procs["apache2"], 0);
    }

    #[test]
    fn the_real_proc_is_readable() {
        let s = ProcProbe::default().sample(&[]).unwrap();
        assert!(s.mem_total > 0 && s.mem_avail <= s.mem_total);
    }

    #[test]
    fn garbage_never_panics() {
        let mut s = SystemSample::default();
        parse_meminfo("MemTotal: lots\n:::\n\u{fffd}", &mut s);
        assert_eq!(parse_loadavg("x y"), (0.0, 0.0, 0.0));
        assert_eq!(parse_psi_some_avg10("some avg10=nan?"), None);
    }
}
