//! The dashboard's sign-in: a session is an expiring API token in an HttpOnly,
//! SameSite=Strict cookie.

use super::*;

/// The dashboard's session cookie: an API token, HttpOnly and SameSite=Strict.
const SESSION_COOKIE: &str = "ctflow_session";
/// How long a dashboard sign-in lasts.
const SESSION_HOURS: i64 = 12;

/// The session token in the request's cookies, if any.
pub(super) fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

fn session_cookie(value: &str, max_age_secs: i64, headers: &HeaderMap) -> ApiResult<HeaderValue> {
    // NB: Secure only where the client reached us over TLS (a proxy says so); a cookie
    // marked Secure is never sent back over the plain HTTP of a laptop install.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    ))
    .map_err(|e| internal(e.to_string()).into())
}

/// `POST /api/ctflow/v1/session`: the dashboard's sign-in. A right password gets a
/// session token (an API token named "dashboard session" that expires) in an HttpOnly
/// cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddress>>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    let address = client.map(|Extension(client)| client.0.ip());
    let user = match check_password(&state, &auth, &username, password, address).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(unauthenticated("Incorrect username or password").into()),
        Err(refused) => return Ok(refused),
    };
    let (token, hash) = new_token()?;
    let expiry = ctflow_core::now_ms() + SESSION_HOURS * 3_600_000;
    state
        .store
        .create_token(user.id, "dashboard session", &hash, Some(expiry))
        .await?;
    let cookie = session_cookie(&token, SESSION_HOURS * 3600, &headers)?;
    tracing::info!(user = %user.username, "signed in to the dashboard");
    Ok((
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({"user": user_json(&user)})),
    )
        .into_response())
}

/// `GET /api/ctflow/v1/session`: whether the server has users, and who this browser is.
pub async fn session(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some(auth) = state.auth.clone() else {
        return Ok(axum::Json(json!({"auth": false})).into_response());
    };
    let user = authenticate(&state, &auth, &Method::GET, &headers, None)
        .await
        .ok();
    Ok(axum::Json(json!({"auth": true, "user": user.as_ref().map(user_json)})).into_response())
}

/// `DELETE /api/ctflow/v1/session`: signs out (the session token is deleted).
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    auth_of(&state)?;
    if !headers.contains_key(DASHBOARD_HEADER) {
        return Err(
            MlflowError::new(ErrorCode::PermissionDenied, "Sign out from the dashboard").into(),
        );
    }
    if let Some(token) = session_token(&headers) {
        state
            .store
            .delete_token_by_hash(&token_hash(&token))
            .await?;
    }
    let cookie = session_cookie("", 0, &headers)?;
    Ok(([(header::SET_COOKIE, cookie)], empty()).into_response())
}
