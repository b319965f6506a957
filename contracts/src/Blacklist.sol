// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";

/// @title Per-party blacklists.
/// @notice Each party keeps its own list of addresses it will not deal with.
/// A party writes its list itself; the Market writes a consumer's list when
/// the consumer closes a deal with blacklisting. The Market reads lists when
/// it opens a deal (see Market's match rule).
contract Blacklist is Owned {
    /// The only contract allowed to write into other parties' lists. Set once
    /// by the owner after the Market is deployed (the Market needs this
    /// contract's address at construction, so it cannot be a constructor arg).
    address public market;

    mapping(address owner => mapping(address who => bool)) private listed;

    event MarketSet(address indexed market);
    /// Emitted only when a list actually changes, so the indexer can replay it.
    event Blacklisted(address indexed owner, address indexed who);
    event Unblacklisted(address indexed owner, address indexed who);

    error MarketAlreadySet();
    error NotMarket(address caller);

    constructor(address initialOwner) Owned(initialOwner) {}

    function setMarket(address market_) external onlyOwner {
        if (market != address(0)) revert MarketAlreadySet();
        if (market_ == address(0)) revert ZeroAddress();
        market = market_;
        emit MarketSet(market_);
    }

    /// @notice Adds `who` to the caller's own list (idempotent).
    function add(address who) external {
        _add(msg.sender, who);
    }

    /// @notice Removes `who` from the caller's own list (idempotent).
    function remove(address who) external {
        if (listed[msg.sender][who]) {
            listed[msg.sender][who] = false;
            emit Unblacklisted(msg.sender, who);
        }
    }

    /// @notice The Market adds a supplier's master to a consumer's list on close.
    function addFor(address owner_, address who) external {
        // Before setMarket, market is address(0): refuse rather than rely on
        // address(0) never being a sender.
        if (msg.sender != market || market == address(0)) revert NotMarket(msg.sender);
        _add(owner_, who);
    }

    function isListed(address owner_, address who) external view returns (bool) {
        return listed[owner_][who];
    }

    /// @notice True if `who` is in `owner_`'s list or, when `extra` is not
    /// zero, in `extra`'s list. One call covers one side of the match rule
    /// (a party's own list plus the list its order points to).
    function listedByEither(address owner_, address extra, address who) external view returns (bool) {
        return listed[owner_][who] || (extra != address(0) && listed[extra][who]);
    }

    function _add(address owner_, address who) private {
        if (who == address(0)) revert ZeroAddress();
        if (!listed[owner_][who]) {
            listed[owner_][who] = true;
            emit Blacklisted(owner_, who);
        }
    }
}
