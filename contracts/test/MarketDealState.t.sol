// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market} from "../src/Market.sol";

/// A deal is one stored word, the hash of its DealState. Every deal function
/// takes the state as calldata: a stale or forged one is refused, a closed
/// deal is gone, and the state can always be rebuilt from events alone
/// (MarketBase.deal checks the rebuilt state against the stored word).
contract MarketDealStateTest is MarketBase {
    uint256 internal constant T0 = 1_800_000_000;

    function setUp() public override {
        super.setUp();
        vm.warp(T0);
    }

    function mismatch(uint256 id) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(Market.DealStateMismatch.selector, id);
    }

    /// Variants of the current state that must all be refused.
    function forgeries(Market.DealState memory s) internal view returns (Market.DealState[] memory f) {
        f = new Market.DealState[](7);
        for (uint256 i; i < 7; ++i) {
            f[i] = Market.DealState(s.supplier, s.consumer, s.master, s.price, s.startTime, s.duration, s.lastBillTime);
        }
        f[0].supplier = stranger;
        f[1].consumer = stranger; // a stranger naming itself a party
        f[2].master = stranger; // redirecting payouts
        f[3].price = s.price - 1;
        f[4].startTime = s.startTime - 1;
        f[5].duration = 7 days;
        f[6].lastBillTime = s.lastBillTime + 1; // skipping owed time
    }

    function test_openStoresOneWord() public {
        uint256 id = openSpot();
        Market.DealState memory s = Market.DealState(supplier, consumer, supplier, PRICE, uint64(T0), 0, uint64(T0));
        assertEq(market.dealHashes(id), keccak256(abi.encode(s)), "hash of the state");
        assertEq(market.dealHash(s), keccak256(abi.encode(s)), "helper agrees");
    }

    function test_bill_refusesStaleAndForgedStates() public {
        uint256 id = openSpot();
        Market.DealState memory before = st(id);
        vm.warp(T0 + 100);
        vm.prank(supplier);
        market.bill(id, before);
        // The state before the bill is stale now.
        vm.warp(T0 + 200);
        vm.prank(supplier);
        vm.expectRevert(mismatch(id));
        market.bill(id, before);
        Market.DealState[] memory f = forgeries(st(id));
        for (uint256 i; i < f.length; ++i) {
            vm.prank(i == 1 ? stranger : supplier);
            vm.expectRevert(mismatch(id));
            market.bill(id, f[i]);
        }
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(supplier), FUND + 200 * PRICE, "paid for 200 s, once");
    }

    function test_close_refusesStaleAndForgedStates() public {
        uint256 id = openSpot();
        Market.DealState memory before = st(id);
        vm.warp(T0 + 100);
        vm.prank(supplier);
        market.bill(id, before);
        vm.prank(consumer);
        vm.expectRevert(mismatch(id));
        market.closeDeal(id, before, false);
        Market.DealState[] memory f = forgeries(st(id));
        for (uint256 i; i < f.length; ++i) {
            vm.prank(i == 1 ? stranger : consumer);
            vm.expectRevert(mismatch(id));
            market.closeDeal(id, f[i], i == 1);
        }
        Market.DealState memory s = st(id);
        vm.prank(consumer);
        market.closeDeal(id, s, false);
        // Closed: the word is gone; the last state is refused as inactive.
        assertEq(market.dealHashes(id), bytes32(0), "deleted");
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.closeDeal(id, s, false);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.bill(id, st(id));
    }

    function test_changeRequests_refuseStaleAndForgedStates() public {
        uint256 id = openSpot();
        Market.DealState memory before = st(id);
        vm.warp(T0 + 100);
        vm.prank(consumer);
        market.bill(id, before);

        vm.prank(supplier);
        vm.expectRevert(mismatch(id));
        market.createChangeRequest(id, before, 2 * PRICE, 0);
        Market.DealState[] memory f = forgeries(st(id));
        for (uint256 i; i < f.length; ++i) {
            vm.prank(i == 1 ? stranger : supplier);
            vm.expectRevert(mismatch(id));
            market.createChangeRequest(id, f[i], 2 * PRICE, 0);
        }

        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(consumer);
        vm.expectRevert(mismatch(id));
        market.approveChangeRequest(rid, before);
        vm.prank(consumer);
        vm.expectRevert(mismatch(id));
        market.cancelChangeRequest(rid, before);
        for (uint256 i; i < f.length; ++i) {
            vm.prank(i == 1 ? stranger : consumer);
            vm.expectRevert(mismatch(id));
            market.approveChangeRequest(rid, f[i]);
            vm.prank(i == 1 ? stranger : consumer);
            vm.expectRevert(mismatch(id));
            market.cancelChangeRequest(rid, f[i]);
        }
        // With the current state both work.
        vm.prank(consumer);
        market.approveChangeRequest(rid, st(id));
        assertEq(deal(id).price, 2 * PRICE, "applied");

        // A pending request of a closed deal can be neither approved nor cancelled.
        vm.prank(supplier);
        uint256 rid2 = market.createChangeRequest(id, st(id), 3 * PRICE, 0);
        Market.DealState memory last = st(id);
        vm.prank(consumer);
        market.closeDeal(id, last, false);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.cancelChangeRequest(rid2, last);
    }

    /// Two parties acting on the same state in the same block: the first
    /// wins, the second must resubmit with the state the first produced.
    function test_concurrentCallsOnOneStateSecondResubmits() public {
        uint256 id = openSpot();
        vm.warp(T0 + 100);
        Market.DealState memory s = st(id);
        vm.prank(supplier);
        market.bill(id, s);
        vm.prank(consumer);
        vm.expectRevert(mismatch(id));
        market.closeDeal(id, s, false);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 100 * PRICE, "paid once");
    }

    /// Every field, through every kind of change, rebuilt from events alone:
    /// deal() compares the rebuilt state with the stored word at each step.
    function test_stateRebuiltFromEventsAlone() public {
        vm.prank(supplier);
        market.registerWorker(master);
        vm.prank(master);
        market.confirmWorker(supplier);
        uint256 id = openWith(askOrder(PRICE, 3 days), bidOrder(2 * PRICE, 2 days));
        Market.DealState memory d = deal(id);
        assertEq(d.master, master, "master from DealOpened");
        assertEq(d.duration, 2 days, "duration from DealOpened");

        vm.warp(T0 + 5 hours);
        vm.prank(master);
        market.bill(id, st(id));
        assertEq(deal(id).lastBillTime, T0 + 5 hours, "lastBillTime from DealBilled");

        vm.warp(T0 + 6 hours);
        vm.prank(consumer);
        uint256 rid = market.createChangeRequest(id, st(id), 3 * PRICE, 3 days);
        deal(id);
        vm.warp(T0 + 7 hours);
        vm.prank(master);
        market.approveChangeRequest(rid, st(id));
        d = deal(id);
        assertEq(d.price, 3 * PRICE, "price from DealChanged");
        assertEq(d.duration, 3 days, "duration from DealChanged");
        assertEq(d.lastBillTime, T0 + 7 hours, "billed at the old terms first");

        vm.warp(T0 + 8 hours);
        vm.prank(supplier);
        market.createChangeRequest(id, st(id), PRICE, 3 days); // supplier cuts: at once
        d = deal(id);
        assertEq(d.price, PRICE, "cut");

        vm.warp(T0 + 4 days);
        vm.prank(consumer);
        market.bill(id, st(id));
        d = deal(id);
        assertEq(d.lastBillTime, T0 + 3 days, "stops at the end");
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        assertTrue(!active(id), "closed");
        assertEq(endOf(id), T0 + 3 days, "end from DealClosed");
    }
}
