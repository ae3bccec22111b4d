//! Micro-benchmarks of the server's hot paths, each on realistic input: splitting reads
//! into lines, parsing frames, encoding events, fanning one encoded message out to
//! 1 000 output queues, and the timer wheel's insert / cancel / poll.
//!
//! Run with `cargo bench --bench hot_paths` (add a filter, e.g. `-- fan_out`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use loopchat::codec::{Dialect, Event, LineReader, parse_frame};
use loopchat::outq::{BufferPool, OutQueue};
use loopchat::timer::TimerWheel;

/// A realistic input stream: mostly chat lines of varied length, some commands, CRLF
/// from some clients, about 64 KiB in all.
fn chat_stream() -> Vec<u8> {
    let words = [
        "hi",
        "hello there",
        "how is everyone doing today?",
        "lol",
        "the build is green again, merging now",
        "anyone up for lunch at noon? the usual place",
    ];
    let mut out = Vec::with_capacity(70 * 1024);
    let mut i = 0usize;
    while out.len() < 64 * 1024 {
        match i % 10 {
            0 => out.extend_from_slice(b"JOIN:#rust\n"),
            1 => out.extend_from_slice(b"MSG:bob:are you there?\r\n"),
            _ => {
                out.extend_from_slice(b"SAY::");
                out.extend_from_slice(words[i % words.len()].as_bytes());
                if i.is_multiple_of(3) {
                    out.extend_from_slice(b" ");
                    out.extend_from_slice(&b"x".repeat(i % 200));
                }
                out.extend_from_slice(if i.is_multiple_of(4) { b"\r\n" } else { b"\n" });
            }
        }
        i += 1;
    }
    out
}

fn line_splitting(c: &mut Criterion) {
    let stream = chat_stream();
    let mut g = c.benchmark_group("line_reader_feed");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    // Read sizes a server sees: one small segment, a loopback MSS, a 16 KiB burst (its
    // buffer takes up to 64 KiB at once).
    for chunk in [64usize, 1448, 16 * 1024] {
        g.bench_function(format!("{chunk}_byte_reads"), |b| {
            b.iter(|| {
                let mut reader = LineReader::default();
                let mut lines = 0usize;
                for part in stream.chunks(chunk) {
                    reader.feed(part, 4096, |l| {
                        if let Ok(l) = l {
                            lines += l.len() & 1;
                        }
                    });
                }
                black_box(lines)
            })
        });
    }
    g.finish();
}

fn frame_parsing(c: &mut Criterion) {
    let lines: [&[u8]; 8] = [
        b"SAY::hello everyone, how is it going?",
        b"SAY:alice:the middle field is ignored",
        b"JOIN:alice",
        b"JOIN:#rust",
        b"MSG:bob:are you there?",
        b"WHO:",
        b"NOPE:unknown verb",
        b"SAY::a line with a tab\there and some more text to check for controls",
    ];
    let mut g = c.benchmark_group("parse_frame");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("mixed_8_lines", |b| {
        b.iter(|| {
            for l in &lines {
                let _ = black_box(parse_frame(black_box(l)));
            }
        })
    });
    g.finish();
}

fn event_encoding(c: &mut Criterion) {
    let text = "the build is green again, merging now; see you all at lunch";
    let say = Event::Say {
        from: "alice",
        text,
    };
    let mut g = c.benchmark_group("event_encode");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(256);
    g.bench_function("say_frame", |b| {
        b.iter(|| {
            out.clear();
            black_box(&say).encode(Dialect::Frames, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("say_text", |b| {
        b.iter(|| {
            out.clear();
            black_box(&say).encode(Dialect::Text, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("join_frame", |b| {
        b.iter(|| {
            out.clear();
            black_box(Event::Join("bob")).encode(Dialect::Frames, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// One message encoded once and pushed to 1 000 recipients' output queues, as the
/// server's broadcast does before flushing: the real `OutQueue::push` with a
/// `BufferPool`, so an empty queue taking a pooled buffer is part of the cost.
fn fan_out(c: &mut Criterion) {
    const RECIPIENTS: usize = 1000;
    let mut g = c.benchmark_group("fan_out");
    g.throughput(Throughput::Elements(RECIPIENTS as u64));
    let mut pool = BufferPool::default();
    let mut queues: Vec<OutQueue> = (0..RECIPIENTS).map(|_| OutQueue::default()).collect();
    let mut encoded = Vec::with_capacity(256);
    for (name, text_len) in [("64_byte_text", 64usize), ("1_KiB_text", 1024)] {
        let text = "x".repeat(text_len);
        g.bench_function(format!("{name}_to_1000_queues"), |b| {
            b.iter(|| {
                encoded.clear();
                Event::Say {
                    from: "alice",
                    text: &text,
                }
                .encode(Dialect::Frames, &mut encoded);
                for q in &mut queues {
                    q.push(&encoded, &mut pool);
                }
                // A complete flush empties each queue and gives its buffer back to the
                // pool, where the next push finds it, as on a long-lived connection.
                for q in &mut queues {
                    black_box(q.pending());
                    q.clear(&mut pool);
                }
            })
        });
    }
    g.finish();
}

fn timer_wheel(c: &mut Criterion) {
    const TIMERS: usize = 10_000;
    let tick = Duration::from_millis(10);
    let mut g = c.benchmark_group("timer_wheel");
    g.throughput(Throughput::Elements(TIMERS as u64));

    // Registration timeouts: 10 000 connections arrive, each gets a 60 s deadline.
    g.bench_function("insert_10k", |b| {
        let now = Instant::now();
        b.iter_batched(
            || TimerWheel::<usize>::new(tick, 4096, now),
            |mut w| {
                for i in 0..TIMERS {
                    w.insert(now + Duration::from_millis(60_000 + i as u64), i);
                }
                w
            },
            BatchSize::SmallInput,
        )
    });

    // They all register in time: every deadline is cancelled.
    g.bench_function("insert_and_cancel_10k", |b| {
        let now = Instant::now();
        let mut ids = Vec::with_capacity(TIMERS);
        b.iter_batched(
            || TimerWheel::<usize>::new(tick, 4096, now),
            |mut w| {
                ids.clear();
                for i in 0..TIMERS {
                    ids.push(w.insert(now + Duration::from_millis(60_000 + i as u64), i));
                }
                for id in &ids {
                    black_box(w.cancel(*id));
                }
                w
            },
            BatchSize::SmallInput,
        )
    });

    // Deadlines spread over 100 s fire as time advances in 10 ms steps; each poll
    // also computes the next deadline, as the loop does to set its poll timeout.
    g.bench_function("poll_10k_over_100s", |b| {
        let now = Instant::now();
        b.iter_batched(
            || {
                let mut w = TimerWheel::<usize>::new(tick, 4096, now);
                for i in 0..TIMERS {
                    w.insert(now + Duration::from_millis((i as u64 * 7919) % 100_000), i);
                }
                w
            },
            |mut w| {
                let mut fired = Vec::new();
                let mut t = now;
                while !w.is_empty() {
                    t += tick;
                    w.poll(t, &mut fired);
                    black_box(w.next_deadline());
                }
                fired.len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    line_splitting,
    frame_parsing,
    event_encoding,
    fan_out,
    timer_wheel
);
criterion_main!(benches);
