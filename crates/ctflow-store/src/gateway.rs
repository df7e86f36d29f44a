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

// ---------------------------------------------------------------- model definitions

/// A provider's model with the secret to call it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDefinition {
    /// `d-<32 hex>`.
    pub model_definition_id: String,
    /// Unique name.
    pub name: String,
    /// Its secret (none once the secret was deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// The secret's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `openai`, `anthropic`, ...
    pub provider: String,
    /// The provider's model name.
    pub model_name: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub last_updated_at: i64,
}

/// An endpoint's use of a model definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMapping {
    /// `m-<32 hex>`.
    pub mapping_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The model definition.
    pub model_definition_id: String,
    /// The model definition itself.
    pub model_definition: ModelDefinition,
    /// Its share of traffic.
    pub weight: f64,
    /// Epoch ms.
    pub created_at: i64,
    /// `PRIMARY` or `FALLBACK`.
    pub linkage_type: String,
    /// A fallback's place in line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_order: Option<i64>,
}

/// How an endpoint uses a model definition, as a request names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The model definition.
    pub model_definition_id: String,
    /// `PRIMARY` or `FALLBACK`.
    pub linkage_type: String,
    /// Share of traffic.
    pub weight: f64,
    /// A fallback's place in line.
    pub fallback_order: Option<i64>,
}

/// A gateway endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// `e-<32 hex>`.
    pub endpoint_id: String,
    /// Unique name.
    pub name: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub last_updated_at: i64,
    /// Its models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_mappings: Vec<ModelMapping>,
    /// Who made it (empty when unknown, as MLflow answers).
    pub created_by: String,
    /// Who changed it last.
    pub last_updated_by: String,
    /// How requests are spread over the primary models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_strategy: Option<String>,
    /// What happens when a model fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_config: Option<Value>,
    /// The experiment its usage is traced to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Whether its usage is traced.
    pub usage_tracking: bool,
}

/// A new or changed endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    /// Name.
    pub name: Option<String>,
    /// Models (replacing all when given on update).
    pub model_configs: Option<Vec<ModelConfig>>,
    /// Routing.
    pub routing_strategy: Option<String>,
    /// Fallback settings.
    pub fallback_config: Option<Value>,
    /// Usage tracking.
    pub usage_tracking: Option<bool>,
    /// Who.
    pub user: Option<String>,
}

/// Something bound to an endpoint (a scorer job, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointBinding {
    /// The endpoint.
    pub endpoint_id: String,
    /// `scorer`, ...
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub last_updated_at: i64,
}

fn definition_not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!(
        "GatewayModelDefinition not found (model_definition_id='{id}')"
    ))
}

fn endpoint_not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("GatewayEndpoint not found (endpoint_id='{id}')"))
}

const DEFINITION_COLUMNS: &str = "d.model_definition_id, d.name, d.secret_id, s.secret_name, \
     d.provider, d.model_name, d.created_at, d.last_updated_at";

fn definition_from_row(row: &sqlx::any::AnyRow, offset: usize) -> Result<ModelDefinition> {
    Ok(ModelDefinition {
        model_definition_id: row.try_get(offset)?,
        name: row.try_get(offset + 1)?,
        secret_id: row.try_get(offset + 2)?,
        secret_name: row.try_get(offset + 3)?,
        provider: row.try_get(offset + 4)?,
        model_name: row.try_get(offset + 5)?,
        created_at: row.try_get(offset + 6)?,
        last_updated_at: row.try_get(offset + 7)?,
    })
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, name, created_at, last_updated_at, created_by, \
     last_updated_by, routing_strategy, fallback_config, experiment_id, usage_tracking";

impl Store {
    /// Creates a model definition for an existing secret.
    pub async fn create_model_definition(
        &self,
        name: &str,
        secret_id: &str,
        provider: &str,
        model_name: &str,
        user: Option<&str>,
    ) -> Result<ModelDefinition> {
        self.get_secret(secret_id).await?;
        let id = format!("d-{}", uuid::Uuid::new_v4().simple());
        let now = ctflow_core::now_ms();
        let inserted = sqlx::query(
            "INSERT INTO gateway_model_definitions (model_definition_id, name, secret_id, provider, \
             model_name, created_at, last_updated_at, created_by, last_updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(secret_id)
        .bind(provider)
        .bind(model_name)
        .bind(now)
        .bind(user)
        .execute(&self.write)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(MlflowError::exists(format!(
                "Model definition with name '{name}' already exists"
            ))
            .into());
        }
        self.get_model_definition(&id).await
    }

    /// One model definition.
    pub async fn get_model_definition(&self, id: &str) -> Result<ModelDefinition> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEFINITION_COLUMNS} FROM gateway_model_definitions d \
             LEFT JOIN gateway_secrets s ON s.secret_id = d.secret_id WHERE d.model_definition_id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| definition_not_found(id))?;
        definition_from_row(&row, 0)
    }

    /// Every model definition, oldest first.
    pub async fn list_model_definitions(&self) -> Result<Vec<ModelDefinition>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEFINITION_COLUMNS} FROM gateway_model_definitions d \
             LEFT JOIN gateway_secrets s ON s.secret_id = d.secret_id ORDER BY d.created_at, d.model_definition_id"
        )))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| definition_from_row(r, 0)).collect()
    }

    /// Changes what an update names (name, secret, provider, model).
    pub async fn update_model_definition(
        &self,
        id: &str,
        name: Option<&str>,
        secret_id: Option<&str>,
        provider: Option<&str>,
        model_name: Option<&str>,
        user: Option<&str>,
    ) -> Result<ModelDefinition> {
        if let Some(secret) = secret_id {
            self.get_secret(secret).await?;
        }
        let updated = sqlx::query(
            "UPDATE gateway_model_definitions SET name = COALESCE($1, name), \
             secret_id = COALESCE($2, secret_id), provider = COALESCE($3, provider), \
             model_name = COALESCE($4, model_name), last_updated_at = $5, \
             last_updated_by = COALESCE($6, last_updated_by) WHERE model_definition_id = $7",
        )
        .bind(name)
        .bind(secret_id)
        .bind(provider)
        .bind(model_name)
        .bind(ctflow_core::now_ms())
        .bind(user)
        .bind(id)
        .execute(&self.write)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(definition_not_found(id).into());
        }
        self.get_model_definition(id).await
    }

    /// Deletes a model definition no endpoint uses.
    pub async fn delete_model_definition(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_endpoint_models WHERE model_definition_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if used > 0 {
            return Err(MlflowError::invalid(
                "Cannot delete model definition that is currently in use by endpoints. Detach it from all endpoints first.",
            )
            .into());
        }
        let deleted =
            sqlx::query("DELETE FROM gateway_model_definitions WHERE model_definition_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(definition_not_found(id).into());
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a secret; the model definitions that used it keep their place, without it.
    pub async fn delete_secret(&self, secret_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE gateway_model_definitions SET secret_id = NULL WHERE secret_id = $1")
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM gateway_secrets WHERE secret_id = $1")
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(secret_not_found(secret_id).into());
        }
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ endpoints

    async fn insert_mapping(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        endpoint_id: &str,
        config: &ModelConfig,
        now: i64,
    ) -> Result<String> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT model_definition_id FROM gateway_model_definitions WHERE model_definition_id = $1",
        )
        .bind(config.model_definition_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if found.is_none() {
            return Err(definition_not_found(&config.model_definition_id).into());
        }
        let mapping_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        // NB: mappings keep the order they were given in (created in one millisecond,
        // their times cannot tell).
        let position: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM gateway_endpoint_models WHERE endpoint_id = $1",
        )
        .bind(endpoint_id)
        .fetch_one(&mut **tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO gateway_endpoint_models (mapping_id, endpoint_id, model_definition_id, \
             linkage_type, weight, fallback_order, position, created_at) VALUES ($1, $2, $3, $4, $5, $6, $8, $7) \
             ON CONFLICT (endpoint_id, model_definition_id) DO NOTHING",
        )
        .bind(mapping_id.as_str())
        .bind(endpoint_id)
        .bind(config.model_definition_id.as_str())
        .bind(config.linkage_type.as_str())
        .bind(config.weight)
        .bind(config.fallback_order)
        .bind(now)
        .bind(position)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(MlflowError::exists(format!(
                "Model definition '{}' is already attached to endpoint '{endpoint_id}'",
                config.model_definition_id
            ))
            .into());
        }
        Ok(mapping_id)
    }

    /// Creates an endpoint with its models; with usage tracking, its usage goes to the
    /// experiment `gateway/<name>` (made when missing).
    pub async fn create_endpoint(&self, spec: &EndpointSpec) -> Result<Endpoint> {
        let name = spec
            .name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| MlflowError::missing_param("name"))?;
        let configs = spec.model_configs.clone().unwrap_or_default();
        if configs.is_empty() {
            return Err(MlflowError::invalid(
                "Endpoint must have at least one model configuration",
            )
            .into());
        }
        // NB: before the usage experiment is made, so that a taken name leaves none behind.
        let taken: Option<String> =
            sqlx::query_scalar("SELECT endpoint_id FROM gateway_endpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.read)
                .await?;
        if taken.is_some() {
            return Err(
                MlflowError::exists(format!("Endpoint with name '{name}' already exists")).into(),
            );
        }
        let tracking = spec.usage_tracking.unwrap_or(false);
        let experiment_id = if tracking {
            Some(self.usage_experiment(name).await?)
        } else {
            None
        };
        let id = format!("e-{}", uuid::Uuid::new_v4().simple());
        let now = ctflow_core::now_ms();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO gateway_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $3, $4, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO NOTHING"
        )))
        .bind(id.as_str())
        .bind(name)
        .bind(now)
        .bind(spec.user.as_deref())
        .bind(spec.routing_strategy.as_deref())
        .bind(spec.fallback_config.as_ref().map(Value::to_string))
        .bind(experiment_id)
        .bind(i64::from(tracking))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(
                MlflowError::exists(format!("Endpoint with name '{name}' already exists")).into(),
            );
        }
        for config in &configs {
            Self::insert_mapping(&mut tx, &id, config, now).await?;
        }
        tx.commit().await?;
        self.get_endpoint(&id).await
    }

    async fn usage_experiment(&self, endpoint_name: &str) -> Result<i64> {
        let name = format!("gateway/{endpoint_name}");
        match self.get_experiment_by_name(&name).await {
            Ok(experiment) => Ok(ctflow_core::ids::parse_experiment_id(
                &experiment.experiment_id,
            )?),
            Err(crate::Error::Mlflow(e))
                if e.code == ctflow_core::ErrorCode::ResourceDoesNotExist =>
            {
                let id = self.create_experiment(&name, None, &[]).await?;
                Ok(ctflow_core::ids::parse_experiment_id(&id)?)
            }
            Err(other) => Err(other),
        }
    }

    /// One endpoint with its models.
    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM gateway_endpoints WHERE endpoint_id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
        let mut endpoint = endpoint_from_row(&row)?;
        endpoint.model_mappings = self.mappings_of(id).await?;
        Ok(endpoint)
    }

    async fn mappings_of(&self, endpoint_id: &str) -> Result<Vec<ModelMapping>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT m.mapping_id, m.endpoint_id, m.weight, m.created_at, m.linkage_type, m.fallback_order, \
             {DEFINITION_COLUMNS} FROM gateway_endpoint_models m \
             JOIN gateway_model_definitions d ON d.model_definition_id = m.model_definition_id \
             LEFT JOIN gateway_secrets s ON s.secret_id = d.secret_id \
             WHERE m.endpoint_id = $1 ORDER BY m.position"
        )))
        .bind(endpoint_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let definition = definition_from_row(row, 6)?;
                Ok(ModelMapping {
                    mapping_id: row.try_get(0)?,
                    endpoint_id: row.try_get(1)?,
                    model_definition_id: definition.model_definition_id.clone(),
                    model_definition: definition,
                    weight: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    linkage_type: row.try_get(4)?,
                    fallback_order: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Every endpoint with its models, oldest first.
    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM gateway_endpoints ORDER BY created_at, endpoint_id"
        )))
        .fetch_all(&self.read)
        .await?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut endpoint = endpoint_from_row(row)?;
            endpoint.model_mappings = self.mappings_of(&endpoint.endpoint_id).await?;
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }

    /// Changes what an update names; given model configs replace the endpoint's models.
    pub async fn update_endpoint(&self, id: &str, spec: &EndpointSpec) -> Result<Endpoint> {
        let current = self.get_endpoint(id).await?;
        let experiment_id = match (spec.usage_tracking, &current.experiment_id) {
            (Some(true), None) => Some(
                self.usage_experiment(spec.name.as_deref().unwrap_or(&current.name))
                    .await?,
            ),
            _ => None,
        };
        let now = ctflow_core::now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE gateway_endpoints SET name = COALESCE($1, name), \
             routing_strategy = COALESCE($2, routing_strategy), \
             fallback_config = COALESCE($3, fallback_config), \
             usage_tracking = COALESCE($4, usage_tracking), experiment_id = COALESCE($5, experiment_id), \
             last_updated_at = $6, last_updated_by = COALESCE($7, last_updated_by) WHERE endpoint_id = $8",
        )
        .bind(spec.name.as_deref().filter(|n| !n.trim().is_empty()))
        .bind(spec.routing_strategy.as_deref())
        .bind(spec.fallback_config.as_ref().map(Value::to_string))
        .bind(spec.usage_tracking.map(i64::from))
        .bind(experiment_id)
        .bind(now)
        .bind(spec.user.as_deref())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(configs) = spec.model_configs.as_ref().filter(|c| !c.is_empty()) {
            sqlx::query("DELETE FROM gateway_endpoint_models WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for config in configs {
                Self::insert_mapping(&mut tx, id, config, now).await?;
            }
        }
        tx.commit().await?;
        self.get_endpoint(id).await
    }

    /// Deletes an endpoint with its mappings and bindings.
    pub async fn delete_endpoint(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM gateway_endpoints WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(endpoint_not_found(id).into());
        }
        for table in ["gateway_endpoint_models", "gateway_endpoint_bindings"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE endpoint_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Attaches one more model to an endpoint.
    pub async fn attach_model(
        &self,
        endpoint_id: &str,
        config: &ModelConfig,
    ) -> Result<ModelMapping> {
        self.get_endpoint(endpoint_id).await?;
        let mut tx = self.begin_write().await?;
        let mapping_id =
            Self::insert_mapping(&mut tx, endpoint_id, config, ctflow_core::now_ms()).await?;
        tx.commit().await?;
        self.mappings_of(endpoint_id)
            .await?
            .into_iter()
            .find(|m| m.mapping_id == mapping_id)
            .ok_or_else(|| endpoint_not_found(endpoint_id).into())
    }

    /// Detaches a model from an endpoint.
    pub async fn detach_model(&self, endpoint_id: &str, model_definition_id: &str) -> Result<()> {
        let deleted = sqlx::query(
            "DELETE FROM gateway_endpoint_models WHERE endpoint_id = $1 AND model_definition_id = $2",
        )
        .bind(endpoint_id)
        .bind(model_definition_id)
        .execute(&self.write)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "Model definition '{model_definition_id}' is not attached to endpoint '{endpoint_id}'"
            ))
            .into());
        }
        Ok(())
    }

    /// Binds a resource to an endpoint.
    pub async fn create_binding(
        &self,
        endpoint_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<EndpointBinding> {
        self.get_endpoint(endpoint_id).await?;
        let now = ctflow_core::now_ms();
        sqlx::query(
            "INSERT INTO gateway_endpoint_bindings (endpoint_id, resource_type, resource_id, created_at, last_updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (endpoint_id, resource_type, resource_id) \
             DO UPDATE SET last_updated_at = excluded.last_updated_at",
        )
        .bind(endpoint_id)
        .bind(resource_type)
        .bind(resource_id)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(EndpointBinding {
            endpoint_id: endpoint_id.to_string(),
            resource_type: resource_type.to_string(),
            resource_id: resource_id.to_string(),
            created_at: now,
            last_updated_at: now,
        })
    }

    /// Bindings, narrowed by any of endpoint, resource type and resource id.
    pub async fn list_bindings(
        &self,
        endpoint_id: Option<&str>,
        resource_type: Option<&str>,
        resource_id: Option<&str>,
    ) -> Result<Vec<EndpointBinding>> {
        let rows = sqlx::query(
            "SELECT endpoint_id, resource_type, resource_id, created_at, last_updated_at \
             FROM gateway_endpoint_bindings WHERE ($1 IS NULL OR endpoint_id = $1) \
             AND ($2 IS NULL OR resource_type = $2) AND ($3 IS NULL OR resource_id = $3) \
             ORDER BY created_at, endpoint_id, resource_id",
        )
        .bind(endpoint_id)
        .bind(resource_type)
        .bind(resource_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EndpointBinding {
                    endpoint_id: row.try_get(0)?,
                    resource_type: row.try_get(1)?,
                    resource_id: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    last_updated_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Removes a binding.
    pub async fn delete_binding(
        &self,
        endpoint_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<()> {
        let deleted = sqlx::query(
            "DELETE FROM gateway_endpoint_bindings WHERE endpoint_id = $1 AND resource_type = $2 AND resource_id = $3",
        )
        .bind(endpoint_id)
        .bind(resource_type)
        .bind(resource_id)
        .execute(&self.write)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No {resource_type} '{resource_id}' is bound to endpoint '{endpoint_id}'"
            ))
            .into());
        }
        Ok(())
    }
}

fn endpoint_from_row(row: &sqlx::any::AnyRow) -> Result<Endpoint> {
    let fallback: Option<String> = row.try_get(7)?;
    let experiment: Option<i64> = row.try_get(8)?;
    let tracking: i64 = row.try_get(9)?;
    Ok(Endpoint {
        endpoint_id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
        last_updated_at: row.try_get(3)?,
        model_mappings: Vec::new(),
        created_by: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
        last_updated_by: row.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
        routing_strategy: row.try_get(6)?,
        fallback_config: fallback.and_then(|f| serde_json::from_str(&f).ok()),
        experiment_id: experiment.map(|e| e.to_string()),
        usage_tracking: tracking != 0,
    })
}

/// What a provider call needs of a secret: its name (the seal is bound to it), the sealed
/// value and the provider settings beside it.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    /// The secret's name.
    pub secret_name: String,
    /// The sealed value.
    pub sealed: Sealed,
    /// Provider settings that are not secret (`api_base`, region, ...).
    pub auth_config: Option<Map<String, Value>>,
}

impl Store {
    /// An endpoint with its models, by name (what `gateway:/<name>` and the OpenAI-style
    /// `model` field name).
    pub async fn endpoint_by_name(&self, name: &str) -> Result<Endpoint> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT endpoint_id FROM gateway_endpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.read)
                .await?;
        let id = id.ok_or_else(|| {
            MlflowError::not_found(format!("GatewayEndpoint not found (name='{name}')"))
        })?;
        self.get_endpoint(&id).await
    }

    /// A secret's sealed value, for a provider call made on the server.
    pub async fn sealed_secret(&self, secret_id: &str) -> Result<SealedSecret> {
        let row = sqlx::query(
            "SELECT secret_name, wrapped_key, ciphertext, kek_version, auth_config \
             FROM gateway_secrets WHERE secret_id = $1",
        )
        .bind(secret_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| secret_not_found(secret_id))?;
        let kek_version: i64 = row.try_get(3)?;
        let auth: Option<String> = row.try_get(4)?;
        Ok(SealedSecret {
            secret_name: row.try_get(0)?,
            sealed: Sealed {
                wrapped_key: row.try_get(1)?,
                ciphertext: row.try_get(2)?,
                kek_version: u32::try_from(kek_version)
                    .map_err(|_| crate::Error::Corrupt(format!("kek_version {kek_version}")))?,
            },
            auth_config: auth.and_then(|a| serde_json::from_str(&a).ok()),
        })
    }
}
