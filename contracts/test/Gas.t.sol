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
    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
        // Warm-up state: another open deal keeps the Market's balance non-zero,
        // and the supplier already holds SNM (it was funded in MarketBase).
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.tag = "warm";
        openWith(ask, bidOrder(PRICE, 0));
    }

    function test_gas_spotDealLifecycle() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        Market.Order memory bid = bidOrder(PRICE, 0);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        uint256 id = market.openDeal(askId, ask, bidId, bid);
        for (uint256 i = 1; i <= 3; ++i) {
            vm.warp(1_800_000_000 + i * 1 hours);
            vm.prank(supplier);
            market.bill(id);
        }
        vm.warp(1_800_000_000 + 3 hours + 600);
        vm.prank(consumer);
        market.closeDeal(id, false);
    }

    function test_gas_forwardDealLifecycle() public {
        Market.Order memory ask = askOrder(PRICE, 4 hours);
        Market.Order memory bid = bidOrder(PRICE, 4 hours);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        uint256 id = market.openDeal(askId, ask, bidId, bid);
        for (uint256 i = 1; i <= 3; ++i) {
            vm.warp(1_800_000_000 + i * 1 hours);
            vm.prank(supplier);
            market.bill(id);
        }
        vm.warp(1_800_000_000 + 4 hours);
        vm.prank(supplier);
        market.closeDeal(id, false);
    }

    function test_gas_cancel() public {
        Market.Order memory bid = bidOrder(PRICE, 0);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        market.cancelOrder(bidId, bid);
    }

    function test_gas_quickBuy() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        market.quickBuy(askId, ask, 0);
    }

    function test_gas_closeForwardEarlyWithBlacklist() public {
        Market.Order memory ask = askOrder(PRICE, 4 hours);
        Market.Order memory bid = bidOrder(PRICE, 4 hours);
        vm.prank(supplier);
        uint256 askId = market.placeOrder(ask);
        vm.prank(consumer);
        uint256 bidId = market.placeOrder(bid);
        vm.prank(consumer);
        uint256 id = market.openDeal(askId, ask, bidId, bid);
        vm.warp(1_800_000_000 + 1 hours);
        vm.prank(consumer);
        market.closeDeal(id, true);
    }

    function test_gas_changeRequest() public {
        vm.prank(supplier);
        market.createChangeRequest(1, PRICE / 2, 0); // one-sided: applies at once
        vm.prank(supplier);
        uint256 rid = market.createChangeRequest(1, PRICE, 0); // needs the consumer
        vm.prank(consumer);
        market.approveChangeRequest(rid);
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
