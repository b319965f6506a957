//! What every daemon binary does the same way, so that the units behave alike under systemd:
//! readiness (`Type=notify`) and a clean stop on SIGTERM (systemctl stop) or SIGINT (Ctrl-C).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;

/// Tells systemd that the daemon is ready (units of `Type=notify`); a no-op without
/// `NOTIFY_SOCKET`, i.e. outside systemd. A failure is logged, not fatal: the daemon works,
/// only systemd would not know it.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY=1: {e}");
    }
}

/// Sets `stop` when SIGTERM or SIGINT arrives (from a thread of its own); the daemon's loops
/// poll it and finish what they are doing.
pub fn stop_on_signal(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            smol::block_on(async {
                if let Some(Ok(signal)) = signals.next().await {
                    tracing::info!("{signal:?}: stopping");
                    stop.store(true, Ordering::Relaxed);
                }
            })
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_sets_the_flag() {
        let stop = Arc::new(AtomicBool::new(false));
        stop_on_signal(stop.clone()).unwrap();
        // The signal comes from outside, as systemd sends it (kill(1) of this process).
        let me = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &me])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !stop.load(Ordering::Relaxed) {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGTERM did not set the flag"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
