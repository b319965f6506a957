//! Log queries that RPC endpoints accept however long the chain is: endpoints cap the block
//! range of one `eth_getLogs` (public ones at a few thousand blocks), so a range is asked in
//! windows of [`LOG_WINDOW`] blocks.

use std::future::Future;

use alloy::contract::Event;
use alloy::providers::Provider;
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;

/// The most blocks one `eth_getLogs` asks for.
pub const LOG_WINDOW: u64 = 2_000;

/// [`Event::query`] in windows of [`LOG_WINDOW`] blocks over the filter's range (to the latest
/// block when the filter names no end). Use it wherever `query` would be, e.g.
/// `market.DealOpened_filter().from_block(from).query_windowed().await`.
pub trait QueryWindowed<E> {
    fn query_windowed(
        &self,
    ) -> impl Future<Output = Result<Vec<(E, Log)>, alloy::contract::Error>> + Send;
}

impl<P, E> QueryWindowed<E> for Event<P, E>
where
    P: Provider + Sync,
    E: SolEvent + Send + Sync,
{
    async fn query_windowed(&self) -> Result<Vec<(E, Log)>, alloy::contract::Error> {
        let from = self.filter.get_from_block().unwrap_or(0);
        let to = match self.filter.get_to_block() {
            Some(to) => to,
            None => self.provider.get_block_number().await?,
        };
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(LOG_WINDOW - 1));
            let filter = self.filter.clone().from_block(start).to_block(end);
            for log in self.provider.get_logs(&filter).await? {
                let event = log.log_decode::<E>()?.inner.data;
                out.push((event, log));
            }
            start = end + 1;
        }
        Ok(out)
    }
}
