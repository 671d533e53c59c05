//! The guard daemon's runtime (`webfence run`): it wires the components
//! together. The follow loop (this thread) reads the log source, feeds the
//! rule detector and hands its decisions to the enforcer thread
//! (`actions::bans`) in one batch per wake-up; the machine loop
//! (`watch.rs`) runs guards, connection rules and kernel limits on a
//! thread of its own; the control socket has its own. The command line
//! only builds [`RunOptions`] and calls [`run`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Settings;
use super::actions::bans::{ENFORCER_QUEUE, ToEnforcer, enforcer_loop};
use super::actions::enforcer::{Enforcer, EngineUpdate, Hooks, take_updates, wall_ms};
use super::actions::farm::counters::FLUSH as FARM_FLUSH;
use super::actions::limits::KernelLimits;
use super::actions::notify;
use super::actions::web::{LiveView, WebState};
use super::control::{self, LoopStatus, ReloadOutcome, Shared, SourceStatus};
use super::detectors::rules::{RuleDetector, seeded_engine};
use super::lock;
use super::sources::logs::{LogSource, named_format, refuse_special};
use super::sources::machine::{Machine, SharedLogFigures};
use super::watch::{Watch, WatchConfig};
use crate::detect::allow::{Allowlist, SystemHost};
use crate::detect::{Config, RuleSet};
use crate::enforce::hooks::HookRunner;
use crate::enforce::ledger::Ledger;
use crate::source::conns::KernelConns;
use crate::source::follow;
use crate::source::system::ProcProbe;

/// What `webfence run` was asked on its command line; each `Option`
/// overrides the configuration's setting.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Logs to follow instead of `[daemon] logs`.
    pub files: Vec<String>,
    /// Configuration files, layered in order (none: the default one).
    pub config: Vec<PathBuf>,
    /// Decide and log, touch nothing.
    pub dry_run: bool,
    pub backend: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Read logs without a checkpoint from their start.
    pub from_start: bool,
    /// Start even when none of the logs exists yet.
    pub wait_for_logs: bool,
}

/// A configuration that does not compile, as every command reports it:
/// each error on its own indented line.
pub fn invalid_configuration(e: crate::detect::ConfigErrors) -> anyhow::Error {
    let lines: Vec<String> = e.to_string().lines().map(|l| format!("  {l}")).collect();
    anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
}

/// The daemon's settings from these configuration files (none: the
/// default one), as `run` and the commands that find its socket, ledger
/// or backend read them.
pub fn load_settings(config: &[PathBuf]) -> Result<Settings> {
    let config = Config::load_default_or(config).map_err(invalid_configuration)?;
    Settings::compile(&config).map_err(invalid_configuration)
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// How long a ban lasts when `webfence ban` gives no `--for`.
const DEFAULT_MANUAL_BAN_S: u64 = 3600;
/// How often checkpoints are saved and `status` refreshed.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Seconds behind the newest line past which the follower is said to lag.
const LAG_WARN_S: f64 = 60.0;
/// The longest sleep when nothing happens; inotify wakes the loop sooner.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Longest that `status` lags the follow loop while lines keep coming.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// When the follow loop's figures go out to `status`: as soon as the loop
/// has caught up with the logs, and every [`PUBLISH_EVERY`] while it reads
/// on. (Once a second left `status` showing no lines for up to a second
/// after a start, or after a burst.)
struct Freshness {
    last: Instant,
    pending: bool,
}

impl Freshness {
    fn new(now: Instant) -> Self {
        Freshness {
            last: now,
            pending: false,
        }
    }

    /// Whether to publish now, after a pass that `read_any` lines.
    fn due(&mut self, read_any: bool, now: Instant) -> bool {
        self.pending |= read_any;
        if !self.pending || (read_any && now.duration_since(self.last) < PUBLISH_EVERY) {
            return false;
        }
        self.published(now);
        true
    }

    fn published(&mut self, now: Instant) {
        self.last = now;
        self.pending = false;
    }
}

fn load(args: &RunOptions) -> Result<(Config, RuleSet, Settings)> {
    let invalid = invalid_configuration;
    let config = Config::load_default_or(&args.config).map_err(invalid)?;
    let set = RuleSet::compile(&config).map_err(invalid)?;
    let mut settings = Settings::compile(&config).map_err(invalid)?;
    if !args.files.is_empty() {
        settings.logs = args.files.clone();
    }
    if let Some(b) = &args.backend {
        settings.backend = b.clone();
    }
    if let Some(d) = &args.state_dir {
        settings.state_dir = d.clone();
    }
    if let Some(s) = &args.socket {
        settings.socket = s.clone();
    }
    // Guards or kernel limits are a reason to run without logs (a
    // sysfence replacement); the built-in connection rule alone is not,
    // or a typo in `logs` would start a daemon that reads nothing.
    let watches_machine = !settings.guards.is_empty() || settings.limits.is_some();
    if settings.logs.is_empty() && !watches_machine {
        anyhow::bail!(
            "no log to follow: set [daemon] logs in the configuration, or name files or globs, such as 'webfence run /var/log/nginx/access.log'"
        );
    }
    refuse_special(&settings.logs).map_err(anyhow::Error::msg)?;
    if !settings.blocklists.is_empty() && !args.dry_run && settings.backend != "nftables" {
        anyhow::bail!(
            "[blocklists] need the nftables backend (this configuration has backend = \"{}\"): the lists would not be enforced",
            settings.backend
        );
    }
    Ok((config, set, settings))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunOptions) -> Result<ExitCode> {
    let (_config, set, settings) = load(&args)?;
    let dry_run = args.dry_run;
    if !args.wait_for_logs
        && !settings.logs.is_empty()
        && !settings.logs.iter().any(|l| follow::exists(l))
    {
        anyhow::bail!(
            "none of the logs to follow exists: {} (a typo? the server not started yet? --wait-for-logs starts anyway and waits for them)",
            settings.logs.join(", ")
        );
    }

    let (allow, warnings) = Allowlist::build(&set.allow, &SystemHost);
    for w in warnings {
        tracing::warn!("{w}");
    }

    let backend = if dry_run {
        "none"
    } else {
        settings.backend.as_str()
    };
    let backend =
        crate::enforce::backend(backend, &settings.table, Vec::new()).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown backend '{}' (expected one of {})",
                settings.backend,
                crate::enforce::BACKENDS.join(", ")
            )
        })?;
    let ledger_path = settings.state_dir.join("ledger.db");
    let checkpoint_path = settings.state_dir.join("checkpoints.json");
    let ledger = if dry_run {
        Ledger::open(Path::new(":memory:"))?
    } else {
        std::fs::create_dir_all(&settings.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                settings.state_dir.display()
            )
        })?;
        let ledger = Ledger::open(&ledger_path)?;
        Ledger::spawn_checkpointer(&ledger_path, Duration::from_secs(2))?;
        ledger
    };
    let now = wall_ms();
    let status = Arc::new(Mutex::new(LoopStatus {
        rules: set.rules.len() + set.conn_rules.len() + set.packet_rules.len(),
        started_ms: now,
        dry_run,
        ..LoopStatus::default()
    }));
    let notifier = notify::start(settings.notify.clone(), status.clone());
    let hooks = Hooks {
        runner: (!dry_run).then(HookRunner::start),
        on_ban: settings.on_ban.clone(),
        on_unban: settings.on_unban.clone(),
        kill_connections: settings.kill_connections && !dry_run,
        notify: Some(notifier.clone()),
    };
    let engine = seeded_engine(&set, &ledger, now)?;
    let mut enforcer = Enforcer::new(
        ledger,
        backend,
        hooks,
        allow.clone(),
        Box::new(wall_ms),
        settings.retry_s,
        settings.check_every_s,
    );
    // Bans that ran out while webfence was down end now; then the kernel
    // is made to match the ledger.
    enforcer.expire();
    if let Err(e) = enforcer.reconcile() {
        tracing::error!(backend = enforcer.backend_name(), error = %e,
            "backend unavailable; running degraded: bans are recorded and applied when it is back");
    }
    // [farm]: wrong credentials stop the start; Redis away does not.
    let farm_outbox = match &settings.farm {
        Some(f) => {
            super::actions::farm::check_credentials(f).map_err(|e| anyhow::anyhow!(e))?;
            let (tx, rx) = std::sync::mpsc::channel();
            enforcer.farm = Some(tx);
            Some((f.clone(), rx))
        }
        None => None,
    };
    let enforcer = Arc::new(Mutex::new(enforcer));
    let mut count_link = None;
    if let Some((f, rx)) = farm_outbox {
        tracing::info!(redis = %f.shown, farm = %f.name, node = %f.node, "farm: sharing bans through Redis");
        super::actions::farm::Farm {
            settings: f.clone(),
            enforcer: enforcer.clone(),
            status: status.clone(),
            stop: &STOP,
        }
        .start(rx)?;
        // Started with [farm] even without farm rules: a reload may add
        // some.
        count_link = Some(
            super::actions::farm::counters::Counters {
                settings: f,
                status: status.clone(),
                stop: &STOP,
            }
            .start()?,
        );
    } else if let Some(w) = super::actions::farm::unshared_rules(&set, None) {
        tracing::warn!("{w}");
    }

    // The machine loop: guards, connection rules and kernel limits.
    let log_figures = SharedLogFigures::default();
    let (to_watch, watch_inbox) = std::sync::mpsc::channel::<WatchConfig>();
    let watcher = {
        let mut watch = Watch {
            machine: Machine::new(
                Box::new(ProcProbe::default()),
                Box::new(KernelConns::default()),
                log_figures.clone(),
            ),
            enforcer: enforcer.clone(),
            status: status.clone(),
            names: vec![settings.logs.join(", ")],
            dry_run,
            limits: KernelLimits::new(&settings.table),
            check_every_ms: settings.check_every_s as i64 * 1000,
            notify: Some(notifier.clone()),
        };
        let first = WatchConfig {
            guards: settings.guards.clone(),
            set: set.clone(),
            limits: settings.limits.clone(),
            allow: allow.clone(),
            settings: settings.clone(),
        };
        let state = watch.prepare(first);
        std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || watch.run(state, watch_inbox))?
    };

    if settings.packets.is_none() && !set.packet_rules.is_empty() {
        tracing::warn!(
            rules = set.packet_rules.len(),
            "packet rules are configured but [packets] is not enabled: they decide nothing"
        );
    }
    // The packet source: samples on a thread of its own.
    let (to_packets, packets_inbox) = std::sync::mpsc::channel();
    let mut packets_running = false;
    if let Some(p) = settings.packets.clone() {
        lock(&status).packets = Some(Default::default());
        let source = super::sources::packets::PacketSource {
            settings: p,
            enforcer: enforcer.clone(),
            status: status.clone(),
            set: set.clone(),
            dry_run,
            notify: Some(notifier.clone()),
            stop: &STOP,
        };
        std::thread::Builder::new()
            .name("packets".into())
            .spawn(move || source.run(packets_inbox))?;
        packets_running = true;
    }

    // Blocklists: loaded, swapped and refreshed on a thread of their own.
    let (to_blocklists, blocklist_inbox) = std::sync::mpsc::channel();
    {
        let lists = super::actions::blocklists::Blocklists {
            nft: vec!["nft".into()],
            table: settings.table.clone(),
            cache: settings.state_dir.join("blocklists"),
            status: status.clone(),
            enforce: !dry_run,
        };
        let _ = to_blocklists.send((settings.blocklists.clone(), allow_nets(&allow)));
        std::thread::Builder::new()
            .name("blocklists".into())
            .spawn(move || lists.run(blocklist_inbox))?;
    }
    // What the control socket and the metrics read.
    let shared = || Shared {
        enforcer: enforcer.clone(),
        status: status.clone(),
        default_ban_s: DEFAULT_MANUAL_BAN_S,
        request_reload: || RELOAD.store(true, Ordering::SeqCst),
    };
    let web = WebState::new(settings.web.clone());
    let listening = settings.metrics.or(settings.web.as_ref().map(|w| w.listen));
    if let Some(addr) = listening {
        let what = if settings.metrics.is_some() {
            "[metrics]"
        } else {
            "[web]"
        };
        let listener = super::actions::metrics::bind(addr)
            .with_context(|| format!("cannot listen on {addr} for {what}"))?;
        let (shared, web) = (shared(), web.clone());
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || super::actions::metrics::serve(listener, shared, web))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics, health on /healthz");
        if settings.web.is_some() {
            tracing::info!(%addr, "live dashboard on http://{addr}/");
        }
    }
    let mut live_view = LiveView::new(web.clone(), set.memory_cap);
    match control::bind(&settings.socket) {
        Ok(listener) => {
            let shared = shared();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || control::serve(listener, shared))?;
            tracing::info!(socket = %settings.socket.display(), "control socket ready");
        }
        Err(e) if dry_run => tracing::warn!("{e}"),
        Err(e) => return Err(e.into()),
    }

    let checkpoints = match follow::load_checkpoints(&checkpoint_path) {
        Ok(cps) if !dry_run && !cps.is_empty() => cps,
        _ => Vec::new(),
    };
    if !checkpoints.is_empty() {
        tracing::info!(
            checkpoints = checkpoints.len(),
            "resuming where the logs were left"
        );
    }
    let mut logs = LogSource::new(&settings, args.from_start, &checkpoints);
    if !dry_run && checkpoints.is_empty() {
        // Where a first start begins (the end of each log) is saved at
        // once: a crash before the first periodic save then resumes here,
        // rather than at the end again, skipping what came in between.
        if let Err(e) = follow::save_checkpoints(&checkpoint_path, &logs.follower.checkpoints()) {
            tracing::error!(file = %checkpoint_path.display(), error = %e, "cannot save checkpoints");
        }
    }
    let names = vec![settings.logs.join(", ")];
    let mut rules = RuleDetector::new(
        set.clone(),
        allow.clone(),
        engine,
        named_format(&settings.format),
    );
    if settings.verify_crawlers {
        rules.crawlers = Some(crate::detect::crawlers::Verifier::start(Box::new(
            crate::detect::crawlers::SystemResolver,
        )));
    }
    let started = Instant::now();
    let replayed = logs.warm_up(&checkpoints, &mut |e| rules.on(e, None));
    if replayed > 0 {
        tracing::info!(
            lines = replayed,
            dropped_decisions = rules.engine.take_decisions().len(),
            ms = started.elapsed().as_millis() as u64,
            "counting windows rebuilt from the lines before the checkpoints"
        );
    }
    rules.figures = Default::default();
    // Only now: the warm-up's lines were counted by the farm before the
    // restart.
    if count_link.is_some() {
        rules.share_counts = true;
        rules.engine.share_counts();
    }
    let mut last_count_flush = Instant::now();
    install_signal_handlers();
    tracing::info!(
        logs = %settings.logs.join(", "),
        rules = set.rules.len() + set.conn_rules.len() + set.packet_rules.len(),
        guards = settings.guards.len(),
        limits = settings.limits.is_some(),
        dry_run,
        "webfence run started"
    );

    // Enforcement runs on its own thread: a big batch (hundreds of
    // milliseconds for 100k bans) never stops the logs being read and
    // decided, and the next batch is ready when it is done.
    let (to_enforcer, inbox) = std::sync::mpsc::sync_channel::<ToEnforcer>(ENFORCER_QUEUE);
    let updates = lock(&enforcer).updates();
    let worker = {
        let enforcer = enforcer.clone();
        let set = set.clone();
        let names = names.clone();
        let checkpoint_path = (!dry_run).then(|| checkpoint_path.clone());
        std::thread::Builder::new()
            .name("enforcer".into())
            .spawn(move || {
                enforcer_loop(&enforcer, &inbox, set, &names, dry_run, checkpoint_path)
            })?
    };

    let mut nagger = Nagger {
        notify: Some(notifier.clone()),
        ..Nagger::default()
    };
    let mut settings = settings;
    publish(&status, &logs, &rules);
    let mut freshness = Freshness::new(Instant::now());
    let mut last_save = Instant::now();
    let mut last_resolve = Instant::now();
    let mut lagging = false;
    while !STOP.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            let outcome = match reload(
                &args,
                &mut rules,
                &mut logs,
                &mut settings,
                &enforcer,
                dry_run,
            ) {
                Ok(set) => {
                    let n = set.rules.len() + set.conn_rules.len() + set.packet_rules.len();
                    let message = format!(
                        "{n} rules loaded, {} guards{}",
                        settings.guards.len(),
                        if settings.limits.is_some() {
                            ", kernel limits"
                        } else {
                            ""
                        }
                    );
                    lock(&status).rules = n;
                    // The dashboard follows [web] on a reload; where it
                    // listens is fixed at the start.
                    match (listening, &settings.web) {
                        (Some(at), Some(w)) if w.listen != at => tracing::warn!(
                            "[web] listen changed: the dashboard stays on {at} until a restart"
                        ),
                        (None, Some(w)) => tracing::warn!(
                            "[web] enabled by a reload: it listens on {} after a restart",
                            w.listen
                        ),
                        _ => {}
                    }
                    *lock(&web.settings) = settings.web.clone().filter(|_| listening.is_some());
                    match (&settings.packets, packets_running) {
                        (Some(p), true) => {
                            let _ = to_packets.send(Some((p.clone(), set.clone())));
                        }
                        (None, true) => {
                            let _ = to_packets.send(None);
                            packets_running = false;
                            lock(&status).packets = None;
                        }
                        (Some(_), false) => tracing::warn!(
                            "[packets] enabled by a reload: the capture starts after a restart"
                        ),
                        (None, false) => {}
                    }
                    live_view.reconfigure();
                    notifier.reconfigure(settings.notify.clone());
                    let _ =
                        to_blocklists.send((settings.blocklists.clone(), allow_nets(&rules.allow)));
                    let _ = to_watch.send(WatchConfig {
                        guards: settings.guards.clone(),
                        set: set.clone(),
                        limits: settings.limits.clone(),
                        allow: rules.allow.clone(),
                        settings: settings.clone(),
                    });
                    let _ = to_enforcer.send(ToEnforcer::Rules(Box::new(set)));
                    ReloadOutcome {
                        at_ms: wall_ms(),
                        ok: true,
                        message,
                    }
                }
                Err(e) => {
                    tracing::error!("reload refused; the running configuration stays: {e:#}");
                    ReloadOutcome {
                        at_ms: wall_ms(),
                        ok: false,
                        message: format!("{e:#}"),
                    }
                }
            };
            lock(&status).last_reload = Some(outcome);
        }
        // Before the lines: a ban lifted while the loop slept must not
        // keep the engine skipping the lines that woke it.
        for u in take_updates(&updates) {
            match u {
                EngineUpdate::Banned(s, until) => rules.engine.restore_ban(s, until),
                EngineUpdate::Lifted(s) => rules.engine.lift_ban(s),
                EngineUpdate::Remembered(s, n, last) => rules.engine.remember_bans(s, n, last),
            }
        }
        let recording = live_view.recording();
        let read_any = logs.poll(&mut |e| {
            if recording {
                rules.on(e, Some(&mut |r| live_view.record(r)))
            } else {
                rules.on(e, None)
            }
        });
        live_view.tick(wall_ms());
        if let Some(f) = logs.detected_format() {
            rules.format = Some(f);
        }
        if let Some(link) = &count_link {
            while let Ok(replies) = link.from_farm.try_recv() {
                rules.engine.farm_update(&replies);
            }
            if last_count_flush.elapsed() >= FARM_FLUSH {
                last_count_flush = Instant::now();
                let counts = rules.engine.take_farm_counts();
                if !counts.is_empty() {
                    let _ = link.to_farm.send(counts);
                }
            }
        }
        let decisions = rules.engine.take_decisions();
        if !decisions.is_empty() {
            lock(&status).count(&decisions);
            live_view.decided(&decisions);
            // Blocks while the queue is full: reading ahead of enforcement
            // by more than a few batches only grows memory.
            if to_enforcer.send(ToEnforcer::Decisions(decisions)).is_err() {
                anyhow::bail!("the enforcer thread stopped");
            }
        }
        if read_any {
            let mut f = rules.figures;
            f.behind_bytes = logs.behind_bytes();
            *lock(&log_figures) = f;
        }
        if freshness.due(read_any, Instant::now()) {
            publish(&status, &logs, &rules);
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            freshness.published(last_save);
            // Saved by the enforcer once the decisions sent before them
            // are applied: a crash never skips a line whose bans are not
            // in the ledger.
            let _ = to_enforcer.send(ToEnforcer::Checkpoints(logs.follower.checkpoints()));
            publish(&status, &logs, &rules);
            lock(&status).notify_dropped =
                notifier.dropped.load(std::sync::atomic::Ordering::Relaxed);
            // A follower far behind decides late: said once, and again
            // when it has caught up.
            let lag = lock(&status).lag_seconds;
            if !lagging && lag > LAG_WARN_S {
                lagging = true;
                tracing::warn!("the logs are read {lag:.0} s behind: decisions come late");
                notifier.send(crate::notify::Event::new(
                    crate::notify::Kind::Stalled,
                    crate::notify::Severity::Warning,
                    wall_ms(),
                    "lag",
                    &format!("the logs are read {lag:.0} s behind"),
                    "decisions come that much later than the lines",
                ));
            } else if lagging && lag < LAG_WARN_S / 6.0 {
                lagging = false;
                tracing::info!("the logs are read in time again");
                notifier.send(crate::notify::Event::new(
                    crate::notify::Kind::Resumed,
                    crate::notify::Severity::Info,
                    wall_ms(),
                    "lag",
                    "the logs are read in time again",
                    "",
                ));
            }
            if watcher.is_finished() {
                lock(&status).problems.push(
                    "the machine loop stopped: guards, connection rules and limits are not checked"
                        .into(),
                );
            }
            let problems = lock(&status).all_problems();
            nagger.say(&problems);
            logs.waker.watch(&logs.follower.directories());
            let mut f = rules.figures;
            f.behind_bytes = logs.behind_bytes();
            *lock(&log_figures) = f;
        }
        if rules.allow.resolve_every_s > 0
            && !rules.allow.hosts.is_empty()
            && last_resolve.elapsed().as_secs() >= rules.allow.resolve_every_s
        {
            last_resolve = Instant::now();
            for w in rules.allow.refresh(&SystemHost) {
                tracing::warn!("{w}");
            }
        }
        if !read_any {
            // Shared counts are exchanged every 100 ms, idle or not.
            logs.waker.wait(if rules.engine.shares_counts() {
                FARM_FLUSH
            } else {
                IDLE_WAIT
            });
        }
    }
    let _ = to_enforcer.send(ToEnforcer::Checkpoints(logs.follower.checkpoints()));
    drop(to_enforcer);
    drop(to_watch);
    if worker.join().is_err() {
        tracing::error!("the enforcer thread panicked");
    }
    if watcher.join().is_err() {
        tracing::error!("the machine loop panicked");
    }
    let _ = std::fs::remove_file(&settings.socket);
    tracing::info!("stopped; bans stay in the kernel until they expire");
    Ok(ExitCode::SUCCESS)
}

/// The allowlist as networks, for exemptions the kernel applies.
fn allow_nets(allow: &Allowlist) -> Vec<ipnet::IpNet> {
    allow.subjects().iter().map(|s| s.to_net()).collect()
}

/// SIGHUP: reads the configuration again. A bad one changes nothing. New
/// rules start with fresh counting windows (bans and escalation history
/// come from the ledger); new logs, format or proxies are followed from
/// where the old ones were read to; the backend, its table, the state
/// directory and the socket need a restart. Returns the new ruleset.
fn reload(
    args: &RunOptions,
    rules: &mut RuleDetector,
    logs: &mut LogSource,
    settings: &mut Settings,
    enforcer: &Mutex<Enforcer>,
    dry_run: bool,
) -> Result<RuleSet> {
    let (_config, set, new) = load(args)?;
    let old = settings.clone();
    for (what, changed) in [
        ("backend", new.backend != old.backend),
        ("table", new.table != old.table),
        ("state_dir", new.state_dir != old.state_dir),
        ("socket", new.socket != old.socket),
    ] {
        if changed {
            tracing::warn!("[daemon] {what} changed: it takes effect after a restart");
        }
    }
    if new.farm != old.farm {
        tracing::warn!("[farm] changed: it takes effect after a restart");
    }
    if let Some(w) = super::actions::farm::unshared_rules(&set, old.farm.as_ref()) {
        tracing::warn!("{w}");
    }
    let (allow, warnings) = Allowlist::build(&set.allow, &SystemHost);
    for w in warnings {
        tracing::warn!("{w}");
    }
    {
        let mut e = lock(enforcer);
        let mut engine = seeded_engine(&set, &e.ledger, e.now())?;
        // Decisions still queued for the enforcer are not in the ledger yet.
        engine.carry_over(&rules.engine);
        rules.engine = engine;
        if rules.share_counts {
            rules.engine.share_counts();
        }
        e.allow = allow.clone();
        e.hooks.on_ban = new.on_ban.clone();
        e.hooks.on_unban = new.on_unban.clone();
        e.hooks.kill_connections = new.kill_connections && !dry_run;
    }
    if new.logs != old.logs || new.format != old.format || new.proxies != old.proxies {
        logs.reopen(&new, args.from_start);
        rules.format = named_format(&new.format);
    } else if logs.parser.format_known() {
        rules
            .engine
            .set_field_text(crate::pipeline::field_text_of(logs.parser.parsers()));
    }
    rules.set = set.clone();
    rules.allow = allow;
    // What needs a restart stays as it runs, so the next reload compares
    // against the truth.
    *settings = Settings {
        backend: old.backend,
        table: old.table,
        state_dir: old.state_dir,
        socket: old.socket,
        farm: old.farm,
        ..new
    };
    tracing::info!(
        rules = set.rules.len() + set.conn_rules.len() + set.packet_rules.len(),
        guards = settings.guards.len(),
        logs = %settings.logs.join(", "),
        "configuration reloaded; counting windows start afresh"
    );
    Ok(set)
}

fn publish(status: &Mutex<LoopStatus>, logs: &LogSource, rules: &RuleDetector) {
    let mut st = lock(status);
    st.sources = logs
        .follower
        .progress()
        .into_iter()
        .map(|(path, offset, size)| SourceStatus {
            path,
            offset,
            size,
            behind_bytes: size.saturating_sub(offset),
        })
        .collect();
    st.lines = logs.parser.lines;
    st.malformed = logs.parser.malformed;
    st.format = rules.format.clone();
    st.problems = logs.problems();
    st.engine_bytes = rules.engine.state_bytes() as u64;
    st.crawlers = rules.crawlers.as_ref().map(|c| c.status());
    let f = rules.figures;
    st.lag_seconds = if logs.behind_bytes() > 0 && f.newest_ms > 0 {
        (wall_ms() - f.newest_ms).max(0) as f64 / 1000.0
    } else {
        0.0
    };
}

/// How often a problem that lasts is logged again.
const PROBLEM_REPEAT: Duration = Duration::from_secs(300);

/// Logs problems when they appear and every few minutes while they last.
#[derive(Default)]
struct Nagger {
    said: Vec<(String, Instant)>,
    notify: Option<notify::NotifySender>,
}

impl Nagger {
    fn tell(
        &self,
        kind: crate::notify::Kind,
        severity: crate::notify::Severity,
        about: &str,
        title: &str,
    ) {
        if let Some(n) = &self.notify {
            n.send(crate::notify::Event::new(
                kind,
                severity,
                wall_ms(),
                about,
                title,
                "",
            ));
        }
    }

    fn say(&mut self, problems: &[String]) {
        for (gone, _) in self.said.iter().filter(|(p, _)| !problems.contains(p)) {
            tracing::info!("protecting again: {gone}");
            self.tell(
                crate::notify::Kind::Resumed,
                crate::notify::Severity::Info,
                gone,
                &format!("resolved: {gone}"),
            );
        }
        self.said.retain(|(p, _)| problems.contains(p));
        for p in problems {
            match self.said.iter_mut().find(|(q, _)| q == p) {
                Some((_, at)) if at.elapsed() < PROBLEM_REPEAT => {}
                Some((_, at)) => {
                    *at = Instant::now();
                    tracing::warn!("NOT PROTECTING: {p}");
                }
                None => {
                    self.said.push((p.clone(), Instant::now()));
                    tracing::warn!("NOT PROTECTING: {p}");
                    self.tell(
                        crate::notify::Kind::Stalled,
                        crate::notify::Severity::Critical,
                        p,
                        &format!("NOT PROTECTING: {p}"),
                    );
                }
            }
        }
    }
}

/// Where the control socket is: `--socket`, else the configuration's.
pub fn socket_path(socket: &Option<PathBuf>, config: &[PathBuf]) -> Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    Ok(load_settings(config)?.socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_loop_when_it_catches_up_and_while_it_reads() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut f = Freshness::new(t0);
        // Nothing read: nothing to say.
        assert!(!f.due(false, ms(50)));
        // Lines read 60 ms after the start: not yet, more may follow...
        assert!(!f.due(true, ms(60)));
        // ...but the loop caught up on the next pass: now.
        assert!(f.due(false, ms(61)));
        assert!(!f.due(false, ms(62)));
        // Reading on without a pause: every 100 ms.
        assert!(!f.due(true, ms(100)));
        assert!(!f.due(true, ms(160)));
        assert!(f.due(true, ms(161)));
        assert!(!f.due(true, ms(162)));
        // A long pass that read lines is published at once.
        assert!(f.due(true, ms(400)));
        // The once-a-second refresh counts as published.
        f.published(ms(450));
        assert!(!f.due(true, ms(500)));
        assert!(f.due(false, ms(501)));
    }
}
