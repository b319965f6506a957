// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {SNM} from "../src/SNM.sol";
import {Market} from "../src/Market.sol";

interface VmLocal {
    function startBroadcast(uint256 privateKey) external;
    function stopBroadcast() external;
    function addr(uint256 privateKey) external pure returns (address);
    function envAddress(string calldata name) external view returns (address);
    function envUint(string calldata name) external view returns (uint256);
}

/// A deal's whole life on a chain where `sonm-deploy` has put the contracts:
/// the supplier places an ask for a small box, the customer places a matching
/// bid, the deal is opened, billed, and closed by the customer.
/// Used by scripts/local-network.sh until the worker and node daemons do this.
///   SNM=0x.. MARKET=0x.. SUPPLIER_KEY=0x.. CONSUMER_KEY=0x.. forge script ...
contract LocalDeal {
    VmLocal internal constant vm = VmLocal(address(uint160(uint256(keccak256("hevm cheat code")))));

    function order(uint8 orderType, address author, uint256 price, uint64[] memory benchmarks)
        internal
        pure
        returns (Market.Order memory)
    {
        // Outbound network only; spot; anyone may take it.
        return Market.Order(orderType, author, address(0), 0, price, 1, 0, address(0), "local-network", benchmarks);
    }

    function run() external {
        SNM snm = SNM(vm.envAddress("SNM"));
        Market market = Market(vm.envAddress("MARKET"));
        uint256 supplierKey = vm.envUint("SUPPLIER_KEY");
        uint256 consumerKey = vm.envUint("CONSUMER_KEY");
        address supplier = vm.addr(supplierKey);
        address consumer = vm.addr(consumerKey);

        // An edge box: 4 cores, 4 GiB RAM, 64 GB disk, 100 Mbit/s.
        uint64[] memory box = new uint64[](13);
        box[0] = 1260; // cpu-sysbench-multi
        box[1] = 350; // cpu-sysbench-single
        box[2] = 4; // cpu-cores
        box[3] = 4 << 30; // ram-size
        box[4] = 64e9; // storage-size
        box[5] = 100e6; // net-download
        box[6] = 50e6; // net-upload
        box[12] = 700; // wasm-score
        // The customer needs 2 cores and 1 GiB.
        uint64[] memory need = new uint64[](13);
        need[2] = 2;
        need[3] = 1 << 30;

        vm.startBroadcast(supplierKey);
        uint256 askId = market.placeOrder(order(2, supplier, 1e12, box));
        vm.stopBroadcast();

        vm.startBroadcast(consumerKey);
        snm.approve(address(market), type(uint256).max);
        Market.Order memory bid = order(1, consumer, 2e12, need);
        uint256 bidId = market.placeOrder(bid);
        uint256 dealId = market.openDeal(askId, order(2, supplier, 1e12, box), bidId, bid);
        vm.stopBroadcast();

        vm.startBroadcast(supplierKey);
        market.bill(dealId);
        vm.stopBroadcast();

        vm.startBroadcast(consumerKey);
        market.closeDeal(dealId, false);
        vm.stopBroadcast();
    }
}
