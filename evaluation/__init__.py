"""Quality numbers: what a slice or a quantization costs against its parent (`matslice eval`)."""
