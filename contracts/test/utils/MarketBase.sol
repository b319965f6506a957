// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./Test.sol";
import {SNM} from "../../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../../src/Market.sol";
import {ProfileRegistry} from "../../src/ProfileRegistry.sol";
import {Blacklist} from "../../src/Blacklist.sol";
import {IERC20} from "../../src/IERC20.sol";

/// Deploys SNM, ProfileRegistry, Blacklist and Market the way the deploy
/// tool will (Blacklist learns the Market's address afterwards), funds the
/// actors and gives order builders that match by default.
abstract contract MarketBase is Test {
    SNM internal snm;
    ProfileRegistry internal profiles;
    Blacklist internal blacklist;
    Market internal market;

    address internal supplier = address(0xA11CE);
    address internal consumer = address(0xC0FFEE);
    address internal master = address(0x3A57E2);
    address internal stranger = address(0xBAD);
    address internal validator = address(0x7A11D);

    uint256 internal constant SUPPLY = 444_000_000 ether;
    uint256 internal constant FUND = 1_000_000 ether;
    uint256 internal constant PRICE = 1e12; // wei per second

    function setUp() public virtual {
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

    /// Places both orders and opens the deal between them.
    function openWith(Market.Order memory ask, Market.Order memory bid) internal returns (uint256 dealId) {
        uint256 askId = place(ask);
        uint256 bidId = place(bid);
        dealId = market.openDeal(askId, ask, bidId, bid);
    }

    function openSpot() internal returns (uint256) {
        return openWith(askOrder(PRICE, 0), bidOrder(PRICE, 0));
    }

    function openForward(uint64 duration) internal returns (uint256) {
        return openWith(askOrder(PRICE, duration), bidOrder(PRICE, duration));
    }

    function deal(uint256 dealId) internal view returns (Market.Deal memory d) {
        (d,,) = market.getDeal(dealId);
    }

    function blockedOf(uint256 dealId) internal view returns (uint256 blocked) {
        (, blocked,) = market.getDeal(dealId);
    }

    function endOf(uint256 dealId) internal view returns (uint256 endTime) {
        (,, endTime) = market.getDeal(dealId);
    }

    function giveLevel(address who, uint8 level) internal {
        vm.prank(validator);
        profiles.issueCertificate(who, 1000 + level, "");
    }
}
