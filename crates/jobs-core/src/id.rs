//! Job identifiers: UUIDv7, so ids sort by creation time and index well.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Defines an id type: a UUID with its own name, parsed and printed as the UUID.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The stable identity of a job; handlers can use it to deduplicate side effects.
    JobId
);

uuid_id!(
    /// Names one attempt: minted at random by each claim and stored on the row. Every
    /// write a worker makes for the attempt presents it, so a stale attempt (even under a
    /// reused worker id) changes nothing.
    LeaseToken
);

uuid_id!(
    /// Names a workflow: a graph of jobs created together.
    WorkflowId
);

uuid_id!(
    /// Names one stored file (an input or result of a job, or a staged upload); its
    /// object in the file storage is named after it.
    FileId
);

/// Fresh time-ordered ids.
macro_rules! time_ordered {
    ($($name:ident),*) => {$(
        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    )*};
}

time_ordered!(JobId, WorkflowId, FileId);
