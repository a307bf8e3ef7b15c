"""The archive format: a POSIX pax tar stream with a checksum on every member and a manifest last."""
