//! The blocking connection pool of both dialects: at most `size`
//! connections, opened on demand; a caller waits for a free one up to a
//! deadline, then gets [`StoreError::Unavailable`]; a connection that broke
//! is dropped on return, with every idle one (they likely broke too).
//!
//! A failed connect is reported at once rather than retried until the
//! deadline, so with the database down a request answers "unavailable"
//! immediately (docs/operations.md says why `r2d2` does not fit).

use crate::StoreError;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How a pool opens and checks its connections.
pub trait Connector: Send + Sync {
    /// An open connection (with whatever travels with it, such as its
    /// prepared statements).
    type Conn: Send;
    /// Opens a new connection.
    fn connect(&self) -> Result<Self::Conn, StoreError>;
    /// Whether a connection idle for `idle` can still be used.
    fn usable(&self, _conn: &mut Self::Conn, _idle: Duration) -> bool {
        true
    }
    /// Whether a connection returned to the pool broke.
    fn broken(&self, _conn: &Self::Conn) -> bool {
        false
    }
}

/// At most `size` connections of one [`Connector`].
pub struct Pool<C: Connector> {
    connector: C,
    size: usize,
    wait: Duration,
    state: Mutex<State<C::Conn>>,
    freed: Condvar,
}

struct State<T> {
    /// Idle connections and when each was returned.
    idle: Vec<(T, Instant)>,
    in_use: usize,
}

impl<C: Connector> Pool<C> {
    /// A pool of at most `size` connections whose callers wait up to `wait`.
    pub fn new(connector: C, size: usize, wait: Duration) -> Self {
        Self {
            connector,
            size,
            wait,
            state: Mutex::new(State {
                idle: Vec::new(),
                in_use: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// What opens this pool's connections.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    fn state(&self) -> MutexGuard<'_, State<C::Conn>> {
        // A list and a counter, consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the idle connections out of the pool (to close them elsewhere).
    pub fn take_idle(&self) -> Vec<C::Conn> {
        self.state().idle.drain(..).map(|(c, _)| c).collect()
    }

    /// A free connection: an idle one, or a new one while fewer than `size`
    /// are open, or the first one freed within the wait.
    pub fn get(&self) -> Result<Pooled<'_, C>, StoreError> {
        let mut st = self.state();
        let deadline = Instant::now() + self.wait;
        while st.idle.is_empty() && st.in_use >= self.size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "no free database connection within {} s",
                    self.wait.as_secs()
                )));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.in_use += 1;
        let reused = st.idle.pop();
        drop(st);
        let reused = reused.and_then(|(mut c, since)| {
            if self.connector.usable(&mut c, since.elapsed()) {
                Some(c)
            } else {
                // One dead connection means the others are likely dead too.
                self.state().idle.clear();
                None
            }
        });
        match reused.map_or_else(|| self.connector.connect(), Ok) {
            Ok(conn) => Ok(Pooled {
                pool: self,
                conn: Some(conn),
            }),
            Err(e) => {
                self.release(None);
                Err(e)
            }
        }
    }

    fn release(&self, conn: Option<C::Conn>) {
        let mut st = self.state();
        st.in_use = st.in_use.saturating_sub(1);
        if let Some(c) = conn {
            if self.connector.broken(&c) {
                st.idle.clear();
            } else {
                st.idle.push((c, Instant::now()));
            }
        }
        drop(st);
        self.freed.notify_one();
    }
}

/// A connection of a [`Pool`], returned to it on drop.
pub struct Pooled<'a, C: Connector> {
    pool: &'a Pool<C>,
    conn: Option<C::Conn>,
}

impl<C: Connector> std::ops::Deref for Pooled<'_, C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        // `conn` is `Some` from creation until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<C: Connector> std::ops::DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<C: Connector> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        self.pool.release(self.conn.take());
    }
}
