// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market} from "../src/Market.sol";
import {SNM} from "../src/SNM.sol";

/// Change requests and the master/worker flow.
contract MarketChangesTest is MarketBase {
    uint256 internal constant T0 = 1_800_000_000;

    function setUp() public override {
        super.setUp();
        vm.warp(T0);
    }

    function status(uint256 requestId) internal view returns (Market.ChangeStatus s) {
        (,,,, s) = market.changeRequests(requestId);
    }

    // ------------------------------------------------ one-sided, immediate

    function test_supplierLowersPrice_appliesAtOnceAfterBillingOldPrice() public {
        uint256 id = openSpot();
        vm.warp(T0 + 100);
        vm.expectEmit(address(market));
        emit Market.ChangeRequestCreated(1, id, supplier, PRICE / 2, 0);
        vm.expectEmit(address(market));
        emit Market.ChangeRequestApproved(1, supplier);
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 100 * PRICE, 3600 * PRICE, uint64(T0 + 100));
        vm.expectEmit(address(market));
        emit Market.DealChanged(id, PRICE / 2, 0);
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), PRICE / 2, 0);
        assertEq(rid, 1, "id");
        assertEq(market.changeRequestCount(), 1, "count");
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Approved), "applied");
        assertEq(deal(id).price, PRICE / 2, "new price");
        assertEq((snm.balanceOf(supplier) - FUND), 100 * PRICE, "old price up to the change");
        vm.warp(T0 + 200);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq((snm.balanceOf(supplier) - FUND), 100 * PRICE + 100 * (PRICE / 2), "new price after");
    }

    function test_consumerRaisesPrice_appliesAtOnce() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Approved), "applied");
        assertEq(deal(id).price, 2 * PRICE, "raised");
        // The next bill blocks an hour at the new price.
        vm.warp(T0 + 10);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(blockedOf(id), 3600 * 2 * PRICE, "blocking follows the price");
    }

    function test_masterCountsAsSupplierSide() public {
        vm.prank(supplier);
        market.registerWorker(master);
        vm.prank(master);
        market.confirmWorker(supplier);
        uint256 id = openSpot();
        vm.prank(master);
        market.createChangeRequest(id, st(id), PRICE - 1, 0);
        assertEq(deal(id).price, PRICE - 1, "applied for the master");
    }

    // ------------------------------------------------------ needs approval

    function test_supplierRaisesPrice_waitsForConsumer() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Pending), "pending");
        assertEq(deal(id).price, PRICE, "unchanged");
        (uint64 dealId, uint96 price, uint40 duration, bool byConsumer,) = market.changeRequests(rid);
        assertEq(dealId, id, "deal");
        assertEq(price, 2 * PRICE, "price");
        assertEq(duration, 0, "duration");
        assertTrue(!byConsumer, "by supplier");

        vm.warp(T0 + 50);
        vm.expectEmit(address(market));
        emit Market.ChangeRequestApproved(rid, consumer);
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 50 * PRICE, 3600 * PRICE, uint64(T0 + 50));
        vm.expectEmit(address(market));
        emit Market.DealChanged(id, 2 * PRICE, 0);
        vm.prank(consumer);
        market.approveChangeRequest(rid, st(id));
        assertEq(deal(id).price, 2 * PRICE, "applied");
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Approved), "approved");
    }

    function test_consumerLowersPrice_waitsForSupplier() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        uint256 rid = market.createChangeRequest(id, st(id), PRICE / 2, 0);
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Pending), "pending");
        vm.prank(supplier);
        market.approveChangeRequest(rid, st(id));
        assertEq(deal(id).price, PRICE / 2, "applied");
    }

    function test_forwardDurationChange_needsBothSides() public {
        uint256 id = openForward(2 hours);
        // Even a consumer price rise is not one-sided when the term moves too.
        vm.prank(consumer);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 5 hours);
        assertEq(uint256(status(rid)), uint256(Market.ChangeStatus.Pending), "pending");
        vm.prank(supplier);
        market.approveChangeRequest(rid, st(id));
        assertEq(deal(id).duration, 5 hours, "longer");
        assertEq(endOf(id), T0 + 5 hours, "new end");
    }

    function test_approve_revertsForTheRequesterSide() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.NotRequestCounterparty.selector, supplier));
        market.approveChangeRequest(rid, st(id));
    }

    function test_approve_revertsForStranger() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.approveChangeRequest(rid, st(id));
    }

    function test_approve_revertsWhenNotPending() public {
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.ChangeRequestNotPending.selector, 5));
        market.approveChangeRequest(5, st(1));
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 applied = market.createChangeRequest(id, st(id), PRICE / 2, 0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.ChangeRequestNotPending.selector, applied));
        market.approveChangeRequest(applied, st(id));
    }

    function test_approve_revertsOnClosedDeal() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.approveChangeRequest(rid, st(id));
    }

    function test_approve_revertsWhenTheNewEndHasPassed() public {
        uint256 id = openForward(5 hours);
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), PRICE, 2 hours);
        vm.warp(T0 + 3 hours);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidDuration.selector, 2 hours));
        market.approveChangeRequest(rid, st(id));
    }

    function test_approve_whenConsumerCannotPayClosesWithoutChanging() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(consumer);
        snm.approve(address(market), 0);
        vm.warp(T0 + 10);
        vm.prank(consumer);
        market.approveChangeRequest(rid, st(id));
        assertTrue(!active(id), "closed");
        assertEq(deal(id).price, PRICE, "not changed");
        assertEq(snm.balanceOf(supplier), FUND + 10 * PRICE, "paid at the old price");
    }

    function test_priceRiseTheConsumerCannotFundReverts() public {
        uint256 id = openSpot();
        Market.DealState memory s = st(id);
        vm.startPrank(consumer);
        snm.transfer(stranger, snm.balanceOf(consumer));
        // Nothing is owed yet (same second), but the larger blocking is.
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientBalance.selector, consumer, 0, 3600 * PRICE));
        market.createChangeRequest(id, s, 2 * PRICE, 0);
        vm.stopPrank();
        // forge records the events of a call that then reverted: drop them.
        vm.getRecordedLogs();
        assertEq(deal(id).price, PRICE, "unchanged");
    }

    function test_priceCutRefundsTheBlockingDifference() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        market.createChangeRequest(id, st(id), PRICE / 4, 0);
        assertEq(snm.balanceOf(consumer), FUND - 3600 * (PRICE / 4), "3/4 of the blocking back");
        assertEq(snm.balanceOf(address(market)), 3600 * (PRICE / 4), "market holds the new blocking");
        assertEq(blockedOf(id), 3600 * (PRICE / 4), "reported");
    }

    // --------------------------------------------------------------- cancel

    function test_cancel_byRequesterOrOtherSide() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 r1 = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.expectEmit(address(market));
        emit Market.ChangeRequestCancelled(r1, supplier);
        vm.prank(supplier);
        market.cancelChangeRequest(r1, st(id));
        assertEq(uint256(status(r1)), uint256(Market.ChangeStatus.Cancelled), "withdrawn");

        vm.prank(supplier);
        uint256 r2 = market.createChangeRequest(id, st(id), 3 * PRICE, 0);
        vm.prank(consumer);
        market.cancelChangeRequest(r2, st(id));
        assertEq(uint256(status(r2)), uint256(Market.ChangeStatus.Cancelled), "rejected");

        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.ChangeRequestNotPending.selector, r2));
        market.approveChangeRequest(r2, st(id));
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.ChangeRequestNotPending.selector, r2));
        market.cancelChangeRequest(r2, st(id));
        assertEq(deal(id).price, PRICE, "never applied");
    }

    function test_cancel_revertsForStranger() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(id, st(id), 2 * PRICE, 0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.cancelChangeRequest(rid, st(id));
    }

    // --------------------------------------------------------------- create

    function test_create_reverts() public {
        uint256 spot = openSpot();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.createChangeRequest(spot, st(spot), PRICE, 0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, 99));
        market.createChangeRequest(99, st(99), PRICE, 0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.PriceTooHigh.selector, uint256(type(uint96).max) + 1));
        market.createChangeRequest(spot, st(spot), uint256(type(uint96).max) + 1, 0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidDuration.selector, 1 hours));
        market.createChangeRequest(spot, st(spot), PRICE, 1 hours);

        Market.Order memory ask = askOrder(PRICE, 10 hours);
        ask.tag = "fwd";
        uint256 fwd = openWith(ask, bidOrder(PRICE, 5 hours));
        vm.startPrank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidDuration.selector, 0));
        market.createChangeRequest(fwd, st(fwd), PRICE, 0);
        uint64 tooLong = uint64(type(uint40).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidDuration.selector, tooLong));
        market.createChangeRequest(fwd, st(fwd), PRICE, tooLong);
        vm.warp(T0 + 2 hours);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidDuration.selector, 1 hours));
        market.createChangeRequest(fwd, st(fwd), PRICE, 1 hours);
        // Ending exactly now is allowed.
        market.createChangeRequest(fwd, st(fwd), PRICE, 2 hours);
        vm.stopPrank();
    }

    // -------------------------------------------------------------- workers

    function test_workerFlow_registerConfirmRemove() public {
        assertEq(market.masterOf(supplier), supplier, "own master by default");
        vm.expectEmit(address(market));
        emit Market.WorkerAnnounced(supplier, master);
        vm.prank(supplier);
        market.registerWorker(master);
        assertEq(market.pendingMaster(supplier), master, "pending");
        assertEq(market.masterOf(supplier), supplier, "not before confirmation");

        vm.expectEmit(address(market));
        emit Market.WorkerConfirmed(supplier, master);
        vm.prank(master);
        market.confirmWorker(supplier);
        assertEq(market.masterOf(supplier), master, "confirmed");
        assertEq(market.pendingMaster(supplier), address(0), "request consumed");

        vm.expectEmit(address(market));
        emit Market.WorkerRemoved(supplier, master);
        vm.prank(supplier);
        market.removeWorker(supplier, master);
        assertEq(market.masterOf(supplier), supplier, "removed");
    }

    function test_masterMayRemoveWorker_openDealsKeepPayingIt() public {
        vm.prank(supplier);
        market.registerWorker(master);
        vm.prank(master);
        market.confirmWorker(supplier);
        uint256 id = openSpot();
        vm.prank(master);
        market.removeWorker(supplier, master);
        vm.warp(T0 + 10);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(master), 10 * PRICE, "recorded master paid");
    }

    function test_workerFlow_reverts() public {
        vm.startPrank(supplier);
        vm.expectRevert(Market.ZeroAddress.selector);
        market.registerWorker(address(0));
        vm.expectRevert(Market.SelfMaster.selector);
        market.registerWorker(supplier);
        market.registerWorker(master);
        vm.stopPrank();

        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NoPendingWorker.selector, supplier));
        market.confirmWorker(supplier);
        vm.prank(master);
        market.confirmWorker(supplier);
        vm.prank(master);
        vm.expectRevert(abi.encodeWithSelector(Market.NoPendingWorker.selector, supplier));
        market.confirmWorker(supplier);

        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.AlreadyHasMaster.selector, supplier, master));
        market.registerWorker(stranger);

        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotWorkerOrMaster.selector, stranger));
        market.removeWorker(supplier, master);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotWorkerOf.selector, supplier, stranger));
        market.removeWorker(supplier, stranger);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.NotWorkerOf.selector, supplier, address(0)));
        market.removeWorker(supplier, address(0));
    }
}
