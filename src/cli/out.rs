//! Standard output for the CLI that ends the process quietly when the reader goes away
//! (`rewind completions bash | head -1`), where `println!` would panic on the broken pipe.

use std::io::{self, Write};

/// Print one line (`outln!`).
pub fn line(args: std::fmt::Arguments) {
    bytes(format!("{args}\n").as_bytes());
}

/// Write `b` to standard output: a closed pipe exits 0 without a word (the reader has what it
/// wanted); any other write error is reported and exits 1.
pub fn bytes(b: &[u8]) {
    let written = {
        let mut out = io::stdout().lock();
        out.write_all(b).and_then(|()| out.flush())
    };
    if let Some(code) = exit_code(&written) {
        std::process::exit(code);
    }
}

/// How to end the process after a write to standard output: `None` to go on.
fn exit_code(written: &io::Result<()>) -> Option<i32> {
    match written {
        Ok(()) => None,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(0),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            Some(i32::from(super::EXIT_FAILED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_a_quiet_success_other_errors_fail() {
        assert_eq!(exit_code(&Ok(())), None);
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(exit_code(&Err(pipe)), Some(0));
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(exit_code(&Err(full)), Some(1));
    }
}
