//! Presence: who is subscribed to which channel. Keys are channel ‖ 0 ‖ client id (channel
//! names cannot contain a zero byte); values are the client's ClientInfo as JSON text. The tree
//! is cleared on open, because no connection survives a restart.

use crate::{Store, StoreError};

fn key(channel: &str, client: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + 1 + client.len());
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(client.as_bytes());
    k
}

fn prefix(channel: &str) -> Vec<u8> {
    let mut k = channel.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    pub fn presence_add(
        &self,
        channel: &str,
        client: &str,
        info_json: &[u8],
    ) -> Result<(), StoreError> {
        self.presence.insert(key(channel, client), info_json)?;
        Ok(())
    }

    /// Removes an entry; true if it was there.
    pub fn presence_remove(&self, channel: &str, client: &str) -> Result<bool, StoreError> {
        Ok(self.presence.remove(key(channel, client))?.is_some())
    }

    /// (client id, ClientInfo JSON) of everyone present in a channel.
    pub fn presence(&self, channel: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = prefix(channel);
        self.presence
            .scan_prefix(&p)
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                    v.to_vec(),
                ))
            })
            .collect()
    }

    /// Entries in the whole presence tree (a bound check).
    pub fn presence_len(&self) -> usize {
        self.presence.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::{test_config, Store};

    #[test]
    fn presence_is_per_channel_and_cleared_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(dir.path())).unwrap();
        s.presence_add("a/b/c", "c1", b"{\"user\":\"\",\"client\":\"c1\"}")
            .unwrap();
        s.presence_add("a/b/c", "c2", b"{}").unwrap();
        s.presence_add("a/b/cd", "c3", b"{}").unwrap();
        let list = s.presence("a/b/c").unwrap();
        assert_eq!(
            list.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            vec!["c1", "c2"]
        );
        s.presence_remove("a/b/c", "c1").unwrap();
        assert_eq!(s.presence("a/b/c").unwrap().len(), 1);
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&test_config(dir.path())).unwrap();
        assert_eq!(s.presence_len(), 0);
    }
}
