// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MarketBase} from "./utils/MarketBase.sol";
import {Market, IProfiles, IBlacklist} from "../src/Market.sol";
import {SNM} from "../src/SNM.sol";
import {IERC20} from "../src/IERC20.sol";

/// Signed (EIP-712) orders: opening deals from signed asks and bids, alone or
/// beside placed orders, the digest, nonces and every way a signed order is
/// refused.
contract MarketSignedTest is MarketBase {
    uint256 internal constant T0 = 1_800_000_000;
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 internal constant STRANGER_KEY = 0xBAD;

    function setUp() public override {
        super.setUp();
        vm.warp(T0);
    }

    function sigParts(bytes memory sig) internal pure returns (bytes32 r, bytes32 s, uint8 v) {
        assembly {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
    }

    /// Who the Market will take as the signer of `ref` (after any tampering).
    function recovered(Market.OrderRef memory ref) internal view returns (address) {
        (bytes32 r, bytes32 s, uint8 v) = sigParts(ref.signature);
        return ecrecover(market.signedOrderDigest(ref.order, ref.expiry, ref.nonce), v, r, s);
    }

    function expectRefused(Market.OrderRef memory ask, Market.OrderRef memory bid, bytes memory err) internal {
        vm.expectRevert(err);
        market.openDeal(ask, bid);
    }

    // ------------------------------------------------------------- digest

    /// The digest is EIP-712's, computed here independently from the spec.
    function test_digestIsEip712() public view {
        Market.Order memory o = bidOrder(PRICE, 2 hours);
        bytes32 orderType = keccak256(
            "Order(uint8 orderType,address author,address counterparty,uint64 duration,uint256 price,uint256 netflags,uint8 identityLevel,address blacklist,bytes32 tag,uint64[] benchmarks)"
        );
        bytes32 signedType = keccak256(
            "SignedOrder(Order order,uint64 expiry,uint256 nonce)Order(uint8 orderType,address author,address counterparty,uint64 duration,uint256 price,uint256 netflags,uint8 identityLevel,address blacklist,bytes32 tag,uint64[] benchmarks)"
        );
        assertEq(market.ORDER_TYPEHASH(), orderType, "order typehash");
        assertEq(market.SIGNED_ORDER_TYPEHASH(), signedType, "signed order typehash");
        bytes memory benchWords;
        for (uint256 i; i < 13; ++i) {
            benchWords = bytes.concat(benchWords, bytes32(uint256(o.benchmarks[i])));
        }
        bytes32 orderHash = keccak256(
            bytes.concat(
                abi.encode(orderType, uint256(o.orderType), o.author, o.counterparty, uint256(o.duration), o.price),
                abi.encode(o.netflags, uint256(o.identityLevel), o.blacklist, o.tag, keccak256(benchWords))
            )
        );
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("SONM Market"),
                keccak256("1"),
                block.chainid,
                address(market)
            )
        );
        assertEq(market.domainSeparator(), domain, "domain");
        bytes32 want = keccak256(
            abi.encodePacked("\x19\x01", domain, keccak256(abi.encode(signedType, orderHash, uint64(T0 + 5), 7)))
        );
        assertEq(market.signedOrderDigest(o, uint64(T0 + 5), 7), want, "digest");
    }

    // --------------------------------------------------------------- opening

    function test_bothSigned_opensAndSpendsNonces() public {
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 5);
        Market.OrderRef memory bid = signed(bidOrder(3 * PRICE, 0), 300);
        bytes32 askDigest = market.signedOrderDigest(ask.order, ask.expiry, 5);
        bytes32 bidDigest = market.signedOrderDigest(bid.order, bid.expiry, 300);
        vm.expectEmit(address(market));
        emit Market.SignedOrderUsed(askDigest, supplier, 5, 1);
        vm.expectEmit(address(market));
        emit Market.SignedOrderUsed(bidDigest, consumer, 300, 1);
        vm.expectEmit(address(market));
        emit Market.DealOpened(1, supplier, consumer, supplier, 0, 0, PRICE, 0, uint64(T0), PRICE * 3600);
        vm.prank(stranger); // anyone may open: both orders carry their authors' consent
        uint256 id = market.openDeal(ask, bid);
        assertEq(id, 1, "id");
        Market.DealState memory d = deal(id);
        assertEq(d.price, PRICE, "ask's price");
        assertEq(d.consumer, consumer, "consumer");
        // A signed bid froze nothing: the consumer pays the blocking at the
        // ask's price, nothing above it, so there is no excess to refund.
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 3600, "exactly the blocking pulled");
        assertEq(snm.balanceOf(address(market)), PRICE * 3600, "market holds the blocking");
        assertTrue(market.nonceUsed(supplier, 5), "ask nonce spent");
        assertTrue(market.nonceUsed(consumer, 300), "bid nonce spent");
        assertTrue(!market.nonceUsed(supplier, 4) && !market.nonceUsed(consumer, 5), "only those");
        assertEq(market.nonceBitmap(consumer, 1), 1 << 44, "bit 300 = word 1, bit 44");
        assertEq(market.orderCount(), 0, "nothing placed");

        // The deal then lives as any other.
        vm.warp(T0 + 100);
        vm.prank(supplier);
        market.bill(id, st(id));
        vm.prank(consumer);
        market.closeDeal(id, st(id), false);
        assertEq(snm.balanceOf(supplier), FUND + 100 * PRICE, "paid");
        assertEq(snm.balanceOf(consumer), FUND - 100 * PRICE, "charged exactly that");
    }

    function test_signedAskPlacedBid_refundsTheBidsExcess() public {
        Market.Order memory bid = bidOrder(2 * PRICE, 2 hours);
        uint256 bidId = place(bid);
        Market.OrderRef memory ask = signed(askOrder(PRICE, 3 hours), 0);
        vm.expectEmit(address(market));
        emit Market.DealOpened(1, supplier, consumer, supplier, 0, bidId, PRICE, 2 hours, uint64(T0), PRICE * 2 hours);
        uint256 id = market.openDeal(ask, placed(bidId, bid));
        assertEq(market.orderHashes(bidId), bytes32(0), "placed bid consumed");
        assertTrue(market.nonceUsed(supplier, 0), "ask nonce spent");
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 2 hours, "excess back");
        assertEq(blockedOf(id), PRICE * 2 hours, "blocking");
    }

    function test_placedAskSignedBid_pullsTheBlocking() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        uint256 askId = place(ask);
        Market.OrderRef memory bid = signed(bidOrder(PRICE, 0), 9);
        vm.expectEmit(address(market));
        emit Market.DealOpened(1, supplier, consumer, supplier, askId, 0, PRICE, 0, uint64(T0), PRICE * 3600);
        uint256 id = market.openDeal(placed(askId, ask), bid);
        assertEq(market.orderHashes(askId), bytes32(0), "placed ask consumed");
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 3600, "pulled at open");
        assertEq(blockedOf(id), PRICE * 3600, "blocking");
    }

    function test_signedForward_longBidBlocksADay() public {
        uint256 id = market.openDeal(signed(askOrder(PRICE, 5 days), 1), signed(bidOrder(PRICE, 3 days), 1));
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 1 days, "a day pulled");
        assertEq(endOf(id), T0 + 3 days, "bid's duration");
    }

    function test_signedBidWithoutAllowance_revertsAndKeepsTheNonce() public {
        vm.prank(consumer);
        snm.approve(address(market), 0);
        syncDeals();
        expectRefused(
            signed(askOrder(PRICE, 0), 1),
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(SNM.InsufficientAllowance.selector, address(market), 0, PRICE * 3600)
        );
        vm.getRecordedLogs(); // forge keeps a reverted call's events: drop them
        assertTrue(!market.nonceUsed(consumer, 1) && !market.nonceUsed(supplier, 1), "nothing spent");
        assertEq(market.dealHashes(1), bytes32(0), "no deal");
    }

    function test_quickBuy_signedAsk() public {
        Market.OrderRef memory ask = signed(askOrder(PRICE, 4 hours), 77);
        vm.prank(consumer);
        uint256 id = market.quickBuy(ask, 1 hours);
        assertTrue(market.nonceUsed(supplier, 77), "spent");
        assertEq(deal(id).duration, 1 hours, "duration");
        assertEq(snm.balanceOf(consumer), FUND - PRICE * 1 hours, "blocked");
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Market.NonceUsed.selector, supplier, 77));
        market.quickBuy(ask, 1 hours);
    }

    function test_signedOrdersFollowTheMatchRule() public {
        // One clause per kind: resources, parties.
        expectRefused(
            signed(askOrder(2 * PRICE, 0), 1),
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.PriceNotMatched.selector)
        );
        Market.Order memory bid = bidOrder(PRICE, 0);
        bid.benchmarks[12] = 101;
        expectRefused(
            signed(askOrder(PRICE, 0), 1), signed(bid, 1), abi.encodeWithSelector(Market.BenchmarkNotMet.selector, 12)
        );
        vm.prank(supplier);
        blacklist.add(consumer);
        expectRefused(
            signed(askOrder(PRICE, 0), 1),
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.ConsumerBlacklisted.selector)
        );
        // Types: a signed bid given as the ask.
        expectRefused(
            signed(bidOrder(PRICE, 0), 2),
            signed(bidOrder(PRICE, 0), 3),
            abi.encodeWithSelector(Market.WrongOrderType.selector, 0)
        );
    }

    function test_signedOrdersAreValidatedAsAtPlacement() public {
        Market.Order memory ask = askOrder(PRICE, 0);
        ask.benchmarks = new uint64[](12);
        expectRefused(
            signed(ask, 1),
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.InvalidBenchmarksLength.selector, 12)
        );
        expectRefused(
            signed(askOrder(PRICE, 0), 1), signed(bidOrder(0, 0), 1), abi.encodeWithSelector(Market.ZeroPrice.selector)
        );
        Market.Order memory big = askOrder(uint256(type(uint96).max) + 1, 0);
        expectRefused(
            signed(big, 1),
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.PriceTooHigh.selector, uint256(type(uint96).max) + 1)
        );
    }

    // ---------------------------------------------------------- signatures

    function test_malformedSignaturesRefused() public {
        Market.OrderRef memory bid = signed(bidOrder(PRICE, 0), 1);
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 1);
        (bytes32 r, bytes32 s, uint8 v) = sigParts(ask.signature);
        bytes memory err = abi.encodeWithSelector(Market.InvalidSignature.selector);

        ask.signature = abi.encodePacked(r, s); // 64 bytes
        expectRefused(ask, bid, err);
        ask.signature = abi.encodePacked(r, s, v, uint8(0)); // 66 bytes
        expectRefused(ask, bid, err);
        ask.signature = "";
        expectRefused(ask, bid, err);
        ask.signature = abi.encodePacked(r, s, uint8(v - 27)); // v as 0/1
        expectRefused(ask, bid, err);
        ask.signature = abi.encodePacked(r, s, uint8(29));
        expectRefused(ask, bid, err);
        ask.signature = abi.encodePacked(bytes32(0), s, v); // ecrecover gives 0
        expectRefused(ask, bid, err);
        ask.signature = abi.encodePacked(r, bytes32(0), v);
        expectRefused(ask, bid, err);
        // The malleable twin (n - s, other v) recovers the same signer: refused.
        ask.signature = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        expectRefused(ask, bid, err);
        // The genuine one works.
        ask.signature = abi.encodePacked(r, s, v);
        market.openDeal(ask, bid);
    }

    function test_wrongSignerRefused() public {
        Market.OrderRef memory ask = signedWith(askOrder(PRICE, 0), STRANGER_KEY, uint64(T0 + 1 hours), 1);
        expectRefused(
            ask,
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.SignerNotAuthor.selector, vm.addr(STRANGER_KEY), supplier)
        );
    }

    function test_signerOtherThanAuthorRefused() public {
        // The consumer signs an ask naming the supplier as author (a party
        // to the deal, but not the author).
        Market.OrderRef memory ask = signedWith(askOrder(PRICE, 0), CONSUMER_KEY, uint64(T0 + 1 hours), 1);
        expectRefused(
            ask,
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.SignerNotAuthor.selector, consumer, supplier)
        );
        // And a bid signed by the supplier for the consumer.
        Market.OrderRef memory bid = signedWith(bidOrder(PRICE, 0), SUPPLIER_KEY, uint64(T0 + 1 hours), 1);
        expectRefused(
            signed(askOrder(PRICE, 0), 1),
            bid,
            abi.encodeWithSelector(Market.SignerNotAuthor.selector, supplier, consumer)
        );
    }

    function test_tamperedOrderRefused() public {
        Market.OrderRef memory bid = signed(bidOrder(PRICE, 0), 1);
        // Each field the signature covers, changed after signing.
        for (uint256 k; k < 12; ++k) {
            Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 1);
            if (k == 0) ask.order.counterparty = consumer;
            if (k == 1) ask.order.duration = 0 + 1;
            if (k == 2) ask.order.price = PRICE - 1;
            if (k == 3) ask.order.netflags = 3;
            if (k == 4) ask.order.identityLevel = 1;
            if (k == 5) ask.order.blacklist = stranger;
            if (k == 6) ask.order.tag = "other";
            if (k == 7) ask.order.benchmarks[3] = 1000;
            if (k == 8) ask.expiry += 1;
            if (k == 9) ask.nonce = 2;
            if (k == 10) ask.order.author = consumer;
            if (k == 11) ask.order.orderType = 1;
            address signer = recovered(ask);
            assertTrue(signer != supplier && signer != consumer, "recovers someone else");
            vm.expectRevert(abi.encodeWithSelector(Market.SignerNotAuthor.selector, signer, ask.order.author));
            market.openDeal(ask, bid);
        }
    }

    function test_signedForAnotherChainRefused() public {
        uint256 here = block.chainid;
        vm.chainId(here + 1);
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 1);
        vm.chainId(here);
        address signer = recovered(ask);
        expectRefused(
            ask,
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.SignerNotAuthor.selector, signer, supplier)
        );
        // And a signature made here is no good on a fork with another chain id.
        Market.OrderRef memory ask2 = signed(askOrder(PRICE, 0), 2);
        Market.OrderRef memory bid2 = signed(bidOrder(PRICE, 0), 2);
        vm.chainId(here + 1);
        vm.expectRevert(abi.encodeWithSelector(Market.SignerNotAuthor.selector, recovered(ask2), supplier));
        market.openDeal(ask2, bid2);
    }

    function test_signedForAnotherMarketRefused() public {
        Market other = new Market(IERC20(address(snm)), IProfiles(address(profiles)), IBlacklist(address(blacklist)));
        Market.Order memory o = askOrder(PRICE, 0);
        uint64 expiry = uint64(T0 + 1 hours);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SUPPLIER_KEY, other.signedOrderDigest(o, expiry, 1));
        Market.OrderRef memory ask = Market.OrderRef(0, o, expiry, 1, abi.encodePacked(r, s, v));
        expectRefused(
            ask,
            signed(bidOrder(PRICE, 0), 1),
            abi.encodeWithSelector(Market.SignerNotAuthor.selector, recovered(ask), supplier)
        );
    }

    // ------------------------------------------------------ expiry, nonces

    function test_expiry() public {
        Market.OrderRef memory bid = signed(bidOrder(PRICE, 0), 1);
        Market.OrderRef memory ask = signedWith(askOrder(PRICE, 0), SUPPLIER_KEY, uint64(T0 + 60), 1);
        vm.warp(T0 + 61);
        expectRefused(ask, bid, abi.encodeWithSelector(Market.OrderExpired.selector, uint64(T0 + 60)));
        // No "never expires": expiry 0 is always in the past.
        Market.OrderRef memory forever = signedWith(askOrder(PRICE, 0), SUPPLIER_KEY, 0, 2);
        expectRefused(forever, bid, abi.encodeWithSelector(Market.OrderExpired.selector, uint64(0)));
        // The expiry second itself is still valid.
        vm.warp(T0 + 60);
        market.openDeal(ask, bid);
    }

    function test_replayOfAUsedSignedOrderRefused() public {
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 42);
        Market.OrderRef memory bid = signed(bidOrder(PRICE, 0), 42);
        market.openDeal(ask, bid);
        // The very same pair.
        expectRefused(ask, bid, abi.encodeWithSelector(Market.NonceUsed.selector, supplier, 42));
        // The used ask with a fresh bid, and a fresh ask with the used bid.
        expectRefused(
            ask, signed(bidOrder(PRICE, 0), 43), abi.encodeWithSelector(Market.NonceUsed.selector, supplier, 42)
        );
        expectRefused(
            signed(askOrder(PRICE, 0), 43), bid, abi.encodeWithSelector(Market.NonceUsed.selector, consumer, 42)
        );
        // Another order under a used nonce.
        Market.Order memory other = askOrder(PRICE / 2, 0);
        expectRefused(
            signed(other, 42),
            signed(bidOrder(PRICE, 0), 44),
            abi.encodeWithSelector(Market.NonceUsed.selector, supplier, 42)
        );
        assertEq(market.dealCount(), 1, "one deal only");
    }

    function test_cancelNonces() public {
        Market.OrderRef memory ask = signed(askOrder(PRICE, 0), 256 + 3);
        vm.expectEmit(address(market));
        emit Market.NoncesCancelled(supplier, 1, (1 << 3) | (1 << 9));
        vm.prank(supplier);
        market.cancelNonces(1, (1 << 3) | (1 << 9));
        assertTrue(market.nonceUsed(supplier, 259) && market.nonceUsed(supplier, 265), "cancelled");
        assertTrue(!market.nonceUsed(supplier, 3) && !market.nonceUsed(consumer, 259), "only the caller's, only those");
        expectRefused(
            ask, signed(bidOrder(PRICE, 0), 1), abi.encodeWithSelector(Market.NonceUsed.selector, supplier, 259)
        );
        // Cancelling is cumulative and idempotent.
        vm.prank(supplier);
        market.cancelNonces(1, 1 << 3);
        assertEq(market.nonceBitmap(supplier, 1), (1 << 3) | (1 << 9), "bits kept");
        // Nonces in the last word work too.
        market.openDeal(signed(askOrder(PRICE, 0), type(uint256).max), signed(bidOrder(PRICE, 0), 1));
        assertEq(market.nonceBitmap(supplier, type(uint256).max >> 8), 1 << 255, "top bit");
    }
}
