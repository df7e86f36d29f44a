//! MLflow's user and permission API (`AuthServiceClient` works against it) and ctflow's
//! API tokens.

use super::*;

pub(super) fn auth_of(state: &AppState) -> ApiResult<Arc<Auth>> {
    state.auth.clone().ok_or_else(|| {
        MlflowError::new(
            ErrorCode::EndpointNotFound,
            "Users and permissions need authentication: start the server with --auth",
        )
        .into()
    })
}

fn current(user: Option<Extension<CurrentUser>>) -> ApiResult<User> {
    user.map(|Extension(CurrentUser(user))| user)
        .ok_or_else(|| unauthenticated("You are not authenticated").into())
}

pub(super) fn user_json(user: &User) -> Value {
    json!({"id": user.id, "username": user.username, "is_admin": user.is_admin})
}

pub(super) fn empty() -> Response {
    axum::Json(json!({})).into_response()
}

pub async fn create_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    validate_username(&username)?;
    validate_password(&password)?;
    let hash = auth.passwords.hash(password).await?;
    let user = state.store.create_user(&username, &hash, false).await?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn get_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn current_user(
    State(state): State<AppState>,
    user: Option<Extension<CurrentUser>>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = current(user)?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn list_users(State(state): State<AppState>) -> ApiResult<Response> {
    auth_of(&state)?;
    let users: Vec<Value> = state
        .store
        .list_users()
        .await?
        .iter()
        .map(user_json)
        .collect();
    Ok(axum::Json(json!({"users": users})).into_response())
}

/// An admin sets anyone's password; a user changing their own gives the current one.
pub async fn update_password(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    p: Params,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let caller = current(caller)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    validate_password(&password)?;
    if !caller.is_admin {
        let given = p.str("current_password")?.unwrap_or_default();
        let (_, hash) = state
            .store
            .user_with_hash(&username)
            .await?
            .ok_or_else(|| ApiError::from(permission_denied()))?;
        let ok = auth
            .passwords
            .verify(hash, given)
            .await
            .map_err(|CheckerBusy| busy())?;
        if !ok {
            return Err(MlflowError::invalid("The current password is incorrect").into());
        }
    }
    let hash = auth.passwords.hash(password).await?;
    state.store.set_password_hash(&username, &hash).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn update_admin(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let is_admin = p
        .bool("is_admin")?
        .ok_or_else(|| ApiError::from(MlflowError::missing_param("is_admin")))?;
    state.store.set_admin(&username, is_admin).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn delete_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    state.store.delete_user(&p.req_str("username")?).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn grant_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let id = resource_key(kind, &p.req_str("resource_id")?);
    let permission = Permission::parse(&p.req_str("permission")?)?;
    state.store.grant(kind, &id, user.id, permission).await?;
    Ok(empty())
}

pub async fn revoke_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let id = resource_key(kind, &p.req_str("resource_id")?);
    state.store.revoke(kind, &id, user.id).await?;
    Ok(empty())
}

/// What a user may do on a resource, resolved as a request would be.
pub async fn get_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let permission = permission_of(&state, &auth, &user, kind, &p.req_str("resource_id")?).await?;
    Ok(axum::Json(json!({
        "allowed": permission.allows(Need::Read),
        "permission": permission.as_str(),
    }))
    .into_response())
}

// ------------------------------------------------------------ API tokens

fn token_json(token: &ctflow_store::auth::TokenInfo) -> Value {
    json!({
        "id": token.id.to_string(),
        "name": token.name,
        "creation_time": token.creation_time,
        "expiry_time": token.expiry_time,
    })
}

/// `POST /api/ctflow/v1/tokens {name, expires_in_days?}`: a token for the caller,
/// shown once.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    p: Params,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let name = p.str("name")?.unwrap_or_else(|| "token".into());
    if name.len() > 256 {
        return Err(MlflowError::invalid("Token names may have at most 256 bytes").into());
    }
    let expiry = match p.i64("expires_in_days")? {
        Some(days) if (1..=3650).contains(&days) => Some(ctflow_core::now_ms() + days * 86_400_000),
        Some(days) => {
            return Err(MlflowError::invalid(format!(
                "expires_in_days must be between 1 and 3650, got {days}"
            ))
            .into());
        }
        None => None,
    };
    let (token, hash) = new_token()?;
    let info = state
        .store
        .create_token(caller.id, &name, &hash, expiry)
        .await?;
    Ok(axum::Json(json!({"token": token, "token_info": token_json(&info)})).into_response())
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let tokens: Vec<Value> = state
        .store
        .list_tokens(caller.id)
        .await?
        .iter()
        .map(token_json)
        .collect();
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}

pub async fn delete_token(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::from(MlflowError::invalid(format!("Invalid token id '{id}'"))))?;
    state.store.delete_token(caller.id, id).await?;
    Ok(StatusCode::OK.into_response())
}
