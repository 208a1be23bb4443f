//! The facts an admin gives about an image: checked before a byte of the upload is read, and
//! again when they are changed.

use super::{NewImage, name_taken};
use crate::db::images::ImageFacts;
use crate::db::{self, Db};
use crate::domain::Invalid;
use crate::domain::ids::ImageId;
use crate::domain::image::BootMethod;
use crate::domain::names::ResourceName;
use crate::error::AppError;

/// Checks an upload's description before any byte is read; returns its facts (disk path and
/// size filled in later).
pub(super) async fn check_new(db: &Db, req: &NewImage) -> Result<ImageFacts, AppError> {
    let mut errors = Vec::new();
    if let Err(e) = ResourceName::parse(&req.name, "name") {
        errors.push(e);
    } else if ImageId::parse(&req.name).is_some() {
        errors.push(Invalid::new(
            "name",
            "names shaped like an image id (im_…) are reserved; choose another",
        ));
    }
    if req.os.is_empty() {
        errors.push(Invalid::new(
            "os",
            "say which OS the image holds, e.g. debian",
        ));
    }
    check_texts(
        Some(&req.os),
        Some(&req.version),
        Some(&req.description),
        Some(&req.default_user),
        req.min_memory_mib,
        &mut errors,
    );
    let (kernel, initrd, cmdline) = match (req.boot.as_str(), req.kernel_from.as_deref()) {
        ("disk", None) => (None, None, None),
        ("disk", Some(_)) => {
            errors.push(Invalid::new(
                "kernel_from",
                "only boot=kernel takes kernel_from; leave it out for boot=disk",
            ));
            (None, None, None)
        }
        ("kernel", Some(from)) => match db::images::find(db, from).await? {
            Some(i) if i.boot == BootMethod::Kernel && i.removed_at.is_none() => {
                (i.kernel_path, i.initrd_path, i.cmdline)
            }
            _ => {
                errors.push(Invalid::new(
                    "kernel_from",
                    format!("no image named {from:?} boots a kernel; name a built image with boot kernel (GET /api/v1/images)"),
                ));
                (None, None, None)
            }
        },
        ("kernel", None) => {
            errors.push(Invalid::new(
                "kernel_from",
                "boot=kernel needs kernel_from: the image whose kernel boots this one",
            ));
            (None, None, None)
        }
        _ => {
            errors.push(Invalid::new(
                "boot",
                "use disk (the image's own boot loader) or kernel (with kernel_from)",
            ));
            (None, None, None)
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    if db::images::find(db, &req.name).await?.is_some() {
        return Err(name_taken(&req.name));
    }
    Ok(ImageFacts {
        name: req.name.clone(),
        os: req.os.clone(),
        description: req.description.clone(),
        boot: if kernel.is_some() {
            BootMethod::Kernel
        } else {
            BootMethod::Disk
        },
        disk_path: String::new(),
        kernel_path: kernel,
        initrd_path: initrd,
        cmdline,
        virtual_size_bytes: 0,
        min_memory_mib: req.min_memory_mib.unwrap_or(128),
        version: req.version.clone(),
        default_user: if req.default_user.is_empty() {
            "root".into()
        } else {
            req.default_user.clone()
        },
        guest_agent: req.guest_agent,
    })
}

/// Checks the free-text and numeric facts of an image, those given.
pub(super) fn check_texts(
    os: Option<&str>,
    version: Option<&str>,
    description: Option<&str>,
    default_user: Option<&str>,
    min_memory_mib: Option<i64>,
    errors: &mut Vec<Invalid>,
) {
    if let Some(os) = os
        && (os.len() > 32
            || !os
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)))
    {
        errors.push(Invalid::new(
            "os",
            "up to 32 lower-case letters, digits, '.', '_' and '-', e.g. debian",
        ));
    }
    if let Some(v) = version
        && (v.chars().count() > 32 || v.chars().any(|c| c.is_control()))
    {
        errors.push(Invalid::new(
            "version",
            "up to 32 characters, no control characters",
        ));
    }
    if let Some(d) = description
        && (d.chars().count() > 500 || d.chars().any(|c| c.is_control()))
    {
        errors.push(Invalid::new(
            "description",
            "up to 500 characters on one line",
        ));
    }
    if let Some(user) = default_user {
        let ok = user.is_empty()
            || (user.len() <= 32
                && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && user
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)));
        if !ok {
            errors.push(Invalid::new(
                "default_user",
                "a Linux user name: up to 32 lower-case letters, digits, '_' and '-', starting with a letter",
            ));
        }
    }
    if let Some(m) = min_memory_mib
        && !(64..=4_194_304).contains(&m)
    {
        errors.push(Invalid::new("min_memory_mib", "64 to 4194304 MiB"));
    }
}
