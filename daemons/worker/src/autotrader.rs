//! The autotrader and the matcher (`[autotrader]` in the configuration; off by default, when
//! the plans are the configuration's `[[plans]]` only).
//!
//! This module holds the configuration, the pure glue between the worker's plans and
//! `sonm-optimus` (which plans Optimus owns, the capacity it may plan, the slices and specs),
//! and the DWH client. The loop itself (I/O: the DWH, the chain, the store) is
//! `worker/autotrade.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sonm_dwh_client::OrderRow;
use sonm_market::{Benchmarks, IdentityLevel, NetFlags, Order, OrderId, OrderType};
use sonm_optimus::{ActivePlan, Floor, Plan, Shaper, Slice, Thresholds, UsdFloor};

use crate::plan::{PlanSpec, Resources, ask_benchmarks};
use crate::state::PlanRecord;

/// `[autotrader]`: where the bids are, the floor, and how eagerly to re-plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutotraderConfig {
    /// The sonm-dwh to read the open bids and the matches from (`http://host:port`).
    pub dwh_url: String,
    /// Seconds between rounds (read the bids, re-plan if the market moved, take bids).
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Let Optimus split the box into plans (false: only the matcher runs, for the
    /// configured plans).
    #[serde(default = "yes")]
    pub replan: bool,
    /// Open deals for our asks with the best matching bids.
    #[serde(default = "yes")]
    pub match_bids: bool,
    /// The least the supplier accepts, in SNM wei per unit-hour.
    #[serde(default)]
    pub floor: FloorConfig,
    /// The floor in micro-USD per unit-hour instead, converted each round at the OracleUSD
    /// contract's rate.
    #[serde(default)]
    pub floor_usd: Option<FloorConfig>,
    /// The identity level asked of buyers.
    #[serde(default)]
    pub buyer_identity: IdentityLevel,
    /// How far under a bid its plan is priced (the deal runs at the ask's price).
    #[serde(default = "default_undercut")]
    pub undercut_bps: u32,
    /// The percentile of the matching bids' unit prices that prices the rest of the box.
    #[serde(default = "default_percentile")]
    pub fallback_percentile: u8,
    /// The rest-of-the-box ask's duration, seconds (0 = spot).
    #[serde(default)]
    pub fallback_duration: u64,
    /// Re-plan when the new plans would earn this many basis points more.
    #[serde(default = "default_income_bps")]
    pub income_bps: u32,
    /// Re-plan when a plan's price is this many basis points off what Optimus would ask now.
    #[serde(default = "default_drift_bps")]
    pub drift_bps: u32,
    /// Seconds after a re-plan in which income and drift do not trigger another.
    #[serde(default = "default_cooldown")]
    pub cooldown: u64,
    /// The most open bids read from the DWH per round (pages of 1,000).
    #[serde(default = "default_max_bids")]
    pub max_bids: usize,
}

/// Per unit-hour: a core, a GiB of RAM, a GiB of storage, a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloorConfig {
    #[serde(default)]
    pub core_hour: u64,
    #[serde(default)]
    pub ram_gib_hour: u64,
    #[serde(default)]
    pub storage_gib_hour: u64,
    #[serde(default)]
    pub gpu_hour: u64,
}

fn default_interval() -> u64 {
    60
}
fn yes() -> bool {
    true
}
fn default_undercut() -> u32 {
    50
}
fn default_percentile() -> u8 {
    50
}
fn default_income_bps() -> u32 {
    Thresholds::default().income_bps
}
fn default_drift_bps() -> u32 {
    Thresholds::default().drift_bps
}
fn default_cooldown() -> u64 {
    Thresholds::default().cooldown_s
}
fn default_max_bids() -> usize {
    10_000
}

#[derive(Debug, thiserror::Error)]
pub enum AutotraderError {
    #[error("DWH {url}: {message}")]
    Dwh { url: String, message: String },
    #[error("autotrader configuration: {0}")]
    Config(#[from] sonm_optimus::ConfigError),
    #[error("OracleUSD's rate is 0: no USD floor can be converted")]
    ZeroRate,
}

impl AutotraderConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval.max(1))
    }

    /// The floor in SNM wei: `floor`, or `floor_usd` at `usd_per_snm_e18` (OracleUSD.price).
    pub fn floor(&self, usd_per_snm_e18: Option<u128>) -> Result<Floor, AutotraderError> {
        match (self.floor_usd, usd_per_snm_e18) {
            (Some(usd), rate) => UsdFloor {
                core_hour: usd.core_hour.into(),
                ram_gib_hour: usd.ram_gib_hour.into(),
                storage_gib_hour: usd.storage_gib_hour.into(),
                gpu_hour: usd.gpu_hour.into(),
            }
            .to_snm(rate.unwrap_or(0))
            .ok_or(AutotraderError::ZeroRate),
            (None, _) => Ok(Floor {
                core_hour: self.floor.core_hour.into(),
                ram_gib_hour: self.floor.ram_gib_hour.into(),
                storage_gib_hour: self.floor.storage_gib_hour.into(),
                gpu_hour: self.floor.gpu_hour.into(),
            }),
        }
    }

    /// Optimus's configuration for the worker `author` offering `netflags` at `floor`.
    pub fn optimus(
        &self,
        author: sonm_market::Address,
        netflags: NetFlags,
        floor: Floor,
    ) -> Result<sonm_optimus::Config, AutotraderError> {
        let mut c = sonm_optimus::Config::new(author, netflags, floor);
        c.buyer_identity = self.buyer_identity;
        // The worker's asks carry no blacklist (plan::ask_order): judged the same way here.
        c.blacklist = None;
        c.undercut_bps = self.undercut_bps;
        c.fallback_percentile = self.fallback_percentile;
        c.fallback_duration = self.fallback_duration;
        c.thresholds = Thresholds {
            income_bps: self.income_bps,
            drift_bps: self.drift_bps,
            cooldown_s: self.cooldown,
        };
        c.validate()?;
        Ok(c)
    }
}

pub fn slice_of(r: &Resources) -> Slice {
    Slice {
        cpu_cores: r.cpu_cores,
        ram_bytes: r.ram_bytes,
        storage_bytes: r.storage_bytes,
        gpus: r.gpus,
    }
}

pub fn resources_of(s: &Slice) -> Resources {
    Resources {
        cpu_cores: s.cpu_cores,
        ram_bytes: s.ram_bytes,
        storage_bytes: s.storage_bytes,
        gpus: s.gpus,
    }
}

/// The worker's own rule for what an ask may promise, so Optimus sizes a slice by exactly the
/// vector its ASK order will carry.
#[derive(Debug, Clone, Copy)]
pub struct BoxShaper {
    pub box_benchmarks: Benchmarks,
    pub capacity: Resources,
}

impl Shaper for BoxShaper {
    fn benchmarks(&self, slice: &Slice) -> Benchmarks {
        ask_benchmarks(&self.box_benchmarks, &self.capacity, &resources_of(slice))
    }
}

/// Separates a repeat of an Optimus name (`optimus-leftover~2`): a plan under a deal keeps its
/// name while Optimus places a new plan of the same purpose.
const REPEAT: char = '~';

/// What an Optimus plan was sized for (`Some(None)`: the leftover ask), from its name; `None`
/// for a plan that is not Optimus's (the configuration's).
pub fn optimus_purpose(name: &str) -> Option<Option<OrderId>> {
    let base = match name.rsplit_once(REPEAT) {
        Some((base, n)) if n.parse::<u32>().is_ok() => base,
        _ => name,
    };
    Plan::sized_for_from_name(base)
}

/// Optimus's view of the stored plans: the capacity it may plan (the box less the plans that
/// are not its own) and its plans, those with a deal flagged. A plan being withdrawn holds its
/// slice only while a deal runs on it.
pub fn optimus_view(records: &[PlanRecord], capacity: &Resources) -> (Slice, Vec<ActivePlan>) {
    let mut cap = *capacity;
    let mut plans = Vec::new();
    for rec in records {
        if rec.removing && rec.deal.is_none() {
            continue;
        }
        match optimus_purpose(&rec.spec.name) {
            Some(sized_for) => plans.push(ActivePlan {
                id: rec.id,
                plan: Plan {
                    slice: slice_of(&rec.spec.slice),
                    price: rec.spec.price,
                    duration: rec.spec.duration,
                    netflags: rec.spec.netflags,
                    identity_level: rec.spec.identity_level,
                    sized_for,
                },
                // A removed plan still here has a deal: it must not be planned over.
                has_deal: rec.deal.is_some(),
            }),
            None => cap = cap.saturating_sub(&rec.spec.slice),
        }
    }
    (slice_of(&cap), plans)
}

/// The worker's plan for an Optimus plan, named after its purpose (with a repeat number when
/// `taken` says the name is in use, e.g. by a plan under a deal).
pub fn spec_for(plan: &Plan, taken: impl Fn(&str) -> bool) -> PlanSpec {
    let base = plan.name();
    let name = std::iter::once(base.clone())
        .chain((2u32..).map(|n| format!("{base}{REPEAT}{n}")))
        .find(|n| !taken(n))
        .unwrap_or(base);
    PlanSpec {
        name,
        slice: resources_of(&plan.slice),
        netflags: plan.netflags,
        price: plan.price,
        duration: plan.duration,
        identity_level: plan.identity_level,
    }
}

/// Income per hour, for logs people read.
pub fn per_hour(wei_per_second: u128) -> u128 {
    wei_per_second.saturating_mul(3600)
}

/// The DWH's query API, for the open bids and the matches of our asks (through the one DWH
/// client, sonm-dwh-client).
#[derive(Debug, Clone)]
pub struct Dwh {
    client: sonm_dwh_client::Dwh,
}

impl Dwh {
    pub fn new(base: &str) -> Self {
        Self {
            client: sonm_dwh_client::Dwh::new(base),
        }
    }

    fn err(e: sonm_dwh_client::DwhError) -> AutotraderError {
        AutotraderError::Dwh {
            url: e.url,
            message: e.message,
        }
    }

    /// The open bids, best-paying last (the DWH's price order), at most `max`.
    pub fn open_bids(&self, max: usize) -> Result<Vec<Order>, AutotraderError> {
        let params = [("type", "bid".to_owned()), ("status", "active".to_owned())];
        let rows: sonm_dwh_client::Listing<OrderRow> = self
            .client
            .all("/v1/orders", &params, max)
            .map_err(Self::err)?;
        Ok(rows
            .items
            .into_iter()
            .filter(|r| r.status == "active" && r.order.order_type == OrderType::Bid)
            .map(|r| r.order)
            .collect())
    }

    /// The best bids matching our active ask `ask` (best-paying first); empty while the DWH
    /// has not indexed it (404) or no longer holds it active (400).
    pub fn matches(&self, ask: OrderId, limit: usize) -> Result<Vec<Order>, AutotraderError> {
        let rows: Option<Vec<OrderRow>> = match self.client.get(
            &format!("/v1/orders/{ask}/matches"),
            &[("limit", limit.to_string())],
        ) {
            Err(e) if e.status == Some(400) => None,
            r => r.map_err(Self::err)?,
        };
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status == "active" && r.order.order_type == OrderType::Bid)
            .map(|r| r.order)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, name: &str, cores: u32, deal: Option<u64>, removing: bool) -> PlanRecord {
        PlanRecord {
            id,
            spec: PlanSpec {
                name: name.into(),
                slice: Resources {
                    cpu_cores: cores,
                    ram_bytes: 1 << 30,
                    storage_bytes: 0,
                    gpus: 0,
                },
                netflags: NetFlags::OUTBOUND,
                price: 7,
                duration: 0,
                identity_level: IdentityLevel::Anonymous,
            },
            ask: None,
            deal,
            removing,
            placing_since: None,
        }
    }

    #[test]
    fn optimus_sees_its_own_plans_and_the_box_less_the_others() {
        let capacity = Resources {
            cpu_cores: 8,
            ram_bytes: 8 << 30,
            storage_bytes: 0,
            gpus: 0,
        };
        let recs = vec![
            record(1, "fixed", 2, None, false),
            record(2, "optimus-bid-9", 1, Some(4), false),
            record(3, "optimus-leftover", 3, None, false),
            // Withdrawn, no deal: holds nothing.
            record(4, "optimus-bid-10", 1, None, true),
            // Withdrawn, but a deal took its ask first: held, never planned over.
            record(5, "optimus-leftover~2", 1, Some(6), true),
        ];
        let (cap, plans) = optimus_view(&recs, &capacity);
        assert_eq!(cap.cpu_cores, 6);
        assert_eq!(cap.ram_bytes, 7 << 30);
        let got: Vec<_> = plans
            .iter()
            .map(|p| (p.id, p.plan.sized_for, p.has_deal))
            .collect();
        assert_eq!(
            got,
            vec![(2, Some(9), true), (3, None, false), (5, None, true)]
        );
    }

    #[test]
    fn names_repeat_when_taken_and_read_back() {
        let plan = Plan {
            slice: Slice {
                cpu_cores: 1,
                ..Slice::ZERO
            },
            price: 5,
            duration: 0,
            netflags: NetFlags::OUTBOUND,
            identity_level: IdentityLevel::Anonymous,
            sized_for: None,
        };
        assert_eq!(spec_for(&plan, |_| false).name, "optimus-leftover");
        let taken = ["optimus-leftover", "optimus-leftover~2"];
        let spec = spec_for(&plan, |n| taken.contains(&n));
        assert_eq!(spec.name, "optimus-leftover~3");
        assert_eq!(optimus_purpose(&spec.name), Some(None));
        assert_eq!(optimus_purpose("optimus-bid-12~2"), Some(Some(12)));
        assert_eq!(optimus_purpose("half"), None);
        assert_eq!(optimus_purpose("half~2"), None);
    }

    #[test]
    fn config_maps_onto_optimus() {
        let c: AutotraderConfig = toml::from_str(
            "dwh_url = \"http://127.0.0.1:8090\"\ninterval = 5\ncooldown = 0\n\
             [floor]\ncore_hour = 3600\nram_gib_hour = 7200\n",
        )
        .unwrap();
        assert!(c.replan && c.match_bids);
        let floor = c.floor(None).unwrap();
        assert_eq!((floor.core_hour, floor.ram_gib_hour), (3600, 7200));
        let o = c
            .optimus(sonm_market::Address::ZERO, NetFlags::OUTBOUND, floor)
            .unwrap();
        assert_eq!(o.thresholds.cooldown_s, 0);
        assert_eq!(o.thresholds.income_bps, 500);
        assert_eq!(o.undercut_bps, 50);
        // 0.01 USD per core-hour at 0.05 USD/SNM = 0.2 SNM.
        let usd: AutotraderConfig =
            toml::from_str("dwh_url = \"http://x\"\n[floor_usd]\ncore_hour = 10000\n").unwrap();
        let f = usd.floor(Some(5 * 10u128.pow(16))).unwrap();
        assert_eq!(f.core_hour, 2 * 10u128.pow(17));
        assert!(matches!(usd.floor(Some(0)), Err(AutotraderError::ZeroRate)));
        assert!(toml::from_str::<AutotraderConfig>("dwh_url = \"x\"\nfloor_typo = 1").is_err());
        let bad = AutotraderConfig {
            undercut_bps: 20_000,
            ..c
        };
        assert!(
            bad.optimus(sonm_market::Address::ZERO, NetFlags::OUTBOUND, floor)
                .is_err()
        );
    }
}
