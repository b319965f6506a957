//! Signed orders and one-word deals across the language boundary, on anvil with the real
//! contracts: orders signed in Rust (EIP-712) open a deal that a third party submits; the
//! digest equals the contract's own; `recover_signed_order` finds the author, another address for
//! a tampered order or another domain, and refuses the signatures the Market refuses (high s,
//! v not 27/28, not 65 bytes); a replay, a key that is not the author and a stale deal
//! state are refused; the deal's state rebuilt from its events hashes to the stored word after
//! opening, billing and closing, also when followed incrementally across more blocks than one
//! log query covers.

use crate::common;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{anvil, block_on, confirm, unlocked};
use sonm_contracts::anvil::{ANVIL_CHAIN_ID, DEV_KEYS};
use sonm_contracts::deploy::SNM_WEI;
use sonm_contracts::{
    DealFollower, DealSnapshot, DeployConfig, LOG_WINDOW, Market, QueryWindowed, Refusal, SNM,
    SignError, SignatureError, chain_order, deploy, market_domain, recover_signed_order,
    sign_order, signed_order_digest,
};
use sonm_market::{Benchmark, Benchmarks, IdentityLevel, NetFlags, Order, OrderType};

/// secp256k1's group order n.
const N: U256 = U256::from_be_bytes(alloy::primitives::hex!(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
));

/// The malleable twin of a low-s signature: s' = n - s with the other v. The same signer
/// recovers from it, which is why the Market refuses it.
fn high_s_twin(signature: &[u8]) -> Bytes {
    let mut twin = signature.to_vec();
    let s = U256::from_be_slice(&signature[32..64]);
    twin[32..64].copy_from_slice(&(N - s).to_be_bytes::<32>());
    twin[64] = if signature[64] == 27 { 28 } else { 27 };
    twin.into()
}

fn order(order_type: OrderType, author: Address, price: u128) -> Order {
    Order {
        id: 0,
        order_type,
        author,
        counterparty: None,
        duration: 0,
        price,
        netflags: NetFlags::OUTBOUND,
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: B256::repeat_byte(0x5a),
        benchmarks: Benchmarks::ZERO
            .with(Benchmark::CpuCores, 2)
            .with(Benchmark::RamSize, 1 << 30),
    }
}

#[test]
fn orders_signed_in_rust_open_a_deal_whose_state_is_rebuilt_from_events() {
    let anvil = anvil(&[]);
    block_on(async {
        let p = unlocked(&anvil);
        let keys: Vec<PrivateKeySigner> = DEV_KEYS.iter().map(|k| k.parse().unwrap()).collect();
        let (matcher, supplier, consumer) = (&keys[0], &keys[1], &keys[2]);
        let config = DeployConfig {
            fund: vec![
                (supplier.address(), U256::from(10u128 * SNM_WEI)),
                (consumer.address(), U256::from(10u128 * SNM_WEI)),
            ],
            ..DeployConfig::default()
        };
        let addresses = deploy(common::url(&anvil), matcher.clone(), &config)
            .await
            .unwrap();
        let c = addresses.contracts;
        let market = Market::new(c.market, &p);
        let token = SNM::new(c.snm, &p);
        let approve = token.approve(c.market, U256::MAX).from(consumer.address());
        confirm("approve", approve).await;

        let now = p
            .get_block_by_number(Default::default())
            .await
            .unwrap()
            .unwrap();
        let expiry = now.header.timestamp + 3600;
        let domain = market_domain(ANVIL_CHAIN_ID, c.market);
        let ask = order(OrderType::Ask, supplier.address(), 1_000);
        let bid = order(OrderType::Bid, consumer.address(), 1_500);

        // The digest signed here is the contract's.
        let ours = signed_order_digest(&chain_order(&ask), expiry, U256::from(7), &domain);
        let theirs = market
            .signedOrderDigest(chain_order(&ask), expiry, U256::from(7))
            .call()
            .await
            .unwrap();
        assert_eq!(ours, theirs);
        // An order is signed by its author only.
        assert!(matches!(
            sign_order(consumer, &ask, expiry, U256::from(7), &domain),
            Err(SignError::NotAuthor { .. })
        ));

        let ask_ref = sign_order(supplier, &ask, expiry, U256::from(7), &domain).unwrap();
        let bid_ref = sign_order(consumer, &bid, expiry, U256::from(300), &domain).unwrap();

        // What a receiver of the signed ask (the DWH) recovers from it.
        assert_eq!(
            recover_signed_order(&ask_ref, &domain),
            Ok(supplier.address())
        );
        let mut tampered = ask_ref.clone();
        tampered.order.price += U256::from(1);
        let other = recover_signed_order(&tampered, &domain).unwrap();
        assert_ne!(other, supplier.address(), "a tampered price");
        for foreign in [
            market_domain(1, c.market),
            market_domain(ANVIL_CHAIN_ID, c.snm),
        ] {
            let signer = recover_signed_order(&ask_ref, &foreign).unwrap();
            assert_ne!(signer, supplier.address(), "another domain");
        }
        // Signatures the Market refuses are refused here, for the same reason.
        let with_signature = |signature: Bytes| {
            let mut r = ask_ref.clone();
            r.signature = signature;
            r
        };
        let twin = with_signature(high_s_twin(&ask_ref.signature));
        assert_eq!(
            recover_signed_order(&twin, &domain),
            Err(SignatureError::HighS)
        );
        let mut bad_v = ask_ref.signature.to_vec();
        bad_v[64] = 29;
        let bad_v = with_signature(bad_v.into());
        assert_eq!(
            recover_signed_order(&bad_v, &domain),
            Err(SignatureError::V(29))
        );
        let short = with_signature(ask_ref.signature.slice(..64));
        assert_eq!(
            recover_signed_order(&short, &domain),
            Err(SignatureError::Length(64))
        );
        for refused in [twin, bad_v, short] {
            let call = market.openDeal(refused, bid_ref.clone());
            let err = call.from(matcher.address()).call().await.unwrap_err();
            assert!(
                matches!(
                    Refusal::decode(&err),
                    Some(Refusal::Market(Market::MarketErrors::InvalidSignature(_)))
                ),
                "{err}"
            );
        }
        let before = token.balanceOf(consumer.address()).call().await.unwrap();
        // A third party (a matcher) submits both signed orders.
        let open = market
            .openDeal(ask_ref.clone(), bid_ref.clone())
            .from(matcher.address());
        let receipt = confirm("openDeal", open).await;
        let opened = receipt.decoded_log::<Market::DealOpened>().unwrap();
        let id = opened.dealId.to::<u64>();
        assert_eq!((opened.askId, opened.bidId), (U256::ZERO, U256::ZERO));
        assert_eq!(opened.price, U256::from(1_000));
        // A signed bid froze nothing: the deal's blocking (an hour at the ask's price) is
        // pulled at opening, and nothing more.
        let after = token.balanceOf(consumer.address()).call().await.unwrap();
        assert_eq!(before - after, U256::from(1_000 * 3600));
        for (author, nonce) in [(supplier.address(), 7u64), (consumer.address(), 300)] {
            let used = market
                .nonceUsed(author, U256::from(nonce))
                .call()
                .await
                .unwrap();
            assert!(used, "{author} nonce {nonce}");
        }

        // The same signed orders again: each nonce is spent.
        let replay = market.openDeal(ask_ref, bid_ref).from(matcher.address());
        let err = replay.call().await.unwrap_err();
        assert!(
            matches!(
                Refusal::decode(&err),
                Some(Refusal::Market(Market::MarketErrors::NonceUsed(_)))
            ),
            "{err}"
        );

        // The state rebuilt from events is the stored word, after each step.
        let stored = |d: &DealSnapshot| {
            let (market, state) = (&market, d.state());
            async move {
                let word = market.dealHashes(U256::from(id)).call().await.unwrap();
                let hash = market.dealHash(state).call().await.unwrap();
                (word, hash)
            }
        };
        let read = || DealSnapshot::read(&p, c.market, id, 0);
        let opened = read().await.unwrap().unwrap();
        // A follower kept across the steps reads only new blocks, in windows of LOG_WINDOW,
        // and always agrees with a fresh read from the start.
        let mut follower = DealFollower::new(c.market, id, 0);
        assert_eq!(follower.update(&p).await.unwrap(), Some(&opened));
        assert_eq!(opened.supplier, supplier.address());
        assert_eq!(opened.consumer, consumer.address());
        assert_eq!(opened.master, supplier.address());
        assert!(opened.active());
        let (word, hash) = stored(&opened).await;
        assert_eq!(word, hash);

        // More blocks between the opening and the bill than two log queries cover.
        let blocks = 2 * LOG_WINDOW + 5;
        let _: serde_json::Value = p.raw_request("anvil_mine".into(), (blocks,)).await.unwrap();
        let _: serde_json::Value = p
            .raw_request("evm_increaseTime".into(), (120,))
            .await
            .unwrap();
        let bill = market
            .bill(U256::from(id), opened.state())
            .from(supplier.address());
        confirm("bill", bill).await;
        let billed = read().await.unwrap().unwrap();
        assert_eq!(follower.update(&p).await.unwrap(), Some(&billed));
        assert!(billed.last_bill_time >= opened.last_bill_time + 120);
        let (word, hash) = stored(&billed).await;
        assert_eq!(word, hash);
        // The state before the bill is stale now.
        let stale = market
            .bill(U256::from(id), opened.state())
            .from(supplier.address());
        let err = stale.call().await.unwrap_err();
        assert!(
            matches!(
                Refusal::decode(&err),
                Some(Refusal::Market(Market::MarketErrors::DealStateMismatch(_)))
            ),
            "{err}"
        );

        let close = market
            .closeDeal(U256::from(id), billed.state(), false)
            .from(consumer.address());
        confirm("closeDeal", close).await;
        let closed = read().await.unwrap().unwrap();
        assert_eq!(follower.update(&p).await.unwrap(), Some(&closed));
        let end = closed.end.expect("closed");
        assert_eq!(end.closed_by, consumer.address());
        assert_eq!(end.end_time, closed.last_bill_time);
        assert!(!closed.active());
        let word = market.dealHashes(U256::from(id)).call().await.unwrap();
        assert_eq!(word, B256::ZERO, "a closed deal's word is deleted");
        // The same logs through the windowed query the daemons use (over 4,000 blocks).
        let windowed = market
            .DealBilled_filter()
            .topic1(U256::from(id))
            .from_block(0)
            .query_windowed()
            .await
            .unwrap();
        assert_eq!(windowed.len(), 2, "the bill and the close's bill");
        assert_eq!(windowed[0].0.billedUntil, billed.last_bill_time);
        // No such deal: nothing to rebuild.
        assert_eq!(
            DealSnapshot::read(&p, c.market, id + 1, 0).await.unwrap(),
            None
        );
    });
}
