// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {SNM} from "../src/SNM.sol";
import {Gate} from "../src/Gate.sol";
import {Owned} from "../src/Owned.sol";
import {IERC20} from "../src/IERC20.sol";
import {MockToken} from "./utils/MockToken.sol";

abstract contract GateBase is Test {
    SNM internal snm;
    Gate internal gate;
    uint256[3] internal keys = [uint256(0x1001), 0x1002, 0x1003];
    address[3] internal keepers;
    address internal user = address(0x05E2);
    address internal relayer = address(0x2E1A);
    address internal srcGate = address(0x5C2);
    uint256 internal constant SRC_CHAIN = 1;
    uint96 internal constant LIMIT = 1000 ether;
    uint256 internal constant RESERVE = 100_000 ether;

    function setUp() public virtual {
        vm.warp(1_800_000_000);
        snm = new SNM(address(this), 1_000_000 ether);
        gate = new Gate(IERC20(address(snm)), address(this), 2);
        for (uint256 i; i < 3; ++i) {
            keepers[i] = vm.addr(keys[i]);
            gate.setKeeper(keepers[i], LIMIT);
        }
        snm.transfer(address(gate), RESERVE); // this side's reserve
        snm.transfer(user, 10_000 ether);
    }

    /// Signatures of the given keepers over a transfer, ordered by signer.
    function signed(uint256[] memory ks, uint256 nonce, address to, uint256 amount)
        internal
        view
        returns (Gate.Signature[] memory sigs)
    {
        bytes32 digest = gate.transferDigest(SRC_CHAIN, srcGate, nonce, to, amount);
        sigs = new Gate.Signature[](ks.length);
        address[] memory who = new address[](ks.length);
        for (uint256 i; i < ks.length; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(ks[i], digest);
            sigs[i] = Gate.Signature(v, r, s);
            who[i] = vm.addr(ks[i]);
        }
        // insertion sort by signer address
        for (uint256 i = 1; i < ks.length; ++i) {
            for (uint256 j = i; j > 0 && who[j - 1] > who[j]; --j) {
                (who[j - 1], who[j]) = (who[j], who[j - 1]);
                (sigs[j - 1], sigs[j]) = (sigs[j], sigs[j - 1]);
            }
        }
    }

    function two() internal view returns (uint256[] memory ks) {
        ks = new uint256[](2);
        ks[0] = keys[0];
        ks[1] = keys[1];
    }

    function all() internal view returns (uint256[] memory ks) {
        ks = new uint256[](3);
        ks[0] = keys[0];
        ks[1] = keys[1];
        ks[2] = keys[2];
    }
}

contract GateTest is GateBase {
    function test_constructor() public {
        assertEq(address(gate.token()), address(snm), "token");
        assertEq(gate.threshold(), 2, "threshold");
        assertEq(gate.owner(), address(this), "owner");
        vm.expectRevert(Owned.ZeroAddress.selector);
        new Gate(IERC20(address(0)), address(this), 1);
        vm.expectRevert(Gate.InvalidThreshold.selector);
        new Gate(IERC20(address(snm)), address(this), 0);
        vm.expectRevert(Owned.ZeroAddress.selector);
        new Gate(IERC20(address(snm)), address(0), 1);
    }

    // ----------------------------------------------------------------- lock

    function test_lock_takesTokensAndEmits() public {
        vm.prank(user);
        snm.approve(address(gate), 50 ether);
        vm.expectEmit(address(gate));
        emit Gate.Locked(1, user, address(0xD57), 50 ether, 444);
        vm.prank(user);
        uint256 nonce = gate.lock(address(0xD57), 50 ether, 444);
        assertEq(nonce, 1, "nonce");
        assertEq(gate.lockNonce(), 1, "stored nonce");
        assertEq(snm.balanceOf(address(gate)), RESERVE + 50 ether, "locked");
        assertEq(snm.balanceOf(user), 10_000 ether - 50 ether, "taken");
    }

    function test_lock_reverts() public {
        vm.startPrank(user);
        vm.expectRevert(Owned.ZeroAddress.selector);
        gate.lock(address(0), 1, 444);
        vm.expectRevert(Gate.ZeroAmount.selector);
        gate.lock(user, 0, 444);
        uint256 big = uint256(type(uint96).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Gate.AmountTooLarge.selector, big));
        gate.lock(user, big, 444);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientAllowance.selector, address(gate), 0, 1 ether));
        gate.lock(user, 1 ether, 444);
        vm.stopPrank();
    }

    function test_lock_tokenReturningFalseReverts() public {
        MockToken t = new MockToken(user, 10 ether);
        Gate g = new Gate(IERC20(address(t)), address(this), 1);
        vm.prank(user);
        t.approve(address(g), 10 ether);
        t.setReturnFalse(true);
        vm.prank(user);
        vm.expectRevert(Gate.TransferFailed.selector);
        g.lock(user, 1 ether, 444);
    }

    // ------------------------------------------------------------------ pay

    function test_pay_withThresholdSignatures() public {
        Gate.Signature[] memory sigs = signed(two(), 7, user, 100 ether);
        bytes32 id = gate.transferId(SRC_CHAIN, srcGate, 7);
        vm.expectEmit(address(gate));
        emit Gate.Paid(id, SRC_CHAIN, srcGate, 7, user, 100 ether);
        vm.prank(relayer);
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, sigs);
        assertTrue(gate.paid(id), "marked");
        assertEq(snm.balanceOf(user), 10_100 ether, "paid");
        assertEq(snm.balanceOf(address(gate)), RESERVE - 100 ether, "from the reserve");
        (, uint96 spent, uint32 day,) = gate.keepers(keepers[0]);
        assertEq(spent, 100 ether, "charged to the keeper");
        assertEq(day, block.timestamp / 1 days, "today");
    }

    function test_pay_moreSignaturesThanThresholdAllCount() public {
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, signed(all(), 7, user, 100 ether));
        (, uint96 spent,,) = gate.keepers(keepers[2]);
        assertEq(spent, 100 ether, "third keeper charged too");
    }

    function test_pay_replayFails() public {
        Gate.Signature[] memory sigs = signed(two(), 7, user, 100 ether);
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, sigs);
        bytes32 id = gate.transferId(SRC_CHAIN, srcGate, 7);
        vm.expectRevert(abi.encodeWithSelector(Gate.AlreadyPaid.selector, id));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, sigs);
        // Fresh signatures by other keepers do not help either: the transfer is paid.
        Gate.Signature[] memory fresh = signed(all(), 7, user, 100 ether);
        vm.expectRevert(abi.encodeWithSelector(Gate.AlreadyPaid.selector, id));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, fresh);
        assertEq(snm.balanceOf(user), 10_100 ether, "paid once");
    }

    /// The first signature of `sigs`, checked against the terms actually
    /// submitted, recovers some unrelated address: pay must name it.
    function expectStranger(
        Gate.Signature[] memory sigs,
        uint256 chain,
        address src,
        uint256 nonce,
        address to,
        uint256 amount
    ) internal {
        address recovered =
            ecrecover(gate.transferDigest(chain, src, nonce, to, amount), sigs[0].v, sigs[0].r, sigs[0].s);
        vm.expectRevert(abi.encodeWithSelector(Gate.NotKeeper.selector, recovered));
    }

    function test_pay_signatureForOtherTermsRecoversAStranger() public {
        Gate.Signature[] memory sigs = signed(two(), 7, user, 100 ether);
        expectStranger(sigs, SRC_CHAIN, srcGate, 7, user, 1000 ether);
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1000 ether, sigs);
        expectStranger(sigs, SRC_CHAIN, srcGate, 7, relayer, 100 ether);
        gate.pay(SRC_CHAIN, srcGate, 7, relayer, 100 ether, sigs);
        expectStranger(sigs, SRC_CHAIN, srcGate, 8, user, 100 ether);
        gate.pay(SRC_CHAIN, srcGate, 8, user, 100 ether, sigs);
        expectStranger(sigs, SRC_CHAIN + 1, srcGate, 7, user, 100 ether);
        gate.pay(SRC_CHAIN + 1, srcGate, 7, user, 100 ether, sigs);
        expectStranger(sigs, SRC_CHAIN, address(0x1), 7, user, 100 ether);
        gate.pay(SRC_CHAIN, address(0x1), 7, user, 100 ether, sigs);
        assertEq(snm.balanceOf(user), 10_000 ether, "nothing paid");
    }

    function test_pay_signatureForAnotherGateOrChainFails() public {
        Gate other = new Gate(IERC20(address(snm)), address(this), 2);
        for (uint256 i; i < 3; ++i) {
            other.setKeeper(keepers[i], LIMIT);
        }
        snm.transfer(address(other), 1000 ether);
        Gate.Signature[] memory sigs = signed(two(), 7, user, 100 ether); // for `gate`
        address recovered =
            ecrecover(other.transferDigest(SRC_CHAIN, srcGate, 7, user, 100 ether), sigs[0].v, sigs[0].r, sigs[0].s);
        vm.expectRevert(abi.encodeWithSelector(Gate.NotKeeper.selector, recovered));
        other.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, sigs);

        vm.chainId(31338); // same gate, forked chain
        recovered =
            ecrecover(gate.transferDigest(SRC_CHAIN, srcGate, 7, user, 100 ether), sigs[0].v, sigs[0].r, sigs[0].s);
        vm.expectRevert(abi.encodeWithSelector(Gate.NotKeeper.selector, recovered));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 100 ether, sigs);
    }

    function test_pay_tooFewSignatures() public {
        uint256[] memory one = new uint256[](1);
        one[0] = keys[0];
        Gate.Signature[] memory sigs = signed(one, 7, user, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(Gate.NotEnoughSignatures.selector, 1, 2));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
    }

    function test_pay_sameKeeperTwiceFails() public {
        uint256[] memory dup = new uint256[](2);
        dup[0] = keys[0];
        dup[1] = keys[0];
        Gate.Signature[] memory sigs = signed(dup, 7, user, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(Gate.SignersNotAscending.selector, 1));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
    }

    function test_pay_unsortedFails() public {
        Gate.Signature[] memory sigs = signed(two(), 7, user, 1 ether);
        (sigs[0], sigs[1]) = (sigs[1], sigs[0]);
        vm.expectRevert(abi.encodeWithSelector(Gate.SignersNotAscending.selector, 1));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
    }

    function test_pay_malformedSignatures() public {
        Gate.Signature[] memory sigs = signed(two(), 7, user, 1 ether);
        Gate.Signature memory good = sigs[0];
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        sigs[0] = Gate.Signature(good.v == 27 ? 28 : 27, good.r, bytes32(n - uint256(good.s)));
        vm.expectRevert(abi.encodeWithSelector(Gate.InvalidSignature.selector, 0));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
        sigs[0] = Gate.Signature(29, good.r, good.s);
        vm.expectRevert(abi.encodeWithSelector(Gate.InvalidSignature.selector, 0));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
        sigs[0] = Gate.Signature(27, bytes32(0), good.s); // recovers to address(0)
        vm.expectRevert(abi.encodeWithSelector(Gate.InvalidSignature.selector, 0));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
    }

    function test_pay_nonKeeperFails() public {
        uint256[] memory ks = new uint256[](2);
        ks[0] = keys[0];
        ks[1] = 0xBAD; // not a keeper
        Gate.Signature[] memory sigs = signed(ks, 7, user, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(Gate.NotKeeper.selector, vm.addr(0xBAD)));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
    }

    function test_pay_frozenKeeperFails() public {
        vm.expectEmit(address(gate));
        emit Gate.KeeperFrozen(keepers[1], true);
        gate.setFrozen(keepers[1], true);
        Gate.Signature[] memory sigs = signed(two(), 7, user, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(Gate.KeeperIsFrozen.selector, keepers[1]));
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
        gate.setFrozen(keepers[1], false);
        gate.pay(SRC_CHAIN, srcGate, 7, user, 1 ether, sigs);
        assertEq(snm.balanceOf(user), 10_001 ether, "paid once unfrozen");
    }

    function test_pay_keeperOverDailyLimit() public {
        gate.pay(SRC_CHAIN, srcGate, 1, user, 600 ether, signed(two(), 1, user, 600 ether));
        Gate.Signature[] memory sigs = signed(two(), 2, user, 500 ether);
        vm.expectRevert(
            abi.encodeWithSelector(
                Gate.KeeperOverLimit.selector, keepers[0] < keepers[1] ? keepers[0] : keepers[1], 1100 ether, LIMIT
            )
        );
        gate.pay(SRC_CHAIN, srcGate, 2, user, 500 ether, sigs);
        // Exactly up to the limit is fine.
        gate.pay(SRC_CHAIN, srcGate, 3, user, 400 ether, signed(two(), 3, user, 400 ether));
        // The next UTC day the allowance is fresh.
        vm.warp((block.timestamp / 1 days + 1) * 1 days);
        gate.pay(SRC_CHAIN, srcGate, 2, user, 500 ether, sigs);
        (, uint96 spent,,) = gate.keepers(keepers[0]);
        assertEq(spent, 500 ether, "new day's total");
    }

    function test_pay_singleTransferAboveLimit() public {
        Gate.Signature[] memory sigs = signed(two(), 1, user, uint256(LIMIT) + 1);
        address first = keepers[0] < keepers[1] ? keepers[0] : keepers[1];
        vm.expectRevert(abi.encodeWithSelector(Gate.KeeperOverLimit.selector, first, uint256(LIMIT) + 1, LIMIT));
        gate.pay(SRC_CHAIN, srcGate, 1, user, uint256(LIMIT) + 1, sigs);
    }

    function test_pay_argumentChecks() public {
        Gate.Signature[] memory sigs = signed(two(), 1, user, 1);
        vm.expectRevert(Owned.ZeroAddress.selector);
        gate.pay(SRC_CHAIN, srcGate, 1, address(0), 1, sigs);
        vm.expectRevert(Gate.ZeroAmount.selector);
        gate.pay(SRC_CHAIN, srcGate, 1, user, 0, sigs);
        uint256 big = uint256(type(uint96).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Gate.AmountTooLarge.selector, big));
        gate.pay(SRC_CHAIN, srcGate, 1, user, big, sigs);
    }

    function test_pay_reserveTooSmallReverts() public {
        gate.setKeeper(keepers[0], type(uint96).max);
        gate.setKeeper(keepers[1], type(uint96).max);
        Gate.Signature[] memory sigs = signed(two(), 1, user, RESERVE + 1);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientBalance.selector, address(gate), RESERVE, RESERVE + 1));
        gate.pay(SRC_CHAIN, srcGate, 1, user, RESERVE + 1, sigs);
        assertTrue(!gate.paid(gate.transferId(SRC_CHAIN, srcGate, 1)), "not marked: can be paid later");
    }

    function test_pay_tokenReturningFalseReverts() public {
        MockToken t = new MockToken(address(this), 10 ether);
        Gate g = new Gate(IERC20(address(t)), address(this), 1);
        g.setKeeper(keepers[0], LIMIT);
        t.transfer(address(g), 10 ether);
        t.setReturnFalse(true);
        Gate.Signature[] memory sigs = new Gate.Signature[](1);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[0], g.transferDigest(SRC_CHAIN, srcGate, 1, user, 1 ether));
        sigs[0] = Gate.Signature(v, r, s);
        vm.expectRevert(Gate.TransferFailed.selector);
        g.pay(SRC_CHAIN, srcGate, 1, user, 1 ether, sigs);
    }

    function test_transferDigestIsEip712() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("SONM Gate"),
                keccak256("1"),
                block.chainid,
                address(gate)
            )
        );
        assertEq(gate.domainSeparator(), domain, "domain");
        assertEq(
            gate.TRANSFER_TYPEHASH(),
            keccak256("Transfer(uint256 srcChainId,address srcGate,uint256 nonce,address to,uint256 amount)"),
            "typehash"
        );
        assertEq(gate.transferId(1, srcGate, 7), keccak256(abi.encode(uint256(1), srcGate, uint256(7))), "transfer id");
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Transfer(uint256 srcChainId,address srcGate,uint256 nonce,address to,uint256 amount)"),
                SRC_CHAIN,
                srcGate,
                7,
                user,
                5
            )
        );
        assertEq(
            gate.transferDigest(SRC_CHAIN, srcGate, 7, user, 5),
            keccak256(abi.encodePacked("\x19\x01", domain, structHash)),
            "digest"
        );
    }

    // --------------------------------------------------------------- admin

    function test_admin() public {
        address k = address(0x4EE);
        vm.expectEmit(address(gate));
        emit Gate.KeeperSet(k, 5 ether);
        gate.setKeeper(k, 5 ether);
        (uint96 limit,,,) = gate.keepers(k);
        assertEq(limit, 5 ether, "limit");
        gate.setKeeper(k, 0); // removal
        vm.expectRevert(abi.encodeWithSelector(Gate.NotKeeper.selector, k));
        gate.setFrozen(k, true);
        vm.expectRevert(Owned.ZeroAddress.selector);
        gate.setKeeper(address(0), 1);

        vm.expectEmit(address(gate));
        emit Gate.ThresholdSet(3);
        gate.setThreshold(3);
        assertEq(gate.threshold(), 3, "threshold");
        vm.expectRevert(Gate.InvalidThreshold.selector);
        gate.setThreshold(0);
    }

    function test_admin_onlyOwner() public {
        vm.startPrank(relayer);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, relayer));
        gate.setKeeper(relayer, 1);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, relayer));
        gate.setFrozen(keepers[0], true);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, relayer));
        gate.setThreshold(1);
        vm.stopPrank();
    }
}
