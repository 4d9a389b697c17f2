//! Composes the process: settings, telemetry, store, the services and the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use payouts_gateway::Gateway;
use payouts_runtime::authz::Identities;
use payouts_runtime::config::Role;
use payouts_runtime::grpc::{self, GrpcServer};
use payouts_runtime::shutdown::{Shutdown, ShutdownTrigger};
use payouts_runtime::tls::{MutualTls, component_identity};
use payouts_runtime::{ServiceContext, ServiceName, Settings, Store};

use crate::cli::Mode;

/// The role the settings are checked for.
fn role_of(mode: &Mode) -> Role {
    match mode {
        Mode::All => Role::AllInOne,
        Mode::Gateway => Role::Gateway,
        Mode::Service(service) => Role::Service(*service),
    }
}

/// `payouts config check`: the effective configuration, secrets redacted, on stdout; an
/// error (the setting named) when the process would refuse to start with it.
pub fn config_check(role: &crate::cli::Role) -> anyhow::Result<()> {
    let role = match role {
        crate::cli::Role::All => Role::AllInOne,
        crate::cli::Role::Gateway => Role::Gateway,
        crate::cli::Role::Service(service) => Role::Service(*service),
        crate::cli::Role::Unknown(name) => anyhow::bail!(
            "cannot check the configuration for {name:?}: say all, gateway or a service ({})",
            ServiceName::ALL
                .iter()
                .map(|service| service.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let settings = Settings::from_process_env()?;
    println!("{settings:#?}");
    settings.check_role(role)?;
    if let Some(tls) = load_mutual_tls(&settings, role)? {
        println!("mutual TLS: this component is {:?}", tls.own_names());
    }
    if role == Role::AllInOne
        && let Some(reason) = settings.webhooks_unready_reason()
    {
        println!("warning: the webhooks service will report NOT_SERVING: {reason}");
    }
    println!("configuration OK for {role:?}");
    Ok(())
}

/// Runs the process until SIGTERM or Ctrl-C.
pub async fn run(mode: Mode) -> anyhow::Result<()> {
    let settings = Settings::from_process_env()?;
    settings.check_role(role_of(&mode))?;
    let telemetry_name = match &mode {
        Mode::All => "payouts".to_owned(),
        Mode::Service(service) => format!("payouts-{service}"),
        Mode::Gateway => "payouts-gateway".to_owned(),
    };
    let _telemetry = payouts_runtime::telemetry::init(&settings, &telemetry_name)?;
    let (shutdown, trigger) = Shutdown::on_signals();

    // Bind first, so a port in use is reported before anything else starts.
    let grpc_listener = match mode {
        Mode::All | Mode::Service(_) => Some(grpc::bind(settings.grpc_addr, "GRPC_ADDR").await?),
        Mode::Gateway => None,
    };
    let gateway_listener = match mode {
        Mode::All | Mode::Gateway => Some(grpc::bind(settings.gateway_addr, "GATEWAY_ADDR").await?),
        Mode::Service(_) => None,
    };
    let metrics_listener = match settings.metrics_addr {
        Some(addr) => Some(grpc::bind(addr, "METRICS_ADDR").await?),
        None => None,
    };

    let health_listener = match (settings.grpc_health_addr, &grpc_listener) {
        (Some(addr), Some(_)) => Some(grpc::bind(addr, "GRPC_HEALTH_ADDR").await?),
        _ => None,
    };

    let mut settings = settings;
    settings.mutual_tls = load_mutual_tls(&settings, role_of(&mode))?;
    if let Some(tls) = &settings.mutual_tls {
        tls.spawn_reloader(shutdown.clone());
        announce(&format!(
            "gRPC over mutual TLS as {:?} (certificates read again every {:?})",
            tls.own_names(),
            payouts_runtime::tls::RELOAD_INTERVAL
        ));
    }
    if let (Mode::All, Some(listener)) = (&mode, &grpc_listener) {
        settings = settings.with_local_services(listener.local_addr()?);
    }
    let settings = Arc::new(settings);

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = metrics_listener {
        let handle = crate::metrics::install()?;
        announce(&format!(
            "metrics at http://{}/metrics",
            local_addr(&listener)?
        ));
        let shutdown = shutdown.clone();
        tasks.spawn(async move { crate::metrics::serve(listener, handle, shutdown).await });
    }
    if let Some(listener) = grpc_listener {
        let store = Store::connect(&settings).await?;
        let context = ServiceContext::new(Arc::clone(&settings), store.clone(), shutdown.clone());
        let services = match &mode {
            Mode::Service(service) => vec![*service],
            _ => ServiceName::ALL.to_vec(),
        };
        let mut server = GrpcServer::new();
        server.set_readiness(context.readiness.clone());
        server.set_reflection(settings.grpc_reflection);
        server.set_max_connections_per_peer(settings.grpc_max_connections_per_peer);
        if let Some(tls) = &settings.mutual_tls {
            server.set_mutual_tls(
                Arc::clone(tls),
                Identities::new(&settings.grpc_platform_identities),
            );
        }
        if let Some(listener) = health_listener {
            announce(&format!(
                "gRPC health (plaintext, health only) on {}",
                local_addr(&listener)?
            ));
            server.set_health_listener(listener);
        }
        for service in &services {
            mount(*service, &context, &mut server).await?;
        }
        settings.in_process.connect(server.local_service());
        announce(&format!(
            "gRPC services [{}] listening on {}",
            services
                .iter()
                .copied()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            local_addr(&listener)?,
        ));
        announce(&format!("store: {}", store.describe()));
        let in_process = settings.in_process.services();
        if !in_process.is_empty() {
            announce(&format!(
                "calls to [{}] stay in process (no socket)",
                in_process
                    .iter()
                    .copied()
                    .map(ServiceName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let shutdown = shutdown.clone();
        tasks.spawn(async move { server.serve(listener, store, shutdown).await });
    }
    if let Some(listener) = gateway_listener {
        announce(&format!(
            "gateway listening on http://{}",
            local_addr(&listener)?
        ));
        let gateway = Gateway::new(Arc::clone(&settings))?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { gateway.serve(listener, shutdown).await });
    }
    wait_for_servers(tasks, shutdown, trigger, settings.shutdown_grace).await
}

/// Loads `GRPC_TLS_*` when set, and checks that the certificate names the component that
/// runs (`payouts-<service>`, `payouts-gateway`; all in one, any of them).
fn load_mutual_tls(settings: &Settings, role: Role) -> anyhow::Result<Option<Arc<MutualTls>>> {
    let Some(files) = &settings.grpc_tls else {
        return Ok(None);
    };
    let tls = MutualTls::load(files)?;
    let wanted = match role {
        Role::AllInOne => None,
        Role::Gateway => Some(component_identity("gateway")),
        Role::Service(service) => Some(component_identity(service.as_str())),
    };
    if let Some(wanted) = wanted
        && !tls.own_names().contains(&wanted)
    {
        anyhow::bail!(
            "invalid setting GRPC_TLS_CERT_FILE: the certificate names {:?}, but this component is {wanted:?}: its callers would refuse it",
            tls.own_names()
        );
    }
    Ok(Some(tls))
}

/// Waits for every server to finish. If one fails, the others are shut down too; after the
/// grace period in-flight requests are abandoned.
async fn wait_for_servers(
    mut tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: Shutdown,
    trigger: ShutdownTrigger,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let mut first_error = None;
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            let result = joined
                .map_err(anyhow::Error::from)
                .and_then(|result| result);
            if let Err(error) = result {
                tracing::error!(error = %format!("{error:#}"), "server failed; shutting down");
                first_error.get_or_insert(error);
                trigger.trigger();
            }
        }
    };
    let deadline = async {
        shutdown.requested().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = collect => {}
        () = deadline => tracing::warn!(?grace, "grace period over; abandoning in-flight requests"),
    }
    match first_error {
        Some(error) => Err(error),
        None => {
            announce("stopped");
            Ok(())
        }
    }
}

async fn mount(
    service: ServiceName,
    context: &ServiceContext,
    server: &mut GrpcServer,
) -> anyhow::Result<()> {
    let mounted = match service {
        ServiceName::Webhooks => payouts_webhooks::mount(context, server).await,
        ServiceName::Payouts => payouts_payouts::mount(context, server).await,
        ServiceName::Limits => payouts_limits::mount(context, server).await,
        ServiceName::Approvals => payouts_approvals::mount(context, server).await,
        ServiceName::Disputes => payouts_disputes::mount(context, server).await,
        ServiceName::Balance => payouts_balance::mount(context, server).await,
        ServiceName::Notifications => payouts_notifications::mount(context, server).await,
    };
    mounted.map_err(|error| error.context(format!("cannot start the {service} service")))
}

fn local_addr(listener: &tokio::net::TcpListener) -> anyhow::Result<SocketAddr> {
    Ok(listener.local_addr()?)
}

/// Start-up lines go to stderr, apart from the (possibly JSON) logs on stdout.
fn announce(line: &str) {
    eprintln!("payouts: {line}");
    tracing::info!("{line}");
}
