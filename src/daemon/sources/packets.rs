//! `[packets]`: the packet source on its own thread. Every `every`, it
//! captures for `sample` (the socket is open only then, so nothing queues
//! in between), classifies and counts per local address, runs the packet
//! rules, hands their decisions to the enforcer like any rule's, sends the
//! "LAN abusers" list, and publishes its figures for `status`. A capture
//! that fails (no CAP_NET_RAW, the interface gone) is a problem in
//! `status`, `/healthz` and the log until a sample works again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::actions::bans::enforce;
use crate::daemon::actions::enforcer::{Enforcer, wall_ms};
use crate::daemon::actions::notify::NotifySender;
use crate::daemon::control::LoopStatus;
use crate::daemon::detectors::packets::{PacketSettings, PacketStatus, abusers_text};
use crate::daemon::lock;
use crate::detect::RuleSet;
use crate::detect::p2p::Classifier;
use crate::detect::packetrules::decide;
use crate::net::decode;
use crate::source::packets::afpacket::{self, Capture};
use crate::stats::lan::{LanStats, Locals};

pub struct PacketSource {
    pub settings: PacketSettings,
    /// The rules; its `packet_rules` decide on each sample.
    pub enforcer: Arc<Mutex<Enforcer>>,
    pub status: Arc<Mutex<LoopStatus>>,
    pub set: RuleSet,
    pub dry_run: bool,
    pub notify: Option<NotifySender>,
    pub stop: &'static AtomicBool,
}

impl PacketSource {
    /// Runs until `stop`; new settings and rules arrive on `inbox` (a
    /// reload), and `None` there ends the source (`[packets]` turned off).
    pub fn run(mut self, inbox: Receiver<Option<(PacketSettings, RuleSet)>>) {
        // Addresses banned by a packet rule, until when (wall ms): not
        // decided on again while the ban stands.
        let mut banned: HashMap<IpAddr, i64, foldhash::fast::RandomState> = HashMap::default();
        let mut failing = false;
        while !self.stop.load(Ordering::SeqCst) {
            match inbox.try_recv() {
                Ok(Some((s, set))) => {
                    self.settings = s;
                    self.set = set;
                }
                Ok(None) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            let started = Instant::now();
            match self.sample(&mut banned) {
                Ok(()) => {
                    if failing {
                        tracing::info!("packet capture works again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!("packet capture failed: {e}; LAN traffic is not watched");
                    }
                    failing = true;
                    let mut st = lock(&self.status);
                    let p = st.packets.get_or_insert_with(PacketStatus::default);
                    p.error = Some(e);
                }
            }
            let next = started + Duration::from_secs(self.settings.every_s);
            while Instant::now() < next && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(
                    Duration::from_millis(100).min(next.saturating_duration_since(Instant::now())),
                );
            }
        }
    }

    fn sample(
        &mut self,
        banned: &mut HashMap<IpAddr, i64, foldhash::fast::RandomState>,
    ) -> Result<(), String> {
        let s = &self.settings;
        let iface = match &s.interface {
            Some(i) => i.clone(),
            None => afpacket::default_interface()
                .ok_or("no default route to take the interface from: set [packets] interface")?,
        };
        let locals = if s.locals.is_empty() {
            Locals::private()
        } else {
            Locals::new(s.locals.clone())
        };
        let mut capture = Capture::open(&iface, &s.skip).map_err(|e| e.to_string())?;
        let mut classifier = Classifier::new();
        let mut stats = LanStats::default();
        let stop = self.stop;
        let until = Instant::now() + Duration::from_secs(s.sample_s);
        capture
            .run(until, &|| stop.load(Ordering::SeqCst), &mut |f| {
                if let Some(p) = decode(f.link, f.data) {
                    let v = classifier.classify(&p);
                    stats.record(&locals, &p, v);
                }
            })
            .map_err(|e| e.to_string())?;
        let kernel = capture.stats();
        drop(capture);
        let now = wall_ms();
        banned.retain(|_, until| *until > now);
        let decisions: Vec<_> = decide(&self.set.packet_rules, &stats, s.sample_s, now)
            .into_iter()
            .filter(|d| !banned.contains_key(&d.subject.addr()))
            .collect();
        for d in &decisions {
            if let Some(secs) = d.duration_s {
                banned.insert(d.subject.addr(), now + secs as i64 * 1000);
            }
        }
        let rows = stats.rows(10);
        {
            let mut st = lock(&self.status);
            st.count(&decisions);
            let p = st.packets.get_or_insert_with(PacketStatus::default);
            p.interface = iface.clone();
            p.last_sample_ms = Some(now);
            p.samples += 1;
            p.packets += stats.packets;
            p.kernel_dropped += kernel.dropped;
            p.top = rows.iter().take(5).cloned().collect();
            p.error = None;
        }
        if !decisions.is_empty() {
            let mut e = lock(&self.enforcer);
            enforce(
                &mut e,
                &decisions,
                &self.set,
                std::slice::from_ref(&iface),
                self.dry_run,
                "packets",
            );
        }
        if let (Some(n), false) = (&self.notify, s.report_to.is_empty())
            && let Some(text) = abusers_text(&rows, s.report_over, &iface, s.sample_s)
        {
            n.send(crate::notify::Event::digest(
                "lan-abusers",
                now,
                format!("LAN abusers on {iface}"),
                text,
                s.report_to.clone(),
            ));
        }
        Ok(())
    }
}
