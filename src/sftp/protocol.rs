//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02) with the OpenSSH extensions
//! clients rely on. Paths stay bytes here: a name that is not UTF-8 is the handler's to refuse.

use std::fmt;

/// Packet types.
pub mod kind {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Open flags.
pub mod pflags {
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

/// Status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Eof = 1,
    NoSuchFile = 2,
    PermissionDenied = 3,
    Failure = 4,
    BadMessage = 5,
    OpUnsupported = 8,
}

/// Attribute flags.
const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// File attributes; absent fields are None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub permissions: Option<u32>,
    /// (atime, mtime) in seconds since the epoch.
    pub times: Option<(u32, u32)>,
}

/// A packet that could not be decoded: the session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed SFTP packet: {}", self.0)
    }
}

/// Reads fields from a packet body.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1, "truncated byte")?[0])
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4, "truncated uint32")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8, "truncated uint64")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n, "string longer than the packet")
    }

    /// File attributes.
    pub fn attrs(&mut self) -> Result<Attrs, Malformed> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let n = self.u32()?;
            for _ in 0..n {
                self.bytes()?;
                self.bytes()?;
            }
        }
        Ok(a)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Builds one response packet (length prefix filled in by [`Writer::finish`]).
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A packet of type `kind` answering request `id` (None for VERSION).
    pub fn new(kind: u8, id: Option<u32>) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        if let Some(id) = id {
            buf.extend_from_slice(&id.to_be_bytes());
        }
        Self { buf }
    }

    /// A packet with room for `extra` more bytes.
    pub fn with_capacity(kind: u8, id: u32, extra: usize) -> Self {
        let mut w = Self {
            buf: Vec::with_capacity(9 + extra),
        };
        w.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        w.buf.extend_from_slice(&id.to_be_bytes());
        w
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn attrs(&mut self, a: &Attrs) -> &mut Self {
        let mut flags = 0;
        if a.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if a.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if a.permissions.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if a.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        self.u32(flags);
        if let Some(s) = a.size {
            self.u64(s);
        }
        if let Some((u, g)) = a.uid_gid {
            self.u32(u).u32(g);
        }
        if let Some(p) = a.permissions {
            self.u32(p);
        }
        if let Some((at, mt)) = a.times {
            self.u32(at).u32(mt);
        }
        self
    }

    /// The finished packet.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

/// A STATUS packet.
pub fn status(id: u32, code: Code, message: &str) -> Vec<u8> {
    let mut w = Writer::new(kind::STATUS, Some(id));
    w.u32(code as u32).bytes(message.as_bytes()).bytes(b"en");
    w.finish()
}

/// A HANDLE packet.
pub fn handle(id: u32, handle: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(kind::HANDLE, Some(id));
    w.bytes(handle);
    w.finish()
}

/// An ATTRS packet.
pub fn attrs(id: u32, a: &Attrs) -> Vec<u8> {
    let mut w = Writer::new(kind::ATTRS, Some(id));
    w.attrs(a);
    w.finish()
}

/// A NAME packet with one entry (realpath, readlink).
pub fn single_name(id: u32, name: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(kind::NAME, Some(id));
    w.u32(1).bytes(name).bytes(name).attrs(&Attrs::default());
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let a = Attrs {
            size: Some(1 << 40),
            uid_gid: Some((1, 2)),
            permissions: Some(0o100644),
            times: Some((3, 4)),
        };
        let mut w = Writer::new(kind::ATTRS, Some(7));
        w.attrs(&a);
        let packet = w.finish();
        assert_eq!(
            u32::from_be_bytes(packet[..4].try_into().unwrap()) as usize,
            packet.len() - 4
        );
        let mut r = Reader::new(&packet[4..]);
        assert_eq!(r.u8().unwrap(), kind::ATTRS);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.attrs().unwrap(), a);
        assert!(r.rest().is_empty());
    }

    #[test]
    fn truncated_fields_are_malformed() {
        assert!(Reader::new(&[0, 0, 0, 9, b'a']).bytes().is_err());
        assert!(Reader::new(&[0, 0]).u32().is_err());
        assert!(Reader::new(&[0, 0, 0, 1]).attrs().is_err());
        let s = status(1, Code::Failure, "quota");
        let mut r = Reader::new(&s[4..]);
        assert_eq!(
            (r.u8().unwrap(), r.u32().unwrap(), r.u32().unwrap()),
            (kind::STATUS, 1, 4)
        );
        assert_eq!(r.bytes().unwrap(), b"quota");
    }
}
