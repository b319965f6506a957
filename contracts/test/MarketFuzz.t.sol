// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market} from "../src/Market.sol";

/// Billing arithmetic under random prices, durations and bill times, checked
/// against a direct model: the master earns price x billed seconds (never
/// past a forward deal's end), the consumer pays exactly that, and the Market
/// holds exactly the blocking the deal reports.
contract MarketFuzzTest is MarketBase {
    uint256 internal constant T0 = 1_800_000_000;

    function setUp() public override {
        super.setUp();
        vm.warp(T0);
        // Plenty of money for high prices.
        snm.transfer(consumer, 100_000_000 ether);
    }

    function model(uint256 price, uint64 duration, uint256 t) internal pure returns (uint256) {
        uint256 secs = t - T0;
        if (duration != 0 && secs > duration) secs = duration;
        return price * secs;
    }

    /// `viaSigned` opens the deal from signed orders instead of placed ones.
    function testFuzz_billing(uint256 price, uint64 duration, uint256[3] memory steps, bool spot, bool viaSigned)
        public
    {
        price = bound(price, 1, 1e18); // up to 1 SNM per second
        duration = spot ? 0 : uint64(bound(duration, 1, 10 days));
        uint256 consumerStart = snm.balanceOf(consumer);
        uint256 id = viaSigned
            ? market.openDeal(signed(askOrder(price, duration), 1), signed(bidOrder(price, duration), 1))
            : openWith(askOrder(price, duration), bidOrder(price, duration));

        uint256 t = T0;
        for (uint256 i; i < 3; ++i) {
            t += bound(steps[i], 0, 3 days);
            vm.warp(t);
            vm.prank(i % 2 == 0 ? supplier : consumer);
            market.bill(id, st(id));
            uint256 earned = snm.balanceOf(supplier) - FUND;
            assertEq(earned, model(price, duration, t), "payout = price x billed seconds");
            assertEq(snm.balanceOf(address(market)), blockedOf(id), "market holds exactly the blocking");
            assertEq(consumerStart - snm.balanceOf(consumer), earned + blockedOf(id), "consumer paid payout + blocking");
            uint256 expectBlocked =
                duration == 0 ? price * 3600 : price * _min(1 days, uint256(duration) - _min(duration, t - T0));
            assertEq(blockedOf(id), expectBlocked, "blocking = next period");
        }

        t += bound(steps[0] ^ steps[2], 0, 1 days);
        vm.warp(t);
        if (duration != 0 && t < T0 + duration) vm.warp(t = T0 + duration);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        uint256 total = snm.balanceOf(supplier) - FUND;
        assertEq(total, model(price, duration, t), "final payout");
        assertEq(consumerStart - snm.balanceOf(consumer), total, "consumer paid exactly the payout");
        assertEq(snm.balanceOf(address(market)), 0, "nothing left behind");
    }

    /// A consumer that can afford only part of the bill: the supplier never
    /// gets more than the consumer put in, and nothing is stranded.
    function testFuzz_insolventConsumer(uint256 price, uint256 wallet, uint256 elapsed) public {
        price = bound(price, 1, 1e15);
        elapsed = bound(elapsed, 1, 30 days);
        address poor = address(0x9002);
        wallet = bound(wallet, price * 3600, price * 3600 * 5);
        snm.transfer(poor, wallet);
        vm.prank(poor);
        snm.approve(address(market), type(uint256).max);
        Market.Order memory bid = bidOrder(price, 0);
        bid.author = poor;
        uint256 id = openWith(askOrder(price, 0), bid);

        vm.warp(T0 + elapsed);
        vm.prank(supplier);
        market.bill(id, st(id));
        uint256 earned = snm.balanceOf(supplier) - FUND;
        uint256 spent = wallet - snm.balanceOf(poor);
        assertLe(earned, wallet, "payout <= what the consumer had");
        assertEq(earned + snm.balanceOf(address(market)), spent, "every wei the consumer spent is paid or blocked");
        if (!active(id)) {
            assertEq(snm.balanceOf(address(market)), 0, "closed: nothing stranded");
            assertEq(earned, _min(price * elapsed, price * 3600), "closed: paid what the blocking covered");
        } else {
            assertEq(earned, price * elapsed, "solvent: paid in full");
        }
    }

    /// openDeal at the ask's price refunds a placed bid's excess exactly and pulls
    /// exactly the blocking for a signed bid.
    function testFuzz_openRefundsExcess(uint256 askPrice, uint256 bidPrice, uint64 duration) public {
        bidPrice = bound(bidPrice, 1, 1e18);
        askPrice = bound(askPrice, 0, bidPrice);
        duration = uint64(bound(duration, 0, 3 days));
        uint256 before = snm.balanceOf(consumer);
        uint256 id = openWith(askOrder(askPrice, duration), bidOrder(bidPrice, duration));
        assertEq(before - snm.balanceOf(consumer), market.frozenSum(askPrice, duration), "blocked at the ask price");
        assertEq(blockedOf(id), market.frozenSum(askPrice, duration), "deal blocking");
        // A signed bid at the same prices pulls exactly the same.
        before = snm.balanceOf(consumer);
        Market.Order memory ask2 = askOrder(askPrice, duration);
        ask2.tag = "signed";
        id = market.openDeal(signed(ask2, 1), signed(bidOrder(bidPrice, duration), 1));
        assertEq(before - snm.balanceOf(consumer), market.frozenSum(askPrice, duration), "signed: the blocking only");
        assertEq(blockedOf(id), market.frozenSum(askPrice, duration), "deal blocking");
    }

    /// A price change mid-deal: billing splits exactly at the change.
    function testFuzz_priceChange(uint256 p1, uint256 p2, uint256 t1, uint256 t2) public {
        p1 = bound(p1, 1, 1e18);
        p2 = bound(p2, 1, 1e18);
        t1 = bound(t1, 0, 2 days);
        t2 = bound(t2, 0, 2 days);
        uint256 consumerStart = snm.balanceOf(consumer);
        uint256 id = openWith(askOrder(p1, 0), bidOrder(p1, 0));
        vm.warp(T0 + t1);
        vm.prank(consumer);
        uint256 rid = market.createChangeRequest(id, st(id), p2, 0);
        (,,,, Market.ChangeStatus cs) = market.changeRequests(rid);
        if (cs == Market.ChangeStatus.Pending) {
            vm.prank(supplier);
            market.approveChangeRequest(rid, st(id));
        }
        assertEq(snm.balanceOf(address(market)), p2 * 3600, "blocking follows the new price at once");
        vm.warp(T0 + t1 + t2);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        uint256 earned = snm.balanceOf(supplier) - FUND;
        assertEq(earned, p1 * t1 + p2 * t2, "split at the change");
        assertEq(consumerStart - snm.balanceOf(consumer), earned, "consumer paid exactly that");
        assertEq(snm.balanceOf(address(market)), 0, "nothing left");
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
