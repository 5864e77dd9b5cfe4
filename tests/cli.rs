//! The `rewind` binary as scripts use it: printing into a pipe whose reader has gone away
//! (`rewind completions bash | head -1`) ends quietly, without a panic message.

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_rewind");

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE.
fn reader_gone() -> OwnedFd {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) fills in.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    // SAFETY: pipe(2) succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

fn run_into_closed_pipe(args: &[&str], data: &std::path::Path) -> Output {
    Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(reader_gone()))
        .stderr(Stdio::piped())
        .output()
        .expect("run rewind")
}

#[test]
fn printing_into_a_closed_pipe_exits_quietly() {
    let data = tempfile::tempdir().expect("tempdir");
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"][..],
        &["volume", "list"][..],
        &["volume", "list", "--json"][..],
    ] {
        let out = run_into_closed_pipe(args, data.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "rewind {args:?}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "rewind {args:?}: {stderr}");
    }
}

#[test]
fn completions_into_head_reads_one_line_and_ends_quietly() {
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rewind");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read a line");
    // The reader is dropped here, like `head -1` exiting.
    assert!(!first.is_empty(), "no output");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
