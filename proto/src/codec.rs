//! The protobuf codec of the vault's services.
//!
//! prost's codec reports a message that does not decode (invalid UTF-8 in a
//! string field, a wrong wire type, a truncated body) as INTERNAL, which
//! tells a caller the server is at fault. This codec answers
//! INVALID_ARGUMENT instead, with prost's description of what was wrong, so
//! bad input always gets the status the API documents for it. Encoding is
//! prost's, unchanged.

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec, with decode failures reported as the caller's fault.
#[derive(Debug, Clone)]
pub struct VaultCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for VaultCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for VaultCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// A prost decoder whose failures are INVALID_ARGUMENT.
#[derive(Debug)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("malformed message: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
