//! The command line: argument definitions and the thin glue that runs the
//! pipeline and writes its output.

mod assets;
mod conns;
mod control;
mod dashboard;
mod digest;
mod html;
mod import;
mod replay;
mod run;
mod sniff;
mod top;
pub mod values;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::log::json::JsonFields;
use crate::log::{Dialect, FormatSpec, TrustedProxies};
use crate::pipeline::{self, Job};
use crate::report::{self, RankBy, csv::CsvTable, text};
use crate::source::Input;
use crate::stats::Filter;

/// An error and its causes, each said once: many errors already include
/// their cause in their own text ("cannot open /tmp: it is a directory"),
/// and `{:#}` would repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

#[derive(Debug, Parser)]
#[command(
    name = "webfence",
    version,
    about = "See who is hammering your web server, and fence them off.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyze access logs: top clients, paths, statuses, agents, rates.
    Report(ReportArgs),
    /// Run the rules over past logs in log time and explain every decision.
    Replay(ReplayArgs),
    /// Validate configuration files; report every error with its location.
    Check(CheckArgs),
    /// Print the effective rules (built-in ones and the configuration's).
    Rules(RulesArgs),
    /// Follow growing logs and show who is hammering the server right now.
    Top(TopArgs),
    /// The guard daemon: follow the logs, run the rules, ban in the kernel.
    Run(DaemonArgs),
    /// List the bans in force (or the history) from the running daemon.
    Bans(BansArgs),
    /// Ban addresses or networks by hand, one or many (from a file or stdin).
    Ban(BanArgs),
    /// Lift bans by hand.
    Unban(UnbanArgs),
    /// The daemon's sources and how far behind each is, rules, bans and
    /// backend health.
    Status(StatusArgs),
    /// Connections to this machine's listening ports per client, busiest
    /// first (established and half-open), from the kernel's table.
    Conns(ConnsArgs),
    /// Who on the network is torrenting: capture for a while (or read a
    /// saved capture) and rank local addresses by BitTorrent packets (TCP,
    /// uTP, DHT, trackers) with their remote peers.
    Sniff(SniffArgs),
    /// A summary of the last period (requests, busiest clients, paths,
    /// statuses, bans by rule, guard episodes), from the logs and the
    /// ledger: what a [digest.NAME] sends, for a cron job or a look.
    Digest(DigestArgs),
    /// Print another tool's configuration as webfence TOML: `webfence
    /// import sysfence /etc/sysfence.conf` (each sysfence rule as a guard).
    /// `-c` reads sysfence files as they are, too.
    Import(ImportArgs),
    /// Ask the running daemon to read its configuration again (as SIGHUP
    /// does) and say whether it took it.
    Reload(ReloadArgs),
    /// Remove everything webfence put in the kernel (its nftables table,
    /// ipsets and rules, or null routes), for an admin who uninstalls.
    /// Refused while the daemon runs: stop it first.
    Flush(FlushArgs),
    /// Print a completion script: webfence completions bash >
    /// /etc/bash_completion.d/webfence (also zsh, fish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages and completions under DIR (for packaging).
    #[command(hide = true)]
    Assets { dir: std::path::PathBuf },
}

#[derive(Debug, Args)]
struct SniffArgs {
    /// Interface to capture on ("any" for all) [default: the default
    /// route's]. Needs CAP_NET_RAW.
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        conflicts_with = "read"
    )]
    interface: Option<String>,
    /// How long to capture (10s, 1m…).
    #[arg(long = "for", value_name = "DURATION", default_value = "10s", value_parser = values::parse_duration)]
    duration: u64,
    /// Read a saved capture (pcap or pcapng) instead, as `tshark -r` does.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    read: Option<std::path::PathBuf>,
    /// The local network(s): CIDRs, repeatable or comma-separated
    /// [default: the private ranges 10/8, 172.16/12, 192.168/16,
    /// 100.64/10, fc00::/7].
    #[arg(long, value_name = "CIDR")]
    local: Vec<String>,
    /// Rows (0 for all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    top: usize,
    /// Count every port: by default TCP 22, 80, 443 and UDP 443 (SSH, web,
    /// QUIC) are skipped, in the kernel for a live capture.
    #[arg(long)]
    all_ports: bool,
    /// TCP ports to skip instead of 22, 80, 443 (repeatable).
    #[arg(long = "skip-tcp", value_name = "PORT", conflicts_with = "all_ports")]
    skip_tcp: Vec<u16>,
    /// UDP ports to skip instead of 443 (repeatable).
    #[arg(long = "skip-udp", value_name = "PORT", conflicts_with = "all_ports")]
    skip_udp: Vec<u16>,
    /// One JSON document.
    #[arg(long)]
    json: bool,
    /// No notes on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ConnsArgs {
    /// The table as one JSON object.
    #[arg(long)]
    json: bool,
    /// Only these states (established, syn-recv, fin-wait-1, close-wait,
    /// time-wait..., or all); repeat or separate with commas. Default: every
    /// state but time-wait.
    #[arg(long, value_name = "STATE")]
    state: Vec<String>,
    /// Only connections to this local port; repeat for more.
    #[arg(long, value_name = "PORT")]
    port: Vec<u16>,
    /// How many clients to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Count per network: IPv4 /24, IPv6 /64.
    #[arg(long)]
    group: bool,
    /// Read /proc/net/tcp{,6} instead of netlink sock_diag.
    #[arg(long)]
    proc: bool,
}

#[derive(Debug, Args)]
struct DigestArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The period, ending now.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    since: String,
    /// The digest as JSON.
    #[arg(long)]
    json: bool,
    /// The ledger's directory, instead of [daemon] state_dir.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Logs to read instead of [daemon] logs.
    #[arg(value_name = "FILE|GLOB")]
    files: Vec<String>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The tool whose configuration it is.
    #[arg(value_enum)]
    from: ImportFrom,
    /// Its configuration files.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportFrom {
    /// sysfence's rules (`rule "name" { la1 >= 10 } run '...'`), as guards.
    Sysfence,
}

#[derive(Debug, Args)]
struct ReloadArgs {
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Debug, Args)]
struct FlushArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The backend to clear, instead of [daemon] backend.
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Logs to follow (files or globs), instead of [daemon] logs.
    #[arg(value_name = "FILE|GLOB")]
    files: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Decide and log, but touch nothing: no kernel, no ledger, no hooks.
    #[arg(long)]
    dry_run: bool,
    /// Where bans go (nftables, ipset, route, none), instead of [daemon] backend.
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Directory of the ledger and checkpoints, instead of [daemon] state_dir.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// The control socket, instead of [daemon] socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
    /// Read logs that have no checkpoint from their start, not their end.
    #[arg(long)]
    from_start: bool,
    /// Start even if none of the logs exists yet, and wait for them (the
    /// default is to refuse: a typo would leave the server unprotected).
    #[arg(long)]
    wait_for_logs: bool,
    /// More detail in the logs (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors in the logs.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

/// How the control commands find the daemon.
#[derive(Debug, Args)]
struct SocketArgs {
    /// The daemon's control socket [default: [daemon] socket of the
    /// configuration, else /run/webfence/webfence.sock].
    #[arg(long, value_name = "PATH", env = "WEBFENCE_SOCKET")]
    socket: Option<std::path::PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct BansArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Also bans that ended: expired, lifted or replaced (the history).
    #[arg(long)]
    history: bool,
    /// Only bans by this rule ("manual" for bans by hand).
    #[arg(long, value_name = "RULE")]
    rule: Option<String>,
    /// Only bans of addresses inside this address or CIDR.
    #[arg(long, value_name = "IP|CIDR")]
    ip: Option<String>,
    /// At most this many rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// One JSON object per ban per line.
    #[arg(long)]
    json: bool,
    /// The bans in force across the farm, from Redis ([farm]), with the
    /// node that decided each.
    #[arg(long, conflicts_with = "history")]
    farm: bool,
}

#[derive(Debug, Args)]
struct BanArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Addresses or CIDRs.
    #[arg(value_name = "IP|CIDR")]
    subjects: Vec<String>,
    /// Also read addresses from this file, one per line ('-' reads stdin;
    /// blank lines and '#' comments are skipped).
    #[arg(long, value_name = "FILE")]
    file: Option<String>,
    /// How long the ban lasts, e.g. 30m, 1h, 7d.
    #[arg(long = "for", value_name = "DURATION", default_value = "1h", value_parser = values::parse_duration)]
    duration: u64,
    /// Why, for the ledger and `webfence bans`.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Ban even addresses on the allowlist.
    #[arg(long)]
    force: bool,
    /// Accept CIDRs with host bits set (1.2.3.4/8) as their network
    /// (1.0.0.0/8), saying so; without it they are refused.
    #[arg(long)]
    normalize: bool,
    /// Replace bans in force even when they last longer (by default the
    /// longer ban is kept).
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Args)]
struct UnbanArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Addresses or CIDRs, as banned.
    #[arg(value_name = "IP|CIDR", required_unless_present = "all")]
    subjects: Vec<String>,
    /// Lift every ban in force.
    #[arg(long, conflicts_with = "subjects")]
    all: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// One rule: its figures and the bans it holds in force (as
    /// `fail2ban-client status JAIL`).
    #[arg(value_name = "RULE")]
    rule: Option<String>,
    /// The status as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Logs to follow: files or globs (quote them: '/var/log/nginx/*access.log');
    /// files that appear later are followed too.
    #[arg(value_name = "FILE|GLOB")]
    files: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    format: FormatArgs,
    /// Read the files from their start instead of their end.
    #[arg(long)]
    from_start: bool,
    /// Wait for files that do not exist yet (globs always wait).
    #[arg(long)]
    wait: bool,
    /// Print a compact text snapshot every interval instead of the
    /// dashboard (also what happens without a terminal).
    #[arg(long)]
    plain: bool,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    interval: u64,
    /// Client rows per snapshot.
    #[arg(long, default_value_t = 10, value_name = "N")]
    rows: usize,
    /// Group clients by /24 (IPv4) and /64 (IPv6).
    #[arg(short, long)]
    group: bool,
    /// Only clients, paths and agents containing this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Stop after this many refreshes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// Which configuration to use; shared by every command that reads one.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// Configuration file [default: /etc/webfence/webfence.toml if it exists,
    /// else the built-in rules]; repeat to layer several in order.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Vec<std::path::PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<crate::detect::RuleSet> {
        use crate::daemon::runtime::invalid_configuration;
        let config =
            crate::detect::Config::load_default_or(&self.config).map_err(invalid_configuration)?;
        crate::detect::RuleSet::compile(&config).map_err(invalid_configuration)
    }
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Access logs, plain or gzip, replayed oldest first; '-' reads stdin.
    #[arg(value_name = "FILE")]
    files: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    format: FormatArgs,
    /// One JSON object per decision per line (the summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Show, for one client, each rule's state over time: why it was banned,
    /// or why not.
    #[arg(long, value_name = "IP", conflicts_with = "json")]
    explain: Option<String>,
    /// Show times in the local time zone instead of UTC.
    #[arg(long)]
    local: bool,
    /// Also write the decisions with the log's report as one self-contained
    /// HTML file ('-' for stdout).
    #[arg(long, value_name = "FILE", conflicts_with = "explain")]
    html: Option<std::path::PathBuf>,
    /// Rows per table of the --html report (0 for all).
    #[arg(long, default_value_t = 10, value_name = "N", requires = "html")]
    top: usize,
    #[command(flatten)]
    run: RunArgs,
}

/// How a batch command runs and talks; shared by report and replay.
#[derive(Debug, Args)]
struct RunArgs {
    /// When to colour the tables.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Lay tables out at full width, whatever the terminal's width.
    #[arg(long)]
    wide: bool,
    /// Parser threads [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Do not print notes on stderr (detected format, warnings, and replay's
    /// summary in --json mode).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct RulesArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the rules as one JSON document.
    #[arg(long)]
    json: bool,
    /// When to colour the tables.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Lay tables out at full width, whatever the terminal's width.
    #[arg(long)]
    wide: bool,
}

/// How to read log lines; shared by every command that reads logs.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Log format: auto (recognise from the first lines), combined, common,
    /// vhost_combined, main (nginx, with X-Forwarded-For) or json.
    #[arg(short, long, default_value = "auto", value_parser = values::parse_format, group = "log_format")]
    format: FormatSpec,
    /// A custom nginx log_format string (or the whole directive), e.g.
    /// '$remote_addr - $remote_user [$time_local] "$request" $status ...'.
    #[arg(long, value_name = "LOG_FORMAT", group = "log_format")]
    nginx_format: Option<String>,
    /// A custom Apache LogFormat string, e.g. '%h %l %u %t "%r" %>s %b'.
    #[arg(long, value_name = "LOGFORMAT", group = "log_format")]
    apache_format: Option<String>,
    /// A GoAccess --log-format string, e.g. '%h %^[%d:%t %^] "%r" %s %b "%R" "%u"'.
    #[arg(long, value_name = "LOG_FORMAT", group = "log_format")]
    goaccess_format: Option<String>,
    /// GoAccess --date-format for --goaccess-format [default: %d/%b/%Y].
    #[arg(long, value_name = "FMT", requires = "goaccess_format")]
    date_format: Option<String>,
    /// GoAccess --time-format for --goaccess-format [default: %H:%M:%S].
    #[arg(long, value_name = "FMT", requires = "goaccess_format")]
    time_format: Option<String>,
    /// For JSON logs: which key holds a field, e.g. client=request.remote_ip
    /// (fields: client, time, request, method, uri, protocol, status, bytes,
    /// referer, user_agent, host, forwarded_for, request_time). Repeatable.
    #[arg(long, value_name = "FIELD=KEY")]
    json_field: Vec<String>,
    /// A reverse proxy (address or CIDR) whose X-Forwarded-For is believed;
    /// repeatable. The client is the right-most untrusted address in it.
    #[arg(long, value_name = "CIDR")]
    trusted_proxy: Vec<String>,
}

impl FormatArgs {
    fn spec(&self) -> FormatSpec {
        let custom = |dialect, format: &String| FormatSpec::Custom {
            dialect,
            format: format.clone(),
            date_format: self.date_format.clone(),
            time_format: self.time_format.clone(),
        };
        if let Some(f) = &self.nginx_format {
            custom(Dialect::Nginx, f)
        } else if let Some(f) = &self.apache_format {
            custom(Dialect::Apache, f)
        } else if let Some(f) = &self.goaccess_format {
            custom(Dialect::GoAccess, f)
        } else {
            self.format.clone()
        }
    }

    fn json_fields(&self) -> Result<JsonFields> {
        let mut fields = JsonFields::default();
        for spec in &self.json_field {
            let Some((name, key)) = spec.split_once('=') else {
                bail!(
                    "invalid --json-field '{spec}': expected FIELD=KEY, e.g. client=request.remote_ip"
                );
            };
            fields
                .set(name.trim(), key.trim())
                .map_err(|e| anyhow::anyhow!("invalid --json-field '{spec}': {e}"))?;
        }
        Ok(fields)
    }

    fn proxies(&self) -> Result<TrustedProxies> {
        let nets = self
            .trusted_proxy
            .iter()
            .map(|s| {
                crate::log::proxy::parse_cidr(s).ok_or_else(|| anyhow::anyhow!("invalid --trusted-proxy '{s}': expected an address or CIDR such as 10.0.0.0/8"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustedProxies::new(nets))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Access logs, plain or gzip (rotated sets make one report); '-' reads
    /// stdin, which is also read when no file is given and stdin is a pipe.
    #[arg(value_name = "FILE")]
    files: Vec<String>,
    #[command(flatten)]
    format: FormatArgs,
    /// Rows per table (0 for all).
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Rank tables by hits or by bytes.
    #[arg(long, value_enum, default_value_t = RankBy::Hits)]
    by: RankBy,
    /// Only requests at or after this time (2024-05-01, '2024-05-01 13:00',
    /// RFC 3339, epoch seconds, or a duration ago such as 2h).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only requests before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only clients in this address or CIDR; '!CIDR' excludes. Repeatable.
    #[arg(long, value_name = "CIDR", allow_hyphen_values = true)]
    ip: Vec<String>,
    /// Only these statuses: 404, 4xx, 500-599, or a comma-separated list.
    #[arg(long, value_name = "SPEC")]
    status: Vec<String>,
    /// Only paths matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    path: Option<String>,
    /// Only this virtual host (exact, or *.example.com). Repeatable.
    #[arg(long, value_name = "NAME")]
    host: Vec<String>,
    /// Write one JSON document instead of tables.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Write one table as CSV.
    #[arg(long, value_enum, value_name = "TABLE")]
    csv: Option<CsvTable>,
    /// Show times in the local time zone instead of UTC; zone-less --since
    /// and --until values are then local too.
    #[arg(long)]
    local: bool,
    /// Timeline bucket (1m, 5m, 1h, 1d…); chosen from the span by default.
    #[arg(long, value_name = "DURATION", value_parser = values::parse_duration)]
    bucket: Option<u64>,
    /// Write the report as one self-contained HTML file ('-' for stdout):
    /// charts, a time-range brush, sortable and filterable tables; it makes
    /// no network request when opened. The text report is then not printed.
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
    /// With --html: run the rules over the log and show what they would
    /// decide per client [default: when a configuration is given or exists].
    #[arg(long, overrides_with = "no_rules")]
    rules: bool,
    /// With --html: do not run the rules.
    #[arg(long)]
    no_rules: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// The inputs named on the command line, or stdin when it is a pipe.
fn inputs(files: &[String], command: &str) -> Result<Vec<Input>> {
    if files.is_empty() {
        if std::io::stdin().is_terminal() {
            bail!(
                "no input: name access log files, or '-' to read stdin (try 'webfence {command} /var/log/nginx/access.log')"
            );
        }
        return Ok(vec![Input::Stdin]);
    }
    Ok(files.iter().map(|f| Input::from_arg(f)).collect())
}

impl ColorChoice {
    /// The style for standard output; `wide` lifts the width limit.
    fn style(self, wide: bool) -> text::Style {
        let color = match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        text::Style {
            color,
            width: if wide { None } else { terminal_width() },
        }
    }
}

/// The width to lay text out for: the terminal's, or `COLUMNS` when set;
/// none for a pipe or a file (scripts get every column whole).
pub(crate) fn terminal_width() -> Option<usize> {
    use std::os::fd::AsRawFd;
    if std::io::stdout().is_terminal() {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills the winsize passed; stdout is open.
        let rc = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_col > 0 {
            return Some(usize::from(size.ws_col));
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Notes on stderr: the detected format and problems that did not stop the run.
fn print_notes(input: &pipeline::InputSummary) {
    let warnings = &input.warnings;
    if let Some(d) = &input.detection {
        eprintln!(
            "webfence: detected log format '{}' ({} of {} sample lines fit)",
            d.name(),
            d.parsed,
            d.sampled
        );
    }
    for w in warnings {
        eprintln!("webfence: warning: {w}");
    }
}

/// The error for inputs of which no line parsed, with the first bad lines.
fn unparsable(names: &[String], input: &pipeline::InputSummary) -> String {
    let (format, malformed, samples) = (&input.format, input.malformed, &input.samples);
    let mut msg = format!(
        "no line of {} could be parsed as '{format}' ({malformed} malformed)",
        names.join(", "),
    );
    for s in samples {
        msg.push_str(&format!(
            "\n  {}:{}: {}\n      {}",
            s.file, s.line, s.reason, s.text
        ));
    }
    msg.push_str("\n  hint: choose the format with --format, --nginx-format, --apache-format or --goaccess-format");
    msg
}

/// Writes to stdout; a closed pipe (`webfence report | head`) ends quietly.
fn emit(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn report(args: ReportArgs) -> Result<ExitCode> {
    let zone = if args.local {
        jiff::tz::TimeZone::system()
    } else {
        jiff::tz::TimeZone::UTC
    };
    let now = jiff::Timestamp::now();
    let mut filter = Filter::default();
    if let Some(s) = &args.since {
        filter.since =
            Some(values::parse_time(s, &zone, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?);
    }
    if let Some(u) = &args.until {
        filter.until =
            Some(values::parse_time(u, &zone, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?);
    }
    for ip in &args.ip {
        filter.add_ip(ip)?;
    }
    for st in &args.status {
        filter.add_status(st)?;
    }
    if let Some(p) = &args.path {
        filter.set_path(p)?;
    }
    for h in &args.host {
        filter.add_host(h);
    }

    let inputs = inputs(&args.files, "report")?;
    let names: Vec<String> = inputs.iter().map(Input::name).collect();
    // The rules for the page, loaded (and their errors said) before the
    // log is read.
    let page_rules = match &args.html {
        Some(_) if !args.no_rules => {
            let configured = !args.config.config.is_empty()
                || std::path::Path::new(crate::detect::config::DEFAULT_PATH).exists();
            if args.rules || configured {
                if args.rules {
                    html::refuse_stdin(&inputs, "--rules")?;
                }
                let stdin = inputs.iter().any(|i| matches!(i, Input::Stdin));
                if stdin {
                    if !args.run.quiet {
                        eprintln!(
                            "webfence: note: the page has no rule decisions: stdin can be read once (name the log files)"
                        );
                    }
                    None
                } else {
                    let set = args.config.load()?;
                    let used = html::rules_used(&args.config.config, &set);
                    Some((set, used))
                }
            } else {
                None
            }
        }
        _ => None,
    };
    let job = Job {
        inputs,
        format: args.format.spec(),
        json_fields: args.format.json_fields()?,
        proxies: args.format.proxies()?,
        filter,
        threads: threads(args.run.threads),
    };
    let analysis = pipeline::analyze(&job)?;
    if !args.run.quiet {
        print_notes(&analysis.input);
    }
    if analysis.stats.requests == 0 && analysis.stats.filtered == 0 && analysis.input.malformed > 0
    {
        eprintln!("webfence: error: {}", unparsable(&names, &analysis.input));
        return Ok(ExitCode::FAILURE);
    }

    let options = report::Options {
        top: args.top,
        by: args.by,
        zone: args.local.then_some(zone),
        bucket_s: args.bucket,
        max_buckets: if args.json || args.csv.is_some() {
            1440
        } else {
            48
        },
    };
    let built = report::build(&analysis, &options);
    if let Some(path) = &args.html {
        let decisions = match &page_rules {
            Some((set, _)) => Some(html::decisions_of(&job, set, args.run.quiet)?),
            None => None,
        };
        let page_report = report::build(
            &analysis,
            &html::options(args.top, args.by, options.zone.clone()),
        );
        html::write(
            path,
            html::Page {
                analysis: &analysis,
                report: &page_report,
                names: &names,
                zone: options.zone.as_ref(),
                decisions: decisions.as_deref().zip(page_rules.map(|(_, used)| used)),
            },
            args.run.quiet,
        )?;
        if !args.json && args.csv.is_none() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if args.json {
        let mut doc =
            serde_json::to_vec_pretty(&built).context("cannot encode the report as JSON")?;
        doc.push(b'\n');
        emit(&doc)?;
    } else if let Some(table) = args.csv {
        let mut buf = Vec::new();
        report::csv::write(&mut buf, &built, table).context("cannot write CSV")?;
        emit(&buf)?;
    } else {
        let style = args.run.color.style(args.run.wide);
        emit(text::render(&built, style, args.by == RankBy::Bytes).as_bytes())?;
    }
    // The process ends here: freeing the tables one key at a time (tens of
    // thousands of clients and paths) cost a few milliseconds of the
    // report's time for memory the system takes back anyway.
    std::mem::forget(built);
    std::mem::forget(analysis);
    Ok(ExitCode::SUCCESS)
}

/// Runs the command line; errors are printed as `webfence: error: …`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(args) => report(args),
        Command::Replay(args) => replay::replay(args),
        Command::Check(args) => replay::check(args),
        Command::Rules(args) => replay::rules(args),
        Command::Top(args) => top::top(args),
        Command::Run(args) => run::run(args),
        Command::Bans(args) => control::bans(args),
        Command::Ban(args) => control::ban(args),
        Command::Unban(args) => control::unban(args),
        Command::Status(args) => control::status(args),
        Command::Conns(args) => conns::conns(args),
        Command::Sniff(args) => sniff::sniff(args),
        Command::Digest(args) => digest::digest(args),
        Command::Import(args) => import::import(args),
        Command::Reload(args) => control::reload(args),
        Command::Flush(args) => control::flush(args),
        Command::Completions { shell } => assets::completions(shell),
        Command::Assets { dir } => assets::write_assets(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("webfence: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
