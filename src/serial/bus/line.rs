//! How a port's bytes are cut into frames: by the decoder of the device asked last, or by
//! several protocols at once on a line of devices that all talk by themselves.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use tracing::warn;

use crate::serial::framing::{Decoded, FrameDecoder, Mux, Protocol, Verify};

/// How a port's bytes are cut: by the decoder of the device asked last (one device, or a bus
/// of devices that answer requests), or by several protocols at once (devices that all talk by
/// themselves, each frame cut by the framing that recognises it).
pub(super) enum Line {
    Asked {
        decoders: Vec<FrameDecoder>,
        active: usize,
    },
    /// Boxed: the protocols' decoders and buffers are large beside a list of decoders.
    Mixed(Box<Mux>),
}

impl Line {
    /// The line for `devices`: mixed when several share the port and none is polled.
    pub(super) fn new(devices: &[crate::config::Device]) -> Self {
        if crate::config::model::mixed(&devices.iter().collect::<Vec<_>>()) {
            let protocols = devices
                .iter()
                .map(|d| Protocol {
                    framing: d.framing.clone(),
                    max_frame: d.max_frame,
                    verify: d.checksum.clone().map(|c| -> Verify {
                        Box::new(move |frame: &[u8]| c.verify(frame).is_ok())
                    }),
                })
                .collect();
            match Mux::new(protocols) {
                Ok(mux) => return Line::Mixed(Box::new(mux)),
                // `check` refuses such a config; should one get here, each device's frames
                // are cut by the first device's framing, as on a single-device port.
                Err(why) => warn!("{why}"),
            }
        }
        Line::Asked {
            decoders: devices
                .iter()
                .map(|d| FrameDecoder::new(&d.framing, d.max_frame))
                .collect(),
            active: 0,
        }
    }

    /// Whose frame was cut short if the port went away now.
    pub(super) fn partial(&self, buf: &BytesMut) -> Option<usize> {
        match self {
            Line::Asked { decoders, active } => {
                decoders[*active].has_partial(buf).then_some(*active)
            }
            Line::Mixed(mux) => mux.has_partial(buf),
        }
    }
}

impl Decoder for Line {
    type Item = (usize, Decoded);
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<(usize, Decoded)>> {
        match self {
            Line::Asked { decoders, active } => {
                Ok(decoders[*active].decode(buf)?.map(|d| (*active, d)))
            }
            Line::Mixed(mux) => mux.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<(usize, Decoded)>> {
        match self {
            Line::Asked { decoders, active } => {
                Ok(decoders[*active].decode_eof(buf)?.map(|d| (*active, d)))
            }
            Line::Mixed(mux) => mux.decode_eof(buf),
        }
    }
}
