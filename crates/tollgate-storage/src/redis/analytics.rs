//! Analytics records appended to Tyk's Redis list, where Tyk Pump reads them.

use super::RedisStore;
use crate::error::StoreError;

impl RedisStore {
    /// Appends analytics records to Tyk's list (one round trip), renewing its expiry.
    ///
    /// # Errors
    /// Redis cannot be reached; the batch was not written.
    pub async fn push_analytics(
        &self,
        list: &str,
        batch: Vec<Vec<u8>>,
        expire_secs: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(list).arg(batch).ignore();
        if expire_secs > 0 {
            pipe.cmd("EXPIRE").arg(list).arg(expire_secs).ignore();
        }
        self.deadline(pipe.query_async::<()>(&mut conn)).await
    }
}
