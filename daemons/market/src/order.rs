//! Orders: what a supplier sells (ASK) or a customer wants to buy (BID).

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::benchmarks::Benchmarks;
use crate::error::OrderError;

/// An order's id: the chain's order counter (asks and bids share it).
pub type OrderId = u64;

/// Seconds in the billing period of a spot deal.
pub const SPOT_BILLING_PERIOD: u64 = 60 * 60;
/// The longest billing period, that of a forward deal of a day or more.
pub const MAX_BILLING_PERIOD: u64 = 24 * 60 * 60;
/// The highest price the Market contract accepts (it packs prices in 96 bits).
pub const MAX_PRICE: u128 = (1 << 96) - 1;
/// The longest duration the Market contract accepts (40 bits: 34,000 years).
pub const MAX_DURATION: u64 = (1 << 40) - 1;

/// The chain's encoding: 1 = BID, 2 = ASK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    Bid,
    Ask,
}

impl OrderType {
    pub const fn code(self) -> u8 {
        match self {
            OrderType::Bid => 1,
            OrderType::Ask => 2,
        }
    }
}

impl TryFrom<u64> for OrderType {
    type Error = OrderError;
    fn try_from(code: u64) -> Result<Self, OrderError> {
        match code {
            1 => Ok(OrderType::Bid),
            2 => Ok(OrderType::Ask),
            other => Err(OrderError::UnknownOrderType(other)),
        }
    }
}

impl fmt::Display for OrderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderType::Bid => "bid",
            OrderType::Ask => "ask",
        })
    }
}

/// Network capabilities: what an ask offers, or what a bid needs. Only the three
/// known bits can be set (`TryFrom` refuses others), so a flag the chain does not
/// know about can never make two orders look compatible.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct NetFlags(u8);

impl NetFlags {
    pub const NONE: NetFlags = NetFlags(0);
    /// The task may open outbound connections.
    pub const OUTBOUND: NetFlags = NetFlags(0b001);
    /// The task may accept inbound connections.
    pub const INBOUND: NetFlags = NetFlags(0b010);
    /// The box has a public IP address.
    pub const PUBLIC_IP: NetFlags = NetFlags(0b100);
    pub const ALL: NetFlags = NetFlags(0b111);

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when every flag of `needed` is set here: an ask with these flags serves a
    /// bid that needs `needed`.
    pub const fn covers(self, needed: NetFlags) -> bool {
        needed.0 & !self.0 == 0
    }

    pub const fn union(self, other: NetFlags) -> NetFlags {
        NetFlags(self.0 | other.0)
    }

    pub const fn intersection(self, other: NetFlags) -> NetFlags {
        NetFlags(self.0 & other.0)
    }
}

impl TryFrom<u64> for NetFlags {
    type Error = OrderError;
    fn try_from(bits: u64) -> Result<Self, OrderError> {
        if bits & !u64::from(NetFlags::ALL.0) != 0 {
            return Err(OrderError::UnknownNetFlags { bits });
        }
        Ok(NetFlags(bits as u8))
    }
}

impl From<NetFlags> for u64 {
    fn from(f: NetFlags) -> u64 {
        u64::from(f.0)
    }
}

impl fmt::Debug for NetFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetFlags({self})")
    }
}

/// `outbound,inbound,public-ip`, or `none`.
impl fmt::Display for NetFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (NetFlags::OUTBOUND, "outbound"),
            (NetFlags::INBOUND, "inbound"),
            (NetFlags::PUBLIC_IP, "public-ip"),
        ]
        .into_iter()
        .filter(|(flag, _)| self.covers(*flag))
        .map(|(_, name)| name)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl FromStr for NetFlags {
    type Err = OrderError;
    /// Accepts the `Display` form, or a number.
    fn from_str(s: &str) -> Result<Self, OrderError> {
        if let Ok(bits) = s.trim().parse::<u64>() {
            return NetFlags::try_from(bits);
        }
        let mut flags = NetFlags::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            flags = flags.union(match name {
                "none" => NetFlags::NONE,
                "outbound" => NetFlags::OUTBOUND,
                "inbound" => NetFlags::INBOUND,
                "public-ip" => NetFlags::PUBLIC_IP,
                // Report an unknown name as the bit above the known ones.
                _ => return Err(OrderError::UnknownNetFlags { bits: 0b1000 }),
            });
        }
        Ok(flags)
    }
}

/// How well a party is known, from the profile registry's certificates.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum IdentityLevel {
    #[default]
    Anonymous = 0,
    Registered = 1,
    Identified = 2,
    Professional = 3,
}

impl IdentityLevel {
    pub const ALL: [IdentityLevel; 4] = [
        IdentityLevel::Anonymous,
        IdentityLevel::Registered,
        IdentityLevel::Identified,
        IdentityLevel::Professional,
    ];
}

impl TryFrom<u64> for IdentityLevel {
    type Error = OrderError;
    fn try_from(level: u64) -> Result<Self, OrderError> {
        usize::try_from(level)
            .ok()
            .and_then(|l| IdentityLevel::ALL.get(l).copied())
            .ok_or(OrderError::UnknownIdentityLevel(level))
    }
}

/// An order as the chain holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub order_type: OrderType,
    pub author: Address,
    /// Only this party may take the order (for a bid naming a supplier, its master
    /// also counts).
    pub counterparty: Option<Address>,
    /// Seconds; 0 is a spot order (open-ended, billed hourly in advance).
    pub duration: u64,
    /// SNM wei per second.
    pub price: u128,
    pub netflags: NetFlags,
    /// The level the counterparty must have.
    pub identity_level: IdentityLevel,
    /// A further party whose blacklist applies (for example a supplier's master).
    pub blacklist: Option<Address>,
    pub tag: B256,
    pub benchmarks: Benchmarks,
}

impl Order {
    /// Checks what the types cannot, as `Market.placeOrder` does: a bid pays
    /// something, and price and duration fit the chain's packing. (Naming oneself
    /// as counterparty is allowed, as on chain: a party may trade with itself.)
    pub fn validate(&self) -> Result<(), OrderError> {
        if self.price > MAX_PRICE {
            return Err(OrderError::PriceTooHigh { price: self.price });
        }
        if self.duration > MAX_DURATION {
            return Err(OrderError::DurationTooLong(self.duration));
        }
        if self.order_type == OrderType::Bid && self.price == 0 {
            return Err(OrderError::ZeroBidPrice);
        }
        Ok(())
    }

    pub fn is_spot(&self) -> bool {
        self.duration == 0
    }

    /// What a bid blocks when it is placed: its first billing period at its price.
    pub fn frozen_sum(&self) -> Result<u128, OrderError> {
        frozen_sum(self.price, self.duration)
    }
}

/// Seconds paid in advance for a deal of `duration` (0 = spot): an hour for spot,
/// the whole deal for forward deals up to a day, a day beyond that.
pub const fn billing_period(duration: u64) -> u64 {
    if duration == 0 {
        SPOT_BILLING_PERIOD
    } else if duration < MAX_BILLING_PERIOD {
        duration
    } else {
        MAX_BILLING_PERIOD
    }
}

/// `price` × the billing period of `duration`: what a bid blocks.
pub fn frozen_sum(price: u128, duration: u64) -> Result<u128, OrderError> {
    price
        .checked_mul(u128::from(billing_period(duration)))
        .ok_or(OrderError::PriceTooHigh { price })
}
