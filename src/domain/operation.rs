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
    /// Moves a VM to another host (an evacuation).
    Move,
    /// A scale group's rolling replacement (its target is the pool; the group's controller
    /// drives it, not a worker).
    Refresh,
}

impl OpKind {
    /// Every kind, in the order the panel offers them as filters.
    pub const ALL: [OpKind; 11] = [
        OpKind::Create,
        OpKind::Start,
        OpKind::Stop,
        OpKind::ForceStop,
        OpKind::Reboot,
        OpKind::Resize,
        OpKind::Delete,
        OpKind::ResetPassword,
        OpKind::Reinstall,
        OpKind::Move,
        OpKind::Refresh,
    ];

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
            OpKind::Move => "move",
            OpKind::Reinstall => "reinstall",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
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
    /// Every state, in the order an operation goes through them.
    pub const ALL: [OpState; 4] = [
        OpState::Pending,
        OpState::Running,
        OpState::Succeeded,
        OpState::Failed,
    ];

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

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

/// Where one step of an operation is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Done,
    Failed,
}

impl StepState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in OpKind::ALL {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(OpKind::parse("explode"), None);
        for s in OpState::ALL {
            assert_eq!(OpState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(serde_json::to_value(StepState::Done).unwrap(), "done");
        assert_eq!(
            serde_json::to_value(OpState::Succeeded).unwrap(),
            "succeeded"
        );
    }
}
