// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title The signature checks shared by the Gate (keeper signatures) and the
/// Market (signed orders).
library Signatures {
    /// secp256k1 n / 2: signatures with a larger s are the malleable twin.
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// The signer of `digest`, or address(0) for a malformed signature (high
    /// s, v other than 27/28) or one ecrecover rejects. Callers revert on 0.
    function recover(bytes32 digest, uint8 v, bytes32 r, bytes32 s) internal pure returns (address) {
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
