//! How an image boots and where it came from, stored by their lower-case names.

/// How a VM of an image boots.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum BootMethod {
    /// The boot loader on the image's disk.
    Disk,
    /// A kernel and initramfs given to QEMU directly.
    Kernel,
}

impl BootMethod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMethod::Disk => "disk",
            BootMethod::Kernel => "kernel",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [BootMethod::Disk, BootMethod::Kernel]
            .into_iter()
            .find(|b| b.as_str() == s)
    }
}

impl std::fmt::Display for BootMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an image came from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum ImageSource {
    /// Built from a recipe into carve's image directory.
    Built,
    /// Uploaded by an admin.
    Uploaded,
}

impl ImageSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Built => "built",
            ImageSource::Uploaded => "uploaded",
        }
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in [BootMethod::Disk, BootMethod::Kernel] {
            assert_eq!(BootMethod::parse(b.as_str()), Some(b));
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
        assert_eq!(BootMethod::parse("floppy"), None);
        assert_eq!(
            serde_json::to_value(ImageSource::Uploaded).unwrap(),
            "uploaded"
        );
    }
}
