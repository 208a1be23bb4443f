//! A bounded random-packet run against the SFTP engine (issue 9's battery): thousands of
//! sessions, each a valid INIT followed by packets with malformed lengths, unknown types,
//! truncated fields, hostile paths and huge offsets and sizes. Every session must end (by EOF
//! or by refusing the packet), none may panic, and nothing may appear outside the home.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::jail::Jail;
use super::protocol::kind;
use super::session::{Account, serve};
use super::{Shared, limits, quota};
use crate::auth::PasswordHasher;
use crate::config::Config;
use crate::db;
use crate::domain::ids::{SftpAccountId, TenantId};

/// Sessions in one run (each up to `MAX_PACKETS` packets).
const SESSIONS: usize = 5000;
const MAX_PACKETS: usize = 24;

/// xorshift64*: small, seeded, repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// A field of a request body: a string (path, handle, data) or a number.
fn field(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(6) {
        0 => path(rng, out),
        // A handle the session may really have given out.
        1 => handle(rng, out),
        // A string whose length lies (too long, or huge).
        2 => {
            let claimed = if rng.chance(2) {
                u32::MAX - rng.below(16) as u32
            } else {
                rng.below(70_000) as u32
            };
            out.extend_from_slice(&claimed.to_be_bytes());
            let real = rng.below(64) as usize;
            out.extend((0..real).map(|_| rng.next() as u8));
        }
        3 => out.extend_from_slice(&(rng.next() as u32).to_be_bytes()),
        4 => out.extend_from_slice(&rng.next().to_be_bytes()),
        // Attributes with random flags (extended ones included).
        _ => {
            out.extend_from_slice(
                &(rng.next() as u32 | (0x8000_0000 * (rng.below(2) as u32))).to_be_bytes(),
            );
            out.extend((0..rng.below(40)).map(|_| rng.next() as u8));
        }
    }
}

/// A path from the hostile set.
fn path(rng: &mut Rng, out: &mut Vec<u8>) {
    const PATHS: &[&[u8]] = &[
        b"a",
        b"d",
        b"d/f",
        b"../../etc/passwd",
        b"/",
        b"..",
        b"/a/../../b",
        b"l",
        b"n",
        b"a\0b",
        b"\xff",
        b"d/../../../x",
        b".",
        b"/outside",
        b"../outside",
    ];
    let p = PATHS[rng.below(PATHS.len() as u64) as usize];
    out.extend_from_slice(&(p.len() as u32).to_be_bytes());
    out.extend_from_slice(p);
}

/// A handle the session may have given out.
fn handle(rng: &mut Rng, out: &mut Vec<u8>) {
    out.extend_from_slice(&4u32.to_be_bytes());
    out.extend_from_slice(&(rng.below(6) as u32).to_be_bytes());
}

/// Attributes: size (sometimes huge), permissions (with special bits), times.
fn attrs(rng: &mut Rng, out: &mut Vec<u8>) {
    let flags = rng.below(16) as u32;
    out.extend_from_slice(&flags.to_be_bytes());
    if flags & 1 != 0 {
        let size = if rng.chance(3) {
            u64::MAX - rng.below(3)
        } else {
            rng.below(1 << 22)
        };
        out.extend_from_slice(&size.to_be_bytes());
    }
    if flags & 2 != 0 {
        out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
        out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    }
    if flags & 4 != 0 {
        out.extend_from_slice(&(rng.below(0o10000) as u32).to_be_bytes());
    }
    if flags & 8 != 0 {
        out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
        out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    }
}

/// A body with the right fields for its type, with hostile values.
fn well_formed(rng: &mut Rng, t: u8, out: &mut Vec<u8>) {
    let offset = |rng: &mut Rng| {
        if rng.chance(3) {
            u64::MAX - rng.below(1 << 20)
        } else {
            rng.below(1 << 21)
        }
    };
    match t {
        kind::OPEN => {
            path(rng, out);
            out.extend_from_slice(&(rng.below(64) as u32).to_be_bytes());
            attrs(rng, out);
        }
        kind::CLOSE | kind::FSTAT | kind::READDIR => handle(rng, out),
        kind::READ => {
            handle(rng, out);
            out.extend_from_slice(&offset(rng).to_be_bytes());
            out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
        }
        kind::WRITE => {
            handle(rng, out);
            out.extend_from_slice(&offset(rng).to_be_bytes());
            let n = rng.below(3000) as usize;
            out.extend_from_slice(&(n as u32).to_be_bytes());
            out.extend((0..n).map(|i| i as u8));
        }
        kind::SETSTAT | kind::MKDIR => {
            path(rng, out);
            attrs(rng, out);
        }
        kind::FSETSTAT => {
            handle(rng, out);
            attrs(rng, out);
        }
        kind::RENAME | kind::SYMLINK | kind::EXTENDED => {
            if rng.chance(4) {
                handle(rng, out);
            } else {
                path(rng, out);
                path(rng, out);
            }
        }
        _ => path(rng, out),
    }
}

/// One session's byte stream from the client, and how many of its packets are well formed.
fn session_bytes(rng: &mut Rng) -> (Vec<u8>, usize) {
    let mut good = 0;
    let mut out = vec![0, 0, 0, 5, kind::INIT, 0, 0, 0, 3];
    for _ in 0..=rng.below(MAX_PACKETS as u64) {
        let mut body = Vec::new();
        let t = if rng.chance(8) {
            rng.next() as u8
        } else {
            [
                3u8, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 200,
            ][rng.below(19) as usize]
        };
        body.push(t);
        body.extend_from_slice(&(rng.next() as u32).to_be_bytes());
        if t == kind::EXTENDED {
            let names: &[&[u8]] = &[
                b"posix-rename@openssh.com",
                b"hardlink@openssh.com",
                b"statvfs@openssh.com",
                b"fstatvfs@openssh.com",
                b"fsync@openssh.com",
                b"limits@openssh.com",
                b"nope@example.com",
            ];
            let n = names[rng.below(names.len() as u64) as usize];
            body.extend_from_slice(&(n.len() as u32).to_be_bytes());
            body.extend_from_slice(n);
        }
        if rng.chance(5) {
            // Fields of random kinds: mostly malformed for the type.
            for _ in 0..rng.below(5) {
                field(rng, &mut body);
            }
        } else {
            well_formed(rng, t, &mut body);
            good += 1;
        }
        // Mostly the true length; sometimes a lie (zero, short, huge).
        let len = match rng.below(40) {
            0 => 0,
            1 => u32::MAX,
            2 => (body.len() as u32).saturating_sub(1 + rng.below(4) as u32),
            3 => body.len() as u32 + rng.below(32) as u32,
            _ => body.len() as u32,
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        if rng.chance(40) {
            // Cut the stream mid-packet.
            out.truncate(out.len() - rng.below(out.len() as u64 / 2) as usize);
            break;
        }
    }
    (out, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_packets_end_only_their_session_and_never_escape_the_jail() {
    let dir = tempfile::tempdir().unwrap();
    let db = db::connect(&format!("sqlite://{}/fuzz.db", dir.path().display()))
        .await
        .unwrap();
    db::migrate(&db).await.unwrap();
    let homes = dir.path().join("sftp");
    let config = Config::default();
    let shared = Arc::new(Shared {
        db: db.clone(),
        hasher: PasswordHasher::new(1, 0),
        ledger: Arc::new(quota::Ledger::new(db.clone(), config.quota.clone())),
        homes: homes.clone(),
        config: config.clone(),
        audit: db::audit::Batcher::start(db.clone()),
        registry: limits::Registry::new(config.sftp.clone()),
        account_locks: Default::default(),
        blocking_requests: Default::default(),
        open_handles: Default::default(),
        max_open_handles: super::handle_budget(),
    });
    let account = SftpAccountId::generate();
    let home = shared.home(&account);
    std::fs::create_dir_all(home.join("d")).unwrap();
    std::fs::write(home.join("a"), b"hello").unwrap();
    std::os::unix::fs::symlink("a", home.join("l")).unwrap();
    std::fs::write(dir.path().join("outside"), b"secret").unwrap();
    let tenant = TenantId::default_tenant();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut packets = 0usize;
    let mut answers = 0usize;
    for _ in 0..SESSIONS {
        let (input, good) = session_bytes(&mut rng);
        packets += good;
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = client_rd.read_to_end(&mut sink).await;
            answers_of(&sink)
        });
        client_wr.write_all(&input).await.unwrap();
        client_wr.shutdown().await.unwrap();
        let who = Account {
            id: account.clone(),
            tenant: tenant.clone(),
            username: "fuzz".into(),
            client: None,
        };
        let jail = Jail::open(&home).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            serve(server, shared.clone(), who, jail),
        )
        .await
        .expect("every session ends");
        drop(client_wr);
        answers += reader.await.unwrap();
    }
    // Nothing was made, changed or removed outside the home.
    let mut outside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("fuzz.db"))
        .collect();
    outside.sort();
    assert_eq!(outside, ["outside", "sftp"]);
    assert_eq!(
        std::fs::read(dir.path().join("outside")).unwrap(),
        b"secret"
    );
    // Answers queued before a fatal packet are dropped with the session, so fewer arrive
    // than were computed; the count shows the handlers were reached.
    eprintln!(
        "fuzz: {SESSIONS} sessions, {packets} well-formed hostile packets, {answers} answers received"
    );
    assert!(packets > SESSIONS * 5, "{packets} well-formed packets sent");
    assert!(
        answers > SESSIONS,
        "{answers} answers to {SESSIONS} sessions"
    );
}

/// How many whole answer packets a session's output holds.
fn answers_of(mut out: &[u8]) -> usize {
    let mut n = 0;
    while out.len() >= 4 {
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        if out.len() < 4 + len {
            break;
        }
        out = &out[4 + len..];
        n += 1;
    }
    n
}
