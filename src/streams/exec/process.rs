//! One exec handler's program: spawned in its own process group, read line by line with a
//! bound on line length, and stopped with SIGTERM, then SIGKILL, to the whole group, so a
//! shell script's children go with it. The child is always waited for (no zombies); a run
//! dropped without a stop (the runtime going away) kills the group in `Drop`.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// A running program and its process group.
pub struct Process {
    child: Child,
    /// The group's id: the program's pid (it leads its own group).
    pgid: i32,
    /// Waited for: nothing of ours is left to kill.
    reaped: bool,
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
            reaped: false,
        };
        Ok((process, pipes))
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the program to exit, then kills what it left behind in its group.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reaped = true;
        // Children it started and did not take along (a script's `sleep &`).
        signal_group(self.pgid, libc::SIGKILL);
        Ok(status)
    }

    /// SIGTERM to the group; SIGKILL after `timeout`. Returns the exit status and whether
    /// SIGKILL was needed.
    pub async fn stop(&mut self, timeout: Duration) -> io::Result<(ExitStatus, bool)> {
        signal_group(self.pgid, libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(timeout, self.wait()).await {
            return status.map(|s| (s, false));
        }
        signal_group(self.pgid, libc::SIGKILL);
        self.wait().await.map(|s| (s, true))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.reaped {
            // Not waited for, so the pid cannot have been reused. tokio reaps the child
            // (kill_on_drop); this takes the rest of the group along.
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    // ESRCH (the group is gone) is the expected outcome after a clean exit.
    unsafe {
        libc::kill(-pgid, signal);
    }
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
