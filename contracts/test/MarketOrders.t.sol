// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {SNM} from "../src/SNM.sol";
import {IERC20} from "../src/IERC20.sol";

/// placeOrder, cancelOrder, frozenSum and the constructor.
contract MarketOrdersTest is MarketBase {
    function test_constructor_rejectsZeroAddresses() public {
        vm.expectRevert(Market.ZeroAddress.selector);
        new Market(IERC20(address(0)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        vm.expectRevert(Market.ZeroAddress.selector);
        new Market(IERC20(address(snm)), IProfiles(address(0)), IBlacklist(address(blacklist)));
        vm.expectRevert(Market.ZeroAddress.selector);
        new Market(IERC20(address(snm)), IProfiles(address(profiles)), IBlacklist(address(0)));
    }

    function test_constructor_wiresDependencies() public view {
        assertEq(address(market.token()), address(snm), "token");
        assertEq(address(market.profiles()), address(profiles), "profiles");
        assertEq(address(market.blacklist()), address(blacklist), "blacklist");
    }

    function test_constants() public view {
        assertEq(market.BID(), 1, "BID");
        assertEq(market.ASK(), 2, "ASK");
        assertEq(market.BENCHMARK_COUNT(), 13, "benchmarks");
        assertEq(market.NETFLAGS_MASK(), 7, "netflags");
        assertEq(market.MAX_IDENTITY_LEVEL(), 3, "levels");
        assertEq(market.SPOT_PERIOD(), 3600, "spot period");
        assertEq(market.FORWARD_PERIOD_CAP(), 86400, "forward cap");
        assertEq(profiles.ANONYMOUS(), 0, "anonymous");
        assertEq(profiles.REGISTERED(), 1, "registered");
        assertEq(profiles.IDENTIFIED(), 2, "identified");
        assertEq(profiles.PROFESSIONAL(), 3, "professional");
        assertEq(profiles.LEVEL_ATTRIBUTE_BASE(), 1000, "level attributes");
    }

    function test_placeAsk_storesHashAndEmitsFullOrder() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        vm.expectEmit(address(market));
        emit Market.OrderPlaced(1, 2, supplier, ask);
        uint256 id = place(ask);
        assertEq(id, 1, "first id");
        assertEq(market.orderCount(), 1, "count");
        assertEq(market.orderHashes(id), keccak256(abi.encode(ask)), "stored hash");
        assertEq(snm.balanceOf(supplier), FUND, "an ask blocks nothing");
    }

    function test_placeAsk_zeroPriceAllowed() public {
        uint256 id = place(askOrder(0, 0));
        assertTrue(market.orderHashes(id) != bytes32(0), "placed");
    }

    function test_placeBid_spotFreezesOneHour() public {
        place(bidOrder(PRICE, 0));
        assertEq(snm.balanceOf(address(market)), PRICE * 3600, "market holds 1h");
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 3600, "consumer paid 1h");
    }

    function test_placeBid_shortForwardFreezesItsDuration() public {
        place(bidOrder(PRICE, 2 hours));
        assertEq(snm.balanceOf(address(market)), PRICE * 2 hours, "2h frozen");
    }

    function test_placeBid_longForwardFreezesOneDay() public {
        place(bidOrder(PRICE, 30 days));
        assertEq(snm.balanceOf(address(market)), PRICE * 1 days, "capped at 1 day");
    }

    function test_frozenSum() public view {
        assertEq(market.frozenSum(5, 0), 5 * 3600, "spot");
        assertEq(market.frozenSum(5, 10), 50, "short forward");
        assertEq(market.frozenSum(5, 86400), 5 * 86400, "exactly a day");
        assertEq(market.frozenSum(5, 86401), 5 * 86400, "capped");
    }

    function test_placeBid_withoutAllowanceReverts() public {
        vm.prank(consumer);
        snm.approve(address(market), 0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientAllowance.selector, address(market), 0, PRICE * 3600));
        market.placeOrder(bidOrder(PRICE, 0));
    }

    function test_place_revertsOnInvalidOrderType() public {
        Market.Order memory o = askOrder(PRICE, 0);
        o.orderType = 0;
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidOrderType.selector, 0));
        market.placeOrder(o);
        o.orderType = 3;
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidOrderType.selector, 3));
        market.placeOrder(o);
    }

    function test_place_revertsOnBenchmarkCount() public {
        Market.Order memory o = askOrder(PRICE, 0);
        o.benchmarks = new uint64[](12);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidBenchmarksLength.selector, 12));
        market.placeOrder(o);
        o.benchmarks = new uint64[](14);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidBenchmarksLength.selector, 14));
        market.placeOrder(o);
        o.benchmarks = new uint64[](0);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidBenchmarksLength.selector, 0));
        market.placeOrder(o);
    }

    function test_place_revertsOnUnknownNetflagBits() public {
        Market.Order memory o = askOrder(PRICE, 0);
        o.netflags = 8;
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidNetflags.selector, 8));
        market.placeOrder(o);
        o.netflags = 1 << 255 | 7;
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidNetflags.selector, 1 << 255 | 7));
        market.placeOrder(o);
    }

    function test_place_revertsOnIdentityLevelAboveProfessional() public {
        Market.Order memory o = bidOrder(PRICE, 0);
        o.identityLevel = 4;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.InvalidIdentityLevel.selector, 4));
        market.placeOrder(o);
    }

    function test_place_revertsOnPriceAbove96Bits() public {
        Market.Order memory o = askOrder(uint256(type(uint96).max) + 1, 0);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.PriceTooHigh.selector, uint256(type(uint96).max) + 1));
        market.placeOrder(o);
        // The bound itself is fine for an ask (nothing is frozen).
        place(askOrder(type(uint96).max, 0));
    }

    function test_place_revertsOnDurationAbove40Bits() public {
        uint64 d = uint64(type(uint40).max) + 1;
        Market.Order memory o = askOrder(PRICE, d);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.DurationTooLong.selector, d));
        market.placeOrder(o);
    }

    function test_placeBid_revertsOnZeroPrice() public {
        vm.prank(consumer);
        vm.expectRevert(Market.ZeroPrice.selector);
        market.placeOrder(bidOrder(0, 0));
    }

    function test_place_revertsWhenAuthorIsNotCaller() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotAuthor.selector, stranger));
        market.placeOrder(askOrder(PRICE, 0));
    }

    function test_cancelAsk_clearsAndEmits() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        uint256 id = place(ask);
        vm.expectEmit(address(market));
        emit Market.OrderCancelled(id, supplier);
        vm.prank(supplier);
        market.cancelOrder(id, ask);
        assertEq(market.orderHashes(id), bytes32(0), "cleared");
    }

    function test_cancelBid_refundsFrozenFunds() public {
        Market.Order memory bid = bidOrder(PRICE, 3 hours);
        uint256 id = place(bid);
        vm.prank(consumer);
        market.cancelOrder(id, bid);
        assertEq(snm.balanceOf(consumer), FUND, "refunded in full");
        assertEq(snm.balanceOf(address(market)), 0, "market empty");
    }

    function test_cancel_revertsForUnknownOrTamperedOrder() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, 1));
        market.cancelOrder(1, ask);

        uint256 id = place(ask);
        Market.Order memory tampered = askOrder(PRICE + 1, 0);
        vm.prank(supplier);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, id));
        market.cancelOrder(id, tampered);
    }

    function test_cancel_revertsTwice() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 id = place(bid);
        vm.prank(consumer);
        market.cancelOrder(id, bid);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(Market.UnknownOrder.selector, id));
        market.cancelOrder(id, bid);
        assertEq(snm.balanceOf(consumer), FUND, "refunded once only");
    }

    function test_cancel_revertsForSomeoneElsesOrder() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        uint256 id = place(bid);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NotAuthor.selector, stranger));
        market.cancelOrder(id, bid);
    }
}
