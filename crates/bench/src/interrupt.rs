//! Ctrl-C during a benchmark: a flag the benchmarks' loops check, so that
//! the guards that remove namespaces and stop child servers run before the
//! process ends, instead of the default of dying mid-run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C set a flag that the benchmarks' loops check (so their
/// guards run) instead of killing the process; idempotent.
pub fn catch_interrupt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async {
                let ctrl_c = tokio::signal::ctrl_c();
                let _ = tx.send(());
                if ctrl_c.await.is_ok() {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                    eprintln!("interrupted: cleaning up");
                }
            });
        });
        let _ = rx.recv_timeout(Duration::from_secs(1));
    });
}

/// An error when Ctrl-C was pressed.
pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Whether Ctrl-C was pressed since [`catch_interrupt`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
