//! kefu-tests: end-to-end suites that run the real gateway and real clients over real sockets on
//! 127.0.0.1, under faults, crashes, bad input and load. The suites live in `tests/tests/`; this
//! library holds what they share.
