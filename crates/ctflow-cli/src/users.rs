//! `ctflow users ...`: the first admin of a server started with `--auth` (written straight
//! into the store, so it works before the server runs), and API tokens for the signed-in
//! user.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;

use crate::commands::{print_json, text};
use crate::services::StoreArgs;
use crate::{ClientArgs, OutputFormat};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create an admin in the store (the first one, or to recover access). The password
    /// comes from standard input with --password-stdin, else from CTFLOW_ADMIN_PASSWORD.
    CreateAdmin {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create an API token for the user signed in through MLFLOW_TRACKING_USERNAME /
    /// MLFLOW_TRACKING_PASSWORD; it is shown once. Use it as MLFLOW_TRACKING_TOKEN.
    CreateToken {
        #[arg(long, default_value = "token")]
        name: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: UsersCommand) -> Result<()> {
    match command {
        UsersCommand::CreateAdmin {
            username,
            password_stdin,
            store,
        } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the password from standard input")?;
                text.trim_end_matches(['\r', '\n']).to_string()
            } else {
                match std::env::var("CTFLOW_ADMIN_PASSWORD") {
                    Ok(password) => password,
                    Err(_) => bail!(
                        "give the password on standard input with --password-stdin, or in CTFLOW_ADMIN_PASSWORD"
                    ),
                }
            };
            let store = store.open().await?;
            let user = create_admin(&store, &username, &password).await?;
            println!("Created admin '{}' (id {})", user.username, user.id);
            store.close().await;
            Ok(())
        }
        UsersCommand::CreateToken {
            name,
            expires_in_days,
            client,
        } => {
            let http = crate::client::connect(&client.tracking_uri)?;
            let mut body = json!({ "name": name });
            if let Some(days) = expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            let created = http
                .send_path(reqwest::Method::POST, "/api/ctflow/v1/tokens", &body)
                .await?;
            match client.output {
                OutputFormat::Json => print_json(&created)?,
                OutputFormat::Table => {
                    println!("{}", text(&created, "token"));
                    eprintln!(
                        "Token '{}' created; it is not shown again. Use it as MLFLOW_TRACKING_TOKEN.",
                        text(&created["token_info"], "name")
                    );
                }
            }
            Ok(())
        }
    }
}

/// Checks and hashes the password, then stores the user as an admin.
pub async fn create_admin(
    store: &ctflow_store::Store,
    username: &str,
    password: &str,
) -> Result<ctflow_store::auth::User> {
    ctflow_core::auth::validate_username(username).map_err(|e| anyhow::anyhow!(e.message))?;
    ctflow_core::auth::validate_password(password).map_err(|e| anyhow::anyhow!(e.message))?;
    let hash =
        ctflow_server::auth::hash_password(password).map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(store.create_user(username, &hash, true).await?)
}

/// The user `ctflow up --auth` runs its own jobs and serving as.
pub(crate) const SERVICE_USER: &str = "ctflow-services";
const SERVICE_TOKEN_NAME: &str = "ctflow up";

/// The admin this installation's own services act as, made on first use.
pub(crate) async fn service_user(store: &ctflow_store::Store) -> Result<ctflow_store::auth::User> {
    Ok(match store.user_with_hash(SERVICE_USER).await? {
        Some((user, _)) => user,
        None => {
            let (password, _) = ctflow_server::auth::new_token()
                .map_err(|e| anyhow::anyhow!("cannot make a password: {}", e.message))?;
            create_admin(store, SERVICE_USER, &password).await?
        }
    })
}

/// A fresh API token for `ctflow up`'s workers and serving supervisor, which call the
/// server over HTTP like any client. Their user is an admin nobody signs in as (its
/// password is random and never shown); the tokens of earlier starts are revoked.
pub(crate) async fn service_token(store: &ctflow_store::Store) -> Result<String> {
    let user = service_user(store).await?;
    for token in store.list_tokens(user.id).await? {
        if token.name == SERVICE_TOKEN_NAME {
            store.delete_token(user.id, token.id).await?;
        }
    }
    let (token, hash) = ctflow_server::auth::new_token()
        .map_err(|e| anyhow::anyhow!("cannot make a token: {}", e.message))?;
    let month = 30 * 86_400_000;
    store
        .create_token(
            user.id,
            SERVICE_TOKEN_NAME,
            &hash,
            Some(ctflow_core::now_ms() + month),
        )
        .await?;
    Ok(token)
}
