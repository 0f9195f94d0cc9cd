//! The field codec under every message of the [`crate`]: [`Enc`] and [`Dec`]
//! for the primitive forms (little-endian integers, length-prefixed bytes, raw hashes),
//! and the [`Wire`] trait that every field type implements once, so that a message's
//! fields are encoded and decoded by the same declaration (`wire_struct!`,
//! `wire_enum!`). It sits below both the protocol and the types the protocol carries
//! that are declared with what they describe ([`crate::encoding::Encoding`] and a
//! pack's entries), so that each declares its own wire form.
//!
//! Decoding trusts nothing: every length and count is checked against the bytes left in
//! the frame before anything is allocated, and a list reserves at most [`PREALLOC`]
//! items ahead (each item decodes into more memory than its encoding takes).

use crate::error::{Error, Result};
use imager_core::{Entry, Hash, Kind};

/// Items reserved ahead of a list from its announced count: the rest grows as items
/// decode (a count is checked against the bytes left, but each item decodes into a
/// larger value than its encoding).
pub const PREALLOC: usize = 4096;

/// A message's fields being written.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Appends `b` as it is, without a length: a fixed-size field, or the rest of a frame.
    pub fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// Appends one byte (a code, a marker, a boolean).
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A length or count: every one on the wire is a `u32`.
    pub fn count(&mut self, n: usize) {
        (n as u32).encode(self);
    }
    /// Appends `b` after its length: a byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.raw(b);
    }
}

/// A message's fields being read: what is left of the frame.
pub struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    /// The next `n` bytes; an error if fewer are left in the frame.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(Error::protocol(format!(
                "a field of {n} bytes runs past the end of its frame ({} left)",
                self.0.len()
            )));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    /// The next `N` bytes as an array (a fixed-size field).
    pub fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// The next byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// Everything left of the frame.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    /// A count of items each at least `min` bytes long, checked against what is left.
    pub fn count(&mut self, min: usize) -> Result<usize> {
        let n = u32::decode(self)? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(Error::protocol(format!(
                "a count of {n} items cannot fit in the {} bytes left of its frame",
                self.0.len()
            )));
        }
        Ok(n)
    }
    /// A byte string: its length, checked against what is left, then its bytes.
    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = u32::decode(self)? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// A value with one encoding on the wire, written and read by the same impl.
pub trait Wire: Sized {
    /// The fewest bytes an encoding takes: a list's count is checked against it.
    const MIN: usize;
    /// Appends the value's encoding to `e`.
    fn encode(&self, e: &mut Enc);
    /// Reads a value from the front of `d`; a protocol error if the bytes are not one.
    fn decode(d: &mut Dec) -> Result<Self>;
}

/// Fixed-size little-endian numbers.
macro_rules! wire_le {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const MIN: usize = std::mem::size_of::<$t>();
            fn encode(&self, e: &mut Enc) {
                e.raw(&self.to_le_bytes());
            }
            fn decode(d: &mut Dec) -> Result<Self> {
                Ok(<$t>::from_le_bytes(d.arr()?))
            }
        }
    )*};
}
wire_le!(u32, i32, u64, i64, f64);

impl Wire for bool {
    const MIN: usize = 1;
    fn encode(&self, e: &mut Enc) {
        e.u8(*self as u8);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        match d.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::protocol(format!("bad boolean {b}"))),
        }
    }
}

/// A byte string (a path, a payload): its length, then its bytes.
impl Wire for Vec<u8> {
    const MIN: usize = 4;
    fn encode(&self, e: &mut Enc) {
        e.bytes(self);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        d.bytes()
    }
}

impl Wire for String {
    const MIN: usize = 4;
    fn encode(&self, e: &mut Enc) {
        e.bytes(self.as_bytes());
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        String::from_utf8(d.bytes()?).map_err(|_| Error::protocol("a text field is not UTF-8"))
    }
}

impl Wire for Hash {
    const MIN: usize = 32;
    fn encode(&self, e: &mut Enc) {
        e.raw(&self.0);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok(Hash(d.arr()?))
    }
}

/// A marker byte (0: none; anything else: the value follows), then the value.
impl<T: Wire> Wire for Option<T> {
    const MIN: usize = 1;
    fn encode(&self, e: &mut Enc) {
        match self {
            None => e.u8(0),
            Some(v) => {
                e.u8(1);
                v.encode(e);
            }
        }
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok(match d.u8()? {
            0 => None,
            _ => Some(T::decode(d)?),
        })
    }
}

/// A list: its count (checked against the bytes left), then its items.
impl<T: Wire + ListItem> Wire for Vec<T> {
    const MIN: usize = 4;
    fn encode(&self, e: &mut Enc) {
        e.count(self.len());
        for v in self {
            v.encode(e);
        }
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        let n = d.count(T::MIN)?;
        let mut v = Vec::with_capacity(n.min(PREALLOC));
        for _ in 0..n {
            v.push(T::decode(d)?);
        }
        Ok(v)
    }
}

/// What may be an item of a list (`Vec<u8>` is a byte string, not a list of bytes).
pub trait ListItem {}
impl ListItem for String {}
impl ListItem for Vec<u8> {}
impl<A, B> ListItem for (A, B) {}
impl ListItem for u32 {}

impl<A: Wire, B: Wire> Wire for (A, B) {
    const MIN: usize = A::MIN + B::MIN;
    fn encode(&self, e: &mut Enc) {
        self.0.encode(e);
        self.1.encode(e);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok((A::decode(d)?, B::decode(d)?))
    }
}

/// A struct whose fields travel in their declared order: the declaration is the codec.
macro_rules! wire_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        pub struct $name {
            $( $(#[$fm])* pub $f: $t ),*
        }
        impl $crate::wire::Wire for $name {
            const MIN: usize = 0 $( + <$t as $crate::wire::Wire>::MIN )*;
            fn encode(&self, e: &mut $crate::wire::Enc) {
                $( $crate::wire::Wire::encode(&self.$f, e); )*
            }
            fn decode(d: &mut $crate::wire::Dec) -> $crate::error::Result<Self> {
                Ok($name {
                    $( $f: $crate::wire::Wire::decode(d)?, )*
                })
            }
        }
        impl $crate::wire::ListItem for $name {}
    };
}
pub(crate) use wire_struct;

/// An enum as a code byte, then the variant's fields in order: each variant's code is
/// written once, here, for both directions. `$what` names the enum in the error for an
/// unknown code ("unknown $what 9").
macro_rules! wire_enum {
    (
        $ty:ty, $what:literal {
            $( $code:literal => $($v:ident)::+
                $( { $($f:ident),* } )?
                $( ( $($t:ident),* ) )?
            ),* $(,)?
        }
    ) => {
        impl $crate::wire::Wire for $ty {
            const MIN: usize = 1;
            #[allow(unused_variables)]
            fn encode(&self, e: &mut $crate::wire::Enc) {
                match self {
                    $( $($v)::+ $( { $($f),* } )? $( ( $($t),* ) )? => {
                        e.u8($code);
                        $( $( $crate::wire::Wire::encode($f, e); )* )?
                        $( $( $crate::wire::Wire::encode($t, e); )* )?
                    } )*
                }
            }
            fn decode(d: &mut $crate::wire::Dec) -> $crate::error::Result<Self> {
                Ok(match d.u8()? {
                    $( $code => $($v)::+
                        $( { $( $f: $crate::wire::Wire::decode(d)?, )* } )?
                        $( ( $( { let $t = $crate::wire::Wire::decode(d)?; $t } ),* ) )?,
                    )*
                    k => {
                        return Err($crate::error::Error::protocol(format!(
                            concat!("unknown ", $what, " {}"),
                            k
                        )))
                    }
                })
            }
        }
        impl $crate::wire::ListItem for $ty {}
    };
}
pub(crate) use wire_enum;

wire_enum!(Kind, "entry kind" {
    0 => Kind::File { size, hash },
    1 => Kind::Dir,
    2 => Kind::Symlink { target },
    3 => Kind::HardLink { target },
    4 => Kind::CharDev { major, minor },
    5 => Kind::BlockDev { major, minor },
    6 => Kind::Fifo,
});

impl Wire for Entry {
    const MIN: usize = 4 + 1 + 4 * 3 + 8 + 4;
    fn encode(&self, e: &mut Enc) {
        self.path.encode(e);
        self.kind.encode(e);
        self.mode.encode(e);
        self.uid.encode(e);
        self.gid.encode(e);
        self.mtime.encode(e);
        self.xattrs.encode(e);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok(Entry {
            path: Wire::decode(d)?,
            kind: Wire::decode(d)?,
            mode: Wire::decode(d)?,
            uid: Wire::decode(d)?,
            gid: Wire::decode(d)?,
            mtime: Wire::decode(d)?,
            xattrs: Wire::decode(d)?,
        })
    }
}
