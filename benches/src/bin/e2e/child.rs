//! The harness's side of a role process: spawn it (the harness binary itself, with a
//! hidden `--role` argument), talk to it line by line, read its memory from `/proc`.
//!
//! Protocol (stdin/stdout of the child, one line each):
//! - the child prints `ready {json}` once it is listening;
//! - the harness writes `<command> <args…>`; the child answers `ok {json}` or
//!   `err <message>`, one command at a time;
//! - the child exits when its stdin closes, so no role outlives the harness.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

use crate::Res;

/// A running role process.
pub struct Child {
    name: String,
    proc: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its process id, for `/proc/PID/status`.
    pub pid: u32,
    /// The JSON of its `ready` line (its bound ports).
    pub ready: Value,
}

/// Resident memory of a process, KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub hwm_kib: u64,
}

impl Mem {
    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// CPU time (user + system, all threads) that `pid` has used so far, in seconds.
/// From `/proc/PID/stat`, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
pub fn cpu_secs(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu(&stat).ok_or_else(|| format!("bad /proc/{pid}/stat").into())
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
pub fn parse_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: split after the
    // last ')'. Then field 3 (state) is rest[0], utime (14) rest[11], stime (15) rest[12].
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn mem_of(pid: u32) -> Res<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&status).ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

/// Parses `VmRSS:` and `VmHWM:` (kB) out of a `/proc/PID/status` text.
pub fn parse_status(status: &str) -> Option<Mem> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:").unwrap_or(0),
    })
}

impl Child {
    /// Starts `current_exe() --role {role}` with extra environment `env` and waits
    /// for its `ready` line.
    pub async fn spawn(role: &str, env: &[(String, String)]) -> Res<Child> {
        let exe = std::env::current_exe()?;
        let mut proc = tokio::process::Command::new(exe)
            .args(["--role", role])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = proc.id().ok_or("role process exited at once")?;
        let stdin = proc.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(proc.stdout.take().ok_or("no stdout")?).lines();
        let mut child = Child {
            name: role.to_string(),
            proc,
            stdin,
            stdout,
            pid,
            ready: Value::Null,
        };
        let line = child.read_line(Duration::from_secs(30)).await?;
        let json = line
            .strip_prefix("ready ")
            .ok_or_else(|| format!("{role}: expected a ready line, got {line:?}"))?;
        child.ready = serde_json::from_str(json)?;
        Ok(child)
    }

    async fn read_line(&mut self, timeout: Duration) -> Res<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(format!("{}: role process exited", self.name).into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(format!("{}: no answer within {timeout:?}", self.name).into()),
        }
    }

    /// Sends one command and waits (at most `timeout`) for its answer.
    pub async fn cmd(&mut self, line: &str, timeout: Duration) -> Res<Value> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        let answer = self.read_line(timeout).await?;
        if let Some(json) = answer.strip_prefix("ok ") {
            return Ok(serde_json::from_str(json)?);
        }
        Err(format!("{}: {line}: {answer}", self.name).into())
    }

    /// A port from the `ready` line.
    pub fn port(&self, key: &str) -> Res<u16> {
        self.ready[key]
            .as_u64()
            .map(|p| p as u16)
            .ok_or_else(|| format!("{}: no port {key:?} in {}", self.name, self.ready).into())
    }

    /// Its memory now.
    pub fn mem(&self) -> Res<Mem> {
        mem_of(self.pid)
    }

    /// Closes stdin (the role exits) and waits a little; killed on drop otherwise.
    pub async fn stop(mut self) {
        let _ = self.stdin.shutdown().await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.proc.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let s = "Name:\te2e\nVmPeak:\t  99 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        let m = parse_status(s).unwrap();
        assert_eq!(m.rss_kib, 4096);
        assert_eq!(m.hwm_kib, 5120);
        assert!(parse_status("Name:\tx\n").is_none());
    }

    #[test]
    fn parses_proc_stat_cpu() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    4 0 100 1000 100 18446744073709551615";
        assert_eq!(parse_cpu(line), Some(3.0));
        assert!(cpu_secs(std::process::id()).unwrap() >= 0.0);
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn reads_own_memory() {
        let m = mem_of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0);
        assert!(m.hwm_kib >= m.rss_kib);
    }
}
