//! `/v1/tasks`, `/v1/groups` and `/v1/settings`: admins (the publisher
//! role) create, list, show and cancel tasks, keep groups and set settings.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Json, http::StatusCode};
use ferry_net::api::{ErrorCode, Role};
use ferry_net::settings::{SettingsChange, SettingsView};
use ferry_net::tasks::{
    GroupChange, GroupInfo, GroupSpec, Task, TaskCreated, TaskDetail, TaskSpec, TaskSummary,
    valid_task_id,
};

use crate::HubState;
use crate::tasks::TaskRefusal;

use super::{ApiError, Caller};

fn refusal(r: TaskRefusal) -> ApiError {
    match r {
        TaskRefusal::Invalid(m) => ApiError::bad_request(m),
        TaskRefusal::NotFound(m) => ApiError::not_found(m),
    }
}

/// Runs `work` to its end even if the client goes away: a change kept in
/// the catalog is also signed and made current for check-ins, never left
/// half done by a dropped request.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, crate::HubError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::internal(format!("the change stopped: {e}")))?
        .map_err(ApiError::from)
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if valid_task_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{id:?} is not a task id (t and a number, as `ferry task list` shows)"
        )))
    }
}

/// `POST /v1/tasks`.
pub(crate) async fn create(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Json(spec): Json<TaskSpec>,
) -> Result<(StatusCode, Json<TaskCreated>), ApiError> {
    caller.require(&[Role::Publisher], "creating tasks")?;
    let by = caller.0.id.clone();
    let created = to_the_end(async move { state.create_task(spec, &by).await })
        .await?
        .map_err(refusal)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/tasks`.
pub(crate) async fn list(
    State(state): State<Arc<HubState>>,
    caller: Caller,
) -> Result<Json<Vec<TaskSummary>>, ApiError> {
    caller.require(&[Role::Publisher], "listing tasks")?;
    Ok(Json(state.task_summaries().await?))
}

/// `GET /v1/tasks/{id}`.
pub(crate) async fn show(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    caller.require(&[Role::Publisher], "reading tasks")?;
    check_id(&id)?;
    state.task_detail(&id).await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no task {id}; see `ferry task list`"),
        )
    })
}

/// `DELETE /v1/tasks/{id}`: cancels.
pub(crate) async fn cancel(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    caller.require(&[Role::Publisher], "cancelling tasks")?;
    check_id(&id)?;
    let cancelled = to_the_end(async move { state.cancel_task(&id).await }).await?;
    Ok(Json(cancelled.map_err(refusal)?))
}

/// `POST /v1/groups`.
pub(crate) async fn create_group(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Json(spec): Json<GroupSpec>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    caller.require(&[Role::Publisher], "creating groups")?;
    let info = state.create_group(spec).await?.map_err(refusal)?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/groups`.
pub(crate) async fn list_groups(
    State(state): State<Arc<HubState>>,
    caller: Caller,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    caller.require(&[Role::Publisher], "listing groups")?;
    Ok(Json(state.groups().await?))
}

/// `POST /v1/groups/{name}`.
pub(crate) async fn change_group(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(change): Json<GroupChange>,
) -> Result<Json<GroupInfo>, ApiError> {
    caller.require(&[Role::Publisher], "changing groups")?;
    let changed = to_the_end(async move { state.change_group(&name, change).await }).await?;
    Ok(Json(changed.map_err(refusal)?))
}

/// `?agent=ID` of `GET /v1/settings`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SettingsQuery {
    agent: Option<String>,
}

/// `GET /v1/settings`.
pub(crate) async fn settings(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<SettingsQuery>,
) -> Result<Json<SettingsView>, ApiError> {
    caller.require(&[Role::Publisher], "reading settings")?;
    let Some(agent) = query.agent else {
        return Ok(Json(state.settings_view().await?));
    };
    state
        .settings_for_agent(&agent)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no agent {agent:?} is enrolled; `ferry agent status` on the machine shows its id"
            ))
        })
}

/// `POST /v1/settings`.
pub(crate) async fn change_settings(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Json(change): Json<SettingsChange>,
) -> Result<Json<SettingsView>, ApiError> {
    caller.require(&[Role::Publisher], "changing settings")?;
    let by = caller.0.id.clone();
    let changed = to_the_end(async move { state.change_settings(change, &by).await }).await?;
    Ok(Json(changed.map_err(refusal)?))
}
