// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market} from "../src/Market.sol";

/// openDeal: the match rule, each clause on its own (the default ask and bid
/// of MarketBase match; every test breaks exactly one clause), its edges, and
/// the order checks in front of it.
contract MarketMatchTest is MarketBase {
    function expectNoMatch(Market.Order memory ask, Market.Order memory bid, bytes memory err) internal {
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        vm.expectRevert(err);
        market.openDeal(placed(askId, ask), placed(bidId, bid));
        // Nothing was consumed.
        assertEq(market.orderHashes(askId), keccak256(abi.encode(ask)), "ask still active");
        assertEq(market.orderHashes(bidId), keccak256(abi.encode(bid)), "bid still active");
    }

    function expectMatch(Market.Order memory ask, Market.Order memory bid) internal returns (uint256) {
        return openWith(ask, bid);
    }

    // ------------------------------------------------------------ benchmarks

    function test_eachBenchmarkBelowBidFails() public {
        for (uint256 i; i < 13; ++i) {
            Market.Order memory ask = askOrder(PRICE, 0);
            Market.Order memory bid = bidOrder(PRICE, 0);
            bid.benchmarks[i] = 101; // ask offers 100 everywhere
            expectNoMatch(ask, bid, abi.encodeWithSelector(Market.BenchmarkNotMet.selector, i));
        }
    }

    function test_equalBenchmarksMatch() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.benchmarks = benches(100);
        expectMatch(askOrder(PRICE, 0), bid);
    }

    // -------------------------------------------------------------- netflags

    function test_netflagsNotCoveredFails() public {
        for (uint256 flag = 1; flag <= 4; flag <<= 1) {
            Market.Order memory ask = askOrder(PRICE, 0);
            ask.netflags = 7 & ~flag;
            Market.Order memory bid = bidOrder(PRICE, 0);
            bid.netflags = flag;
            expectNoMatch(ask, bid, abi.encodeWithSelector(Market.NetflagsNotCovered.selector));
        }
    }

    function test_netflagsSubsetMatches() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.netflags = 5;
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.netflags = 4;
        expectMatch(ask, bid);
        Market.Order memory ask2 = askOrder(PRICE, 0);
        ask2.netflags = 0;
        Market.Order memory bid2 = bidOrder(PRICE, 0);
        bid2.netflags = 0;
        expectMatch(ask2, bid2);
    }

    // ----------------------------------------------------------------- price

    function test_askAboveBidPriceFails() public {
        expectNoMatch(
            askOrder(PRICE + 1, 0), bidOrder(PRICE, 0), abi.encodeWithSelector(Market.PriceNotMatched.selector)
        );
    }

    function test_equalPricesMatch() public {
        expectMatch(askOrder(PRICE, 0), bidOrder(PRICE, 0));
    }

    // -------------------------------------------------------------- duration

    function test_spotBidForwardAskFails() public {
        expectNoMatch(
            askOrder(PRICE, 1 hours), bidOrder(PRICE, 0), abi.encodeWithSelector(Market.DurationMismatch.selector)
        );
    }

    function test_forwardBidSpotAskFails() public {
        expectNoMatch(
            askOrder(PRICE, 0), bidOrder(PRICE, 1 hours), abi.encodeWithSelector(Market.DurationMismatch.selector)
        );
    }

    function test_askShorterThanBidFails() public {
        expectNoMatch(
            askOrder(PRICE, 1 hours - 1),
            bidOrder(PRICE, 1 hours),
            abi.encodeWithSelector(Market.DurationMismatch.selector)
        );
    }

    function test_askLongerOrEqualMatchesAndDealTakesBidDuration() public {
        uint256 id = expectMatch(askOrder(PRICE, 5 hours), bidOrder(PRICE, 2 hours));
        assertEq(deal(id).duration, 2 hours, "bid's duration");
        expectMatch(askOrder(PRICE, 2 hours), bidOrder(PRICE, 2 hours));
    }

    // -------------------------------------------------------- identity level

    function test_consumerBelowAsksLevelFails() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.identityLevel = 2;
        giveLevel(consumer, 1);
        expectNoMatch(ask, bidOrder(PRICE, 0), abi.encodeWithSelector(Market.ConsumerLevelTooLow.selector));
    }

    function test_supplierBelowBidsLevelFails() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.identityLevel = 3;
        giveLevel(supplier, 2);
        expectNoMatch(askOrder(PRICE, 0), bid, abi.encodeWithSelector(Market.SupplierLevelTooLow.selector));
    }

    function test_levelsMeetingRequirementsMatch() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.identityLevel = 2;
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.identityLevel = 1;
        giveLevel(consumer, 2);
        giveLevel(supplier, 3);
        expectMatch(ask, bid);
    }

    // ------------------------------------------------------------- blacklist

    function test_supplierInConsumersListFails() public {
        vm.prank(consumer);
        blacklist.add(supplier);
        expectNoMatch(
            askOrder(PRICE, 0), bidOrder(PRICE, 0), abi.encodeWithSelector(Market.SupplierBlacklisted.selector)
        );
    }

    function test_supplierInBidsNamedListFails() public {
        address curator = address(0xC42A);
        vm.prank(curator);
        blacklist.add(supplier);
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.blacklist = curator;
        expectNoMatch(askOrder(PRICE, 0), bid, abi.encodeWithSelector(Market.SupplierBlacklisted.selector));
    }

    function test_suppliersMasterInConsumersListFails() public {
        makeWorker(supplier, master);
        vm.prank(consumer);
        blacklist.add(master);
        expectNoMatch(
            askOrder(PRICE, 0), bidOrder(PRICE, 0), abi.encodeWithSelector(Market.SupplierBlacklisted.selector)
        );
    }

    function test_workerListedButMasterNotIsChecksTheMaster() public {
        // The rule checks the supplier's master: with a master, listing the
        // worker alone does not block the deal.
        makeWorker(supplier, master);
        vm.prank(consumer);
        blacklist.add(supplier);
        expectMatch(askOrder(PRICE, 0), bidOrder(PRICE, 0));
    }

    function test_consumerInSuppliersListFails() public {
        vm.prank(supplier);
        blacklist.add(consumer);
        expectNoMatch(
            askOrder(PRICE, 0), bidOrder(PRICE, 0), abi.encodeWithSelector(Market.ConsumerBlacklisted.selector)
        );
    }

    function test_consumerInAsksNamedListFails() public {
        address curator = address(0xC42A);
        vm.prank(curator);
        blacklist.add(consumer);
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.blacklist = curator;
        expectNoMatch(ask, bidOrder(PRICE, 0), abi.encodeWithSelector(Market.ConsumerBlacklisted.selector));
    }

    function test_unrelatedListsDoNotBlock() public {
        address curator = address(0xC42A);
        vm.prank(curator);
        blacklist.add(stranger);
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.blacklist = curator;
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.blacklist = curator;
        expectMatch(ask, bid);
    }

    // ---------------------------------------------------------- counterparty

    function test_askNamingAnotherConsumerFails() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.counterparty = stranger;
        expectNoMatch(ask, bidOrder(PRICE, 0), abi.encodeWithSelector(Market.AskCounterpartyMismatch.selector));
    }

    function test_bidNamingAnotherSupplierFails() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.counterparty = stranger;
        expectNoMatch(askOrder(PRICE, 0), bid, abi.encodeWithSelector(Market.BidCounterpartyMismatch.selector));
    }

    function test_namedCounterpartiesMatch() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.counterparty = consumer;
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.counterparty = supplier;
        expectMatch(ask, bid);
    }

    function test_bidNamingTheSuppliersMasterMatches() public {
        makeWorker(supplier, master);
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.counterparty = master;
        uint256 id = expectMatch(askOrder(PRICE, 0), bid);
        assertEq(deal(id).master, master, "payouts to master");
    }

    // ------------------------------------------------------ order validity

    function test_openRevertsForUnknownOrTamperedOrders() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, 99));
        market.openDeal(placed(99, ask), placed(bidId, bid));
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, 99));
        market.openDeal(placed(askId, ask), placed(99, bid));
        Market.Order memory cheaper = askOrder(PRICE / 2, 0);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, askId));
        market.openDeal(placed(askId, cheaper), placed(bidId, bid));
    }

    function test_openRevertsForSwappedOrderTypes() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        Market.Order memory ask2 = askOrder(PRICE, 0);
        ask2.tag = "second";
        Market.Order memory bid = bidOrder(PRICE, 0);
        Market.Order memory bid2 = bidOrder(PRICE, 0);
        bid2.tag = "second";
        uint256 askId = place(ask);
        uint256 ask2Id = place(ask2);
        uint256 bidId = place(bid);
        uint256 bid2Id = place(bid2);
        vm.expectRevert(abi.encodeWithSelector(Market.WrongOrderType.selector, bidId));
        market.openDeal(placed(bidId, bid), placed(bid2Id, bid2));
        vm.expectRevert(abi.encodeWithSelector(Market.WrongOrderType.selector, ask2Id));
        market.openDeal(placed(askId, ask), placed(ask2Id, ask2));
    }

    function test_ordersAreConsumedByADeal() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        market.openDeal(placed(askId, ask), placed(bidId, bid));
        assertEq(market.orderHashes(askId), bytes32(0), "ask consumed");
        assertEq(market.orderHashes(bidId), bytes32(0), "bid consumed");
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, askId));
        market.openDeal(placed(askId, ask), placed(bidId, bid));
    }

    function makeWorker(address worker, address master_) internal {
        vm.prank(worker);
        market.registerWorker(master_);
        vm.prank(master_);
        market.confirmWorker(worker);
    }
}
