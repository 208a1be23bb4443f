//! The answers every request kind shares: statuses, attributes, `ls -l` lines, VERSION.

use rustix::fs::Stat;
use rustix::io::Errno;

use crate::sftp::jail::{self, BadPath};
use crate::sftp::protocol::{self as p, Attrs, Code, Writer, kind};

/// The status answer for a system error.
pub fn errno_status(id: u32, e: Errno) -> Vec<u8> {
    let (code, text) = match e {
        Errno::NOENT | Errno::NOTDIR => (Code::NoSuchFile, "no such file or directory"),
        Errno::ACCESS | Errno::PERM | Errno::XDEV | Errno::LOOP | Errno::ROFS => {
            (Code::PermissionDenied, "permission denied")
        }
        Errno::EXIST => (Code::Failure, "the file already exists"),
        Errno::NOTEMPTY => (Code::Failure, "the directory is not empty"),
        Errno::ISDIR => (Code::Failure, "that is a directory"),
        Errno::NOSPC | Errno::DQUOT => (Code::Failure, "no space left on the server"),
        Errno::NAMETOOLONG => (Code::Failure, "the name is too long"),
        Errno::INVAL => (Code::Failure, "invalid argument"),
        _ => (Code::Failure, "the operation failed"),
    };
    p::status(id, code, text)
}

/// The status answer for a path the client may not even name.
pub fn bad_path_status(id: u32, e: BadPath) -> Vec<u8> {
    match e {
        BadPath::NotUtf8 => p::status(id, Code::NoSuchFile, "no such file: names must be UTF-8"),
        BadPath::Nul => p::status(
            id,
            Code::PermissionDenied,
            "permission denied: names may not contain NUL",
        ),
        BadPath::TooLong => p::status(id, Code::Failure, "the path is too long"),
    }
}

/// SFTP attributes of a stat.
pub fn attrs_of(st: &Stat) -> Attrs {
    Attrs {
        size: Some(st.st_size as u64),
        uid_gid: Some((st.st_uid, st.st_gid)),
        permissions: Some(st.st_mode),
        times: Some((st.st_atime as u32, st.st_mtime as u32)),
    }
}

/// An `ls -l` line, which some clients (FileZilla, WinSCP) parse.
pub fn longname(name: &str, st: &Stat, owner: &str) -> String {
    let mode = st.st_mode;
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o140000 => 's',
        0o020000 => 'c',
        0o060000 => 'b',
        _ => '-',
    };
    let mut perms = String::with_capacity(10);
    perms.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let when = chrono::DateTime::from_timestamp(st.st_mtime, 0).unwrap_or_default();
    let recent = (chrono::Utc::now() - when).num_days().abs() < 180;
    let date = if recent {
        when.format("%b %e %H:%M")
    } else {
        when.format("%b %e  %Y")
    };
    format!(
        "{perms} {:>4} {owner:<8} {owner:<8} {:>8} {date} {name}",
        st.st_nlink, st.st_size
    )
}

/// The VERSION answer: SFTP 3 and the OpenSSH extensions carve serves.
pub fn version() -> Vec<u8> {
    let mut w = Writer::new(kind::VERSION, None);
    w.u32(3);
    for (name, v) in [
        ("posix-rename@openssh.com", "1"),
        ("statvfs@openssh.com", "2"),
        ("fstatvfs@openssh.com", "2"),
        ("hardlink@openssh.com", "1"),
        ("fsync@openssh.com", "1"),
        ("limits@openssh.com", "1"),
    ] {
        w.bytes(name.as_bytes()).bytes(v.as_bytes());
    }
    w.finish()
}

/// Bytes a file frees when its name goes: its size if this was its last link.
pub fn bytes_freed(st: &Stat) -> i64 {
    if jail::is_file(st) && st.st_nlink <= 1 {
        st.st_size
    } else {
        0
    }
}

pub fn bad_handle(id: u32) -> Vec<u8> {
    p::status(id, Code::Failure, "invalid handle")
}
