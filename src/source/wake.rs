//! Waking the follower: inotify on the followed directories, with a timeout
//! as the safety net (NFS, overflowed queues, directories that do not exist
//! yet). An event only says "look now"; the follower works out what changed.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use inotify::{Inotify, WatchMask};

pub struct Waker {
    inotify: Option<Inotify>,
    watched: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl Waker {
    /// Watches `dirs`; without inotify (or with none watchable) it only
    /// sleeps until the timeout.
    pub fn new(dirs: &[PathBuf]) -> Waker {
        let mut w = Waker {
            inotify: Inotify::init().ok(),
            watched: Vec::new(),
            buf: vec![0; 16 << 10],
        };
        w.watch(dirs);
        w
    }

    /// Adds watches for directories not watched yet (one may appear later).
    pub fn watch(&mut self, dirs: &[PathBuf]) {
        let Some(ino) = &mut self.inotify else { return };
        for d in dirs {
            if self.watched.contains(d) {
                continue;
            }
            let mask = WatchMask::MODIFY
                | WatchMask::CREATE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE
                | WatchMask::CLOSE_WRITE
                | WatchMask::ATTRIB;
            if ino.watches().add(d, mask).is_ok() {
                self.watched.push(d.clone());
            }
        }
    }

    /// Whether inotify watches anything (else polling alone finds changes).
    pub fn is_watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// Sleeps until a change in a watched directory or the timeout; true
    /// when woken by a change.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let Some(ino) = &mut self.inotify else {
            std::thread::sleep(timeout);
            return false;
        };
        if self.watched.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: ino.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call; the fd is
        // owned by `ino`, alive for the whole call. std offers no poll with a
        // timeout on an arbitrary fd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return false;
        }
        // Drain the queue; the events themselves do not matter.
        while let Ok(events) = ino.read_events(&mut self.buf) {
            if events.count() == 0 {
                break;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn wakes_on_a_write_and_times_out_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Waker::new(&[dir.path().to_path_buf()]);
        assert!(w.is_watching());
        assert!(!w.wait(Duration::from_millis(20)));
        let path = dir.path().join("access.log");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(path, "x\n").unwrap();
        });
        let t = Instant::now();
        assert!(w.wait(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        writer.join().unwrap();
    }

    #[test]
    fn a_missing_directory_falls_back_to_the_timeout() {
        let mut w = Waker::new(&[PathBuf::from("/nonexistent/webfence-test")]);
        assert!(!w.is_watching());
        assert!(!w.wait(Duration::from_millis(10)));
    }
}
