// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";

/// @title Validators, certificates and identity levels.
/// @notice The owner appoints validators, each with a level (REGISTERED,
/// IDENTIFIED or PROFESSIONAL). A validator issues certificates: an attribute
/// type and a value about a subject address (country, KYC, ...), and may
/// revoke what it issued (so may the owner). An address's identity level is
/// derived from its live level certificates: attribute type
/// LEVEL_ATTRIBUTE_BASE + level, issued by a validator of at least that level.
/// It is the highest such level, ANONYMOUS (0) when there is none.
contract ProfileRegistry is Owned {
    uint8 public constant ANONYMOUS = 0;
    uint8 public constant REGISTERED = 1;
    uint8 public constant IDENTIFIED = 2;
    uint8 public constant PROFESSIONAL = 3;

    /// Attribute types 1001, 1002, 1003 attest levels 1, 2, 3. Every other
    /// attribute type is plain profile data and does not affect the level.
    uint256 public constant LEVEL_ATTRIBUTE_BASE = 1000;

    struct Certificate {
        address validator;
        bool revoked;
        address subject;
        uint256 attributeType;
        bytes value;
    }

    mapping(address validator => uint8) public validatorLevel;
    mapping(uint256 id => Certificate) private certificates;
    uint256 public certificateCount;

    /// Live level certificates per subject, three 64-bit counters (levels
    /// 1..3) in one word, so that levelOf, which the Market calls on every
    /// deal, is a single storage read.
    mapping(address subject => uint256) private levelCounts;

    event ValidatorSet(address indexed validator, uint8 level);
    event CertificateIssued(
        uint256 indexed id, address indexed validator, address indexed subject, uint256 attributeType, bytes value
    );
    event CertificateRevoked(uint256 indexed id, address indexed by);
    /// Emitted whenever a subject's derived level changes, so the indexer
    /// never has to recompute it.
    event IdentityLevelChanged(address indexed subject, uint8 level);

    error InvalidLevel(uint8 level);
    error NotValidator(address caller);
    error ValidatorLevelTooLow(uint8 validatorLevel, uint8 attested);
    error UnknownCertificate(uint256 id);
    error AlreadyRevoked(uint256 id);
    error NotIssuer(address caller);

    constructor(address initialOwner) Owned(initialOwner) {}

    /// @notice Appoints, re-levels (1..3) or removes (0) a validator. Removing
    /// a validator does not revoke what it issued; the owner can do that.
    function setValidator(address validator, uint8 level) external onlyOwner {
        if (validator == address(0)) revert ZeroAddress();
        if (level > PROFESSIONAL) revert InvalidLevel(level);
        validatorLevel[validator] = level;
        emit ValidatorSet(validator, level);
    }

    function issueCertificate(address subject, uint256 attributeType, bytes calldata value)
        external
        returns (uint256 id)
    {
        uint8 vLevel = validatorLevel[msg.sender];
        if (vLevel == 0) revert NotValidator(msg.sender);
        if (subject == address(0)) revert ZeroAddress();
        uint8 attested = _attestedLevel(attributeType);
        if (attested > vLevel) revert ValidatorLevelTooLow(vLevel, attested);

        id = ++certificateCount;
        certificates[id] = Certificate(msg.sender, false, subject, attributeType, value);
        emit CertificateIssued(id, msg.sender, subject, attributeType, value);
        if (attested != 0) _count(subject, attested, true);
    }

    function revokeCertificate(uint256 id) external {
        Certificate storage c = certificates[id];
        if (c.validator == address(0)) revert UnknownCertificate(id);
        if (c.revoked) revert AlreadyRevoked(id);
        if (msg.sender != c.validator && msg.sender != owner) revert NotIssuer(msg.sender);
        c.revoked = true;
        emit CertificateRevoked(id, msg.sender);
        uint8 attested = _attestedLevel(c.attributeType);
        if (attested != 0) _count(c.subject, attested, false);
    }

    function getCertificate(uint256 id) external view returns (Certificate memory) {
        return certificates[id];
    }

    /// @notice The identity level of `subject` (0 = ANONYMOUS .. 3 = PROFESSIONAL).
    function levelOf(address subject) public view returns (uint8) {
        return _levelFromCounts(levelCounts[subject]);
    }

    /// @notice Both levels in one call: the Market needs both sides' levels.
    function levelsOf(address a, address b) external view returns (uint8, uint8) {
        return (levelOf(a), levelOf(b));
    }

    function _attestedLevel(uint256 attributeType) private pure returns (uint8) {
        if (attributeType > LEVEL_ATTRIBUTE_BASE && attributeType <= LEVEL_ATTRIBUTE_BASE + PROFESSIONAL) {
            return uint8(attributeType - LEVEL_ATTRIBUTE_BASE);
        }
        return 0;
    }

    function _levelFromCounts(uint256 counts) private pure returns (uint8) {
        for (uint8 level = PROFESSIONAL; level > 0; --level) {
            if ((counts >> (64 * (level - 1))) & type(uint64).max != 0) return level;
        }
        return ANONYMOUS;
    }

    function _count(address subject, uint8 level, bool up) private {
        uint256 before = levelCounts[subject];
        uint256 unit = uint256(1) << (64 * (level - 1));
        // A 64-bit counter cannot overflow: each increment costs a certificate
        // (tens of thousands of gas), and it only decrements what it counted.
        uint256 next = up ? before + unit : before - unit;
        levelCounts[subject] = next;
        uint8 newLevel = _levelFromCounts(next);
        if (newLevel != _levelFromCounts(before)) emit IdentityLevelChanged(subject, newLevel);
    }
}
