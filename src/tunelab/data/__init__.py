"""Data: loading files, folders and Hub ids; preflight validation; tokenization and packing."""
