//! The stop button during `fit`, on libc's `sigaction` by hand: the handler must be installed and the previous
//! disposition restored around each fit, in the copy of this crate that the running cell links (each evcxr cell
//! links its own copy, so a process-wide registry such as signal-hook's would be one registry per cell).
//!
//! While `fit` runs, SIGINT (the notebook's ■ with the kernel "Rust (fashion)", whose spec says
//! `"interrupt_mode": "signal"`; Ctrl-C in a terminal) only sets a flag: `fit` ends at the end of the current
//! batch and returns what it trained. Outside `fit` the previous disposition is back — in the notebook the
//! default, which ends the cell's process as the stop button always did (evcxr then starts a fresh one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Fits running at once (threads of one process), and the disposition the first one replaced.
#[cfg(unix)]
static INSTALLED: Mutex<(usize, Option<libc::sigaction>)> = Mutex::new((0, None));

/// While alive, SIGINT asks the running fit to stop instead of ending the process.
pub(crate) struct StopOnInterrupt(());

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REQUESTED.store(true, Ordering::SeqCst);
}

impl StopOnInterrupt {
    /// Installs the handler (a no-op where signals do not exist).
    pub fn install() -> StopOnInterrupt {
        #[cfg(unix)]
        {
            let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
            if installed.0 == 0 {
                REQUESTED.store(false, Ordering::SeqCst);
                // SAFETY: `sigaction` with a zeroed struct, an empty mask and a handler that only stores an
                // atomic.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut previous: libc::sigaction = std::mem::zeroed();
                    let ok = libc::sigaction(libc::SIGINT, &action, &mut previous) == 0;
                    installed.1 = ok.then_some(previous);
                }
            }
            installed.0 += 1;
        }
        StopOnInterrupt(())
    }

    /// Whether SIGINT arrived since [`install`](Self::install).
    pub fn requested(&self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

impl Drop for StopOnInterrupt {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
            installed.0 -= 1;
            if installed.0 == 0 {
                if let Some(previous) = installed.1.take() {
                    // SAFETY: puts back the disposition the first `install` replaced.
                    unsafe {
                        libc::sigaction(libc::SIGINT, &previous, std::ptr::null_mut());
                    }
                }
                REQUESTED.store(false, Ordering::SeqCst);
            }
        }
    }
}
