//! Process priority set by system calls, read back the same way. Its own
//! test binary (one process), because lowering the priority of a process
//! cannot be undone without privileges and would slow other tests.

use std::sync::mpsc;

use strata::resources::priority::{self, IoPriority};
use strata::resources::{Mode, ResourceManager};

#[test]
fn conservative_mode_lowers_every_thread_old_and_new() {
    // A thread that exists before the change must be changed too.
    let (to_old, old_rx) = mpsc::channel::<()>();
    let (old_tx, from_old) = mpsc::channel();
    let old = std::thread::spawn(move || {
        old_rx.recv().unwrap();
        old_tx.send(priority::current()).unwrap();
    });

    let rm = ResourceManager::new(Mode::Conservative.defaults());
    let report = rm.apply_priority();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.threads >= 2, "{report:?}");
    assert_eq!(report.nice, Some(19));
    assert_eq!(report.io_priority, Some(IoPriority::Idle));

    let (nice, io) = priority::current();
    assert_eq!(nice.unwrap(), 19, "getpriority on this thread");
    assert_eq!(
        io.unwrap(),
        Some(IoPriority::Idle),
        "ioprio_get on this thread"
    );

    let (nice, io) = std::thread::spawn(priority::current).join().unwrap();
    assert_eq!(nice.unwrap(), 19, "a thread spawned afterwards inherits");
    assert_eq!(io.unwrap(), Some(IoPriority::Idle));

    to_old.send(()).unwrap();
    let (nice, io) = from_old.recv().unwrap();
    old.join().unwrap();
    assert_eq!(nice.unwrap(), 19, "a thread that existed before");
    assert_eq!(io.unwrap(), Some(IoPriority::Idle));

    // Back to nice 10 is a raise: as root it works, otherwise it is a
    // warning that names what was kept; never a panic or an error.
    let report = priority::apply(Some(10), Some(IoPriority::BestEffort(7)));
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        assert_eq!(report.nice, Some(10));
    } else {
        assert_eq!(report.nice, Some(19));
        assert!(
            report.warnings[0].contains("kept nice 19"),
            "{:?}",
            report.warnings
        );
    }
}
