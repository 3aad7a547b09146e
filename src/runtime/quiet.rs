//! Keeps a known driver message out of a headless start.
//!
//! On Linux without `XDG_RUNTIME_DIR` (a server, a container, CI), Mesa's
//! drivers try to reach a Wayland compositor while wgpu probes adapters, and
//! libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment.` to stderr, twice, before wgflow has done anything. It is
//! harmless (no window system is needed for compute), but a newcomer reads
//! "error". While the probe runs, stderr goes through a pipe; afterwards
//! every captured line except that one is written to stderr again.

/// Runs `f` with that one libwayland line filtered out of stderr.
#[cfg(unix)]
pub(crate) fn probe<T>(f: impl FnOnce() -> T) -> T {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    const NOISE: &str = "XDG_RUNTIME_DIR is invalid or not set";
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return f();
    }
    let mut fds = [0i32; 2];
    // SAFETY: plain POSIX calls on descriptors this function owns; fd 2 is
    // restored by the guard below even if `f` panics.
    let saved = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return f();
        }
        let saved = libc::dup(2);
        if saved < 0 || libc::dup2(fds[1], 2) < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            if saved >= 0 {
                libc::close(saved);
            }
            return f();
        }
        libc::close(fds[1]);
        saved
    };
    // SAFETY: fds[0] is the pipe's read end, owned by the reader from here on.
    let mut read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = read_end.read_to_end(&mut buf);
        buf
    });
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts the saved stderr back; closing the pipe's last
            // write end lets the reader finish.
            unsafe {
                libc::dup2(self.0, 2);
                libc::close(self.0);
            }
        }
    }
    let restore = Restore(saved);
    let out = f();
    drop(restore);
    let captured = reader.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&captured);
    let mut err = std::io::stderr().lock();
    for line in text.lines().filter(|l| !l.contains(NOISE)) {
        let _ = writeln!(err, "{line}");
    }
    out
}

/// Elsewhere there is nothing to filter.
#[cfg(not(unix))]
pub(crate) fn probe<T>(f: impl FnOnce() -> T) -> T {
    f()
}
