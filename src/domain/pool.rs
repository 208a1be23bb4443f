//! Pools' protocols, algorithms, health-check kinds and member states, stored by their
//! snake_case names.

/// Generates a stored, serialized, documented enum with `as_str`.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
            utoipa::ToSchema, sqlx::Type,
        )]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "TEXT", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum!(
    /// What a pool balances.
    PoolProtocol {
        /// HTTP/1.1 requests, each to a member.
        Http => "http",
        /// TCP connections, each to a member.
        Tcp => "tcp",
    }
);

stored_enum!(
    /// How a pool picks a member.
    PoolAlgorithm {
        /// In turn, in proportion to weight.
        RoundRobin => "round_robin",
        /// The member with the fewest open requests or connections per weight.
        LeastConnections => "least_connections",
    }
);

stored_enum!(
    /// How members' health is checked.
    CheckKind {
        /// `GET path` must answer `expect_status`.
        Http => "http",
        /// A TCP connection must be accepted.
        Tcp => "tcp",
    }
);

stored_enum!(
    /// A member's state as the balancer last saw it.
    MemberStatus {
        /// Added; no traffic until its health check has passed `rise` times.
        Joining => "joining",
        /// In rotation.
        Healthy => "healthy",
        /// Out of rotation until its check passes `rise` times again.
        Unhealthy => "unhealthy",
        /// Leaving: no new work; open work finishes until the drain timeout.
        Draining => "draining",
        /// Its VM is not running; it joins again when the VM runs.
        Inactive => "inactive",
    }
);

stored_enum!(
    /// Where a scale group's rolling replacement is.
    RefreshState {
        /// No refresh: members are only kept at the desired count and healed.
        None => "none",
        /// Members made from an older template are being replaced.
        Running => "running",
        /// Held: no member is replaced for the refresh until it is resumed.
        Paused => "paused",
    }
);

stored_enum!(
    /// The data plane's measure a scale group can follow.
    TargetMetric {
        /// Open requests (HTTP) or connections (TCP) per healthy member.
        Connections => "connections",
        /// Requests (HTTP) or new connections (TCP) per second per healthy member.
        RequestsPerSecond => "requests_per_second",
    }
);
