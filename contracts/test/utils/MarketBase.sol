// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test, Vm} from "./Test.sol";
import {SNM} from "../../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../../src/Market.sol";
import {ProfileRegistry} from "../../src/ProfileRegistry.sol";
import {Blacklist} from "../../src/Blacklist.sol";
import {IERC20} from "../../src/IERC20.sol";
import {DealEvents} from "./DealEvents.sol";

/// Deploys SNM, ProfileRegistry, Blacklist and Market the way the deploy
/// tool will (Blacklist learns the Market's address afterwards), funds the
/// actors and gives order builders that match by default.
///
/// Deal states are rebuilt from the Market's events only (DealOpened,
/// DealBilled, DealChanged, DealClosed), as a client would: `st(id)` reads
/// the logs recorded since the last call and returns the deal's current
/// state, and `deal(id)` also checks that it hashes to the stored word.
abstract contract MarketBase is Test {
    SNM internal snm;
    ProfileRegistry internal profiles;
    Blacklist internal blacklist;
    Market internal market;

    // The two parties have keys, to sign orders.
    uint256 internal constant SUPPLIER_KEY = 0xA11CE;
    uint256 internal constant CONSUMER_KEY = 0xC0FFEE;
    address internal supplier;
    address internal consumer;
    address internal master = address(0x3A57E2);
    address internal stranger = address(0xBAD);
    address internal validator = address(0x7A11D);

    uint256 internal constant SUPPLY = 444_000_000 ether;
    uint256 internal constant FUND = 1_000_000 ether;
    uint256 internal constant PRICE = 1e12; // wei per second

    // Deal states rebuilt from events.
    mapping(uint256 dealId => Market.DealState) internal tracked;
    mapping(uint256 dealId => bool) internal closedSeen;
    mapping(uint256 dealId => uint256) internal closedAt;

    function setUp() public virtual {
        supplier = vm.addr(SUPPLIER_KEY);
        consumer = vm.addr(CONSUMER_KEY);
        vm.recordLogs();
        snm = new SNM(address(this), SUPPLY);
        profiles = new ProfileRegistry(address(this));
        blacklist = new Blacklist(address(this));
        market = new Market(IERC20(address(snm)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        blacklist.setMarket(address(market));
        profiles.setValidator(validator, 3);

        snm.transfer(consumer, FUND);
        snm.transfer(supplier, FUND);
        vm.prank(consumer);
        snm.approve(address(market), type(uint256).max);
        vm.prank(supplier);
        snm.approve(address(market), type(uint256).max);
    }

    function benches(uint64 v) internal pure returns (uint64[] memory b) {
        b = new uint64[](13);
        for (uint256 i; i < 13; ++i) {
            b[i] = v;
        }
    }

    function askOrder(uint256 price, uint64 duration) internal view returns (Market.Order memory) {
        return Market.Order({
            orderType: 2,
            author: supplier,
            counterparty: address(0),
            duration: duration,
            price: price,
            netflags: 7,
            identityLevel: 0,
            blacklist: address(0),
            tag: bytes32("ask"),
            benchmarks: benches(100)
        });
    }

    function bidOrder(uint256 price, uint64 duration) internal view returns (Market.Order memory) {
        return Market.Order({
            orderType: 1,
            author: consumer,
            counterparty: address(0),
            duration: duration,
            price: price,
            netflags: 3,
            identityLevel: 0,
            blacklist: address(0),
            tag: bytes32("bid"),
            benchmarks: benches(50)
        });
    }

    function place(Market.Order memory o) internal returns (uint256 id) {
        vm.prank(o.author);
        id = market.placeOrder(o);
    }

    /// A placed order as one side of openDeal.
    function placed(uint256 id, Market.Order memory o) internal pure returns (Market.OrderRef memory) {
        return Market.OrderRef(id, o, 0, 0, "");
    }

    function keyOf(address author) internal view returns (uint256) {
        if (author == supplier) return SUPPLIER_KEY;
        if (author == consumer) return CONSUMER_KEY;
        revert("no key");
    }

    /// `o` signed by its author, valid for a day, with nonce `nonce`.
    function signed(Market.Order memory o, uint256 nonce) internal view returns (Market.OrderRef memory) {
        return signedWith(o, keyOf(o.author), uint64(block.timestamp + 1 days), nonce);
    }

    function signedWith(Market.Order memory o, uint256 key, uint64 expiry, uint256 nonce)
        internal
        view
        returns (Market.OrderRef memory)
    {
        bytes32 digest = market.signedOrderDigest(o, expiry, nonce);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return Market.OrderRef(0, o, expiry, nonce, abi.encodePacked(r, s, v));
    }

    /// Places both orders and opens the deal between them.
    function openWith(Market.Order memory ask, Market.Order memory bid) internal returns (uint256 dealId) {
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        dealId = market.openDeal(placed(askId, ask), placed(bidId, bid));
    }

    function openSpot() internal returns (uint256) {
        return openWith(askOrder(PRICE, 0), bidOrder(PRICE, 0));
    }

    function openForward(uint64 duration) internal returns (uint256) {
        return openWith(askOrder(PRICE, duration), bidOrder(PRICE, duration));
    }

    /// Applies the Market's deal events recorded since the last call.
    function syncDeals() internal {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            if (l.emitter != address(market) || l.topics.length == 0) continue;
            if (DealEvents.applyLog(tracked, l)) continue;
            bytes32 t = l.topics[0];
            if (t == Market.DealClosed.selector) {
                (uint64 endTime,,) = abi.decode(l.data, (uint64, uint256, bool));
                closedSeen[uint256(l.topics[1])] = true;
                closedAt[uint256(l.topics[1])] = endTime;
            }
        }
    }

    /// The deal's current state, rebuilt from events (only cheatcode calls:
    /// safe between vm.prank and the call it applies to).
    function st(uint256 dealId) internal returns (Market.DealState memory) {
        syncDeals();
        return tracked[dealId];
    }

    function active(uint256 dealId) internal view returns (bool) {
        return market.dealHashes(dealId) != bytes32(0);
    }

    /// The rebuilt state, checked against the stored word while active.
    function deal(uint256 dealId) internal returns (Market.DealState memory d) {
        d = st(dealId);
        if (active(dealId)) {
            assertEq(market.dealHash(d), market.dealHashes(dealId), "state rebuilt from events = stored word");
            assertTrue(!closedSeen[dealId], "active deal never closed");
        } else {
            assertTrue(closedSeen[dealId] || d.supplier == address(0), "inactive: closed or never opened");
        }
    }

    /// What the deal holds blocked: dealInfo on the rebuilt state, 0 once closed.
    function blockedOf(uint256 dealId) internal returns (uint256 blocked) {
        Market.DealState memory d = deal(dealId);
        if (active(dealId)) (blocked,) = market.dealInfo(d);
    }

    /// A forward deal's scheduled end, a closed deal's actual end (DealClosed), 0 for an open spot deal.
    function endOf(uint256 dealId) internal returns (uint256 endTime) {
        Market.DealState memory d = deal(dealId);
        if (!active(dealId)) return closedAt[dealId];
        (, endTime) = market.dealInfo(d);
    }

    function giveLevel(address who, uint8 level) internal {
        vm.prank(validator);
        profiles.issueCertificate(who, 1000 + level, "");
    }
}
