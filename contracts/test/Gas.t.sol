// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market} from "../src/Market.sol";
import {Gate} from "../src/Gate.sol";
import {IERC20} from "../src/IERC20.sol";

/// The deal lifecycle the README's gas table is measured on, in a market that
/// is already in use (the Market and the master already hold SNM, so no
/// balance goes from zero to non-zero, as on a live chain). Run with
/// `forge test --match-contract GasTest --isolate --gas-report` so that every
/// call below is its own transaction with cold storage.
contract GasTest is MarketBase {
    uint256 internal constant T = 1_800_000_000;
    /// A nonce in a bitmap word the parties have already used (warm: the
    /// word is non-zero) and one in a word they never touched.
    uint256 internal constant WARM_NONCE = 1;
    uint256 internal constant FRESH_NONCE = 256;

    function setUp() public override {
        super.setUp();
        vm.warp(T);
        // Warm-up state: another open deal keeps the Market's balance non-zero,
        // and the supplier already holds SNM (it was funded in MarketBase).
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.tag = "warm";
        openWith(ask, bidOrder(PRICE, 0));
        // Both parties have used signed-order nonce 0 (a deal left open), so
        // nonce word 0 is non-zero for each of them; word 1 is untouched.
        Market.Order memory sAsk = askOrder(PRICE, 0);
        sAsk.tag = "warm-signed";
        market.openDeal(signed(sAsk, 0), signed(bidOrder(PRICE, 0), 0));
    }

    /// The state of a deal opened at T, last billed at `lastBill`.
    function stateAt(uint64 duration, uint256 lastBill) internal view returns (Market.DealState memory) {
        return Market.DealState(supplier, consumer, supplier, PRICE, uint64(T), duration, uint64(lastBill));
    }

    /// Three hourly bills by the supplier, then the close: a spot deal ten
    /// minutes after the third bill by the consumer, a forward deal (4 h) at
    /// its end by the supplier.
    function billAndClose(uint256 id, uint64 duration) internal {
        for (uint256 i = 1; i <= 3; ++i) {
            vm.warp(T + i * 1 hours);
            vm.prank(supplier);
            market.bill(id, stateAt(duration, T + (i - 1) * 1 hours));
        }
        if (duration == 0) {
            vm.warp(T + 3 hours + 600);
            vm.prank(consumer);
        } else {
            vm.warp(T + duration);
            vm.prank(supplier);
        }
        market.closeDeal(id, stateAt(duration, T + 3 hours), false);
    }

    function placedLife(uint64 duration) internal {
        Market.Order memory ask = askOrder(PRICE, duration);
        Market.Order memory bid = bidOrder(PRICE, duration);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        uint256 id = market.openDeal(placed(askId, ask), placed(bidId, bid));
        billAndClose(id, duration);
    }

    /// Both orders signed off chain (no transaction), opened by the consumer.
    function signedLife(uint64 duration, uint256 nonce) internal {
        Market.OrderRef memory ask = signed(askOrder(PRICE, duration), nonce);
        Market.OrderRef memory bid = signed(bidOrder(PRICE, duration), nonce);
        vm.prank(consumer);
        uint256 id = market.openDeal(ask, bid);
        billAndClose(id, duration);
    }

    function test_gas_spotDealLifecycle() public {
        placedLife(0);
    }

    function test_gas_forwardDealLifecycle() public {
        placedLife(4 hours);
    }

    function test_gas_signedSpotLife_freshNonceWord() public {
        signedLife(0, FRESH_NONCE);
    }

    function test_gas_signedSpotLife_warmNonceWord() public {
        signedLife(0, WARM_NONCE);
    }

    function test_gas_signedForwardLife_freshNonceWord() public {
        signedLife(4 hours, FRESH_NONCE);
    }

    function test_gas_signedForwardLife_warmNonceWord() public {
        signedLife(4 hours, WARM_NONCE);
    }

    /// A placed ask taken by a signed bid (the consumer never transacts
    /// before the deal): open pulls the blocking from the consumer.
    function test_gas_openPlacedAskSignedBid() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(supplier);
        market.openDeal(placed(askId, ask), signed(bidOrder(PRICE, 0), WARM_NONCE));
    }

    function test_gas_cancel() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        market.cancelOrder(bidId, bid);
    }

    function test_gas_cancelNonces() public {
        vm.prank(supplier);
        market.cancelNonces(0, 1 << 7);
    }

    function test_gas_quickBuy() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        market.quickBuy(placed(askId, ask), 0);
    }

    function test_gas_quickBuySigned() public {
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), WARM_NONCE);
        vm.prank(consumer);
        market.quickBuy(ask, 0);
    }

    function test_gas_closeForwardEarlyWithBlacklist() public {
        Market.Order memory ask = askOrder(PRICE, 4 hours);
        Market.Order memory bid = bidOrder(PRICE, 4 hours);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        uint256 id = market.openDeal(placed(askId, ask), placed(bidId, bid));
        vm.warp(T + 1 hours);
        vm.prank(consumer);
        market.closeDeal(id, stateAt(4 hours, T), true);
    }

    function test_gas_changeRequest() public {
        Market.DealState memory s = stateAt(0, T);
        vm.prank(supplier);
        market.createChangeRequest(1, s, PRICE / 2, 0); // one-sided: applies at once
        s.price = PRICE / 2;
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(1, s, PRICE, 0); // needs the consumer
        vm.prank(consumer);
        market.approveChangeRequest(rid, s);
    }

    /// A gate transfer: lock on one side, pay with 2 of 3 keeper signatures on the other.
    function test_gas_gateTransfer() public {
        Gate gate = new Gate(IERC20(address(snm)), address(this), 2);
        uint256[2] memory keys = [uint256(0x1001), 0x1002];
        for (uint256 i; i < 2; ++i) {
            gate.setKeeper(vm.addr(keys[i]), 1_000_000 ether);
        }
        snm.transfer(address(gate), 1000 ether);
        snm.transfer(address(0x7E57), 1 ether); // the recipient already holds SNM
        vm.prank(consumer);
        snm.approve(address(gate), type(uint256).max);

        vm.prank(consumer);
        gate.lock(consumer, 10 ether, 444);

        bytes32 digest = gate.transferDigest(1, address(0x5C2), 1, address(0x7E57), 10 ether);
        Gate.Signature[] memory sigs = new Gate.Signature[](2);
        address a0 = vm.addr(keys[0]);
        address a1 = vm.addr(keys[1]);
        (uint256 lo, uint256 hi) = a0 < a1 ? (keys[0], keys[1]) : (keys[1], keys[0]);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(lo, digest);
        sigs[0] = Gate.Signature(v, r, s);
        (v, r, s) = vm.sign(hi, digest);
        sigs[1] = Gate.Signature(v, r, s);
        vm.prank(address(0x2E1A));
        gate.pay(1, address(0x5C2), 1, address(0x7E57), 10 ether, sigs);
    }
}
