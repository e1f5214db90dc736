//! Where to cut received bytes so the driver feeds the engine one frame per lock hold: a
//! `publish` then waits behind one frame's work at most, however much a read returned.
//!
//! The cutter follows the frame headers (`docs/PROTOCOL.md`: magic, length, header check) of
//! the byte stream as it is fed. Cutting only changes how the bytes are split between calls of
//! `Engine::handle_bytes`, never which bytes are fed: should the stream hold garbage, the
//! engine's deframer resynchronises as always and the cutter merely cuts at worse places.

use kefu_core::frame::{HEADER_LEN, MAGIC, TRAILER_LEN};

/// Tracks frame boundaries in a byte stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct FrameCut {
    /// Bytes of the current frame after its header still to come.
    left: usize,
    /// Header bytes of the next frame seen so far.
    head: [u8; HEADER_LEN],
    have: usize,
}

impl FrameCut {
    /// Starts over at a frame boundary (a new connection).
    pub(crate) fn reset(&mut self) {
        *self = FrameCut::default();
    }

    /// How many of `bytes` (the stream's next bytes) to feed next: up to the end of the
    /// current frame, at most `max`, at least one if there is any.
    pub(crate) fn next_len(&self, bytes: &[u8], max: usize) -> usize {
        let max = max.max(1);
        if self.left > 0 {
            return self.left.min(bytes.len()).min(max);
        }
        let need = HEADER_LEN - self.have;
        let Some(rest) = bytes.get(..need) else {
            return bytes.len().min(max);
        };
        let mut head = self.head;
        head[self.have..].copy_from_slice(rest);
        let frame = need + body_and_trailer(&head);
        frame.min(bytes.len()).min(max)
    }

    /// `fed` (the bytes just after those fed before) went to the engine.
    pub(crate) fn consumed(&mut self, mut fed: &[u8]) {
        while !fed.is_empty() {
            if self.left > 0 {
                let n = self.left.min(fed.len());
                self.left -= n;
                fed = &fed[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(fed.len());
            self.head[self.have..self.have + n].copy_from_slice(&fed[..n]);
            self.have += n;
            fed = &fed[n..];
            if self.have == HEADER_LEN {
                self.have = 0;
                self.left = body_and_trailer(&self.head);
            }
        }
    }
}

/// The bytes after a header: body and trailer, or none when it is not a header.
fn body_and_trailer(head: &[u8; HEADER_LEN]) -> usize {
    if head[..2] != MAGIC {
        return 0;
    }
    let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
    usize::try_from(len).map_or(0, |l| l.saturating_add(TRAILER_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kefu_core::frame::encode_frame;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; body.len() + 16];
        let n = encode_frame(body, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Feeds `stream` as the driver does, in reads of `read` bytes; the pieces fed.
    fn pieces(stream: &[u8], read: usize, max: usize) -> Vec<usize> {
        let mut cut = FrameCut::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(read) {
            let mut at = 0;
            while at < chunk.len() {
                let n = cut.next_len(&chunk[at..], max);
                cut.consumed(&chunk[at..at + n]);
                out.push(n);
                at += n;
            }
        }
        out
    }

    #[test]
    fn whole_frames_in_one_read_are_cut_one_by_one() {
        let (a, b, c) = (frame(b"hello"), frame(&[7; 300]), frame(b""));
        let stream = [a.clone(), b.clone(), c.clone()].concat();
        assert_eq!(
            pieces(&stream, stream.len(), 4096),
            vec![a.len(), b.len(), c.len()]
        );
    }

    #[test]
    fn frames_split_across_reads_even_inside_the_header_stay_in_step() {
        let frames: Vec<_> = (0..20u8)
            .map(|i| frame(&vec![i; 40 + i as usize]))
            .collect();
        let stream = frames.concat();
        for read in [1, 3, 6, 7, 8, 50, 333] {
            let got = pieces(&stream, read, 4096);
            assert_eq!(got.iter().sum::<usize>(), stream.len(), "read {read}");
            // Every frame end is a cut: pieces never straddle two frames.
            let mut ends = std::collections::BTreeSet::new();
            let mut at = 0;
            for f in &frames {
                at += f.len();
                ends.insert(at);
            }
            let mut at = 0;
            for n in got {
                let next_end = *ends.range(at + 1..).next().unwrap();
                assert!(at + n <= next_end, "read {read}: piece crosses a frame end");
                at += n;
            }
        }
    }

    #[test]
    fn a_large_frame_is_fed_in_pieces_of_at_most_max() {
        let big = frame(&[1; 10_000]);
        let got = pieces(&big, big.len(), 4096);
        assert!(got.iter().all(|&n| n <= 4096));
        assert_eq!(got.iter().sum::<usize>(), big.len());
    }

    #[test]
    fn garbage_is_still_fed_whole_in_bounded_pieces() {
        let mut stream = b"not a frame at all, just noise".to_vec();
        stream.extend(frame(b"after the noise"));
        stream.extend([b'K', b'F', 0xff, 0xff, 0xff, 0xff, 0]);
        stream.extend([0; 100]);
        let got = pieces(&stream, 13, 64);
        assert_eq!(got.iter().sum::<usize>(), stream.len());
        assert!(got.iter().all(|&n| (1..=64).contains(&n)));
    }

    #[test]
    fn reset_starts_at_a_boundary() {
        let f = frame(b"abc");
        let mut cut = FrameCut::default();
        cut.consumed(&f[..4]);
        cut.reset();
        assert_eq!(cut.next_len(&f, 4096), f.len());
    }
}
