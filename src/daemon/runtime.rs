//! The guard daemon's runtime (`webfence run`): one loop follows the logs,
//! feeds the rule engine in real time and hands ban decisions to the
//! enforcer in one batch per wake-up; the control socket runs on a thread
//! of its own. The command line only builds [`RunOptions`] and calls
//! [`run`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Settings;
use super::control::{self, LoopStatus, ReloadOutcome, Shared, SourceStatus};
use super::enforcer::{Enforcer, EngineUpdate, Hooks, take_updates, wall_ms};
use super::lock;
use crate::detect::allow::{Allowlist, SystemHost};
use crate::detect::rules::{Action, ClassifyScratch};
use crate::detect::{Config, Decision, Engine, RuleSet};
use crate::enforce::hooks::{Facts, HookRunner};
use crate::enforce::ledger::{Ledger, NewBan};
use crate::log::json::JsonFields;
use crate::pipeline::{Job, LiveEvent, LiveParser};
use crate::report::decisions::{Context as DecisionContext, decision_json};
use crate::source::follow::{self, FollowOptions, Follower};
use crate::source::wake::Waker;
use crate::stats::Filter;

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
/// The longest a line waits while `format = "auto"` has not chosen yet.
const FORMAT_WAIT: Duration = Duration::from_secs(1);
/// The longest sleep when nothing happens; inotify wakes the loop sooner.
const IDLE_WAIT: Duration = Duration::from_millis(250);

struct Live {
    set: RuleSet,
    allow: Allowlist,
    engine: Engine,
    scratch: ClassifyScratch,
    format: Option<String>,
    malformed_shown: u64,
}

/// Bans logged one by one in a batch; a flood of thousands gets one line
/// for the rest (journald would rate-limit them anyway, and the ledger has
/// every one with its evidence).
const BANS_LOGGED_PER_BATCH: usize = 50;

/// Malformed lines logged one by one; the rest are counted in `status`.
const MALFORMED_SHOWN: u64 = 20;

impl Live {
    fn on(&mut self, event: LiveEvent<'_>) {
        match event {
            LiveEvent::Format(parsers) => {
                self.engine
                    .set_field_text(crate::pipeline::field_text_of(parsers.to_vec()));
            }
            LiveEvent::Request(r, line, number) => {
                let allowed = self.allow.contains(r.client);
                let mut ev = self.set.classify(r, allowed, &mut self.scratch);
                ev.loc = crate::detect::rules::loc(0, number);
                self.engine.feed(&ev, line);
            }
            LiveEvent::Malformed(path, number, reason) => {
                self.malformed_shown += 1;
                if self.malformed_shown <= MALFORMED_SHOWN {
                    tracing::warn!(file = %path.display(), line = number, "malformed log line: {reason}");
                }
            }
        }
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
    if settings.logs.is_empty() {
        anyhow::bail!(
            "no log to follow: set [daemon] logs in the configuration, or name files or globs, such as 'webfence run /var/log/nginx/access.log'"
        );
    }
    for log in &settings.logs {
        if let Some(kind) = follow::not_a_file(Path::new(log)) {
            anyhow::bail!("cannot follow {log}: it is {kind}; webfence follows regular files");
        }
    }
    Ok((config, set, settings))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunOptions) -> Result<ExitCode> {
    let (_config, set, settings) = load(&args)?;
    let dry_run = args.dry_run;
    if !args.wait_for_logs && !settings.logs.iter().any(|l| follow::exists(l)) {
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
    let hooks = Hooks {
        runner: (!dry_run).then(HookRunner::start),
        on_ban: settings.on_ban.clone(),
        on_unban: settings.on_unban.clone(),
        kill_connections: settings.kill_connections && !dry_run,
    };
    let now = wall_ms();
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
    let enforcer = Arc::new(Mutex::new(enforcer));
    let status = Arc::new(Mutex::new(LoopStatus {
        rules: set.rules.len(),
        started_ms: now,
        dry_run,
        ..LoopStatus::default()
    }));

    match control::bind(&settings.socket) {
        Ok(listener) => {
            let shared = Shared {
                enforcer: enforcer.clone(),
                status: status.clone(),
                default_ban_s: DEFAULT_MANUAL_BAN_S,
                request_reload: || RELOAD.store(true, Ordering::SeqCst),
            };
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || control::serve(listener, shared))?;
            tracing::info!(socket = %settings.socket.display(), "control socket ready");
        }
        Err(e) if dry_run => tracing::warn!("{e}"),
        Err(e) => return Err(e.into()),
    }

    let options = follow_options(&args);
    let checkpoints = match follow::load_checkpoints(&checkpoint_path) {
        Ok(cps) if !dry_run && !cps.is_empty() => cps,
        _ => Vec::new(),
    };
    let mut follower = if checkpoints.is_empty() {
        Follower::new(settings.logs.clone(), options)
    } else {
        tracing::info!(
            checkpoints = checkpoints.len(),
            "resuming where the logs were left"
        );
        Follower::resume(settings.logs.clone(), options, &checkpoints, Instant::now())
    };
    if !dry_run && checkpoints.is_empty() {
        // Where a first start begins (the end of each log) is saved at
        // once: a crash before the first periodic save then resumes here,
        // rather than at the end again, skipping what came in between.
        if let Err(e) = follow::save_checkpoints(&checkpoint_path, &follower.checkpoints()) {
            tracing::error!(file = %checkpoint_path.display(), error = %e, "cannot save checkpoints");
        }
    }
    let mut waker = Waker::new(&follower.directories());
    let mut parser = LiveParser::new(live_job(&settings));
    let names = vec![settings.logs.join(", ")];
    let mut live = Live {
        set: set.clone(),
        allow,
        engine,
        scratch: ClassifyScratch::default(),
        format: named_format(&settings.format),
        malformed_shown: 0,
    };
    warm_up(&checkpoints, &mut parser, &mut live);
    install_signal_handlers();
    tracing::info!(
        logs = %settings.logs.join(", "),
        rules = set.rules.len(),
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
        let checkpoint_path = (!dry_run).then(|| checkpoint_path.clone());
        std::thread::Builder::new()
            .name("enforcer".into())
            .spawn(move || {
                enforcer_loop(&enforcer, &inbox, set, &names, dry_run, checkpoint_path)
            })?
    };

    let mut decisions_total = 0u64;
    let mut nagger = Nagger::default();
    let mut settings = settings;
    publish(&status, &follower, &parser, &live, 0);
    let mut last_save = Instant::now();
    let mut last_resolve = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            let mut parts = Running {
                live: &mut live,
                follower: &mut follower,
                parser: &mut parser,
                settings: &mut settings,
            };
            let outcome = match reload(&args, &mut parts, &enforcer, dry_run) {
                Ok(set) => {
                    let message = format!("{} rules loaded", set.rules.len());
                    lock(&status).rules = set.rules.len();
                    waker.watch(&follower.directories());
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
        let mut read_any = false;
        follower.poll(Instant::now(), &mut |path, bytes| {
            read_any = true;
            parser.feed(path, bytes, &mut |e| live.on(e));
        });
        for w in follower.warnings.drain(..) {
            tracing::warn!("{w}");
        }
        // No line waits more than a second for the format to be known.
        if parser.waiting_for().is_some_and(|w| w >= FORMAT_WAIT) {
            parser.flush_sample(&mut |e| live.on(e));
        }
        let detected_any = parser
            .notes
            .iter()
            .any(|n| n.starts_with("detected log format"));
        for n in parser.notes.drain(..) {
            tracing::info!("{n}");
        }
        if detected_any {
            let names: Vec<String> = parser
                .parsers()
                .iter()
                .map(|p| p.name().to_string())
                .collect();
            live.format = Some(format!("{} (detected)", names.join(", ")));
        }
        let decisions = live.engine.take_decisions();
        if !decisions.is_empty() {
            decisions_total += decisions.len() as u64;
            count_by_rule(&mut lock(&status).per_rule, &decisions);
            // Blocks while the queue is full: reading ahead of enforcement
            // by more than a few batches only grows memory.
            if to_enforcer.send(ToEnforcer::Decisions(decisions)).is_err() {
                anyhow::bail!("the enforcer thread stopped");
            }
        }
        for u in take_updates(&updates) {
            match u {
                EngineUpdate::Banned(s, until) => live.engine.restore_ban(s, until),
                EngineUpdate::Lifted(s) => live.engine.lift_ban(s),
            }
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            // Saved by the enforcer once the decisions sent before them
            // are applied: a crash never skips a line whose bans are not
            // in the ledger.
            let _ = to_enforcer.send(ToEnforcer::Checkpoints(follower.checkpoints()));
            publish(&status, &follower, &parser, &live, decisions_total);
            nagger.say(&lock(&status).problems);
            waker.watch(&follower.directories());
        }
        if live.allow.resolve_every_s > 0
            && !live.allow.hosts.is_empty()
            && last_resolve.elapsed().as_secs() >= live.allow.resolve_every_s
        {
            last_resolve = Instant::now();
            for w in live.allow.refresh(&SystemHost) {
                tracing::warn!("{w}");
            }
        }
        if !read_any {
            waker.wait(IDLE_WAIT);
        }
    }
    let _ = to_enforcer.send(ToEnforcer::Checkpoints(follower.checkpoints()));
    drop(to_enforcer);
    if worker.join().is_err() {
        tracing::error!("the enforcer thread panicked");
    }
    let _ = std::fs::remove_file(&settings.socket);
    tracing::info!("stopped; bans stay in the kernel until they expire");
    Ok(ExitCode::SUCCESS)
}

/// What the follow loop hands the enforcer thread, in order.
enum ToEnforcer {
    Decisions(Vec<Decision>),
    /// A reloaded ruleset (its named actions).
    Rules(Box<RuleSet>),
    /// Where the logs were read to when the decisions before this were
    /// sent.
    Checkpoints(Vec<follow::Checkpoint>),
}

/// Batches waiting for the enforcer before the follow loop waits.
const ENFORCER_QUEUE: usize = 4;
/// How often the enforcer expires bans and checks the backend when no
/// batch arrives.
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// The enforcer thread: applies each batch (everything queued at once, as
/// one transaction, when it fell behind), saves checkpoints after the
/// decisions before them, and keeps the backend maintained.
fn enforcer_loop(
    enforcer: &Mutex<Enforcer>,
    inbox: &std::sync::mpsc::Receiver<ToEnforcer>,
    mut set: RuleSet,
    names: &[String],
    dry_run: bool,
    checkpoint_path: Option<PathBuf>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let save = |cps: &[follow::Checkpoint]| {
        if let Some(path) = &checkpoint_path {
            if let Err(e) = follow::save_checkpoints(path, cps) {
                tracing::error!(file = %path.display(), error = %e, "cannot save checkpoints");
            }
        }
    };
    loop {
        let first = match inbox.recv_timeout(MAINTAIN_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut decisions = Vec::new();
        let mut checkpoints = None;
        let mut next = first;
        while let Some(m) = next.take() {
            match m {
                ToEnforcer::Decisions(mut d) => decisions.append(&mut d),
                ToEnforcer::Rules(r) => {
                    // Decisions made under the old rules go out with the
                    // old actions first.
                    {
                        let mut e = lock(enforcer);
                        enforce(&mut e, &decisions, &set, names, dry_run);
                    }
                    decisions.clear();
                    set = *r;
                }
                ToEnforcer::Checkpoints(c) => {
                    // Later decisions wait for the next round, so these
                    // checkpoints are saved after exactly what preceded them.
                    checkpoints = Some(c);
                    break;
                }
            }
            next = inbox.try_recv().ok();
        }
        let unrecorded = {
            let mut e = lock(enforcer);
            enforce(&mut e, &decisions, &set, names, dry_run);
            e.maintain();
            e.pending()
        };
        // While bans wait in memory for the ledger, the logs are not marked
        // read past them: a crash then re-reads and decides them again.
        if let Some(c) = checkpoints.filter(|_| unrecorded == 0) {
            save(&c);
        }
    }
}

/// How much of each log before its checkpoint a restart reads again: its
/// lines rebuild the rules' counting windows (a burst that straddled a
/// SIGKILL is still one burst), and the decisions they make are dropped,
/// as they were made before the restart. 16 MiB is about 80,000 lines of
/// combined format, a minute at 1,300 lines/s; state is not persisted.
const WARM_UP_BYTES: u64 = 16 << 20;

/// Rebuilds counting windows from the lines just before the checkpoints.
fn warm_up(checkpoints: &[follow::Checkpoint], parser: &mut LiveParser, live: &mut Live) {
    let started = Instant::now();
    for cp in checkpoints {
        if let Some(lines) = follow::lookback(cp, WARM_UP_BYTES) {
            parser.feed(&cp.path, &lines, &mut |e| {
                if !matches!(e, LiveEvent::Malformed(..)) {
                    live.on(e)
                }
            });
        }
    }
    parser.flush_sample(&mut |e| {
        if !matches!(e, LiveEvent::Malformed(..)) {
            live.on(e)
        }
    });
    let replayed = parser.lines;
    let redecided = live.engine.take_decisions().len();
    (parser.lines, parser.malformed) = (0, 0);
    if replayed > 0 {
        tracing::info!(
            lines = replayed,
            dropped_decisions = redecided,
            ms = started.elapsed().as_millis() as u64,
            "counting windows rebuilt from the lines before the checkpoints"
        );
    }
}

/// How the daemon follows its logs.
fn follow_options(args: &RunOptions) -> FollowOptions {
    FollowOptions {
        from_start: args.from_start,
        // A backlog is decided and enforced in slices of about ten
        // thousand lines, so the first bans of a flood land while the
        // rest is still being read.
        max_read: 1 << 20,
        ..FollowOptions::default()
    }
}

/// What the live parser needs of the settings.
fn live_job(settings: &Settings) -> Job {
    Job {
        inputs: Vec::new(),
        format: settings.format.clone(),
        json_fields: JsonFields::default(),
        proxies: settings.proxies.clone(),
        filter: Filter::default(),
        threads: 1,
    }
}

/// A named format is known from the start; "auto" says which it found
/// once it has seen enough lines.
fn named_format(format: &crate::log::FormatSpec) -> Option<String> {
    match format {
        crate::log::FormatSpec::Auto => None,
        crate::log::FormatSpec::Preset(p) => Some(p.name().to_string()),
        crate::log::FormatSpec::Custom { format, .. } => Some(format!("custom '{format}'")),
    }
}

/// A rule engine that knows the ledger: bans in force are not decided
/// again, and past bans count for escalation (after a restart or reload).
fn seeded_engine(set: &RuleSet, ledger: &Ledger, now: i64) -> Result<Engine> {
    let mut engine = Engine::new(set.clone());
    for b in ledger.active(now)? {
        engine.restore_ban(b.subject, b.expires_ms);
    }
    for (subject, count, last) in ledger.history(now.saturating_sub(set.escalation.remember_ms))? {
        engine.remember_bans(subject, count, last);
    }
    Ok(engine)
}

/// The follow loop's state a reload replaces.
struct Running<'a> {
    live: &'a mut Live,
    follower: &'a mut Follower,
    parser: &'a mut LiveParser,
    settings: &'a mut Settings,
}

/// SIGHUP: reads the configuration again. A bad one changes nothing. New
/// rules start with fresh counting windows (bans and escalation history
/// come from the ledger); new logs, format or proxies are followed from
/// where the old ones were read to; the backend, its table, the state
/// directory and the socket need a restart. Returns the new ruleset.
fn reload(
    args: &RunOptions,
    run: &mut Running<'_>,
    enforcer: &Mutex<Enforcer>,
    dry_run: bool,
) -> Result<RuleSet> {
    let (_config, set, new) = load(args)?;
    let old = run.settings.clone();
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
    let (allow, warnings) = Allowlist::build(&set.allow, &SystemHost);
    for w in warnings {
        tracing::warn!("{w}");
    }
    {
        let mut e = lock(enforcer);
        let mut engine = seeded_engine(&set, &e.ledger, e.now())?;
        // Decisions still queued for the enforcer are not in the ledger yet.
        engine.carry_over(&run.live.engine);
        run.live.engine = engine;
        e.allow = allow.clone();
        e.hooks.on_ban = new.on_ban.clone();
        e.hooks.on_unban = new.on_unban.clone();
        e.hooks.kill_connections = new.kill_connections && !dry_run;
    }
    if new.logs != old.logs || new.format != old.format || new.proxies != old.proxies {
        let options = follow_options(args);
        *run.follower = Follower::resume(
            new.logs.clone(),
            options,
            &run.follower.checkpoints(),
            Instant::now(),
        );
        *run.parser = LiveParser::new(live_job(&new));
        run.live.format = named_format(&new.format);
    } else if run.parser.format_known() {
        run.live
            .engine
            .set_field_text(crate::pipeline::field_text_of(run.parser.parsers()));
    }
    run.live.set = set.clone();
    run.live.allow = allow;
    // What needs a restart stays as it runs, so the next reload compares
    // against the truth.
    *run.settings = Settings {
        backend: old.backend,
        table: old.table,
        state_dir: old.state_dir,
        socket: old.socket,
        ..new
    };
    tracing::info!(
        rules = set.rules.len(),
        logs = %run.settings.logs.join(", "),
        "configuration reloaded; counting windows start afresh"
    );
    Ok(set)
}

fn publish(
    status: &Mutex<LoopStatus>,
    follower: &Follower,
    parser: &LiveParser,
    live: &Live,
    decisions: u64,
) {
    let mut st = lock(status);
    st.sources = follower
        .progress()
        .into_iter()
        .map(|(path, offset, size)| SourceStatus {
            path,
            offset,
            size,
            behind_bytes: size.saturating_sub(offset),
        })
        .collect();
    st.lines = parser.lines;
    st.malformed = parser.malformed;
    st.decisions = decisions;
    st.format = live.format.clone();
    st.problems = problems(follower, parser);
}

/// Per-rule figures for `status`, kept by the loop so a reload (which
/// rebuilds the engine) does not reset them.
fn count_by_rule(per_rule: &mut Vec<control::RuleStatus>, decisions: &[Decision]) {
    let now = wall_ms();
    for d in decisions {
        let i = match per_rule.iter().position(|r| r.rule == d.rule) {
            Some(i) => i,
            None => {
                per_rule.push(control::RuleStatus {
                    rule: d.rule.clone(),
                    ..Default::default()
                });
                per_rule.len() - 1
            }
        };
        let r = &mut per_rule[i];
        r.decisions += 1;
        r.bans += u64::from(matches!(d.action, Action::Ban));
        r.last_ms = Some(now);
    }
}

/// What keeps the daemon from protecting, in the words status shows.
fn problems(follower: &Follower, parser: &LiveParser) -> Vec<String> {
    let mut out: Vec<String> = follower
        .unmatched()
        .into_iter()
        .map(|(p, why)| format!("{p} {why}: nothing is read from it"))
        .collect();
    if let Some(e) = &parser.format_error {
        out.push(format!("lines are not decided on: {e}"));
    }
    out
}

/// How often a problem that lasts is logged again.
const PROBLEM_REPEAT: Duration = Duration::from_secs(300);

/// Logs problems when they appear and every few minutes while they last.
#[derive(Default)]
struct Nagger {
    said: Vec<(String, Instant)>,
}

impl Nagger {
    fn say(&mut self, problems: &[String]) {
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
                }
            }
        }
    }
}

/// One batch: every ban decided since the last wake-up goes to the ledger
/// and the kernel together; named actions run as hooks.
fn enforce(
    e: &mut Enforcer,
    decisions: &[Decision],
    set: &RuleSet,
    names: &[String],
    dry_run: bool,
) {
    if decisions.is_empty() {
        return;
    }
    let now = e.now();
    let cx = DecisionContext { names, zone: None };
    let mut bans = Vec::new();
    let mut facts = Vec::new();
    for d in decisions {
        let sample = d.evidence.samples.last().cloned();
        let what = if dry_run { "would " } else { "" };
        match &d.action {
            Action::Ban => {
                let secs = d.duration_s.unwrap_or(3600);
                if bans.len() < BANS_LOGGED_PER_BATCH {
                    tracing::info!(ip = %d.subject, rule = %d.rule, duration_s = secs, repeat = d.repeat,
                        "{what}ban: {}", d.reason);
                }
                bans.push(NewBan {
                    subject: d.subject,
                    rule: d.rule.clone(),
                    reason: d.reason.clone(),
                    evidence: Some(decision_json(d, &cx)),
                    origin: "rule".into(),
                    started_ms: now,
                    expires_ms: now.saturating_add(secs as i64 * 1000),
                });
                if e.hooks.on_ban.is_some() {
                    facts.push(Facts {
                        event: "ban".into(),
                        subject: d.subject,
                        rule: d.rule.clone(),
                        action: "ban".into(),
                        duration_s: Some(secs),
                        reason: d.reason.clone(),
                        sample,
                    });
                }
            }
            Action::Log => {
                tracing::info!(ip = %d.subject, rule = %d.rule, "log: {}", d.reason);
            }
            Action::Named(name) => {
                tracing::info!(ip = %d.subject, rule = %d.rule, action = %name, "{what}run action: {}", d.reason);
                let command = set
                    .actions
                    .iter()
                    .find(|a| &a.name == name)
                    .map(|a| a.command.clone());
                if let (Some(argv), Some(runner)) = (command, &e.hooks.runner) {
                    let f = Facts {
                        event: name.clone(),
                        subject: d.subject,
                        rule: d.rule.clone(),
                        action: name.clone(),
                        duration_s: d.duration_s,
                        reason: d.reason.clone(),
                        sample,
                    };
                    runner.submit(f.invocation(&argv));
                }
            }
        }
    }
    if bans.len() > BANS_LOGGED_PER_BATCH {
        tracing::info!(
            bans = bans.len(),
            "{}ban: {} more in this batch ('webfence bans' lists every one)",
            if dry_run { "would " } else { "" },
            bans.len() - BANS_LOGGED_PER_BATCH
        );
    }
    // A ledger failure is the enforcer's to report (once) and retry.
    let _ = e.ban(&bans, facts);
}

/// Where the control socket is: `--socket`, else the configuration's.
pub fn socket_path(socket: &Option<PathBuf>, config: &[PathBuf]) -> Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    Ok(load_settings(config)?.socket)
}
