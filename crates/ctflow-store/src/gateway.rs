//! The AI gateway's secrets as stored: sealed values (ctflow_core::secrets), masked forms,
//! provider and auth settings. The store never sees a value in the clear.

use std::collections::BTreeMap;

use ctflow_core::MlflowError;
use ctflow_core::secrets::Sealed;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

use crate::Store;
use crate::error::Result;

/// What MLflow's API shows of a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretInfo {
    /// `s-<32 hex>`.
    pub secret_id: String,
    /// Unique name.
    pub secret_name: String,
    /// Each value masked.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub masked_values: BTreeMap<String, String>,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub last_updated_at: i64,
    /// The provider it is for (`openai`, `bedrock`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider settings that are not secret (region, auth mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_config: Option<Map<String, Value>>,
    /// Who made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who changed it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
}

/// A new secret, already sealed.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// Its id (the seal is bound to it).
    pub secret_id: String,
    /// Its name (the seal is bound to it).
    pub secret_name: String,
    /// The sealed value.
    pub sealed: Sealed,
    /// Masked values.
    pub masked_values: BTreeMap<String, String>,
    /// Provider.
    pub provider: Option<String>,
    /// Auth settings.
    pub auth_config: Option<Map<String, Value>>,
    /// Who.
    pub created_by: Option<String>,
}

const SECRET_COLUMNS: &str = "secret_id, secret_name, masked_values, created_at, last_updated_at, \
     provider, auth_config, created_by, last_updated_by";

fn secret_not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("GatewaySecret not found (secret_id='{id}')"))
}

fn info_from_row(row: &sqlx::any::AnyRow) -> Result<SecretInfo> {
    let masked: String = row.try_get(2)?;
    let auth: Option<String> = row.try_get(6)?;
    Ok(SecretInfo {
        secret_id: row.try_get(0)?,
        secret_name: row.try_get(1)?,
        masked_values: serde_json::from_str(&masked)
            .map_err(|e| crate::Error::Corrupt(format!("masked secret: {e}")))?,
        created_at: row.try_get(3)?,
        last_updated_at: row.try_get(4)?,
        provider: row.try_get(5)?,
        auth_config: auth.and_then(|a| serde_json::from_str(&a).ok()),
        created_by: row.try_get(7)?,
        last_updated_by: row.try_get(8)?,
    })
}

fn text<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        MlflowError::invalid(format!("Cannot store the secret's settings: {e}")).into()
    })
}

impl Store {
    /// Stores a new sealed secret; its name must be free.
    pub async fn create_secret(&self, new: &NewSecret) -> Result<SecretInfo> {
        let now = ctflow_core::now_ms();
        let auth = new.auth_config.as_ref().map(text).transpose()?;
        let inserted = sqlx::query(
            "INSERT INTO gateway_secrets (secret_id, secret_name, provider, auth_config, masked_values, \
             wrapped_key, ciphertext, kek_version, created_at, last_updated_at, created_by, last_updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $10) ON CONFLICT (secret_name) DO NOTHING",
        )
        .bind(new.secret_id.as_str())
        .bind(new.secret_name.as_str())
        .bind(new.provider.as_deref())
        .bind(auth.as_deref())
        .bind(text(&new.masked_values)?)
        .bind(new.sealed.wrapped_key.as_str())
        .bind(new.sealed.ciphertext.as_str())
        .bind(i64::from(new.sealed.kek_version))
        .bind(now)
        .bind(new.created_by.as_deref())
        .execute(&self.write)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(MlflowError::exists(format!(
                "Secret with name '{}' already exists",
                new.secret_name
            ))
            .into());
        }
        self.get_secret(&new.secret_id).await
    }

    /// A secret's info (never its value).
    pub async fn get_secret(&self, secret_id: &str) -> Result<SecretInfo> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM gateway_secrets WHERE secret_id = $1"
        )))
        .bind(secret_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| secret_not_found(secret_id))?;
        info_from_row(&row)
    }

    /// A secret's name, for sealing a new value bound to it.
    pub async fn secret_name(&self, secret_id: &str) -> Result<String> {
        Ok(self.get_secret(secret_id).await?.secret_name)
    }

    /// The sealed value of a secret (for the gateway's calls to providers).
    pub async fn sealed_secret(&self, secret_id: &str) -> Result<Sealed> {
        let row = sqlx::query(
            "SELECT wrapped_key, ciphertext, kek_version FROM gateway_secrets WHERE secret_id = $1",
        )
        .bind(secret_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| secret_not_found(secret_id))?;
        let version: i64 = row.try_get(2)?;
        Ok(Sealed {
            wrapped_key: row.try_get(0)?,
            ciphertext: row.try_get(1)?,
            kek_version: u32::try_from(version).unwrap_or(0),
        })
    }

    /// Replaces a secret's value (and its auth settings when given).
    pub async fn update_secret(
        &self,
        secret_id: &str,
        sealed: &Sealed,
        masked_values: &BTreeMap<String, String>,
        auth_config: Option<&Map<String, Value>>,
        updated_by: Option<&str>,
    ) -> Result<SecretInfo> {
        let auth = auth_config.map(text).transpose()?;
        let updated = sqlx::query(
            "UPDATE gateway_secrets SET wrapped_key = $1, ciphertext = $2, kek_version = $3, \
             masked_values = $4, auth_config = COALESCE($5, auth_config), last_updated_at = $6, \
             last_updated_by = COALESCE($7, last_updated_by) WHERE secret_id = $8",
        )
        .bind(sealed.wrapped_key.as_str())
        .bind(sealed.ciphertext.as_str())
        .bind(i64::from(sealed.kek_version))
        .bind(text(masked_values)?)
        .bind(auth.as_deref())
        .bind(ctflow_core::now_ms())
        .bind(updated_by)
        .bind(secret_id)
        .execute(&self.write)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(secret_not_found(secret_id).into());
        }
        self.get_secret(secret_id).await
    }

    /// Deletes a secret.
    pub async fn delete_secret(&self, secret_id: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM gateway_secrets WHERE secret_id = $1")
            .bind(secret_id)
            .execute(&self.write)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(secret_not_found(secret_id).into());
        }
        Ok(())
    }

    /// Every secret's info, oldest first, of one provider or all.
    pub async fn list_secrets(&self, provider: Option<&str>) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM gateway_secrets WHERE ($1 IS NULL OR provider = $1) \
             ORDER BY created_at, secret_id"
        )))
        .bind(provider)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(info_from_row).collect()
    }
}
