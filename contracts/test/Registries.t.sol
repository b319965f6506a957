// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {ProfileRegistry} from "../src/ProfileRegistry.sol";
import {Blacklist} from "../src/Blacklist.sol";
import {OracleUSD} from "../src/OracleUSD.sol";
import {Owned} from "../src/Owned.sol";

contract ProfileRegistryTest is Test {
    ProfileRegistry internal reg;
    address internal v1 = address(0x71);
    address internal v3 = address(0x73);
    address internal alice = address(0xA11CE);
    address internal stranger = address(0xBAD);

    function setUp() public {
        reg = new ProfileRegistry(address(this));
        reg.setValidator(v1, 1);
        reg.setValidator(v3, 3);
    }

    function test_ownedBasics() public {
        assertEq(reg.owner(), address(this), "owner");
        vm.expectRevert(Owned.ZeroAddress.selector);
        new ProfileRegistry(address(0));
        vm.expectEmit(address(reg));
        emit Owned.OwnershipTransferred(address(this), alice);
        reg.transferOwnership(alice);
        assertEq(reg.owner(), alice, "moved");
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(this)));
        reg.transferOwnership(address(this));
        vm.prank(alice);
        vm.expectRevert(Owned.ZeroAddress.selector);
        reg.transferOwnership(address(0));
    }

    function test_setValidator() public {
        vm.expectEmit(address(reg));
        emit ProfileRegistry.ValidatorSet(alice, 2);
        reg.setValidator(alice, 2);
        assertEq(reg.validatorLevel(alice), 2, "level");
        reg.setValidator(alice, 0);
        assertEq(reg.validatorLevel(alice), 0, "removed");
    }

    function test_setValidator_reverts() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, stranger));
        reg.setValidator(alice, 1);
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.InvalidLevel.selector, 4));
        reg.setValidator(alice, 4);
        vm.expectRevert(Owned.ZeroAddress.selector);
        reg.setValidator(address(0), 1);
    }

    function test_levelCertificate_raisesLevelAndEmits() public {
        assertEq(reg.levelOf(alice), 0, "anonymous");
        vm.expectEmit(address(reg));
        emit ProfileRegistry.CertificateIssued(1, v3, alice, 1002, "kyc:ok");
        vm.expectEmit(address(reg));
        emit ProfileRegistry.IdentityLevelChanged(alice, 2);
        vm.prank(v3);
        uint256 id = reg.issueCertificate(alice, 1002, "kyc:ok");
        assertEq(id, 1, "id");
        assertEq(reg.certificateCount(), 1, "count");
        assertEq(reg.levelOf(alice), 2, "identified");
        ProfileRegistry.Certificate memory c = reg.getCertificate(id);
        assertEq(c.validator, v3, "validator");
        assertEq(c.subject, alice, "subject");
        assertEq(c.attributeType, 1002, "type");
        assertEq(keccak256(c.value), keccak256("kyc:ok"), "value");
        assertTrue(!c.revoked, "live");
    }

    function test_plainAttributeDoesNotChangeLevel() public {
        vm.recordLogs();
        vm.prank(v1);
        reg.issueCertificate(alice, 2001, "country:DE");
        assertEq(vm.getRecordedLogs().length, 1, "only CertificateIssued");
        assertEq(reg.levelOf(alice), 0, "still anonymous");
        // Types around the level range are plain data too.
        vm.prank(v3);
        reg.issueCertificate(alice, 1000, "");
        vm.prank(v3);
        reg.issueCertificate(alice, 1004, "");
        assertEq(reg.levelOf(alice), 0, "1000 and 1004 are not levels");
    }

    function test_levelIsTheHighestLiveCertificate() public {
        vm.prank(v1);
        uint256 low = reg.issueCertificate(alice, 1001, "");
        vm.prank(v3);
        uint256 high = reg.issueCertificate(alice, 1003, "");
        vm.prank(v3);
        uint256 high2 = reg.issueCertificate(alice, 1003, "again");
        assertEq(reg.levelOf(alice), 3, "professional");
        vm.recordLogs();
        vm.prank(v3);
        reg.revokeCertificate(high);
        assertEq(vm.getRecordedLogs().length, 1, "still level 3: no level event");
        assertEq(reg.levelOf(alice), 3, "second level-3 certificate");
        vm.expectEmit(address(reg));
        emit ProfileRegistry.CertificateRevoked(high2, address(this));
        vm.expectEmit(address(reg));
        emit ProfileRegistry.IdentityLevelChanged(alice, 1);
        reg.revokeCertificate(high2); // the owner may revoke too
        assertEq(reg.levelOf(alice), 1, "falls back to registered");
        vm.prank(v1);
        reg.revokeCertificate(low);
        assertEq(reg.levelOf(alice), 0, "anonymous again");
        assertTrue(reg.getCertificate(low).revoked, "marked");
    }

    function test_levelsOf() public {
        vm.prank(v3);
        reg.issueCertificate(alice, 1003, "");
        (uint8 a, uint8 b) = reg.levelsOf(alice, stranger);
        assertEq(a, 3, "alice");
        assertEq(b, 0, "stranger");
    }

    function test_issue_reverts() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.NotValidator.selector, stranger));
        reg.issueCertificate(alice, 2001, "");
        vm.prank(v1);
        vm.expectRevert(Owned.ZeroAddress.selector);
        reg.issueCertificate(address(0), 2001, "");
        vm.prank(v1);
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.ValidatorLevelTooLow.selector, 1, 2));
        reg.issueCertificate(alice, 1002, "");
        // A removed validator can no longer issue.
        reg.setValidator(v1, 0);
        vm.prank(v1);
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.NotValidator.selector, v1));
        reg.issueCertificate(alice, 1001, "");
    }

    function test_revoke_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.UnknownCertificate.selector, 9));
        reg.revokeCertificate(9);
        vm.prank(v1);
        uint256 id = reg.issueCertificate(alice, 1001, "");
        vm.prank(v3); // another validator, even a higher one
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.NotIssuer.selector, v3));
        reg.revokeCertificate(id);
        vm.prank(v1);
        reg.revokeCertificate(id);
        vm.prank(v1);
        vm.expectRevert(abi.encodeWithSelector(ProfileRegistry.AlreadyRevoked.selector, id));
        reg.revokeCertificate(id);
    }
}

contract BlacklistTest is Test {
    Blacklist internal bl;
    address internal market = address(0x3A2);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal carol = address(0xCA201);

    function setUp() public {
        bl = new Blacklist(address(this));
    }

    function test_setMarketOnce() public {
        vm.expectEmit(address(bl));
        emit Blacklist.MarketSet(market);
        bl.setMarket(market);
        assertEq(bl.market(), market, "set");
        vm.expectRevert(Blacklist.MarketAlreadySet.selector);
        bl.setMarket(bob);
    }

    function test_setMarket_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, alice));
        bl.setMarket(market);
        vm.expectRevert(Owned.ZeroAddress.selector);
        bl.setMarket(address(0));
    }

    function test_addRemoveOwnList() public {
        vm.expectEmit(address(bl));
        emit Blacklist.Blacklisted(alice, bob);
        vm.prank(alice);
        bl.add(bob);
        assertTrue(bl.isListed(alice, bob), "listed");
        assertTrue(!bl.isListed(bob, alice), "lists are one-way");

        vm.recordLogs();
        vm.prank(alice);
        bl.add(bob);
        assertEq(vm.getRecordedLogs().length, 0, "second add is a silent no-op");

        vm.expectEmit(address(bl));
        emit Blacklist.Unblacklisted(alice, bob);
        vm.prank(alice);
        bl.remove(bob);
        assertTrue(!bl.isListed(alice, bob), "removed");

        vm.recordLogs();
        vm.prank(alice);
        bl.remove(bob);
        assertEq(vm.getRecordedLogs().length, 0, "second remove is a silent no-op");
    }

    function test_add_revertsForZero() public {
        vm.prank(alice);
        vm.expectRevert(Owned.ZeroAddress.selector);
        bl.add(address(0));
    }

    function test_addFor_onlyMarket() public {
        bl.setMarket(market);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Blacklist.NotMarket.selector, alice));
        bl.addFor(alice, bob);
        vm.expectEmit(address(bl));
        emit Blacklist.Blacklisted(alice, bob);
        vm.prank(market);
        bl.addFor(alice, bob);
        assertTrue(bl.isListed(alice, bob), "written by the market");
    }

    function test_addFor_beforeMarketIsSetReverts() public {
        // market is address(0) until set: nobody can pass as it.
        vm.prank(address(0));
        vm.expectRevert(abi.encodeWithSelector(Blacklist.NotMarket.selector, address(0)));
        bl.addFor(alice, bob);
    }

    function test_listedByEither() public {
        vm.prank(alice);
        bl.add(carol);
        vm.prank(bob);
        bl.add(market);
        assertTrue(bl.listedByEither(alice, address(0), carol), "own list");
        assertTrue(bl.listedByEither(bob, alice, carol), "extra list");
        assertTrue(!bl.listedByEither(bob, address(0), carol), "no extra");
        assertTrue(bl.listedByEither(alice, bob, carol), "own list, extra list without it");
        assertTrue(!bl.listedByEither(carol, bob, alice), "in neither");
    }
}

contract OracleUSDTest is Test {
    OracleUSD internal oracle;

    function test_constructorSetsPriceAndEmits() public {
        vm.warp(5000);
        vm.expectEmit();
        emit OracleUSD.PriceChanged(5e16, 5000);
        oracle = new OracleUSD(address(this), 5e16);
        assertEq(oracle.price(), 5e16, "price");
        assertEq(oracle.updatedAt(), 5000, "time");
    }

    function test_setPrice() public {
        oracle = new OracleUSD(address(this), 1);
        vm.warp(7000);
        vm.expectEmit(address(oracle));
        emit OracleUSD.PriceChanged(3e16, 7000);
        oracle.setPrice(3e16);
        assertEq(oracle.price(), 3e16, "price");
        assertEq(oracle.updatedAt(), 7000, "time");
    }

    function test_reverts() public {
        vm.expectRevert(OracleUSD.ZeroPrice.selector);
        new OracleUSD(address(this), 0);
        vm.expectRevert(Owned.ZeroAddress.selector);
        new OracleUSD(address(0), 1);
        oracle = new OracleUSD(address(this), 1);
        vm.expectRevert(OracleUSD.ZeroPrice.selector);
        oracle.setPrice(0);
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(0xBAD)));
        oracle.setPrice(2);
    }
}
