// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";

/// @title SNM/USD rate, set by its owner.
/// @notice Display and autotrader input only: prices on chain stay in SNM wei
/// per second and no contract converts through this rate.
contract OracleUSD is Owned {
    /// USD per 1 SNM, scaled by 1e18 (so 0.05 USD/SNM is 5e16).
    uint192 public price;
    /// When the price was last set, so readers can judge its age.
    uint64 public updatedAt;

    event PriceChanged(uint256 price, uint64 updatedAt);

    error ZeroPrice();

    constructor(address initialOwner, uint192 initialPrice) Owned(initialOwner) {
        _set(initialPrice);
    }

    function setPrice(uint192 newPrice) external onlyOwner {
        _set(newPrice);
    }

    function _set(uint192 newPrice) private {
        // A zero rate would make every USD-denominated display divide by zero.
        if (newPrice == 0) revert ZeroPrice();
        price = newPrice;
        updatedAt = uint64(block.timestamp);
        emit PriceChanged(newPrice, uint64(block.timestamp));
    }
}
