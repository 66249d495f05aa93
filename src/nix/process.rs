//! Running one Nix command as a child process, the way a server must: with a deadline,
//! stdout and stderr read concurrently (so neither pipe can fill and stall Nix), stderr kept
//! in full up to a bound ([`STDERR_LIMIT`]) plus always its last lines (memory stays bounded
//! however chatty a build is), and the whole process group stopped when the caller goes away
//! or the deadline passes, and when the server dies ([`super::child`]).
//!
//! Stderr is kept whole (not only its tail) because several answers live there: the lists of
//! `nix-store --realise --dry-run` (thousands of paths for a big closure), the warnings about
//! untrusted substitutes that precede a failure, and the trace of an evaluation.
//!
//! Stopping: Nix gets SIGTERM first, which it handles by killing its builders (they run in
//! sessions of their own, so signalling Nix's group alone would orphan them); anything still
//! alive after a grace period gets SIGKILL.

use super::child;
use std::collections::VecDeque;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

/// How many lines of a command's log are always kept, however long the log.
const LOG_TAIL_LINES: usize = 30;
/// How much of a command's stderr is kept from its start (whole lines).
pub const STDERR_LIMIT: usize = 4 << 20;
/// Longest line kept (longer ones are cut).
const MAX_LINE: usize = 64 << 10;

/// Why a Nix command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} timed out after {seconds} s")]
    Timeout { program: String, seconds: u64 },
    #[error("{program} failed ({status})")]
    Failed { program: String, status: std::process::ExitStatus, stderr: Captured },
    #[error("reading the output of {program}: {source}")]
    Io { program: String, source: std::io::Error },
}

/// What a command printed on stderr: everything up to [`STDERR_LIMIT`] bytes, and its last
/// [`LOG_TAIL_LINES`] lines in any case.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    head: String,
    truncated: bool,
    tail: VecDeque<String>,
}

impl Captured {
    fn push(&mut self, line: String) {
        if !self.truncated && self.head.len() + line.len() < STDERR_LIMIT {
            self.head.push_str(&line);
            self.head.push('\n');
        } else {
            self.truncated = true;
        }
        if self.tail.len() == LOG_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The text kept: all of it, or (beyond the limit) its start and its last lines.
    pub fn text(&self) -> String {
        if !self.truncated {
            return self.head.clone();
        }
        let mut text = self.head.clone();
        text.push_str("[…]\n");
        for line in &self.tail {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The last lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// What a successful command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Captured,
}

/// Runs `command` to completion by `deadline` (the budget started at `started`) and returns
/// its output. Dropping the returned future stops the process group.
pub async fn run(mut command: Command, started: Instant, deadline: Instant) -> Result<Output, ProcessError> {
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Dropping `running` before it is reaped stops the process group.
    let mut running =
        child::spawn(command).await.map_err(|source| ProcessError::Spawn { program: program.clone(), source })?;
    let mut stdout = running.child().stdout.take().expect("stdout is piped");
    let stderr = running.child().stderr.take().expect("stderr is piped");

    let work = async {
        let mut out = Vec::new();
        let read_out = stdout.read_to_end(&mut out);
        let read_err = capture(stderr, &program);
        let (out_res, tail, status) = tokio::join!(read_out, read_err, running.child().wait());
        let io = |source| ProcessError::Io { program: program.clone(), source };
        out_res.map_err(io)?;
        let status = status.map_err(io)?;
        Ok::<_, ProcessError>((out, tail, status))
    };
    let (stdout, stderr, status) = match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result?,
        Err(_) => {
            let seconds = deadline.saturating_duration_since(started).as_secs();
            return Err(ProcessError::Timeout { program, seconds });
        }
    };
    running.reaped();
    if status.success() { Ok(Output { stdout, stderr }) } else { Err(ProcessError::Failed { program, status, stderr }) }
}

/// Keeps a stream as [`Captured`], logging each line at debug level as it arrives. Lines
/// are read as bytes (a build log need not be UTF-8) and cut at [`MAX_LINE`] bytes, so
/// neither bad text nor an endless line stops the reading (which would stall Nix on a full
/// pipe) or grows memory.
async fn capture(stream: tokio::process::ChildStderr, program: &str) -> Captured {
    let mut reader = BufReader::new(stream);
    let mut captured = Captured::default();
    let mut line = Vec::new();
    let mut emit = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).into_owned();
        // Nix echoes fetched URLs, credentials included: never into the log.
        tracing::debug!(target: "nixery::nix::log", program, "{}", crate::redact::credentials(&text));
        captured.push(text);
        line.clear();
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, used, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if ends_line {
            emit(&mut line);
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
    captured
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    fn budget(secs: u64) -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + Duration::from_secs(secs))
    }

    #[tokio::test]
    async fn returns_stdout_of_a_successful_command() {
        let (s, d) = budget(10);
        let out = run(sh("echo out; echo err >&2"), s, d).await.unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr.text(), "err\n");
    }

    #[tokio::test]
    async fn keeps_the_whole_log_and_its_tail() {
        let (s, d) = budget(10);
        let err =
            run(sh("i=0; while [ $i -lt 100 ]; do echo line$i >&2; i=$((i+1)); done; exit 3"), s, d).await.unwrap_err();
        let ProcessError::Failed { stderr, status, .. } = err else { panic!("{err:?}") };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr.text().lines().count(), 100);
        let tail = stderr.tail();
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "line99");
    }

    #[tokio::test]
    async fn a_log_beyond_the_limit_keeps_its_start_and_its_end() {
        let (s, d) = budget(30);
        // 5 MiB of 1 KiB lines, then a last line.
        let script = "l=$(head -c 1023 /dev/zero | tr '\\0' x); yes \"$l\" | head -n 5120 >&2; echo the-end >&2";
        let out = run(sh(script), s, d).await.unwrap();
        let text = out.stderr.text();
        assert!(text.len() <= STDERR_LIMIT + (LOG_TAIL_LINES + 1) * 1024, "{}", text.len());
        assert!(text.starts_with(&"x".repeat(1023)), "the start is kept");
        assert!(text.contains("[…]") && text.ends_with("the-end\n"), "the end is kept");
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_stop_the_reading() {
        let (s, d) = budget(10);
        let out =
            run(sh("printf 'a\\377b\\nsecond\\n' >&2; head -c 200000 /dev/zero >&2; echo >&2; echo last >&2"), s, d)
                .await
                .unwrap();
        let tail = out.stderr.tail();
        assert_eq!(tail[0], "a\u{FFFD}b");
        assert_eq!(tail[2].len(), MAX_LINE, "an endless line is cut");
        assert_eq!(tail.last().unwrap(), "last");
    }

    #[tokio::test]
    async fn a_full_pipe_on_both_streams_does_not_deadlock() {
        let (s, d) = budget(20);
        let out = run(sh("head -c 1000000 /dev/zero | tr '\\0' a; head -c 1000000 /dev/zero >&2"), s, d).await.unwrap();
        assert_eq!(out.stdout.len(), 1_000_000);
    }

    #[tokio::test]
    async fn times_out_and_kills_the_whole_group() {
        let marker = format!("/tmp/nixery-test-{}", std::process::id());
        let (s, d) = budget(1);
        // The grandchild would write the marker after 3 s if it survived.
        let script = format!("(sleep 3; touch {marker}) & sleep 30");
        let err = run(sh(&script), s, d).await.unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { seconds: 1, .. }), "{err:?}");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!std::path::Path::new(&marker).exists(), "grandchild survived the timeout");
    }
}
