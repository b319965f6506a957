//! `sonm-dwh`: the chain indexer. It follows the contracts' events ([`event`]),
//! applies them block by block through a pure core ([`index`]) to LMDB
//! ([`storage`]), with the checkpoint in the same transaction and an undo log for
//! reorgs, and answers queries ([`query`]) over HTTP/JSON ([`api`]). It also keeps a book of
//! orders signed off chain ([`signed`]): posted through the API, checked, and dropped when
//! the chain's events spend their nonces.

pub mod api;
pub mod daemon;
pub mod event;
pub mod follower;
pub mod index;
pub mod query;
pub mod signed;
pub mod storage;

pub use event::{ChainEvent, DecodeError};
pub use index::{
    ApplyError, BlockEvents, BookChange, Key, MemStore, OrderRow, OrderStatus, Record,
    SignedOrderRow, Store, apply_block, undo_block,
};
