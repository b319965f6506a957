// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {SNM} from "../src/SNM.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {ProfileRegistry} from "../src/ProfileRegistry.sol";
import {Blacklist} from "../src/Blacklist.sol";
import {Gate} from "../src/Gate.sol";
import {IERC20} from "../src/IERC20.sol";

/// Drives the Market and a Gate through random sequences of real user
/// actions and keeps ghost books of what every deal took and paid.
contract Handler is Test {
    SNM public snm;
    Market public market;
    Gate public gate;

    address[3] public suppliers = [address(0x5001), address(0x5002), address(0x5003)];
    address[3] public consumers = [address(0xC001), address(0xC002), address(0xC003)];
    uint256[3] internal keeperKeys = [uint256(0x4001), 0x4002, 0x4003];
    address internal constant SRC_GATE = address(0x5C2);

    // Orders still active, with their data (needed to cancel or match them).
    Market.Order[] internal asks;
    uint256[] internal askIds;
    Market.Order[] internal bids;
    uint256[] internal bidIds;
    uint256 public frozenInBids; // sum of frozenSum over active bids

    // Deals and their ghost books.
    uint256[] public dealIds;
    mapping(uint256 => uint256) public consumerIn; // net tokens the consumer put into the deal
    mapping(uint256 => uint256) public paidOut; // tokens its master received

    uint256 public insolventCloses; // coverage: bills that closed a deal

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

    function placeAsk(uint256 who, uint256 price, uint256 dSeed) external {
        Market.Order memory o = Market.Order(
            2,
            suppliers[who % 3],
            address(0),
            _duration(dSeed),
            bound(price, 0, 1e12),
            7,
            0,
            address(0),
            bytes32(asks.length),
            benches(10)
        );
        vm.prank(o.author);
        uint256 id = market.placeOrder(o);
        asks.push(o);
        askIds.push(id);
    }

    function placeBid(uint256 who, uint256 price, uint256 dSeed) external {
        Market.Order memory o = Market.Order(
            1,
            consumers[who % 3],
            address(0),
            _duration(dSeed),
            bound(price, 1, 2e12),
            3,
            0,
            address(0),
            bytes32(bids.length),
            benches(5)
        );
        if (snm.balanceOf(o.author) < market.frozenSum(o.price, o.duration)) return;
        vm.prank(o.author);
        uint256 id = market.placeOrder(o);
        bids.push(o);
        bidIds.push(id);
        frozenInBids += market.frozenSum(o.price, o.duration);
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

    function openDeal(uint256 aSeed, uint256 bSeed) external {
        if (asks.length == 0 || bids.length == 0) return;
        uint256 a = aSeed % asks.length;
        uint256 b = bSeed % bids.length;
        Market.Order memory ask = asks[a];
        Market.Order memory bid = bids[b];
        uint256 before = snm.balanceOf(bid.author);
        try market.openDeal(askIds[a], ask, bidIds[b], bid) returns (uint256 id) {
            uint256 frozen = market.frozenSum(bid.price, bid.duration);
            frozenInBids -= frozen;
            // The bid's frozen funds, less the excess refunded at opening.
            consumerIn[id] = frozen - (snm.balanceOf(bid.author) - before);
            dealIds.push(id);
            _dropAsk(a);
            _dropBid(b);
        } catch {
            // Not a match (price or duration): fine, orders stay.
        }
    }

    function quickBuy(uint256 aSeed, uint256 who, uint256 dSeed) external {
        if (asks.length == 0) return;
        uint256 a = aSeed % asks.length;
        Market.Order memory ask = asks[a];
        address c = consumers[who % 3];
        uint64 duration = ask.duration == 0 ? 0 : uint64(bound(dSeed, 1, ask.duration));
        uint256 before = snm.balanceOf(c);
        vm.prank(c);
        try market.quickBuy(askIds[a], ask, duration) returns (uint256 id) {
            consumerIn[id] = before - snm.balanceOf(c);
            dealIds.push(id);
            _dropAsk(a);
        } catch {}
    }

    function bill(uint256 seed, bool bySupplier) external {
        (uint256 id, Market.Deal memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        _tracked(id, d, bySupplier ? d.supplier : d.consumer, abi.encodeCall(Market.bill, (id)));
        (Market.Deal memory after_,,) = market.getDeal(id);
        if (after_.status == Market.DealStatus.Closed) insolventCloses++;
    }

    function close(uint256 seed, uint256 mode) external {
        (uint256 id, Market.Deal memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        // Blacklisting is kept rare: with three suppliers, lists fill quickly
        // and would stop all later matches.
        bool blacklist_ = mode % 8 == 0;
        bool ended = d.duration == 0 || block.timestamp >= uint256(d.startTime) + d.duration;
        if (!ended && !blacklist_) return; // would revert DealNotEnded
        address by = blacklist_ ? d.consumer : d.supplier;
        _tracked(id, d, by, abi.encodeCall(Market.closeDeal, (id, blacklist_)));
    }

    function changePrice(uint256 seed, uint256 price, bool byConsumer) external {
        (uint256 id, Market.Deal memory d, bool ok) = _activeDeal(seed);
        if (!ok) return;
        price = bound(price, 0, 1e12);
        bytes memory call = abi.encodeCall(Market.createChangeRequest, (id, price, d.duration));
        _tracked(id, d, byConsumer ? d.consumer : d.supplier, call);
        uint256 rid = market.changeRequestCount();
        (,,,, Market.ChangeStatus st) = market.changeRequests(rid);
        if (st == Market.ChangeStatus.Pending) {
            (Market.Deal memory d2,,) = market.getDeal(id);
            if (d2.status != Market.DealStatus.Active) return;
            _tracked(id, d2, byConsumer ? d.supplier : d.consumer, abi.encodeCall(Market.approveChangeRequest, (rid)));
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
    /// master's balance changes against that deal.
    function _tracked(uint256 id, Market.Deal memory d, address by, bytes memory call) internal {
        uint256 cBefore = snm.balanceOf(d.consumer);
        uint256 mBefore = snm.balanceOf(d.master);
        vm.prank(by);
        (bool ok,) = address(market).call(call);
        if (!ok) return; // e.g. a change the consumer cannot fund
        uint256 cAfter = snm.balanceOf(d.consumer);
        consumerIn[id] = consumerIn[id] + cBefore - cAfter; // reverts if more came back than went in
        paidOut[id] += snm.balanceOf(d.master) - mBefore;
    }

    function _activeDeal(uint256 seed) internal view returns (uint256 id, Market.Deal memory d, bool ok) {
        if (dealIds.length == 0) return (0, d, false);
        id = dealIds[seed % dealIds.length];
        (d,,) = market.getDeal(id);
        ok = d.status == Market.DealStatus.Active;
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
            (, uint256 b,) = market.getDeal(handler.dealIds(i));
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
            (Market.Deal memory d, uint256 b,) = market.getDeal(id);
            if (d.status == Market.DealStatus.Active) assertEq(put - paid, b, "active: the rest is blocked");
            else assertEq(put, paid, "closed: all paid or refunded");
        }
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
