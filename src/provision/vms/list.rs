//! Reading VMs: one, a page, and the rendered-page cache the API answers lists from.

use super::*;

/// The VM with this id if the actor may see it; otherwise (or if the id is malformed) 404.
pub(crate) async fn load(p: &Provisioner, scope: &Scope, id: &str) -> Result<VmRow, AppError> {
    let vm_id = VmId::parse(id).ok_or_else(|| AppError::not_found("vm", id))?;
    db::vms::get(&p.db, scope, &vm_id)
        .await?
        .ok_or_else(|| AppError::not_found("vm", id))
}

/// One VM's view.
pub async fn get(p: &Provisioner, actor: &Principal, id: &str) -> Result<VmView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    let forwards = db::ports::for_vm(&p.db, &vm.id).await?;
    let mut view = Names::load(p).await?.view(p, &vm, &forwards);
    if vm.state == VmState::Running {
        view.guest = db::vm_samples::guest_info(&p.db, &vm.id)
            .await?
            .filter(|g| g.at >= vm.updated_at)
            .map(|g| GuestView {
                hostname: g.hostname,
                addresses: serde_json::from_str(&g.addresses).unwrap_or_default(),
                at: g.at,
            });
    }
    Ok(view)
}

/// Every VM the actor may see, newest first.
pub async fn list(
    p: &Provisioner,
    actor: &Principal,
    page: &PageRequest,
) -> Result<Page<VmView>, AppError> {
    search(p, actor, &db::vms::VmFilter::default(), page).await
}

/// The VMs the actor may see that pass the filter, newest first.
pub async fn search(
    p: &Provisioner,
    actor: &Principal,
    filter: &db::vms::VmFilter,
    page: &PageRequest,
) -> Result<Page<VmView>, AppError> {
    let vms = db::vms::filtered_page(&p.db, &actor.scope(), filter, page).await?;
    let ids: Vec<VmId> = vms.items.iter().map(|v| v.id.clone()).collect();
    let mut forwards: HashMap<VmId, Vec<Forward>> = HashMap::new();
    for (vm, guest_port, host_port) in db::ports::for_vms(&p.db, &ids).await? {
        forwards.entry(vm).or_default().push(Forward {
            guest_port,
            host_port,
        });
    }
    let names = Names::load(p).await?;
    Ok(vms.map(|vm| {
        names.view(
            p,
            &vm,
            forwards.get(&vm.id).map(Vec::as_slice).unwrap_or(&[]),
        )
    }))
}

/// A rendered page of the VM list and the cursor of the next.
pub(crate) type RenderedPage = (bytes::Bytes, Option<String>);

/// Rendered VM list pages by scope and page (see [`crate::view_cache`]).
pub type ListCache = crate::view_cache::ViewCache<RenderedPage>;

/// One page of the VMs the actor may see, as the JSON the API answers with, and the next
/// cursor; served from the cache when nothing the actor may see has changed since it was
/// rendered.
pub async fn list_json(
    p: &Provisioner,
    actor: &Principal,
    page: &PageRequest,
) -> Result<RenderedPage, AppError> {
    let scope = match actor.scope() {
        Scope::All => "*".to_string(),
        Scope::Tenant(t) => t.to_string(),
    };
    let key = format!("{scope}|{}|{:?}", page.limit, page.after);
    if let Some(version) = actor.view_version
        && let Some(hit) = p.list_cache.get(&key, version)
    {
        return Ok(hit);
    }
    let views = list(p, actor, page).await?;
    let body = bytes::Bytes::from(serde_json::to_vec(&views.items).map_err(anyhow::Error::from)?);
    let rendered = (body, views.next);
    if let Some(version) = actor.view_version {
        p.list_cache.put(key, version, rendered.clone());
    }
    Ok(rendered)
}
