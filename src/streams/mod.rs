//! Stream handlers (design §8): producers for `plugin/…` and `ds/…` channels that run while
//! someone watches.

pub mod lifecycle;
