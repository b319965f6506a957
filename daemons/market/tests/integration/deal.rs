//! Billing arithmetic of a deal.

use sonm_market::{Address, Deal, DealStatus};

fn deal(duration: u64, price: u128, blocked: u128) -> Deal {
    Deal {
        id: 1,
        supplier: Address::repeat_byte(1),
        consumer: Address::repeat_byte(2),
        master: Address::repeat_byte(3),
        ask: 10,
        bid: 11,
        price,
        duration,
        start: 1_000,
        end: if duration == 0 { 0 } else { 1_000 + duration },
        blocked,
        total_payout: 0,
        last_bill: 1_000,
        status: DealStatus::Accepted,
    }
}

#[test]
fn a_spot_bill_pays_elapsed_seconds_and_tops_up_an_hour() {
    let d = deal(0, 5, 5 * 3600);
    let bill = d.bill_at(1_600);
    assert_eq!(bill.payout, 3_000);
    assert_eq!(bill.paid_until, 1_600);
    assert_eq!(bill.blocked_after, 5 * 3600 - 3_000);
    assert_eq!(bill.top_up, 3_000, "the next hour is blocked again");
}

#[test]
fn a_forward_bill_stops_at_the_end_and_never_tops_up() {
    let d = deal(500, 7, 7 * 500);
    let bill = d.bill_at(10_000);
    assert_eq!(bill.payout, 3_500);
    assert_eq!(bill.paid_until, 1_500);
    assert_eq!(bill.top_up, 0);
    assert_eq!(bill.blocked_after, 0);
}

#[test]
fn a_short_balance_pays_only_whole_covered_seconds() {
    let d = deal(0, 10, 95);
    let bill = d.bill_at(1_100);
    assert_eq!(bill.payout, 95, "never more than is blocked");
    assert_eq!(bill.paid_until, 1_009, "9 whole seconds were covered");
}

#[test]
fn a_closed_spot_deal_bills_up_to_its_close() {
    let mut d = deal(0, 2, 10_000);
    d.status = DealStatus::Closed;
    d.end = 1_050;
    let bill = d.bill_at(5_000);
    assert_eq!(bill.payout, 100);
    assert_eq!(bill.top_up, 0);
    // Billing twice at the same time pays nothing more.
    let mut after = d.clone();
    after.last_bill = bill.paid_until;
    after.blocked = bill.blocked_after;
    assert_eq!(after.bill_at(5_000).payout, 0);
}
