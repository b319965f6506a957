//! What the node shows of its own orders, change requests and profiles, whichever source they
//! were read from (a sonm-dwh when `dwh_url` is set, the chain's logs and views otherwise):
//! both sources produce these types, so the API answers the same either way.

use serde::{Deserialize, Serialize};
use sonm_market::{Address, DealId, IdentityLevel, Order, OrderId, OrderType};

use crate::chain::as_string;

/// Where an order stands (the DWH's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Active,
    Cancelled,
    /// Taken by a deal.
    Matched,
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OrderStatus::Active => "active",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Matched => "matched",
        })
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(OrderStatus::Active),
            "cancelled" => Ok(OrderStatus::Cancelled),
            "matched" => Ok(OrderStatus::Matched),
            _ => Err(format!("{s:?} is not active, cancelled or matched")),
        }
    }
}

/// An order and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OrderRecord {
    pub order: Order,
    pub status: OrderStatus,
    /// The deal that took it (a matched order).
    #[serde(default)]
    pub deal: Option<DealId>,
}

/// An order as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OrderView {
    pub id: OrderId,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub status: OrderStatus,
    pub deal: Option<DealId>,
    pub author: Address,
    pub counterparty: Option<Address>,
    /// SNM wei per second (decimal string).
    pub price: String,
    pub duration: u64,
    pub netflags: String,
    pub identity_level: IdentityLevel,
    pub blacklist: Option<Address>,
    /// Human form, e.g. `cpu-cores=1 ram-size=128MiB`.
    pub benchmarks: String,
    /// The 13 values in DESIGN.md's order.
    pub benchmark_values: Vec<u64>,
}

impl From<&OrderRecord> for OrderView {
    fn from(r: &OrderRecord) -> Self {
        let o = &r.order;
        OrderView {
            id: o.id,
            order_type: o.order_type,
            status: r.status,
            deal: r.deal,
            author: o.author,
            counterparty: o.counterparty,
            price: o.price.to_string(),
            duration: o.duration,
            netflags: o.netflags.to_string(),
            identity_level: o.identity_level,
            blacklist: o.blacklist,
            benchmarks: o.benchmarks.to_string(),
            benchmark_values: o.benchmarks.as_array().to_vec(),
        }
    }
}

/// Where a change request stands (the DWH's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Pending,
    Approved,
    Cancelled,
}

/// A deal's change request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequestView {
    pub id: u64,
    pub deal: DealId,
    /// Who asked: the deal's consumer or supplier.
    pub requester: Address,
    /// SNM wei per second.
    #[serde(serialize_with = "as_string")]
    pub price: u128,
    pub duration: u64,
    pub status: ChangeStatus,
}

/// A certificate of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateView {
    pub id: u64,
    pub validator: Address,
    /// Decimal string (a uint256 on chain).
    pub attribute_type: String,
    /// `0x`-hex.
    pub value: String,
    pub revoked: bool,
}

/// An address's profile: identity level, confirmed master, certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileView {
    pub address: Address,
    pub identity_level: IdentityLevel,
    /// Its confirmed master, if it is a worker that has one.
    pub master: Option<Address>,
    pub certificates: Vec<CertificateView>,
}
