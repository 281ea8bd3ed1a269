//! cutfs itself, mounted for real: what a cut keeps is exactly what was synced.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The mounted cutfs process; dropping it ends it and detaches a mount it left behind.
struct Mount(Child, std::path::PathBuf);

impl Mount {
    fn new(backing: &Path, at: &Path) -> (Mount, BufReader<std::process::ChildStdout>) {
        fs::create_dir_all(at).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutfs"))
            .arg(backing)
            .arg(at)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "mounted");
        (Mount(child, at.to_owned()), out)
    }

    fn signal(&self, sig: libc::c_int) {
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, sig) }, 0);
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "cutfs did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.1)
                .status();
        }
    }
}

#[test]
fn a_cut_keeps_what_was_synced_and_drops_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (disk, mnt) = (tmp.path().join("disk"), tmp.path().join("mnt"));
    fs::create_dir_all(&disk).unwrap();
    fs::write(disk.join("old"), b"before").unwrap();
    let (mut m, mut out) = Mount::new(&disk, &mnt);

    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"before");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(mnt.join("synced"))
        .unwrap();
    f.write_all_at(b"kept", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b" and lost", 4).unwrap();
    let mut back = [0u8; 13];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"kept and lost", "reads see unsynced writes");
    f.set_len(2).unwrap();
    drop(f);
    fs::write(mnt.join("never-synced"), vec![7u8; 10_000]).unwrap();
    let g = OpenOptions::new()
        .write(true)
        .open(mnt.join("old"))
        .unwrap();
    g.write_all_at(b"AFTER!", 0).unwrap();
    drop(g);
    fs::create_dir(mnt.join("dir")).unwrap();
    fs::rename(mnt.join("synced"), mnt.join("dir/moved")).unwrap();
    // The kernel locks locally (cutfs has no lock op): an exclusive flock works.
    let l = fs::File::open(mnt.join("dir/moved")).unwrap();
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&l),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    drop(l);

    m.signal(libc::SIGUSR1);
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert!(l.starts_with("cut "), "{l}");
    assert!(fs::read_dir(&mnt).is_err(), "requests after the cut fail");
    m.signal(libc::SIGTERM);
    assert!(m.wait().success());

    assert_eq!(
        fs::read(disk.join("dir/moved")).unwrap(),
        b"kept",
        "synced data, renamed"
    );
    assert!(
        !disk.join("never-synced").exists(),
        "a never-synced file is gone"
    );
    assert_eq!(
        fs::read(disk.join("old")).unwrap(),
        b"before",
        "unsynced overwrite gone"
    );
}
