// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {IERC20} from "../src/IERC20.sol";
import {MockToken} from "./utils/MockToken.sol";

/// openDeal's effects, bill, closeDeal and quickBuy.
contract MarketDealsTest is MarketBase {
    uint256 internal constant T0 = 1_800_000_000;

    function setUp() public override {
        super.setUp();
        vm.warp(T0);
    }

    // ----------------------------------------------------------------- open

    function test_openDeal_recordsDealAndEmits() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        vm.expectEmit(address(market));
        emit Market.DealOpened(1, supplier, consumer, supplier, askId, bidId, PRICE, 0, uint64(T0), PRICE * 3600);
        vm.prank(stranger); // anyone may open a matching pair
        uint256 id = market.openDeal(placed(askId, ask), placed(bidId, bid));

        Market.DealState memory d = deal(id);
        uint256 endTime = endOf(id);
        assertEq(id, 1, "id");
        assertEq(market.dealCount(), 1, "count");
        assertEq(d.supplier, supplier, "supplier");
        assertEq(d.consumer, consumer, "consumer");
        assertEq(d.master, supplier, "no master: supplier is paid");
        assertEq(d.price, PRICE, "price");
        assertEq(d.duration, 0, "spot");
        assertEq(d.startTime, T0, "start");
        assertEq(d.lastBillTime, T0, "last bill");
        assertEq(blockedOf(id), PRICE * 3600, "blocked");
        assertEq((snm.balanceOf(supplier) - FUND), 0, "payout");
        assertTrue(active(id), "active");
        assertEq(market.dealHashes(id), keccak256(abi.encode(d)), "one word: the state's hash");
        assertEq(endTime, 0, "open spot deal has no end");
    }

    function test_openDeal_runsAtAskPriceAndRefundsTheDifference() public {
        uint256 id = openWith(askOrder(PRICE, 0), bidOrder(3 * PRICE, 0));
        assertEq(deal(id).price, PRICE, "ask price");
        assertEq(blockedOf(id), PRICE * 3600, "blocked at ask price");
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 3600, "excess back");
        assertEq(snm.balanceOf(address(market)), PRICE * 3600, "market holds the blocking");
    }

    function test_openDeal_forwardEndTime() public {
        uint256 id = openForward(3 hours);
        uint256 endTime = endOf(id);
        assertEq(endTime, T0 + 3 hours, "end");
        assertEq(blockedOf(id), PRICE * 3 hours, "whole short deal blocked");
    }

    function test_dealHashes_unknownIsEmpty() public view {
        assertEq(market.dealHashes(42), bytes32(0), "none");
    }

    function test_dealInfo_derivesBlockedAndEnd() public view {
        Market.DealState memory s = Market.DealState(supplier, consumer, supplier, PRICE, uint64(T0), 0, uint64(T0));
        (uint256 blocked, uint256 endTime) = market.dealInfo(s);
        assertEq(blocked, PRICE * 1 hours, "spot: an hour");
        assertEq(endTime, 0, "spot: no end");
        s.duration = 3 days;
        s.lastBillTime = uint64(T0 + 2 days + 1 hours);
        (blocked, endTime) = market.dealInfo(s);
        assertEq(blocked, PRICE * 23 hours, "forward: the rest, under a day");
        assertEq(endTime, T0 + 3 days, "forward: start + duration");
        assertEq(market.dealHash(s), keccak256(abi.encode(s)), "dealHash = keccak of the ABI encoding");
    }

    // ----------------------------------------------------------------- bill

    function test_billSpot_paysElapsedAndKeepsAnHourBlocked() public {
        uint256 id = openSpot();
        vm.warp(T0 + 600);
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 600 * PRICE, 3600 * PRICE, uint64(T0 + 600));
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(supplier), FUND + 600 * PRICE, "paid 10 min");
        assertEq(snm.balanceOf(consumer), FUND - 4200 * PRICE, "consumer: 1h blocked + 10 min");
        assertEq(snm.balanceOf(address(market)), 3600 * PRICE, "still 1h blocked");
        Market.DealState memory d = deal(id);
        assertEq((snm.balanceOf(supplier) - FUND), 600 * PRICE, "payout");
        assertEq(d.lastBillTime, T0 + 600, "billed to now");
        assertEq(blockedOf(id), 3600 * PRICE, "blocked");
    }

    function test_billSpot_lateBillChargesAllElapsedTime() public {
        uint256 id = openSpot();
        vm.warp(T0 + 5 hours);
        vm.prank(consumer);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(supplier), FUND + 5 hours * PRICE, "all 5 hours");
        assertEq(blockedOf(id), 3600 * PRICE, "blocking intact");
    }

    function test_bill_twiceInOneSecondPaysOnce() public {
        uint256 id = openSpot();
        vm.warp(T0 + 100);
        vm.prank(supplier);
        market.bill(id, st(id));
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq((snm.balanceOf(supplier) - FUND), 100 * PRICE, "once");
        assertEq(snm.balanceOf(supplier), FUND + 100 * PRICE, "once");
    }

    function test_billShortForward_paysFromTheBlocking() public {
        uint256 id = openForward(2 hours);
        vm.warp(T0 + 1 hours);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(supplier), FUND + 1 hours * PRICE, "paid 1h");
        assertEq(snm.balanceOf(consumer), FUND - 2 hours * PRICE, "no top-up needed");
        assertEq(blockedOf(id), 1 hours * PRICE, "1h left blocked");
    }

    function test_billForward_stopsAtTheEnd() public {
        uint256 id = openForward(2 hours);
        vm.warp(T0 + 10 hours);
        vm.prank(supplier);
        market.bill(id, st(id));
        Market.DealState memory d = deal(id);
        assertEq((snm.balanceOf(supplier) - FUND), 2 hours * PRICE, "only the agreed 2h");
        assertEq(d.lastBillTime, T0 + 2 hours, "billed to end");
        assertEq(blockedOf(id), 0, "nothing left");
        vm.warp(T0 + 11 hours);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq((snm.balanceOf(supplier) - FUND), 2 hours * PRICE, "nothing more after the end");
    }

    function test_billLongForward_topsUpToADay() public {
        uint256 id = openForward(3 days);
        vm.warp(T0 + 12 hours);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(blockedOf(id), 1 days * PRICE, "a day ahead again");
        assertEq(snm.balanceOf(consumer), FUND - 36 hours * PRICE, "consumer paid 12h + 1 day blocked");
        // In the last hour the blocking target is what remains of the term.
        vm.warp(T0 + 3 days - 1 hours);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(blockedOf(id), 1 hours * PRICE, "only the last hour blocked");
        assertEq((snm.balanceOf(supplier) - FUND), (3 days - 1 hours) * PRICE, "payout");
        // Half an hour later the blocking covers the rest: no top-up, it shrinks.
        uint256 consumerBefore = snm.balanceOf(consumer);
        vm.warp(T0 + 3 days - 30 minutes);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(consumer), consumerBefore, "no top-up");
        assertEq(blockedOf(id), 30 minutes * PRICE, "paid from the blocking");
    }

    function test_bill_consumerCannotPayClosesTheDeal() public {
        uint256 id = openSpot();
        // The consumer empties its wallet: the next top-up is impossible.
        vm.startPrank(consumer);
        snm.transfer(stranger, snm.balanceOf(consumer));
        vm.stopPrank();
        vm.warp(T0 + 1000);
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 1000 * PRICE, 0, uint64(T0 + 1000));
        vm.expectEmit(address(market));
        emit Market.DealClosed(id, address(0), uint64(T0 + 1000), 2600 * PRICE, false);
        vm.prank(supplier);
        market.bill(id, st(id));
        assertTrue(!active(id), "closed: word deleted");
        assertEq(endOf(id), T0 + 1000, "ended at the bill");
        assertEq(snm.balanceOf(supplier), FUND + 1000 * PRICE, "supplier paid for the time");
        assertEq(snm.balanceOf(consumer), 2600 * PRICE, "rest of the blocking back");
        assertEq(snm.balanceOf(address(market)), 0, "market empty");
    }

    function test_bill_revokedAllowanceClosesAndCapsPayoutAtTheBlocking() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        snm.approve(address(market), 0);
        vm.warp(T0 + 2 hours); // owes 2h, only 1h blocked
        vm.prank(supplier);
        market.bill(id, st(id));
        assertEq(snm.balanceOf(supplier), FUND + 3600 * PRICE, "capped at the blocking");
        assertEq((snm.balanceOf(supplier) - FUND), 3600 * PRICE, "payout = blocked");
        assertTrue(!active(id), "closed");
    }

    function test_bill_revertsForStrangerAndUnknownOrClosedDeal() public {
        uint256 id = openSpot();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.bill(id, st(id));
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, 7));
        market.bill(7, st(7));
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.bill(id, st(id));
    }

    // ---------------------------------------------------------------- close

    function test_closeSpotByConsumer_billsAndRefunds() public {
        uint256 id = openSpot();
        vm.warp(T0 + 300);
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 300 * PRICE, 0, uint64(T0 + 300));
        vm.expectEmit(address(market));
        emit Market.DealClosed(id, consumer, uint64(T0 + 300), 3300 * PRICE, false);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(consumer), FUND - 300 * PRICE, "paid exactly 5 min");
        assertEq(snm.balanceOf(supplier), FUND + 300 * PRICE, "earned 5 min");
        assertEq(snm.balanceOf(address(market)), 0, "nothing left");
        assertTrue(!active(id), "closed");
        assertEq(endOf(id), T0 + 300, "end");
        assertEq(blockedOf(id), 0, "blocked");
    }

    function test_closeSpotBySupplier() public {
        uint256 id = openSpot();
        vm.warp(T0 + 60);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 60 * PRICE, "paid");
    }

    function test_closeSpotByMaster_paysTheMaster() public {
        vm.prank(supplier);
        market.registerWorker(master);
        vm.prank(master);
        market.confirmWorker(supplier);
        uint256 id = openSpot();
        vm.warp(T0 + 60);
        vm.prank(master);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(master), 60 * PRICE, "master paid");
        assertEq(snm.balanceOf(supplier), FUND, "worker not paid");
    }

    function test_close_revertsForSomeoneElsesDeal() public {
        uint256 id = openSpot();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.closeDeal(id, st(id), false);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotDealParty.selector, stranger));
        market.closeDeal(id, st(id), true);
    }

    function test_close_revertsTwice() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotActive.selector, id));
        market.closeDeal(id, st(id), false);
    }

    function test_closeForwardEarly_revertsForEitherSideWithoutBlacklisting() public {
        uint256 id = openForward(2 hours);
        vm.warp(T0 + 1 hours);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotEnded.selector, T0 + 2 hours));
        market.closeDeal(id, st(id), false);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotEnded.selector, T0 + 2 hours));
        market.closeDeal(id, st(id), false);
        // One second before the end is still early; at the end it may close.
        vm.warp(T0 + 2 hours - 1);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DealNotEnded.selector, T0 + 2 hours));
        market.closeDeal(id, st(id), false);
        vm.warp(T0 + 2 hours);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
    }

    function test_onlyConsumerMayBlacklist() public {
        uint256 id = openSpot();
        vm.prank(supplier);
        vm.expectRevert(Market.OnlyConsumerBlacklists.selector);
        market.closeDeal(id, st(id), true);
    }

    function test_closeForwardEarlyWithBlacklist_byConsumer() public {
        uint256 id = openForward(2 hours);
        vm.warp(T0 + 30 minutes);
        vm.expectEmit(address(market));
        emit Market.DealClosed(id, consumer, uint64(T0 + 30 minutes), 90 minutes * PRICE, true);
        vm.expectEmit(address(blacklist));
        emit BlacklistEvents.Blacklisted(consumer, supplier);
        vm.prank(consumer);
        market.closeDeal(id, st(id), true);
        assertTrue(blacklist.isListed(consumer, supplier), "supplier blacklisted");
        assertEq(snm.balanceOf(consumer), FUND - 30 minutes * PRICE, "paid only the time used");
        // The blacklisting bites at the next match.
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.tag = "again";
        uint256 askId = place(ask);
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 bidId = place(bid);
        vm.expectRevert(Market.SupplierBlacklisted.selector);
        market.openDeal(placed(askId, ask), placed(bidId, bid));
    }

    function test_closeForwardAfterEnd_bySupplier() public {
        uint256 id = openForward(2 hours);
        vm.warp(T0 + 2 hours);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 2 hours * PRICE, "full term paid");
        assertEq(snm.balanceOf(consumer), FUND - 2 hours * PRICE, "nothing more");
        uint256 endTime = endOf(id);
        assertEq(endTime, T0 + 2 hours, "closed deal ends at its end");
    }

    function test_closeLongForwardAfterEnd_refundsLeftoverBlocking() public {
        uint256 id = openForward(3 days);
        vm.warp(T0 + 1 days);
        vm.prank(supplier);
        market.bill(id, st(id));
        vm.warp(T0 + 4 days);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 3 days * PRICE, "paid the term");
        assertEq(snm.balanceOf(consumer), FUND - 3 days * PRICE, "paid only the term");
        assertEq(snm.balanceOf(address(market)), 0, "market empty");
    }

    function test_close_blockingCoveringTheTimeNeedsNothingFromConsumer() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        snm.approve(address(market), 0); // the consumer could not pay more
        vm.warp(T0 + 100);
        vm.expectEmit(address(market));
        emit Market.DealClosed(id, supplier, uint64(T0 + 100), 3500 * PRICE, false);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 100 * PRICE, "paid from the blocking");
        assertEq(snm.balanceOf(consumer), FUND - 100 * PRICE, "rest refunded");
    }

    function test_close_lateWhenConsumerCannotPayClosesInsolvent() public {
        uint256 id = openSpot();
        vm.prank(consumer);
        snm.approve(address(market), 0);
        vm.warp(T0 + 2 hours); // owes 2h, 1h blocked
        vm.expectEmit(address(market));
        emit Market.DealBilled(id, 3600 * PRICE, 0, uint64(T0 + 2 hours));
        vm.expectEmit(address(market));
        emit Market.DealClosed(id, address(0), uint64(T0 + 2 hours), 0, false);
        vm.prank(supplier);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 3600 * PRICE, "what the blocking covers");
    }

    function test_close_lateSpotTakesTheRestFromConsumer() public {
        uint256 id = openSpot();
        vm.warp(T0 + 3 hours);
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 3 hours * PRICE, "all 3 hours");
        assertEq(snm.balanceOf(consumer), FUND - 3 hours * PRICE, "consumer paid exactly that");
        assertEq(snm.balanceOf(address(market)), 0, "market empty");
    }

    function test_close_insolventWithBlacklistStillBlacklists() public {
        uint256 id = openSpot();
        vm.startPrank(consumer);
        snm.approve(address(market), 0);
        vm.warp(T0 + 2 hours);
        market.closeDeal(id, st(id), true);
        vm.stopPrank();
        assertTrue(blacklist.isListed(consumer, supplier), "listed");
    }

    // ------------------------------------------------------------- quickBuy

    function test_quickBuy_placesBidAndOpens() public {
        Market.Order memory ask = askOrder(PRICE, 4 hours);
        uint256 askId = place(ask);
        Market.Order memory implied = Market.Order({
            orderType: 1,
            author: consumer,
            counterparty: supplier,
            duration: 2 hours,
            price: PRICE,
            netflags: ask.netflags,
            identityLevel: 0,
            blacklist: address(0),
            tag: ask.tag,
            benchmarks: ask.benchmarks
        });
        vm.expectEmit(address(market));
        emit Market.OrderPlaced(askId + 1, 1, consumer, implied);
        vm.expectEmit(address(market));
        emit Market.DealOpened(
            1, supplier, consumer, supplier, askId, askId + 1, PRICE, 2 hours, uint64(T0), 2 hours * PRICE
        );
        vm.prank(consumer);
        uint256 id = market.quickBuy(placed(askId, ask), 2 hours);
        assertEq(market.orderHashes(askId), bytes32(0), "ask consumed");
        assertEq(market.orderHashes(askId + 1), bytes32(0), "bid never left active");
        assertEq(deal(id).duration, 2 hours, "duration");
        assertEq(snm.balanceOf(consumer), FUND - 2 hours * PRICE, "blocked");
    }

    function test_quickBuy_spot() public {
        uint256 askId = place(askOrder(PRICE, 0));
        vm.prank(consumer);
        uint256 id = market.quickBuy(placed(askId, askOrder(PRICE, 0)), 0);
        assertEq(blockedOf(id), 3600 * PRICE, "1h blocked");
    }

    function test_quickBuy_reverts() public {
        Market.Order memory ask = askOrder(PRICE, 1 hours);
        uint256 askId = place(ask);
        vm.startPrank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, askId + 1));
        market.quickBuy(placed(askId + 1, ask), 1 hours);
        vm.expectRevert(Market.DurationMismatch.selector);
        market.quickBuy(placed(askId, ask), 2 hours);
        vm.expectRevert(Market.DurationMismatch.selector);
        market.quickBuy(placed(askId, ask), 0);
        vm.stopPrank();

        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 bidId = place(bid);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.WrongOrderType.selector, bidId));
        market.quickBuy(placed(bidId, bid), 0);

        Market.Order memory free = askOrder(0, 0);
        uint256 freeId = place(free);
        vm.prank(consumer);
        vm.expectRevert(Market.ZeroPrice.selector);
        market.quickBuy(placed(freeId, free), 0);
    }

    function test_quickBuy_enforcesPartyRules() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.identityLevel = 1;
        uint256 askId = place(ask);
        vm.prank(consumer);
        vm.expectRevert(Market.ConsumerLevelTooLow.selector);
        market.quickBuy(placed(askId, ask), 0);

        Market.Order memory named = askOrder(PRICE, 0);
        named.counterparty = stranger;
        uint256 namedId = place(named);
        vm.prank(consumer);
        vm.expectRevert(Market.AskCounterpartyMismatch.selector);
        market.quickBuy(placed(namedId, named), 0);

        Market.Order memory plain = askOrder(PRICE, 0);
        plain.tag = "plain";
        uint256 plainId = place(plain);
        vm.prank(supplier);
        blacklist.add(consumer);
        vm.prank(consumer);
        vm.expectRevert(Market.ConsumerBlacklisted.selector);
        market.quickBuy(placed(plainId, plain), 0);
        vm.prank(supplier);
        blacklist.remove(consumer);
        vm.prank(consumer);
        blacklist.add(supplier);
        vm.prank(consumer);
        vm.expectRevert(Market.SupplierBlacklisted.selector);
        market.quickBuy(placed(plainId, plain), 0);
    }

    // ------------------------------------------------------ failing tokens

    function test_tokenReturningFalseReverts() public {
        MockToken t = new MockToken(address(this), SUPPLY);
        Market m = new Market(IERC20(address(t)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        t.transfer(consumer, FUND);
        vm.prank(consumer);
        t.approve(address(m), type(uint256).max);
        t.setReturnFalse(true);
        Market.Order memory bid = bidOrder(PRICE, 0);
        vm.prank(consumer);
        vm.expectRevert(Market.TransferFailed.selector);
        m.placeOrder(bid);

        t.setReturnFalse(false);
        vm.prank(consumer);
        m.placeOrder(bid);
        t.setReturnFalse(true);
        vm.prank(consumer);
        vm.expectRevert(Market.TransferFailed.selector);
        m.cancelOrder(1, bid);
    }
}

/// Blacklist's events, for expectEmit on the Market's close path.
library BlacklistEvents {
    event Blacklisted(address indexed owner, address indexed who);
}
