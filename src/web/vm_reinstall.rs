//! Reinstalling a VM from its page: a fresh disk of the chosen image, after the VM's name is
//! typed to confirm (everything on the old disk is lost).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::errors::WebError;
use super::form::Posted;
use super::vms::{after_action, vm_page};
use crate::app::AppState;
use crate::domain::secret::Secret;
use crate::provision::vms as service;

/// `POST /vms/{id}/reinstall`: replaces the VM's disk with a fresh one of the chosen image.
pub async fn reinstall(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let vm = service::get(&app.prov, &user.principal, &id).await?;
    if fields.get("confirm").trim() != vm.name {
        let message = format!(
            "Nothing was reinstalled: type the VM's name, {}, to confirm that its disk is wiped.",
            vm.name
        );
        return vm_page(
            &app,
            &user,
            &id,
            Some(message),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let password = fields.opt("root_password").map(Secret::new);
    let result = service::reinstall(
        &app.prov,
        &user.principal,
        &id,
        fields.get("image"),
        password.as_ref(),
    )
    .await;
    after_action(&app, &user, &id, result).await
}
