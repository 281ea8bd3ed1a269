//! The line-protocol parser allocates nothing per point (names and values borrow from the body,
//! the per-line vectors are reused), and conversion allocates per point only the frame column
//! values it builds (the labels string of a row), not per tag or field. Counted with a global
//! allocator that counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

use edgelive::ingest::convert::{convert, Layout};
use edgelive::ingest::lineproto::{Line, Parser};
use edgelive::ingest::Precision;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

fn batch(lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "cpu,cpu=cpu{},host=pi usage_idle={i}.5,usage_user={i}i,state=\"ok\",up=t {}\n",
                i % 13,
                1_700_000_000_000_000_000i64 + i as i64
            )
        })
        .collect()
}

#[test]
fn parsing_a_batch_allocates_nothing_per_point() {
    let body = batch(2000);
    let mut p = Parser::new(&body, Precision::Nanoseconds);
    let mut line = Line::default();
    p.next(&mut line).unwrap().unwrap(); // the reused vectors grow once
    let before = allocs();
    let mut n = 1;
    while let Some(r) = p.next(&mut line) {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 2000);
    assert_eq!(
        allocs() - before,
        0,
        "allocations while parsing 1,999 points"
    );
}

#[test]
fn converting_a_batch_allocates_only_column_values() {
    let body = batch(2000);
    let before = allocs();
    let frames = convert(&body, Layout::LabelsColumn, Precision::Nanoseconds, 0).unwrap();
    let used = allocs() - before;
    assert_eq!(frames[0].rows(), 2000);
    // Per row: its labels string and the "ok" string value; the rest is column growth
    // (amortized doubling) and per-frame setup.
    assert!(used < 2 * 2000 + 200, "{used} allocations for 2,000 points");
}
