//! A VM's lifecycle states, stored by their snake_case names.

/// A VM's lifecycle state.
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
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Rebooting,
    Resizing,
    /// Its disk is being replaced by a fresh one (reinstall).
    Reinstalling,
    Deleting,
    Paused,
    Crashed,
    /// The domain vanished from libvirt behind carve's back.
    Missing,
    /// Being moved to another host (its disk is copied there).
    Moving,
    /// Its host does not answer: carve cannot tell (nothing is deleted; it is observed again
    /// when the host answers).
    Unknown,
    Deleted,
}

impl VmState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Rebooting => "rebooting",
            VmState::Resizing => "resizing",
            VmState::Reinstalling => "reinstalling",
            VmState::Deleting => "deleting",
            VmState::Paused => "paused",
            VmState::Crashed => "crashed",
            VmState::Missing => "missing",
            VmState::Unknown => "unknown",
            VmState::Moving => "moving",
            VmState::Deleted => "deleted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::from(s)).ok()
    }
}
