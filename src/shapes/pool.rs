//! A shard's Postgres connections for catalog reads and snapshots: at most
//! `max` open, idle ones reused, waiters woken when one is freed. Per shard,
//! so no connection is ever shared across executors.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use shards::notify::Notify;

use crate::pg::conn::Connection;
use crate::pg::connstr::ConnConfig;
use crate::pg::error::PgError;

pub struct Pool {
    config: ConnConfig,
    max: usize,
    idle: RefCell<Vec<Connection>>,
    open: Cell<usize>,
    freed: Rc<Notify>,
}

impl Pool {
    pub fn new(config: ConnConfig, max: usize) -> Rc<Pool> {
        assert!(max > 0, "a pool needs at least one connection");
        Rc::new(Pool {
            config,
            max,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            freed: Notify::new(),
        })
    }

    /// A connection, waiting while all `max` are in use.
    pub async fn get(self: &Rc<Pool>) -> Result<Pooled, PgError> {
        loop {
            let freed = self.freed.listen();
            if let Some(conn) = self.idle.borrow_mut().pop() {
                return Ok(self.wrap(conn));
            }
            if self.open.get() < self.max {
                self.open.set(self.open.get() + 1);
                return match Connection::connect(&self.config).await {
                    Ok(conn) => Ok(self.wrap(conn)),
                    Err(e) => {
                        self.open.set(self.open.get() - 1);
                        self.freed.notify_all();
                        Err(e)
                    }
                };
            }
            freed.await;
        }
    }

    fn wrap(self: &Rc<Pool>, conn: Connection) -> Pooled {
        Pooled {
            pool: self.clone(),
            conn: Some(conn),
            reusable: true,
        }
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }
}

/// A borrowed connection; back to the pool on drop unless marked otherwise.
pub struct Pooled {
    pool: Rc<Pool>,
    conn: Option<Connection>,
    reusable: bool,
}

impl Pooled {
    /// While false (inside a transaction, after an I/O error), dropping
    /// closes the connection instead of handing it to the next user.
    pub fn set_reusable(&mut self, reusable: bool) {
        self.reusable = reusable;
    }
}

impl Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable {
                self.pool.idle.borrow_mut().push(conn);
            } else {
                self.pool.open.set(self.pool.open.get() - 1);
            }
        }
        self.pool.freed.notify_all();
    }
}
