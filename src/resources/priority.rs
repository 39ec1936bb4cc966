//! Process priority: the nice value and the I/O priority, set through the
//! system calls `setpriority` and `ioprio_set`, never by running `nice` or
//! `ionice`.
//!
//! On Linux both are per thread, and a new thread inherits its creator's.
//! [`apply`] therefore sets them on every thread that exists now (listed in
//! `/proc/self/task`), and every thread created later (by tokio, rayon or
//! candle) inherits them. Lowering the priority always works; raising it
//! needs a privilege, and when that is missing the value is kept and a
//! warning says so. Nothing here fails the process.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::Serialize;

/// An I/O scheduling class and level (see `ioprio_set(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPriority {
    /// Only when nobody else uses the disk.
    Idle,
    /// The normal class; level 0 (highest) to 7 (lowest).
    BestEffort(u8),
    /// Before everyone else; needs CAP_SYS_ADMIN. Level 0 to 7.
    Realtime(u8),
}

const IOPRIO_CLASS_SHIFT: u32 = 13;
const IOPRIO_CLASS_RT: u32 = 1;
const IOPRIO_CLASS_BE: u32 = 2;
const IOPRIO_CLASS_IDLE: u32 = 3;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

impl IoPriority {
    /// The kernel's encoding: class << 13 | level.
    pub fn to_raw(self) -> u32 {
        match self {
            IoPriority::Idle => IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            IoPriority::BestEffort(l) => IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT | u32::from(l),
            IoPriority::Realtime(l) => IOPRIO_CLASS_RT << IOPRIO_CLASS_SHIFT | u32::from(l),
        }
    }

    /// `None` for class 0 ("none": derived from the nice value) or garbage.
    pub fn from_raw(raw: u32) -> Option<Self> {
        let level = (raw & ((1 << IOPRIO_CLASS_SHIFT) - 1)) as u8;
        match raw >> IOPRIO_CLASS_SHIFT {
            IOPRIO_CLASS_IDLE => Some(IoPriority::Idle),
            IOPRIO_CLASS_BE if level <= 7 => Some(IoPriority::BestEffort(level)),
            IOPRIO_CLASS_RT if level <= 7 => Some(IoPriority::Realtime(level)),
            _ => None,
        }
    }

    /// Lower is more urgent; used to tell raising from lowering.
    fn urgency_rank(self) -> u32 {
        match self {
            IoPriority::Realtime(l) => u32::from(l),
            IoPriority::BestEffort(l) => 8 + u32::from(l),
            IoPriority::Idle => 16,
        }
    }
}

impl fmt::Display for IoPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoPriority::Idle => f.write_str("idle"),
            IoPriority::BestEffort(l) => write!(f, "best-effort:{l}"),
            IoPriority::Realtime(l) => write!(f, "realtime:{l}"),
        }
    }
}

impl Serialize for IoPriority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `idle`, `best-effort:7` (also `be:7`), `realtime:0` (also `rt:0`).
impl FromStr for IoPriority {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim().to_ascii_lowercase();
        if s == "idle" {
            return Ok(IoPriority::Idle);
        }
        let (class, level) = s.split_once(':').ok_or(())?;
        let level: u8 = level.trim().parse().map_err(|_| ())?;
        if level > 7 {
            return Err(());
        }
        match class.trim() {
            "best-effort" | "be" => Ok(IoPriority::BestEffort(level)),
            "realtime" | "rt" => Ok(IoPriority::Realtime(level)),
            _ => Err(()),
        }
    }
}

/// The system calls `apply` needs, per thread id; a trait so tests can
/// refuse permission without dropping the test process's privileges.
pub trait PrioritySys {
    fn thread_ids(&self) -> Vec<libc::pid_t>;
    fn nice(&self, tid: libc::pid_t) -> io::Result<i32>;
    fn set_nice(&self, tid: libc::pid_t, nice: i32) -> io::Result<()>;
    fn io_priority(&self, tid: libc::pid_t) -> io::Result<u32>;
    fn set_io_priority(&self, tid: libc::pid_t, raw: u32) -> io::Result<()>;
}

/// The real system calls.
pub struct Linux;

impl PrioritySys for Linux {
    fn thread_ids(&self) -> Vec<libc::pid_t> {
        let mut ids: Vec<libc::pid_t> = std::fs::read_dir("/proc/self/task")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            ids.push(0); // no /proc: at least the calling thread
        }
        ids
    }

    fn nice(&self, tid: libc::pid_t) -> io::Result<i32> {
        // -1 is a valid nice value: errno tells an error apart.
        unsafe { *libc::__errno_location() = 0 };
        let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
        let errno = io::Error::last_os_error();
        if n == -1 && errno.raw_os_error() != Some(0) {
            return Err(errno);
        }
        Ok(n)
    }

    fn set_nice(&self, tid: libc::pid_t, nice: i32) -> io::Result<()> {
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn io_priority(&self, tid: libc::pid_t) -> io::Result<u32> {
        let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u32)
        }
    }

    fn set_io_priority(&self, tid: libc::pid_t, raw: u32) -> io::Result<()> {
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, raw) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PriorityReport {
    /// The nice value now in effect on the calling thread.
    pub nice: Option<i32>,
    /// The I/O priority now in effect on the calling thread (`None`: the
    /// kernel derives it from the nice value).
    pub io_priority: Option<IoPriority>,
    /// Threads changed.
    pub threads: usize,
    /// Settings that could not be applied, and what was kept instead.
    pub warnings: Vec<String>,
}

/// Sets `nice` and `io` (each `None`: leave as is) on every thread of the
/// process. Logs each warning once through `tracing`.
pub fn apply(nice: Option<i32>, io: Option<IoPriority>) -> PriorityReport {
    let report = apply_with(&Linux, nice, io);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    report
}

/// [`apply`] over any [`PrioritySys`].
pub fn apply_with(
    sys: &dyn PrioritySys,
    nice: Option<i32>,
    io: Option<IoPriority>,
) -> PriorityReport {
    let tids = sys.thread_ids();
    let mut report = PriorityReport {
        threads: tids.len(),
        ..Default::default()
    };
    if let Some(target) = nice {
        let mut failure = None;
        for &tid in &tids {
            let before = sys.nice(tid).unwrap_or(0);
            if before == target {
                continue;
            }
            if let Err(e) = sys.set_nice(tid, target) {
                // A thread that exited since the listing is not a failure.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    failure.get_or_insert((before, e));
                }
            }
        }
        if let Some((kept, e)) = failure {
            let what = if target < kept { "raise" } else { "change" };
            report.warnings.push(format!(
                "could not {what} the process priority to nice {target} ({e}); kept nice {kept}"
            ));
        }
    }
    if let Some(target) = io {
        let mut failure = None;
        for &tid in &tids {
            let before = sys.io_priority(tid).ok().and_then(IoPriority::from_raw);
            if before == Some(target) {
                continue;
            }
            if let Err(e) = sys.set_io_priority(tid, target.to_raw()) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    failure.get_or_insert((before, e));
                }
            }
        }
        if let Some((kept, e)) = failure {
            let raising = kept.is_none_or(|k| target.urgency_rank() < k.urgency_rank());
            let what = if raising { "raise" } else { "change" };
            let kept = kept.map_or("the default (from the nice value)".into(), |k| {
                k.to_string()
            });
            report.warnings.push(format!(
                "could not {what} the I/O priority to {target} ({e}); kept {kept}"
            ));
        }
    }
    report.nice = sys.nice(0).ok();
    report.io_priority = sys.io_priority(0).ok().and_then(IoPriority::from_raw);
    report
}

/// The calling thread's nice value and I/O priority, as the kernel reports.
pub fn current() -> (io::Result<i32>, io::Result<Option<IoPriority>>) {
    (
        Linux.nice(0),
        Linux.io_priority(0).map(IoPriority::from_raw),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Threads without the privilege to raise priority.
    struct Unprivileged {
        nice: Mutex<HashMap<libc::pid_t, i32>>,
        io: Mutex<HashMap<libc::pid_t, u32>>,
    }

    impl Unprivileged {
        fn new(nice: i32, io: IoPriority) -> Self {
            let ids = [0, 101, 102];
            Self {
                nice: Mutex::new(ids.iter().map(|&t| (t, nice)).collect()),
                io: Mutex::new(ids.iter().map(|&t| (t, io.to_raw())).collect()),
            }
        }
    }

    fn denied() -> io::Error {
        io::Error::from_raw_os_error(libc::EACCES)
    }

    impl PrioritySys for Unprivileged {
        fn thread_ids(&self) -> Vec<libc::pid_t> {
            vec![0, 101, 102]
        }
        fn nice(&self, tid: libc::pid_t) -> io::Result<i32> {
            Ok(self.nice.lock().unwrap()[&tid])
        }
        fn set_nice(&self, tid: libc::pid_t, nice: i32) -> io::Result<()> {
            let mut m = self.nice.lock().unwrap();
            if nice < m[&tid] {
                return Err(denied());
            }
            m.insert(tid, nice);
            Ok(())
        }
        fn io_priority(&self, tid: libc::pid_t) -> io::Result<u32> {
            Ok(self.io.lock().unwrap()[&tid])
        }
        fn set_io_priority(&self, tid: libc::pid_t, raw: u32) -> io::Result<()> {
            let mut m = self.io.lock().unwrap();
            let now = IoPriority::from_raw(m[&tid]).unwrap();
            if IoPriority::from_raw(raw).unwrap().urgency_rank() < now.urgency_rank() {
                return Err(denied());
            }
            m.insert(tid, raw);
            Ok(())
        }
    }

    #[test]
    fn lowering_works_on_every_thread() {
        let sys = Unprivileged::new(0, IoPriority::BestEffort(4));
        let r = apply_with(&sys, Some(19), Some(IoPriority::Idle));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.nice, Some(19));
        assert_eq!(r.io_priority, Some(IoPriority::Idle));
        assert_eq!(r.threads, 3);
        assert!(sys.nice.lock().unwrap().values().all(|&n| n == 19));
    }

    #[test]
    fn raising_without_permission_warns_and_keeps() {
        let sys = Unprivileged::new(10, IoPriority::BestEffort(7));
        let r = apply_with(&sys, Some(-5), Some(IoPriority::Realtime(0)));
        assert_eq!(r.nice, Some(10));
        assert_eq!(r.io_priority, Some(IoPriority::BestEffort(7)));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("raise the process priority to nice -5"),
            "{}",
            r.warnings[0]
        );
        assert!(r.warnings[0].contains("kept nice 10"), "{}", r.warnings[0]);
        assert!(
            r.warnings[1].contains("kept best-effort:7"),
            "{}",
            r.warnings[1]
        );
    }

    #[test]
    fn io_priority_round_trips() {
        for p in [
            IoPriority::Idle,
            IoPriority::BestEffort(0),
            IoPriority::BestEffort(7),
            IoPriority::Realtime(3),
        ] {
            assert_eq!(IoPriority::from_raw(p.to_raw()), Some(p));
            assert_eq!(p.to_string().parse::<IoPriority>(), Ok(p));
        }
        assert_eq!("be:7".parse::<IoPriority>(), Ok(IoPriority::BestEffort(7)));
        assert!("best-effort:8".parse::<IoPriority>().is_err());
        assert!("fast".parse::<IoPriority>().is_err());
        assert_eq!(IoPriority::from_raw(0), None);
    }
}
