//! The bounded full mesh between shards: every shard can send to every other,
//! each link holding at most `capacity` messages so a slow shard pushes back.

use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};

/// Built once, cloned into every shard, joined by each shard on its executor.
pub struct Mesh<T: Send + 'static> {
    builder: MeshBuilder<T, glommio::channels::channel_mesh::Full>,
}

impl<T: Send + 'static> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh {
            builder: self.builder.clone(),
        }
    }
}

impl<T: Send + 'static> Mesh<T> {
    pub fn new(shards: usize, capacity: usize) -> Mesh<T> {
        Mesh {
            builder: MeshBuilder::full(shards, capacity),
        }
    }

    /// Joins the mesh; completes when every shard has joined.
    pub async fn join(self) -> std::io::Result<MeshLinks<T>> {
        let (senders, receivers) = self
            .builder
            .join()
            .await
            .map_err(|e| std::io::Error::other(format!("joining the shard mesh: {e}")))?;
        Ok(MeshLinks { senders, receivers })
    }
}

#[derive(Debug)]
pub enum MeshSendError<T> {
    /// The receiving shard has stopped; the message comes back.
    Gone(T),
    /// `to` is this shard or out of range: a bug in the caller.
    NoSuchShard(usize),
}

/// One shard's ends of the mesh.
pub struct MeshLinks<T: Send + 'static> {
    senders: Senders<T>,
    receivers: Receivers<T>,
}

impl<T: Send + 'static> MeshLinks<T> {
    /// This shard's index in the mesh.
    pub fn me(&self) -> usize {
        self.senders.peer_id()
    }

    pub fn shards(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Sends to shard `to`, waiting while its link is full.
    pub async fn send(&self, to: usize, message: T) -> Result<(), MeshSendError<T>> {
        debug_assert_ne!(to, self.me(), "local messages never touch the mesh");
        self.senders
            .send_to(to, message)
            .await
            .map_err(|e| match e {
                glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))
                | glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => {
                    MeshSendError::Gone(m)
                }
                _ => MeshSendError::NoSuchShard(to),
            })
    }

    /// Receives the next message from shard `from`; `None` once it has gone.
    pub async fn recv_from(&self, from: usize) -> Option<T> {
        self.receivers.recv_from(from).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{spawn_shards, Placement};

    #[test]
    fn every_shard_reaches_every_other() {
        let shards = 3;
        let mesh: Mesh<(usize, usize)> = Mesh::new(shards, 4);
        let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let gens: Vec<_> = (0..shards)
            .map(|_| {
                let mesh = mesh.clone();
                let results = results.clone();
                move || async move {
                    let links = mesh.join().await.unwrap();
                    let me = links.me();
                    for to in (0..links.shards()).filter(|&to| to != me) {
                        links.send(to, (me, to)).await.unwrap();
                    }
                    for from in (0..links.shards()).filter(|&f| f != me) {
                        let got = links.recv_from(from).await.unwrap();
                        results.lock().unwrap().push(got);
                    }
                }
            })
            .collect();
        spawn_shards(Placement::Unbound, gens)
            .unwrap()
            .join()
            .unwrap();
        let mut got = results.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<_> = (0..shards)
            .flat_map(|a| (0..shards).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}
