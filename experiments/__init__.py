"""absl launchers: each parses flags and calls one library function."""
