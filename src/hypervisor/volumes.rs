//! Files on a host, through libvirt's storage pools and volumes: qcow2 overlays backed by a
//! base image, raw volumes written and read through libvirt streams, grown and deleted. The
//! same calls serve the local host and a remote one (`qemu+ssh://…`), so no shared
//! filesystem and no agent are needed.
//!
//! libvirt's test driver keeps volumes in memory and cannot stream or resize them; there
//! uploads keep only their size, downloads read nothing and resizes do nothing, so fast
//! tests of carve's own logic run the same code.

use std::io::{Read, Write};

use quick_xml::events::BytesText;
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::HypervisorError;

/// A volume as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its path on the host (what domain XML names).
    pub path: String,
    /// Its size as the guest sees it (for raw volumes, the file's length), in bytes.
    pub capacity_bytes: u64,
    /// The length of its file on the host, in bytes (what a copy moves).
    pub length_bytes: u64,
}

/// Bytes moved per stream call.
const CHUNK: usize = 256 * 1024;

fn lv(e: &virt::error::Error) -> HypervisorError {
    HypervisorError::Libvirt(e.message().to_string())
}

/// Whether the connection is libvirt's in-memory test driver.
fn is_test_driver(conn: &Connect) -> bool {
    conn.uri().map(|u| u.starts_with("test:")).unwrap_or(false)
}

fn pool(conn: &Connect, name: &str) -> Result<StoragePool, HypervisorError> {
    conn.lookup_storage_pool_by_name(name).map_err(|e| {
        HypervisorError::Libvirt(format!(
            "storage pool {name} is missing on the host ({}); register the host again to make it",
            e.message()
        ))
    })
}

/// The named volume, or `None` when the pool has none of that name.
fn lookup(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, HypervisorError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoStorageVolume) => Ok(None),
        Err(e) => Err(lv(&e)),
    }
}

fn facts(vol: &StorageVol) -> Result<Volume, HypervisorError> {
    let info = vol.info().map_err(|e| lv(&e))?;
    // With GET_PHYSICAL, "allocation" is the file's length (the test driver lacks the flag).
    let length = vol
        .info_flags(virt::sys::VIR_STORAGE_VOL_GET_PHYSICAL)
        .map_or(info.allocation, |i| i.allocation);
    Ok(Volume {
        path: vol.path().map_err(|e| lv(&e))?,
        capacity_bytes: info.capacity,
        length_bytes: length,
    })
}

/// The volume's XML: a file of `format` and `capacity` bytes, readable by its owner only,
/// optionally backed by `backing` (a qcow2 file on the same host).
fn volume_xml(
    name: &str,
    format: &str,
    capacity: u64,
    backing: Option<&str>,
) -> Result<String, HypervisorError> {
    let mut w = quick_xml::Writer::new(Vec::new());
    w.create_element("volume")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(BytesText::new(name))?;
            w.create_element("capacity")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new(&capacity.to_string()))?;
            // Sparse: space is taken as the guest writes, not up front.
            w.create_element("allocation")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new("0"))?;
            w.create_element("target").write_inner_content(|w| {
                w.create_element("format")
                    .with_attribute(("type", format))
                    .write_empty()?;
                w.create_element("permissions").write_inner_content(|w| {
                    w.create_element("mode")
                        .write_text_content(BytesText::new("0600"))?;
                    Ok(())
                })?;
                Ok(())
            })?;
            if let Some(base) = backing {
                w.create_element("backingStore").write_inner_content(|w| {
                    w.create_element("path")
                        .write_text_content(BytesText::new(base))?;
                    w.create_element("format")
                        .with_attribute(("type", "qcow2"))
                        .write_empty()?;
                    Ok(())
                })?;
            }
            Ok(())
        })
        .map_err(|e| HypervisorError::Libvirt(format!("volume XML: {e}")))?;
    String::from_utf8(w.into_inner()).map_err(|e| HypervisorError::Libvirt(e.to_string()))
}

/// The pool's directory, size and free space (after a refresh, so files made behind libvirt's
/// back count).
pub fn pool_facts(
    conn: &Connect,
    name: &str,
) -> Result<super::host_setup::PoolFacts, HypervisorError> {
    let pool = pool(conn, name)?;
    let _ = pool.refresh(0);
    let info = pool.info().map_err(|e| lv(&e))?;
    let xml = pool.xml_desc(0).map_err(|e| lv(&e))?;
    Ok(super::host_setup::PoolFacts {
        path: super::host_setup::pool_path(&xml).unwrap_or_default(),
        capacity_bytes: info.capacity,
        available_bytes: info.available,
    })
}

/// The named volume of the pool, if there is one.
pub fn volume(
    conn: &Connect,
    pool_name: &str,
    name: &str,
) -> Result<Option<Volume>, HypervisorError> {
    let pool = pool(conn, pool_name)?;
    lookup(&pool, name)?.as_ref().map(facts).transpose()
}

/// Names of the pool's volumes.
pub fn volumes(conn: &Connect, pool_name: &str) -> Result<Vec<String>, HypervisorError> {
    let pool = pool(conn, pool_name)?;
    let _ = pool.refresh(0);
    pool.list_volumes().map_err(|e| lv(&e))
}

/// Makes a qcow2 volume of `capacity` bytes backed by the qcow2 file at `backing`; an
/// existing volume of that name is replaced.
pub fn create_overlay(
    conn: &Connect,
    pool_name: &str,
    name: &str,
    backing: &str,
    capacity: u64,
) -> Result<Volume, HypervisorError> {
    let pool = pool(conn, pool_name)?;
    delete_in(&pool, name)?;
    let xml = volume_xml(name, "qcow2", capacity, Some(backing))?;
    let vol = StorageVol::create_xml(&pool, &xml, 0).map_err(|e| {
        HypervisorError::Libvirt(format!("cannot create disk {name}: {}", e.message()))
    })?;
    facts(&vol)
}

/// Writes `len` bytes from `source` into a raw volume: a new one (an existing volume of that
/// name is replaced) or, with `in_place`, over the existing one's content from its start (its
/// file stays the same, so a running guest that has it open sees the new bytes).
pub fn upload(
    conn: &Connect,
    pool_name: &str,
    name: &str,
    source: &mut dyn Read,
    len: u64,
    in_place: bool,
) -> Result<Volume, HypervisorError> {
    let pool = pool(conn, pool_name)?;
    let existing = if in_place { lookup(&pool, name)? } else { None };
    let vol = match existing {
        Some(vol) => vol,
        None => {
            delete_in(&pool, name)?;
            let xml = volume_xml(name, "raw", len, None)?;
            StorageVol::create_xml(&pool, &xml, 0).map_err(|e| {
                HypervisorError::Libvirt(format!("cannot create volume {name}: {}", e.message()))
            })?
        }
    };
    if is_test_driver(conn) {
        return facts(&vol);
    }
    let stream = Stream::new(conn, 0).map_err(|e| lv(&e))?;
    vol.upload(&stream, 0, len, 0).map_err(|e| {
        HypervisorError::Libvirt(format!("cannot upload to volume {name}: {}", e.message()))
    })?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        let got = match source.read(&mut buf[..want]) {
            Ok(0) => {
                let _ = stream.abort();
                return Err(HypervisorError::Libvirt(format!(
                    "the source of volume {name} ended {left} bytes early"
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = stream.abort();
                return Err(HypervisorError::Libvirt(format!(
                    "reading what goes into volume {name}: {e}"
                )));
            }
        };
        let mut sent = 0;
        while sent < got {
            match stream.send(&buf[sent..got]) {
                Ok(n) if n > 0 => sent += n as usize,
                Ok(_) => continue,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(HypervisorError::Libvirt(format!(
                        "uploading volume {name}: {}",
                        e.message()
                    )));
                }
            }
        }
        left -= got as u64;
    }
    stream.finish().map_err(|e| {
        HypervisorError::Libvirt(format!("finishing the upload of {name}: {}", e.message()))
    })?;
    facts(&vol)
}

/// Copies up to `max` bytes of the volume from `offset` into `sink`; returns how many.
pub fn download(
    conn: &Connect,
    pool_name: &str,
    name: &str,
    offset: u64,
    max: u64,
    sink: &mut dyn Write,
) -> Result<u64, HypervisorError> {
    let pool = pool(conn, pool_name)?;
    let Some(vol) = lookup(&pool, name)? else {
        return Err(HypervisorError::Libvirt(format!(
            "volume {name} does not exist"
        )));
    };
    if is_test_driver(conn) || max == 0 {
        return Ok(0);
    }
    let stream = Stream::new(conn, 0).map_err(|e| lv(&e))?;
    vol.download(&stream, offset, max, 0).map_err(|e| {
        HypervisorError::Libvirt(format!("cannot read volume {name}: {}", e.message()))
    })?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match stream.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = stream.abort();
                return Err(HypervisorError::Libvirt(format!(
                    "reading volume {name}: {}",
                    e.message()
                )));
            }
        };
        if n <= 0 {
            break;
        }
        let n = n as usize;
        if let Err(e) = sink.write_all(&buf[..n]) {
            let _ = stream.abort();
            return Err(HypervisorError::Libvirt(format!(
                "keeping what volume {name} holds: {e}"
            )));
        }
        total += n as u64;
    }
    stream.finish().map_err(|e| lv(&e))?;
    Ok(total)
}

/// Grows a volume to `capacity` bytes (never shrinks it).
pub fn resize(
    conn: &Connect,
    pool_name: &str,
    name: &str,
    capacity: u64,
) -> Result<(), HypervisorError> {
    let pool = pool(conn, pool_name)?;
    let Some(vol) = lookup(&pool, name)? else {
        return Err(HypervisorError::Libvirt(format!(
            "volume {name} does not exist"
        )));
    };
    if facts(&vol)?.capacity_bytes >= capacity || is_test_driver(conn) {
        return Ok(());
    }
    vol.resize(capacity, 0).map_err(|e| {
        HypervisorError::Libvirt(format!("cannot grow volume {name}: {}", e.message()))
    })
}

/// Deletes a volume; nothing to do if it is gone.
pub fn delete(conn: &Connect, pool_name: &str, name: &str) -> Result<(), HypervisorError> {
    delete_in(&pool(conn, pool_name)?, name)
}

fn delete_in(pool: &StoragePool, name: &str) -> Result<(), HypervisorError> {
    match lookup(pool, name)? {
        Some(vol) => vol.delete(0).map_err(|e| {
            HypervisorError::Libvirt(format!("cannot delete volume {name}: {}", e.message()))
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xml_names_its_qcow2_backing_file() {
        let xml = volume_xml("vm_1.qcow2", "qcow2", 1 << 30, Some("/pool/base-ab.qcow2")).unwrap();
        assert!(
            xml.contains("<capacity unit=\"bytes\">1073741824</capacity>"),
            "{xml}"
        );
        assert!(
            xml.contains("<backingStore><path>/pool/base-ab.qcow2</path><format type=\"qcow2\"/></backingStore>"),
            "{xml}"
        );
        let odd = volume_xml("a<b", "raw", 1, None).unwrap();
        assert!(
            odd.contains("a&lt;b") && !odd.contains("backingStore"),
            "{odd}"
        );
    }

    #[test]
    fn volumes_come_and_go_on_the_test_driver() {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some("test:///default")).unwrap();
        super::super::host_setup::ensure_pool(&conn, "carve-vol-unit", "/carve-vol-unit").unwrap();
        let seed = upload(
            &conn,
            "carve-vol-unit",
            "s.iso",
            &mut &b"seed"[..],
            4,
            false,
        )
        .unwrap();
        assert_eq!(seed.capacity_bytes, 4);
        let disk = create_overlay(&conn, "carve-vol-unit", "d.qcow2", &seed.path, 2 << 30).unwrap();
        assert_eq!(disk.capacity_bytes, 2 << 30);
        let mut names = volumes(&conn, "carve-vol-unit").unwrap();
        names.sort();
        assert_eq!(names, vec!["d.qcow2", "s.iso"]);
        delete(&conn, "carve-vol-unit", "d.qcow2").unwrap();
        delete(&conn, "carve-vol-unit", "d.qcow2").unwrap();
        assert_eq!(volume(&conn, "carve-vol-unit", "d.qcow2").unwrap(), None);
    }
}
