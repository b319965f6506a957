// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// The forge cheatcodes these tests use. forge-std is not available offline,
/// so they are declared here; forge serves them at the address below.
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function warp(uint256 timestamp) external;
    function chainId(uint256 newChainId) external;
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function expectRevert() external;
    function expectRevert(bytes4 selector) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit() external;
    function expectEmit(address emitter) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function assume(bool condition) external pure;
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
}

/// Minimal test base: the cheatcode handle and assertions that revert with
/// both values, which forge decodes from this ABI when a test fails.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    error AssertEqUint(string what, uint256 got, uint256 want);
    error AssertEqAddress(string what, address got, address want);
    error AssertEqBytes32(string what, bytes32 got, bytes32 want);
    error AssertTrue(string what);
    error AssertLe(string what, uint256 got, uint256 max);

    function assertEq(uint256 got, uint256 want, string memory what) internal pure {
        if (got != want) revert AssertEqUint(what, got, want);
    }

    function assertEq(address got, address want, string memory what) internal pure {
        if (got != want) revert AssertEqAddress(what, got, want);
    }

    function assertEq(bytes32 got, bytes32 want, string memory what) internal pure {
        if (got != want) revert AssertEqBytes32(what, got, want);
    }

    function assertTrue(bool ok, string memory what) internal pure {
        if (!ok) revert AssertTrue(what);
    }

    function assertLe(uint256 got, uint256 max, string memory what) internal pure {
        if (got > max) revert AssertLe(what, got, max);
    }

    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        return lo + (x % (hi - lo + 1));
    }
}
