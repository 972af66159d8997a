//! Stop signals as a flag: SIGINT (Ctrl-C), SIGTERM (Slurm preemption, `kill`) and SIGHUP (a
//! closed terminal) all ask a long computation to stop at its next safe point; it polls
//! [`Stop::requested`], writes what it must and exits with [`Stop::exit_code`] (128 + the
//! signal, as shells report it: 130, 143, 129).
//!
//! The first signal is remembered and announced once; any later one only says that the stop is
//! under way, so pressing Ctrl-C twice cannot cut a checkpoint half-way (SIGKILL still ends the
//! process at once). The handler does nothing but atomic stores and one `write(2)`, both
//! async-signal-safe.
//!
//! Also the other process-level guards the programs share: [`DirLock`] (one process at a time
//! in a directory), [`die_with_parent`] and [`quiet_broken_pipe`].

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first stop signal received, 0 for none.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// The flag handed out by [`install`], raised by the first signal.
static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// What the handler writes to stderr (set once by [`install`]).
static MESSAGES: OnceLock<(String, String)> = OnceLock::new();

/// The signals that ask for a stop.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// A handle on the stop request of this process.
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
}

impl Stop {
    /// The flag raised by the first stop signal (share it with the computation).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The first stop signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        match FIRST.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// The conventional exit status for a computation stopped by that signal: 128 + its number
    /// (130 when the flag was raised some other way).
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal().unwrap_or(libc::SIGINT)).clamp(0, 255) as u8
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let first = FIRST
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if let Some(flag) = FLAG.get() {
        flag.store(true, Ordering::SeqCst);
    }
    if let Some((once, again)) = MESSAGES.get() {
        let text = if first { once } else { again };
        // SAFETY: write(2) on stderr with a buffer that lives for the whole program; it is
        // async-signal-safe, and a short write is harmless.
        unsafe {
            libc::write(2, text.as_ptr().cast(), text.len());
        }
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP and returns the stop handle. `what` says
/// what the program does on the first signal (e.g. "stopping after the current batch and
/// writing a checkpoint"). Calling it again returns the same handle.
///
/// # Errors
/// The OS error when a handler cannot be installed.
pub fn install(program: &str, what: &str) -> std::io::Result<Stop> {
    let flag = Arc::clone(FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))));
    let _ = MESSAGES.set((
        format!("\n{program}: {what} (further signals are ignored; SIGKILL ends at once)\n"),
        format!("{program}: already stopping\n"),
    ));
    for signal in STOP_SIGNALS {
        // SAFETY: a zeroed `sigaction` is a valid start; the handler is an `extern "C"` fn that
        // only touches atomics and calls write(2).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(Stop { flag })
}

/// An exclusive hold on a directory, through `flock(2)` on a lock file in it: released when
/// dropped or when the process dies (the kernel drops the lock), so a killed holder leaves no
/// stale lock behind. The file holds the holder's pid, for the message of the one refused.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Why [`DirLock::acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock.
    Held {
        /// The holder's pid, as it wrote it (empty when unreadable).
        holder: String,
    },
    /// The lock file could not be opened or written.
    Io(std::io::Error),
}

impl DirLock {
    /// Takes the lock file `path` (created if absent) without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it, [`LockError::Io`] otherwise.
    pub fn acquire(path: &std::path::Path) -> Result<DirLock, LockError> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(LockError::Io)?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                return Err(LockError::Held {
                    holder: holder.trim().to_string(),
                });
            }
        }
        file.set_len(0).map_err(LockError::Io)?;
        write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
        Ok(DirLock { _file: file })
    }
}

/// Lets SIGPIPE end the process quietly, as it ends other Unix tools: `program | head` then stops
/// the program when `head` has read enough, instead of the panic Rust's `println!` raises on
/// a closed pipe. For programs whose output is their product (listings, reports), not for a
/// training run, which must stop through its checkpoint instead.
pub fn quiet_broken_pipe() {
    // SAFETY: resetting a signal's disposition to the default has no preconditions; no handler
    // of this process is replaced (SIGPIPE is ignored by the Rust runtime, not handled).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// In a child process between `fork` and `exec` (`CommandExt::pre_exec`): ask the kernel to
/// send SIGTERM to it when the parent dies, so that a killed supervisor leaves no orphans (each
/// child then stops the way a SIGTERM makes it stop). Linux only; elsewhere a no-op.
///
/// # Errors
/// The OS error of `prctl`.
pub fn die_with_parent() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling process; it is
        // async-signal-safe, as a pre_exec hook requires.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_and_released_when_dropped() {
        let dir = std::env::temp_dir().join(format!("signals-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".lock");
        let first = DirLock::acquire(&path).unwrap();
        match DirLock::acquire(&path) {
            Err(LockError::Held { holder }) => assert_eq!(holder, std::process::id().to_string()),
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        assert!(DirLock::acquire(&path).is_ok());
        assert!(matches!(
            DirLock::acquire(&dir.join("missing/.lock")),
            Err(LockError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_signal_raises_the_flag_and_sets_the_exit_code_later_ones_do_not_change_it() {
        let stop = install("test", "stopping").unwrap();
        assert!(!stop.requested());
        assert_eq!(stop.signal(), None);
        // SAFETY: raise(3) delivers the signal to this thread, whose handler was installed.
        unsafe {
            libc::raise(libc::SIGTERM);
        }
        assert!(stop.requested());
        assert_eq!(stop.signal(), Some(libc::SIGTERM));
        assert_eq!(stop.exit_code(), 143);
        // SAFETY: as above.
        unsafe {
            libc::raise(libc::SIGINT);
            libc::raise(libc::SIGHUP);
        }
        assert_eq!(
            stop.signal(),
            Some(libc::SIGTERM),
            "the first signal is kept"
        );
        assert_eq!(stop.exit_code(), 143);
        assert!(
            install("test", "again").unwrap().requested(),
            "one flag per process"
        );
    }
}
