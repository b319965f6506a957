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
}

/// Cross-checks the README's gas table on a real chain: deploys to a local
/// anvil and runs a spot deal's life as real transactions, so the receipts'
/// gasUsed (in broadcast/) include everything a user pays.
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

        // A first deal, left open, puts the market in the state of a live
        // chain: counters and the Market's balance are already non-zero.
        _life(market, supplier, consumer, "warm", false);
        // The measured one.
        _life(market, supplier, consumer, "measured", true);
    }

    function _life(Market market, address supplier, address consumer, bytes32 tag, bool whole) internal {
        Market.Order memory ask = order(2, supplier, 100);
        ask.tag = tag;
        Market.Order memory bid = order(1, consumer, 50);
        bid.tag = tag;
        vm.startBroadcast(SUPPLIER);
        uint256 askId = market.placeOrder(ask);
        vm.stopBroadcast();
        vm.startBroadcast(CONSUMER);
        uint256 bidId = market.placeOrder(bid);
        uint256 id = market.openDeal(askId, ask, bidId, bid);
        vm.stopBroadcast();
        if (!whole) return;
        vm.startBroadcast(SUPPLIER);
        market.bill(id);
        market.bill(id);
        market.bill(id);
        vm.stopBroadcast();
        vm.startBroadcast(CONSUMER);
        market.closeDeal(id, false);
        vm.stopBroadcast();
    }
}
