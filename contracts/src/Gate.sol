// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "./IERC20.sol";
import {Owned} from "./Owned.sol";
import {Signatures} from "./Signatures.sol";

/// @title Gate: moves SNM between the main chain and the SONM chain.
/// @notice One Gate runs on each chain, each holding a reserve of SNM. A user
/// locks tokens in the Gate on the source chain (`lock`, event Locked); gate
/// keepers watch for it and sign the transfer; anyone relays the signatures to
/// the Gate on the destination chain, which pays from its reserve once
/// `threshold` distinct keepers have signed (`pay`). Nothing is minted or
/// burnt, so the token's total supply is the same on both sides of a gate.
///
/// Keepers sign an EIP-712 digest whose domain holds the destination chain id
/// and the destination Gate's address, and whose message holds the source
/// chain id, source Gate, nonce, recipient and amount: a signature is valid
/// for exactly one payment on one gate. Each (source chain, source gate,
/// nonce) is paid at most once. Each keeper has a daily limit on the value it
/// may co-sign, bounding the damage of a stolen keeper key; the owner can
/// freeze a keeper at once.
contract Gate is Owned {
    struct Keeper {
        uint96 dailyLimit; // 0 = not a keeper
        uint96 spentToday; // value co-signed during `day`
        uint32 day; // UTC day index (timestamp / 1 days) of spentToday
        bool frozen;
    }

    struct Signature {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    bytes32 public constant TRANSFER_TYPEHASH =
        keccak256("Transfer(uint256 srcChainId,address srcGate,uint256 nonce,address to,uint256 amount)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    IERC20 public immutable token;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    uint64 public lockNonce;
    uint8 public threshold;
    mapping(address keeper => Keeper) public keepers;
    mapping(bytes32 transferId => bool) public paid;

    event Locked(uint256 indexed nonce, address indexed from, address indexed to, uint256 amount, uint256 dstChainId);
    event Paid(
        bytes32 indexed transferId,
        uint256 indexed srcChainId,
        address srcGate,
        uint256 nonce,
        address indexed to,
        uint256 amount
    );
    event KeeperSet(address indexed keeper, uint256 dailyLimit);
    event KeeperFrozen(address indexed keeper, bool frozen);
    event ThresholdSet(uint8 threshold);

    error ZeroAmount();
    error AmountTooLarge(uint256 amount);
    error InvalidThreshold();
    error AlreadyPaid(bytes32 transferId);
    error NotEnoughSignatures(uint256 given, uint256 needed);
    error InvalidSignature(uint256 index);
    error SignersNotAscending(uint256 index);
    error NotKeeper(address signer);
    error KeeperIsFrozen(address keeper);
    error KeeperOverLimit(address keeper, uint256 spent, uint256 limit);
    error TransferFailed();

    constructor(IERC20 token_, address initialOwner, uint8 threshold_) Owned(initialOwner) {
        if (address(token_) == address(0)) revert ZeroAddress();
        if (threshold_ == 0) revert InvalidThreshold();
        token = token_;
        threshold = threshold_;
        emit ThresholdSet(threshold_);
        cachedChainId = block.chainid;
        cachedDomainSeparator = _domainSeparator();
    }

    // ------------------------------------------------------------ transfers

    /// @notice Locks `amount` of the caller's SNM here for `to` on chain `dstChainId`.
    function lock(address to, uint256 amount, uint256 dstChainId) external returns (uint256 nonce) {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        // Keepers' limits are 96-bit; a larger transfer could never be paid.
        if (amount > type(uint96).max) revert AmountTooLarge(amount);
        nonce = ++lockNonce;
        emit Locked(nonce, msg.sender, to, amount, dstChainId);
        if (!token.transferFrom(msg.sender, address(this), amount)) revert TransferFailed();
    }

    /// @notice Pays a transfer locked on the source chain, given the keepers'
    /// signatures ordered by ascending signer address (which rules out one
    /// keeper counting twice). Anyone may relay.
    function pay(
        uint256 srcChainId,
        address srcGate,
        uint256 nonce,
        address to,
        uint256 amount,
        Signature[] calldata sigs
    ) external {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint96).max) revert AmountTooLarge(amount);
        bytes32 id = transferId(srcChainId, srcGate, nonce);
        if (paid[id]) revert AlreadyPaid(id);
        if (sigs.length < threshold) revert NotEnoughSignatures(sigs.length, threshold);

        bytes32 digest = transferDigest(srcChainId, srcGate, nonce, to, amount);
        uint32 today = uint32(block.timestamp / 1 days);
        address last;
        for (uint256 i; i < sigs.length; ++i) {
            address signer = _recover(digest, sigs[i], i);
            if (signer <= last) revert SignersNotAscending(i);
            last = signer;
            _charge(signer, amount, today);
        }

        paid[id] = true;
        emit Paid(id, srcChainId, srcGate, nonce, to, amount);
        if (!token.transfer(to, amount)) revert TransferFailed();
    }

    function transferId(uint256 srcChainId, address srcGate, uint256 nonce) public pure returns (bytes32) {
        return keccak256(abi.encode(srcChainId, srcGate, nonce));
    }

    /// @notice The digest keepers sign for a payment by this gate.
    function transferDigest(uint256 srcChainId, address srcGate, uint256 nonce, address to, uint256 amount)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(TRANSFER_TYPEHASH, srcChainId, srcGate, nonce, to, amount));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _domainSeparator();
    }

    // -------------------------------------------------------------- keepers

    /// @notice Adds a keeper, changes its daily limit, or removes it (limit 0).
    function setKeeper(address keeper, uint96 dailyLimit) external onlyOwner {
        if (keeper == address(0)) revert ZeroAddress();
        keepers[keeper].dailyLimit = dailyLimit;
        emit KeeperSet(keeper, dailyLimit);
    }

    function setFrozen(address keeper, bool frozen) external onlyOwner {
        if (keepers[keeper].dailyLimit == 0) revert NotKeeper(keeper);
        keepers[keeper].frozen = frozen;
        emit KeeperFrozen(keeper, frozen);
    }

    function setThreshold(uint8 threshold_) external onlyOwner {
        if (threshold_ == 0) revert InvalidThreshold();
        threshold = threshold_;
        emit ThresholdSet(threshold_);
    }

    // ------------------------------------------------------------ internals

    function _recover(bytes32 digest, Signature calldata sig, uint256 index) private pure returns (address signer) {
        signer = Signatures.recover(digest, sig.v, sig.r, sig.s);
        if (signer == address(0)) revert InvalidSignature(index);
    }

    function _charge(address signer, uint256 amount, uint32 today) private {
        Keeper storage k = keepers[signer];
        uint256 limit = k.dailyLimit;
        if (limit == 0) revert NotKeeper(signer);
        if (k.frozen) revert KeeperIsFrozen(signer);
        uint256 spent = (k.day == today ? k.spentToday : 0) + amount;
        if (spent > limit) revert KeeperOverLimit(signer, spent, limit);
        // spent <= limit < 2^96
        k.spentToday = uint96(spent);
        k.day = today;
    }

    function _domainSeparator() private view returns (bytes32) {
        return
            keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("SONM Gate"), keccak256("1"), block.chainid, address(this)));
    }
}
