//! Output queues: bytes owed to one socket, and the pool their buffers come from.
//!
//! [`OutQueue`] is the one output queue of the project: the server queues every reply
//! and broadcast in one, and the bench harness queues what its clients send in one. It
//! holds no buffer while nothing is owed, so an idle connection costs nothing here.
//! [`BufferPool`] keeps a bounded number of drained buffers for reuse, so a busy
//! connection does not allocate per message.
//!
//! This module owns neither sockets nor limits: the caller decides how much may be
//! queued and when to write.

use std::io::{self, Write};

/// Bytes queued for one writer; `buf[pos..]` is still to be written.
#[derive(Debug, Default)]
pub struct OutQueue {
    buf: Vec<u8>,
    pos: usize,
}

/// What one [`OutQueue::write_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// `write` calls made (the syscall count, for the summary's writes per delivery).
    pub calls: u64,
    /// Bytes the writer took.
    pub bytes: usize,
}

impl OutQueue {
    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Appends `bytes`. An empty queue takes its buffer from `pool`.
    pub fn push(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            // Reclaim the written prefix before growing; amortised O(1) per byte.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes still owed, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` bytes as written (for a writer that is not an [`io::Write`]). A
    /// drained queue's buffer goes back to `pool`.
    pub fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.clear(pool);
        }
    }

    /// Writes until the queue is empty or the writer would block (`WouldBlock` is not
    /// an error: what is left stays queued). Retries on `Interrupted`. A drained
    /// queue's buffer goes back to `pool`. On an error, what was written before it
    /// stays written and the rest stays queued.
    pub fn write_to(&mut self, w: &mut impl Write, pool: &mut BufferPool) -> io::Result<Written> {
        let mut done = Written { calls: 0, bytes: 0 };
        while self.pos < self.buf.len() {
            done.calls += 1;
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    done.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.clear(pool);
        Ok(done)
    }

    /// Drops everything queued and gives the buffer back to `pool`.
    pub fn clear(&mut self, pool: &mut BufferPool) {
        self.pos = 0;
        pool.put(std::mem::take(&mut self.buf));
    }
}

/// Spare output buffers, so a busy connection reuses memory instead of allocating per
/// message while an idle one holds none.
#[derive(Debug, Default)]
pub struct BufferPool {
    spare: Vec<Vec<u8>>,
    /// Capacity held in `spare`, in bytes.
    bytes: usize,
}

/// Capacity the pool keeps at most (bytes); beyond it, drained buffers are freed, so a
/// burst does not pin memory after it has passed.
const POOL_MAX_BYTES: usize = 4 << 20;
/// A buffer larger than this (bytes) is freed, not pooled.
const POOL_MAX_CAPACITY: usize = 64 * 1024;
/// First capacity of a fresh buffer: several chat lines.
const BUFFER_START: usize = 512;

impl BufferPool {
    /// An empty buffer, reused if one is spare.
    pub fn take(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(buf) => {
                self.bytes -= buf.capacity();
                buf
            }
            None => Vec::with_capacity(BUFFER_START),
        }
    }

    /// Returns a buffer for reuse.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && cap <= POOL_MAX_CAPACITY && self.bytes + cap <= POOL_MAX_BYTES {
            buf.clear();
            self.bytes += cap;
            self.spare.push(buf);
        }
    }

    /// Bytes of capacity held for reuse.
    pub fn held(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes in all, then says `WouldBlock`; `room` can be raised
    /// between calls, like a socket whose peer reads.
    struct Blocking {
        taken: Vec<u8>,
        room: usize,
        interrupt_once: bool,
    }

    impl Write for Blocking {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.interrupt_once {
                self.interrupt_once = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.room - self.taken.len()).min(3);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_blocks_halfway_keeps_the_rest_queued_in_order() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        let mut w = Blocking {
            taken: Vec::new(),
            room: 7,
            interrupt_once: true,
        };
        q.push(b"hello ", &mut pool);
        q.push(b"world\n", &mut pool);
        let done = q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(done.bytes, 7);
        assert_eq!(q.pending(), 5);
        assert_eq!(q.as_slice(), b"orld\n");
        q.push(b"more\n", &mut pool);
        w.room = 100;
        q.write_to(&mut w, &mut pool).unwrap();
        assert!(q.is_empty());
        assert_eq!(w.taken, b"hello world\nmore\n");
        assert_eq!(
            pool.held(),
            BUFFER_START,
            "a drained queue returns its buffer"
        );
    }

    #[test]
    fn an_empty_queue_holds_no_buffer_and_makes_no_calls() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        let mut w = Blocking {
            taken: Vec::new(),
            room: 0,
            interrupt_once: false,
        };
        assert_eq!(
            q.write_to(&mut w, &mut pool).unwrap(),
            Written { calls: 0, bytes: 0 }
        );
        q.push(b"x", &mut pool);
        q.consume(1, &mut pool);
        assert!(q.is_empty());
        assert_eq!(q.buf.capacity(), 0);
    }

    #[test]
    fn write_errors_keep_the_unwritten_rest() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        q.push(b"abc", &mut pool);
        assert!(q.write_to(&mut Broken, &mut pool).is_err());
        assert_eq!(q.pending(), 3);
    }

    #[test]
    fn pool_reuses_buffers_and_caps_what_it_holds() {
        let mut pool = BufferPool::default();
        let buf = pool.take();
        assert_eq!(buf.capacity(), BUFFER_START);
        pool.put(buf);
        assert_eq!(pool.held(), BUFFER_START);
        assert_eq!(pool.take().capacity(), BUFFER_START);
        assert_eq!(pool.held(), 0);
        pool.put(Vec::with_capacity(POOL_MAX_CAPACITY + 1));
        assert_eq!(pool.held(), 0, "oversized buffers are freed");
        for _ in 0..(POOL_MAX_BYTES / POOL_MAX_CAPACITY) + 10 {
            pool.put(Vec::with_capacity(POOL_MAX_CAPACITY));
        }
        assert!(pool.held() <= POOL_MAX_BYTES);
    }
}
