// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {MockToken} from "./utils/MockToken.sol";
import {SNM} from "../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {ProfileRegistry} from "../src/ProfileRegistry.sol";
import {Blacklist} from "../src/Blacklist.sol";
import {IERC20} from "../src/IERC20.sol";

/// A contract party that tries to re-enter the Market whenever it is paid.
contract Attacker {
    Market public market;
    bytes public reentry; // call made from inside the payment hook
    uint256 public hookCalls;
    uint256 public reentryOk;
    uint256 public reentryFailed;
    bytes public lastError;

    constructor(Market market_) {
        market = market_;
    }

    function setReentry(bytes calldata data) external {
        reentry = data;
    }

    /// Acts as an ordinary account would.
    function act(address target, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    function onTokenReceived(address, uint256) external {
        hookCalls++;
        if (reentry.length == 0) return;
        bytes memory data = reentry;
        delete reentry; // one attempt per arming
        (bool ok, bytes memory err) = address(market).call(data);
        if (ok) {
            reentryOk++;
        } else {
            reentryFailed++;
            lastError = err;
        }
    }
}

/// The Market under a token that calls the recipient on every transfer
/// (ERC-777 style). SNM has no such hook (last test); these tests show that
/// the Market's checks-effects-interactions order keeps it safe even if it
/// had one: a party re-entering from a payment can never be paid twice.
contract ReentrancyTest is Test {
    MockToken internal token;
    Market internal market;
    Attacker internal attacker;
    address internal consumer = address(0xC0FFEE);
    uint256 internal constant PRICE = 1e12;
    uint256 internal constant FUND = 1_000_000 ether;
    uint256 internal constant T0 = 1_800_000_000;

    function setUp() public {
        vm.warp(T0);
        token = new MockToken(address(this), 10 * FUND);
        ProfileRegistry profiles = new ProfileRegistry(address(this));
        Blacklist blacklist = new Blacklist(address(this));
        market = new Market(IERC20(address(token)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        blacklist.setMarket(address(market));
        attacker = new Attacker(market);
        token.transfer(consumer, FUND);
        token.transfer(address(attacker), FUND);
        vm.prank(consumer);
        token.approve(address(market), type(uint256).max);
        attacker.act(address(token), abi.encodeCall(MockToken.approve, (address(market), type(uint256).max)));
        token.setHooks(true);
    }

    function benches(uint64 v) internal pure returns (uint64[] memory b) {
        b = new uint64[](13);
        for (uint256 i; i < 13; ++i) {
            b[i] = v;
        }
    }

    function order(uint8 t, address author, uint64 duration) internal pure returns (Market.Order memory) {
        return Market.Order(t, author, address(0), duration, PRICE, 0, 0, address(0), bytes32(0), benches(10));
    }

    /// The attacker supplies, an ordinary account consumes.
    function openAttackerSupplies(uint64 duration) internal returns (uint256 dealId) {
        Market.Order memory ask = order(2, address(attacker), duration);
        bytes memory ret = attacker.act(address(market), abi.encodeCall(Market.placeOrder, (ask)));
        uint256 askId = abi.decode(ret, (uint256));
        Market.Order memory bid = order(1, consumer, duration);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        dealId = market.openDeal(placed(askId, ask), placed(bidId, bid));
    }

    function placed(uint256 id, Market.Order memory o) internal pure returns (Market.OrderRef memory) {
        return Market.OrderRef(id, o, 0, 0, "");
    }

    /// A deal's state opened at T0 and last billed at `lastBill` (every deal
    /// here is the first one, opened at T0 at PRICE, with no master).
    function state(address supplier, uint64 duration, uint256 lastBill)
        internal
        view
        returns (Market.DealState memory)
    {
        return Market.DealState(supplier, consumer, supplier, PRICE, uint64(T0), duration, uint64(lastBill));
    }

    function test_reenterBillFromBillPayout_paysNothingTwice() public {
        uint256 id = openAttackerSupplies(0);
        vm.warp(T0 + 600);
        // The inner call is given the state the outer bill has just stored.
        attacker.setReentry(abi.encodeCall(Market.bill, (id, state(address(attacker), 0, T0 + 600))));
        attacker.act(address(market), abi.encodeCall(Market.bill, (id, state(address(attacker), 0, T0))));
        assertEq(attacker.reentryOk(), 1, "re-entered");
        assertEq(token.balanceOf(address(attacker)), FUND + 600 * PRICE, "paid once for 600 s");
        assertEq(token.balanceOf(address(market)), 3600 * PRICE, "blocking intact");
        assertEq(token.balanceOf(consumer), FUND - 4200 * PRICE, "consumer charged once");
    }

    function test_reenterCloseFromBillPayout_staysConsistent() public {
        uint256 id = openAttackerSupplies(0);
        vm.warp(T0 + 600);
        attacker.setReentry(abi.encodeCall(Market.closeDeal, (id, state(address(attacker), 0, T0 + 600), false)));
        attacker.act(address(market), abi.encodeCall(Market.bill, (id, state(address(attacker), 0, T0))));
        // The inner close saw the bill already recorded: nothing more was owed,
        // the blocking went back to the consumer.
        assertEq(attacker.reentryOk(), 1, "re-entered");
        assertEq(token.balanceOf(address(attacker)), FUND + 600 * PRICE, "paid once");
        assertEq(token.balanceOf(consumer), FUND - 600 * PRICE, "consumer paid 600 s only");
        assertEq(token.balanceOf(address(market)), 0, "nothing stuck, nothing missing");
        assertEq(market.dealHashes(id), bytes32(0), "closed");
    }

    function test_reenterCloseFromClosePayout_fails() public {
        uint256 id = openAttackerSupplies(0);
        vm.warp(T0 + 600);
        // Even given the state as it was after the outer close's bill, the
        // inner close finds the deal gone.
        attacker.setReentry(abi.encodeCall(Market.closeDeal, (id, state(address(attacker), 0, T0 + 600), false)));
        attacker.act(address(market), abi.encodeCall(Market.closeDeal, (id, state(address(attacker), 0, T0), false)));
        assertEq(attacker.reentryFailed(), 1, "re-entry refused");
        assertEq(
            keccak256(attacker.lastError()),
            keccak256(abi.encodeWithSelector(Market.DealNotActive.selector, id)),
            "already closed when paid"
        );
        assertEq(token.balanceOf(address(attacker)), FUND + 600 * PRICE, "paid once");
        assertEq(token.balanceOf(address(market)), 0, "market empty");
    }

    function test_reenterBillFromForwardClose_fails() public {
        uint256 id = openAttackerSupplies(1 hours);
        vm.warp(T0 + 2 hours);
        attacker.setReentry(abi.encodeCall(Market.bill, (id, state(address(attacker), 1 hours, T0 + 1 hours))));
        attacker.act(
            address(market), abi.encodeCall(Market.closeDeal, (id, state(address(attacker), 1 hours, T0), false))
        );
        assertEq(attacker.reentryFailed(), 1, "re-entry refused");
        assertEq(token.balanceOf(address(attacker)), FUND + 1 hours * PRICE, "the term, once");
    }

    function test_consumerReenteringCancelGetsOneRefund() public {
        Market.Order memory bid = order(1, address(attacker), 0);
        bytes memory ret = attacker.act(address(market), abi.encodeCall(Market.placeOrder, (bid)));
        uint256 bidId = abi.decode(ret, (uint256));
        assertEq(token.balanceOf(address(attacker)), FUND - 3600 * PRICE, "frozen");
        attacker.setReentry(abi.encodeCall(Market.cancelOrder, (bidId, bid)));
        attacker.act(address(market), abi.encodeCall(Market.cancelOrder, (bidId, bid)));
        assertEq(attacker.reentryFailed(), 1, "second cancel refused");
        assertEq(token.balanceOf(address(attacker)), FUND, "refunded exactly once");
        assertEq(token.balanceOf(address(market)), 0, "market empty");
    }

    function test_consumerReenteringOnRefundCannotCloseAgain() public {
        Market.Order memory ask = order(2, address(0xA11CE), 0);
        vm.prank(address(0xA11CE));
        uint256 askId = market.placeOrder(ask);
        Market.Order memory bid = order(1, address(attacker), 0);
        bytes memory ret = attacker.act(address(market), abi.encodeCall(Market.placeOrder, (bid)));
        uint256 bidId = abi.decode(ret, (uint256));
        uint256 id = market.openDeal(placed(askId, ask), placed(bidId, bid));
        vm.warp(T0 + 60);
        Market.DealState memory s =
            Market.DealState(address(0xA11CE), address(attacker), address(0xA11CE), PRICE, uint64(T0), 0, uint64(T0));
        Market.DealState memory billed = Market.DealState(
            address(0xA11CE), address(attacker), address(0xA11CE), PRICE, uint64(T0), 0, uint64(T0 + 60)
        );
        attacker.setReentry(abi.encodeCall(Market.closeDeal, (id, billed, false)));
        attacker.act(address(market), abi.encodeCall(Market.closeDeal, (id, s, false)));
        assertEq(attacker.reentryFailed(), 1, "refused");
        assertEq(token.balanceOf(address(attacker)), FUND - 60 * PRICE, "paid 60 s, refunded once");
        assertEq(token.balanceOf(address(0xA11CE)), 60 * PRICE, "supplier paid once");
    }

    function test_snmNeverCallsTheRecipient() public {
        SNM snm = new SNM(address(this), FUND);
        snm.transfer(address(attacker), 1 ether);
        attacker.act(address(snm), abi.encodeCall(SNM.transfer, (address(attacker), 1)));
        snm.approve(address(this), type(uint256).max);
        snm.transferFrom(address(this), address(attacker), 1 ether);
        assertEq(attacker.hookCalls(), 0, "no hook");
        assertEq(snm.balanceOf(address(attacker)), 2 ether, "received");
    }
}
