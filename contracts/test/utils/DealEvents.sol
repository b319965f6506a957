// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Vm} from "./Test.sol";
import {Market} from "../../src/Market.sol";

/// A deal's state rebuilt from the Market's events, as a client does it
/// (DealOpened, then DealBilled.billedUntil and DealChanged in log order).
/// One place for the tests that track deals that way (MarketBase, the
/// invariant handler).
library DealEvents {
    /// Applies `l` if it is one of the deal events that change a deal's state;
    /// returns whether it was.
    function applyLog(mapping(uint256 => Market.DealState) storage states, Vm.Log memory l) internal returns (bool) {
        if (l.topics.length < 2) return false;
        bytes32 t = l.topics[0];
        uint256 id = uint256(l.topics[1]);
        if (t == Market.DealOpened.selector) {
            (address m,,, uint256 price, uint64 duration, uint64 start,) =
                abi.decode(l.data, (address, uint256, uint256, uint256, uint64, uint64, uint256));
            states[id] = Market.DealState(
                address(uint160(uint256(l.topics[2]))),
                address(uint160(uint256(l.topics[3]))),
                m,
                price,
                start,
                duration,
                start
            );
        } else if (t == Market.DealBilled.selector) {
            (,, uint64 until) = abi.decode(l.data, (uint256, uint256, uint64));
            states[id].lastBillTime = until;
        } else if (t == Market.DealChanged.selector) {
            (uint256 price, uint64 duration) = abi.decode(l.data, (uint256, uint64));
            states[id].price = price;
            states[id].duration = duration;
        } else {
            return false;
        }
        return true;
    }
}
