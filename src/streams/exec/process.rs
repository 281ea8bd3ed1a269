//! One exec handler's program: spawned in its own process group, read line by line with a
//! bound on line length, and stopped with SIGTERM, then SIGKILL, to the whole group, so a
//! shell script's children go with it. The child is always waited for (no zombies); a run
//! dropped without a stop (the runtime going away) kills the group in `Drop`.
//!
//! The group is only ever signalled while its leader is unreaped. A group's id is its
//! leader's pid; once the leader is reaped and the group is empty, the kernel may hand that
//! id to an unrelated process, and `kill(-pgid)` would hit it. An exited but unreaped leader
//! (a zombie) keeps its pid, and so the id, from being reused. So waiting is split: learn that
//! the program exited without reaping it, kill what it left in its group, then reap.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// A running program and its process group.
pub struct Process {
    child: Child,
    /// The group's id: the program's pid (it leads its own group).
    pgid: i32,
    /// How we learn that the program exited without reaping it.
    exit: ExitWatch,
    /// Waited for: the group's id may belong to someone else now, so it is never signalled.
    reaped: bool,
    /// Each signal sent to the group, with the leader's state (`/proc` letter, `-` when
    /// gone) right after: the tests check that no signal went out after the leader was reaped.
    #[cfg(test)]
    signals: Vec<(i32, char)>,
}

/// Exit without reaping. tokio's `Child` reaps in `wait` (through its SIGCHLD or pidfd
/// machinery), and nothing reaps a child whose `wait` is not polled, so until we call it the
/// leader stays a zombie once it exits.
enum ExitWatch {
    /// A pidfd polls readable once its process has exited, zombie or not (Linux 5.3): no
    /// thread, and a cancelled wait loses nothing.
    Pidfd(AsyncFd<OwnedFd>),
    /// Kernels without pidfds: a blocking thread in `waitid(WEXITED | WNOWAIT)`, kept across
    /// cancelled waits so there is only ever one. It ends when the program exits, which
    /// `Drop`'s SIGKILL ensures when the runtime goes away.
    Thread(JoinHandle<io::Result<()>>),
    /// The program has exited (it may be reaped too).
    Exited,
}

/// The program's pipes, handed to whoever reads and writes them.
pub struct Pipes {
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

impl Process {
    pub fn spawn(command: &[String], env: &[(&str, &str)]) -> io::Result<(Process, Pipes)> {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. If the daemon dies
        // without stopping the program (SIGKILL, a crash), the kernel sends it SIGTERM. This
        // is tied to the spawning thread; tokio's worker threads live as long as the daemon.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| io::Error::other("spawned a process without a pid"))?;
        let pipes = Pipes {
            stdin: child.stdin.take().expect("piped"),
            stdout: child.stdout.take().expect("piped"),
            stderr: child.stderr.take().expect("piped"),
        };
        let process = Process {
            child,
            pgid,
            exit: ExitWatch::new(pgid),
            reaped: false,
            #[cfg(test)]
            signals: Vec::new(),
        };
        Ok((process, pipes))
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the program to exit, kills what it left behind in its group (a script's
    /// `sleep &`) while its exit keeps the group's id ours, then reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if !self.reaped {
            self.exit.exited(self.pgid).await?;
            self.signal(libc::SIGKILL);
        }
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// SIGTERM to the group; SIGKILL after `timeout`. Returns the exit status and whether
    /// SIGKILL was needed.
    pub async fn stop(&mut self, timeout: Duration) -> io::Result<(ExitStatus, bool)> {
        self.signal(libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(timeout, self.wait()).await {
            return status.map(|s| (s, false));
        }
        self.signal(libc::SIGKILL);
        self.wait().await.map(|s| (s, true))
    }

    /// Signals the group, unless its leader was reaped (then the id may be someone else's).
    fn signal(&mut self, signal: i32) {
        if self.reaped {
            return;
        }
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        // ESRCH (the group is gone) cannot happen while the leader is unreaped; nothing to do
        // about other errors.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
        #[cfg(test)]
        self.signals.push((signal, tests::state(self.pgid)));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Not reaped, so the id is still the group's. tokio reaps the child (kill_on_drop);
        // this takes the rest of the group along.
        self.signal(libc::SIGKILL);
    }
}

impl ExitWatch {
    /// Must be called before `pid` (our child) is reaped, so the pid is still ours.
    fn new(pid: i32) -> ExitWatch {
        ExitWatch::pidfd(pid).unwrap_or_else(|| ExitWatch::thread(pid))
    }

    fn pidfd(pid: i32) -> Option<ExitWatch> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: the descriptor was just opened and nothing else owns it; an OwnedFd keeps
        // it open, unchanged, for as long as the AsyncFd owns it.
        unsafe {
            let fd = OwnedFd::from_raw_fd(fd);
            AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                .ok()
                .map(ExitWatch::Pidfd)
        }
    }

    fn thread(pid: i32) -> ExitWatch {
        ExitWatch::Thread(tokio::task::spawn_blocking(move || loop {
            match waitid_nowait(pid, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(|_| ()),
            }
        }))
    }

    /// Returns once `pid` has exited, leaving it unreaped. Cancel-safe.
    async fn exited(&mut self, pid: i32) -> io::Result<()> {
        match self {
            ExitWatch::Exited => return Ok(()),
            ExitWatch::Pidfd(fd) => loop {
                let mut ready = fd.readable().await?;
                // Readiness is a hint; the kernel's word is waitid's.
                if waitid_nowait(pid, libc::WNOHANG)? {
                    break;
                }
                ready.clear_ready();
            },
            ExitWatch::Thread(thread) => thread.await.map_err(io::Error::other)??,
        }
        *self = ExitWatch::Exited;
        Ok(())
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT | flags)`: whether `pid` has exited, without reaping
/// it (with `WNOHANG`, `false` when it still runs; without, it blocks until it exits).
fn waitid_nowait(pid: i32, flags: i32) -> io::Result<bool> {
    // SAFETY: waitid writes only into the siginfo we own; zeroed is a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(pid).map_err(io::Error::other)?;
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled in a SIGCHLD siginfo, or left it zeroed (WNOHANG, still running).
    Ok(unsafe { info.si_pid() } != 0)
}

/// One line of a program's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A line longer than the limit (its length so far), dropped whole.
    TooLong(usize),
    /// Not UTF-8.
    Binary,
}

/// Reads lines of at most `max` bytes without ever holding more than that: the rest of a
/// longer line is skipped as it arrives.
pub struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// Bytes of an over-long line skipped so far (0 when not skipping).
    skipped: usize,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    pub fn new(inner: R, max: usize) -> Lines<R> {
        Lines {
            inner,
            buf: Vec::new(),
            max,
            skipped: 0,
        }
    }

    /// The next line (without its `\n` or `\r\n`), or `None` at the end of the output.
    pub async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Ok(if self.skipped > 0 {
                    Some(Line::TooLong(std::mem::take(&mut self.skipped)))
                } else if self.buf.is_empty() {
                    None
                } else {
                    Some(self.take())
                });
            }
            let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            if self.skipped > 0 || self.buf.len() + chunk > self.max {
                self.skipped += self.buf.len() + chunk;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(&avail[..chunk]);
            }
            self.inner.consume(chunk + usize::from(found));
            if found {
                if self.skipped > 0 {
                    return Ok(Some(Line::TooLong(std::mem::take(&mut self.skipped))));
                }
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Line {
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes).map_or(Line::Binary, Line::Text)
    }
}

/// Lets through at most `per_second` log lines a second and counts the rest, so a chatty or
/// broken program cannot flood the journal.
pub struct Throttle {
    per_second: u32,
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl Throttle {
    pub fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log this one, after saying that `n` were suppressed before it.
    pub fn admit(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &'static [u8], max: usize, cap: usize) -> Vec<Line> {
        let reader = tokio::io::BufReader::with_capacity(cap, input);
        let mut l = Lines::new(reader, max);
        let mut out = Vec::new();
        while let Some(line) = l.next().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_bounded_and_the_rest_of_a_long_one_is_skipped() {
        for cap in [1, 3, 64] {
            let got = lines(b"ab\r\n0123456789\ncd\n\xff\nlast", 5, cap).await;
            assert_eq!(
                got,
                vec![
                    Line::Text("ab".into()),
                    Line::TooLong(10),
                    Line::Text("cd".into()),
                    Line::Binary,
                    Line::Text("last".into()),
                ],
                "buffer of {cap}"
            );
        }
        assert_eq!(lines(b"toolongtail", 4, 2).await, vec![Line::TooLong(11)]);
    }

    #[tokio::test]
    async fn the_whole_group_is_stopped_and_reaped() {
        // The script's child ignores nothing but would outlive a SIGTERM to the script alone.
        let cmd = ["sh", "-c", "sleep 600 & echo $!; wait"].map(String::from);
        let (mut p, pipes) = Process::spawn(&cmd, &[]).unwrap();
        let mut out = Lines::new(tokio::io::BufReader::new(pipes.stdout), 64);
        let Some(Line::Text(child)) = out.next().await.unwrap() else {
            panic!("no pid")
        };
        let child: i32 = child.parse().unwrap();
        let (status, killed) = p.stop(Duration::from_secs(5)).await.unwrap();
        assert!(!status.success() && !killed);
        // The sleeper went with the group (it is not our child, so poll the pid).
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            dead(child)
        });
        assert!(gone, "the group's other process outlived the stop");
    }

    /// Gone, or a zombie waiting for whoever adopted it (not ours to reap).
    fn dead(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    }

    /// The leader's state letter in `/proc`, `-` when it is gone (reaped).
    pub(super) fn state(pid: i32) -> char {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or('-', |s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.trim_start().chars().next())
                .unwrap_or('-')
        })
    }

    /// A leader that exits at once, leaving a sleeper in its group: the group is killed
    /// while the leader is a zombie (its id still ours), never after it was reaped.
    async fn leader_exits_and_leaves_a_child(watch: impl FnOnce(i32) -> ExitWatch) {
        let cmd = ["sh", "-c", "sleep 600 & echo $!"].map(String::from);
        let (mut p, pipes) = Process::spawn(&cmd, &[]).unwrap();
        p.exit = watch(p.pgid);
        let mut out = Lines::new(tokio::io::BufReader::new(pipes.stdout), 64);
        let Some(Line::Text(child)) = out.next().await.unwrap() else {
            panic!("no pid")
        };
        let child: i32 = child.parse().unwrap();
        assert!(p.wait().await.unwrap().success());
        assert_eq!(p.signals.len(), 1, "{:?}", p.signals);
        assert_eq!(
            p.signals[0],
            (libc::SIGKILL, 'Z'),
            "the group was signalled after its leader was reaped"
        );
        assert_eq!(state(p.pgid), '-', "the leader was not reaped");
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            dead(child)
        });
        assert!(gone, "the leader's child outlived it");
        // Reaped: a stop now (or the drop) signals nothing; the id may be someone else's.
        let (status, killed) = p.stop(Duration::from_secs(5)).await.unwrap();
        assert!(status.success() && !killed);
        assert_eq!(p.signals.len(), 1, "{:?}", p.signals);
    }

    #[tokio::test]
    async fn the_group_is_killed_before_its_leader_is_reaped() {
        leader_exits_and_leaves_a_child(|pid| ExitWatch::pidfd(pid).expect("a pidfd")).await;
    }

    #[tokio::test]
    async fn without_pidfds_a_thread_waits_for_the_exit() {
        leader_exits_and_leaves_a_child(ExitWatch::thread).await;
    }

    #[tokio::test]
    async fn a_program_that_ignores_sigterm_gets_sigkill() {
        let cmd = [
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ]
        .map(String::from);
        let (mut p, pipes) = Process::spawn(&cmd, &[]).unwrap();
        let mut out = Lines::new(tokio::io::BufReader::new(pipes.stdout), 64);
        assert_eq!(out.next().await.unwrap(), Some(Line::Text("ready".into())));
        let (status, killed) = p.stop(Duration::from_millis(300)).await.unwrap();
        assert!(killed && !status.success());
        // SIGTERM, SIGKILL, then the SIGKILL of the wait: each while the leader was unreaped.
        let sent: Vec<i32> = p.signals.iter().map(|s| s.0).collect();
        assert_eq!(sent, [libc::SIGTERM, libc::SIGKILL, libc::SIGKILL]);
        assert!(p.signals.iter().all(|s| s.1 != '-'), "{:?}", p.signals);
    }

    #[test]
    fn the_throttle_counts_what_it_suppressed() {
        let mut t = Throttle::new(2);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        t.window -= Duration::from_secs(1);
        assert_eq!(t.admit(), Some(2));
    }
}
