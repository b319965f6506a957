// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test, Vm} from "./utils/Test.sol";
import {SNM} from "../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {ProfileRegistry} from "../src/ProfileRegistry.sol";
import {Blacklist} from "../src/Blacklist.sol";
import {Gate} from "../src/Gate.sol";
import {IERC20} from "../src/IERC20.sol";
import {DealEvents} from "./utils/DealEvents.sol";

/// Drives the Market and a Gate through random sequences of real user
/// actions and keeps ghost books of what every deal took and paid. Orders are
/// placed on chain or signed off chain (EIP-712); deal states are rebuilt
/// from the Market's events only, as a client would.
contract Handler is Test {
    SNM public snm;
    Market public market;
    Gate public gate;

    uint256[3] internal supplierKeys = [uint256(0x5001), 0x5002, 0x5003];
    uint256[3] internal consumerKeys = [uint256(0xC001), 0xC002, 0xC003];
    address[3] public suppliers;
    address[3] public consumers;
    mapping(address => uint256) internal keyOf;
    uint256[3] internal keeperKeys = [uint256(0x4001), 0x4002, 0x4003];
    address internal constant SRC_GATE = address(0x5C2);

    // Orders still active, with their data (needed to cancel or match them).
    Market.Order[] internal asks;
    uint256[] internal askIds;
    Market.Order[] internal bids;
    uint256[] internal bidIds;
    uint256 public frozenInBids; // sum of frozenSum over active placed bids

    // Signed orders not yet used (a signed bid freezes nothing), the used
    // ones (for replays) and the cancelled ones.
    Market.OrderRef[] internal signedAsks;
    Market.OrderRef[] internal signedBids;
    Market.OrderRef[] internal spentOrders;
    mapping(address => uint256) internal nextNonce;
    bytes32[] public usedDigests;
    bytes32[] public cancelledDigests;
    mapping(bytes32 => uint256) public timesUsed; // successful opens per signed order
    uint256 public signedOpens; // coverage
    uint256 public replaysAccepted; // must stay 0

    // Deals and their ghost books.
    uint256[] public dealIds;
    mapping(uint256 => uint256) public consumerIn; // net tokens the consumer put into the deal
    mapping(uint256 => uint256) public paidOut; // tokens its master received

    uint256 public insolventCloses; // coverage: bills that closed a deal

    // Deal states rebuilt from events (DealOpened, DealBilled, DealChanged).
    mapping(uint256 => Market.DealState) internal states;

    // Gate ghost books.
    uint256 public locked;
    uint256 public gatePaid;
    uint256[] public paidNonces;
    address[] internal paidTo;
    uint256[] internal paidAmount;
    mapping(bytes32 => uint256) public timesPaid;
    uint256 public nextRemoteNonce = 1;

    constructor(SNM snm_, Market market_, Gate gate_) {
        snm = snm_;
        market = market_;
        gate = gate_;
        for (uint256 i; i < 3; ++i) {
            suppliers[i] = vm.addr(supplierKeys[i]);
            consumers[i] = vm.addr(consumerKeys[i]);
            keyOf[suppliers[i]] = supplierKeys[i];
            keyOf[consumers[i]] = consumerKeys[i];
        }
    }

    function stateOf(uint256 id) external view returns (Market.DealState memory) {
        return states[id];
    }

    function usedCount() external view returns (uint256) {
        return usedDigests.length;
    }

    function cancelledCount() external view returns (uint256) {
        return cancelledDigests.length;
    }

    function actors() external view returns (address[] memory a) {
        a = new address[](6);
        for (uint256 i; i < 3; ++i) {
            a[i] = suppliers[i];
            a[3 + i] = consumers[i];
        }
    }

    function dealCount() external view returns (uint256) {
        return dealIds.length;
    }

    function benches(uint64 v) internal pure returns (uint64[] memory b) {
        b = new uint64[](13);
        for (uint256 i; i < 13; ++i) {
            b[i] = v;
        }
    }

    function _duration(uint256 seed) internal pure returns (uint64) {
        uint256 k = seed % 4;
        if (k == 0) return 0;
        if (k == 1) return 30 minutes;
        if (k == 2) return 1 days;
        return 3 days;
    }

    // ------------------------------------------------------------ orders

    function _ask(uint256 who, uint256 price, uint256 dSeed, uint256 tag) internal view returns (Market.Order memory) {
        return Market.Order(
            2,
            suppliers[who % 3],
            address(0),
            _duration(dSeed),
            bound(price, 0, 1e12),
            7,
            0,
            address(0),
            bytes32(tag),
            benches(10)
        );
    }

    function _bid(uint256 who, uint256 price, uint256 dSeed, uint256 tag) internal view returns (Market.Order memory) {
        return Market.Order(
            1,
            consumers[who % 3],
            address(0),
            _duration(dSeed),
            bound(price, 1, 2e12),
            3,
            0,
            address(0),
            bytes32(tag),
            benches(5)
        );
    }

    function placeAsk(uint256 who, uint256 price, uint256 dSeed) external {
        Market.Order memory o = _ask(who, price, dSeed, asks.length);
        vm.prank(o.author);
        uint256 id = market.placeOrder(o);
        asks.push(o);
        askIds.push(id);
    }

    function placeBid(uint256 who, uint256 price, uint256 dSeed) external {
        Market.Order memory o = _bid(who, price, dSeed, bids.length);
        if (snm.balanceOf(o.author) < market.frozenSum(o.price, o.duration)) return;
        vm.prank(o.author);
        uint256 id = market.placeOrder(o);
        bids.push(o);
        bidIds.push(id);
        frozenInBids += market.frozenSum(o.price, o.duration);
    }

    /// An order signed off chain: no transaction, nothing frozen. Nonces run
    /// per author, now and then jumping to a fresh bitmap word; one in four
    /// expires within the hour.
    function signOrder(bool isAsk, uint256 who, uint256 price, uint256 dSeed) external {
        Market.Order memory o = isAsk ? _ask(who, price, dSeed, 1000) : _bid(who, price, dSeed, 1000);
        uint256 nonce = nextNonce[o.author];
        nextNonce[o.author] = nonce + (dSeed % 5 == 0 ? 256 : 1);
        uint64 expiry = uint64(block.timestamp + (price % 4 == 0 ? 1 hours : 30 days));
        bytes32 digest = market.signedOrderDigest(o, expiry, nonce);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keyOf[o.author], digest);
        Market.OrderRef memory ref = Market.OrderRef(0, o, expiry, nonce, abi.encodePacked(r, s, v));
        if (isAsk) signedAsks.push(ref);
        else signedBids.push(ref);
    }

    /// The author invalidates one of its unused signed orders.
    function cancelSigned(bool isAsk, uint256 seed) external {
        Market.OrderRef[] storage pool = isAsk ? signedAsks : signedBids;
        if (pool.length == 0) return;
        uint256 i = seed % pool.length;
        Market.OrderRef memory ref = pool[i];
        vm.prank(ref.order.author);
        market.cancelNonces(ref.nonce >> 8, 1 << (ref.nonce & 255));
        cancelledDigests.push(market.signedOrderDigest(ref.order, ref.expiry, ref.nonce));
        spentOrders.push(ref);
        pool[i] = pool[pool.length - 1];
        pool.pop();
    }

    function cancelBid(uint256 seed) external {
        if (bids.length == 0) return;
        uint256 i = seed % bids.length;
        vm.prank(bids[i].author);
        market.cancelOrder(bidIds[i], bids[i]);
        frozenInBids -= market.frozenSum(bids[i].price, bids[i].duration);
        _dropBid(i);
    }

    function cancelAsk(uint256 seed) external {
        if (asks.length == 0) return;
        uint256 i = seed % asks.length;
        vm.prank(asks[i].author);
        market.cancelOrder(askIds[i], asks[i]);
        _dropAsk(i);
    }

    // ------------------------------------------------------------- deals

    /// Opens a deal from a placed or signed ask and a placed or signed bid.
    function openDeal(uint256 aSeed, uint256 bSeed, uint256 mode) external {
        bool signedAsk = mode % 2 == 1;
        bool signedBid = (mode / 2) % 2 == 1;
        if ((signedAsk ? signedAsks.length : asks.length) == 0) return;
        if ((signedBid ? signedBids.length : bids.length) == 0) return;
        uint256 a = aSeed % (signedAsk ? signedAsks.length : asks.length);
        uint256 b = bSeed % (signedBid ? signedBids.length : bids.length);
        Market.OrderRef memory ask = signedAsk ? signedAsks[a] : Market.OrderRef(askIds[a], asks[a], 0, 0, "");
        Market.OrderRef memory bid = signedBid ? signedBids[b] : Market.OrderRef(bidIds[b], bids[b], 0, 0, "");
        address c = bid.order.author;
        uint256 before = snm.balanceOf(c);
        vm.recordLogs();
        try market.openDeal(ask, bid) returns (uint256 id) {
            _sync();
            if (signedBid) {
                consumerIn[id] = before - snm.balanceOf(c); // pulled at open
            } else {
                uint256 frozen = market.frozenSum(bid.order.price, bid.order.duration);
                frozenInBids -= frozen;
                // The bid's frozen funds, less the excess refunded at opening.
                consumerIn[id] = frozen - (snm.balanceOf(c) - before);
            }
            dealIds.push(id);
            if (signedAsk) _spend(signedAsks, a);
            else _dropAsk(a);
            if (signedBid) _spend(signedBids, b);
            else _dropBid(b);
            if (signedAsk || signedBid) signedOpens++;
        } catch {
            // Not a match (price, duration), an expired signed order, a
            // consumer without funds: fine, orders stay.
        }
    }

    /// Signs a matching ask and bid on the spot and opens the deal at once
    /// (so that signed deals are common in every run).
    function openSignedPair(uint256 who, uint256 whoC, uint256 price, uint256 dSeed) external {
        Market.Order memory a = _ask(who, price, dSeed, 2000);
        Market.Order memory b = _bid(whoC, price, dSeed, 2000);
        b.price = a.price == 0 ? 1 : a.price;
        Market.OrderRef memory ask = _signed(a);
        Market.OrderRef memory bid = _signed(b);
        address c = b.author;
        uint256 before = snm.balanceOf(c);
        vm.recordLogs();
        try market.openDeal(ask, bid) returns (uint256 id) {
            _sync();
            consumerIn[id] = before - snm.balanceOf(c);
            dealIds.push(id);
            spentOrders.push(ask);
            spentOrders.push(bid);
            signedOpens++;
        } catch {
            // a blacklist, a consumer without funds or allowance
        }
    }

    function _signed(Market.Order memory o) internal returns (Market.OrderRef memory) {
        uint256 nonce = nextNonce[o.author]++;
        uint64 expiry = uint64(block.timestamp + 1 hours);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keyOf[o.author], market.signedOrderDigest(o, expiry, nonce));
        return Market.OrderRef(0, o, expiry, nonce, abi.encodePacked(r, s, v));
    }

    /// Tries to use a signed order again (used or cancelled), against a
    /// fresh counterpart: must never open a deal.
    function replaySigned(uint256 seed, uint256 who) external {
        if (spentOrders.length == 0) return;
        Market.OrderRef memory old = spentOrders[seed % spentOrders.length];
        Market.Order memory o =
            old.order.orderType == 2 ? _bid(who, 2e12, old.order.duration == 0 ? 0 : 1, 7) : _ask(who, 0, 0, 7);
        Market.OrderRef memory fresh = Market.OrderRef(0, o, uint64(block.timestamp + 1 hours), 0, "");
        fresh.nonce = nextNonce[o.author]++;
        fresh.order.duration = old.order.duration;
        bytes32 digest = market.signedOrderDigest(fresh.order, fresh.expiry, fresh.nonce);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keyOf[o.author], digest);
        fresh.signature = abi.encodePacked(r, s, v);
        (Market.OrderRef memory ask, Market.OrderRef memory bid) =
            old.order.orderType == 2 ? (old, fresh) : (fresh, old);
        vm.recordLogs();
        try market.openDeal(ask, bid) {
            replaysAccepted++;
        } catch {}
    }

    function quickBuy(uint256 aSeed, uint256 who, uint256 dSeed, bool signedAsk) external {
        if ((signedAsk ? signedAsks.length : asks.length) == 0) return;
        uint256 a = aSeed % (signedAsk ? signedAsks.length : asks.length);
        Market.OrderRef memory ask = signedAsk ? signedAsks[a] : Market.OrderRef(askIds[a], asks[a], 0, 0, "");
        address c = consumers[who % 3];
        uint64 duration = ask.order.duration == 0 ? 0 : uint64(bound(dSeed, 1, ask.order.duration));
        uint256 before = snm.balanceOf(c);
        vm.prank(c);
        vm.recordLogs();
        try market.quickBuy(ask, duration) returns (uint256 id) {
            _sync();
            consumerIn[id] = before - snm.balanceOf(c);
            dealIds.push(id);
            if (signedAsk) _spend(signedAsks, a);
            else _dropAsk(a);
        } catch {}
    }

    function bill(uint256 seed, bool bySupplier) external {
        (uint256 id, Market.DealState memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        _tracked(id, d, bySupplier ? d.supplier : d.consumer, abi.encodeCall(Market.bill, (id, d)));
        if (market.dealHashes(id) == bytes32(0)) insolventCloses++;
    }

    function close(uint256 seed, uint256 mode) external {
        (uint256 id, Market.DealState memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        // Blacklisting is kept rare: with three suppliers, lists fill quickly
        // and would stop all later matches.
        bool blacklist_ = mode % 8 == 0;
        bool ended = d.duration == 0 || block.timestamp >= uint256(d.startTime) + d.duration;
        if (!ended && !blacklist_) return; // would revert DealNotEnded
        address by = blacklist_ ? d.consumer : d.supplier;
        _tracked(id, d, by, abi.encodeCall(Market.closeDeal, (id, d, blacklist_)));
    }

    /// Calls with a stale state (the deal's state from before its last
    /// bill) or a forged one: must always be refused.
    function staleCall(uint256 seed, uint256 kind) external {
        (uint256 id, Market.DealState memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        Market.DealState memory bad =
            Market.DealState(d.supplier, d.consumer, d.master, d.price, d.startTime, d.duration, d.lastBillTime);
        if (kind % 3 == 0) bad.lastBillTime = d.lastBillTime == d.startTime ? d.lastBillTime + 1 : d.startTime;
        else if (kind % 3 == 1) bad.price = d.price + 1;
        else bad.master = d.consumer;
        vm.prank(d.consumer);
        (bool success,) = address(market).call(abi.encodeCall(Market.closeDeal, (id, bad, true)));
        require(!success, "forged state accepted");
        vm.prank(d.supplier);
        (success,) = address(market).call(abi.encodeCall(Market.bill, (id, bad)));
        require(!success, "forged state accepted");
    }

    function changePrice(uint256 seed, uint256 price, bool byConsumer) external {
        (uint256 id, Market.DealState memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        price = bound(price, 0, 1e12);
        bytes memory call = abi.encodeCall(Market.createChangeRequest, (id, d, price, d.duration));
        if (!_tracked(id, d, byConsumer ? d.consumer : d.supplier, call)) return;
        uint256 rid = market.changeRequestCount();
        (,,,, Market.ChangeStatus st) = market.changeRequests(rid);
        if (st == Market.ChangeStatus.Pending) {
            if (market.dealHashes(id) == bytes32(0)) return;
            Market.DealState memory d2 = states[id];
            _tracked(
                id, d2, byConsumer ? d.supplier : d.consumer, abi.encodeCall(Market.approveChangeRequest, (rid, d2))
            );
        }
    }

    /// A consumer withdrawing its allowance makes its deals insolvent.
    function toggleAllowance(uint256 who, bool on) external {
        vm.prank(consumers[who % 3]);
        snm.approve(address(market), on ? type(uint256).max : 0);
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
    }

    // -------------------------------------------------------------- gate

    function gateLock(uint256 who, uint256 amount) external {
        address c = consumers[who % 3];
        amount = bound(amount, 1, 1000 ether);
        if (snm.balanceOf(c) < amount) return;
        vm.startPrank(c);
        snm.approve(address(gate), amount);
        gate.lock(c, amount, 444);
        vm.stopPrank();
        locked += amount;
    }

    function gatePay(uint256 who, uint256 amount) external {
        amount = bound(amount, 1, 500 ether);
        if (snm.balanceOf(address(gate)) < amount) return;
        uint256 nonce = nextRemoteNonce++;
        address to = consumers[who % 3];
        try gate.pay(1, SRC_GATE, nonce, to, amount, _sign(nonce, to, amount)) {
            gatePaid += amount;
            timesPaid[gate.transferId(1, SRC_GATE, nonce)]++;
            paidNonces.push(nonce);
            paidTo.push(to);
            paidAmount.push(amount);
        } catch {
            // keeper daily limits reached: a later day pays it.
        }
    }

    /// Replays a transfer that was already paid: either the very same
    /// signed message, or fresh valid signatures for other terms under the
    /// same (source chain, source gate, nonce).
    function gateReplay(uint256 seed, bool sameTerms) external {
        if (paidNonces.length == 0) return;
        uint256 k = seed % paidNonces.length;
        uint256 nonce = paidNonces[k];
        address to = sameTerms ? paidTo[k] : consumers[seed % 3];
        uint256 amount = sameTerms ? paidAmount[k] : 1 ether;
        try gate.pay(1, SRC_GATE, nonce, to, amount, _sign(nonce, to, amount)) {
            timesPaid[gate.transferId(1, SRC_GATE, nonce)]++;
            gatePaid += amount;
        } catch {}
    }

    function _sign(uint256 nonce, address to, uint256 amount) internal view returns (Gate.Signature[] memory sigs) {
        bytes32 digest = gate.transferDigest(1, SRC_GATE, nonce, to, amount);
        address[3] memory who;
        sigs = new Gate.Signature[](3);
        for (uint256 i; i < 3; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(keeperKeys[i], digest);
            sigs[i] = Gate.Signature(v, r, s);
            who[i] = vm.addr(keeperKeys[i]);
        }
        for (uint256 i = 1; i < 3; ++i) {
            for (uint256 j = i; j > 0 && who[j - 1] > who[j]; --j) {
                (who[j - 1], who[j]) = (who[j], who[j - 1]);
                (sigs[j - 1], sigs[j]) = (sigs[j], sigs[j - 1]);
            }
        }
    }

    // ---------------------------------------------------------- internals

    /// Calls the Market as `by` on deal `id` and books the consumer's and
    /// master's balance changes against that deal; rebuilds the deal's state
    /// from the call's events.
    function _tracked(uint256 id, Market.DealState memory d, address by, bytes memory call) internal returns (bool) {
        uint256 cBefore = snm.balanceOf(d.consumer);
        uint256 mBefore = snm.balanceOf(d.master);
        vm.recordLogs();
        vm.prank(by);
        (bool ok,) = address(market).call(call);
        if (!ok) return false; // e.g. a change the consumer cannot fund
        _sync();
        uint256 cAfter = snm.balanceOf(d.consumer);
        consumerIn[id] = consumerIn[id] + cBefore - cAfter; // reverts if more came back than went in
        paidOut[id] += snm.balanceOf(d.master) - mBefore;
        return true;
    }

    /// Applies the deal events of the last successful call.
    function _sync() internal {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            if (l.emitter != address(market)) continue;
            if (DealEvents.applyLog(states, l)) continue;
            if (l.topics[0] == Market.SignedOrderUsed.selector) {
                timesUsed[l.topics[1]]++;
                usedDigests.push(l.topics[1]);
            }
        }
    }

    function _spend(Market.OrderRef[] storage pool, uint256 i) internal {
        spentOrders.push(pool[i]);
        pool[i] = pool[pool.length - 1];
        pool.pop();
    }

    function _activeDeal(uint256 seed) internal view returns (uint256 id, Market.DealState memory d, bool ok) {
        if (dealIds.length == 0) return (0, d, false);
        id = dealIds[seed % dealIds.length];
        d = states[id];
        ok = market.dealHashes(id) != bytes32(0);
    }

    function _dropAsk(uint256 i) internal {
        asks[i] = asks[asks.length - 1];
        askIds[i] = askIds[askIds.length - 1];
        asks.pop();
        askIds.pop();
    }

    function _dropBid(uint256 i) internal {
        bids[i] = bids[bids.length - 1];
        bidIds[i] = bidIds[bidIds.length - 1];
        bids.pop();
        bidIds.pop();
    }
}

contract InvariantsTest is Test {
    SNM internal snm;
    Market internal market;
    Gate internal gate;
    Handler internal handler;
    uint256 internal constant SUPPLY = 444_000_000 ether;
    uint256 internal constant RESERVE = 50_000 ether;

    function setUp() public {
        vm.warp(1_800_000_000);
        snm = new SNM(address(this), SUPPLY);
        ProfileRegistry profiles = new ProfileRegistry(address(this));
        Blacklist blacklist = new Blacklist(address(this));
        market = new Market(IERC20(address(snm)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        blacklist.setMarket(address(market));
        gate = new Gate(IERC20(address(snm)), address(this), 2);
        handler = new Handler(snm, market, gate);
        uint256[3] memory keys = [uint256(0x4001), 0x4002, 0x4003];
        for (uint256 i; i < 3; ++i) {
            gate.setKeeper(vm.addr(keys[i]), 3000 ether);
        }
        snm.transfer(address(gate), RESERVE);

        address[] memory a = handler.actors();
        for (uint256 i; i < a.length; ++i) {
            snm.transfer(a[i], 10_000 ether);
            vm.prank(a[i]);
            snm.approve(address(market), type(uint256).max);
        }
    }

    /// Only the handler is fuzzed; it acts as the users.
    function targetContracts() public view returns (address[] memory t) {
        t = new address[](1);
        t[0] = address(handler);
    }

    /// Every token is somewhere known: nothing is minted, burnt or lost
    /// across the Market and the Gate.
    function invariant_supplyConserved() public view {
        address[] memory a = handler.actors();
        uint256 sum = snm.balanceOf(address(this)) + snm.balanceOf(address(market)) + snm.balanceOf(address(gate))
            + snm.balanceOf(address(handler));
        for (uint256 i; i < a.length; ++i) {
            sum += snm.balanceOf(a[i]);
        }
        assertEq(sum, snm.totalSupply(), "sum of balances");
        assertEq(snm.totalSupply(), SUPPLY, "fixed supply");
    }

    /// The Market holds exactly the active bids' frozen funds plus the active
    /// deals' blocking; the Gate holds its reserve plus locks minus payments.
    function invariant_custodyMatchesBooks() public view {
        uint256 blocked;
        uint256 n = handler.dealCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.dealIds(i);
            if (market.dealHashes(id) == bytes32(0)) continue;
            (uint256 b,) = market.dealInfo(handler.stateOf(id));
            blocked += b;
        }
        assertEq(snm.balanceOf(address(market)), handler.frozenInBids() + blocked, "market custody");
        assertEq(snm.balanceOf(address(gate)), RESERVE + handler.locked() - handler.gatePaid(), "gate custody");
    }

    /// A deal never pays out more than its consumer put in; an active deal
    /// holds the difference as its blocking, a closed one holds nothing.
    function invariant_payoutWithinWhatTheConsumerBlocked() public view {
        uint256 n = handler.dealCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.dealIds(i);
            uint256 paid = handler.paidOut(id);
            uint256 put = handler.consumerIn(id);
            assertLe(paid, put, "payout <= consumer's funds");
            if (market.dealHashes(id) != bytes32(0)) {
                (uint256 b,) = market.dealInfo(handler.stateOf(id));
                assertEq(put - paid, b, "active: the rest is blocked");
            } else {
                assertEq(put, paid, "closed: all paid or refunded");
            }
        }
    }

    /// Every active deal's state, rebuilt from events alone, is the stored one.
    function invariant_dealStatesRebuiltFromEvents() public view {
        uint256 n = handler.dealCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.dealIds(i);
            bytes32 stored = market.dealHashes(id);
            if (stored != bytes32(0)) assertEq(market.dealHash(handler.stateOf(id)), stored, "rebuilt state");
        }
        assertEq(n, market.dealCount(), "every deal seen");
    }

    /// A signed order opens at most one deal; a cancelled one never does.
    function invariant_signedOrderUsedOnce() public view {
        uint256 n = handler.usedCount();
        for (uint256 i; i < n; ++i) {
            assertLe(handler.timesUsed(handler.usedDigests(i)), 1, "used once");
        }
        n = handler.cancelledCount();
        for (uint256 i; i < n; ++i) {
            assertEq(handler.timesUsed(handler.cancelledDigests(i)), 0, "cancelled: never used");
        }
        assertEq(handler.replaysAccepted(), 0, "no replay accepted");
    }

    /// No gate transfer is ever paid twice, replays included.
    function invariant_gateTransferPaidOnce() public view {
        uint256 last = handler.nextRemoteNonce();
        for (uint256 nonce = 1; nonce < last; ++nonce) {
            bytes32 id = gate.transferId(1, address(0x5C2), nonce);
            assertLe(handler.timesPaid(id), 1, "paid at most once");
        }
    }
}
