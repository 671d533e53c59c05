//! The ledger: every ban with its rule, reason, evidence, start and expiry,
//! kept in SQLite (WAL mode) so that it survives a crash. A batch is
//! written here before (for big batches: while) it goes to the kernel, and
//! reconciliation on start puts the kernel back in line with the ledger, so
//! after a SIGKILL at any moment every recorded ban is in force for the
//! time it has left. History stays for audit and for escalation across
//! restarts.
//!
//! `synchronous = NORMAL`: a commit survives the process being killed (it is
//! in the OS once written); only a power cut can lose the last commits,
//! which costs an fsync per tick to prevent and is not worth the latency.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::detect::addr::Subject;

#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

/// A ban to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBan {
    pub subject: Subject,
    /// The rule's name, or "manual".
    pub rule: String,
    pub reason: String,
    /// The decision as JSON, with its evidence.
    pub evidence: Option<String>,
    /// "rule" or "manual".
    pub origin: String,
    pub started_ms: i64,
    pub expires_ms: i64,
}

/// A ban as the ledger holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedgerBan {
    pub id: i64,
    #[serde(serialize_with = "as_text")]
    pub subject: Subject,
    pub rule: String,
    pub reason: String,
    pub origin: String,
    pub started_ms: i64,
    pub expires_ms: i64,
    /// When the ban ended, if it has: lifted by hand, replaced, or expired.
    pub ended_ms: Option<i64>,
    /// "expired", "unban", "replaced".
    pub ended_by: Option<String>,
    /// The decision as `replay --json` writes it (rule bans only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

fn as_text<S: serde::Serializer>(s: &Subject, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(s)
}

/// Which bans to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Also bans that have ended (the history).
    pub history: bool,
    /// Only these rules' bans.
    pub rule: Option<String>,
    /// Only bans of subjects inside (or equal to) this network.
    pub within: Option<Subject>,
    pub limit: Option<usize>,
}

/// Batches smaller than this look their subjects up one by one.
const LOOKUPS_UP_TO: usize = 1000;

/// Counts per rule, busiest first.
pub type PerRule = Vec<(String, u64)>;

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    id        INTEGER PRIMARY KEY,
    subject   TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    evidence  TEXT,
    origin    TEXT    NOT NULL,
    started   INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    ended     INTEGER,
    ended_by  TEXT
);
CREATE INDEX IF NOT EXISTS bans_open ON bans(subject) WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS bans_open_expiry ON bans(expires) WHERE ended IS NULL;
-- Each index costs every insert; no query needs this one (it was made by
-- an early version).
DROP INDEX IF EXISTS bans_subject;
";

const COLUMNS: &str =
    "id, subject, rule, reason, origin, started, expires, ended, ended_by, evidence";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerBan> {
    let text: String = r.get(1)?;
    let subject = text.parse::<Subject>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(LedgerBan {
        id: r.get(0)?,
        subject,
        rule: r.get(2)?,
        reason: r.get(3)?,
        origin: r.get(4)?,
        started_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        ended_ms: r.get(7)?,
        ended_by: r.get(8)?,
        evidence: r.get(9)?,
    })
}

impl Ledger {
    /// Opens a ledger for reading only, as `webfence bans` does when the
    /// daemon is not running: nothing is created or changed.
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| LedgerError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let err = |source| LedgerError {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(err)?;
        // A checkpoint copies the WAL into the database: the daemon's
        // checkpointer thread does it (`spawn_checkpointer`), never a
        // batch's commit, where it would hold up the bans. A bigger page
        // cache keeps a 100k-ban batch from spilling to disk before its
        // commit.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    /// Which of these bans would replace an open ban of the same subject
    /// (a renewal rather than a fresh ban).
    /// Makes every write fail, as a full disk does (tests of what the
    /// daemon does then).
    #[doc(hidden)]
    pub fn refuse_writes(&self, refuse: bool) -> Result<(), LedgerError> {
        self.conn
            .pragma_update(None, "query_only", refuse)
            .map_err(|e| self.err(e))
    }

    pub fn renewals(&self, bans: &[NewBan]) -> Result<Vec<bool>, LedgerError> {
        let res = (|| {
            if bans.len() < LOOKUPS_UP_TO {
                // One index look-up each: a small batch must not pay for
                // reading every open ban (100k under attack).
                let mut st = self.conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM bans WHERE subject = ?1 AND ended IS NULL)",
                )?;
                return bans
                    .iter()
                    .map(|b| st.query_row(params![b.subject.to_string()], |r| r.get(0)))
                    .collect();
            }
            // One query for the open subjects instead of a look-up per ban:
            // 100k bans in one batch stay well under a second.
            let mut st = self
                .conn
                .prepare_cached("SELECT subject FROM bans WHERE ended IS NULL")?;
            let open: std::collections::HashSet<String, foldhash::fast::RandomState> = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(bans
                .iter()
                .map(|b| open.contains(&b.subject.to_string()))
                .collect())
        })();
        res.map_err(|e| self.err(e))
    }

    /// Records bans in one transaction; the open ban of a subject marked
    /// in `renewed` (from `renewals`) ends as "replaced".
    pub fn record(&mut self, bans: &[NewBan], renewed: &[bool]) -> Result<(), LedgerError> {
        let res = (|| {
            let tx = self.conn.transaction()?;
            {
                let mut end = tx.prepare_cached(
                    "UPDATE bans SET ended = ?2, ended_by = 'replaced' WHERE subject = ?1 AND ended IS NULL",
                )?;
                let mut add = tx.prepare_cached(
                    "INSERT INTO bans (subject, rule, reason, evidence, origin, started, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (i, b) in bans.iter().enumerate() {
                    let subject = b.subject.to_string();
                    if renewed.get(i).copied().unwrap_or(true) {
                        end.execute(params![subject, b.started_ms])?;
                    }
                    add.execute(params![
                        subject,
                        b.rule,
                        b.reason,
                        b.evidence,
                        b.origin,
                        b.started_ms,
                        b.expires_ms
                    ])?;
                }
            }
            tx.commit()
        })();
        res.map_err(|e| self.err(e))
    }

    /// Ends the open bans of these subjects; returns those that were open.
    pub fn end(
        &mut self,
        subjects: &[Subject],
        by: &str,
        at_ms: i64,
    ) -> Result<Vec<LedgerBan>, LedgerError> {
        let res = (|| {
            let tx = self.conn.transaction()?;
            let mut ended = Vec::new();
            {
                let mut find = tx.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM bans WHERE subject = ?1 AND ended IS NULL"
                ))?;
                let mut end =
                    tx.prepare_cached("UPDATE bans SET ended = ?2, ended_by = ?3 WHERE id = ?1")?;
                for s in subjects {
                    let open = find.query_row(params![s.to_string()], row).optional()?;
                    if let Some(b) = open {
                        end.execute(params![b.id, at_ms, by])?;
                        ended.push(b);
                    }
                }
            }
            tx.commit()?;
            Ok(ended)
        })();
        res.map_err(|e| self.err(e))
    }

    /// Copies what the WAL holds into the database, as far as readers
    /// allow, so the WAL does not grow without end.
    pub fn checkpoint(&self) -> Result<(), LedgerError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// Checkpoints the ledger at `path` every `every` on a thread of its
    /// own, with its own connection: copying the pages of a 100k-ban batch
    /// takes a while, and the thread that applies bans must not wait for
    /// it (in WAL mode a checkpoint and a writer run side by side).
    pub fn spawn_checkpointer(
        path: &Path,
        every: std::time::Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                let ledger = match Ledger::open(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open the ledger to checkpoint it");
                        return;
                    }
                };
                loop {
                    std::thread::sleep(every);
                    if let Err(e) = ledger.checkpoint() {
                        tracing::warn!(error = %e, "cannot checkpoint the ledger");
                    }
                }
            })
    }

    /// Bans in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> Result<Vec<LedgerBan>, LedgerError> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM bans WHERE ended IS NULL AND expires > ?1 ORDER BY started, id"
            ),
            params![now_ms],
        )
    }

    /// Open bans whose time is up: the caller lifts them and calls `end`.
    pub fn due(&self, now_ms: i64) -> Result<Vec<LedgerBan>, LedgerError> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM bans WHERE ended IS NULL AND expires <= ?1 ORDER BY expires, id"
            ),
            params![now_ms],
        )
    }

    /// (subject, bans, last start) of rule bans since `since_ms`, for
    /// escalation after a restart.
    pub fn history(&self, since_ms: i64) -> Result<Vec<(Subject, u32, i64)>, LedgerError> {
        let res = (|| {
            let mut st = self.conn.prepare_cached(
                // The farm's bans count too (a client banned on any node
                // gets the longer ban), its manual ones no more than ours.
                "SELECT subject, COUNT(*), MAX(started) FROM bans WHERE (origin = 'rule' OR (origin LIKE 'farm:%' AND rule != 'manual')) AND started >= ?1 GROUP BY subject",
            )?;
            let rows = st.query_map(params![since_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (s, n, last) = r?;
                if let Ok(s) = s.parse() {
                    out.push((s, n, last));
                }
            }
            Ok(out)
        })();
        res.map_err(|e| self.err(e))
    }

    /// Bans for `webfence bans`, newest first.
    /// The `limit` most recent bans in force, newest first, read with a
    /// limit in SQL: the live page asks every second, under 100k bans.
    pub fn newest_active(&self, now_ms: i64, limit: usize) -> Result<Vec<LedgerBan>, LedgerError> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM bans WHERE ended IS NULL AND expires > ?1 ORDER BY started DESC, id DESC LIMIT ?2"
            ),
            params![now_ms, limit as i64],
        )
    }

    pub fn query(&self, q: &Query, now_ms: i64) -> Result<Vec<LedgerBan>, LedgerError> {
        let mut bans = if q.history {
            self.select(
                &format!("SELECT {COLUMNS} FROM bans ORDER BY started DESC, id DESC"),
                params![],
            )?
        } else {
            let mut v = self.active(now_ms)?;
            v.reverse();
            v
        };
        bans.retain(|b| {
            q.rule.as_ref().is_none_or(|r| &b.rule == r)
                && q.within
                    .is_none_or(|w| w.prefix <= b.subject.prefix && w.contains(b.subject.bits))
        });
        if let Some(n) = q.limit {
            bans.truncate(n);
        }
        Ok(bans)
    }

    /// Counts of bans in force and recorded in all (rows are never
    /// deleted, so the highest id is the count, without a scan).
    pub fn counts(&self, now_ms: i64) -> Result<(u64, u64), LedgerError> {
        let res = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM bans WHERE ended IS NULL AND expires > ?1), COALESCE((SELECT MAX(id) FROM bans), 0)",
            params![now_ms],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        );
        res.map_err(|e| self.err(e))
    }

    /// The expiry of the open ban of each subject that has one and has not
    /// run out by `now_ms`. A few subjects are looked up one by one (an
    /// index probe each); many read the open bans once, and the map then
    /// holds every open ban, asked for or not.
    pub fn open_expiries(
        &self,
        subjects: &[Subject],
        now_ms: i64,
    ) -> Result<crate::stats::Map<Subject, i64>, LedgerError> {
        if subjects.len() >= LOOKUPS_UP_TO {
            // Two columns of every open ban, not whole rows with their
            // evidence: a farm applies 100k bans in batches of thousands.
            let res = (|| {
                let mut st = self.conn.prepare_cached(
                    "SELECT subject, expires FROM bans WHERE ended IS NULL AND expires > ?1",
                )?;
                let rows = st.query_map(params![now_ms], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut out = crate::stats::Map::default();
                for row in rows {
                    let (subject, expires) = row?;
                    if let Ok(s) = subject.parse::<Subject>() {
                        out.insert(s, expires);
                    }
                }
                Ok(out)
            })();
            return res.map_err(|e| self.err(e));
        }
        let res = (|| {
            let mut st = self.conn.prepare_cached(
                "SELECT expires FROM bans WHERE subject = ?1 AND ended IS NULL AND expires > ?2",
            )?;
            let mut out = crate::stats::Map::default();
            for s in subjects {
                let mut rows = st.query(params![s.to_string(), now_ms])?;
                if let Some(row) = rows.next()? {
                    out.insert(*s, row.get::<_, i64>(0)?);
                }
            }
            Ok(out)
        })();
        res.map_err(|e| self.err(e))
    }

    /// Bans made and bans ended within [from, to), per rule, busiest first
    /// (for digests).
    pub fn period_by_rule(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(PerRule, PerRule), LedgerError> {
        let res = (|| {
            let mut made = Vec::new();
            let mut st = self.conn.prepare_cached(
                "SELECT rule, COUNT(*) FROM bans WHERE started >= ?1 AND started < ?2 GROUP BY rule ORDER BY COUNT(*) DESC, rule",
            )?;
            let mut rows = st.query(params![from_ms, to_ms])?;
            while let Some(r) = rows.next()? {
                made.push((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64));
            }
            let mut ended = Vec::new();
            let mut st = self.conn.prepare_cached(
                "SELECT rule, COUNT(*) FROM bans WHERE COALESCE(ended, expires) >= ?1 AND COALESCE(ended, expires) < ?2 GROUP BY rule ORDER BY COUNT(*) DESC, rule",
            )?;
            let mut rows = st.query(params![from_ms, to_ms])?;
            while let Some(r) = rows.next()? {
                ended.push((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64));
            }
            Ok((made, ended))
        })();
        res.map_err(|e| self.err(e))
    }

    /// Bans in force per address family (IPv4, IPv6), counted in SQLite
    /// rather than by reading every ban.
    pub fn active_by_family(&self, now_ms: i64) -> Result<(u64, u64), LedgerError> {
        let res = self.conn.query_row(
            "SELECT COALESCE(SUM(instr(subject, ':') = 0), 0), COALESCE(SUM(instr(subject, ':') > 0), 0) FROM bans WHERE ended IS NULL AND expires > ?1",
            params![now_ms],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        );
        res.map_err(|e| self.err(e))
    }

    /// Bans in force per rule.
    pub fn active_by_rule(&self, now_ms: i64) -> Result<Vec<(String, u64)>, LedgerError> {
        let res = (|| {
            let mut st = self.conn.prepare_cached(
                "SELECT rule, COUNT(*) FROM bans WHERE ended IS NULL AND expires > ?1 GROUP BY rule",
            )?;
            st.query_map(params![now_ms], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })();
        res.map_err(|e| self.err(e))
    }

    fn select(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<LedgerBan>, LedgerError> {
        let res = (|| {
            let mut st = self.conn.prepare_cached(sql)?;
            let rows = st.query_map(args, row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        res.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(s: &str, rule: &str, start: i64, len: i64) -> NewBan {
        NewBan {
            subject: s.parse().unwrap(),
            rule: rule.into(),
            reason: format!("{rule} reason"),
            evidence: Some("{}".into()),
            origin: "rule".into(),
            started_ms: start,
            expires_ms: start + len,
        }
    }

    fn record(l: &mut Ledger, bans: &[NewBan]) -> Vec<bool> {
        let renewed = l.renewals(bans).unwrap();
        l.record(bans, &renewed).unwrap();
        renewed
    }

    #[test]
    fn newest_active_is_limited_newest_first_and_skips_expired() {
        let mut l = Ledger::open(Path::new(":memory:")).unwrap();
        record(
            &mut l,
            &[
                ban("192.0.2.1", "a", 0, 100),
                ban("192.0.2.2", "a", 10, 100),
                ban("192.0.2.3", "a", 20, 5),
                ban("192.0.2.4", "a", 30, 100),
            ],
        );
        let got: Vec<String> = l
            .newest_active(40, 2)
            .unwrap()
            .iter()
            .map(|b| b.subject.to_string())
            .collect();
        assert_eq!(got, ["192.0.2.4", "192.0.2.2"]);
        assert_eq!(l.newest_active(40, 10).unwrap().len(), 3);
    }

    /// Bans in force per family, and per rule in a period, for the
    /// metrics and digests.
    #[test]
    fn counts_by_family_and_by_period() {
        let mut l = Ledger::open(Path::new(":memory:")).unwrap();
        record(
            &mut l,
            &[
                ban("192.0.2.1", "flood", 0, 100),
                ban("2001:db8::1", "flood", 0, 100),
                ban("2001:db8::/48", "scan", 10, 100),
                ban("192.0.2.9", "scan", 20, 5),
            ],
        );
        assert_eq!(l.active_by_family(50).unwrap(), (1, 2));
        let (made, ended) = l.period_by_rule(0, 15).unwrap();
        assert_eq!(
            made,
            vec![("flood".to_string(), 2), ("scan".to_string(), 1)]
        );
        assert!(ended.is_empty());
        let (_, ended) = l.period_by_rule(20, 30).unwrap();
        assert_eq!(ended, vec![("scan".to_string(), 1)]);
    }

    /// Both ways of finding open bans' expiries agree: one probe each for a
    /// few subjects, one read of all open bans for many.
    #[test]
    fn open_expiries_by_lookup_and_by_scan_agree() {
        let mut l = Ledger::open(Path::new(":memory:")).unwrap();
        record(
            &mut l,
            &[ban("192.0.2.1", "r", 0, 100), ban("192.0.2.2", "r", 0, 10)],
        );
        let few: Vec<Subject> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let found = l.open_expiries(&few, 50).unwrap();
        assert_eq!(found.len(), 1, "the short ban ran out, the third has none");
        assert_eq!(found.get(&few[0]), Some(&100));
        let many: Vec<Subject> = (0..LOOKUPS_UP_TO as u32)
            .map(|i| {
                Subject::host(crate::detect::addr::to_bits(
                    std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                ))
            })
            .chain(few.iter().copied())
            .collect();
        assert_eq!(l.open_expiries(&many, 50).unwrap(), found);
    }

    /// With automatic checkpoints off, only the checkpointer thread moves
    /// committed pages from the WAL into the database file; without it
    /// the WAL would grow for as long as the daemon runs.
    #[test]
    fn the_checkpointer_moves_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut l = Ledger::open(&path).unwrap();
        let bans: Vec<NewBan> = (0..2000)
            .map(|i| {
                ban(
                    &format!("198.18.{}.{}", i / 250, i % 250 + 1),
                    "flood",
                    1000,
                    60_000,
                )
            })
            .collect();
        record(&mut l, &bans);
        let before = std::fs::metadata(&path).unwrap().len();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            before,
            "no automatic checkpoint"
        );
        Ledger::spawn_checkpointer(&path, std::time::Duration::from_millis(10)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(l.active(2000).unwrap().len(), 2000);
    }

    #[test]
    fn records_ends_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        {
            let mut l = Ledger::open(&path).unwrap();
            record(
                &mut l,
                &[
                    ban("203.0.113.7", "flood-ip", 1000, 60_000),
                    ban("10.0.0.0/8", "manual", 1000, 5_000),
                    ban("2001:db8::1", "scanner", 2000, 60_000),
                ],
            );
            let ended = l
                .end(&["2001:db8::1".parse().unwrap()], "unban", 3000)
                .unwrap();
            assert_eq!(ended.len(), 1);
            // Ending twice finds nothing open.
            assert!(
                l.end(&["2001:db8::1".parse().unwrap()], "unban", 3000)
                    .unwrap()
                    .is_empty()
            );
        }
        let l = Ledger::open(&path).unwrap();
        let active: Vec<String> = l
            .active(4000)
            .unwrap()
            .iter()
            .map(|b| b.subject.to_string())
            .collect();
        assert_eq!(active, ["203.0.113.7", "10.0.0.0/8"]);
        let due: Vec<String> = l
            .due(7000)
            .unwrap()
            .iter()
            .map(|b| b.subject.to_string())
            .collect();
        assert_eq!(due, ["10.0.0.0/8"]);
        assert_eq!(l.counts(4000).unwrap(), (2, 3));
        let hist = l
            .query(
                &Query {
                    history: true,
                    ..Query::default()
                },
                4000,
            )
            .unwrap();
        assert_eq!(hist[0].ended_by.as_deref(), Some("unban"));
    }

    #[test]
    fn a_new_ban_replaces_the_open_one_and_counts_for_escalation() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
        let first = [
            ban("203.0.113.7", "flood-ip", 1000, 60_000),
            ban("203.0.113.9", "scanner", 1000, 600_000),
        ];
        assert_eq!(record(&mut l, &first), [false, false]);
        let again = [
            ban("203.0.113.7", "flood-ip", 90_000, 120_000),
            ban("198.51.100.1", "scanner", 90_000, 120_000),
        ];
        assert_eq!(record(&mut l, &again), [true, false]);
        // The renewal ended the first ban of .7: one open ban per subject.
        let active = l.active(100_000).unwrap();
        let subjects: Vec<String> = active.iter().map(|b| b.subject.to_string()).collect();
        assert_eq!(subjects, ["203.0.113.9", "203.0.113.7", "198.51.100.1"]);
        assert_eq!(active[1].expires_ms, 210_000);
        let hist = l
            .query(
                &Query {
                    history: true,
                    ..Query::default()
                },
                100_000,
            )
            .unwrap();
        assert_eq!(hist.len(), 4);
        assert_eq!(hist[3].ended_by.as_deref(), Some("replaced"));
        // Both bans of .7 count for escalation.
        let h = l.history(0).unwrap();
        assert!(h.contains(&("203.0.113.7".parse().unwrap(), 2, 90_000)));
        let q = Query {
            within: Some("203.0.113.0/24".parse().unwrap()),
            ..Query::default()
        };
        assert_eq!(l.query(&q, 100_000).unwrap().len(), 2);
        let q = Query {
            within: Some("203.0.113.9".parse().unwrap()),
            ..Query::default()
        };
        assert_eq!(l.query(&q, 100_000).unwrap()[0].rule, "scanner");
        let q = Query {
            rule: Some("other".into()),
            ..Query::default()
        };
        assert!(l.query(&q, 100_000).unwrap().is_empty());
    }

    /// A ban read from the farm counts for escalation (the farm's history
    /// is one), unless it was a manual one there.
    #[test]
    fn the_farms_bans_count_for_escalation_but_not_its_manual_ones() {
        let mut l = Ledger::open(Path::new(":memory:")).unwrap();
        let mut from_farm = ban("192.0.2.1", "flood", 1000, 60_000);
        from_farm.origin = "farm:web2".into();
        let mut manual = ban("192.0.2.2", "manual", 1000, 60_000);
        manual.origin = "farm:web2".into();
        let mut kernel = ban("192.0.2.3", "kernel", 1000, 60_000);
        kernel.origin = "kernel".into();
        l.record(&[from_farm, manual, kernel], &[false, false, false])
            .unwrap();
        let h = l.history(0).unwrap();
        assert_eq!(h, vec![("192.0.2.1".parse().unwrap(), 1, 1000)]);
    }
}
