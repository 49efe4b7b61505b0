//! API keys: secrets that map to a tenant, for the HTTP API's `Authorization: Bearer`.
//!
//! A secret is shown once, when it is created; the table keeps only its SHA-256 (hex) and
//! its first characters (`prefix`), so a leaked database does not leak working keys.

use std::fmt;

use jobs_core::{FieldError, JobError, NewJob};
use sea_orm::ConnectionTrait;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SeaOrmStore, store::db_error};

/// What every secret starts with, so a key is recognisable in logs and secret scanners.
const SECRET_PREFIX: &str = "jk_";
/// Hex characters after `SECRET_PREFIX`: 244 bits from the operating system's CSPRNG.
const SECRET_RANDOM_LEN: usize = 64;
/// Characters of the secret kept in clear, to tell keys apart in listings.
const PREFIX_LEN: usize = 8;

/// A key just created. `secret` exists only here: the store keeps its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant: String,
    pub secret: String,
    pub prefix: String,
}

/// Debug output leaves the secret out, so a logged value does not leak a working key.
impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("secret", &"<redacted>")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A stored key as listings show it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub tenant: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKeyInfo {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

impl SeaOrmStore {
    /// Creates a key for `tenant` (named as job tenants are) and returns its secret,
    /// which cannot be recovered later.
    pub async fn create_api_key(&self, tenant: &str) -> Result<NewApiKey, JobError> {
        validate_tenant(tenant)?;
        let id = Uuid::now_v7();
        let secret = generate_secret();
        let prefix = secret[..PREFIX_LEN].to_owned();
        let mut sql = self.sql();
        let row = format!(
            "INSERT INTO api_keys (id, tenant, key_hash, prefix, created_at) \
             VALUES ({}, {}, {}, {}, {})",
            sql.bind(id),
            sql.bind(tenant.to_owned()),
            sql.bind(hash_secret(&secret)),
            sql.bind(prefix.clone()),
            self.dialect().now(),
        );
        sql.push(&row);
        self.connection()
            .execute_raw(sql.build())
            .await
            .map_err(db_error)?;
        Ok(NewApiKey {
            id,
            tenant: tenant.to_owned(),
            secret,
            prefix,
        })
    }

    /// Revokes an active key; an unknown or already revoked id is `Invalid` on `id`.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<(), JobError> {
        let mut sql = self.sql();
        let statement = format!(
            "UPDATE api_keys SET revoked_at = {} WHERE id = {} AND revoked_at IS NULL",
            self.dialect().now(),
            sql.bind(id),
        );
        sql.push(&statement);
        let done = self
            .connection()
            .execute_raw(sql.build())
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(JobError::Invalid(vec![FieldError::new(
                "id",
                "no active key with this id",
            )]));
        }
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, JobError> {
        let mut sql = self.sql();
        sql.push(
            "SELECT id, tenant, prefix, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        );
        let rows = self
            .connection()
            .query_all_raw(sql.build())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(ApiKeyInfo {
                    id: row.try_get("", "id").map_err(db_error)?,
                    tenant: row.try_get("", "tenant").map_err(db_error)?,
                    prefix: row.try_get("", "prefix").map_err(db_error)?,
                    created_at: row.try_get("", "created_at").map_err(db_error)?,
                    revoked_at: row.try_get("", "revoked_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// The tenant of an active key with this secret, if there is one.
    pub async fn tenant_for_key(&self, secret: &str) -> Result<Option<String>, JobError> {
        let mut sql = self.sql();
        let statement = format!(
            "SELECT tenant FROM api_keys WHERE key_hash = {} AND revoked_at IS NULL",
            sql.bind(hash_secret(secret)),
        );
        sql.push(&statement);
        let row = self
            .connection()
            .query_one_raw(sql.build())
            .await
            .map_err(db_error)?;
        row.map(|row| row.try_get("", "tenant").map_err(db_error))
            .transpose()
    }

    /// Whether any key was ever created, revoked ones included: once one was, the API
    /// keeps requiring keys (revoking them all must not switch authentication off).
    pub async fn has_any_keys(&self) -> Result<bool, JobError> {
        self.any_key_where("true").await
    }

    /// Whether any key is active (not revoked).
    pub async fn has_active_keys(&self) -> Result<bool, JobError> {
        self.any_key_where("revoked_at IS NULL").await
    }

    async fn any_key_where(&self, condition: &str) -> Result<bool, JobError> {
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT 1 AS one FROM api_keys WHERE {condition} LIMIT 1"
        ));
        let row = self
            .connection()
            .query_one_raw(sql.build())
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }
}

/// The tenant rules of jobs, reported on the field `tenant`.
fn validate_tenant(tenant: &str) -> Result<(), JobError> {
    let probe = NewJob::new("api_key", json!({})).tenant(tenant);
    match probe.validate() {
        Ok(()) => Ok(()),
        Err(JobError::Invalid(fields)) => {
            let fields: Vec<FieldError> =
                fields.into_iter().filter(|f| f.field == "tenant").collect();
            if fields.is_empty() {
                Ok(())
            } else {
                Err(JobError::Invalid(fields))
            }
        }
        Err(other) => Err(other),
    }
}

fn generate_secret() -> String {
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + SECRET_RANDOM_LEN);
    secret.push_str(SECRET_PREFIX);
    // UUIDv4 draws from the OS generator (getrandom); two of them make the secret.
    for _ in 0..2 {
        secret.push_str(&Uuid::new_v4().simple().to_string());
    }
    secret
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_documented_shape_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 3 + SECRET_RANDOM_LEN);
        assert!(a.starts_with("jk_"));
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tenant_rules_are_those_of_jobs() {
        assert!(validate_tenant("acme/eu-1:prod_2.x").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(129)] {
            let Err(JobError::Invalid(fields)) = validate_tenant(bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].field, "tenant");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = NewApiKey {
            id: Uuid::nil(),
            tenant: "t".into(),
            secret: "jk_supersecret".into(),
            prefix: "jk_super".into(),
        };
        assert!(!format!("{key:?}").contains("supersecret"));
    }
}
