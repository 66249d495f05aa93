//! Running one Nix command as a child process, the way a server must: with a deadline,
//! stdout and stderr read concurrently (so neither pipe can fill and stall Nix), only the
//! tail of the log kept (memory stays bounded however chatty a build is), and the whole
//! process group stopped when the caller goes away or the deadline passes, and when the
//! server dies ([`super::child`]).

use super::child;
use std::collections::VecDeque;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

/// How many lines of a failed command's log are kept for the error.
const LOG_TAIL_LINES: usize = 30;

/// Why a Nix command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} timed out after {seconds} s")]
    Timeout { program: String, seconds: u64 },
    #[error("{program} failed ({status})")]
    Failed { program: String, status: std::process::ExitStatus, log_tail: Vec<String> },
    #[error("reading the output of {program}: {source}")]
    Io { program: String, source: std::io::Error },
}

/// Runs `command` to completion by `deadline` (the budget started at `started`) and returns
/// its stdout. Dropping the returned future stops the process group.
pub async fn run(mut command: Command, started: Instant, deadline: Instant) -> Result<Vec<u8>, ProcessError> {
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
        let read_err = tail_lines(stderr, &program);
        let (out_res, tail, status) = tokio::join!(read_out, read_err, running.child().wait());
        let io = |source| ProcessError::Io { program: program.clone(), source };
        out_res.map_err(io)?;
        let status = status.map_err(io)?;
        Ok::<_, ProcessError>((out, tail, status))
    };
    let (out, log_tail, status) = match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result?,
        Err(_) => {
            let seconds = deadline.saturating_duration_since(started).as_secs();
            return Err(ProcessError::Timeout { program, seconds });
        }
    };
    running.reaped();
    if status.success() { Ok(out) } else { Err(ProcessError::Failed { program, status, log_tail }) }
}

/// Keeps the last lines of a stream, logging each at debug level as it arrives.
async fn tail_lines(stream: tokio::process::ChildStderr, program: &str) -> Vec<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut tail = VecDeque::with_capacity(LOG_TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "nixery::nix::log", program, "{line}");
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
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
        assert_eq!(out, b"out\n");
    }

    #[tokio::test]
    async fn keeps_only_the_tail_of_a_failing_log() {
        let (s, d) = budget(10);
        let err =
            run(sh("i=0; while [ $i -lt 100 ]; do echo line$i >&2; i=$((i+1)); done; exit 3"), s, d).await.unwrap_err();
        let ProcessError::Failed { log_tail, status, .. } = err else { panic!("{err:?}") };
        assert_eq!(status.code(), Some(3));
        assert_eq!(log_tail.len(), LOG_TAIL_LINES);
        assert_eq!(log_tail.last().unwrap(), "line99");
    }

    #[tokio::test]
    async fn a_full_pipe_on_both_streams_does_not_deadlock() {
        let (s, d) = budget(20);
        let out = run(sh("head -c 1000000 /dev/zero | tr '\\0' a; head -c 1000000 /dev/zero >&2"), s, d).await.unwrap();
        assert_eq!(out.len(), 1_000_000);
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
