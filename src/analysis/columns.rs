//! Column builders laid out as Arrow buffers, so a million-row table leaves
//! Rust as a handful of byte strings instead of millions of Python objects.

/// One column in Arrow memory layout (little-endian, validity bit set = value).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Arrow `large_string`: `offsets` has one more entry than there are rows.
    Utf8 {
        offsets: Vec<i64>,
        data: Vec<u8>,
        validity: Option<Vec<u8>>,
    },
    Int64 {
        values: Vec<i64>,
        validity: Option<Vec<u8>>,
    },
    Float64 {
        values: Vec<f64>,
        validity: Option<Vec<u8>>,
    },
    /// Arrow `timestamp[us, tz=UTC]`.
    TimestampMicros {
        values: Vec<i64>,
        validity: Option<Vec<u8>>,
    },
}

impl Column {
    /// The Arrow type name the Python side maps to a `pyarrow` type.
    pub fn kind(&self) -> &'static str {
        match self {
            Column::Utf8 { .. } => "large_string",
            Column::Int64 { .. } => "int64",
            Column::Float64 { .. } => "float64",
            Column::TimestampMicros { .. } => "timestamp_us_utc",
        }
    }

    pub fn validity(&self) -> Option<&[u8]> {
        match self {
            Column::Utf8 { validity, .. }
            | Column::Int64 { validity, .. }
            | Column::Float64 { validity, .. }
            | Column::TimestampMicros { validity, .. } => validity.as_deref(),
        }
    }

    /// The validity bitmap and the Arrow data buffers after it, as bytes;
    /// string data moves out without a copy.
    pub fn into_buffers(self) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
        fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(values.len() * N);
            for v in values {
                out.extend_from_slice(&to(*v));
            }
            out
        }
        match self {
            Column::Utf8 {
                offsets,
                data,
                validity,
            } => (validity, vec![le(&offsets, i64::to_le_bytes), data]),
            Column::Int64 { values, validity } | Column::TimestampMicros { values, validity } => {
                (validity, vec![le(&values, i64::to_le_bytes)])
            }
            Column::Float64 { values, validity } => (validity, vec![le(&values, f64::to_le_bytes)]),
        }
    }
}

/// A validity bitmap kept only once a null shows up.
#[derive(Debug, Default)]
struct Validity {
    bits: Vec<u8>,
    len: usize,
    any_null: bool,
}

impl Validity {
    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bits.push(0);
        }
        if valid {
            let last = self.bits.len() - 1;
            self.bits[last] |= 1 << (self.len % 8);
        } else {
            self.any_null = true;
        }
        self.len += 1;
    }

    fn finish(self) -> Option<Vec<u8>> {
        self.any_null.then_some(self.bits)
    }
}

#[derive(Debug)]
pub struct StrBuilder {
    offsets: Vec<i64>,
    data: Vec<u8>,
    validity: Validity,
}

impl StrBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StrBuilder {
            offsets,
            data: Vec::new(),
            validity: Validity::default(),
        }
    }

    pub fn push(&mut self, value: Option<&str>) {
        if let Some(text) = value {
            self.data.extend_from_slice(text.as_bytes());
        }
        self.offsets.push(self.data.len() as i64);
        self.validity.push(value.is_some());
    }

    pub fn finish(self) -> Column {
        Column::Utf8 {
            offsets: self.offsets,
            data: self.data,
            validity: self.validity.finish(),
        }
    }
}

/// Builds `Int64`, `Float64` or `TimestampMicros` columns.
#[derive(Debug)]
pub struct PrimitiveBuilder<T> {
    values: Vec<T>,
    validity: Validity,
}

impl<T: Copy + Default> PrimitiveBuilder<T> {
    pub fn with_capacity(rows: usize) -> Self {
        PrimitiveBuilder {
            values: Vec::with_capacity(rows),
            validity: Validity::default(),
        }
    }

    pub fn push(&mut self, value: Option<T>) {
        self.values.push(value.unwrap_or_default());
        self.validity.push(value.is_some());
    }
}

impl PrimitiveBuilder<i64> {
    pub fn finish_int(self) -> Column {
        Column::Int64 {
            values: self.values,
            validity: self.validity.finish(),
        }
    }

    pub fn finish_timestamp(self) -> Column {
        Column::TimestampMicros {
            values: self.values,
            validity: self.validity.finish(),
        }
    }
}

impl PrimitiveBuilder<f64> {
    pub fn finish_float(self) -> Column {
        Column::Float64 {
            values: self.values,
            validity: self.validity.finish(),
        }
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub rows: usize,
    pub columns: Vec<(&'static str, Column)>,
}

impl Frame {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_nulls_follow_the_arrow_layout() {
        let mut b = StrBuilder::with_capacity(3);
        b.push(Some("ab"));
        b.push(None);
        b.push(Some("c"));
        let Column::Utf8 {
            offsets,
            data,
            validity,
        } = b.finish()
        else {
            panic!("not a string column")
        };
        assert_eq!(offsets, [0, 2, 2, 3]);
        assert_eq!(data, b"abc");
        assert_eq!(validity, Some(vec![0b101]));
    }

    #[test]
    fn no_bitmap_without_nulls() {
        let mut b = PrimitiveBuilder::<i64>::with_capacity(9);
        for i in 0..9 {
            b.push(Some(i));
        }
        let column = b.finish_int();
        assert_eq!(column.validity(), None);
        assert_eq!(column.into_buffers().1[0].len(), 72);
    }
}
