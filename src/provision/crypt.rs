//! SHA-512 crypt (`$6$`, Drepper's SHA-crypt), the password hash a guest's `/etc/shadow`
//! understands: carve hands a guest only this hash of its root password, never the password.

use sha2::{Digest, Sha512};

/// The crypt alphabet (not standard base64).
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Rounds of the default form (no `rounds=` in the hash).
const ROUNDS: usize = 5000;

/// A `$6$` hash of `password` with a fresh 16-character salt.
pub fn hash_root_password(password: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let salt: String = (0..16)
        .map(|_| ITOA64[rng.random_range(0..64)] as char)
        .collect();
    sha512_crypt(password.as_bytes(), salt.as_bytes())
}

/// [`hash_root_password`] off the async threads (thousands of SHA-512 rounds).
pub async fn hash_off_thread(
    password: &crate::domain::secret::Secret,
) -> Result<String, crate::error::AppError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || hash_root_password(password.expose()))
        .await
        .map_err(|e| {
            crate::error::AppError::Internal(anyhow::anyhow!(
                "hashing the root password failed: {e}"
            ))
        })
}

/// SHA-512 crypt of `password` with `salt` (at most 16 bytes used), default rounds.
pub fn sha512_crypt(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(16)];
    let p = password;
    let b = Sha512::new()
        .chain_update(p)
        .chain_update(salt)
        .chain_update(p)
        .finalize();
    let mut a = Sha512::new().chain_update(p).chain_update(salt);
    let mut left = p.len();
    while left > 64 {
        a.update(b);
        left -= 64;
    }
    a.update(&b[..left]);
    let mut n = p.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(b);
        } else {
            a.update(p);
        }
        n >>= 1;
    }
    let a = a.finalize();
    let mut dp = Sha512::new();
    for _ in 0..p.len() {
        dp.update(p);
    }
    let dp = dp.finalize();
    let p_seq: Vec<u8> = dp.iter().cycle().take(p.len()).copied().collect();
    let mut ds = Sha512::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let ds = ds.finalize();
    let s_seq = &ds[..salt.len()];
    let mut c = a;
    for round in 0..ROUNDS {
        let mut h = Sha512::new();
        if round % 2 == 1 {
            h.update(&p_seq);
        } else {
            h.update(c);
        }
        if round % 3 != 0 {
            h.update(s_seq);
        }
        if round % 7 != 0 {
            h.update(&p_seq);
        }
        if round % 2 == 1 {
            h.update(c);
        } else {
            h.update(&p_seq);
        }
        c = h.finalize();
    }
    let mut out = String::with_capacity(3 + salt.len() + 1 + 86);
    out.push_str("$6$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    const ORDER: [(usize, usize, usize); 21] = [
        (0, 21, 42),
        (22, 43, 1),
        (44, 2, 23),
        (3, 24, 45),
        (25, 46, 4),
        (47, 5, 26),
        (6, 27, 48),
        (28, 49, 7),
        (50, 8, 29),
        (9, 30, 51),
        (31, 52, 10),
        (53, 11, 32),
        (12, 33, 54),
        (34, 55, 13),
        (56, 14, 35),
        (15, 36, 57),
        (37, 58, 16),
        (59, 17, 38),
        (18, 39, 60),
        (40, 61, 19),
        (62, 20, 41),
    ];
    for (x, y, z) in ORDER {
        encode24(&mut out, c[x], c[y], c[z], 4);
    }
    encode24(&mut out, 0, 0, c[63], 2);
    out
}

/// Appends `n` crypt-alphabet characters of the 24 bits `b2 b1 b0`, low bits first.
fn encode24(out: &mut String, b2: u8, b1: u8, b0: u8, n: usize) {
    let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
    for _ in 0..n {
        out.push(ITOA64[(w & 0x3f) as usize] as char);
        w >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_vectors() {
        // From Drepper's SHA-crypt specification (and busybox mkpasswd -m sha512).
        assert_eq!(
            sha512_crypt(b"Hello world!", b"saltstring"),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        // A password longer than a digest and a salt cut at 16 (busybox mkpasswd -m sha512).
        assert_eq!(
            sha512_crypt(
                b"we have a short salt string but not a short password",
                b"short"
            ),
            "$6$short$qmfj2meTBr5G2EAGIJ4vjX7RpefsD4JzpEyTAeEUJdzdxlBS6pe8gdMHm5zFftaFSj/2p2bjBwyVS9ZhWpLZt."
        );
        assert_eq!(
            sha512_crypt(&[b'x'; 150], b"0123456789abcdefXYZ"),
            "$6$0123456789abcdef$cDRlQU0CtkI3l.ftvv4TqLHSHrXdKnj.e3uiX9Ks4B/qjMHS8ZDcqQj6e4WqW9h/RBw9gSQ/S4PWEvq5XrXY21"
        );
    }

    #[test]
    fn fresh_hashes_differ_and_have_the_shadow_form() {
        let a = hash_root_password("a long enough password");
        let b = hash_root_password("a long enough password");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(a.starts_with("$6$") && a.len() == 3 + 16 + 1 + 86, "{a}");
        assert!(a.bytes().all(|c| c == b'$' || ITOA64.contains(&c)));
    }
}
