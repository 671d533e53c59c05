//! The logs as a source: the follower (files, rotation, checkpoints), the
//! live parser (a format per file, detected or named) and the inotify
//! waker, behind one [`LogSource`] that hands out parsed events.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::Settings;
use crate::log::json::JsonFields;
use crate::pipeline::{Job, LiveEvent, LiveParser};
use crate::source::follow::{self, Checkpoint, FollowOptions, Follower};
use crate::source::wake::Waker;
use crate::stats::Filter;

/// The longest a line waits while `format = "auto"` has not chosen yet.
const FORMAT_WAIT: Duration = Duration::from_secs(1);

/// How much of each log before its checkpoint a restart reads again: its
/// lines rebuild the rules' counting windows (a burst that straddled a
/// SIGKILL is still one burst), and the decisions they make are dropped,
/// as they were made before the restart. 16 MiB is about 80,000 lines of
/// combined format, a minute at 1,300 lines/s; state is not persisted.
const WARM_UP_BYTES: u64 = 16 << 20;

/// Reads at least this large go to the rules whole, to be parsed on every
/// core; smaller ones line by line, each line decided before the next is
/// parsed. A read is this large only when lines came faster than one
/// thread decides them (a flood) or had piled up (a restart, a backlog):
/// then throughput matters more than the next line's latency. 256 KiB is
/// about 1,300 lines of combined format.
const BULK_FROM: usize = 256 << 10;

pub struct LogSource {
    pub follower: Follower,
    pub parser: LiveParser,
    pub waker: Waker,
}

impl LogSource {
    /// Follows `settings.logs` from the checkpoints (or from their end, or
    /// their start with `from_start`).
    pub fn new(settings: &Settings, from_start: bool, checkpoints: &[Checkpoint]) -> LogSource {
        let options = follow_options(from_start);
        let follower = if checkpoints.is_empty() {
            Follower::new(settings.logs.clone(), options)
        } else {
            Follower::resume(settings.logs.clone(), options, checkpoints, Instant::now())
        };
        let waker = Waker::new(&follower.directories());
        LogSource {
            follower,
            parser: live_parser(settings),
            waker,
        }
    }

    /// Follows new logs, format or proxies from where the old were read.
    pub fn reopen(&mut self, settings: &Settings, from_start: bool) {
        self.follower = Follower::resume(
            settings.logs.clone(),
            follow_options(from_start),
            &self.follower.checkpoints(),
            Instant::now(),
        );
        self.parser = live_parser(settings);
        self.waker.watch(&self.follower.directories());
    }

    /// Reads what the logs gained and parses it; returns whether anything
    /// was read. Lines wait at most a second for the format to be known.
    pub fn poll(&mut self, on: &mut dyn FnMut(LiveEvent<'_>)) -> bool {
        let mut read_any = false;
        let parser = &mut self.parser;
        self.follower.poll(Instant::now(), &mut |path, bytes| {
            read_any = true;
            parser.feed(path, bytes, on);
        });
        for w in self.follower.warnings.drain(..) {
            tracing::warn!("{w}");
        }
        if self.parser.waiting_for().is_some_and(|w| w >= FORMAT_WAIT) {
            self.parser.flush_sample(on);
        }
        read_any
    }

    /// The formats found since the last call, as status shows them
    /// ("combined, nginx error (detected)"); notes go to the log.
    pub fn detected_format(&mut self) -> Option<String> {
        let detected = self
            .parser
            .notes
            .iter()
            .any(|n| n.starts_with("detected log format"));
        for n in self.parser.notes.drain(..) {
            tracing::info!("{n}");
        }
        detected.then(|| {
            let names: Vec<String> = self
                .parser
                .parsers()
                .iter()
                .map(|p| p.name().to_string())
                .collect();
            format!("{} (detected)", names.join(", "))
        })
    }

    /// Bytes written and not read yet, over every log.
    pub fn behind_bytes(&self) -> u64 {
        self.follower
            .progress()
            .into_iter()
            .map(|(_, offset, size)| size.saturating_sub(offset))
            .sum()
    }

    /// What keeps the daemon from deciding on a configured log, in the
    /// words `status` shows.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .follower
            .unmatched()
            .into_iter()
            .map(|(p, why)| format!("{p} {why}: nothing is read from it"))
            .collect();
        if let Some(e) = &self.parser.format_error {
            out.push(format!("lines are not decided on: {e}"));
        }
        out
    }

    /// Rebuilds counting windows from the lines just before the
    /// checkpoints; what it decides is dropped by the caller.
    pub fn warm_up(
        &mut self,
        checkpoints: &[Checkpoint],
        on: &mut dyn FnMut(LiveEvent<'_>),
    ) -> u64 {
        let mut quiet = |e: LiveEvent<'_>| {
            if !matches!(e, LiveEvent::Malformed(..)) {
                on(e)
            }
        };
        // Line by line: `quiet` drops the malformed lines, which a bulk
        // read would count and log out of its sight.
        let bulk = self.parser.bulk_from.take();
        for cp in checkpoints {
            if let Some(lines) = follow::lookback(cp, WARM_UP_BYTES) {
                self.parser.feed(&cp.path, &lines, &mut quiet);
            }
        }
        self.parser.flush_sample(&mut quiet);
        self.parser.bulk_from = bulk;
        let replayed = self.parser.lines;
        (self.parser.lines, self.parser.malformed) = (0, 0);
        replayed
    }
}

/// How the daemon follows its logs.
fn follow_options(from_start: bool) -> FollowOptions {
    FollowOptions {
        from_start,
        // A backlog is decided and enforced in slices of about ten
        // thousand lines, so the first bans of a flood land while the
        // rest is still being read.
        max_read: 1 << 20,
        ..FollowOptions::default()
    }
}

fn live_parser(settings: &Settings) -> LiveParser {
    let mut parser = LiveParser::new(live_job(settings));
    parser.bulk_from = Some(BULK_FROM);
    parser
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
pub fn named_format(format: &crate::log::FormatSpec) -> Option<String> {
    match format {
        crate::log::FormatSpec::Auto => None,
        crate::log::FormatSpec::Preset(p) => Some(p.name().to_string()),
        crate::log::FormatSpec::Custom { format, .. } => Some(format!("custom '{format}'")),
    }
}

/// Whether a configured log may be followed at all.
pub fn refuse_special(logs: &[String]) -> Result<(), String> {
    for log in logs {
        if let Some(kind) = follow::not_a_file(Path::new(log)) {
            return Err(format!(
                "cannot follow {log}: it is {kind}; webfence follows regular files"
            ));
        }
    }
    Ok(())
}
