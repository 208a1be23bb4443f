//! Checks a qcow2 file someone uploaded before carve uses it as a base image: it must be a
//! consistent qcow2 that stands alone (no backing file, no external data file: either could
//! make a guest read any file of the host), of a bounded virtual size.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How long `qemu-img` may take over one file.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a file cannot be a base image, in words for whoever uploaded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks the file at `path` and returns its virtual size in bytes.
pub async fn check_base(path: &Path, max_virtual_bytes: u64) -> Result<u64, Refused> {
    let info = qemu_img(&["info", "--output=json"], path).await?;
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
        ))),
    }
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
async fn qemu_img(args: &[&str], path: &Path) -> Result<std::process::Output, Refused> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(args).arg(path).kill_on_drop(true);
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Refused("qemu-img took too long over the file".into()))?
        .map_err(|e| Refused(format!("carve cannot run qemu-img: {e}")))?;
    if args[0] == "info" && !out.status.success() {
        return Err(Refused(format!(
            "qemu-img cannot read the file as a disk image: {}",
            first_line(&out.stderr)
        )));
    }
    Ok(out)
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
