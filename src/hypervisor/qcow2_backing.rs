//! Points a qcow2 overlay at its base at another path: a VM's disk copied to another host is
//! backed by the same base there, in that host's pool. The backing file's name sits in the
//! file's first cluster, so it is rewritten in the first bytes of the copy as they stream.

/// Bytes of the file's head [`repoint`] needs: a whole first cluster of the largest size.
pub const HEAD_LEN: usize = 2 << 20;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// Rewrites, in `head` (the file's first bytes: all of it, or at least [`HEAD_LEN`]), the
/// backing file name of a qcow2 to `backing`. The new name must fit where the old one was
/// and the free bytes after it in the first cluster; nothing else is touched.
pub fn repoint(head: &mut [u8], backing: &str) -> Result<(), String> {
    if head.len() < 24 || &head[..4] != b"QFI\xfb" {
        return Err("the disk is not a qcow2 file".into());
    }
    let offset = be64(head, 8) as usize;
    let old_len = be32(head, 16) as usize;
    let cluster = 1usize.checked_shl(be32(head, 20)).unwrap_or(0);
    if offset == 0 || old_len == 0 {
        return Err("the disk has no backing file to point elsewhere".into());
    }
    let new = backing.as_bytes();
    let end = offset + new.len().max(old_len);
    if end > cluster || end > head.len() {
        return Err(format!(
            "the new base path ({} bytes) does not fit in the disk's first cluster",
            new.len()
        ));
    }
    // Growing into bytes after the old name: they must be free (zero).
    if new.len() > old_len
        && head[offset + old_len..offset + new.len()]
            .iter()
            .any(|b| *b != 0)
    {
        return Err("the bytes after the disk's backing file name are in use".into());
    }
    head[offset..offset + old_len].fill(0);
    head[offset..offset + new.len()].copy_from_slice(new);
    head[16..20].copy_from_slice(&(new.len() as u32).to_be_bytes());
    Ok(())
}

/// The backing file name `head` names, if any.
pub fn backing_of(head: &[u8]) -> Option<String> {
    if head.len() < 24 || &head[..4] != b"QFI\xfb" {
        return None;
    }
    let offset = be64(head, 8) as usize;
    let len = be32(head, 16) as usize;
    let name = head.get(offset..offset.checked_add(len)?)?;
    (len > 0).then(|| String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_overlay_is_pointed_at_a_new_base_and_qemu_img_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let disk = dir.path().join("disk.qcow2");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("qemu-img")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        run(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            disk.to_str().unwrap(),
            "1G",
        ]);
        let mut bytes = std::fs::read(&disk).unwrap();
        assert_eq!(backing_of(&bytes).as_deref(), base.to_str());
        let elsewhere = dir
            .path()
            .join("another-pool-with-a-longer-name")
            .join("base-0123456789abcdef.qcow2");
        std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        std::fs::copy(&base, &elsewhere).unwrap();
        repoint(&mut bytes, elsewhere.to_str().unwrap()).unwrap();
        std::fs::write(&disk, &bytes).unwrap();
        let info: serde_json::Value = serde_json::from_str(&run(&[
            "info",
            "--output=json",
            "-U",
            disk.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(info["backing-filename"], elsewhere.to_str().unwrap());
        assert_eq!(info["virtual-size"], 1u64 << 30);
        run(&["check", "-q", disk.to_str().unwrap()]);
    }

    #[test]
    fn what_is_not_an_overlay_is_refused() {
        assert!(repoint(&mut [0u8; 100], "/b").is_err());
        let mut standalone = vec![0u8; 4096];
        standalone[..4].copy_from_slice(b"QFI\xfb");
        standalone[20..24].copy_from_slice(&16u32.to_be_bytes());
        assert!(
            repoint(&mut standalone, "/b")
                .unwrap_err()
                .contains("no backing file")
        );
        let mut overlay = standalone.clone();
        overlay[8..16].copy_from_slice(&200u64.to_be_bytes());
        overlay[16..20].copy_from_slice(&2u32.to_be_bytes());
        overlay[200..202].copy_from_slice(b"/a");
        overlay[210] = 1;
        assert!(
            repoint(&mut overlay, "/a-much-longer-name")
                .unwrap_err()
                .contains("in use")
        );
        repoint(&mut overlay, "/c/d").unwrap();
        assert_eq!(backing_of(&overlay).as_deref(), Some("/c/d"));
    }
}
