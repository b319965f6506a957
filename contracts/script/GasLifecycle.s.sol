// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {SNM} from "../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {ProfileRegistry} from "../src/ProfileRegistry.sol";
import {Blacklist} from "../src/Blacklist.sol";
import {IERC20} from "../src/IERC20.sol";

interface VmScript {
    function startBroadcast(uint256 privateKey) external;
    function stopBroadcast() external;
    function addr(uint256 privateKey) external pure returns (address);
    function sleep(uint256 millis) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
}

/// Cross-checks the README's gas table on a real chain: deploys to a local
/// anvil and opens the measured spot deals as real transactions: one from
/// two placed orders (place ask, place bid, open) and two from signed orders
/// (open only), for authors with a fresh and with a warm nonce word. The
/// bills and closes that depend on mined timestamps (each takes the deal's
/// current state) are sent afterwards by scripts/gas-anvil.sh from the
/// events; the receipts' gasUsed include everything a user pays.
///   scripts/gas-anvil.sh
contract GasLifecycle {
    VmScript internal constant vm = VmScript(address(uint160(uint256(keccak256("hevm cheat code")))));
    // anvil's well-known dev keys (accounts 0..2); never use them elsewhere.
    uint256 internal constant DEPLOYER = 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80;
    uint256 internal constant SUPPLIER = 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d;
    uint256 internal constant CONSUMER = 0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a;

    function order(uint8 t, address author, uint64 v) internal pure returns (Market.Order memory o) {
        uint64[] memory b = new uint64[](13);
        for (uint256 i; i < 13; ++i) {
            b[i] = v;
        }
        o = Market.Order(t, author, address(0), 0, 1e12, t == 2 ? 7 : 3, 0, address(0), bytes32("gas"), b);
    }

    function run() external {
        address supplier = vm.addr(SUPPLIER);
        address consumer = vm.addr(CONSUMER);

        vm.startBroadcast(DEPLOYER);
        SNM snm = new SNM(vm.addr(DEPLOYER), 444_000_000 ether);
        ProfileRegistry profiles = new ProfileRegistry(vm.addr(DEPLOYER));
        Blacklist blacklist = new Blacklist(vm.addr(DEPLOYER));
        Market market = new Market(IERC20(address(snm)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        blacklist.setMarket(address(market));
        snm.transfer(consumer, 1000 ether);
        snm.transfer(supplier, 1000 ether);
        vm.stopBroadcast();

        vm.startBroadcast(SUPPLIER);
        snm.approve(address(market), type(uint256).max);
        vm.stopBroadcast();
        vm.startBroadcast(CONSUMER);
        snm.approve(address(market), type(uint256).max);
        vm.stopBroadcast();

        // Deals left open put the market in the state of a live chain:
        // counters and the Market's balance are non-zero, and both parties
        // have used signed-order nonce 0 (their nonce word 0 is non-zero).
        _placed(market, supplier, consumer, "warm");
        _signed(market, supplier, consumer, "warm", 0);
        // The measured opens.
        _placed(market, supplier, consumer, "measured");
        _signed(market, supplier, consumer, "fresh", 256);
        _signed(market, supplier, consumer, "warm2", 1);
    }

    function _placed(Market market, address supplier, address consumer, bytes32 tag) internal {
        Market.Order memory ask = order(2, supplier, 100);
        ask.tag = tag;
        Market.Order memory bid = order(1, consumer, 50);
        bid.tag = tag;
        vm.startBroadcast(SUPPLIER);
        uint256 askId = market.placeOrder(ask);
        vm.stopBroadcast();
        vm.startBroadcast(CONSUMER);
        uint256 bidId = market.placeOrder(bid);
        market.openDeal(Market.OrderRef(askId, ask, 0, 0, ""), Market.OrderRef(bidId, bid, 0, 0, ""));
        vm.stopBroadcast();
    }

    function _signed(Market market, address supplier, address consumer, bytes32 tag, uint256 nonce) internal {
        Market.Order memory ask = order(2, supplier, 100);
        ask.tag = tag;
        Market.Order memory bid = order(1, consumer, 50);
        bid.tag = tag;
        uint64 expiry = uint64(block.timestamp + 1 days);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SUPPLIER, market.signedOrderDigest(ask, expiry, nonce));
        Market.OrderRef memory askRef = Market.OrderRef(0, ask, expiry, nonce, abi.encodePacked(r, s, v));
        (v, r, s) = vm.sign(CONSUMER, market.signedOrderDigest(bid, expiry, nonce));
        Market.OrderRef memory bidRef = Market.OrderRef(0, bid, expiry, nonce, abi.encodePacked(r, s, v));
        // Opened by the consumer (anyone may).
        vm.startBroadcast(CONSUMER);
        market.openDeal(askRef, bidRef);
        vm.stopBroadcast();
    }
}
