//! Operations' kinds and states, stored by their snake_case names.

/// What an operation does.
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
pub enum OpKind {
    Create,
    Start,
    Stop,
    ForceStop,
    Reboot,
    Resize,
    Delete,
    ResetPassword,
    /// Replaces the VM's disk with a fresh one of an image.
    Reinstall,
    /// A scale group's rolling replacement (its target is the pool; the group's controller
    /// drives it, not a worker).
    Refresh,
}

impl OpKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Start => "start",
            OpKind::Stop => "stop",
            OpKind::ForceStop => "force_stop",
            OpKind::Reboot => "reboot",
            OpKind::Resize => "resize",
            OpKind::Delete => "delete",
            OpKind::ResetPassword => "reset_password",
            OpKind::Refresh => "refresh",
            OpKind::Reinstall => "reinstall",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::from(s)).ok()
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an operation is in its life.
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
pub enum OpState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl OpState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
        }
    }

    /// Whether the operation is still pending or running.
    pub fn in_progress(self) -> bool {
        matches!(self, OpState::Pending | OpState::Running)
    }
}

impl std::fmt::Display for OpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [
            OpKind::Create,
            OpKind::Start,
            OpKind::Stop,
            OpKind::ForceStop,
            OpKind::Reboot,
            OpKind::Resize,
            OpKind::Delete,
        ] {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(OpKind::parse("explode"), None);
        assert_eq!(
            serde_json::to_value(OpState::Succeeded).unwrap(),
            "succeeded"
        );
    }
}
