//! An in-memory file written once and sent from by `sendfile(2)`: the kernel hands a socket
//! references to the file's pages instead of copying every byte from the process, as nginx
//! serves a static file. The HTTP-TS fan-out keeps each channel's recent stream in such files
//! (`sn-edge`'s spool); measured on this kernel over loopback, a 110 kB write cost about a third
//! less CPU by `sendfile` from a memfd than by `sendmsg` from process memory.
//!
//! Bytes must never change once written: a socket may still hold references to their pages
//! (unacknowledged, or queued for a local reader) long after `sendfile` returned, and would send
//! whatever the page holds then. So a [`PageFile`] only appends, and is dropped, never reused.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// An anonymous file in memory (`memfd_create(2)`), closed when dropped.
#[derive(Debug)]
pub struct PageFile(File);

impl PageFile {
    /// A new empty file; fails as `memfd_create` does (out of memory or file descriptors).
    pub fn new() -> io::Result<Self> {
        // SAFETY: the name is a NUL-terminated literal; the call has no other inputs.
        let fd = unsafe { libc::memfd_create(c"livesky-spool".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        Ok(Self(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// A new file in `dir` (unnamed: `O_TMPFILE`) holding `contents`, written in one go so
    /// that a filesystem with large folios (ext4, XFS) keeps it in large pages, which `sendfile`
    /// takes at less cost per byte than tmpfs's 4 KiB pages. (Zeros, to be overwritten later,
    /// get the same pages.)
    pub fn new_in(dir: &std::path::Path, contents: &[u8]) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir)?;
        file.write_all_at(contents, 0)?;
        Ok(Self(file))
    }

    /// Writes `bytes` at `offset`. Callers write each range once (see the module's note).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    /// One `sendfile(2)` of `len` bytes from `offset` to `socket`: what it took, as a
    /// non-blocking write answers (`WouldBlock` when the socket is full). `sendfile` has no
    /// `MSG_NOSIGNAL`: to a peer that is gone it raises `SIGPIPE`, which a Rust program ignores
    /// (std sets it to `SIG_IGN` before `main`), so the caller sees `EPIPE`.
    pub fn send_to(&self, socket: &impl AsFd, offset: u64, len: usize) -> io::Result<usize> {
        let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are borrowed open files for the call's duration; `off` is a
        // valid, exclusively borrowed off_t the kernel only writes the new position to.
        let n = unsafe { libc::sendfile(socket.as_fd().as_raw_fd(), self.0.as_raw_fd(), &mut off, len) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsFd for PageFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn sends_the_bytes_written_at_an_offset() {
        let f = PageFile::new().unwrap();
        f.write_at(b"hello ", 0).unwrap();
        f.write_at(b"world", 6).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut rx, _) = l.accept().unwrap();
        assert_eq!(f.send_to(&tx, 3, 8).unwrap(), 8);
        let mut got = [0u8; 8];
        rx.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"lo world");
    }

    #[test]
    fn a_peer_that_is_gone_is_an_error() {
        let f = PageFile::new().unwrap();
        f.write_at(&[1; 4096], 0).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        drop(l.accept().unwrap());
        // The first send may be taken before the reset arrives; a later one fails.
        let failed = (0..100).find_map(|_| f.send_to(&tx, 0, 4096).err());
        let kind = failed.expect("sending to a closed peer kept succeeding").kind();
        assert!(matches!(kind, io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset), "{kind:?}");
    }

    #[test]
    fn a_full_socket_would_block() {
        let f = PageFile::new().unwrap();
        let chunk = vec![7u8; 1 << 20];
        f.write_at(&chunk, 0).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _rx = l.accept().unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut sent = 0;
        let err = loop {
            match f.send_to(&tx, 0, chunk.len()) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < 1 << 30, "a socket nobody reads took a gigabyte");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(sent > 0);
    }
}
