//! Users, API tokens and per-user grants. Passwords arrive hashed (argon2, by the server)
//! and tokens as their SHA-256: the store never sees a secret.

use std::collections::HashMap;

use ctflow_core::auth::Permission;
use ctflow_core::{MlflowError, now_ms};

use crate::Store;
use crate::error::{Error, Result, is_unique_violation};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
    pub creation_time: i64,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub creation_time: i64,
    pub expiry_time: Option<i64>,
}

/// The kinds of resource a grant names (MLflow's `resource_type`).
pub const EXPERIMENT: &str = "experiment";
pub const REGISTERED_MODEL: &str = "registered_model";

type UserRow = (i64, String, i64, i64);

fn user_from(row: UserRow) -> User {
    User {
        id: row.0,
        username: row.1,
        is_admin: row.2 != 0,
        creation_time: row.3,
    }
}

fn no_user(username: &str) -> Error {
    MlflowError::not_found(format!("User with username={username} not found")).into()
}

fn one_user_changed(rows: u64, username: &str) -> Result<()> {
    if rows == 0 {
        Err(no_user(username))
    } else {
        Ok(())
    }
}

fn stored_permission(name: &str) -> Result<Permission> {
    Permission::parse(name).map_err(|_| Error::Corrupt(format!("unknown permission '{name}'")))
}

impl Store {
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<User> {
        let now = now_ms();
        let inserted: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, is_admin, creation_time) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(i64::from(is_admin))
        .bind(now)
        .fetch_one(&self.write)
        .await;
        match inserted {
            Ok(id) => Ok(User {
                id,
                username: username.to_string(),
                is_admin,
                creation_time: now,
            }),
            Err(e) if is_unique_violation(&e) => {
                Err(MlflowError::exists(format!("User '{username}' already exists")).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A user and their password hash.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let row: Option<(i64, String, i64, i64, String)> = sqlx::query_as(
            "SELECT id, username, is_admin, creation_time, password_hash FROM users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.read)
        .await?;
        Ok(row
            .map(|(id, name, admin, created, hash)| (user_from((id, name, admin, created)), hash)))
    }

    pub async fn get_user(&self, username: &str) -> Result<User> {
        self.user_with_hash(username)
            .await?
            .map(|(user, _)| user)
            .ok_or_else(|| no_user(username))
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, username, is_admin, creation_time FROM users ORDER BY username",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(user_from).collect())
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    pub async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(password_hash)
            .bind(username)
            .execute(&self.write)
            .await?;
        one_user_changed(done.rows_affected(), username)
    }

    pub async fn set_admin(&self, username: &str, is_admin: bool) -> Result<()> {
        let done = sqlx::query("UPDATE users SET is_admin = $1 WHERE username = $2")
            .bind(i64::from(is_admin))
            .bind(username)
            .execute(&self.write)
            .await?;
        one_user_changed(done.rows_affected(), username)
    }

    /// Deletes a user with their tokens and grants.
    pub async fn delete_user(&self, username: &str) -> Result<()> {
        let user = self.get_user(username).await?;
        let mut tx = self.begin_write().await?;
        for statement in [
            "DELETE FROM user_tokens WHERE user_id = $1",
            "DELETE FROM user_permissions WHERE user_id = $1",
        ] {
            sqlx::query(statement)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        expiry_time: Option<i64>,
    ) -> Result<TokenInfo> {
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO user_tokens (user_id, name, token_hash, creation_time, expiry_time) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .bind(expiry_time)
        .fetch_one(&self.write)
        .await?;
        Ok(TokenInfo {
            id,
            name: name.to_string(),
            creation_time: now,
            expiry_time,
        })
    }

    /// The user a token belongs to, if it exists and has not expired.
    pub async fn user_by_token(&self, token_hash: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT u.id, u.username, u.is_admin, u.creation_time FROM user_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND (t.expiry_time IS NULL OR t.expiry_time > $2)",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(user_from))
    }

    pub async fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>> {
        let rows: Vec<(i64, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, name, creation_time, expiry_time FROM user_tokens \
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, creation_time, expiry_time)| TokenInfo {
                id,
                name,
                creation_time,
                expiry_time,
            })
            .collect())
    }

    pub async fn delete_token(&self, user_id: i64, token_id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM user_tokens WHERE id = $1 AND user_id = $2")
            .bind(token_id)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!("Token {token_id} not found")).into());
        }
        Ok(())
    }

    /// Deletes the token with this hash (a signed-out session); whether one was there.
    pub async fn delete_token_by_hash(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM user_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets (or replaces) `user_id`'s permission on a resource.
    pub async fn grant(
        &self,
        resource_type: &str,
        resource_id: &str,
        user_id: i64,
        permission: Permission,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_permissions (resource_type, resource_id, user_id, permission) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (resource_type, resource_id, user_id) \
             DO UPDATE SET permission = excluded.permission",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(user_id)
        .bind(permission.as_str())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn revoke(&self, resource_type: &str, resource_id: &str, user_id: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM user_permissions \
             WHERE resource_type = $1 AND resource_id = $2 AND user_id = $3",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(user_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The permission granted to `user_id` on a resource, if any.
    pub async fn granted(
        &self,
        resource_type: &str,
        resource_id: &str,
        user_id: i64,
    ) -> Result<Option<Permission>> {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT permission FROM user_permissions \
             WHERE resource_type = $1 AND resource_id = $2 AND user_id = $3",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(user_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_deref().map(stored_permission).transpose()
    }

    /// Every grant of `user_id` on resources of one kind, by resource id.
    pub async fn grants_of(
        &self,
        user_id: i64,
        resource_type: &str,
    ) -> Result<HashMap<String, Permission>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT resource_id, permission FROM user_permissions \
             WHERE user_id = $1 AND resource_type = $2",
        )
        .bind(user_id)
        .bind(resource_type)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(id, name)| Ok((id, stored_permission(&name)?)))
            .collect()
    }

    /// Removes every grant on a deleted resource.
    pub async fn drop_grants(&self, resource_type: &str, resource_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM user_permissions WHERE resource_type = $1 AND resource_id = $2")
            .bind(resource_type)
            .bind(resource_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Moves a renamed registered model's grants to its new name.
    pub async fn rename_grants(&self, resource_type: &str, from: &str, to: &str) -> Result<()> {
        sqlx::query(
            "UPDATE user_permissions SET resource_id = $1 \
             WHERE resource_type = $2 AND resource_id = $3",
        )
        .bind(to)
        .bind(resource_type)
        .bind(from)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
