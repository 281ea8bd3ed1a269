//! `cutfs BACKING MOUNTPOINT`: mounts a view of BACKING at MOUNTPOINT that keeps every write in
//! memory until the file is synced (see `volume.rs` for the model).
//!
//! Control, by signal (simple, and usable from any test without a protocol):
//! - `SIGUSR1`: the power cut. Everything unsynced is dropped, every later request fails with
//!   `EIO`, and `cut dirty_pages=N never_synced=[paths]` is printed on stdout.
//! - `SIGUSR2`: holds every `fsync` until the next `SIGUSR2` (a slow disk); prints `held` or
//!   `released`.
//! - `SIGTERM`/`SIGINT`: unmount and exit (what was never synced is not written back: the
//!   backing dir only ever holds synced data).
//!
//! `mounted` is printed on stdout once the mount is ready.

mod fs;
mod volume;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fuser::{Config, MountOption};

#[derive(Debug, thiserror::Error)]
enum CutfsError {
    #[error("usage: cutfs BACKING MOUNTPOINT")]
    Usage,
    #[error("reading the backing directory {0}: {1}")]
    Load(PathBuf, std::io::Error),
    #[error("mounting at {0}: {1}")]
    Mount(PathBuf, std::io::Error),
    #[error("unmounting: {0}")]
    Unmount(std::io::Error),
    #[error("signal setup: {0}")]
    Signal(std::io::Error),
}

/// The signals this process is controlled by, blocked in every thread and taken with `sigwait`.
fn control_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn run() -> Result<(), CutfsError> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        return Err(CutfsError::Usage);
    };
    // Blocked before any thread starts, so the FUSE threads inherit the mask and only the
    // `sigwait` below ever sees these signals.
    let set = control_signals();
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(CutfsError::Signal(std::io::Error::from_raw_os_error(rc)));
    }
    let volume = volume::Volume::load(backing).map_err(|e| CutfsError::Load(backing.clone(), e))?;
    let volume = Arc::new(Mutex::new(volume));
    let hold = Arc::new(fs::Hold::default());
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("cutfs".into()), MountOption::RW];
    let session = fuser::spawn_mount(
        fs::CutFs {
            volume: volume.clone(),
            hold: hold.clone(),
        },
        mountpoint,
        &config,
    )
    .map_err(|e| CutfsError::Mount(mountpoint.clone(), e))?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();
    loop {
        let mut sig = 0;
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc != 0 {
            return Err(CutfsError::Signal(std::io::Error::from_raw_os_error(rc)));
        }
        if sig == libc::SIGUSR1 {
            let d = volume.lock().unwrap_or_else(|e| e.into_inner()).cut();
            let names: Vec<_> = d
                .never_synced
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let _ = writeln!(
                out,
                "cut dirty_pages={} never_synced=[{}]",
                d.dirty_pages,
                names.join(",")
            );
            let _ = out.flush();
        } else if sig == libc::SIGUSR2 {
            let now = if hold.toggle() { "held" } else { "released" };
            let _ = writeln!(out, "{now}");
            let _ = out.flush();
        } else {
            break;
        }
    }
    session.umount_and_join().map_err(CutfsError::Unmount)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cutfs: {e}");
        std::process::exit(1);
    }
}
