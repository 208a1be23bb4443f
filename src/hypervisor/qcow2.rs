//! Checks a qcow2 file someone uploaded before carve uses it as a base image: it must be a
//! consistent qcow2 that stands alone (no backing file, no external data file: either could
//! make a guest read any file of the host), unencrypted, of a bounded virtual size. Its header
//! is read here first, so `qemu-img` never opens a file the upload names.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How long `qemu-img` may take over one file.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a file cannot be a base image, in words for whoever uploaded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A check that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file is not acceptable (the uploader's to fix).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// `qemu-img` could not be run or took too long (carve's to fix).
    #[error("{0}")]
    Tool(String),
}

/// Checks the file at `path` and returns its virtual size in bytes.
pub async fn check_base(path: &Path, max_virtual_bytes: u64) -> Result<u64, CheckError> {
    let mut head = [0u8; HEADER_LEN];
    let read = read_head(path, &mut head)
        .await
        .map_err(|e| CheckError::Tool(format!("reading the upload: {e}")))?;
    judge_header(&head[..read])?;
    let info = qemu_img(&["info", "-f", "qcow2", "--output=json"], path).await?;
    if !info.status.success() {
        return Err(Refused(format!(
            "qemu-img cannot read the file as qcow2: {}",
            first_line(&info.stderr)
        ))
        .into());
    }
    let json: serde_json::Value = serde_json::from_slice(&info.stdout)
        .map_err(|_| Refused("qemu-img cannot read the file as a disk image".into()))?;
    let size = judge(&json, max_virtual_bytes)?;
    let check = qemu_img(&["check", "-q", "-f", "qcow2"], path).await?;
    // 0: consistent; 3: only leaked clusters (harmless); anything else: damaged.
    match check.status.code() {
        Some(0 | 3) => Ok(size),
        _ => Err(Refused(format!(
            "the qcow2 file is damaged (qemu-img check: {}); repair it with `qemu-img check -r all` or convert it again",
            first_line(&check.stderr)
        ))
        .into()),
    }
}

/// Bytes of a qcow2 header carve reads (version 3 with its incompatible-features field).
const HEADER_LEN: usize = 80;

/// Reads up to `HEADER_LEN` bytes from the start of the file.
async fn read_head(path: &Path, head: &mut [u8; HEADER_LEN]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut got = 0;
    while got < head.len() {
        let n = file.read(&mut head[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Judges a qcow2 header before any tool opens the file: the magic, a version carve knows, no
/// backing file, no external data file.
pub fn judge_header(head: &[u8]) -> Result<(), Refused> {
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().unwrap_or([0; 4]));
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().unwrap_or([0; 8]));
    if head.len() < 72 || head[..4] != *b"QFI\xfb" {
        return Err(Refused(
            "the file is not qcow2; convert it with `qemu-img convert -O qcow2 IN OUT`".into(),
        ));
    }
    let version = be32(4);
    if !(2..=3).contains(&version) {
        return Err(Refused(format!(
            "the file is qcow2 version {version}; carve takes versions 2 and 3 (`qemu-img convert -O qcow2 IN OUT` writes one)"
        )));
    }
    if be64(8) != 0 {
        return Err(Refused(
            "the qcow2 file has a backing file; a base image must stand alone: flatten it with `qemu-img convert -O qcow2 IN OUT`".into(),
        ));
    }
    // Version 3: incompatible feature bit 2 means the data lives in an external file.
    if version == 3 && (head.len() < 80 || be64(72) & 0b100 != 0) {
        return Err(Refused(
            "the qcow2 file keeps its data in an external file; convert it to a plain qcow2 with `qemu-img convert -O qcow2 IN OUT`".into(),
        ));
    }
    Ok(())
}

/// Judges `qemu-img info --output=json` of an upload: its virtual size, or why it is refused.
pub fn judge(info: &serde_json::Value, max_virtual_bytes: u64) -> Result<u64, Refused> {
    let format = info["format"].as_str().unwrap_or("unknown");
    if format != "qcow2" {
        return Err(Refused(format!(
            "the file is {format}, not qcow2; convert it with `qemu-img convert -O qcow2 IN OUT`"
        )));
    }
    if let Some(backing) = info["backing-filename"].as_str() {
        return Err(Refused(format!(
            "the qcow2 file has a backing file ({backing:?}); a base image must stand alone: flatten it with `qemu-img convert -O qcow2 IN OUT`"
        )));
    }
    let data = &info["format-specific"]["data"];
    if data.get("data-file").is_some() {
        return Err(Refused(
            "the qcow2 file keeps its data in an external file; convert it to a plain qcow2 with `qemu-img convert -O qcow2 IN OUT`".into(),
        ));
    }
    if info["encrypted"].as_bool() == Some(true) {
        return Err(Refused(
            "the qcow2 file is encrypted; carve cannot boot it: convert it to a plain qcow2 first"
                .into(),
        ));
    }
    if data["corrupt"].as_bool() == Some(true) {
        return Err(Refused(
            "the qcow2 file is marked corrupt; repair it with `qemu-img check -r all`".into(),
        ));
    }
    let size = info["virtual-size"]
        .as_u64()
        .ok_or_else(|| Refused("qemu-img reports no virtual size for the file".into()))?;
    if size == 0 || size > max_virtual_bytes {
        return Err(Refused(format!(
            "the image's virtual size is {size} bytes; carve takes 1 byte to {max_virtual_bytes} bytes ({} GiB)",
            max_virtual_bytes >> 30
        )));
    }
    Ok(size)
}

/// Runs `qemu-img <args> <path>` with a time limit.
async fn qemu_img(args: &[&str], path: &Path) -> Result<std::process::Output, CheckError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(args).arg(path).kill_on_drop(true);
    tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| CheckError::Tool(format!("qemu-img {} took too long", args[0])))?
        .map_err(|e| CheckError::Tool(format!("cannot run qemu-img: {e}")))
}

/// The first line of a tool's output, without the file's path (which is carve's business).
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("").trim();
    line.rsplit_once(": ")
        .map(|(_, tail)| tail)
        .unwrap_or(line)
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: u64 = 100 << 30;

    #[test]
    fn a_plain_qcow2_is_taken() {
        let info = json!({"format": "qcow2", "virtual-size": 1u64 << 30,
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": false}}});
        assert_eq!(judge(&info, MAX), Ok(1 << 30));
    }

    #[test]
    fn raw_files_backing_files_and_data_files_are_refused() {
        let raw = json!({"format": "raw", "virtual-size": 1024});
        assert!(judge(&raw, MAX).unwrap_err().0.contains("not qcow2"));
        let backed = json!({"format": "qcow2", "virtual-size": 1024,
            "backing-filename": "/etc/shadow", "format-specific": {"data": {}}});
        assert!(judge(&backed, MAX).unwrap_err().0.contains("backing file"));
        let external = json!({"format": "qcow2", "virtual-size": 1024,
            "format-specific": {"data": {"data-file": "/dev/sda"}}});
        assert!(
            judge(&external, MAX)
                .unwrap_err()
                .0
                .contains("external file")
        );
        let corrupt = json!({"format": "qcow2", "virtual-size": 1024,
            "format-specific": {"data": {"corrupt": true}}});
        assert!(judge(&corrupt, MAX).unwrap_err().0.contains("corrupt"));
    }

    /// A version 3 header with these backing-file offset and incompatible features.
    fn header(backing: u64, incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    #[test]
    fn headers_are_judged_before_any_tool_opens_the_file() {
        assert_eq!(judge_header(&header(0, 0)), Ok(()));
        assert!(
            judge_header(b"raw bytes, not a disk")
                .unwrap_err()
                .0
                .contains("not qcow2")
        );
        assert!(
            judge_header(&header(512, 0))
                .unwrap_err()
                .0
                .contains("backing file")
        );
        assert!(
            judge_header(&header(0, 0b100))
                .unwrap_err()
                .0
                .contains("external file")
        );
        let mut v4 = header(0, 0);
        v4[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert!(judge_header(&v4).unwrap_err().0.contains("version 4"));
        let encrypted = json!({"format": "qcow2", "virtual-size": 1024, "encrypted": true,
            "format-specific": {"data": {}}});
        assert!(judge(&encrypted, MAX).unwrap_err().0.contains("encrypted"));
    }

    #[test]
    fn virtual_size_is_bounded() {
        let huge =
            json!({"format": "qcow2", "virtual-size": MAX + 1, "format-specific": {"data": {}}});
        assert!(judge(&huge, MAX).unwrap_err().0.contains("virtual size"));
    }

    #[test]
    fn tool_messages_lose_carve_paths() {
        assert_eq!(
            first_line(
                b"qemu-img: Could not open '/srv/x/upload.part': Image is not in qcow2 format\n"
            ),
            "Image is not in qcow2 format"
        );
    }
}
