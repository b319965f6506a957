// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {SNM} from "../src/SNM.sol";
import {IERC20} from "../src/IERC20.sol";

contract SNMTest is Test {
    SNM internal snm;
    uint256 internal constant SUPPLY = 444_000_000 ether;
    uint256 internal constant OWNER_KEY = 0xA11CE;
    address internal owner;
    address internal bob = address(0xB0B);
    address internal spender = address(0x5BE);

    function setUp() public {
        owner = vm.addr(OWNER_KEY);
        snm = new SNM(address(this), SUPPLY);
        snm.transfer(owner, 1000 ether);
    }

    function test_metadataAndSupply() public {
        assertEq(keccak256(bytes(snm.name())), keccak256("SONM Token"), "name");
        assertEq(keccak256(bytes(snm.symbol())), keccak256("SNM"), "symbol");
        assertEq(snm.decimals(), 18, "decimals");
        assertEq(snm.totalSupply(), SUPPLY, "supply");
        assertEq(snm.balanceOf(address(this)), SUPPLY - 1000 ether, "holder");
        vm.expectEmit();
        emit IERC20.Transfer(address(0), bob, 5);
        new SNM(bob, 5);
    }

    function test_constructor_reverts() public {
        vm.expectRevert(SNM.ZeroAddress.selector);
        new SNM(address(0), 1);
        uint256 tooMuch = uint256(type(uint128).max) + 1;
        vm.expectRevert(SNM.SupplyTooLarge.selector);
        new SNM(bob, tooMuch);
        new SNM(bob, type(uint128).max); // the bound itself is fine
    }

    function test_transfer_movesAndEmits() public {
        vm.expectEmit(address(snm));
        emit IERC20.Transfer(owner, bob, 10 ether);
        vm.prank(owner);
        assertTrue(snm.transfer(bob, 10 ether), "returns true");
        assertEq(snm.balanceOf(owner), 990 ether, "from");
        assertEq(snm.balanceOf(bob), 10 ether, "to");
    }

    function test_transfer_toSelfKeepsBalance() public {
        vm.prank(owner);
        snm.transfer(owner, 10 ether);
        assertEq(snm.balanceOf(owner), 1000 ether, "unchanged");
    }

    function test_transfer_reverts() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientBalance.selector, owner, 1000 ether, 1000 ether + 1));
        snm.transfer(bob, 1000 ether + 1);
        vm.prank(owner);
        vm.expectRevert(SNM.ZeroAddress.selector);
        snm.transfer(address(0), 1);
    }

    function test_approveAndTransferFrom() public {
        vm.expectEmit(address(snm));
        emit IERC20.Approval(owner, spender, 30 ether);
        vm.prank(owner);
        assertTrue(snm.approve(spender, 30 ether), "returns true");
        assertEq(snm.allowance(owner, spender), 30 ether, "allowance");

        vm.expectEmit(address(snm));
        emit IERC20.Transfer(owner, bob, 20 ether);
        vm.prank(spender);
        assertTrue(snm.transferFrom(owner, bob, 20 ether), "returns true");
        assertEq(snm.allowance(owner, spender), 10 ether, "decremented");
        assertEq(snm.balanceOf(bob), 20 ether, "moved");

        vm.prank(spender);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientAllowance.selector, spender, 10 ether, 11 ether));
        snm.transferFrom(owner, bob, 11 ether);
    }

    function test_unlimitedAllowanceIsNotDecremented() public {
        vm.prank(owner);
        snm.approve(spender, type(uint256).max);
        vm.prank(spender);
        snm.transferFrom(owner, bob, 1 ether);
        assertEq(snm.allowance(owner, spender), type(uint256).max, "still unlimited");
    }

    function test_transferFrom_revertsOnBalanceEvenWithAllowance() public {
        vm.prank(owner);
        snm.approve(spender, type(uint256).max);
        vm.prank(spender);
        vm.expectRevert(abi.encodeWithSelector(SNM.InsufficientBalance.selector, owner, 1000 ether, 2000 ether));
        snm.transferFrom(owner, bob, 2000 ether);
    }

    function test_approve_revertsForZeroSpender() public {
        vm.expectRevert(SNM.ZeroAddress.selector);
        snm.approve(address(0), 1);
    }

    // --------------------------------------------------------------- permit

    function permitDigest(address o, address s, uint256 value, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(snm.PERMIT_TYPEHASH(), o, s, value, nonce, deadline));
        return keccak256(abi.encodePacked("\x19\x01", snm.DOMAIN_SEPARATOR(), structHash));
    }

    function test_domainSeparatorIsEip712() public {
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("SONM Token"),
                keccak256("1"),
                block.chainid,
                address(snm)
            )
        );
        assertEq(snm.DOMAIN_SEPARATOR(), expected, "domain");
        vm.chainId(444);
        assertTrue(snm.DOMAIN_SEPARATOR() != expected, "follows a fork's chain id");
    }

    function test_permit_setsAllowanceAndBumpsNonce() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_KEY, permitDigest(owner, spender, 7 ether, 0, deadline));
        vm.expectEmit(address(snm));
        emit IERC20.Approval(owner, spender, 7 ether);
        vm.prank(bob); // anyone may submit it
        snm.permit(owner, spender, 7 ether, deadline, v, r, s);
        assertEq(snm.allowance(owner, spender), 7 ether, "allowance");
        assertEq(snm.nonces(owner), 1, "nonce");
    }

    function test_permit_replayFails() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_KEY, permitDigest(owner, spender, 7 ether, 0, deadline));
        snm.permit(owner, spender, 7 ether, deadline, v, r, s);
        vm.expectRevert(SNM.InvalidSignature.selector);
        snm.permit(owner, spender, 7 ether, deadline, v, r, s);
    }

    function test_permit_expiredFails() public {
        vm.warp(1000);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_KEY, permitDigest(owner, spender, 1, 0, 999));
        vm.expectRevert(abi.encodeWithSelector(SNM.PermitExpired.selector, 999));
        snm.permit(owner, spender, 1, 999, v, r, s);
    }

    function test_permit_wrongSignerOrValueFails() public {
        uint256 deadline = block.timestamp + 1;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(0xB0B, permitDigest(owner, spender, 1, 0, deadline));
        vm.expectRevert(SNM.InvalidSignature.selector);
        snm.permit(owner, spender, 1, deadline, v, r, s);
        (v, r, s) = vm.sign(OWNER_KEY, permitDigest(owner, spender, 1, 0, deadline));
        vm.expectRevert(SNM.InvalidSignature.selector);
        snm.permit(owner, spender, 2, deadline, v, r, s);
        // A garbage signature recovers to address(0): never accepted, even for owner 0.
        vm.expectRevert(SNM.InvalidSignature.selector);
        snm.permit(address(0), spender, 1, deadline, 27, bytes32(0), bytes32(0));
    }

    function test_permit_highSTwinFails() public {
        uint256 deadline = block.timestamp + 1;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_KEY, permitDigest(owner, spender, 1, 0, deadline));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes32 twinS = bytes32(n - uint256(s));
        uint8 twinV = v == 27 ? 28 : 27;
        vm.expectRevert(SNM.InvalidSignature.selector);
        snm.permit(owner, spender, 1, deadline, twinV, r, twinS);
    }

    function testFuzz_transferConservesSupply(address to, uint256 amount) public {
        vm.assume(to != address(0));
        amount = bound(amount, 0, 1000 ether);
        uint256 before = snm.balanceOf(owner) + (to == owner ? 0 : snm.balanceOf(to));
        vm.prank(owner);
        snm.transfer(to, amount);
        uint256 afterSum = snm.balanceOf(owner) + (to == owner ? 0 : snm.balanceOf(to));
        assertEq(afterSum, before, "sum of the two balances");
    }
}
