use std::io::Result as IoResult;
use std::io::{Error as IoError, ErrorKind, Read};

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the sub-reader ends first, it
/// returns an `UnexpectedEof` error: the body was cut short.
///
/// Dropping it before the limit leaves the rest unread. (It used to read and
/// discard the rest on drop, into a buffer of the size of *all* the
/// remaining bytes, allocated at once: a request declaring a terabyte aborted
/// the process, and a slow client held the dropping thread for as long as it
/// liked.) The connection a request came from is closed instead when its
/// body was not read to the end; see `ClientConnection`.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize) -> EqualReader<R> {
        EqualReader { reader, size }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 || buf.is_empty() {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(0) => Err(IoError::new(
                ErrorKind::UnexpectedEof,
                "Connection has been closed before we received enough data",
            )),
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        // Dropped early: the rest is left unread (the connection is closed).
        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "ello world");
    }

    #[test]
    fn test_cut_short() {
        use std::io::{Cursor, ErrorKind};

        let mut equal_reader = EqualReader::new(Cursor::new(b"hello".to_vec()), 8);
        let mut string = String::new();
        let err = equal_reader.read_to_string(&mut string).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(string, "hello");
    }
}
