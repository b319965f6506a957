// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "./IERC20.sol";
import {Signatures} from "./Signatures.sol";

interface IProfiles {
    function levelsOf(address a, address b) external view returns (uint8, uint8);
}

interface IBlacklist {
    function listedByEither(address owner, address extra, address who) external view returns (bool);
    function addFor(address owner, address who) external;
}

/// @title The compute market: orders, deals, per-second billing.
///
/// Storage choices (gas):
/// - An order is either placed on chain or signed off chain.
///   * A placed order is stored as one word: the hash of its ABI encoding.
///     The full order travels in the OrderPlaced event (for the indexer) and
///     is passed back as calldata to cancel it or to open a deal, where the
///     hash proves it is the order that was placed. Zero = not active.
///   * A signed order (EIP-712, SignedOrder(Order order,uint64 expiry,uint256
///     nonce)) is never stored: it is checked when a deal is opened from it,
///     and only its nonce is spent, as one bit of the author's nonce bitmap
///     (Permit2 style: 256 nonces share a word, so an author's later orders
///     rewrite a non-zero word instead of filling a fresh slot).
/// - A deal is one word: keccak256(abi.encode(DealState)). Every function
///   acting on a deal takes its current DealState as calldata and checks it
///   against that word. Every field can be rebuilt from the deal's events
///   (DealOpened, then DealBilled.billedUntil and DealChanged in log order);
///   a closed deal's word is deleted. What can be derived is not stored:
///   * the blocked balance is always exactly price x the deal's next period
///     (1 hour for spot, min(1 day, end - lastBillTime) for forward): every
///     bill tops it up or lets it run down to that, and a change of terms
///     moves the difference at once (see _settle, _applyChange);
///   * a forward deal's end is startTime + duration, a closed deal's end is
///     its last DealBilled.billedUntil (also in DealClosed).
///   Ask and bid ids (DealOpened) and payouts (DealBilled, summed by the
///   indexer into the total payout) live in events only.
/// - Prices are capped at 2^96-1 wei/s and durations at 2^40-1 s, so every
///   amount (price x seconds) fits in uint256 with room to spare.
///
/// Token flows follow checks-effects-interactions: every function writes its
/// storage and emits its events before the first token transfer. SNM has no
/// transfer hooks, but the ordering keeps the Market safe even with one
/// (test/Reentrancy.t.sol runs the Market over a hooking token).
contract Market {
    // ---------------------------------------------------------------- types

    uint8 public constant BID = 1;
    uint8 public constant ASK = 2;
    uint256 public constant BENCHMARK_COUNT = 13;
    /// bit0 outbound, bit1 inbound, bit2 public IP.
    uint256 public constant NETFLAGS_MASK = 7;
    uint8 public constant MAX_IDENTITY_LEVEL = 3;
    /// A spot deal keeps one hour blocked ahead.
    uint256 public constant SPOT_PERIOD = 1 hours;
    /// A forward deal keeps min(remaining, one day) blocked ahead.
    uint256 public constant FORWARD_PERIOD_CAP = 1 days;

    /// EIP-712 types of a signed order. The Order type is the struct below,
    /// field for field; benchmarks are hashed as keccak256 of the 32-byte
    /// encoded elements.
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(uint8 orderType,address author,address counterparty,uint64 duration,uint256 price,uint256 netflags,uint8 identityLevel,address blacklist,bytes32 tag,uint64[] benchmarks)"
    );
    bytes32 public constant SIGNED_ORDER_TYPEHASH = keccak256(
        "SignedOrder(Order order,uint64 expiry,uint256 nonce)Order(uint8 orderType,address author,address counterparty,uint64 duration,uint256 price,uint256 netflags,uint8 identityLevel,address blacklist,bytes32 tag,uint64[] benchmarks)"
    );
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    struct Order {
        uint8 orderType; // BID or ASK
        address author;
        address counterparty; // 0 = anyone
        uint64 duration; // seconds, 0 = spot
        uint256 price; // SNM wei per second
        uint256 netflags;
        uint8 identityLevel; // required of the counterparty
        address blacklist; // whose blacklist also applies, 0 = none
        bytes32 tag;
        uint64[] benchmarks; // exactly BENCHMARK_COUNT values
    }

    /// One side of a deal to open: a placed order (id != 0: `order` must be
    /// the placed one; the other fields are ignored) or a signed one (id == 0:
    /// `order` signed by its author with `expiry` and `nonce`; `signature` is
    /// 65 bytes r, s, v).
    struct OrderRef {
        uint256 id;
        Order order;
        uint64 expiry; // last second at which the signed order may be used
        uint256 nonce;
        bytes signature;
    }

    /// An active deal, as hashed into its storage word.
    struct DealState {
        address supplier;
        address consumer;
        address master; // receives the payouts
        uint256 price; // the ask's price, < 2^96
        uint64 startTime;
        uint64 duration; // 0 = spot, < 2^40
        uint64 lastBillTime; // billed up to here
    }

    enum ChangeStatus {
        None,
        Pending,
        Approved,
        Cancelled
    }

    struct ChangeRequest {
        uint64 dealId;
        uint96 price;
        uint40 duration;
        bool byConsumer;
        ChangeStatus status;
    }

    /// What a bill or close moves, collected so that all token transfers
    /// happen after all state changes.
    struct Flows {
        uint256 consumerToMaster;
        uint256 consumerToMarket;
        uint256 marketToMaster;
        uint256 marketToConsumer;
    }

    // ---------------------------------------------------------------- state

    IERC20 public immutable token;
    IProfiles public immutable profiles;
    IBlacklist public immutable blacklist;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    uint64 public orderCount;
    uint64 public dealCount;
    uint64 public changeRequestCount;

    mapping(uint256 orderId => bytes32) public orderHashes;
    /// keccak256(abi.encode(DealState)) of an active deal; 0 = not active.
    mapping(uint256 dealId => bytes32) public dealHashes;
    /// Signed-order nonces: bit (nonce & 255) of word (nonce >> 8) is set once
    /// the nonce is used or cancelled.
    mapping(address author => mapping(uint256 word => uint256 bits)) public nonceBitmap;
    mapping(uint256 requestId => ChangeRequest) public changeRequests;
    mapping(address worker => address) private masters;
    mapping(address worker => address) public pendingMaster;

    // --------------------------------------------------------------- events

    event OrderPlaced(uint256 indexed orderId, uint8 indexed orderType, address indexed author, Order order);
    event OrderCancelled(uint256 indexed orderId, address indexed author);
    /// A signed order was used (for deal `dealId`): its nonce is spent. The
    /// order itself is not emitted; whoever matched it has it.
    event SignedOrderUsed(bytes32 indexed digest, address indexed author, uint256 nonce, uint256 indexed dealId);
    /// `author` invalidated the signed-order nonces `word * 256 + i` for each bit i of `mask`.
    event NoncesCancelled(address indexed author, uint256 indexed word, uint256 mask);
    /// askId / bidId are 0 for a side that was a signed order.
    event DealOpened(
        uint256 indexed dealId,
        address indexed supplier,
        address indexed consumer,
        address master,
        uint256 askId,
        uint256 bidId,
        uint256 price,
        uint64 duration,
        uint64 startTime,
        uint256 blocked
    );
    /// `paid` went to the master for the time up to `billedUntil` (a deal's
    /// total payout is the sum of its DealBilled.paid; its lastBillTime is the
    /// latest billedUntil); `blocked` is what stays held afterwards.
    event DealBilled(uint256 indexed dealId, uint256 paid, uint256 blocked, uint64 billedUntil);
    /// `closedBy` is address(0) when the deal closed because the consumer
    /// could not pay; `refunded` went back to the consumer. A close always
    /// follows a DealBilled for the same deal in the same transaction.
    event DealClosed(
        uint256 indexed dealId, address indexed closedBy, uint64 endTime, uint256 refunded, bool blacklisted
    );
    event ChangeRequestCreated(
        uint256 indexed requestId, uint256 indexed dealId, address indexed requester, uint256 price, uint64 duration
    );
    event ChangeRequestApproved(uint256 indexed requestId, address indexed by);
    event ChangeRequestCancelled(uint256 indexed requestId, address indexed by);
    /// The deal's new price and duration (after a DealBilled at the old terms).
    event DealChanged(uint256 indexed dealId, uint256 price, uint64 duration);
    event WorkerAnnounced(address indexed worker, address indexed master);
    event WorkerConfirmed(address indexed worker, address indexed master);
    event WorkerRemoved(address indexed worker, address indexed master);

    // --------------------------------------------------------------- errors

    error ZeroAddress();
    error InvalidOrderType(uint8 orderType);
    error InvalidBenchmarksLength(uint256 length);
    error InvalidNetflags(uint256 netflags);
    error InvalidIdentityLevel(uint8 level);
    error PriceTooHigh(uint256 price);
    error DurationTooLong(uint64 duration);
    error ZeroPrice();
    error NotAuthor(address caller);
    error UnknownOrder(uint256 orderId);
    error WrongOrderType(uint256 orderId);
    // signed orders
    error OrderExpired(uint64 expiry);
    error InvalidSignature();
    error SignerNotAuthor(address signer, address author);
    error NonceUsed(address author, uint256 nonce);
    // the match rule, one error per clause
    error BenchmarkNotMet(uint256 index);
    error NetflagsNotCovered();
    error PriceNotMatched();
    error DurationMismatch();
    error ConsumerLevelTooLow();
    error SupplierLevelTooLow();
    error SupplierBlacklisted();
    error ConsumerBlacklisted();
    error AskCounterpartyMismatch();
    error BidCounterpartyMismatch();
    // deals
    error DealNotActive(uint256 dealId);
    error DealStateMismatch(uint256 dealId);
    error NotDealParty(address caller);
    error OnlyConsumerBlacklists();
    error DealNotEnded(uint256 endTime);
    error TransferFailed();
    // change requests
    error InvalidDuration(uint64 duration);
    error ChangeRequestNotPending(uint256 requestId);
    error NotRequestCounterparty(address caller);
    // workers
    error SelfMaster();
    error AlreadyHasMaster(address worker, address master);
    error NoPendingWorker(address worker);
    error NotWorkerOf(address worker, address master);
    error NotWorkerOrMaster(address caller);

    constructor(IERC20 token_, IProfiles profiles_, IBlacklist blacklist_) {
        if (address(token_) == address(0) || address(profiles_) == address(0) || address(blacklist_) == address(0)) {
            revert ZeroAddress();
        }
        token = token_;
        profiles = profiles_;
        blacklist = blacklist_;
        cachedChainId = block.chainid;
        cachedDomainSeparator = _domainSeparator();
    }

    // --------------------------------------------------------------- orders

    /// @notice Places an order authored by the caller. A bid blocks
    /// price x first period (see frozenSum) from the caller; approve first.
    function placeOrder(Order calldata order) external returns (uint256 orderId) {
        _validate(order);
        if (order.author != msg.sender) revert NotAuthor(msg.sender);
        orderId = ++orderCount;
        orderHashes[orderId] = keccak256(abi.encode(order));
        emit OrderPlaced(orderId, order.orderType, msg.sender, order);
        if (order.orderType == BID) _pull(msg.sender, address(this), frozenSum(order.price, order.duration));
    }

    /// @notice Cancels an active order of the caller's; a bid's frozen funds return.
    function cancelOrder(uint256 orderId, Order calldata order) external {
        _requireActiveOrder(orderId, order);
        if (order.author != msg.sender) revert NotAuthor(msg.sender);
        delete orderHashes[orderId];
        emit OrderCancelled(orderId, msg.sender);
        if (order.orderType == BID) _send(msg.sender, frozenSum(order.price, order.duration));
    }

    /// @notice Invalidates the caller's unused signed orders whose nonces are
    /// `word * 256 + i` for each bit i set in `mask`.
    function cancelNonces(uint256 word, uint256 mask) external {
        nonceBitmap[msg.sender][word] |= mask;
        emit NoncesCancelled(msg.sender, word, mask);
    }

    /// @notice Whether `author`'s signed-order nonce is used or cancelled.
    function nonceUsed(address author, uint256 nonce) external view returns (bool) {
        return nonceBitmap[author][nonce >> 8] & (1 << (nonce & 255)) != 0;
    }

    /// @notice What a bid blocks: price x period, period = 1 hour for spot,
    /// min(duration, 1 day) for forward.
    function frozenSum(uint256 price, uint64 duration) public pure returns (uint256) {
        return price * _period(duration);
    }

    /// @notice The EIP-712 digest an author signs for a signed order.
    function signedOrderDigest(Order calldata order, uint64 expiry, uint256 nonce) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(SIGNED_ORDER_TYPEHASH, _orderHash(order), expiry, nonce));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice EIP-712 domain: name "SONM Market", version "1", this chain, this Market.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _domainSeparator();
    }

    // ---------------------------------------------------------------- deals

    /// @notice Opens a deal from an ask and a bid that match, each either
    /// placed (active, consumed here) or signed (valid, unexpired, nonce
    /// unused; the nonce is spent here). Anyone may call it (a matcher bot,
    /// either party): both orders already state their authors' consent, and
    /// the match rule is enforced here. The deal runs at the ask's price for
    /// the bid's duration and blocks frozenSum(ask price, bid duration): a
    /// placed bid's frozen funds become the blocking and any excess (bid price
    /// above ask price) returns to the consumer; for a signed bid exactly the
    /// blocking is pulled from the consumer (approve the Market first).
    function openDeal(OrderRef calldata ask, OrderRef calldata bid) external returns (uint256 dealId) {
        dealId = ++dealCount;
        _take(ask, dealId);
        _take(bid, dealId);
        Order calldata a = ask.order;
        Order calldata b = bid.order;
        if (a.orderType != ASK) revert WrongOrderType(ask.id);
        if (b.orderType != BID) revert WrongOrderType(bid.id);
        _checkResources(a, b);
        address master = _checkParties(a, b.author, b.identityLevel, b.blacklist, b.counterparty);

        uint256 blocked = frozenSum(a.price, b.duration);
        _createDeal(dealId, a.author, b.author, master, a.price, b.duration, blocked, ask.id, bid.id);
        if (bid.id != 0) {
            uint256 excess = frozenSum(b.price, b.duration) - blocked;
            if (excess != 0) _send(b.author, excess);
        } else if (blocked != 0) {
            _pull(b.author, address(this), blocked);
        }
    }

    /// @notice Buys an ask (placed or signed) at once: places the caller's bid
    /// (the ask's price, benchmarks, netflags and tag, counterparty = the
    /// ask's author, no identity requirement, no extra blacklist) and opens
    /// the deal, in one call.
    function quickBuy(OrderRef calldata ask, uint64 duration) external returns (uint256 dealId) {
        dealId = ++dealCount;
        _take(ask, dealId);
        Order calldata a = ask.order;
        if (a.orderType != ASK) revert WrongOrderType(ask.id);
        // The implicit bid must be a valid bid.
        if (a.price == 0) revert ZeroPrice();
        if (!_durationsAgree(a.duration, duration)) revert DurationMismatch();
        address master = _checkParties(a, msg.sender, 0, address(0), a.author);

        uint256 bidId = ++orderCount;
        emit OrderPlaced(
            bidId,
            BID,
            msg.sender,
            Order(BID, msg.sender, a.author, duration, a.price, a.netflags, 0, address(0), a.tag, a.benchmarks)
        );
        uint256 blocked = frozenSum(a.price, duration);
        _createDeal(dealId, a.author, msg.sender, master, a.price, duration, blocked, ask.id, bidId);
        _pull(msg.sender, address(this), blocked);
    }

    /// @notice Pays the master for the time since the last bill and tops the
    /// blocking up; closes the deal if the consumer cannot pay. Deal parties only
    /// (a stranger could otherwise force a close while an allowance is being
    /// renewed). `state` is the deal's current state (DealStateMismatch otherwise).
    function bill(uint256 dealId, DealState calldata state) external {
        DealState memory d = _deal(dealId, state);
        _requireParty(d);
        (Flows memory f, bool closed) = _settle(dealId, d, false);
        if (!closed) dealHashes[dealId] = _hash(d);
        _pay(f, d.consumer, d.master);
    }

    /// @notice Closes a deal: bills it to now (a forward deal: to its end) and
    /// returns what stays blocked to the consumer. A spot deal may be closed by
    /// either side at any time; a forward deal only from its end on, unless
    /// the consumer closes it early and blacklists the supplier's master.
    function closeDeal(uint256 dealId, DealState calldata state, bool blacklistSupplier) external {
        DealState memory d = _deal(dealId, state);
        bool byConsumer = _requireParty(d);
        if (blacklistSupplier && !byConsumer) revert OnlyConsumerBlacklists();
        uint256 duration = d.duration;
        if (duration != 0) {
            uint256 end = uint256(d.startTime) + duration;
            if (block.timestamp < end && !blacklistSupplier) revert DealNotEnded(end);
        }

        (Flows memory f, bool closedInsolvent) = _settle(dealId, d, true);
        if (!closedInsolvent) {
            delete dealHashes[dealId];
            emit DealClosed(dealId, msg.sender, d.lastBillTime, f.marketToConsumer, blacklistSupplier);
        }
        // Blacklist is our own contract (no callbacks); it is written before
        // the token moves all the same.
        if (blacklistSupplier) blacklist.addFor(d.consumer, d.master);
        _pay(f, d.consumer, d.master);
    }

    /// @notice What a deal in `state` holds blocked (price x its next period)
    /// and its scheduled end (start + duration; 0 for spot). Pure: give it the
    /// state rebuilt from the deal's events. A closed deal holds nothing and
    /// ended at DealClosed.endTime.
    function dealInfo(DealState calldata state) external pure returns (uint256 blocked, uint256 endTime) {
        DealState memory d = state;
        blocked = _blocked(d);
        if (d.duration != 0) endTime = uint256(d.startTime) + d.duration;
    }

    /// @notice The word stored for a deal in `state` (compare with dealHashes).
    function dealHash(DealState calldata state) external pure returns (bytes32) {
        return _hash(state);
    }

    // ------------------------------------------------------ change requests

    /// @notice Proposes a new price (and, for a forward deal, a new duration).
    /// A change that only favours the other side (the supplier lowers the
    /// price, the consumer raises it, duration unchanged) applies at once;
    /// anything else waits for the other side's approval.
    function createChangeRequest(uint256 dealId, DealState calldata state, uint256 newPrice, uint64 newDuration)
        external
        returns (uint256 requestId)
    {
        DealState memory d = _deal(dealId, state);
        bool byConsumer = _requireParty(d);
        if (newPrice > type(uint96).max) revert PriceTooHigh(newPrice);
        _checkNewDuration(d, newDuration);

        requestId = ++changeRequestCount;
        emit ChangeRequestCreated(requestId, dealId, msg.sender, newPrice, newDuration);
        bool favoursOther = newDuration == d.duration && (byConsumer ? newPrice >= d.price : newPrice <= d.price);
        changeRequests[requestId] = ChangeRequest(
            uint64(dealId),
            uint96(newPrice),
            uint40(newDuration),
            byConsumer,
            favoursOther ? ChangeStatus.Approved : ChangeStatus.Pending
        );
        if (favoursOther) {
            emit ChangeRequestApproved(requestId, msg.sender);
            _applyChange(dealId, d, newPrice, newDuration);
        }
    }

    /// @notice The other side of the deal accepts a pending change; `state`
    /// is the deal's current state.
    function approveChangeRequest(uint256 requestId, DealState calldata state) external {
        ChangeRequest storage cr = changeRequests[requestId];
        if (cr.status != ChangeStatus.Pending) revert ChangeRequestNotPending(requestId);
        uint256 dealId = cr.dealId;
        DealState memory d = _deal(dealId, state);
        bool byConsumer = _requireParty(d);
        if (byConsumer == cr.byConsumer) revert NotRequestCounterparty(msg.sender);
        // Time has passed since the request: a forward deal must not end in the past.
        _checkNewDuration(d, cr.duration);
        cr.status = ChangeStatus.Approved;
        emit ChangeRequestApproved(requestId, msg.sender);
        _applyChange(dealId, d, cr.price, cr.duration);
    }

    /// @notice Withdraws (requester's side) or rejects (other side) a pending
    /// change of an active deal; `state` is the deal's current state.
    function cancelChangeRequest(uint256 requestId, DealState calldata state) external {
        ChangeRequest storage cr = changeRequests[requestId];
        if (cr.status != ChangeStatus.Pending) revert ChangeRequestNotPending(requestId);
        _requireParty(_deal(cr.dealId, state));
        cr.status = ChangeStatus.Cancelled;
        emit ChangeRequestCancelled(requestId, msg.sender);
    }

    // -------------------------------------------------------------- workers

    /// @notice A worker asks `master` to take it; payouts of its deals then go to the master.
    function registerWorker(address master) external {
        if (master == address(0)) revert ZeroAddress();
        if (master == msg.sender) revert SelfMaster();
        address current = masters[msg.sender];
        if (current != address(0)) revert AlreadyHasMaster(msg.sender, current);
        pendingMaster[msg.sender] = master;
        emit WorkerAnnounced(msg.sender, master);
    }

    /// @notice The master accepts a worker that asked for it.
    function confirmWorker(address worker) external {
        if (pendingMaster[worker] != msg.sender) revert NoPendingWorker(worker);
        delete pendingMaster[worker];
        masters[worker] = msg.sender;
        emit WorkerConfirmed(worker, msg.sender);
    }

    /// @notice Either the worker or its master ends the relation. Open deals
    /// keep paying the master recorded at their opening.
    function removeWorker(address worker, address master) external {
        if (msg.sender != worker && msg.sender != master) revert NotWorkerOrMaster(msg.sender);
        if (master == address(0) || masters[worker] != master) revert NotWorkerOf(worker, master);
        delete masters[worker];
        emit WorkerRemoved(worker, master);
    }

    /// @notice The payout address of `worker`: its confirmed master, or itself.
    function masterOf(address worker) public view returns (address) {
        address m = masters[worker];
        return m == address(0) ? worker : m;
    }

    // ------------------------------------------------------------ internals

    function _validate(Order calldata o) private pure {
        if (o.orderType != BID && o.orderType != ASK) revert InvalidOrderType(o.orderType);
        if (o.benchmarks.length != BENCHMARK_COUNT) revert InvalidBenchmarksLength(o.benchmarks.length);
        if (o.netflags & ~NETFLAGS_MASK != 0) revert InvalidNetflags(o.netflags);
        if (o.identityLevel > MAX_IDENTITY_LEVEL) revert InvalidIdentityLevel(o.identityLevel);
        if (o.price > type(uint96).max) revert PriceTooHigh(o.price);
        if (o.duration > type(uint40).max) revert DurationTooLong(o.duration);
        if (o.orderType == BID && o.price == 0) revert ZeroPrice();
    }

    function _requireActiveOrder(uint256 orderId, Order calldata o) private view {
        bytes32 stored = orderHashes[orderId];
        if (stored == bytes32(0) || stored != keccak256(abi.encode(o))) revert UnknownOrder(orderId);
    }

    /// Checks one side of a deal and consumes it: a placed order's hash is
    /// deleted, a signed order's nonce is spent (SignedOrderUsed).
    function _take(OrderRef calldata ref, uint256 dealId) private {
        Order calldata o = ref.order;
        uint256 id = ref.id;
        if (id != 0) {
            _requireActiveOrder(id, o);
            delete orderHashes[id];
            return;
        }
        // A signed order was never validated at placement: same rules here.
        _validate(o);
        uint64 expiry = ref.expiry;
        if (block.timestamp > expiry) revert OrderExpired(expiry);
        uint256 nonce = ref.nonce;
        bytes32 digest = signedOrderDigest(o, expiry, nonce);
        address signer = _recover(digest, ref.signature);
        address author = o.author;
        if (signer != author) revert SignerNotAuthor(signer, author);
        uint256 bit = 1 << (nonce & 255);
        uint256 bits = nonceBitmap[author][nonce >> 8];
        if (bits & bit != 0) revert NonceUsed(author, nonce);
        nonceBitmap[author][nonce >> 8] = bits | bit;
        emit SignedOrderUsed(digest, author, nonce, dealId);
    }

    /// 65-byte r, s, v; low s, v 27/28 (Signatures.recover).
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address signer) {
        if (sig.length != 65) revert InvalidSignature();
        signer = Signatures.recover(digest, uint8(sig[64]), bytes32(sig[0:32]), bytes32(sig[32:64]));
        if (signer == address(0)) revert InvalidSignature();
    }

    /// EIP-712 hashStruct(Order).
    function _orderHash(Order calldata o) private pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ORDER_TYPEHASH,
                o.orderType,
                o.author,
                o.counterparty,
                o.duration,
                o.price,
                o.netflags,
                o.identityLevel,
                o.blacklist,
                o.tag,
                keccak256(abi.encodePacked(o.benchmarks))
            )
        );
    }

    function _domainSeparator() private view returns (bytes32) {
        return
            keccak256(
                abi.encode(DOMAIN_TYPEHASH, keccak256("SONM Market"), keccak256("1"), block.chainid, address(this))
            );
    }

    /// Benchmarks, netflags, price and duration: the clauses that need only the orders.
    function _checkResources(Order calldata ask, Order calldata bid) private pure {
        // Both lengths were validated (at placement or when signed orders are taken).
        for (uint256 i; i < BENCHMARK_COUNT; ++i) {
            if (ask.benchmarks[i] < bid.benchmarks[i]) revert BenchmarkNotMet(i);
        }
        if (bid.netflags & ~ask.netflags != 0) revert NetflagsNotCovered();
        if (ask.price > bid.price) revert PriceNotMatched();
        if (!_durationsAgree(ask.duration, bid.duration)) revert DurationMismatch();
    }

    function _durationsAgree(uint64 askDuration, uint64 bidDuration) private pure returns (bool) {
        return bidDuration == 0 ? askDuration == 0 : askDuration >= bidDuration;
    }

    /// Counterparty, identity and blacklist clauses; returns the supplier's master.
    function _checkParties(
        Order calldata ask,
        address consumer,
        uint8 bidLevel,
        address bidBlacklist,
        address bidCounterparty
    ) private view returns (address master) {
        master = masterOf(ask.author);
        if (ask.counterparty != address(0) && ask.counterparty != consumer) revert AskCounterpartyMismatch();
        if (bidCounterparty != address(0) && bidCounterparty != master && bidCounterparty != ask.author) {
            revert BidCounterpartyMismatch();
        }
        // Every level is >= ANONYMOUS: the registry is asked only when one
        // side requires more (most orders do not; saves an external call).
        if (ask.identityLevel != 0 || bidLevel != 0) {
            (uint8 consumerLevel, uint8 supplierLevel) = profiles.levelsOf(consumer, ask.author);
            if (consumerLevel < ask.identityLevel) revert ConsumerLevelTooLow();
            if (supplierLevel < bidLevel) revert SupplierLevelTooLow();
        }
        if (blacklist.listedByEither(consumer, bidBlacklist, master)) revert SupplierBlacklisted();
        if (blacklist.listedByEither(ask.author, ask.blacklist, consumer)) revert ConsumerBlacklisted();
    }

    function _createDeal(
        uint256 dealId,
        address supplier,
        address consumer,
        address master,
        uint256 price,
        uint64 duration,
        uint256 blocked,
        uint256 askId,
        uint256 bidId
    ) private {
        uint64 now_ = uint64(block.timestamp);
        // price < 2^96 and duration < 2^40 were validated.
        dealHashes[dealId] = _hash(DealState(supplier, consumer, master, price, now_, duration, now_));
        emit DealOpened(dealId, supplier, consumer, master, askId, bidId, price, duration, now_, blocked);
    }

    function _hash(DealState memory d) private pure returns (bytes32) {
        return keccak256(abi.encode(d));
    }

    /// The active deal `dealId`, given its claimed current state.
    function _deal(uint256 dealId, DealState calldata state) private view returns (DealState memory d) {
        bytes32 stored = dealHashes[dealId];
        if (stored == bytes32(0)) revert DealNotActive(dealId);
        d = state;
        if (_hash(d) != stored) revert DealStateMismatch(dealId);
    }

    /// Bills the deal up to now (a forward deal: at most to its end) and
    /// computes the token flows, without moving tokens. Updates d.lastBillTime;
    /// the caller stores the new state (or deletes it when closing), except
    /// when the consumer cannot pay: then the deal is closed (deleted) here.
    ///
    /// owed = elapsed x price goes to the master. Afterwards the blocking must
    /// cover the next period (target), or be 0 when closing. The blocking held
    /// now is price x the period that started at lastBillTime, and periods
    /// only shrink as time passes, so blocked - owed <= target: the consumer
    /// owes shortfall = owed + target - blocked, and shortfall <= owed. When
    /// closing, shortfall is what the blocking does not cover (usually 0) and
    /// what is left of the blocking is refunded.
    ///
    /// Paying the master straight from the consumer for the shortfall gives
    /// the same balances as "pay from the blocking, then top it up", with one
    /// transfer instead of two: the steady state of a spot deal. If the
    /// consumer cannot supply the shortfall, the master gets what the
    /// blocking covers, the rest goes back to the consumer, the deal closes.
    function _settle(uint256 dealId, DealState memory d, bool closing) private returns (Flows memory f, bool closed) {
        uint256 blocked = _blocked(d);
        uint256 price = d.price;
        uint256 duration = d.duration;
        uint256 until = block.timestamp;
        uint256 target;
        if (duration == 0) {
            target = price * SPOT_PERIOD;
        } else {
            uint256 end = uint256(d.startTime) + duration;
            if (until > end) until = end;
            uint256 left = end - until;
            target = price * (left < FORWARD_PERIOD_CAP ? left : FORWARD_PERIOD_CAP);
        }
        if (closing) target = 0;
        uint256 last = d.lastBillTime;
        uint256 owed = until > last ? (until - last) * price : 0;
        uint256 shortfall = owed + target > blocked ? owed + target - blocked : 0;

        d.lastBillTime = uint64(until);
        if (shortfall != 0 && !_canPull(d.consumer, shortfall)) {
            uint256 paid = owed < blocked ? owed : blocked;
            f.marketToMaster = paid;
            f.marketToConsumer = blocked - paid;
            delete dealHashes[dealId];
            emit DealBilled(dealId, paid, 0, uint64(until));
            emit DealClosed(dealId, address(0), uint64(until), blocked - paid, false);
            return (f, true);
        }
        f.consumerToMaster = shortfall;
        f.marketToMaster = owed - shortfall;
        uint256 left_ = blocked + shortfall - owed; // == target, or the leftover when closing
        if (closing) f.marketToConsumer = left_;
        emit DealBilled(dealId, owed, closing ? 0 : left_, uint64(until));
    }

    /// The blocking an active deal holds: price x the period after its last bill.
    function _blocked(DealState memory d) private pure returns (uint256) {
        uint256 duration = d.duration;
        if (duration == 0) return d.price * SPOT_PERIOD;
        uint256 left = uint256(d.startTime) + duration - d.lastBillTime;
        return d.price * (left < FORWARD_PERIOD_CAP ? left : FORWARD_PERIOD_CAP);
    }

    function _applyChange(uint256 dealId, DealState memory d, uint256 newPrice, uint64 newDuration) private {
        // Bill at the old terms first: a change only applies from now on.
        (Flows memory f, bool closed) = _settle(dealId, d, false);
        if (!closed) {
            uint256 before = _blocked(d);
            d.price = newPrice;
            d.duration = newDuration;
            uint256 after_ = _blocked(d);
            dealHashes[dealId] = _hash(d);
            emit DealChanged(dealId, newPrice, newDuration);
            // The blocking follows the new terms at once. A larger blocking is
            // the consumer's to fund: it asked for or approved the change, and
            // the change fails if it cannot.
            if (after_ > before) f.consumerToMarket = after_ - before;
            else f.marketToConsumer = before - after_;
        }
        _pay(f, d.consumer, d.master);
    }

    function _checkNewDuration(DealState memory d, uint64 newDuration) private view {
        if (d.duration == 0) {
            // A spot deal stays spot: there is no agreed end to move.
            if (newDuration != 0) revert InvalidDuration(newDuration);
        } else if (
            newDuration == 0 || newDuration > type(uint40).max || uint256(d.startTime) + newDuration < block.timestamp
        ) {
            revert InvalidDuration(newDuration);
        }
    }

    /// Returns true for the consumer, false for the supplier side (the supplier
    /// or the master recorded in the deal); reverts for anyone else.
    function _requireParty(DealState memory d) private view returns (bool byConsumer) {
        if (msg.sender == d.consumer) return true;
        if (msg.sender == d.supplier || msg.sender == d.master) return false;
        revert NotDealParty(msg.sender);
    }

    function _period(uint64 duration) private pure returns (uint256) {
        if (duration == 0) return SPOT_PERIOD;
        return duration < FORWARD_PERIOD_CAP ? duration : FORWARD_PERIOD_CAP;
    }

    function _canPull(address from, uint256 amount) private view returns (bool) {
        return token.balanceOf(from) >= amount && token.allowance(from, address(this)) >= amount;
    }

    function _pay(Flows memory f, address consumer, address master) private {
        if (f.consumerToMaster != 0) _pull(consumer, master, f.consumerToMaster);
        if (f.consumerToMarket != 0) _pull(consumer, address(this), f.consumerToMarket);
        if (f.marketToMaster != 0) _send(master, f.marketToMaster);
        if (f.marketToConsumer != 0) _send(consumer, f.marketToConsumer);
    }

    function _pull(address from, address to, uint256 amount) private {
        if (!token.transferFrom(from, to, amount)) revert TransferFailed();
    }

    function _send(address to, uint256 amount) private {
        if (!token.transfer(to, amount)) revert TransferFailed();
    }
}
