//! The supplier's admin protocol: a second ALPN ([`ADMIN_ALPN`]) on the task service's QUIC
//! endpoint, one request and one response per stream, as the task protocol. Only the worker's
//! own key or its confirmed master (`masterOf` on chain) may use it: the peer is the QUIC
//! identity's verified Ethereum address and nothing in a message claims who is asking.
//! Anyone else is refused with [`AdminError::NotAdmin`] and logged.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sonm_market::{Address, Benchmarks, DealId};
use sonm_net::{Connection, Endpoint};

use crate::config::PlanConfig;
use crate::inventory::{Gpu, Inventory};
use crate::plan::PlanId;
use crate::state::{DealState, PlanRecord};
use crate::worker::{Worker, WorkerError};

/// The admin service's ALPN (served beside [`crate::proto::ALPN`]).
pub const ADMIN_ALPN: &[u8] = b"sonm-worker-admin/1";

/// Plans added through the admin protocol are named with this prefix, so that the
/// configuration's reconciliation at start (which removes plans it does not name) keeps them.
pub const ADMIN_PLAN_PREFIX: &str = "admin:";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Status,
    Inventory,
    Devices,
    Plans,
    AddPlan(PlanConfig),
    RemovePlan(PlanId),
    /// Withdraw and place again the asks of every plan without a deal (after a price or
    /// benchmark change, or an ask lost on chain).
    ReplaceAsks,
    /// On: withdraw every ask and place none, bill and close the spot deals, let the forward
    /// deals run to their end. Off: place the plans' asks again. Kept across restarts.
    Maintenance {
        on: bool,
    },
    /// The plans' signed asks (`[market] asks = "signed"`): order, nonce, expiry, digest.
    /// Appended last: the earlier variants keep their encoding, and a worker that predates it
    /// answers a decode error.
    SignedAsks,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    Status(WorkerStatus),
    Inventory(InventoryView),
    Devices(Vec<Gpu>),
    Plans(Vec<PlanRecord>),
    PlanAdded(PlanRecord),
    PlanRemoved(PlanId),
    AsksReplaced(Vec<PlanId>),
    /// The status after the switch (what was closed, what still runs).
    Maintenance(WorkerStatus),
    Error(AdminError),
    SignedAsks(Vec<crate::state::SignedAsk>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub address: Address,
    /// The confirmed master (payouts go to it); `None`: the worker is paid itself.
    pub master: Option<Address>,
    /// The master named in the configuration, confirmed or not.
    pub configured_master: Option<Address>,
    pub uptime_s: u64,
    pub running_tasks: u32,
    pub open_deals: Vec<DealId>,
    pub plans: usize,
    pub rendezvous_connected: bool,
    /// Maintenance on: no asks, spot deals closed, forward deals left to their end.
    #[serde(default)]
    pub maintenance: bool,
    /// In maintenance, the forward deals still open: the chain refuses to close one before its
    /// end (only the consumer may, by blacklisting), so each is closed at its end.
    #[serde(default)]
    pub forward_deals: Vec<ForwardDeal>,
}

/// A forward deal left to run to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardDeal {
    pub deal: DealId,
    /// Unix seconds.
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryView {
    pub inventory: Inventory,
    pub benchmarks: Benchmarks,
    pub measured_at: u64,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    #[error("{peer} may not administer worker {worker}: only its own key or its confirmed master")]
    NotAdmin { peer: Address, worker: Address },
    #[error("no plan {0}")]
    UnknownPlan(PlanId),
    #[error("plan {plan} has an active deal {deal}; it can be removed when the deal ends")]
    PlanHasDeal { plan: PlanId, deal: DealId },
    #[error("plan refused: {0}")]
    BadPlan(String),
    #[error("worker error: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    AdminError::Internal(e.to_string())
}

impl From<WorkerError> for AdminError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::PlanHasDeal(plan, deal) => AdminError::PlanHasDeal { plan, deal },
            WorkerError::Plan(crate::plan::PlanError::Unknown(id)) => AdminError::UnknownPlan(id),
            WorkerError::Plan(p) => AdminError::BadPlan(p.to_string()),
            WorkerError::Config(c) => AdminError::BadPlan(c.to_string()),
            other => internal(other),
        }
    }
}

impl Worker {
    /// Whether `peer` may administer this worker: its own key, or the master the chain says
    /// it is paid to (confirmed; a pending registration is not enough).
    pub async fn is_admin(&self, peer: Address) -> Result<bool, WorkerError> {
        if peer == self.address() || self.metrics().master() == Some(peer) {
            return Ok(true);
        }
        // Not cached yet (confirmed since the last chain round, or a master from an earlier
        // configuration): the chain decides.
        Ok(self.chain().master_of().await? == peer)
    }

    /// Serves one admin connection: refused (and logged) unless its peer is an admin.
    pub(crate) async fn serve_admin(&self, conn: Connection) {
        let peer = conn.peer_address();
        let allowed = match self.is_admin(peer).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%peer, "admin: cannot read the master from the chain: {e}");
                false
            }
        };
        if !allowed {
            tracing::warn!(%peer, remote = %conn.remote_address(),
                "admin refused: not this worker's key nor its confirmed master");
        } else {
            tracing::info!(%peer, "admin connected");
        }
        loop {
            let (req, responder) = match conn.accept_request::<AdminRequest>().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%peer, "admin connection ended: {e}");
                    return;
                }
            };
            let resp = if allowed {
                tracing::info!(%peer, request = ?AdminKind::of(&req), "admin request");
                self.handle_admin(req)
                    .await
                    .unwrap_or_else(AdminResponse::Error)
            } else {
                AdminResponse::Error(AdminError::NotAdmin {
                    peer,
                    worker: self.address(),
                })
            };
            if let Err(e) = responder.respond(&resp).await {
                tracing::debug!(%peer, "admin response not delivered: {e}");
            }
        }
    }

    /// One request from an authorized admin.
    pub async fn handle_admin(&self, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        match req {
            AdminRequest::Status => Ok(AdminResponse::Status(self.status().await?)),
            AdminRequest::Inventory => {
                let m = self.measured();
                Ok(AdminResponse::Inventory(InventoryView {
                    inventory: m.inventory.clone(),
                    benchmarks: m.benchmarks,
                    measured_at: m.measured_at,
                }))
            }
            // Asked afresh: NVML is loaded at run time and reports no GPU without the library.
            AdminRequest::Devices => Ok(AdminResponse::Devices(
                smol::unblock(crate::inventory::detect_gpus).await,
            )),
            AdminRequest::Plans => Ok(AdminResponse::Plans(self.plans()?)),
            AdminRequest::SignedAsks => Ok(AdminResponse::SignedAsks(
                self.store().signed_asks().map_err(internal)?,
            )),
            AdminRequest::AddPlan(mut cfg) => {
                if !cfg.name.starts_with(ADMIN_PLAN_PREFIX) {
                    cfg.name = format!("{ADMIN_PLAN_PREFIX}{}", cfg.name);
                }
                let spec = cfg
                    .to_spec()
                    .map_err(|e| AdminError::BadPlan(e.to_string()))?;
                if self.plans()?.iter().any(|p| p.spec.name == spec.name) {
                    return Err(AdminError::BadPlan(format!(
                        "a plan named {:?} exists",
                        spec.name
                    )));
                }
                let id = self.add_plan(spec)?;
                // Placed now rather than at the next tick, so the answer carries the ask.
                if let Err(e) = self.sync_plans().await {
                    tracing::warn!(plan = id, "placing the new plan's ask: {e}");
                }
                let rec = self
                    .store()
                    .plan(id)
                    .map_err(internal)?
                    .ok_or(AdminError::UnknownPlan(id))?;
                tracing::info!(plan = id, name = %rec.spec.name, "plan added by an admin");
                Ok(AdminResponse::PlanAdded(rec))
            }
            AdminRequest::RemovePlan(id) => {
                self.remove_plan(id)?;
                if let Err(e) = self.sync_plans().await {
                    tracing::warn!(plan = id, "withdrawing the removed plan's ask: {e}");
                }
                tracing::info!(plan = id, "plan removed by an admin");
                Ok(AdminResponse::PlanRemoved(id))
            }
            AdminRequest::ReplaceAsks => Ok(AdminResponse::AsksReplaced(
                self.replace_asks().await.map_err(AdminError::from)?,
            )),
            AdminRequest::Maintenance { on } => {
                self.set_maintenance(on).await?;
                Ok(AdminResponse::Maintenance(self.status().await?))
            }
        }
    }

    /// What `status` answers.
    async fn status(&self) -> Result<WorkerStatus, AdminError> {
        let master = self.chain().master_of().await.map_err(internal)?;
        let deals = self.store().deals().map_err(internal)?;
        let active: Vec<_> = deals
            .iter()
            .filter(|d| d.state == DealState::Active)
            .collect();
        let maintenance = self.in_maintenance();
        Ok(WorkerStatus {
            address: self.address(),
            master: (master != self.address()).then_some(master),
            configured_master: self.configured_master(),
            uptime_s: self.metrics().uptime().as_secs(),
            running_tasks: active.iter().map(|d| self.running_tasks_of(d.id)).sum(),
            open_deals: active.iter().map(|d| d.id).collect(),
            plans: self.plans().map_err(internal)?.len(),
            rendezvous_connected: self.metrics().rendezvous_connected(),
            maintenance,
            forward_deals: if maintenance {
                active
                    .iter()
                    .filter(|d| d.duration > 0)
                    .map(|d| ForwardDeal {
                        deal: d.id,
                        end: d.start.saturating_add(d.duration),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
    }
}

/// A request's kind, for the log (without its payload).
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug only.
enum AdminKind {
    Status,
    Inventory,
    Devices,
    Plans,
    AddPlan(String),
    RemovePlan(PlanId),
    ReplaceAsks,
    Maintenance(bool),
    SignedAsks,
}

impl AdminKind {
    fn of(req: &AdminRequest) -> Self {
        match req {
            AdminRequest::Status => Self::Status,
            AdminRequest::Inventory => Self::Inventory,
            AdminRequest::Devices => Self::Devices,
            AdminRequest::Plans => Self::Plans,
            AdminRequest::AddPlan(p) => Self::AddPlan(p.name.clone()),
            AdminRequest::RemovePlan(id) => Self::RemovePlan(*id),
            AdminRequest::ReplaceAsks => Self::ReplaceAsks,
            AdminRequest::SignedAsks => Self::SignedAsks,
            AdminRequest::Maintenance { on } => Self::Maintenance(*on),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("network: {0}")]
    Net(#[from] sonm_net::NetError),
    #[error("refused by the worker: {0}")]
    Refused(AdminError),
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// The admin's side: a connection to one worker's admin service.
#[derive(Debug, Clone)]
pub struct AdminClient {
    conn: Connection,
}

impl AdminClient {
    /// Dials `addr`, requiring the peer to be `worker`.
    pub async fn connect(
        endpoint: &Endpoint,
        addr: SocketAddr,
        worker: Address,
    ) -> Result<Self, AdminClientError> {
        let conn = endpoint.connect(addr, ADMIN_ALPN, Some(worker)).await?;
        Ok(Self { conn })
    }

    /// Wraps a connection made elsewhere (the rendezvous), checking its peer and ALPN.
    pub fn from_connection(conn: Connection, worker: Address) -> Result<Self, AdminClientError> {
        if conn.peer_address() != worker || conn.alpn() != ADMIN_ALPN {
            return Err(AdminClientError::Unexpected(format!(
                "connection to {} is not {worker}'s admin service",
                conn.peer_address()
            )));
        }
        Ok(Self { conn })
    }

    pub async fn call(&self, req: &AdminRequest) -> Result<AdminResponse, AdminClientError> {
        match self
            .conn
            .request::<_, AdminResponse>(req, REQUEST_TIMEOUT)
            .await?
        {
            AdminResponse::Error(e) => Err(AdminClientError::Refused(e)),
            r => Ok(r),
        }
    }

    pub fn close(&self) {
        self.conn.close(0, b"done");
    }
}
