//! Creating a VM: checking the request, choosing the tenant and host, reserving quota,
//! capacity and ports in one transaction, and starting the create operation.

use super::*;
use crate::domain::ids::TenantId;

/// Checked fields of a create request.
pub(crate) struct CheckedCreate {
    name: VmName,
    ssh_keys: Vec<String>,
    user_data: Option<String>,
    ports: Vec<u16>,
    root_password: Option<crate::domain::secret::Secret>,
    host_labels: Vec<String>,
}

/// What is wrong with a root password: 10 to 1024 characters, no NUL or line breaks (it is
/// typed at a login prompt).
pub(crate) fn check_root_password(pw: &crate::domain::secret::Secret) -> Vec<Invalid> {
    let pw = pw.expose();
    let mut errors = Vec::new();
    let chars = pw.chars().count();
    if !(10..=1024).contains(&chars) {
        errors.push(Invalid::new(
            "root_password",
            format!("is {chars} characters; use 10 to 1024"),
        ));
    }
    if pw.contains(['\0', '\r', '\n']) {
        errors.push(Invalid::new(
            "root_password",
            "may not contain NUL or line breaks (it is typed at a login prompt)",
        ));
    }
    errors
}

/// Checks every field that needs no database, collecting all the problems at once.
pub(crate) fn check_create_fields(
    p: &Provisioner,
    req: &CreateVm,
) -> Result<CheckedCreate, AppError> {
    let mut errors: Vec<Invalid> = Vec::new();
    let name = VmName::parse(&req.name).map_err(|e| errors.push(e)).ok();
    if req.ssh_keys.len() > ssh::MAX_KEYS {
        errors.push(Invalid::new(
            "ssh_keys",
            format!("at most {} keys", ssh::MAX_KEYS),
        ));
    }
    let ssh_keys: Vec<String> = req
        .ssh_keys
        .iter()
        .filter_map(|k| SshPublicKey::parse(k).map_err(|e| errors.push(e)).ok())
        .map(|k| k.as_str().to_string())
        .collect();
    if let Some(ud) = &req.user_data {
        if ud.len() > MAX_USER_DATA {
            errors.push(Invalid::new(
                "user_data",
                format!(
                    "is {} bytes; at most {MAX_USER_DATA} are accepted",
                    ud.len()
                ),
            ));
        }
        if ud.contains('\0') {
            errors.push(Invalid::new("user_data", "may not contain NUL characters"));
        }
    }
    if let Some(pw) = &req.root_password {
        errors.extend(check_root_password(pw));
    }
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for &port in &req.ports {
        match u16::try_from(port) {
            Ok(p) if p > 0 && seen.insert(p) => ports.push(p),
            Ok(p) if p > 0 => {
                errors.push(Invalid::new("ports", format!("port {p} is listed twice")))
            }
            _ => errors.push(Invalid::new(
                "ports",
                format!("{port} is not a TCP port: use 1 to 65535"),
            )),
        }
    }
    if req.ports.len() > MAX_PORTS {
        errors.push(Invalid::new(
            "ports",
            format!("at most {MAX_PORTS} ports may be forwarded"),
        ));
    }
    if !req.ports.is_empty() && p.settings.network.mode == crate::config::NetworkMode::Bridge {
        errors.push(Invalid::new(
            "ports",
            "port forwards exist only in network mode \"user\"; bridged guests are reachable directly",
        ));
    }
    let host_labels = crate::domain::host::labels("host_labels", &req.host_labels)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if req.pool.is_none() && req.pool_port.is_some() {
        errors.push(Invalid::new(
            "pool_port",
            "pool_port is for joining a pool; give pool too, or leave pool_port out",
        ));
    }
    match name {
        Some(name) if errors.is_empty() => Ok(CheckedCreate {
            name,
            ssh_keys,
            user_data: req.user_data.clone().filter(|s| !s.is_empty()),
            ports,
            root_password: req.root_password.clone(),
            host_labels,
        }),
        _ => Err(AppError::Invalid(errors)),
    }
}

/// What a new VM asks of its host.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostWants<'a> {
    /// Labels the host must have.
    pub labels: &'a [String],
    /// The pool the VM joins: its members are spread over hosts when they can be.
    pub pool: Option<&'a crate::domain::ids::PoolId>,
    /// A host it must not go to (the one a move leaves).
    pub exclude: Option<&'a crate::domain::ids::HostId>,
}

/// Picks an active host that has the labels asked for and room for `need`, inside the write
/// transaction (so two creates cannot both take the last room, in any process): the one with
/// the fewest members of the VM's pool, then by policy the most free memory (`spread`) or the
/// least that still fits (`pack`). If none fits, says why.
pub(crate) async fn place(
    tx: &mut WriteTx,
    need: Resources,
    wants: HostWants<'_>,
    policy: crate::config::Placement,
) -> Result<db::hosts::HostRow, AppError> {
    use crate::config::Placement;
    use crate::domain::host::HostState;
    let hosts = db::hosts::list(&mut *tx).await?;
    let mut best: Option<((i64, i64), db::hosts::HostRow)> = None;
    let mut short: Option<Shortfall> = None;
    let (mut not_active, mut unlabelled) = (0, 0);
    for host in hosts {
        if host.state != HostState::Active || wants.exclude == Some(&host.id) {
            not_active += 1;
            continue;
        }
        let labels = host.labels();
        if !wants.labels.iter().all(|l| labels.contains(l)) {
            unlabelled += 1;
            continue;
        }
        let total = capacity::sellable(host.physical(), host.overcommit());
        let used = db::hosts::allocated(tx, &host.id).await?;
        if let Err(e) = capacity::check_fits(&host.name, total, used, need) {
            short = Some(e);
            continue;
        }
        let peers = match wants.pool {
            Some(pool) => db::pools::members_on_host(tx, pool, &host.id).await?,
            None => 0,
        };
        let free = total.memory_mib.saturating_sub(used.memory_mib) as i64;
        let key = match policy {
            Placement::Spread => (peers, -free),
            Placement::Pack => (peers, free),
        };
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, host));
        }
    }
    if let Some((_, host)) = best {
        return Ok(host);
    }
    if let Some(e) = short {
        return Err(e.into());
    }
    if unlabelled > 0 {
        return Err(AppError::invalid(
            "host_labels",
            format!(
                "no active host has every label of {:?}; GET /api/v1/hosts shows each host's labels",
                wants.labels
            ),
        ));
    }
    if not_active > 0 {
        return Err(AppError::Conflict(
            "no host takes new VMs now: every host is in maintenance or unreachable; try again later".into(),
        ));
    }
    Err(AppError::Conflict(
        "no host is registered; start carve serve against libvirt first".into(),
    ))
}

/// Creates a VM: answers at once with the VM (state `creating`) and its operation.
pub async fn create(
    p: &Arc<Provisioner>,
    actor: &Principal,
    req: CreateVm,
) -> Result<(VmView, OperationView), AppError> {
    let checked = check_create_fields(p, &req)?;
    // Hashed off the async threads, and before the write transaction holds the database.
    let root_password_hash = match &checked.root_password {
        Some(pw) => Some(crate::provision::crypt::hash_off_thread(pw).await?),
        None => None,
    };
    let tenant =
        crate::tenancy::principal::owning_tenant(&p.db, actor, req.tenant_id.as_deref(), "VMs")
            .await?;
    let (plan, image) = plan_and_image(&p.db, &req.plan, &req.image, actor.is_admin()).await?;
    let mut tx = db::begin_write(&p.db).await?;
    let joins = match &req.pool {
        Some(pool) => Some(
            crate::pools::members::check_join(
                &mut tx,
                &tenant,
                pool,
                req.pool_port,
                &checked.ports,
            )
            .await?,
        ),
        None => None,
    };
    let (vm_id, op) = admit(
        p,
        &mut tx,
        Admission {
            tenant: &tenant,
            name: checked.name.as_str(),
            plan: &plan,
            image: &image,
            ssh_keys: &checked.ssh_keys,
            user_data: checked.user_data.as_deref(),
            ports: &checked.ports,
            host: HostWants {
                labels: &checked.host_labels,
                pool: joins.as_ref().map(|(pool, _)| pool),
                exclude: None,
            },
        },
    )
    .await?;
    if let Some((pool, port)) = &joins {
        crate::pools::members::join_new_vm(&mut tx, pool, &vm_id, *port).await?;
    }
    tx.commit().await?;
    // In memory before the operation starts, so its seed step finds it.
    if let Some(hash) = root_password_hash {
        p.root_password_hashes.put(&op.id, hash);
    }
    p.spawn_operation(op.id.clone(), None);
    let view = get(p, actor, vm_id.as_str()).await?;
    Ok((view, OperationView::from(&op)))
}

/// The image with this name or id, if it is usable and offered: hidden images only to admins.
pub(crate) async fn offered_image(
    db: &db::Db,
    image: &str,
    admin: bool,
) -> Result<db::images::ImageRow, AppError> {
    db::images::find(db, image)
        .await?
        .filter(|i| i.available && i.removed_at.is_none() && (i.visible || admin))
        .ok_or_else(|| {
            AppError::invalid(
                "image",
                format!("no image is named {image:?}; GET /api/v1/images lists them"),
            )
        })
}

/// The plan and image a create names, checked to fit each other; `admin` may use hidden
/// images.
pub(crate) async fn plan_and_image(
    db: &db::Db,
    plan: &str,
    image: &str,
    admin: bool,
) -> Result<(db::plans::PlanRow, db::images::ImageRow), AppError> {
    let plan_row = db::plans::find(db, plan).await?.ok_or_else(|| {
        AppError::invalid(
            "plan",
            format!("no plan is named {plan:?}; GET /api/v1/plans lists them"),
        )
    })?;
    let image_row = offered_image(db, image, admin).await?;
    let need = plan_row.resources();
    let image_gib = (image_row.virtual_size_bytes as u64).div_ceil(1 << 30);
    if need.disk_gib < image_gib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has a {} GiB disk but image {} needs {image_gib} GiB",
                plan_row.name, need.disk_gib, image_row.name
            ),
        ));
    }
    if (need.memory_mib as i64) < image_row.min_memory_mib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has {} MiB of memory but image {} needs {} MiB",
                plan_row.name, need.memory_mib, image_row.name, image_row.min_memory_mib
            ),
        ));
    }
    Ok((plan_row, image_row))
}

/// A new VM, checked, about to be admitted.
pub(crate) struct Admission<'a> {
    pub tenant: &'a TenantId,
    pub name: &'a str,
    pub plan: &'a db::plans::PlanRow,
    pub image: &'a db::images::ImageRow,
    pub ssh_keys: &'a [String],
    pub user_data: Option<&'a str>,
    pub ports: &'a [u16],
    pub host: HostWants<'a>,
}

/// Inside the write transaction: reserves quota, host capacity and forwarded ports for a new
/// VM and records it with its create operation (started by the caller after the commit).
pub(crate) async fn admit(
    p: &Provisioner,
    tx: &mut WriteTx,
    a: Admission<'_>,
) -> Result<(VmId, OperationRow), AppError> {
    let need = a.plan.resources();
    let vm_id = VmId::generate();
    let domain_name = format!("carve-{vm_id}");
    let wanted = Usage {
        vms: 1,
        vcpus: i64::from(need.vcpus),
        memory_mib: need.memory_mib as i64,
        disk_gib: need.disk_gib as i64,
        ..Usage::default()
    };
    if !db::images::is_usable(&mut *tx, a.image.id.as_str()).await? {
        return Err(AppError::Conflict(format!(
            "image {} was removed a moment ago; choose another image",
            a.image.name
        )));
    }
    check_quota(tx, &p.settings.default_quota, a.tenant, wanted).await?;
    let host = place(tx, need, a.host, p.settings.placement).await?;
    let host_id = host.id.clone();
    let inserted = db::vms::insert(
        tx,
        NewVm {
            id: &vm_id,
            tenant_id: a.tenant,
            name: a.name,
            host_id: &host_id,
            plan_id: &a.plan.id,
            image_id: &a.image.id,
            resources: need,
            ssh_keys: a.ssh_keys,
            user_data: a.user_data,
            domain_name: &domain_name,
        },
    )
    .await;
    if let Err(e) = inserted {
        return Err(if db::is_unique_violation(&e) {
            AppError::Conflict(format!(
                "a VM named {} already exists in this tenant; choose another name or delete it first",
                a.name
            ))
        } else {
            e.into()
        });
    }
    let (address, range) = p.settings.forwards_of(&host);
    let probe = p.settings.port_probe(&host, address);
    db::ports::allocate(tx, &host_id, &vm_id, a.ports, range, probe)
        .await
        .map_err(|e| match e {
            AllocateError::Exhausted(_) => AppError::Conflict(e.to_string()),
            AllocateError::Db(e) => e.into(),
        })?;
    let op = db::operations::insert(
        tx,
        a.tenant,
        OpKind::Create,
        "vm",
        vm_id.as_str(),
        &serde_json::json!({}),
    )
    .await?;
    tracing::info!(vm = %vm_id, name = %a.name, tenant = %a.tenant, plan = %a.plan.name, image = %a.image.name, "VM admitted");
    Ok((vm_id, op))
}
