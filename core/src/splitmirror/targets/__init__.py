"""Archive targets: sequential writers for files, tape devices and standard output."""
