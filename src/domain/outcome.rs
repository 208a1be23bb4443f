//! How an audited action went, stored by its snake_case name.

/// How an audited action went.
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
pub enum Outcome {
    Succeeded,
    /// Refused: not signed in, not allowed, or throttled.
    Denied,
    Failed,
}

impl Outcome {
    /// Every outcome, in the order the panel offers them as filters.
    pub const ALL: [Outcome; 3] = [Outcome::Succeeded, Outcome::Denied, Outcome::Failed];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome an HTTP status stands for: below 400 succeeded; 401, 403 and 429 denied;
    /// anything else failed.
    pub fn of_status(status: u16) -> Self {
        match status {
            s if s < 400 => Outcome::Succeeded,
            401 | 403 | 429 => Outcome::Denied,
            _ => Outcome::Failed,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes_and_names_round_trip() {
        assert_eq!(Outcome::of_status(202), Outcome::Succeeded);
        assert_eq!(Outcome::of_status(403), Outcome::Denied);
        assert_eq!(Outcome::of_status(429), Outcome::Denied);
        assert_eq!(Outcome::of_status(404), Outcome::Failed);
        assert_eq!(Outcome::of_status(500), Outcome::Failed);
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(Outcome::parse("maybe"), None);
    }
}
