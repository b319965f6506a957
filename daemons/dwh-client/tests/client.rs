//! The client against a real HTTP server on loopback that answers as the DWH does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use serde_json::{Value, json};
use sonm_dwh_client::{Dwh, Listing, OrderRow};

/// Serves `answer(url) -> (status, body)` until dropped; counts requests.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> Server {
        let (server, addr) = sonm_http_serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            sonm_http_serve::serve(&server, 1, &halt, |request| {
                n.fetch_add(1, Ordering::Relaxed);
                let (status, body) = answer(request.url());
                sonm_http_serve::Reply::json(status, body)
            });
        });
        Server {
            base: format!("http://{addr}"),
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    /// Returns once the server is closed (its thread has dropped it).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// An order row as the DWH serialises it.
fn row(id: u64) -> Value {
    let mut order = template();
    order.id = id;
    json!({ "order": order, "status": "active", "deal": null, "placed_block": 1 })
}

fn template() -> sonm_market::Order {
    use sonm_market::{Address, Benchmarks, IdentityLevel, NetFlags, OrderType};
    sonm_market::Order {
        id: 0,
        order_type: OrderType::Bid,
        author: Address::repeat_byte(1),
        counterparty: None,
        duration: 0,
        price: 5,
        netflags: NetFlags::default(),
        identity_level: IdentityLevel::Anonymous,
        blacklist: None,
        tag: Default::default(),
        benchmarks: Benchmarks::ZERO,
    }
}

/// Rows 1..=n in pages of `limit`, the cursor being the last id served.
fn paged(n: u64) -> impl Fn(&str) -> (u16, String) {
    move |url| {
        if !url.starts_with("/v1/orders?") {
            return (404, json!({"error": "no route"}).to_string());
        }
        let limit: u64 = param(url, "limit").unwrap().parse().unwrap();
        let after: u64 = param(url, "cursor").map_or(0, |c| c.parse().unwrap());
        let items: Vec<Value> = (after + 1..=n.min(after + limit)).map(row).collect();
        let next = (after + limit < n).then(|| (after + limit).to_string());
        (200, json!({ "items": items, "next": next }).to_string())
    }
}

fn ids(l: &Listing<OrderRow>) -> Vec<u64> {
    l.items.iter().map(|r| r.order.id).collect()
}

#[test]
fn follows_cursors_up_to_the_bound() {
    let s = Server::start(paged(2500));
    let dwh = Dwh::new(&format!("{}/", s.base));
    let all: Listing<OrderRow> = dwh
        .all("/v1/orders", &[("type", "bid".into())], 10_000)
        .unwrap();
    assert_eq!(ids(&all), (1..=2500).collect::<Vec<_>>());
    assert!(!all.truncated);
    assert_eq!(s.requests.load(Ordering::Relaxed), 3, "pages of 1000");

    let some: Listing<OrderRow> = dwh.all("/v1/orders", &[], 1500).unwrap();
    assert_eq!(ids(&some), (1..=1500).collect::<Vec<_>>());
    assert!(some.truncated);
    let few: Listing<OrderRow> = dwh.all("/v1/orders", &[], 7).unwrap();
    assert_eq!((few.items.len(), few.truncated), (7, true));
    let exact: Listing<OrderRow> = dwh.all("/v1/orders", &[], 2500).unwrap();
    assert_eq!((exact.items.len(), exact.truncated), (2500, false));
}

#[test]
fn statuses_and_garbage_are_typed() {
    let s = Server::start(|url| match url.split('?').next().unwrap() {
        "/v1/orders/1" => (200, row(1).to_string()),
        "/v1/orders/2/matches" => (400, json!({"error": "order 2 is not active"}).to_string()),
        "/v1/garbage" => (200, "{not json".into()),
        "/v1/broken" => (500, json!({"error": "storage error"}).to_string()),
        _ => (404, json!({"error": "no route"}).to_string()),
    });
    let dwh = Dwh::new(&s.base);
    let one: Option<OrderRow> = dwh.get("/v1/orders/1", &[]).unwrap();
    assert_eq!(one.unwrap().order.id, 1);
    let none: Option<OrderRow> = dwh.get("/v1/orders/9", &[]).unwrap();
    assert!(none.is_none());
    let bad = dwh.get::<Value>("/v1/orders/2/matches", &[]).unwrap_err();
    assert_eq!(bad.status, Some(400));
    assert!(bad.message.contains("not active"), "{bad}");
    let garbage = dwh.get::<Value>("/v1/garbage", &[]).unwrap_err();
    assert_eq!(garbage.status, Some(200));
    assert!(garbage.message.contains("unexpected answer"), "{garbage}");
    assert_eq!(
        dwh.get::<Value>("/v1/broken", &[]).unwrap_err().status,
        Some(500)
    );
    // A listing that is not served: not a sonm-dwh.
    let e = dwh.all::<OrderRow>("/v1/nothing", &[], 10).unwrap_err();
    assert_eq!(e.status, Some(404));
    // Nobody listening.
    let base = s.base.clone();
    drop(s);
    let gone = Dwh::new(&base);
    let e = gone.get::<Value>("/v1/orders/1", &[]).unwrap_err();
    assert_eq!(e.status, None, "{e}");
}
